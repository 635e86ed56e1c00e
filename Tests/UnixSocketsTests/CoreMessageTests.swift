import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// A connected pair of a message type, behind one face.
struct MessagePair {
    let type: UnixSocketType
    let seqA: UnixSeqPacket?, seqB: UnixSeqPacket?
    let dgramA: UnixDatagram?, dgramB: UnixDatagram?

    init(_ type: UnixSocketType) throws {
        self.type = type
        if type == .seqPacket {
            let (a, b) = try UnixSeqPacket.pair()
            (seqA, seqB, dgramA, dgramB) = (a, b, nil, nil)
        } else {
            let (a, b) = try UnixDatagram.pair()
            (seqA, seqB, dgramA, dgramB) = (nil, nil, a, b)
        }
    }

    func send(_ payload: [UInt8], descriptors: [FileDescriptor] = [], credentials: UnixCredentials? = nil) throws {
        if let seqA {
            try seqA.send(payload, descriptors: descriptors, credentials: credentials, timeout: ioTimeout)
        } else {
            try dgramA!.send(payload, descriptors: descriptors, credentials: credentials, timeout: ioTimeout)
        }
    }

    func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration = ioTimeout) throws -> UnixMessage {
        if let seqB { return try seqB.receive(maxBytes: maxBytes, maxDescriptors: maxDescriptors, timeout: timeout) }
        return try dgramB!.receive(maxBytes: maxBytes, maxDescriptors: maxDescriptors, timeout: timeout)
    }

    func nextMessageSize() throws -> Int {
        if let seqB { return try seqB.nextMessageSize(timeout: ioTimeout) }
        return try dgramB!.nextMessageSize(timeout: ioTimeout)
    }

    func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if let seqB { return try seqB.receive(into: buffer, timeout: ioTimeout) }
        return try dgramB!.receive(into: buffer, timeout: ioTimeout)
    }

    func enableCredentialPassing() throws {
        if let seqB { try seqB.enableCredentialPassing() } else { try dgramB!.enableCredentialPassing() }
    }

    var sendBufferSize: Int {
        get throws { Int(try (seqA?.core ?? dgramA!.core).getOption(SOL_SOCKET, SO_SNDBUF, operation: "test")) }
    }
}

/// RELIABILITY.md, "Datagrams and seqpacket".
@Suite("Core: datagrams and seqpacket")
struct CoreMessageTests {
    @Test("a Python datagram peer: zero-length, descriptors and credentials both ways, binary names")
    func pythonDatagramPeer() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try makeFile(dir, "py.txt", "py-dgram").close()
        let ours = try makeFile(dir, "ours.txt", "swift-dgram")
        defer { try? ours.close() }
        let theirs = binaryAbstract("pydgram")
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(A(sys.argv[1])); out('ready')
            for i in range(3):
                wait_readable(s)
                msg, fds, flags, addr = socket.recv_fds(s, 65536, 4)
                content = os.pread(fds[0], 100, 0).decode() if fds else '-'
                out('msg', len(msg), msg.decode() or '-', len(fds), content, flags, addr.hex())
            f = os.open(sys.argv[2], os.O_RDONLY)
            creds = struct.pack('iII', os.getpid(), os.getuid(), os.getgid())
            s.sendmsg([b'reply'], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds),
                                   (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [f]))], 0, addr)
            out('replied', os.getpid(), os.getuid(), os.getgid())
            """,
            [theirs.pythonHex, dir.file("py.txt")]
        )
        try peer.expectLine("ready")
        let client = try UnixDatagram.bind(.unnamed)
        defer { client.close() }
        try client.enableCredentialPassing()
        let me = try client.local.pythonHex
        try client.send(bytes("one"), to: theirs, timeout: ioTimeout)
        try client.send([], to: theirs, timeout: ioTimeout)
        try client.send(bytes("three"), to: theirs, descriptors: [ours], timeout: ioTimeout)
        #expect(try peer.line() == "msg 3 one 0 - 0 \(me)")
        #expect(try peer.line() == "msg 0 - 0 - 0 \(me)", "a zero-length datagram is delivered")
        #expect(try peer.line() == "msg 5 three 1 swift-dgram 0 \(me)")
        let replied = try peer.line().split(separator: " ")
        let message = try client.receive(maxDescriptors: 4, timeout: ioTimeout)
        #expect(message.bytes == bytes("reply"))
        #expect(message.sender == theirs, "the sender's binary abstract name, exactly")
        #expect(message.credentials?.pid == peer.pid)
        #expect(message.credentials?.pid == Int32(replied[1]))
        #expect(message.credentials?.uid == UInt32(replied[2]))
        #expect(message.credentials?.gid == UInt32(replied[3]))
        #expect(message.descriptors.count == 1, "SCM_CREDENTIALS and SCM_RIGHTS are both read")
        if let fd = message.descriptors.first?.rawValue {
            #expect(readAll(fd) == bytes("py-dgram"))
            #expect(isCloseOnExec(fd))
        }
        try peer.succeed()
    }

    @Test(
        "a Python seqpacket server: boundaries, 254 descriptors refused by the kernel, several SCM_RIGHTS, empty message"
    )
    func pythonSeqpacketPeer() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        for (name, content) in [("1", "one"), ("2", "two"), ("3", "three")] { try makeFile(dir, name, content).close() }
        let address = dir.address("py-seq.sock")
        let peer = try PythonPeer(
            """
            l = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); l.bind(A(sys.argv[1])); l.listen(1); out('ready')
            c, _ = l.accept()
            for i in range(3):
                msg, fds, flags, _ = socket.recv_fds(c, 65536, 8)
                out('msg', len(msg), fnv(msg), len(fds), flags)
            r, w = os.pipe()
            try:
                socket.send_fds(c, [b'x'], [r] * 254); out('254 sent')
            except OSError as e:
                out('254', ename(e))
            fs = [os.open(p, os.O_RDONLY) for p in sys.argv[2:5]]
            c.sendmsg([b'multi'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fs[:1])),
                                   (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fs[1:]))])
            c.send(b'')
            c.send(b'after')
            c.close()
            out('done')
            """,
            [address.pythonHex, dir.file("1"), dir.file("2"), dir.file("3")]
        )
        try peer.expectLine("ready")
        let client = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
        let large = patternBytes(1000)
        let null = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? null.close() }
        try client.send(bytes("a"), timeout: ioTimeout)
        try client.send(large, timeout: ioTimeout)
        try client.send(bytes("c"), descriptors: [null, null], timeout: ioTimeout)
        #expect(try peer.line() == "msg 1 \(checksum(bytes("a"))) 0 0")
        #expect(try peer.line() == "msg 1000 \(checksum(large)) 0 0")
        #expect(try peer.line() == "msg 1 \(checksum(bytes("c"))) 2 0")
        #expect(try peer.line() == "254 EINVAL", "kernel fact: SCM_MAX_FD is 253")

        let multi = try client.receive(maxDescriptors: 8, timeout: ioTimeout)
        #expect(multi.bytes == bytes("multi"))
        #expect(
            multi.descriptors.compactMap(\.rawValue).map { String(decoding: readAll($0), as: UTF8.self) } == [
                "one", "two", "three",
            ]
        )
        // Kernel fact: an empty seqpacket message reads exactly like EOF (0 bytes) ...
        #expect(try client.receive(timeout: ioTimeout).bytes == [])
        // ... but the connection was still open: the next message follows. (We refuse to send empty ones.)
        #expect(try client.receive(timeout: ioTimeout).bytes == bytes("after"))
        #expect(try client.receive(timeout: ioTimeout).bytes == [], "the real EOF")
        try peer.expectLine("done")
        try peer.succeed()
    }

    @Test("message boundaries are kept", arguments: messageTypes)
    func boundariesKept(type: UnixSocketType) throws {
        let pair = try MessagePair(type)
        let messages = [bytes("a"), patternBytes(1000), bytes("hello"), patternBytes(65536, seed: 4)]
        for message in messages { try pair.send(message) }
        for message in messages {
            #expect(try pair.nextMessageSize() == message.count)
            #expect(try pair.receive().bytes == message)
        }
        expectError(.timedOut) { _ = try pair.receive(timeout: .milliseconds(20)) }
    }

    @Test("an oversized message is EMSGSIZE and the error names the limit (SO_SNDBUF - 32)", arguments: messageTypes)
    func oversizedMessage(type: UnixSocketType) throws {
        let pair = try MessagePair(type)
        let sendBuffer = try pair.sendBufferSize
        let limit = sendBuffer - 32
        let error = expectError(.system, errno: .messageTooLong) { try pair.send(patternBytes(limit + 1)) }
        #expect(
            error?.detail == "message of \(limit + 1) bytes is too long (the limit is \(limit) bytes: SO_SNDBUF - 32)",
            "\(String(describing: error))"
        )
        #expect(error?.description.contains("(EMSGSIZE)") == true)
        // Exactly the limit goes through, whole.
        let fits = patternBytes(limit, seed: 5)
        try pair.send(fits)
        #expect(sameBytes(try pair.receive(maxBytes: limit).bytes, fits))
        if sendBuffer == 212_992 { #expect(limit == 212_960, "the default on this kernel") }

        if type == .datagram {
            // The unconnected form names the destination.
            let server = try UnixDatagram.bind(uniqueAbstract("big"))
            defer { server.close() }
            let destination = try server.local
            let sendto = expectError(.system, errno: .messageTooLong) {
                try UnixDatagram.unbound().send(patternBytes(limit + 1), to: destination, timeout: ioTimeout)
            }
            #expect(sendto?.address == destination)
            #expect(sendto?.detail?.contains("the limit is \(limit) bytes") == true)
        }
    }

    @Test(
        "a receive buffer too small is .messageTruncated (message discarded); nextMessageSize tells the size",
        arguments: messageTypes
    )
    func truncationIsAnError(type: UnixSocketType) throws {
        let pair = try MessagePair(type)
        try pair.send(patternBytes(100))
        try pair.send(bytes("next"))
        #expect(try pair.nextMessageSize() == 100)
        #expect(try pair.nextMessageSize() == 100, "peeking does not consume")
        let error = expectError(.messageTruncated) { _ = try pair.receive(maxBytes: 10) }
        #expect(error?.detail == "a message of 100 bytes did not fit in 10 bytes (MSG_TRUNC); it was discarded")
        #expect(try pair.receive().bytes == bytes("next"))
        // The allocation-free form too, and a zero-byte buffer.
        try pair.send(patternBytes(50))
        try pair.send(bytes("z"))
        var small = [UInt8](repeating: 0, count: 49)
        expectError(.messageTruncated) { _ = try small.withUnsafeMutableBytes { try pair.receive(into: $0) } }
        expectError(.messageTruncated) { _ = try pair.receive(maxBytes: 0) }
        expectError(.timedOut) { _ = try pair.receive(timeout: .milliseconds(20)) }
    }

    @Test(
        "a full receiver queue: max_dgram_qlen + 1 datagrams fit, then a send with a timeout gets .timedOut",
        arguments: ["unconnected", "connected"]
    )
    func fullReceiverQueue(mode: String) throws {
        let qlen = try #require(sysctlInt("/proc/sys/net/unix/max_dgram_qlen"))
        let address = uniqueAbstract("qlen")
        let receiver = try UnixDatagram.bind(address)
        defer { receiver.close() }
        let sender = try UnixDatagram.unbound()
        defer { sender.close() }
        if mode == "connected" { try sender.connect(to: address) }
        func send(_ payload: [UInt8], timeout: Duration) throws(UnixSocketError) {
            if mode == "connected" {
                try sender.send(payload, timeout: timeout)
            } else {
                try sender.send(payload, to: address, timeout: timeout)
            }
        }
        var sent = 0
        var failure: UnixSocketError?
        for index in 0..<(qlen + 10) where failure == nil {
            let result = Result { () throws(UnixSocketError) in try send([UInt8(index)], timeout: .milliseconds(50)) }
            switch result {
            case .success: sent += 1
            case .failure(let error): failure = error
            }
        }
        #expect(sent == qlen + 1, "kernel fact: max_dgram_qlen + 1 datagrams are queued")
        #expect(failure?.code == .timedOut, "\(String(describing: failure))")
        if mode == "unconnected" {
            #expect(failure?.errno == .resourceTemporarilyUnavailable)
            #expect(failure?.detail == "the receiver's queue stayed full")
        }
        // A send that waits is woken when the receiver drains one (no busy loop needed to see it through).
        let drain = Background { () throws -> [UInt8] in
            usleep(20_000)
            return try receiver.receive(timeout: ioTimeout).bytes
        }
        try send(bytes("late"), timeout: ioTimeout)
        #expect(try drain.value() == [0])
        var order: [[UInt8]] = []
        for _ in 0..<(qlen + 1) { order.append(try receiver.receive(timeout: ioTimeout).bytes) }
        #expect(order == (1...qlen).map { [UInt8($0)] } + [bytes("late")], "nothing lost or duplicated")
    }

    @Test("a connected datagram socket whose peer closed: ECONNREFUSED, then ENOTCONN", arguments: ["bound", "pair"])
    func connectedPeerClosed(mode: String) throws {
        let sender: UnixDatagram
        if mode == "bound" {
            let address = uniqueAbstract("gone")
            let receiver = try UnixDatagram.bind(address)
            sender = try UnixDatagram.bind(.unnamed)
            try sender.connect(to: address)
            try sender.send(bytes("hi"), timeout: ioTimeout)
            #expect(try receiver.receive(timeout: ioTimeout).bytes == bytes("hi"))
            receiver.close()
        } else {
            let (a, b) = try UnixDatagram.pair()
            sender = a
            b.close()
        }
        let refused = expectError(.system, errno: .connectionRefused) {
            try sender.send(bytes("x"), timeout: ioTimeout)
        }
        #expect(refused?.description.contains("connection refused (ECONNREFUSED)") == true)
        let notConnected = expectError(.system, errno: .socketNotConnected) {
            try sender.send(bytes("x"), timeout: ioTimeout)
        }
        #expect(notConnected?.description.contains("socket is not connected (ENOTCONN)") == true)
    }

    @Test("zero-length datagrams are delivered and readable", arguments: ["pair", "unconnected"])
    func zeroLengthDatagrams(mode: String) throws {
        if mode == "pair" {
            let pair = try MessagePair(.datagram)
            try pair.send([])
            try pair.send(bytes("x"))
            #expect(try pair.nextMessageSize() == 0)
            #expect(try pair.receive().bytes == [])
            #expect(try pair.receive().bytes == bytes("x"))
        } else {
            let receiver = try UnixDatagram.bind(uniqueAbstract("zero"))
            defer { receiver.close() }
            let sender = try UnixDatagram.bind(.unnamed)
            try sender.send([], to: try receiver.local, timeout: ioTimeout)
            let message = try receiver.receive(timeout: ioTimeout)
            #expect(message.bytes == [])
            #expect(message.sender == (try sender.local))
        }
    }

    @Test("an empty seqpacket send is refused before any syscall (the peer would read it as EOF)")
    func emptySeqpacketRefused() throws {
        let (a, b) = try UnixSeqPacket.pair()
        let null = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? null.close() }
        SyscallMock.with([("sendmsg", [.noBufferSpace])]) {
            let error = expectError(.invalidArgument) { try a.send([], timeout: ioTimeout) }
            #expect(error?.detail == "an empty seqpacket message would read like end-of-stream at the peer")
            expectError(.invalidArgument) { try a.send([], descriptors: [null], timeout: ioTimeout) }
            #expect(SyscallMock.remaining("sendmsg") == 1)
        }
        expectError(.timedOut) { _ = try b.receive(timeout: .milliseconds(20)) }
        try a.send(bytes("x"), timeout: ioTimeout)
        #expect(try b.receive(timeout: ioTimeout).bytes == bytes("x"))
    }

    @Test("EINTR on sendmsg and recvmsg is retried; each message arrives exactly once", arguments: messageTypes)
    func interruptedMessages(type: UnixSocketType) throws {
        let pair = try MessagePair(type)
        try SyscallMock.with([("sendmsg", [.interrupted, .interrupted]), ("recvmsg", [.interrupted])]) { () throws in
            try pair.send(bytes("once"))
            #expect(try pair.receive().bytes == bytes("once"))
            #expect(SyscallMock.remaining("sendmsg") == 0 && SyscallMock.remaining("recvmsg") == 0)
        }
        expectError(.timedOut) { _ = try pair.receive(timeout: .milliseconds(20)) }
    }
}
