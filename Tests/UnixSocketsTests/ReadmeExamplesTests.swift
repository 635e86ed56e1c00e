import Foundation
import Logging
import SystemPackage
import Testing
import UnixSockets

// The README's library examples, compiled and run here so they stay true.

@Suite struct ReadmeExamplesTests {
    @Test func blockingStreamWithCredentialsAndDescriptors() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = dir.file("app.sock")

        // README: blocking
        let address = try UnixAddress(path)  // or "@name" for an abstract name
        let listener = try UnixStreamListener.bind(address, mode: [.ownerReadWrite, .groupReadWrite])
        let client = try UnixStream.connect(to: address, timeout: .seconds(60))
        let connection = try listener.accept()
        print(try connection.credentials)  // pid=... uid=... gid=...
        try client.write(all: Array("ping".utf8))
        let request = try connection.read(exactly: 4)
        let file = try FileDescriptor.open("/etc/hostname", .readOnly)
        try connection.send(Array("here".utf8), descriptors: [file])  // SCM_RIGHTS
        try file.close()
        let message = try client.receive(maxBytes: 4096, maxDescriptors: 8)
        let received = message.descriptors.first?.take()  // now yours to use and close
        // end README

        #expect(request == Array("ping".utf8))
        #expect(message.bytes == Array("here".utf8))
        #expect(received != nil)
        try received?.close()
        client.close()
        connection.close()
        listener.close()
    }

    @Test func seqpacketAndDatagram() throws {
        // README: messages
        let (a, b) = try UnixSeqPacket.pair()
        try a.send(Array("one whole message".utf8))
        let size = try b.nextMessageSize()  // 17, without consuming it
        let whole = try b.receive(maxBytes: size)

        let name = try UnixAddress("@uds-readme-\(getpid())")
        let server = try UnixDatagram.bind(name)
        let client = try UnixDatagram.bind(.unnamed)  // a kernel-chosen name, so replies can come back
        try client.send(Array("hi".utf8), to: name)
        let datagram = try server.receive()
        try server.send(datagram.bytes, to: datagram.sender!)
        // end README

        #expect(size == 17)
        #expect(whole.bytes.count == 17)
        #expect(try client.receive(timeout: .seconds(60)).bytes == Array("hi".utf8))
    }

    @Test(.onReactor) func asyncEchoServerAndClient() async throws {
        let address = try UnixAddress("@uds-readme-async-\(getpid())")
        // README: async echo server
        let listener = try UnixStreamListener.bind(address)
        let server = Task(executorPreference: UnixReactor.shared) {
            try await withThrowingDiscardingTaskGroup { group in
                for try await connection in listener.connections {
                    group.addTask {
                        defer { connection.close() }
                        while true {
                            let bytes = try await connection.read(maxBytes: 65536)
                            if bytes.isEmpty { return }  // the client closed
                            try await connection.write(all: bytes)
                        }
                    }
                }
            }
        }
        // README: async client
        let stream = try await UnixStream.connect(to: address)
        try await stream.write(all: Array("hello".utf8))
        let echoed = try await stream.read(exactly: 5, timeout: .seconds(60))
        try stream.shutdown(.write)
        stream.close()
        // end README
        #expect(echoed == Array("hello".utf8))
        listener.close()  // ends `connections`
        try await server.value
    }

    @Test(.onReactor) func framedServer() async throws {
        let address = try UnixAddress("@uds-readme-framed-\(getpid())")
        // README: framed server
        var configuration = UnixServerConfiguration()
        configuration.maxConnectionsPerUID = 64
        configuration.idleTimeout = .seconds(60)
        let server = try UnixServer(
            address: address,
            configuration: configuration,
            logger: Logger(label: "echo", factory: { _ in SwiftLogNoOpLogHandler() })
        )
        let serving = Task(executorPreference: UnixReactor.shared) {
            try await server.run { connection in
                while let frame = try await connection.receive() {
                    try connection.send(frame.bytes)  // bounded queue; a non-reader is cut off
                }
            }
        }
        let framed = FramedStream(try await UnixStream.connect(to: address))
        try await framed.send(Array("frame".utf8))
        let reply = try await framed.receive()
        server.shutdown()  // graceful; removes a socket file
        // end README
        #expect(reply?.bytes == Array("frame".utf8))
        framed.stream.close()
        try await serving.value
    }
}
