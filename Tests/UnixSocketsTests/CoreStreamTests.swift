import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// RELIABILITY.md, "Streams" (and the stream parts of descriptor passing, with a Python peer).
@Suite("Core: streams")
struct CoreStreamTests {
    /// The bytes a Python peer computes as `bytes((i * 7 + 3) % 251 for i in range(n))`.
    static func pythonPattern(_ count: Int) -> [UInt8] { (0..<count).map { UInt8(($0 * 7 + 3) % 251) } }

    @Test("a Python stream client: credentials, descriptors both ways, barriers, half-close, 64 KiB each way")
    func pythonStreamPeer() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("py-stream.sock")
        let listener = try UnixStreamListener.bind(address, mode: FilePermissions(rawValue: 0o600))
        defer { listener.close() }
        try makeFile(dir, "python.txt", "from-python-file").close()
        let ours = try makeFile(dir, "ours.txt", "from-swift-file")
        defer { try? ours.close() }

        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(A(sys.argv[1]))
            out('id', os.getpid(), os.getuid(), os.getgid())
            f = os.open(sys.argv[2], os.O_RDONLY)
            socket.send_fds(s, [b'a'], [f])       # 'a' carries the descriptor ...
            s.sendall(b'b')                        # ... and must not be merged with this
            s.sendall(bytes((i * 7 + 3) % 251 for i in range(65536)))
            s.shutdown(socket.SHUT_WR)
            msg, fds, flags, _ = socket.recv_fds(s, 1, 4)
            out('fd-msg', msg.decode(), len(fds), os.pread(fds[0], 100, 0).decode(), flags)
            rest = b''
            while True:
                d = s.recv(65536)
                if not d: break
                rest += d
            out('reply', len(rest), fnv(rest))
            """,
            [address.pythonHex, dir.file("python.txt")]
        )
        let connection = try listener.accept(timeout: ioTimeout)
        let id = try peer.line().split(separator: " ")
        #expect(id.count == 4)
        let credentials = try connection.credentials
        #expect(credentials.pid == Int32(id[1]))
        #expect(credentials.uid == UInt32(id[2]))
        #expect(credentials.gid == UInt32(id[3]))
        #expect(credentials.pid == peer.pid)

        let first = try connection.receive(maxBytes: 100, maxDescriptors: 4, timeout: ioTimeout)
        #expect(first.bytes == bytes("a"), "data sent with descriptors is not merged with the next send")
        #expect(first.descriptors.count == 1)
        if let fd = first.descriptors.first?.rawValue {
            #expect(isCloseOnExec(fd))
            #expect(readAll(fd) == bytes("from-python-file"))
        }
        let rest = try connection.readToEnd(maxBytes: 1 << 20, timeout: ioTimeout)
        #expect(rest == bytes("b") + Self.pythonPattern(65536), "every byte once, in order, then EOF (half-close)")

        // The other direction still works after the peer's SHUT_WR.
        try connection.send(bytes("F"), descriptors: [ours], timeout: ioTimeout)
        let reply = patternBytes(100_000, seed: 9)
        try connection.write(all: reply, timeout: ioTimeout)
        connection.close()
        let fdLine = try peer.line()
        #expect(fdLine == "fd-msg F 1 from-swift-file 0")
        let replyLine = try peer.line()
        #expect(replyLine == "reply 100000 \(checksum(reply))")
        try peer.succeed()
    }

    @Test(
        "the peer closes: reads return EOF (0), again and again; read(exactly:) says how much came",
        arguments: connectionTypes
    )
    func peerCloseIsEOF(type: UnixSocketType) throws {
        if type == .stream {
            let (a, b) = try UnixStream.pair()
            try a.write(all: bytes("xy"), timeout: ioTimeout)
            a.close()
            let error = expectError(.unexpectedEOF) { _ = try b.read(exactly: 5, timeout: ioTimeout) }
            #expect(error?.detail == "the peer closed after 2 of 5 bytes")
            #expect(try b.read(timeout: ioTimeout) == [])
            #expect(try b.read(timeout: ioTimeout) == [])
            var byte: UInt8 = 0
            #expect(try withUnsafeMutableBytes(of: &byte) { try b.read(into: $0, timeout: ioTimeout) } == 0)
        } else {
            let (a, b) = try UnixSeqPacket.pair()
            try a.send(bytes("last"), timeout: ioTimeout)
            a.close()
            #expect(try b.receive(timeout: ioTimeout).bytes == bytes("last"))
            #expect(try b.receive(timeout: ioTimeout).bytes == [])
            #expect(try b.receive(timeout: ioTimeout).bytes == [])
        }
    }

    @Test("the peer closes with our data unread: ECONNRESET", arguments: connectionTypes)
    func peerClosesWithDataUnread(type: UnixSocketType) throws {
        if type == .stream {
            let (a, b) = try UnixStream.pair()
            try a.write(all: bytes("never read"), timeout: ioTimeout)
            b.close()
            let error = expectError(.system, errno: .connectionReset) { _ = try a.read(timeout: ioTimeout) }
            #expect(error?.description.contains("the peer closed with data unread") == true)
        } else {
            let (a, b) = try UnixSeqPacket.pair()
            try a.send(bytes("never read"), timeout: ioTimeout)
            b.close()
            expectError(.system, errno: .connectionReset) { _ = try a.receive(timeout: ioTimeout) }
        }
    }

    @Test("a Python peer that closes with our data unread makes our read fail with ECONNRESET")
    func pythonPeerClosesWithDataUnread() throws {
        let address = uniqueAbstract("reset")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(A(sys.argv[1]))
            wait_readable(s)        # our data is there; do not read it
            s.close(); out('closed')
            """,
            [address.pythonHex]
        )
        let connection = try listener.accept(timeout: ioTimeout)
        try connection.write(all: bytes("unread"), timeout: ioTimeout)
        try peer.expectLine("closed")
        try peer.succeed()
        expectError(.system, errno: .connectionReset) { _ = try connection.read(timeout: ioTimeout) }
    }

    @Test("writing after the peer closed is EPIPE, never SIGPIPE death (every send path)")
    func writeAfterCloseIsEPIPE() async throws {
        await #expect(processExitsWith: .success) {
            try synchronously {  // blocking calls: the exit test body is async
                signal(SIGPIPE, SIG_DFL)  // a SIGPIPE would now kill this process
                let (a, b) = try UnixStream.pair()
                b.close()
                let sends: [(String, () throws -> Void)] = [
                    ("write", { try a.write(all: bytes("x"), timeout: .seconds(60)) }),
                    ("vectored", { try a.write(vectored: [bytes("x"), bytes("y")], timeout: .seconds(60)) }),
                    (
                        "vectored large",
                        {
                            try a.write(
                                vectored: [[UInt8](repeating: 1, count: 70_000), bytes("y")],
                                timeout: .seconds(60)
                            )
                        }
                    ),
                    ("descriptors", { try a.send(bytes("x"), descriptors: [.standardInput], timeout: .seconds(60)) }),
                ]
                for (name, send) in sends {
                    do {
                        try send()
                        exitCheck(false, "\(name): send to a closed peer succeeded")
                    } catch let error as UnixSocketError {
                        exitCheck(error.errno == .brokenPipe, "\(name): \(error)")
                        exitCheck(
                            error.description.contains("broken pipe (EPIPE): the peer closed the connection"),
                            error.description
                        )
                    }
                }
                let (c, d) = try UnixSeqPacket.pair()
                d.close()
                do {
                    try c.send(bytes("x"), timeout: .seconds(60))
                    exitCheck(false, "seqpacket send to a closed peer succeeded")
                } catch let error as UnixSocketError {
                    exitCheck(error.errno == .brokenPipe, "seqpacket: \(error)")
                }
            }
        }
    }

    @Test(
        "half-close: after shutdown(write) the peer reads EOF while the other direction still works",
        arguments: connectionTypes
    )
    func halfClose(type: UnixSocketType) throws {
        let address = uniqueAbstract("half")
        let server = try AnyServer(type, address)
        defer { server.close() }
        if type == .stream {
            let client = try UnixStream.connect(to: address, timeout: ioTimeout)
            let connection = try server.stream!.accept(timeout: ioTimeout)
            try client.write(all: bytes("request"), timeout: ioTimeout)
            try client.shutdown(.write)
            #expect(try connection.readToEnd(maxBytes: 100, timeout: ioTimeout) == bytes("request"))
            try connection.write(all: bytes("response"), timeout: ioTimeout)
            #expect(try client.read(exactly: 8, timeout: ioTimeout) == bytes("response"))
            expectError(.system, errno: .brokenPipe) { try client.write(all: bytes("more"), timeout: ioTimeout) }
            connection.close()
            #expect(try client.read(timeout: ioTimeout) == [])
        } else {
            let client = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
            let connection = try server.seqPacket!.accept(timeout: ioTimeout)
            try client.send(bytes("request"), timeout: ioTimeout)
            try client.shutdown(.write)
            #expect(try connection.receive(timeout: ioTimeout).bytes == bytes("request"))
            #expect(try connection.receive(timeout: ioTimeout).bytes == [])
            try connection.send(bytes("response"), timeout: ioTimeout)
            #expect(try client.receive(timeout: ioTimeout).bytes == bytes("response"))
        }
    }

    @Test("short writes: 8 MiB through a non-blocking pair to a slow reader arrive intact")
    func shortWritesLoop() throws {
        // Kernel fact first: one non-blocking send of 8 MiB is short.
        let (x, y) = try UnixStream.pair()
        let big = patternBytes(8 << 20, seed: 3)
        let once = try x.core.withDescriptor("test") { fd in
            big.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, CInt(MSG_DONTWAIT) | CInt(MSG_NOSIGNAL)) }
        }
        #expect(once > 0 && once < big.count, "a single send took \(once) bytes")
        x.close()
        y.close()

        let (writer, reader) = try UnixStream.pair()
        let total = big.count
        let received = Background { () throws -> [UInt8] in
            var data: [UInt8] = []
            data.reserveCapacity(total)
            while data.count < total {
                let chunk = try reader.read(maxBytes: 16384, timeout: ioTimeout)
                if chunk.isEmpty { break }
                data += chunk
                usleep(50)  // slow reader: the writer keeps hitting a full buffer
            }
            return data
        }
        try writer.write(all: big, timeout: .seconds(30))
        let data = try received.value()
        #expect(data.count == total)
        #expect(sameBytes(data, big), "every byte arrived once, in order")
    }

    @Test(
        "EINTR is retried and the data arrives exactly once",
        arguments: ["recv", "send", "sendmsg", "recvmsg", "poll"]
    )
    func interruptedCallsRetried(call: String) throws {
        let (a, b) = try UnixStream.pair()
        let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? file.close() }
        switch call {
        case "recv":
            try a.write(all: bytes("abc"), timeout: ioTimeout)
            try SyscallMock.with([("recv", [.interrupted, .interrupted])]) { () throws in
                #expect(try b.read(exactly: 3, timeout: ioTimeout) == bytes("abc"))
                #expect(SyscallMock.remaining("recv") == 0)
            }
        case "send":
            try SyscallMock.with([("send", [.interrupted, .interrupted])]) {
                try a.write(all: bytes("abc"), timeout: ioTimeout)
                #expect(SyscallMock.remaining("send") == 0)
            }
            #expect(try b.read(exactly: 3, timeout: ioTimeout) == bytes("abc"))
        case "sendmsg":
            try SyscallMock.with([("sendmsg", [.interrupted, .interrupted])]) {
                try a.send(bytes("abc"), descriptors: [file], timeout: ioTimeout)
                #expect(SyscallMock.remaining("sendmsg") == 0)
            }
            let message = try b.receive(timeout: ioTimeout)
            #expect(message.bytes == bytes("abc") && message.descriptors.count == 1)
        case "recvmsg":
            try a.send(bytes("abc"), descriptors: [file], timeout: ioTimeout)
            try SyscallMock.with([("recvmsg", [.interrupted, .interrupted])]) {
                let message = try b.receive(timeout: ioTimeout)
                #expect(message.bytes == bytes("abc") && message.descriptors.count == 1)
                #expect(SyscallMock.remaining("recvmsg") == 0)
            }
        default:  // poll: EAGAIN sends the read to poll, which is interrupted; the wait resumes
            try a.write(all: bytes("abc"), timeout: ioTimeout)
            try SyscallMock.with([("recv", [.resourceTemporarilyUnavailable]), ("poll", [.interrupted, .interrupted])])
            { () throws in
                #expect(try b.read(exactly: 3, timeout: ioTimeout) == bytes("abc"))
                #expect(SyscallMock.remaining("poll") == 0 && SyscallMock.remaining("recv") == 0)
            }
        }
        // Nothing more: no byte was duplicated.
        expectError(.timedOut) { _ = try b.read(timeout: .milliseconds(20)) }
    }

    @Test(
        "a zero or negative timeout is invalid input, whatever the socket's state",
        arguments: ["read-empty", "read-ready", "write", "accept", "connect", "receive", "send-dgram", "negative"]
    )
    func zeroTimeoutIsInvalid(operation: String) throws {
        let (a, b) = try UnixStream.pair()
        let address = uniqueAbstract("zero")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let error = expectError(.invalidArgument) {
            switch operation {
            case "read-empty": _ = try b.read(timeout: .zero)
            case "read-ready":
                try a.write(all: bytes("x"), timeout: ioTimeout)
                _ = try b.read(timeout: .zero)
            case "write": try a.write(all: bytes("x"), timeout: .zero)
            case "accept": _ = try listener.accept(timeout: .zero)
            case "connect": _ = try UnixStream.connect(to: address, timeout: .zero)
            case "receive": _ = try UnixDatagram.pair().1.receive(timeout: .zero)
            case "send-dgram": try UnixDatagram.unbound().send(bytes("x"), to: uniqueAbstract("z"), timeout: .zero)
            default: _ = try b.read(timeout: .milliseconds(-5))
            }
        }
        #expect(error?.description.contains("the timeout must be positive") == true, "\(String(describing: error))")
    }

    @Test("MSG_OOB takes a byte out of the stream: the frame decoder reports a truncated frame, never hangs")
    func outOfBandByteIsCorruption() throws {
        let address = uniqueAbstract("oob")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(A(sys.argv[1]))
            s.sendall(b'\\x00\\x00\\x00\\x05hel')
            try:
                s.send(b'l', socket.MSG_OOB); out('oob sent')
            except OSError as e:
                s.send(b'l'); out('oob', ename(e))
            s.sendall(b'o'); s.close()
            """,
            [address.pythonHex]
        )
        let connection = try listener.accept(timeout: ioTimeout)
        let oob = try peer.line()
        try peer.succeed()
        var decoder = FrameDecoder()
        var frames: [DecodedFrame] = []
        for _ in 0..<100 {  // bounded: EOF comes after a few reads
            let chunk = try connection.read(timeout: ioTimeout)
            if chunk.isEmpty { break }
            decoder.append(contentsOf: chunk)
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        }
        if oob == "oob sent" {
            #expect(frames.isEmpty)
            let error = expectError(.truncatedFrame) { try decoder.finish() }
            #expect(error?.detail == "stream ended inside a frame (got 8 of 9 bytes)")
        } else {
            // A kernel without AF_UNIX MSG_OOB: the byte went in-band and the frame is whole.
            #expect(oob == "oob EOPNOTSUPP")
            #expect(frames.map(\.payload) == [bytes("hello")])
        }
    }
}
