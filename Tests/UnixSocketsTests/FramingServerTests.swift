import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// FNV-1a, to check payloads end to end.
func checksum(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}

@Suite struct FramedStreamTests {
    @Test func headerSplitAtEveryOffsetOverARealSocket() throws {
        let payload = Array("split me anywhere".utf8)
        var wire: [UInt8] = []
        try FrameEncoder().encode(payload, into: &wire)
        try FrameEncoder().encode([], into: &wire)
        try FrameEncoder().encode(payload.reversed(), into: &wire)
        let frames = wire
        for split in 1..<frames.count {
            let (a, b) = try UnixStream.pair()
            defer {
                a.close()
                b.close()
            }
            let framed = FramedStream(b)
            try a.write(all: Array(frames[..<split]))
            let writer = Thread {
                Thread.sleep(forTimeInterval: 0.001)
                try? a.write(all: Array(frames[split...]))
                try? a.shutdown(.write)
            }
            writer.start()
            #expect(try framed.receive(timeout: .seconds(60))?.bytes == payload)
            #expect(try framed.receive(timeout: .seconds(60))?.bytes == [])
            #expect(try framed.receive(timeout: .seconds(60))?.bytes == payload.reversed())
            #expect(try framed.receive(timeout: .seconds(60)) == nil)
        }
    }

    @Test func eofInsideAFrameIsTruncatedFrame() throws {
        for cut in [2, 4, 6] {
            let (a, b) = try UnixStream.pair()
            defer { b.close() }
            try a.write(all: Array([0, 0, 0, 5, 1, 2, 3, 4, 5][..<cut]))
            a.close()
            let framed = FramedStream(b)
            #expect {
                _ = try framed.receive(timeout: .seconds(60))
            } throws: { ($0 as? UnixSocketError)?.code == .truncatedFrame }
        }
    }

    @Test func oversizedLengthFailsBeforeAllocation() throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        try a.write(all: [0xFF, 0xFF, 0xFF, 0xFF])
        let framed = try FramedStream(b, maximumFrameLength: 1024)
        #expect {
            _ = try framed.receive(timeout: .seconds(60))
        } throws: { ($0 as? UnixSocketError)?.code == .frameTooLarge }
    }

    @Test(.onReactor) func descriptorsTravelWithTheirFrame() async throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let sender = FramedStream(a)
        let receiver = FramedStream(b)
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        // Frames before and after the one with the descriptor, sent back to back.
        try await sender.send(Array("before".utf8))
        try await sender.send(Array("with fd".utf8), descriptors: [file])
        try await sender.send(Array("after".utf8))
        let first = try #require(try await receiver.receive(timeout: .seconds(60)))
        let second = try #require(try await receiver.receive(timeout: .seconds(60)))
        let third = try #require(try await receiver.receive(timeout: .seconds(60)))
        #expect(first.bytes == Array("before".utf8) && first.descriptors.isEmpty)
        #expect(second.bytes == Array("with fd".utf8) && second.descriptors.count == 1)
        #expect(third.bytes == Array("after".utf8) && third.descriptors.isEmpty)
    }

    @Test func tricklingPeerIsCutOffByTheFrameDeadline() throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let trickle = Thread {
            for byte: UInt8 in [0, 0, 0, 10, 1, 2, 3] {
                try? a.write(all: [byte])
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        trickle.start()
        let framed = FramedStream(b)
        #expect {
            _ = try framed.receive(frameTimeout: .milliseconds(120))
        } throws: { ($0 as? UnixSocketError)?.code == .timedOut }
    }

    @Test func outOfBandByteNeverHangsTheDecoder() throws {
        // MSG_OOB on a Unix stream takes one byte out of the stream if nobody reads it: the frame is
        // corrupt. The decoder must report an error (truncated, too large or timed out), never hang.
        let (a, b) = try UnixStream.pair()
        defer { b.close() }
        let fd = try a.releaseDescriptor()
        defer { try? fd.close() }
        var wire: [UInt8] = []
        try FrameEncoder().encode(Array("0123456789".utf8), into: &wire)
        _ = wire.withUnsafeBytes { send(fd.rawValue, $0.baseAddress, 5, 0) }
        _ = wire.withUnsafeBytes { send(fd.rawValue, $0.baseAddress! + 5, 1, Int32(MSG_OOB)) }
        _ = wire.withUnsafeBytes { send(fd.rawValue, $0.baseAddress! + 6, wire.count - 6, 0) }
        shutdown(fd.rawValue, Int32(SHUT_WR))
        let framed = FramedStream(b)
        var outcome = "none"
        do {
            let frame = try framed.receive(timeout: .seconds(2))
            outcome = frame.map { "frame \($0.bytes.count)" } ?? "eof"
        } catch {
            outcome = "\(error.code)"
        }
        #expect(["truncatedFrame", "timedOut", "frameTooLarge"].contains(outcome), "got \(outcome)")
    }
}

@Suite(.onReactor) struct ServerTests {
    @Test func thousandClientsHundredFramesEach() async throws {
        // One process, 1,000 clients + 1,000 server sides: needs ~2,100 descriptors (limit here is higher).
        let address = uniqueAbstract("server-1000")
        var configuration = UnixServerConfiguration()
        configuration.maxConnections = 2000
        let server = try UnixServer(address: address, configuration: configuration)
        let serving = Task(executorPreference: UnixReactor.shared) {
            try await server.run { connection in
                while let frame = try await connection.receive() {
                    // Echo, and say how many descriptors came with the frame.
                    var reply = frame.bytes
                    reply.append(UInt8(frame.descriptors.count))
                    try connection.send(reply)
                }
            }
        }
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        let clients = 1000
        let frames = 100
        let failures = try await withThrowingTaskGroup(of: Int.self) { group in
            for client in 0..<clients {
                group.addTask {
                    let framed = FramedStream(try await UnixStream.connect(to: address, timeout: .seconds(30)))
                    defer { framed.stream.close() }
                    var bad = 0
                    for index in 0..<frames {
                        let payload = Array("c\(client)-f\(index)-\(checksum(Array("\(client):\(index)".utf8)))".utf8)
                        let withFD = index % 10 == 0
                        try await framed.send(payload, descriptors: withFD ? [file] : [])
                        guard let reply = try await framed.receive(timeout: .seconds(60)) else { return bad + 1 }
                        if checksum(Array(reply.bytes.dropLast())) != checksum(payload)
                            || reply.bytes.last != (withFD ? 1 : 0)
                        {
                            bad += 1
                        }
                    }
                    return bad
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(failures == 0)
        server.shutdown()
        try await serving.value
        #expect(server.connectionCount == 0)
    }

    // The suite runs beside the 1,000-client test, which keeps the reactor thread and both cores busy: the
    // bounds are for a hang, not for latency (a landing CI run saw one round trip here take over 10 s).
    @Test(.timeLimit(.minutes(5)), arguments: [false, true])
    func connectionExecutorDecidesWhereHandlersRun(onReactor: Bool) async throws {
        let address = uniqueAbstract("server-executor")
        var configuration = UnixServerConfiguration()
        if onReactor { configuration.connectionExecutor = UnixReactor.shared }
        let server = try UnixServer(address: address, configuration: configuration)
        let serving = Task {
            try await server.run { connection in
                while let frame = try await connection.receive() {
                    // Echo, plus 1 if the handler runs on the reactor thread.
                    try connection.send(frame.bytes + [UnixReactor.shared.isReactorThread ? 1 : 0])
                }
            }
        }
        let framed = FramedStream(try await UnixStream.connect(to: address, timeout: .seconds(60)))
        defer { framed.stream.close() }
        for index in 0..<20 {
            try await framed.send([UInt8(index)])
            let reply = try #require(try await framed.receive(timeout: .seconds(120)))
            #expect(reply.bytes == [UInt8(index), onReactor ? 1 : 0])
        }
        server.shutdown()
        try await serving.value
    }

    @Test func slowReaderDoesNotStallOthersAndIsDisconnected() async throws {
        let address = uniqueAbstract("server-slow")
        var configuration = UnixServerConfiguration()
        configuration.maxOutboundFrames = 8
        let server = try UnixServer(address: address, configuration: configuration)
        let serving = Task(executorPreference: UnixReactor.shared) {
            try await server.run { connection in
                while let frame = try await connection.receive() {
                    if frame.bytes == Array("flood".utf8) {
                        // Push far more than the client will read: 64 KiB frames.
                        for _ in 0..<10_000 { try connection.send([UInt8](repeating: 7, count: 65536)) }
                    } else {
                        try connection.send(frame.bytes)
                    }
                }
            }
        }
        let slow = FramedStream(try await UnixStream.connect(to: address))
        try await slow.send(Array("flood".utf8))  // and never read
        let fast = FramedStream(try await UnixStream.connect(to: address))
        for index in 0..<200 {
            let payload = Array("ping \(index)".utf8)
            try await fast.send(payload)
            #expect(try await fast.receive(timeout: .seconds(60))?.bytes == payload)
        }
        // The flooding connection was cut: reading it ends (EOF or reset) after what was queued.
        var ended = false
        for _ in 0..<100_000 {
            do {
                if try await slow.receive(timeout: .seconds(60)) == nil {
                    ended = true
                    break
                }
            } catch {
                ended = true
                break
            }
        }
        #expect(ended)
        slow.stream.close()
        fast.stream.close()
        server.shutdown()
        try await serving.value
    }

    @Test func gracefulShutdownFlushesAndRemovesTheSocketFile() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("graceful.sock")
        let server = try UnixServer(address: address)
        let serving = Task(executorPreference: UnixReactor.shared) {
            try await server.run { connection in
                while let frame = try await connection.receive() {
                    try connection.send(frame.bytes)
                }
            }
        }
        let client = FramedStream(try await UnixStream.connect(to: address))
        try await client.send(Array("in flight".utf8))
        #expect(try await client.receive(timeout: .seconds(60))?.bytes == Array("in flight".utf8))
        try await client.send(Array("last".utf8))
        server.shutdown()
        // What was sent before shutdown is still answered, then the server closes the connection.
        #expect(try await client.receive(timeout: .seconds(60))?.bytes == Array("last".utf8))
        #expect(try await client.receive(timeout: .seconds(60)) == nil)
        try await serving.value
        #expect(!FileManager.default.fileExists(atPath: dir.file("graceful.sock")))
        client.stream.close()
    }

    @Test func perUIDCapRefusesExtraConnections() async throws {
        let address = uniqueAbstract("server-cap")
        var configuration = UnixServerConfiguration()
        configuration.maxConnectionsPerUID = 2
        let server = try UnixServer(address: address, configuration: configuration)
        let serving = Task(executorPreference: UnixReactor.shared) {
            try await server.run { connection in
                while let frame = try await connection.receive() { try connection.send(frame.bytes) }
            }
        }
        var kept: [FramedStream] = []
        for _ in 0..<2 {
            let client = FramedStream(try await UnixStream.connect(to: address))
            try await client.send([1])
            #expect(try await client.receive(timeout: .seconds(60))?.bytes == [1])
            kept.append(client)
        }
        let third = FramedStream(try await UnixStream.connect(to: address))
        try? await third.send([1])
        var refused = false
        do { refused = try await third.receive(timeout: .seconds(60)) == nil } catch { refused = true }
        #expect(refused)
        for client in kept + [third] { client.stream.close() }
        server.shutdown()
        try await serving.value
    }

    @Test func cancellationMidTransferEndsTheServer() async throws {
        let address = uniqueAbstract("server-cancel")
        let server = try UnixServer(address: address)
        let serving = Task(executorPreference: UnixReactor.shared) {
            try await server.run { connection in
                while let frame = try await connection.receive() { try connection.send(frame.bytes) }
            }
        }
        let client = FramedStream(try await UnixStream.connect(to: address))
        try await client.send([UInt8](repeating: 1, count: 100_000))
        serving.cancel()
        server.shutdown()
        _ = try? await serving.value
        client.stream.close()
        #expect(server.connectionCount == 0)
    }
}
