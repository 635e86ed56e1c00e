import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

@Suite(.onReactor) struct AsyncTests {
    @Test func streamEchoManyClients() async throws {
        let address = uniqueAbstract("async-echo")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let server = Task(executorPreference: UnixReactor.shared) {
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in listener.connections {
                    group.addTask {
                        defer { connection.close() }
                        while true {
                            let chunk = try await connection.read(maxBytes: 4096)
                            if chunk.isEmpty { return }
                            try await connection.write(all: chunk)
                        }
                    }
                }
            }
        }
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for client in 0..<50 {
                group.addTask {
                    let stream = try await UnixStream.connect(to: address, timeout: .seconds(60))
                    defer { stream.close() }
                    var ok = true
                    for round in 0..<20 {
                        let payload = Array("client \(client) round \(round)".utf8)
                        try await stream.write(all: payload)
                        let echoed = try await stream.read(exactly: payload.count, timeout: .seconds(60))
                        if echoed != payload { ok = false }
                    }
                    return ok
                }
            }
            for try await ok in group { #expect(ok) }
        }
        listener.close()
        _ = try? await server.value
    }

    @Test func cancellationWakesReader() async throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let reader = Task(executorPreference: UnixReactor.shared) { try await a.read(maxBytes: 16) }
        try await Task.sleep(for: .milliseconds(50))
        reader.cancel()
        let error = await #expect(throws: UnixSocketError.self) { try await reader.value }
        #expect(error?.code == .cancelled)
        #expect(error?.description == "recv: cancelled")
    }

    @Test(
        "the async face has the blocking face's operations: readToEnd, write(vectored:), nextMessageSize, receive(into:)"
    )
    func asyncParity() async throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        try await a.write(vectored: [Array("he".utf8), Array("llo".utf8)])
        try await a.write(all: Array(" world".utf8)[...])  // any Collection<UInt8>, as blocking
        try a.shutdown(.write)
        #expect(try await b.readToEnd(maxBytes: 64) == Array("hello world".utf8))
        let (x, y) = try UnixStream.pair()
        defer {
            x.close()
            y.close()
        }
        try await x.write(all: [UInt8](repeating: 1, count: 10))
        x.close()
        let tooLarge = await #expect(throws: UnixSocketError.self) { _ = try await y.readToEnd(maxBytes: 4) }
        #expect(tooLarge?.code == .tooLarge)

        let (p, q) = try UnixDatagram.pair()
        defer {
            p.close()
            q.close()
        }
        try await p.send(Array("12345".utf8))
        #expect(try await q.nextMessageSize() == 5)
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: 8, alignment: 1)
        defer { raw.deallocate() }
        #expect(try await q.receive(into: raw) == 5)
        #expect(Array(raw[..<5]) == Array("12345".utf8))
    }

    @Test func cancellationIsTypedOnEveryWait() async throws {
        // A message receive, an accept and a back-off (connect to a full backlog) all end with `.cancelled`.
        let (a, b) = try UnixSeqPacket.pair()
        defer {
            a.close()
            b.close()
        }
        let receiver = Task { try await a.receive(maxBytes: 16) }
        let address = uniqueAbstract("cancel-accept")
        let listener = try UnixSeqPacketListener.bind(address, backlog: 0)
        defer { listener.close() }
        let acceptor = Task { try await listener.accept() }
        try await Task.sleep(for: .milliseconds(50))
        receiver.cancel()
        acceptor.cancel()
        let received = await #expect(throws: UnixSocketError.self) { try await receiver.value }
        #expect(received?.code == .cancelled)
        #expect(received?.operation == "receive")
        let accepted = await #expect(throws: UnixSocketError.self) { try await acceptor.value }
        #expect(accepted?.code == .cancelled)
    }

    @Test func closeWakesWaiterWithClosedError() async throws {
        let (a, b) = try UnixStream.pair()
        defer { b.close() }
        let reader = Task(executorPreference: UnixReactor.shared) { try await a.read(maxBytes: 16) }
        try await Task.sleep(for: .milliseconds(50))
        a.close()
        do {
            _ = try await reader.value
            Issue.record("read returned after close")
        } catch let error as UnixSocketError {
            #expect(error.code == .closed)
        }
    }

    @Test func asyncTimeout() async throws {
        let (a, b) = try UnixSeqPacket.pair()
        defer {
            a.close()
            b.close()
        }
        do {
            _ = try await a.receive(timeout: .milliseconds(30))
            Issue.record("receive returned without data")
        } catch {
            #expect(error.code == .timedOut)
        }
    }

    @Test func reactorExecutorEcho() async throws {
        let (a, b) = try UnixSeqPacket.pair()
        defer {
            a.close()
            b.close()
        }
        let echo = Task(executorPreference: UnixReactor.shared) {
            try await withTaskExecutorPreference(UnixReactor.shared) {
                for _ in 0..<100 {
                    let message = try await b.receive()
                    try await b.send(message.bytes)
                }
            }
        }
        try await withTaskExecutorPreference(UnixReactor.shared) {
            for index in 0..<100 {
                let payload = Array("message \(index)".utf8)
                try await a.send(payload)
                #expect(try await a.receive(timeout: .seconds(60)).bytes == payload)
            }
        }
        try await echo.value
    }

    @Test func datagramAsyncWithDescriptors() async throws {
        let server = try UnixDatagram.bind(uniqueAbstract("adg"))
        let client = try UnixDatagram.bind(.unnamed)
        defer {
            server.close()
            client.close()
        }
        let fd = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? fd.close() }
        let receiving = Task(executorPreference: UnixReactor.shared) { try await server.receive(timeout: .seconds(60)) }
        try await client.send(Array("hi".utf8), to: try server.local, descriptors: [fd])
        let message = try await receiving.value
        #expect(message.bytes == Array("hi".utf8))
        #expect(message.descriptors.count == 1)
        #expect(message.sender == (try client.local))
    }
}
