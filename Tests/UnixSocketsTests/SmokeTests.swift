import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

@Suite struct SmokeTests {
    @Test func streamPathRoundTrip() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("s.sock")
        let listener = try UnixStreamListener.bind(address, mode: FilePermissions(rawValue: 0o600))
        let client = try UnixStream.connect(to: address)
        let server = try listener.accept()
        try client.write(all: bytes("hello"))
        #expect(try server.read(exactly: 5) == bytes("hello"))
        #expect(try server.credentials.pid == getpid())
        #expect(try server.local == address)
        var info = stat()
        #expect(lstat(dir.file("s.sock"), &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        client.close()
        #expect(try server.read() == [])
        listener.close()
        #expect(lstat(dir.file("s.sock"), &info) == -1)
    }

    @Test func seqpacketAndDescriptors() throws {
        let (a, b) = try UnixSeqPacket.pair()
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        try a.send(bytes("x"), descriptors: [.init(rawValue: fd)])
        let message = try b.receive()
        #expect(message.bytes == bytes("x"))
        #expect(message.descriptors.count == 1)
        let received = try #require(message.descriptors.first?.rawValue)
        #expect(fcntl(received, F_GETFD) & FD_CLOEXEC != 0)
    }

    @Test func datagramAutobind() throws {
        let server = try UnixDatagram.bind(uniqueAbstract("d"))
        let client = try UnixDatagram.bind(.unnamed)
        let local = try client.local
        #expect(local.isAbstract)
        try client.send(bytes("ping"), to: try server.local)
        let message = try server.receive()
        #expect(message.bytes == bytes("ping"))
        #expect(message.sender == local)
        try server.send(message.bytes, to: try #require(message.sender))
        #expect(try client.receive().bytes == bytes("ping"))
    }
}
