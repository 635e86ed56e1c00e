import Foundation
import Synchronization
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

// UnixServer's defaults must not let one user lock everyone else out: a per-uid cap below the total, an idle
// timeout that frees the slots of clients that hold a connection and send nothing.

@Suite("Server: safe defaults", .onReactor)
struct ServerDefaultsTests {
    @Test("the defaults cap each uid below the total and cut idle, trickling and non-reading clients")
    func defaultsAreSafe() throws {
        let configuration = UnixServerConfiguration()
        #expect(configuration.maxConnections == 4096)
        let perUID = try #require(configuration.maxConnectionsPerUID)
        #expect(perUID == 1024)
        #expect(perUID < configuration.maxConnections, "one uid must not be able to take every slot")
        #expect(configuration.idleTimeout == .seconds(60))
        #expect(configuration.frameTimeout == .seconds(30))
        #expect(configuration.sendTimeout == .seconds(30))
        #expect(configuration.maxOutboundBytesPerConnection == 32 << 20)
        #expect(configuration.maxOutboundBytes == 128 << 20)
        #expect(configuration.maxInboundBytes == 128 << 20)
        #expect(configuration.effectiveMaxInboundBytesPerConnection == (16 << 20) + 4 + 65536)
        #expect(configuration.maxOutboundDescriptorsPerConnection == 64)
    }

    @Test(
        "one uid holding its whole share does not lock out another uid",
        .enabled(if: runningAsRoot && setprivAvailable)
    )
    func oneUIDCannotTakeEverySlot() async throws {
        var configuration = UnixServerConfiguration()
        configuration.maxConnections = 4
        configuration.maxConnectionsPerUID = 2
        let served = try ServedServer("per-uid", configuration)
        // root takes its two slots and keeps them; a third connection of root's is refused.
        var held: [FramedStream] = []
        for index in 0..<2 {
            let client = try await served.client()
            try await client.send([UInt8(index)])
            #expect(try await client.receive(timeout: .seconds(20))?.bytes == [UInt8(index)])
            held.append(client)
        }
        let third = try await served.client()
        try? await third.send([9])
        #expect(await serverCloses(third), "a third connection of one uid was served")
        third.stream.close()
        // nobody still gets in (abstract names have no permissions to stop it) and is served.
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(A(sys.argv[1]))
            s.sendall(struct.pack('>I', 5) + b'hello')
            data = b''
            while len(data) < 9:
                wait_readable(s)
                chunk = s.recv(9 - len(data))
                if not chunk:
                    break
                data += chunk
            out('ECHO' if data == struct.pack('>I', 5) + b'hello' else 'BAD ' + data.hex())
            """,
            [served.address.pythonHex],
            asNobody: true
        )
        try await offReactor {
            try peer.expectLine("ECHO")
            try peer.succeed()
        }
        for client in held { client.stream.close() }
        await served.stop()
    }

    @Test("idle connections are cut by the server, even when the handler swallows the timeout")
    func idleConnectionsAreCut() async throws {
        var configuration = UnixServerConfiguration()
        configuration.idleTimeout = .seconds(2)  // long enough that the quiet client's one frame is not late
        let timeouts = Atomic<Int>(0)
        let served = try ServedServer("idle", configuration) { connection in
            do {
                try await echoHandler(connection)
            } catch let error as UnixSocketError where error.code == .timedOut {
                timeouts.add(1, ordering: .relaxed)
                // A handler that carries on regardless: the connection must be closed already.
                try? await Task.sleep(for: .seconds(60))
            }
        }
        // One client never sends; another sends one frame and then goes quiet.
        let silent = try await served.client()
        let started = ContinuousClock.now
        let quiet = try await served.client()
        try await quiet.send(Array("once".utf8))
        let reply = try? await quiet.receive(timeout: .seconds(20))
        // On a loaded machine the frame may reach the server after its idle time: then being cut is right.
        if ContinuousClock.now - started < configuration.idleTimeout! {
            #expect(reply?.bytes == Array("once".utf8))
        }
        for client in [silent, quiet] {
            #expect(await serverCloses(client), "the server did not close an idle connection")
            client.stream.close()
        }
        #expect(await eventually { timeouts.load(ordering: .relaxed) == 2 })
        served.serving.cancel()  // ends the sleeping handlers
        await served.stop()
    }
}
