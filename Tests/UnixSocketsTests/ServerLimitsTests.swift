import Foundation
import Synchronization
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

// UnixServer under hostile clients: what it buffers is capped in bytes, per connection and in total, in both
// directions; a client whose replies do not drain is not read (backpressure) and is cut off if it never
// drains. Memory is measured in exit tests (a process of their own), since Swift Testing runs tests in
// parallel in one process.

/// An echo handler: every frame goes back with its descriptors.
let echoHandler: @Sendable (UnixServerConnection) async throws -> Void = { connection in
    while let frame = try await connection.receive() {
        try connection.send(
            frame.bytes,
            descriptors: frame.descriptors.compactMap { $0.rawValue.map(FileDescriptor.init) }
        )
    }
}

/// A UnixServer on a fresh abstract name, served by a task on the reactor.
struct ServedServer {
    let address: UnixAddress
    let server: UnixServer
    let serving: Task<Void, any Error>

    init(
        _ tag: String,
        _ configuration: UnixServerConfiguration = UnixServerConfiguration(),
        handler: @escaping @Sendable (UnixServerConnection) async throws -> Void = echoHandler
    ) throws {
        address = uniqueAbstract(tag)
        let server = try UnixServer(address: address, configuration: configuration)
        self.server = server
        serving = Task(executorPreference: UnixReactor.shared) { try await server.run(handler) }
    }

    /// A connected framed client.
    func client() async throws -> FramedStream {
        FramedStream(try await UnixStream.connect(to: address, timeout: .seconds(20)))
    }

    func stop() async {
        server.shutdown()
        _ = try? await serving.value
    }
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM, VmSize), or nil.
func procStatusKiB(_ field: String, pid: String = "self") -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return line.split(whereSeparator: \.isWhitespace).dropFirst().first.flatMap { Int($0) }
    }
    return nil
}

/// Waits until `condition` holds, checking every 10 ms at most `attempts` times; returns whether it held.
func eventually(attempts: Int = 2000, _ condition: () -> Bool) async -> Bool {
    for _ in 0..<attempts {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// One round trip on a fresh client: whether the server still serves.
func roundTrip(_ served: ServedServer, _ payload: [UInt8]) async throws -> Bool {
    let client = try await served.client()
    defer { client.stream.close() }
    try await client.send(payload)
    return try await client.receive(timeout: .seconds(20))?.bytes == payload
}

/// Whether the server closes `client`'s connection: its next receive ends (EOF, reset, a cut frame) rather
/// than returning a frame or timing out.
func serverCloses(_ client: FramedStream) async -> Bool {
    do {
        return try await client.receive(timeout: .seconds(20)) == nil
    } catch let error as UnixSocketError {
        return error.code != .timedOut
    } catch {
        return false
    }
}

/// Runs a blocking call (a Python peer's output, its exit) away from the reactor thread, which async tests
/// run on: blocking it would stop the server the peer is talking to.
func offReactor<R: Sendable>(_ body: @escaping @Sendable () throws -> R) async throws -> R {
    try await Task.detached { try body() }.value
}

/// Python peers for the hostile clients.
enum HostilePeer {
    /// argv: address, frames, payload size. Sends that many frames and never reads; prints `SENT <bytes>` once
    /// everything is sent or the server stopped taking bytes (no progress for 2 s), then stays connected.
    static let nonReader = """
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(A(sys.argv[1]))
        count, size = int(sys.argv[2]), int(sys.argv[3])
        frame = memoryview(struct.pack('>I', size) + b'\\x5a' * size)
        s.setblocking(False)
        sent, total = 0, count * len(frame)
        while sent < total:
            _, w, _ = select.select([], [s], [], 2)
            if not w:
                break
            try:
                sent += s.send(frame[sent % len(frame):])
            except BlockingIOError:
                pass
        out('SENT', sent)
        time.sleep(60)
        """

    /// argv: address, connections, announced payload size. Each connection sends a header announcing the size
    /// and all of the body but its last byte; prints `SENT <bytes>` once all is sent or the server stopped
    /// taking bytes (no progress for 2 s), then stays connected.
    static let hugeFrames = """
        count, size = int(sys.argv[2]), int(sys.argv[3])
        wire = memoryview(struct.pack('>I', size) + b'\\x33' * (size - 1))
        socks = []
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(A(sys.argv[1]))
            s.setblocking(False)
            socks.append(s)
        offset = {s: 0 for s in socks}
        sent = 0
        while True:
            pending = [s for s in socks if offset[s] < len(wire)]
            if not pending:
                break
            _, w, _ = select.select([], pending, [], 2)
            if not w:
                break
            for s in w:
                try:
                    k = s.send(wire[offset[s]:])
                    offset[s] += k
                    sent += k
                except BlockingIOError:
                    pass
        out('SENT', sent)
        time.sleep(60)
        """
}

@Suite("Server: byte caps, backpressure, hostile clients", .onReactor)
struct ServerLimitsTests {
    @Test(
        "a client that never reads its 16 MiB echoes: the server stops reading it, memory stays bounded, others are served"
    )
    func nonReaderWithHugeFramesIsBounded() async throws {
        await #expect(processExitsWith: .success) {
            let served = try ServedServer("nonreader")  // the defaults
            let frames = 40
            let size = 16 << 20
            let peer = try PythonPeer(HostilePeer.nonReader, [served.address.pythonHex, "\(frames)", "\(size)"])
            let line = try await offReactor { try peer.line(timeout: .seconds(25)) }
            let sent = Int(line.split(separator: " ").last ?? "") ?? -1
            // Backpressure: the server took at most a few frames, not all 640 MiB.
            exitCheck(
                sent >= 0 && sent < 8 * (size + 4),
                "the server read \(sent) bytes from a client that never reads"
            )
            exitCheck(try await roundTrip(served, Array("honest".utf8)), "an honest client was not served")
            let peakRSS = procStatusKiB("VmHWM") ?? .max
            exitCheck(peakRSS < 320 * 1024, "peak RSS \(peakRSS) KiB")
            let outbound = served.server.outboundBytes.peak
            exitCheck(
                outbound <= served.server.configuration.maxOutboundBytesPerConnection + 64,
                "\(outbound) bytes queued for one client"
            )
            peer.terminate(signal: SIGKILL)
        }
    }

    @Test("under an address-space limit (prlimit --as), clients announcing 16 MiB frames cannot make the server abort")
    func hugeAnnouncedFramesUnderAddressSpaceLimit() async throws {
        await #expect(processExitsWith: .success) {
            // What `prlimit --as` sets: RLIMIT_AS, 640 MiB above what the process maps now. Before byte caps,
            // the server buffered all 64 x 16 MiB, went over it, and the allocation failure aborted it.
            let mapped = procStatusKiB("VmSize") ?? 0
            exitCheck(mapped > 0, "VmSize")
            var limit = rlimit()
            getrlimit(Int32(RLIMIT_AS.rawValue), &limit)
            limit.rlim_cur = rlim_t(mapped + 640 * 1024) * 1024
            exitCheck(setrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, "setrlimit(RLIMIT_AS)")

            let served = try ServedServer("huge")  // the defaults
            let connections = 64
            let size = 16 << 20
            let peer = try PythonPeer(HostilePeer.hugeFrames, [served.address.pythonHex, "\(connections)", "\(size)"])
            _ = try await offReactor { try peer.line(timeout: .seconds(25)) }
            let inbound = served.server.inboundBytes
            exitCheck(
                inbound.peak <= served.server.configuration.maxInboundBytes,
                "\(inbound.peak) bytes of unfinished frames held"
            )
            // Small frames still get through while the huge ones wait for room.
            exitCheck(
                try await roundTrip(served, Array("small".utf8)),
                "an honest client was not served during the attack"
            )
            // The attackers die mid-frame: everything they held is given back.
            peer.terminate(signal: SIGKILL)
            exitCheck(
                await eventually { served.server.inboundBytes.now == 0 },
                "inbound bytes still held: \(served.server.inboundBytes.now)"
            )
            exitCheck(
                try await roundTrip(served, patternBytes(1 << 20)),
                "an honest client was not served after the attack"
            )
        }
    }

    @Test("large frames over the total inbound budget all complete, one after another, within it")
    func framesOverTheInboundBudgetTakeTurns() async throws {
        var configuration = UnixServerConfiguration()
        configuration.maximumFrameLength = 1 << 20
        configuration.maxInboundBytes = 3 << 20
        let served = try ServedServer("inbound-turns", configuration)
        let ok = try await withThrowingTaskGroup(of: Bool.self) { group in
            for index in 0..<6 {
                group.addTask {
                    let payload = patternBytes(1 << 20, seed: UInt64(index + 1))
                    let client = try await served.client()
                    defer { client.stream.close() }
                    try await client.send(payload)
                    return try await client.receive(timeout: .seconds(30))?.bytes == payload
                }
            }
            return try await group.reduce(true) { $0 && $1 }
        }
        #expect(ok)
        #expect(served.server.inboundBytes.peak <= configuration.maxInboundBytes)
        #expect(await eventually { served.server.inboundBytes.now == 0 })
        await served.stop()
    }

    @Test("a header announcing more than the per-connection inbound cap is refused before its body is read")
    func perConnectionInboundCap() async throws {
        var configuration = UnixServerConfiguration()
        configuration.maxInboundBytesPerConnection = 64 * 1024
        let errors = Mutex<[UnixSocketError.Code]>([])
        let served = try ServedServer("inbound-cap", configuration) { connection in
            do {
                try await echoHandler(connection)
            } catch let error as UnixSocketError {
                errors.withLock { $0.append(error.code) }
            }
        }
        let client = try await served.client()
        let fits = patternBytes(32 * 1024)
        try await client.send(fits)
        #expect(try await client.receive(timeout: .seconds(20))?.bytes == fits)
        try await client.stream.write(all: [0, 1, 144, 0])  // announces 100 KiB; no body follows
        #expect(await serverCloses(client))
        #expect(await eventually { errors.withLock { $0 } == [.frameTooLarge] })
        client.stream.close()
        await served.stop()
    }

    @Test("a client slow to read is paused, not cut off: every reply arrives once it reads")
    func backpressurePausesReading() async throws {
        var configuration = UnixServerConfiguration()
        configuration.maximumFrameLength = 1 << 20
        configuration.maxOutboundBytesPerConnection = 2 << 20
        let received = Atomic<Int>(0)
        let connections = Mutex<[UnixServerConnection]>([])
        let served = try ServedServer("backpressure", configuration) { connection in
            connections.withLock { $0.append(connection) }
            while let frame = try await connection.receive() {
                received.add(1, ordering: .relaxed)
                try connection.send(frame.bytes)
            }
        }
        let client = try await served.client()
        let payloads = (0..<8).map { patternBytes(1 << 20, seed: UInt64($0 + 1)) }
        let sending = Task(executorPreference: UnixReactor.shared) {
            for payload in payloads { try await client.send(payload, timeout: .seconds(60)) }
        }
        // The server reads one frame, queues its 1 MiB reply, and then does not read while the client does not.
        #expect(await eventually { connections.withLock { $0.first?.isWaitingForOutboundRoom ?? false } })
        #expect(received.load(ordering: .relaxed) <= 2)
        for payload in payloads {
            #expect(try await client.receive(timeout: .seconds(30))?.bytes == payload)
        }
        try await sending.value
        #expect(received.load(ordering: .relaxed) == payloads.count)
        client.stream.close()
        await served.stop()
    }

    @Test("a client that never takes its reply is disconnected after sendTimeout")
    func sendTimeoutCutsANonReader() async throws {
        var configuration = UnixServerConfiguration()
        configuration.sendTimeout = .milliseconds(200)
        let served = try ServedServer("send-timeout", configuration) { connection in
            while try await connection.receive() != nil {
                try connection.send(patternBytes(4 << 20))  // far more than the socket buffer holds
            }
        }
        let stalled = try await served.client()
        try await stalled.send([1])
        #expect(await eventually { served.server.connectionCount == 1 })
        #expect(await eventually { served.server.connectionCount == 0 })  // cut off, the handler ended
        #expect(served.server.outboundBytes.now == 0)
        stalled.stream.close()
        await served.stop()
    }

    @Test("when the total outbound budget is full, the clients holding the most unread bytes are cut, not the others")
    func totalOutboundBudgetEvictsTheLargest() async throws {
        var configuration = UnixServerConfiguration()
        configuration.maximumFrameLength = 1 << 20
        configuration.maxOutboundBytesPerConnection = 2 << 20
        configuration.maxOutboundBytes = 4 << 20
        let replied = Atomic<Int>(0)
        let served = try ServedServer("outbound-total", configuration) { connection in
            while let frame = try await connection.receive() {
                defer { replied.add(1, ordering: .relaxed) }
                try connection.send(frame.bytes.count == 1 ? patternBytes(1 << 20) : frame.bytes)
            }
        }
        // Eight clients ask for 1 MiB each and do not read: 8 MiB wanted, 4 MiB allowed.
        var stalled: [FramedStream] = []
        for _ in 0..<8 {
            let client = try await served.client()
            try await client.send([1])
            stalled.append(client)
        }
        #expect(await eventually { replied.load(ordering: .relaxed) == 8 })
        #expect(served.server.outboundBytes.peak <= configuration.maxOutboundBytes)
        #expect(try await roundTrip(served, Array("small".utf8)))
        // The cut ones read part of their reply, then the end; the others get it whole.
        var cut = 0
        var whole = 0
        for client in stalled {
            do {
                if try await client.receive(timeout: .seconds(20))?.bytes.count == 1 << 20 {
                    whole += 1
                } else {
                    cut += 1
                }
            } catch let error as UnixSocketError where error.code != .timedOut {
                cut += 1
            }
            client.stream.close()
        }
        #expect(cut >= 4 && cut + whole == 8, "cut \(cut), whole \(whole) of 8")
        await served.stop()
        #expect(served.server.outboundBytes.now == 0)
    }

    @Test("a connection between frames keeps no read buffer, however large its last frame was")
    func idleConnectionsKeepNoBuffer() async throws {
        // Found by scripts/soak.sh: the decoder kept up to 1 MiB of capacity per connection for reuse, which
        // 1,000 clients that had each sent one large frame turned into ~900 MiB nobody accounted for.
        let connections = Mutex<[UnixServerConnection]>([])
        let served = try ServedServer("idle-buffer") { connection in
            connections.withLock { $0.append(connection) }
            try await echoHandler(connection)
        }
        var clients: [FramedStream] = []
        for index in 0..<4 {
            let client = try await served.client()
            // Under 1 MiB: a larger buffer the decoder drops by itself.
            let payload = patternBytes(300_000 + 1000 * index, seed: UInt64(index + 1))
            try await client.send(payload)
            #expect(try await client.receive(timeout: .seconds(20))?.bytes == payload)
            clients.append(client)
        }
        let held = connections.withLock { $0 }
        #expect(held.count == 4)
        #expect(held.map(\.inboundBufferCapacity) == [0, 0, 0, 0])
        #expect(served.server.inboundBytes.now == 0)
        for client in clients { client.stream.close() }
        await served.stop()
    }

    @Test("a client that does not read its descriptors is cut off at the descriptor cap")
    func outboundDescriptorCap() async throws {
        var configuration = UnixServerConfiguration()
        configuration.maxOutboundDescriptorsPerConnection = 4
        let outcome = Mutex<(sent: Int, error: UnixSocketError.Code?)>((0, nil))
        let served = try ServedServer("fd-cap", configuration) { connection in
            guard try await connection.receive() != nil else { return }
            let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
            defer { try? file.close() }
            do {
                for _ in 0..<10 {
                    try connection.send(patternBytes(1 << 20), descriptors: [file])  // each more than the socket holds
                    outcome.withLock { $0.sent += 1 }
                }
            } catch let error as UnixSocketError {
                outcome.withLock { $0.error = error.code }
            }
        }
        let client = try await served.client()
        try await client.send([1])
        #expect(await eventually { outcome.withLock { $0.error } != nil })
        #expect(outcome.withLock { $0.sent } == 4)
        #expect(outcome.withLock { $0.error } == .tooLarge)
        client.stream.close()
        await served.stop()
    }
}
