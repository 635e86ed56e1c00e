import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// RELIABILITY.md, "Credentials".
@Suite("Core: credentials")
struct CoreCredentialTests {
    @Test(
        "SO_PEERCRED and SO_PEERGROUPS name the Python peer as it was at connect / listen time",
        arguments: connectionTypes
    )
    func peerCredentialsOfPythonPeer(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let ours = dir.address("ours.sock")
        let theirs = dir.address("theirs.sock")
        let server = try AnyServer(type, ours)
        defer { server.close() }
        let peer = try PythonPeer(
            """
            typ = eval(sys.argv[1])
            l = socket.socket(socket.AF_UNIX, typ); l.bind(A(sys.argv[3])); l.listen(1)
            if os.getuid() == 0:
                os.setgroups([4242, 4343])
            c = socket.socket(socket.AF_UNIX, typ); c.connect(A(sys.argv[2]))
            out('id', os.getpid(), os.getuid(), os.getgid(), ','.join(map(str, sorted(set(os.getgroups())))))
            if os.getuid() == 0:
                os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
                out('dropped', os.getuid())
            else:
                out('dropped', 'no')
            conn, _ = l.accept()
            wait_readable(c)
            """,
            [type.python, ours.pythonHex, theirs.pythonHex]
        )
        let id = try peer.line().split(separator: " ", omittingEmptySubsequences: false)
        try #require(id.count == 5)
        let dropped = try peer.line()
        let credentials: UnixCredentials
        let finish: () throws -> Void
        switch type {
        case .stream:
            let connection = try server.stream!.accept(timeout: ioTimeout)
            credentials = try connection.credentials
            finish = { try connection.write(all: bytes("k"), timeout: ioTimeout) }
        default:
            let connection = try server.seqPacket!.accept(timeout: ioTimeout)
            credentials = try connection.credentials
            finish = { try connection.send(bytes("k"), timeout: ioTimeout) }
        }
        #expect(credentials.pid == peer.pid)
        #expect(credentials.pid == Int32(id[1]))
        #expect(credentials.uid == UInt32(id[2]), "the uid it had when it connected, not after it dropped")
        #expect(credentials.gid == UInt32(id[3]))
        let groups = Set(id[4].split(separator: ",").compactMap { UInt32($0) })
        #expect(Set(credentials.groups ?? []) == groups, "SO_PEERGROUPS")
        if dropped == "dropped 65534" {
            #expect(groups == [4242, 4343])
            #expect(credentials.isAllowed(uids: [], gids: [4343]), "a supplementary group admits")
        }
        // Our client dials Python's listener after Python dropped to nobody: SO_PEERCRED is listen-time.
        let listenTime: UnixCredentials
        if type == .stream {
            listenTime = try UnixStream.connect(to: theirs, timeout: ioTimeout).credentials
        } else {
            listenTime = try UnixSeqPacket.connect(to: theirs, timeout: ioTimeout).credentials
        }
        #expect(listenTime.pid == peer.pid)
        #expect(listenTime.uid == UInt32(id[2]))
        try finish()
        try peer.succeed()
    }

    @Test(
        "a peer running as nobody is nobody: uid/gid 65534, no supplementary groups; root is not allowed in its place",
        .enabled(if: runningAsRoot && setprivAvailable, "needs root (to run the peer as nobody) and setpriv")
    )
    func nobodyPeer() throws {
        let address = uniqueAbstract("who")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(A(sys.argv[1]))
            out('pid', os.getpid()); wait_readable(s)
            """,
            [address.pythonHex],
            asNobody: true
        )
        let connection = try listener.accept(timeout: ioTimeout)
        let credentials = try connection.credentials
        try peer.expectLine("pid \(peer.pid)")
        #expect(credentials == UnixCredentials(pid: peer.pid, uid: 65534, gid: 65534, groups: []))
        #expect(!credentials.isAllowed(uids: [0], gids: [0]))
        #expect(credentials.isAllowed(uids: [65534]))
        #expect(credentials.isAllowed(uids: [], gids: [65534]))
        try connection.write(all: bytes("k"), timeout: ioTimeout)
        try peer.succeed()
    }

    @Test("an unconnected datagram socket's peer is unknown: every field nil, and unknown is never allowed")
    func unconnectedDatagramIsUnknown() throws {
        let bound = try UnixDatagram.bind(uniqueAbstract("anon"))
        defer { bound.close() }
        for socket in [bound, try UnixDatagram.unbound()] {
            let credentials = try socket.credentials
            #expect(credentials == UnixCredentials(pid: nil, uid: nil, gid: nil, groups: nil))
            #expect(!credentials.isKnown)
            #expect(!credentials.isAllowed(uids: [0, 65534, UInt32.max], gids: [0, 65534, UInt32.max]))
            #expect(credentials.description == "pid=unknown uid=unknown gid=unknown")
            // The kernel fact behind it: pid 0, uid and gid -1, and no error.
            var raw: [UInt32] = [7, 7, 7]  // struct ucred: pid, uid, gid
            var length = socklen_t(12)
            let rc = try socket.core.withDescriptor("test") { fd in
                getsockopt(fd, SOL_SOCKET, SystemConstants.soPeerCred, &raw, &length)
            }
            #expect(rc == 0 && length == 12 && raw == [0, UInt32.max, UInt32.max])
        }
    }

    @Test(
        "SCM_CREDENTIALS: only messages sent after enableCredentialPassing() carry the sender's identity",
        arguments: messageTypes
    )
    func credentialsNeedPassCredBeforeSend(type: UnixSocketType) throws {
        let pair = try MessagePair(type)
        try pair.send(bytes("not asked"))
        #expect(try pair.receive().credentials == nil, "no SO_PASSCRED: no credentials")
        try pair.send(bytes("before"))
        try pair.enableCredentialPassing()
        try pair.send(bytes("after"))
        let before = try pair.receive()
        #expect(before.bytes == bytes("before"))
        // Kernel fact: pid 0 and the overflow uid/gid (65534): no credentials were attached. Unknown, not nobody.
        #expect(before.credentials?.isKnown != true, "\(String(describing: before.credentials))")
        #expect(before.credentials?.isAllowed(uids: [65534], gids: [65534]) != true)
        let after = try pair.receive()
        #expect(after.bytes == bytes("after"))
        #expect(after.credentials == UnixCredentials(pid: getpid(), uid: getuid(), gid: getgid()))
    }

    @Test("unconnected datagrams carry credentials once the receiver asked; an unbound sender cannot be answered")
    func unconnectedDatagramCredentials() throws {
        let receiver = try UnixDatagram.bind(uniqueAbstract("creds"))
        defer { receiver.close() }
        try receiver.enableCredentialPassing()
        let client = try UnixDatagram.unbound()
        try client.send(bytes("who"), to: try receiver.local, timeout: ioTimeout)
        let message = try receiver.receive(timeout: ioTimeout)
        #expect(message.credentials == UnixCredentials(pid: getpid(), uid: getuid(), gid: getgid()))
        // Older kernels autobind an unbound sender when the receiver has SO_PASSCRED; this one may not.
        // Either way the reported sender is the sender's own address.
        let sender = try #require(message.sender)
        #expect(sender == (try client.local))
        if sender.isUnnamed {
            SyscallMock.with([("sendmsg", [.noBufferSpace])]) {
                let error = expectError(.invalidAddress) {
                    try receiver.send(bytes("reply"), to: sender, timeout: ioTimeout)
                }
                #expect(error?.detail?.contains("cannot send to an unnamed address") == true)
                #expect(SyscallMock.remaining("sendmsg") == 1)
            }
        }
    }

    @Test("SO_PEERGROUPS on our own pair lists this process's groups")
    func ownGroups() throws {
        let (a, _) = try UnixStream.pair()
        let count = getgroups(0, nil)
        var mine = [gid_t](repeating: 0, count: Int(max(count, 0)))
        _ = getgroups(count, &mine)
        let credentials = try a.credentials
        #expect(Set(credentials.groups ?? [99_999]) == Set(mine))
        #expect(credentials.pid == getpid())
    }
}
