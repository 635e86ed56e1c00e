import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// RELIABILITY.md, "Addresses and socket files".
@Suite("Core: addresses and socket files")
struct CoreAddressTests {
    // MARK: Path lengths and bad paths

    @Test("a 107-byte path binds, round-trips and is removed on close", arguments: allSocketTypes)
    func longestPathRoundTrips(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = longestPath(in: dir)
        #expect(path.count == 107)
        let address = try UnixAddress.path(bytes: path)
        let server = try AnyServer(type, address)
        #expect(try server.local == address)
        let seen = try server.exchange(via: address)
        #expect(seen.serverSeenByClient == address)
        #expect(seen.serverSeenByClient.pathBytes?.count == 107)
        #expect(fileMode(path).map { $0 & S_IFMT == S_IFSOCK } == true)
        server.close()
        #expect(fileMode(path) == nil, "closing removes the socket file")
    }

    @Test("a 108-byte (or longer) path is refused before any syscall", arguments: [108, 109, 200])
    func overlongPathRejectedBeforeSyscall(length: Int) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = longestPath(in: dir, length: length)
        let error = expectError(.invalidAddress) { _ = try UnixAddress.path(bytes: path) }
        #expect(error?.description.contains("path too long: \(length) bytes") == true, "\(String(describing: error))")
        expectError(.invalidAddress) { _ = try UnixAddress(String(decoding: path, as: UTF8.self)) }

        // A literal cannot throw: every operation on it must, and the kernel must never see it.
        let literal = UnixAddress(stringLiteral: String(decoding: path, as: UTF8.self))
        SyscallMock.with([
            ("bind", [.addressInUse]), ("connect", [.connectionRefused]), ("sendmsg", [.connectionRefused]),
        ]) {
            for type in allSocketTypes {
                let bindError = expectError(.invalidAddress) { _ = try AnyServer(type, literal) }
                #expect(bindError?.operation == "bind")
            }
            expectError(.invalidAddress) { _ = try UnixStream.connect(to: literal, timeout: ioTimeout) }
            expectError(.invalidAddress) { _ = try UnixSeqPacket.connect(to: literal, timeout: ioTimeout) }
            expectError(.invalidAddress) { try UnixDatagram.unbound().connect(to: literal) }
            expectError(.invalidAddress) {
                try UnixDatagram.unbound().send(bytes("x"), to: literal, timeout: ioTimeout)
            }
            // The queued fake errnos are still there: bind, connect and sendmsg were never called.
            #expect(SyscallMock.remaining("bind") == 1)
            #expect(SyscallMock.remaining("connect") == 1)
            #expect(SyscallMock.remaining("sendmsg") == 1)
        }
        #expect(fileMode(Array(path.prefix(107))) == nil, "nothing was created under a truncated name")
        let entries = try FileManager.default.contentsOfDirectory(atPath: dir.path)
        #expect(entries.isEmpty)
    }

    @Test(
        "empty paths and NUL bytes in paths are refused",
        arguments: [[], [0x61, 0x00, 0x62], [0x00, 0x61], [0x2F, 0x74, 0x00]] as [[UInt8]]
    )
    func emptyOrNULPathRejected(path: [UInt8]) throws {
        let error = expectError(.invalidAddress) { _ = try UnixAddress.path(bytes: path) }
        let detail = error?.detail ?? ""
        #expect(detail.contains(path.isEmpty ? "empty path" : "NUL"), "\(detail)")
        if !path.contains(0) {
            expectError(.invalidAddress) { _ = try UnixAddress(String(decoding: path, as: UTF8.self)) }
            expectError(.invalidAddress) { _ = try UnixAddress.path(String(decoding: path, as: UTF8.self)) }
        }
        // An empty literal must not silently become an abstract (or autobound) address.
        let literal = UnixAddress(stringLiteral: "")
        #expect(!literal.isAbstract && !literal.isUnnamed)
        SyscallMock.with([("bind", [.addressInUse])]) {
            expectError(.invalidAddress) { _ = try UnixStreamListener.bind(literal) }
            expectError(.invalidAddress) { _ = try UnixDatagram.bind(literal) }
            #expect(SyscallMock.remaining("bind") == 1, "bind was never called")
        }
    }

    // MARK: Abstract names

    @Test("abstract names holding NUL and 0xFF round-trip exactly", arguments: allSocketTypes)
    func binaryAbstractNamesRoundTrip(type: UnixSocketType) throws {
        let address = binaryAbstract("bin")
        guard case .abstract(let name) = address.kind else {
            Issue.record("not abstract")
            return
        }
        #expect(name.contains(0) && name.contains(0xFF))
        let server = try AnyServer(type, address)
        defer { server.close() }
        #expect(try server.local == address)
        let client: UnixAddress? = type == .datagram ? binaryAbstract("client") : nil
        let seen = try server.exchange(via: address, clientAddress: client)
        #expect(seen.serverSeenByClient == address)
        if let client { #expect(seen.clientSeenByServer == client) }
        // The text form escapes every byte and parses back to the same name.
        #expect(address.description.hasPrefix("@\\x00\\xff\\x01\\x00\\xfe"))
        #expect(try UnixAddress(address.description) == address)
        // A name that differs only by its trailing bytes is another name.
        let shorter = try UnixAddress.abstract(Array(name.dropLast()))
        expectError(.system, errno: .connectionRefused) {
            switch type {
            case .stream: _ = try UnixStream.connect(to: shorter, timeout: ioTimeout)
            case .seqPacket: _ = try UnixSeqPacket.connect(to: shorter, timeout: ioTimeout)
            case .datagram: try UnixDatagram.unbound().connect(to: shorter)
            }
        }
    }

    @Test("a 107-byte abstract name works, 108 bytes are refused", arguments: allSocketTypes)
    func abstractLengthLimits(type: UnixSocketType) throws {
        let unique = Array("\(getpid())-\(UInt64.random(in: 0...UInt64.max))".utf8)
        let name = unique + [0x00, 0xFF] + [UInt8](repeating: UInt8(ascii: "a"), count: 107 - unique.count - 2)
        #expect(name.count == 107)
        let address = try UnixAddress.abstract(name)
        let server = try AnyServer(type, address)
        defer { server.close() }
        #expect(try server.local == address)
        #expect(try server.exchange(via: address).serverSeenByClient == address)

        let error = expectError(.invalidAddress) { _ = try UnixAddress.abstract(name + [0x61]) }
        #expect(error?.detail?.contains("108 bytes") == true)
        expectError(.invalidAddress) { _ = try UnixAddress("@" + String(repeating: "b", count: 108)) }
        #expect(try UnixAddress("@" + String(repeating: "b", count: 107)).isAbstract)
    }

    @Test("abstract addresses carry their exact length (a padded name is another name)")
    func abstractLengthIsExact() throws {
        // Our listener's name, dialled by Python with the exact length and padded to sizeof(sun_path).
        let ours = uniqueAbstract("exact")
        let listener = try UnixStreamListener.bind(ours)
        defer { listener.close() }
        // Python's listener, bound with the name padded with NULs to the full 108 bytes of sun_path.
        let theirs = Array("uds-py-\(getpid())-\(UInt64.random(in: 0...UInt64.max))".utf8)
        let theirsPadded = theirs + [UInt8](repeating: 0, count: 107 - theirs.count)
        let peer = try PythonPeer(
            """
            ours = A(sys.argv[1]); padded = A(sys.argv[2])
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(ours); out('exact ok'); c.close()
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(ours + b'\\0' * (108 - len(ours))); out('padded connected')
            except OSError as e:
                out('padded', ename(e))
            l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            l.bind(padded); l.listen(4); out('listening')
            conn, _ = l.accept()
            out('accepted', conn.recv(16).decode())
            """,
            [ours.pythonHex, try UnixAddress.abstract(theirsPadded).pythonHex]
        )
        try peer.expectLine("exact ok")
        try peer.expectLine("padded ECONNREFUSED")
        #expect(try listener.accept(timeout: ioTimeout).read(maxBytes: 1, timeout: ioTimeout) == [])
        try peer.expectLine("listening")
        expectError(.system, errno: .connectionRefused, "the short name is not the padded one") {
            _ = try UnixStream.connect(to: try UnixAddress.abstract(theirs), timeout: ioTimeout)
        }
        let client = try UnixStream.connect(to: try UnixAddress.abstract(theirsPadded), timeout: ioTimeout)
        try client.write(all: bytes("padded"), timeout: ioTimeout)
        try peer.expectLine("accepted padded")
        try peer.succeed()
    }

    @Test("autobind gives \\0 + 5 hex digits, and that name can be dialled back", arguments: allSocketTypes)
    func autobindNameIsDialable(type: UnixSocketType) throws {
        let server = try AnyServer(type, .unnamed)
        defer { server.close() }
        let local = try server.local
        guard case .abstract(let name) = local.kind else {
            Issue.record("autobind gave \(local)")
            return
        }
        #expect(name.count == 5)
        #expect(name.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }, "\(local)")
        #expect(try server.exchange(via: local).serverSeenByClient == local)
    }

    @Test("an unbound peer is reported as unnamed", arguments: allSocketTypes)
    func unboundPeerIsUnnamed(type: UnixSocketType) throws {
        let address = uniqueAbstract("unnamed")
        let server = try AnyServer(type, address)
        defer { server.close() }
        switch type {
        case .stream:
            let client = try UnixStream.connect(to: address, timeout: ioTimeout)
            let connection = try server.stream!.accept(timeout: ioTimeout)
            #expect(try connection.peer == .unnamed)
            #expect(try connection.peer.isUnnamed)
            #expect(try client.local == .unnamed)
            #expect(try connection.local == address)
        case .seqPacket:
            let client = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
            let connection = try server.seqPacket!.accept(timeout: ioTimeout)
            #expect(try connection.peer == .unnamed)
            #expect(try client.local == .unnamed)
        case .datagram:
            let client = try UnixDatagram.unbound()
            try client.send(bytes("anon"), to: address, timeout: ioTimeout)
            let message = try server.datagram!.receive(timeout: ioTimeout)
            #expect(message.bytes == bytes("anon"))
            #expect(message.sender == .unnamed)
            #expect(try client.local == .unnamed)
            // It cannot be answered: said before any syscall, not as a bare EINVAL from the kernel.
            SyscallMock.with([("sendmsg", [.noBufferSpace])]) {
                expectError(.invalidAddress) {
                    try server.datagram!.send(bytes("re"), to: .unnamed, timeout: ioTimeout)
                }
                #expect(SyscallMock.remaining("sendmsg") == 1)
            }
        }
        let (a, b) = try UnixStream.pair()
        #expect(try a.peer == .unnamed)
        #expect(try b.local == .unnamed)
    }

    @Test("a peer bound to a 108-byte path (no NUL) is read clamped and can be answered", arguments: allSocketTypes)
    func peerWith108BytePathIsClamped(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let theirs = longestPath(in: dir, length: 108)
        let server = try AnyServer(type, uniqueAbstract("p108"))
        defer { server.close() }
        // Python's socket module refuses a 108-byte path (it wants room for the NUL): bind through ctypes.
        let peer = try PythonPeer(
            """
            typ = eval(sys.argv[1]); me = A(sys.argv[2]); server = A(sys.argv[3])
            s = socket.socket(socket.AF_UNIX, typ)
            libc = ctypes.CDLL(None, use_errno=True)
            buf = ctypes.create_string_buffer(110)
            buf[0:2] = struct.pack('H', socket.AF_UNIX); buf[2:110] = me
            if libc.bind(s.fileno(), buf, 110) != 0:
                out('bind', errno.errorcode[ctypes.get_errno()]); sys.exit(2)
            out('bound', len(s.getsockname()))
            if typ == socket.SOCK_DGRAM:
                s.sendto(b'hi', server)
            else:
                s.connect(server); s.send(b'hi')
            wait_readable(s)
            out('got', s.recv(100).decode())
            """,
            [type.python, try pathHex(theirs), try server.local.pythonHex]
        )
        try peer.expectLine("bound 108")
        switch type {
        case .stream:
            let connection = try server.stream!.accept(timeout: ioTimeout)
            #expect(try connection.peer.pathBytes == theirs)
            #expect(try connection.read(exactly: 2, timeout: ioTimeout) == bytes("hi"))
            try connection.write(all: bytes("yo"), timeout: ioTimeout)
        case .seqPacket:
            let connection = try server.seqPacket!.accept(timeout: ioTimeout)
            #expect(try connection.peer.pathBytes == theirs)
            #expect(try connection.receive(timeout: ioTimeout).bytes == bytes("hi"))
            try connection.send(bytes("yo"), timeout: ioTimeout)
        case .datagram:
            let message = try server.datagram!.receive(timeout: ioTimeout)
            #expect(message.bytes == bytes("hi"))
            let sender = try #require(message.sender)
            #expect(sender.pathBytes == theirs, "\(sender)")
            // The reply goes back to the address the kernel reported, 108 bytes and all.
            try server.datagram!.send(bytes("yo"), to: sender, timeout: ioTimeout)
        }
        try peer.expectLine("got yo")
        try peer.succeed()
    }

    @Test("path bytes that are not UTF-8 work", arguments: allSocketTypes)
    func nonUTF8Path(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = Array((dir.path + "/").utf8) + [0xFF, 0xFE, 0x80, 0x2E, 0x73]
        #expect(String(validating: path, as: UTF8.self) == nil)
        let address = try UnixAddress.path(bytes: path)
        #expect(address.description.contains("\\xff\\xfe\\x80"))
        let server = try AnyServer(type, address, mode: FilePermissions(rawValue: 0o600))
        #expect(try server.local == address)
        #expect(fileMode(path).map { $0 & 0o7777 } == 0o600)
        #expect(try server.exchange(via: address).serverSeenByClient == address)
        server.close()
        #expect(fileMode(path) == nil)
    }

    // MARK: Connect errors

    @Test(
        "connect errors: ENOENT, ECONNREFUSED (stale, non-socket, abstract), each with its message",
        arguments: allSocketTypes
    )
    func connectErrors(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        func dial(_ address: UnixAddress) throws {
            switch type {
            case .stream: _ = try UnixStream.connect(to: address, timeout: ioTimeout)
            case .seqPacket: _ = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
            case .datagram: try UnixDatagram.unbound().connect(to: address)
            }
        }
        let missing = dir.address("missing.sock")
        let enoent = expectError(.system, errno: .noSuchFileOrDirectory) { try dial(missing) }
        #expect(enoent?.address == missing)
        #expect(
            enoent?.description
                == "connect \(dir.file("missing.sock")): no such socket file (ENOENT): is the server running?"
        )

        // Stale: a socket file nobody is bound to (bound with raw calls, closed without unlink).
        let stalePath = dir.file("stale.sock")
        makeStaleSocketFile(type, path: stalePath)
        #expect(isSocketFile(stalePath))
        let stale = expectError(.system, errno: .connectionRefused) { try dial(dir.address("stale.sock")) }
        #expect(stale?.description.contains("ECONNREFUSED") == true)
        #expect(stale?.description.contains(stalePath) == true)
        #expect(stale?.description.contains("nothing is listening") == true, "\(String(describing: stale))")

        let regular = try makeFile(dir, "regular", "data")
        try regular.close()
        let notSocket = expectError(.system, errno: .connectionRefused) { try dial(dir.address("regular")) }
        #expect(notSocket?.description.contains(dir.file("regular")) == true)

        let abstract = uniqueAbstract("nobody-home")
        let refused = expectError(.system, errno: .connectionRefused) { try dial(abstract) }
        #expect(refused?.description.hasPrefix("connect \(abstract): connection refused (ECONNREFUSED)") == true)

        if type == .datagram {
            // The unconnected form says sendto and names the destination.
            let sendto = expectError(.system, errno: .noSuchFileOrDirectory) {
                try UnixDatagram.unbound().send(bytes("x"), to: missing, timeout: ioTimeout)
            }
            #expect(sendto?.operation == "sendto")
            #expect(sendto?.description.contains("no such socket file") == true)
            expectError(.system, errno: .connectionRefused) {
                try UnixDatagram.unbound().send(bytes("x"), to: abstract, timeout: ioTimeout)
            }
        }
        // Nothing was created or removed by the failed dials.
        #expect(Set(try FileManager.default.contentsOfDirectory(atPath: dir.path)) == ["stale.sock", "regular"])
    }

    @Test(
        "connecting without write permission on the socket file is EACCES (run as nobody)",
        .enabled(if: runningAsRoot && setprivAvailable, "needs root (to run the subject as nobody) and setpriv"),
        arguments: allSocketTypes
    )
    func permissionDeniedAsNobody(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(chmod(dir.path, 0o755) == 0, "nobody may search the directory")
        let closed = try AnyServer(type, dir.address("private.sock"), mode: FilePermissions(rawValue: 0o600))
        let open = try AnyServer(type, dir.address("public.sock"), mode: FilePermissions(rawValue: 0o666))
        defer {
            closed.close()
            open.close()
        }
        let peer = try PythonPeer(
            """
            typ = eval(sys.argv[1])
            out('uid', os.getuid())
            for p in sys.argv[2:]:
                s = socket.socket(socket.AF_UNIX, typ)
                try:
                    s.connect(A(p)); out('ok')
                except OSError as e:
                    out(ename(e))
            """,
            [type.python, dir.address("private.sock").pythonHex, dir.address("public.sock").pythonHex],
            asNobody: true
        )
        #expect(try peer.line() == "uid 65534")
        #expect(try peer.line() == "EACCES")
        #expect(try peer.line() == "ok", "the same directory is reachable: the socket's mode refused")
        try peer.succeed()
    }

    @Test(
        "our client running as nobody gets a clear EACCES error",
        .enabled(if: runningAsRoot, "needs root to become nobody in the exit test")
    )
    func permissionDeniedMessageForOurClient() async throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(chmod(dir.path, 0o755) == 0)
        let closed = try UnixStreamListener.bind(dir.address("private.sock"), mode: FilePermissions(rawValue: 0o600))
        let open = try UnixStreamListener.bind(dir.address("public.sock"), mode: FilePermissions(rawValue: 0o666))
        defer {
            closed.close()
            open.close()
        }
        let privatePath = dir.file("private.sock")
        let publicPath = dir.file("public.sock")
        await #expect(processExitsWith: .success) {
            [privatePath = privatePath as String, publicPath = publicPath as String] in
            try synchronously {  // blocking calls: the exit test body is async
                exitCheck(setgroups(0, nil) == 0, "setgroups")
                exitCheck(setgid(65534) == 0 && setuid(65534) == 0, "drop to nobody")
                do {
                    _ = try UnixStream.connect(to: try UnixAddress(privatePath), timeout: .seconds(60))
                    exitCheck(false, "nobody connected to a 0600 root socket")
                } catch let error as UnixSocketError {
                    exitCheck(error.errno == .permissionDenied, "\(error)")
                    exitCheck(
                        error.description
                            == "connect \(privatePath): permission denied (EACCES): check the socket file's mode and its directories' search permission",
                        error.description
                    )
                }
                let client = try UnixStream.connect(to: try UnixAddress(publicPath), timeout: .seconds(60))
                client.close()
            }
        }
    }

    @Test(
        "a client of the wrong type: EPROTOTYPE on a path, ECONNREFUSED on an abstract name",
        arguments: allSocketTypes.flatMap { server in allSocketTypes.filter { $0 != server }.map { (server, $0) } }
    )
    func typeMismatch(server serverType: UnixSocketType, client clientType: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        for (address, expected) in [
            (dir.address("s.sock"), Errno.protocolWrongTypeForSocket),
            (uniqueAbstract("type"), Errno.connectionRefused),
        ] {
            let server = try AnyServer(serverType, address)
            defer { server.close() }
            let error = expectError(.system, errno: expected) {
                switch clientType {
                case .stream: _ = try UnixStream.connect(to: address, timeout: ioTimeout)
                case .seqPacket: _ = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
                case .datagram: try UnixDatagram.unbound().connect(to: address)
                }
            }
            if expected == .protocolWrongTypeForSocket {
                #expect(
                    error?.description.contains("wrong socket type (EPROTOTYPE)") == true,
                    "\(String(describing: error))"
                )
            }
            #expect(try server.exchange(via: address).serverSeenByClient == address, "the server still works")
        }
    }

    // MARK: Socket files

    @Test("a second server on a live path fails clearly and the first keeps serving", arguments: allSocketTypes)
    func secondServerOnLivePath(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("live.sock")
        let first = try AnyServer(type, address)
        defer { first.close() }
        for secondType in allSocketTypes {
            let error = expectError(.addressInUse) { _ = try AnyServer(secondType, address) }
            #expect(
                error?.description == "bind \(dir.file("live.sock")): already in use by a running server (EADDRINUSE)"
            )
        }
        #expect(isSocketFile(dir.file("live.sock")))
        try first.exchange(via: address)

        // Abstract names: the kernel refuses the second bind; the first still serves.
        let abstract = uniqueAbstract("live")
        let one = try AnyServer(type, abstract)
        defer { one.close() }
        expectError(.system, errno: .addressInUse) { _ = try AnyServer(type, abstract) }
        try one.exchange(via: abstract)
    }

    @Test("a live Python server keeps its path and keeps serving when we try to bind it")
    func livePythonServerIsNotStolen() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("py.sock")
        let peer = try PythonPeer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(A(sys.argv[1])); s.listen(4); out('ready')
            c, _ = s.accept()
            c.sendall(c.recv(100).upper()); c.close(); out('served')
            """,
            [address.pythonHex]
        )
        try peer.expectLine("ready")
        expectError(.addressInUse) { _ = try UnixStreamListener.bind(address) }
        expectError(.addressInUse) { _ = try UnixDatagram.bind(address) }
        let client = try UnixStream.connect(to: address, timeout: ioTimeout)
        try client.write(all: bytes("ping"), timeout: ioTimeout)
        #expect(try client.read(exactly: 4, timeout: ioTimeout) == bytes("PING"))
        try peer.expectLine("served")
        try peer.succeed()
    }

    @Test(
        "a stale socket file (server killed with SIGKILL, or closed without unlink) is recovered",
        arguments: allSocketTypes,
        ["kill", "close"]
    )
    func staleSocketFileRecovered(type: UnixSocketType, how: String) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("stale.sock")
        let peer = try PythonPeer(
            """
            typ = eval(sys.argv[1])
            s = socket.socket(socket.AF_UNIX, typ); s.bind(A(sys.argv[2]))
            if typ != socket.SOCK_DGRAM: s.listen(4)
            if sys.argv[3] == 'close':
                s.close(); out('closed'); sys.exit(0)
            out('ready'); time.sleep(60)
            """,
            [type.python, address.pythonHex, how]
        )
        if how == "kill" {
            try peer.expectLine("ready")
            expectError(.addressInUse, "while the Python server lives, the path is taken") {
                _ = try AnyServer(type, address)
            }
            peer.terminate(signal: SIGKILL)
            #expect(peer.process.terminationSignal == SIGKILL)
        } else {
            try peer.expectLine("closed")
            try peer.succeed()
        }
        #expect(isSocketFile(dir.file("stale.sock")), "the dead server left its file behind")
        let server = try AnyServer(type, address)
        defer { server.close() }
        try server.exchange(via: address)
    }

    @Test("a path that is not a socket is never deleted", arguments: allSocketTypes)
    func nonSocketNeverDeleted(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        try makeFile(dir, "precious", "keep me").close()
        #expect(mkdir(dir.file("folder"), 0o755) == 0)
        let target = try UnixDatagram.bind(dir.address("target.sock"))
        defer { target.close() }
        #expect(symlink(dir.file("target.sock"), dir.file("link")) == 0)
        for name in ["precious", "folder", "link"] {
            let error = expectError(.notASocket) { _ = try AnyServer(type, dir.address(name)) }
            #expect(
                error?.description
                    == "bind \(dir.file(name)): the path exists and is not a socket; it was left untouched",
                "\(String(describing: error))"
            )
        }
        let fd = open(dir.file("precious"), O_RDONLY | O_CLOEXEC)
        #expect(readAll(fd) == bytes("keep me"))
        close(fd)
        #expect(fileMode(dir.file("folder")).map { $0 & S_IFMT == S_IFDIR } == true)
        #expect(fileMode(dir.file("link")).map { $0 & S_IFMT == S_IFLNK } == true)
        #expect(isSocketFile(dir.file("target.sock")), "the symlink's target is untouched")
    }

    @Test(
        "the socket file has the requested mode from the moment it appears, whatever the umask",
        arguments: [0o000, 0o077, 0o022] as [UInt32]
    )
    func modeIsExactUnderAnyUmask(mask: UInt32) async throws {
        await #expect(processExitsWith: .success) { [mask = mask as UInt32] in
            let dir = try TempDir()
            defer { dir.cleanup() }
            umask(mode_t(mask))
            let watch = inotify_init1(CInt(IN_NONBLOCK | IN_CLOEXEC))
            exitCheck(watch >= 0, "inotify_init1")
            defer { close(watch) }
            exitCheck(inotify_add_watch(watch, dir.path, UInt32(IN_CREATE | IN_ATTRIB)) >= 0, "inotify_add_watch")
            var names: [String] = []
            for (index, type) in allSocketTypes.enumerated() {
                for mode in [0o600, 0o640, 0o666, 0o777, 0o700] as [UInt32] {
                    let name = "m\(index)-\(String(mode, radix: 8)).sock"
                    names.append(name)
                    let server = try AnyServer(type, dir.address(name), mode: FilePermissions(rawValue: mode))
                    let actual = fileMode(dir.file(name)).map { UInt32($0 & 0o7777) }
                    exitCheck(
                        actual == mode,
                        "\(type) mode \(String(mode, radix: 8)) under umask \(String(mask, radix: 8)): got \(actual.map { String($0, radix: 8) } ?? "none")"
                    )
                    server.close()
                }
                // Without a mode the umask applies, as for any file.
                let name = "plain\(index).sock"
                let server = try AnyServer(type, dir.address(name))
                let actual = fileMode(dir.file(name)).map { UInt32($0 & 0o777) }
                exitCheck(
                    actual == 0o777 & ~mask,
                    "no mode under umask \(String(mask, radix: 8)): \(String(describing: actual))"
                )
                server.close()
            }
            exitCheck(umask(0o022) == mode_t(mask), "the process umask was changed")
            // Every file was created once and never chmod-ed afterwards (a chmod would raise IN_ATTRIB).
            var buffer = [UInt8](repeating: 0, count: 65536)
            let count = buffer.withUnsafeMutableBytes { read(watch, $0.baseAddress, $0.count) }
            exitCheck(count > 0, "no inotify events")
            var offset = 0
            var created = Set<String>()
            while offset + 16 <= count {
                let eventMask = buffer[offset + 4..<offset + 8].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                let length = Int(
                    buffer[offset + 12..<offset + 16].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
                )
                let name = String(
                    decoding: buffer[offset + 16..<offset + 16 + length].prefix { $0 != 0 },
                    as: UTF8.self
                )
                exitCheck(eventMask & UInt32(IN_ATTRIB) == 0, "\(name) had its attributes changed after it appeared")
                if eventMask & UInt32(IN_CREATE) != 0 { created.insert(name) }
                offset += 16 + length
            }
            // Besides the sockets, only each bind's lock file (`.NAME.lock`), which the bind removed again.
            let sockets = Set(names).union((0..<3).map { "plain\($0).sock" })
            exitCheck(created == sockets.union(sockets.map { ".\($0).lock" }), "created: \(created)")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? ["?"]
            exitCheck(left.allSatisfy { !$0.hasSuffix(".lock") }, "lock files left behind: \(left)")
        }
    }

    @Test("closing removes the listener's own file, never a newcomer's", arguments: allSocketTypes)
    func closeRemovesOnlyOwnFile(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("own.sock")
        let path = dir.file("own.sock")

        let first = try AnyServer(type, address)
        #expect(isSocketFile(path))
        first.close()
        #expect(!isSocketFile(path), "close removed the file")
        #expect(first.isClosed)

        // Closed twice: the newcomer's file survives the second close.
        let newcomer = try AnyServer(type, address)
        first.close()
        #expect(isSocketFile(path))
        try newcomer.exchange(via: address)

        // Someone removed our file and re-created the path: closing us leaves theirs.
        #expect(unlink(path) == 0)
        let third = try AnyServer(type, address)
        newcomer.close()
        newcomer.close()
        #expect(isSocketFile(path), "the third server's file is still there")
        try third.exchange(via: address)
        third.close()
        #expect(!isSocketFile(path))
    }

    @Test("an adopted listener does not unlink its file unless asked", arguments: allSocketTypes, [false, true])
    func adoptedListenerUnlinkOnlyWhenAsked(type: UnixSocketType, remove: Bool) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = dir.file("inherited.sock")
        let fd = FileDescriptor(rawValue: rawBoundSocket(type, path: path))
        switch type {
        case .stream:
            let listener = try UnixStreamListener(adopting: fd, removeSocketFileOnClose: remove)
            #expect(listener.address == dir.address("inherited.sock"))
            let client = try UnixStream.connect(to: listener.address, timeout: ioTimeout)
            try client.write(all: bytes("a"), timeout: ioTimeout)
            #expect(try listener.accept(timeout: ioTimeout).read(exactly: 1, timeout: ioTimeout) == bytes("a"))
            listener.close()
        case .seqPacket:
            let listener = try UnixSeqPacketListener(adopting: fd, removeSocketFileOnClose: remove)
            let client = try UnixSeqPacket.connect(to: listener.address, timeout: ioTimeout)
            try client.send(bytes("a"), timeout: ioTimeout)
            #expect(try listener.accept(timeout: ioTimeout).receive(timeout: ioTimeout).bytes == bytes("a"))
            listener.close()
        case .datagram:
            // An adopted datagram socket never owns its file.
            let socket = try UnixDatagram(adopting: fd)
            try UnixDatagram.unbound().send(bytes("a"), to: dir.address("inherited.sock"), timeout: ioTimeout)
            #expect(try socket.receive(timeout: ioTimeout).bytes == bytes("a"))
            socket.close()
        }
        #expect(isSocketFile(path) == (type == .datagram || !remove))
    }
}

/// The hex form of raw sun_path bytes that `UnixAddress` would refuse (a 108-byte path).
func pathHex(_ bytes: [UInt8]) throws -> String { bytes.map { String(format: "%02x", $0) }.joined() }
