import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// A connected pair of any type that can carry descriptors.
struct AnyPair {
    let type: UnixSocketType
    let stream: (UnixStream, UnixStream)?
    let messages: MessagePair?

    init(_ type: UnixSocketType) throws {
        self.type = type
        if type == .stream {
            stream = try UnixStream.pair()
            messages = nil
        } else {
            stream = nil
            messages = try MessagePair(type)
        }
    }

    func send(_ payload: [UInt8], descriptors: [FileDescriptor]) throws {
        if let stream {
            try stream.0.send(payload, descriptors: descriptors, timeout: ioTimeout)
        } else {
            try messages!.send(payload, descriptors: descriptors)
        }
    }

    func receive(maxBytes: Int = 65536, maxDescriptors: Int, timeout: Duration = ioTimeout) throws -> UnixMessage {
        if let stream {
            return try stream.1.receive(maxBytes: maxBytes, maxDescriptors: maxDescriptors, timeout: timeout)
        }
        return try messages!.receive(maxBytes: maxBytes, maxDescriptors: maxDescriptors, timeout: timeout)
    }
}

/// RELIABILITY.md, "Passing descriptors (SCM_RIGHTS)".
@Suite("Core: passing descriptors")
struct CoreDescriptorTests {
    @Test(
        "253 descriptors in one message work; 254 are refused before the kernel sees them",
        .serialized,
        arguments: allSocketTypes
    )
    func descriptorCountLimit(type: UnixSocketType) throws {
        let pair = try AnyPair(type)
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        let many = [FileDescriptor](repeating: file, count: 253)
        try pair.send(bytes("m"), descriptors: many)
        let message = try pair.receive(maxDescriptors: 253)
        #expect(message.bytes == bytes("m"))
        #expect(message.descriptors.count == 253)
        let numbers = message.descriptors.compactMap(\.rawValue)
        #expect(Set(numbers).count == 253, "each one is a new descriptor")
        #expect(numbers.allSatisfy(isCloseOnExec), "received descriptors are CLOEXEC")
        #expect(Set(numbers.map(inode(of:))) == [inode(of: file.rawValue)], "all name the same open file")
        message.descriptors.forEach { $0.close() }

        SyscallMock.with([("sendmsg", [.noBufferSpace])]) {
            let error = expectError(.invalidArgument) { try pair.send(bytes("m"), descriptors: many + [file]) }
            #expect(error?.detail == "254 descriptors in one message; the kernel takes at most 253")
            #expect(SyscallMock.remaining("sendmsg") == 1, "no syscall was made")
        }
        expectError(.invalidArgument) { _ = try pair.receive(maxDescriptors: 254) }
        expectError(.invalidArgument) { _ = try pair.receive(maxDescriptors: -1) }
    }

    @Test("an invalid descriptor is EBADF, the caller's error, and the socket stays usable", arguments: allSocketTypes)
    func invalidDescriptorIsEBADF(type: UnixSocketType) throws {
        let pair = try AnyPair(type)
        for bad in [FileDescriptor(rawValue: 1_000_000), FileDescriptor(rawValue: -1)] {
            let error = expectError(.system, errno: .badFileDescriptor) {
                try pair.send(bytes("x"), descriptors: [bad])
            }
            #expect(
                error?.description.contains("bad file descriptor (EBADF): a descriptor passed in is not open") == true
            )
        }
        try pair.send(bytes("ok"), descriptors: [])
        let message = try pair.receive(maxDescriptors: 1)
        #expect(message.bytes == bytes("ok"), "nothing of the failed sends arrived")
    }

    @Test("stream: descriptors with a zero-byte payload are refused (the kernel would drop them)")
    func streamDescriptorsNeedPayload() throws {
        let (a, b) = try UnixStream.pair()
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        SyscallMock.with([("sendmsg", [.noBufferSpace])]) {
            let error = expectError(.invalidArgument) { try a.send([], descriptors: [file], timeout: ioTimeout) }
            #expect(error?.detail?.contains("at least one payload byte") == true)
            #expect(SyscallMock.remaining("sendmsg") == 1)
        }
        expectError(.timedOut) { _ = try b.receive(timeout: .milliseconds(20)) }

        // The kernel fact behind it, from a Python peer: the descriptors vanish without an error.
        let address = uniqueAbstract("drop")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(A(sys.argv[1]))
            out('sent', s.sendmsg([b''], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0, 1, 2]))]))
            s.send(b'z'); s.close()
            """,
            [address.pythonHex]
        )
        let connection = try listener.accept(timeout: ioTimeout)
        try peer.expectLine("sent 0")
        try peer.succeed()
        let message = try connection.receive(maxDescriptors: 8, timeout: ioTimeout)
        #expect(message.bytes == bytes("z"))
        #expect(message.descriptors.isEmpty, "kernel fact: the three descriptors were dropped")
    }

    @Test("stream barrier: bytes sent with descriptors are not merged with later bytes (earlier ones may be)")
    func streamBarrier() throws {
        let (a, b) = try UnixStream.pair()
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        try a.send(bytes("a"), descriptors: [file], timeout: ioTimeout)
        try a.write(all: bytes("b"), timeout: ioTimeout)
        let first = try b.receive(maxBytes: 100, timeout: ioTimeout)
        #expect(first.bytes == bytes("a"))
        #expect(first.descriptors.count == 1)
        let second = try b.receive(maxBytes: 100, timeout: ioTimeout)
        #expect(second.bytes == bytes("b") && second.descriptors.isEmpty)

        // Earlier plain bytes are merged into the read that delivers the descriptors: never later ones.
        try a.write(all: bytes("x"), timeout: ioTimeout)
        try a.send(bytes("y"), descriptors: [file], timeout: ioTimeout)
        try a.write(all: bytes("z"), timeout: ioTimeout)
        let merged = try b.receive(maxBytes: 100, timeout: ioTimeout)
        #expect(merged.bytes == bytes("xy") && merged.descriptors.count == 1)
        #expect(try b.receive(maxBytes: 100, timeout: ioTimeout).bytes == bytes("z"))
    }

    @Test("a partial stream send with descriptors: they travel once, with the first chunk")
    func partialStreamSendCarriesDescriptorsOnce() throws {
        let (a, b) = try UnixStream.pair()
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        let payload = patternBytes(4 << 20, seed: 11)  // larger than the socket buffer: several sendmsg/send calls
        let reader = Background { () throws -> ([UInt8], [Int]) in
            var data: [UInt8] = []
            var descriptorsAt: [Int] = []
            while data.count < payload.count {
                let message = try b.receive(maxBytes: 65536, maxDescriptors: 4, timeout: ioTimeout)
                if message.bytes.isEmpty { break }
                if !message.descriptors.isEmpty { descriptorsAt.append(data.count) }
                descriptorsAt += Array(repeating: data.count, count: max(0, message.descriptors.count - 1))
                data += message.bytes
            }
            return (data, descriptorsAt)
        }
        try a.send(payload, descriptors: [file], timeout: ioTimeout)
        let (data, descriptorsAt) = try reader.value()
        #expect(sameBytes(data, payload))
        #expect(descriptorsAt == [0], "one descriptor, delivered with the first bytes")
    }

    @Test(
        "several SCM_RIGHTS messages in one sendmsg, with SCM_CREDENTIALS, from a Python peer",
        arguments: allSocketTypes
    )
    func severalControlMessagesFromPython(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        for (name, content) in [("1", "one"), ("2", "two"), ("3", "three")] { try makeFile(dir, name, content).close() }
        let address = uniqueAbstract("multi")
        let server = try AnyServer(type, address)
        defer { server.close() }
        // The receiver asks for credentials first (where the type offers it): they must come with the descriptors.
        if let datagram = server.datagram { try datagram.enableCredentialPassing() }
        let peer = try PythonPeer(
            """
            typ = eval(sys.argv[1])
            s = socket.socket(socket.AF_UNIX, typ)
            if typ == socket.SOCK_DGRAM:
                s.bind(b'')     # autobind, so that the receiver can answer
            s.connect(A(sys.argv[2]))
            fs = [os.open(p, os.O_RDONLY) for p in sys.argv[3:6]]
            creds = struct.pack('iII', os.getpid(), os.getuid(), os.getgid())
            cmsgs = [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds),
                     (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fs[:1])),
                     (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fs[1:]))]
            s.sendmsg([b'multi'], cmsgs)
            out('sent')
            wait_readable(s)
            """,
            [type.python, address.pythonHex, dir.file("1"), dir.file("2"), dir.file("3")]
        )
        try peer.expectLine("sent")
        let message: UnixMessage
        switch type {
        case .stream:
            let connection = try server.stream!.accept(timeout: ioTimeout)
            message = try connection.receive(maxDescriptors: 8, timeout: ioTimeout)
            try connection.write(all: bytes("k"), timeout: ioTimeout)
        case .seqPacket:
            let connection = try server.seqPacket!.accept(timeout: ioTimeout)
            try connection.enableCredentialPassing()  // after the send: the kernel still attaches them on a connection
            message = try connection.receive(maxDescriptors: 8, timeout: ioTimeout)
            #expect(message.credentials?.pid == peer.pid)
            try connection.send(bytes("k"), timeout: ioTimeout)
        case .datagram:
            message = try server.datagram!.receive(maxDescriptors: 8, timeout: ioTimeout)
            #expect(message.credentials?.pid == peer.pid, "SCM_CREDENTIALS read next to SCM_RIGHTS")
            #expect(message.credentials?.uid == getuid())
            try server.datagram!.send(bytes("k"), to: try #require(message.sender), timeout: ioTimeout)
        }
        #expect(message.bytes == bytes("multi"))
        let contents = message.descriptors.compactMap(\.rawValue).map { String(decoding: readAll($0), as: UTF8.self) }
        #expect(contents == ["one", "two", "three"], "every descriptor of both SCM_RIGHTS, in order")
        #expect(message.descriptors.compactMap(\.rawValue).allSatisfy(isCloseOnExec))
        try peer.succeed()
    }

    @Test("our descriptors and credentials together reach the receiver", arguments: messageTypes)
    func credentialsAndRightsTogether(type: UnixSocketType) throws {
        let pair = try MessagePair(type)
        try pair.enableCredentialPassing()
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        try pair.send(bytes("both"), descriptors: [file, file], credentials: .current)
        let message = try pair.receive(maxDescriptors: 2)
        #expect(message.bytes == bytes("both"))
        #expect(message.descriptors.count == 2)
        #expect(message.credentials?.pid == getpid())
        #expect(message.credentials?.uid == getuid())
        // The exact fit: room for 2 descriptors plus the credentials is enough (no false truncation).
    }

    @Test(
        "a control buffer too small or absent is .controlTruncated; the next message is fine",
        arguments: allSocketTypes,
        [[2, 0], [2, 1], [3, 1], [8, 7], [4, 3]]
    )
    func controlTruncation(type: UnixSocketType, sentAndRoom: [Int]) throws {
        let (sent, room) = (sentAndRoom[0], sentAndRoom[1])
        let pair = try AnyPair(type)
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        try pair.send(bytes("fds"), descriptors: Array(repeating: file, count: sent))
        let error = expectError(.controlTruncated) { _ = try pair.receive(maxDescriptors: room) }
        #expect(error?.detail?.contains("room for \(room) descriptors") == true, "\(String(describing: error))")
        try pair.send(bytes("next"), descriptors: [file])
        let next = try pair.receive(maxDescriptors: 1)
        #expect(next.bytes == bytes("next") && next.descriptors.count == 1)
    }

    @Test(
        "a receiver that cannot open a file itself reads it through a passed descriptor (peer runs as nobody)",
        .enabled(if: runningAsRoot && setprivAvailable, "needs root (to run the peer as nobody) and setpriv")
    )
    func nobodyReadsPassedFile() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(chmod(dir.path, 0o755) == 0)
        let secret = try makeFile(dir, "secret", "root-only", mode: 0o600)
        defer { try? secret.close() }
        let address = uniqueAbstract("nobody")
        let listener = try UnixSeqPacketListener.bind(address)
        defer { listener.close() }
        let peer = try PythonPeer(
            """
            try:
                open(sys.argv[2]).read(); out('opened')
            except OSError as e:
                out('open', ename(e))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(A(sys.argv[1]))
            msg, fds, flags, _ = socket.recv_fds(s, 100, 4)
            out('got', msg.decode(), len(fds), os.pread(fds[0], 100, 0).decode())
            """,
            [address.pythonHex, dir.file("secret")],
            asNobody: true
        )
        try peer.expectLine("open EACCES")
        let connection = try listener.accept(timeout: ioTimeout)
        #expect(try connection.credentials.uid == 65534)
        try connection.send(bytes("here"), descriptors: [secret], timeout: ioTimeout)
        try peer.expectLine("got here 1 root-only")
        try peer.succeed()
    }

    @Test("a release that fails (socket in use, or closed) keeps the listener's socket-file removal on close")
    func failedReleaseKeepsUnlinkOnClose() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        // In use: another thread waits in accept, so the descriptor cannot be given away.
        let listener = try UnixStreamListener.bind(dir.address("busy.sock"))
        let accepting = Thread { _ = try? listener.accept(timeout: .seconds(10)) }
        accepting.start()
        Thread.sleep(forTimeInterval: 0.3)  // let it reach its poll
        var refused: UnixSocketError?
        do throws(UnixSocketError) {
            let released = try listener.releaseDescriptor()
            try? released.close()
        } catch {
            refused = error
        }
        let failure = try #require(refused, "the release was not refused while another thread accepts")
        #expect(failure.code == .closed)
        #expect(FileManager.default.fileExists(atPath: dir.file("busy.sock")))
        listener.close()
        #expect(
            !FileManager.default.fileExists(atPath: dir.file("busy.sock")),
            "close after a failed release left the file"
        )

        // Closed: the release fails, and the file went with the close.
        let closed = try UnixDatagram.bind(dir.address("closed.sock"))
        closed.close()
        #expect(throws: UnixSocketError.self) { _ = try closed.releaseDescriptor() }
        #expect(!FileManager.default.fileExists(atPath: dir.file("closed.sock")))
    }
}
