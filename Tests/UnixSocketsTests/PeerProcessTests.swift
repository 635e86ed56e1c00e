import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// The pid a pidfd names, from /proc/self/fdinfo ("Pid:" line).
func pidNamed(byPidfd fd: CInt) -> Int32? {
    guard let info = try? String(contentsOfFile: "/proc/self/fdinfo/\(fd)", encoding: .utf8) else { return nil }
    for line in info.split(separator: "\n") where line.hasPrefix("Pid:") {
        let digits = line.dropFirst(4).filter { $0 != " " && $0 != "\t" }
        return Int32(String(digits))
    }
    return nil
}

/// Whether the running kernel is Linux 6.5 or later (it has SO_PEERPIDFD).
func kernelHasPeerPidfd() -> Bool {
    guard let release = try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8) else { return false }
    let numbers = release.split(whereSeparator: { !$0.isNumber }).prefix(2).compactMap { Int($0) }
    guard numbers.count == 2 else { return false }
    return numbers[0] > 6 || (numbers[0] == 6 && numbers[1] >= 5)
}

/// SO_PEERPIDFD, or nil on a kernel without it (ENOPROTOOPT, before Linux 6.5), where that is expected.
func peerPidfd(_ body: () throws(UnixSocketError) -> OwnedDescriptor) throws -> OwnedDescriptor? {
    do {
        return try body()
    } catch {
        if error.errno == Errno.protocolNotAvailable && !kernelHasPeerPidfd() { return nil }
        throw error
    }
}

@Suite struct PeerProcessTests {
    @Test func peerPidfdNamesTheConnectingPythonProcess() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let listener = try UnixStreamListener.bind(dir.address("pidfd.sock"))
        defer { listener.close() }
        let python = try ChildProcess(
            "/usr/bin/python3",
            [
                "-c", "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(1)",
                dir.file("pidfd.sock"),
            ]
        )
        defer { python.wait(seconds: 10) }
        let connection = try listener.accept(timeout: .seconds(60))
        defer { connection.close() }
        guard
            let pidfd = try peerPidfd({ () throws(UnixSocketError) -> OwnedDescriptor in
                try connection.peerProcessDescriptor()
            })
        else { return }
        let fd: CInt = try #require(pidfd.rawValue)
        let named: Int32? = pidNamed(byPidfd: fd)
        let expected: Int32 = python.pid
        #expect(named == expected)
        let flags: CInt = fcntl(fd, F_GETFD)
        #expect(flags & FD_CLOEXEC != 0)
        try connection.write(all: [UInt8(1)])
    }

    @Test func seqpacketPairNamesThisProcess() throws {
        let (a, b) = try UnixSeqPacket.pair()
        defer {
            a.close()
            b.close()
        }
        guard
            let pidfd = try peerPidfd({ () throws(UnixSocketError) -> OwnedDescriptor in
                try a.peerProcessDescriptor()
            })
        else { return }
        let fd: CInt = try #require(pidfd.rawValue)
        let named: Int32? = pidNamed(byPidfd: fd)
        let expected: Int32 = getpid()
        #expect(named == expected)
    }
}
