import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `uds proxy` run as a real process between python3 `socket` peers, and in front of real programs (tmux,
/// D-Bus) that need what it keeps: descriptors, credentials, message boundaries, half-close. Every spawned
/// process has a time limit and is killed and reaped, whatever a check says; every test works in its own
/// /tmp/uds-XXXXXX directory.
@Suite(.serialized)
struct ProxyTests {
    // MARK: each socket type against python3 peers

    @Test(
        "stream: bytes both ways, and a descriptor sent with send_fds reaches the target, which reads the file",
        .timeLimit(.minutes(3))
    )
    func streamCarriesADescriptor() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let content = "secret-" + ProcessProbe.hex(CLI.randomBytes(8))
        let file = dir.write("secret.txt", Array(content.utf8))
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            data, contents = bytearray(), []
            while True:
                b, fds, flags, _ = socket.recv_fds(c, 1 << 16, 8)
                for fd in fds:
                    contents.append(os.pread(fd, 4096, 0).decode()); os.close(fd)
                if not b and not fds: break
                data += b; c.sendall(b)
            c.sendall(b'|files=' + ','.join(contents).encode()); c.close()
            print('received', data.decode(), 'files', *contents, flush=True)
            """,
            type: "STREAM",
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy([], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        // The client opens the file and removes it before sending: only the descriptor leads to it.
        let client = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                fd = os.open(sys.argv[2], os.O_RDONLY); os.unlink(sys.argv[2])
                socket.send_fds(c, [b'with a descriptor'], [fd]); os.close(fd)
                c.sendall(b';plain'); c.shutdown(socket.SHUT_WR)
                got = bytearray()
                while True:
                    b = c.recv(1 << 16)
                    if not b: break
                    got += b
                sys.stdout.buffer.write(got)
                """
            ),
            [listen, file],
            in: dir,
            seconds: 60
        )
        #expect(client.status == 0, "\(client.error)")
        #expect(client.outputText == "with a descriptor;plain|files=\(content)")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\nreceived with a descriptor;plain files \(content)\n")
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    @Test(
        "seqpacket: messages of 0, 1, 1000 and 200000 bytes keep their boundaries both ways; zero-length is no EOF",
        .timeLimit(.minutes(3))
    )
    func seqPacketBoundaries() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60); c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
            seen = []
            for _ in range(int(sys.argv[2])):
                m, _, flags, _ = c.recvmsg(1 << 20)
                seen.append(describe(m, flags)); c.send(m)
            print('seen', *seen, 'then', 'eof' if c.recv(1 << 20) == b'' else 'more', flush=True)
            c.close()
            """,
            type: "SEQPACKET",
            at: dir.file("t.sock"),
            arguments: ["6"],
            in: dir
        )
        let proxy = try Self.startProxy(["-t", "seqpacket"], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); c.settimeout(60)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22); c.connect(sys.argv[1])
                messages = [os.urandom(n) for n in (0, 1, 1000, 200000, 0, 5)]
                for m in messages: c.send(m)
                got = []
                for _ in messages:
                    m, _, flags, _ = c.recvmsg(1 << 20)
                    got.append(describe(m, flags))
                c.shutdown(socket.SHUT_WR)
                print('sent', *[describe(m, 0) for m in messages])
                print('got', *got, 'then', 'eof' if c.recv(1 << 20) == b'' else 'more')
                """
            ),
            [listen],
            in: dir,
            seconds: 60
        )
        #expect(client.status == 0, "\(client.error)")
        let lines = client.outputText.split(separator: "\n").map(String.init)
        try #require(lines.count == 2, "\(client.outputText) \(client.error)")
        let sent = lines[0].dropFirst("sent ".count)
        #expect(
            sent.split(separator: " ").map { $0.split(separator: ":")[0] } == ["0", "1", "1000", "200000", "0", "5"]
        )
        #expect(lines[1] == "got \(sent) then eof", "the client's messages came back otherwise")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\nseen \(sent) then eof\n", "the target saw otherwise")
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    @Test(
        "seqpacket: a zero-length message the client sent just before shutting down is forwarded, and so is the rest",
        .timeLimit(.minutes(3))
    )
    func seqPacketZeroLengthBeforeShutdown() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let sent = dir.file("sent")
        // The target reads only once the client has sent everything and shut down its writing side; the
        // large messages before fill the proxy's way to the target, so the proxy reads the empty message
        // only after that shutdown.
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            for _ in range(6000):
                if os.path.exists(sys.argv[2]): break
                time.sleep(0.01)
            got = []
            while len(got) < 40:
                m = c.recv(1 << 20)
                got.append('%d bytes' % len(m) if len(m) > 100 else (m.decode() or '(empty)'))
                if m == b'after': break
            print(*got, sep=', ', flush=True)
            c.close()
            """,
            type: "SEQPACKET",
            at: dir.file("t.sock"),
            arguments: [sent],
            in: dir
        )
        let proxy = try Self.startProxy(["-t", "seqpacket"], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); c.settimeout(60)
                try:
                    c.setsockopt(socket.SOL_SOCKET, 32, 1 << 23)   # SO_SNDBUFFORCE (root)
                except OSError:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 23)
                c.connect(sys.argv[1])
                for _ in range(16): c.send(b'f' * 65536)
                c.send(b'x'); c.send(b''); c.send(b'after'); c.shutdown(socket.SHUT_WR)
                open(sys.argv[2], 'w').close()
                print('eof' if c.recv(10) == b'' else 'more')
                """
            ),
            [listen, sent],
            in: dir,
            seconds: 60
        )
        #expect(client.outputText == "eof\n", "\(client.error)")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        let fillers = Array(repeating: "65536 bytes", count: 16).joined(separator: ", ")
        #expect(
            target.outputText == "listening\n\(fillers), x, (empty), after\n",
            "the target got \(target.outputText.split(separator: "\n").last ?? "nothing")"
        )
        Self.stop(proxy)
    }

    @Test(
        "dgram: two senders bound to their own addresses at once; each gets only its own replies",
        .timeLimit(.minutes(3))
    )
    func datagramRepliesReachTheirSender() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let go = dir.file("go")
        let count = 50
        let target = try Self.startTarget(
            """
            s.settimeout(60); sources = set()
            for _ in range(int(sys.argv[2])):
                m, a = s.recvfrom(1 << 16)
                sources.add(a); s.sendto(b'echo:' + m, a)
            print('sources', len(sources), flush=True)
            """,
            type: "DGRAM",
            at: dir.file("t.sock"),
            arguments: [String(2 * count)],
            in: dir
        )
        let proxy = try Self.startProxy(["-t", "dgram"], listen, dir.file("t.sock"), in: dir)
        let sender = Self.peer(
            """
            me, proxy, go, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(me); s.settimeout(60)
            print('bound', flush=True)
            for _ in range(6000):
                if os.path.exists(go): break
                time.sleep(0.01)
            tag, bad = os.path.basename(me), []
            for i in range(n):
                m = ('%s-%d' % (tag, i)).encode()
                s.sendto(m, proxy)
                r = s.recv(1 << 16)
                if r != b'echo:' + m: bad.append(r)
            print('ok' if not bad else 'foreign replies %r' % bad[:3], flush=True)
            """
        )
        let first = try CLI.spawnPython(sender, [dir.file("a.sock"), listen, go, String(count)], in: dir)
        let second = try CLI.spawnPython(sender, [dir.file("b.sock"), listen, go, String(count)], in: dir)
        defer { Self.reap([proxy, target, first, second]) }
        #expect(CLI.waitUntil(seconds: 60) { first.outputText == "bound\n" && second.outputText == "bound\n" })
        _ = dir.write("go", [])
        #expect(first.wait(seconds: 120) == 0, "\(first.errorText)")
        #expect(second.wait(seconds: 120) == 0, "\(second.errorText)")
        #expect(first.outputText == "bound\nok\n")
        #expect(second.outputText == "bound\nok\n")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\nsources 2\n", "one proxy socket per sender")
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    @Test(
        "dgram: an association idle for --idle seconds is closed; the sender's next datagram gets a new one",
        .timeLimit(.minutes(3))
    )
    func datagramIdleAssociationCloses() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let again = dir.file("again")
        let target = try Self.startTarget(
            """
            s.settimeout(60)
            for _ in range(2):
                m, a = s.recvfrom(1 << 16); print('from', a.hex(), flush=True); s.sendto(b'echo:' + m, a)
            """,
            type: "DGRAM",
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy(
            ["-t", "dgram", "--idle", "0.2", "--dump"],
            listen,
            dir.file("t.sock"),
            in: dir
        )
        let sender = try CLI.spawnPython(
            Self.peer(
                """
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); s.settimeout(60)
                s.sendto(b'one', sys.argv[2]); print(s.recv(100).decode(), flush=True)
                for _ in range(6000):
                    if os.path.exists(sys.argv[3]): break
                    time.sleep(0.01)
                s.sendto(b'two', sys.argv[2]); print(s.recv(100).decode(), flush=True)
                """
            ),
            [dir.file("a.sock"), listen, again],
            in: dir
        )
        defer { Self.reap([proxy, target, sender]) }
        #expect(CLI.waitUntil(seconds: 60) { sender.outputText == "echo:one\n" }, "\(sender.errorText)")
        #expect(
            CLI.waitUntil(seconds: 60) { proxy.errorText.contains("[1] closed: > 3 bytes in 1 transfers") },
            "\(proxy.errorText)"
        )
        _ = dir.write("again", [])
        #expect(sender.wait(seconds: 60) == 0, "\(sender.errorText)")
        #expect(sender.outputText == "echo:one\necho:two\n")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        let sources = target.outputText.split(separator: "\n").filter { $0.hasPrefix("from ") }
        #expect(sources.count == 2 && sources[0] != sources[1], "a new association, a new socket: \(sources)")
        #expect(
            CLI.waitUntil(seconds: 60) { proxy.errorText.contains("[2] closed: > 3 bytes in 1 transfers") },
            "\(proxy.errorText)"
        )
        #expect(proxy.errorText.contains("[2] open: datagrams from \(dir.file("a.sock"))"))
        Self.stop(proxy)
    }

    // MARK: volume and half-close

    @Test(
        "stream: 8 MiB each way byte for byte with half-close: the client's EOF ends one way, the reply still comes",
        .timeLimit(.minutes(4))
    )
    func bulkBothWaysWithHalfClose() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let request = dir.write("request.bin", CLI.randomBytes(8 << 20))
        let reply = dir.write("reply.bin", CLI.randomBytes(8 << 20))
        let readToEOF = """
            h, n = hashlib.sha256(), 0
            while True:
                b = c.recv(1 << 16)
                if not b: break
                h.update(b); n += len(b)
            print('received', n, h.hexdigest(), flush=True)
            """
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            \(readToEOF)
            c.sendall(open(sys.argv[2], 'rb').read()); c.close()
            """,
            type: "STREAM",
            at: dir.file("t.sock"),
            arguments: [reply],
            in: dir
        )
        let proxy = try Self.startProxy([], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                c.sendall(open(sys.argv[2], 'rb').read()); c.shutdown(socket.SHUT_WR)
                \(readToEOF)
                """
            ),
            [listen, request],
            in: dir,
            seconds: 120
        )
        #expect(client.status == 0, "\(client.error)")
        #expect(client.outputText == "received \(8 << 20) \(try Self.sha256(reply, in: dir))\n")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\nreceived \(8 << 20) \(try Self.sha256(request, in: dir))\n")
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    // MARK: descriptors

    @Test(
        "253 descriptors (SCM_MAX_FD) in one message all reach the target, in order, each readable",
        .timeLimit(.minutes(3)),
        arguments: ["STREAM", "SEQPACKET"]
    )
    func mostDescriptorsInOneMessage(type: String) throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            m, fds, flags, _ = socket.recv_fds(c, 1 << 16, 300)
            contents = [os.read(fd, 100).decode() for fd in fds]
            for fd in fds: os.close(fd)
            print(
                m.decode(), '-', len(fds), 'received',
                'in order' if contents == ['pipe %d' % i for i in range(253)] else 'otherwise: %r' % contents[:3],
                'truncated' if flags & socket.MSG_CTRUNC else 'whole', flush=True)
            c.sendall(b'%d' % len(fds)); c.close()
            """,
            type: type,
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy(["-t", type.lowercased()], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, getattr(socket, 'SOCK_' + sys.argv[2])); c.settimeout(60)
                c.connect(sys.argv[1])
                fds = []
                for i in range(253):
                    r, w = os.pipe(); os.write(w, b'pipe %d' % i); os.close(w); fds.append(r)
                socket.send_fds(c, [b'253 descriptors'], fds)
                for fd in fds: os.close(fd)
                c.shutdown(socket.SHUT_WR); print('target counted', c.recv(100).decode())
                """
            ),
            [listen, type],
            in: dir,
            seconds: 60
        )
        #expect(client.outputText == "target counted 253\n", "\(client.error)")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\n253 descriptors - 253 received in order whole\n")
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    @Test(
        "a descriptor on each of 500 messages: all arrive in order with their own message; the proxy's count returns",
        .timeLimit(.minutes(4)),
        arguments: ["STREAM", "SEQPACKET"]
    )
    func descriptorOnEveryMessage(type: String) throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let count = 500
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            n = int(sys.argv[2]); order, data, problems = [], bytearray(), []
            while True:
                b, fds, flags, _ = socket.recv_fds(c, 1 << 16, 8)
                if not b and not fds: break
                if len(fds) > 1: problems.append('%d descriptors at once' % len(fds))
                for fd in fds:
                    i = int(os.read(fd, 20)); os.close(fd); order.append(i)
                    if not b.startswith(b'm%05d;' % i): problems.append('pipe %d came with %r' % (i, b[:7]))
                data += b
            expected = b''.join(b'm%05d;' % i for i in range(n))
            print(
                len(order), 'descriptors', 'in order' if order == list(range(n)) else 'out of order',
                'data intact' if bytes(data) == expected else 'data differs', 'problems', problems[:3], flush=True)
            c.sendall(b'done'); c.close()
            """,
            type: type,
            at: dir.file("t.sock"),
            arguments: [String(count)],
            in: dir
        )
        let proxy = try Self.startProxy(["-t", type.lowercased()], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let baseline = ProcessProbe.restingDescriptorCount(proxy.pid)
        try #require(baseline > 0, "the proxy did not come to rest: \(ProcessProbe.descriptorTargets(proxy.pid))")
        let client = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, getattr(socket, 'SOCK_' + sys.argv[2])); c.settimeout(60)
                c.connect(sys.argv[1])
                for i in range(int(sys.argv[3])):
                    r, w = os.pipe(); os.write(w, b'%d' % i); os.close(w)
                    socket.send_fds(c, [b'm%05d;' % i], [r]); os.close(r)
                c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())
                """
            ),
            [listen, type, String(count)],
            in: dir,
            seconds: 120
        )
        #expect(client.outputText == "done\n", "\(client.error)")
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\n\(count) descriptors in order data intact problems []\n")
        #expect(
            CLI.waitUntil(seconds: 60) { ProcessProbe.descriptorCount(proxy.pid) == baseline },
            "the proxy holds \(ProcessProbe.descriptorCount(proxy.pid)) descriptors, \(baseline) before the client"
        )
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    // MARK: many clients, failures, signals

    @Test(
        "50 concurrent clients through one proxy, each echoed its own data; the descriptors go back",
        .timeLimit(.minutes(4))
    )
    func concurrentClients() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(Self.echoServer, type: "STREAM", at: dir.file("t.sock"), in: dir)
        let proxy = try Self.startProxy([], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let baseline = ProcessProbe.restingDescriptorCount(proxy.pid)
        try #require(baseline > 0, "the proxy did not come to rest: \(ProcessProbe.descriptorTargets(proxy.pid))")
        let count = 50
        let clients = try CLI.python(
            Self.peer(
                """
                import threading
                path, n, proxy = sys.argv[1], int(sys.argv[2]), sys.argv[3]
                conns = []
                for i in range(n):   # all connected before any data: served at once or not at all
                    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(path)
                    conns.append(c)
                bad, echoed = [], threading.Barrier(n + 1, timeout=120)
                def run(c, i):
                    data = (b'client %d;' % i) + os.urandom(100000 + i)
                    t = threading.Thread(target=c.sendall, args=(data,)); t.start()
                    got = bytearray()
                    try:
                        while len(got) < len(data):
                            b = c.recv(1 << 16)
                            if not b: break
                            got += b
                    except OSError as e:
                        bad.append((i, str(e)))
                    t.join()
                    if bytes(got) != data: bad.append((i, len(got)))
                    echoed.wait()
                    echoed.wait()
                    c.shutdown(socket.SHUT_WR)
                    if c.recv(1) != b'': bad.append((i, 'no EOF'))
                    c.close()
                threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(conns)]
                for t in threads: t.start()
                echoed.wait()   # every client has its echo and is still connected
                print('proxy descriptors', len(os.listdir('/proc/%s/fd' % proxy)))
                echoed.wait()
                for t in threads: t.join()
                print('bad', bad[:5]) if bad else print('ok')
                """
            ),
            [listen, String(count), String(proxy.pid)],
            in: dir,
            seconds: 180
        )
        #expect(clients.outputText.hasSuffix("ok\n"), "\(clients.outputText) \(clients.error)")
        let held = clients.outputText.split(separator: "\n").first { $0.hasPrefix("proxy descriptors ") }
            .flatMap { Int($0.split(separator: " ").last ?? "") }
        #expect((held ?? 0) >= baseline + 2 * count, "the proxy held \(held ?? 0) descriptors, \(baseline) idle")
        #expect(
            CLI.waitUntil(seconds: 60) { ProcessProbe.descriptorCount(proxy.pid) == baseline },
            "the proxy holds \(ProcessProbe.descriptorCount(proxy.pid)) descriptors, \(baseline) before the clients"
        )
        Self.stop(proxy)
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    @Test(
        "target down: the client is closed at once with one `uds: ` line and the proxy goes on; target up: served",
        .timeLimit(.minutes(3))
    )
    func targetDownThenUp() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let targetPath = dir.file("t.sock")
        let proxy = try Self.startProxy([], listen, targetPath, in: dir)
        var target: Spawned?
        defer { Self.reap([proxy, target]) }
        let refused = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                try:
                    print('closed' if c.recv(10) == b'' else 'data')
                except ConnectionResetError:
                    print('closed')
                """
            ),
            [listen],
            in: dir,
            seconds: 60
        )
        #expect(refused.outputText == "closed\n", "\(refused.error)")
        #expect(CLI.waitUntil(seconds: 60) { !proxy.errorText.isEmpty })
        #expect(CLI.isOneUDSLine(proxy.errorText), "\(proxy.errorText)")
        #expect(proxy.errorText.contains(targetPath), "\(proxy.errorText)")
        #expect(proxy.errorText.contains("ENOENT"), "\(proxy.errorText)")
        #expect(proxy.process.isRunning, "the proxy ended: \(proxy.errorText)")

        target = try Self.startTarget(Self.echoServer, type: "STREAM", at: targetPath, in: dir)
        let served = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                c.sendall(b'now it is up'); c.shutdown(socket.SHUT_WR)
                got = bytearray()
                while True:
                    b = c.recv(100)
                    if not b: break
                    got += b
                print(got.decode())
                """
            ),
            [listen],
            in: dir,
            seconds: 60
        )
        #expect(served.outputText == "now it is up\n", "\(served.error) \(proxy.errorText)")
        #expect(CLI.isOneUDSLine(proxy.errorText), "only the first client failed: \(proxy.errorText)")
        Self.stop(proxy)
    }

    @Test(
        "a client killed mid-transfer: the target's side is closed, the proxy serves the next, its descriptors return",
        .timeLimit(.minutes(3))
    )
    func clientKilledMidTransfer() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        // F: floods the client while reading what it sends, until the proxy closes this side. E: echoes.
        let target = try Self.startTarget(
            """
            import threading
            def serve(c):
                with c:
                    c.settimeout(60)
                    if c.recv(1) == b'F':
                        def drain():
                            try:
                                while c.recv(1 << 16): pass
                            except OSError:
                                pass
                        threading.Thread(target=drain, daemon=True).start()
                        try:
                            for _ in range(100000):
                                c.sendall(b'x' * 65536)
                            print('flood sent in full', flush=True)
                        except OSError as e:
                            print('flood ended:', type(e).__name__, flush=True)
                    else:
                        while True:
                            b = c.recv(1 << 16)
                            if not b: break
                            c.sendall(b)
            while True:
                c, _ = s.accept()
                threading.Thread(target=serve, args=(c,), daemon=True).start()
            """,
            type: "STREAM",
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy([], listen, dir.file("t.sock"), in: dir)
        let baseline = ProcessProbe.restingDescriptorCount(proxy.pid)
        try #require(baseline > 0, "the proxy did not come to rest: \(ProcessProbe.descriptorTargets(proxy.pid))")
        let victim = try CLI.spawnPython(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                c.sendall(b'F'); c.recv(1 << 16)   # the flood has come through
                for i in range(100000):
                    c.sendall(b'y' * 65536)
                    if i == 64: print('flowing', flush=True)
                """
            ),
            [listen],
            in: dir
        )
        defer { Self.reap([proxy, target, victim]) }
        #expect(CLI.waitUntil(seconds: 60) { victim.outputText == "flowing\n" }, "\(victim.errorText)")
        victim.signal(SIGKILL)
        #expect(victim.wait(seconds: 30) == nil && victim.terminatedBySignal)
        #expect(
            CLI.waitUntil(seconds: 60) { target.outputText.contains("flood ended:") },
            "the target's side stayed open: \(target.outputText)"
        )
        let next = try CLI.python(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                c.sendall(b'Enext client'); c.shutdown(socket.SHUT_WR)
                got = bytearray()
                while True:
                    b = c.recv(100)
                    if not b: break
                    got += b
                print(got.decode())
                """
            ),
            [listen],
            in: dir,
            seconds: 60
        )
        #expect(next.outputText == "next client\n", "\(next.error) \(proxy.errorText)")
        #expect(
            CLI.waitUntil(seconds: 60) { ProcessProbe.descriptorCount(proxy.pid) == baseline },
            "the proxy holds \(ProcessProbe.descriptorCount(proxy.pid)) descriptors, \(baseline) before the clients"
        )
        #expect(proxy.process.isRunning)
        Self.stop(proxy)
    }

    @Test(
        "SIGTERM and SIGINT, a connection open: exit 0, both sides closed, socket file removed",
        .timeLimit(.minutes(3)),
        arguments: [SIGTERM, SIGINT]
    )
    func signalEndsCleanly(signal: Int32) throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            print('target got', c.recv(100).decode(), flush=True)
            print('then', 'eof' if c.recv(100) == b'' else 'more', flush=True)
            """,
            type: "STREAM",
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy([], listen, dir.file("t.sock"), in: dir)
        let client = try CLI.spawnPython(
            Self.peer(
                """
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
                c.sendall(b'hello'); print('sent', flush=True)
                print('eof' if c.recv(100) == b'' else 'more', flush=True)
                """
            ),
            [listen],
            in: dir
        )
        defer { Self.reap([proxy, target, client]) }
        #expect(CLI.waitUntil(seconds: 60) { target.outputText.contains("target got hello") })
        proxy.signal(signal)
        #expect(proxy.wait(seconds: 60) == 0, "\(proxy.errorText)")
        #expect(!CLI.exists(listen), "the socket file is still there")
        #expect(client.wait(seconds: 60) == 0)
        #expect(client.outputText == "sent\neof\n")
        #expect(target.wait(seconds: 60) == 0)
        #expect(target.outputText == "listening\ntarget got hello\nthen eof\n")
        #expect(proxy.errorText.isEmpty, "\(proxy.errorText)")
    }

    @Test("a regular file at LISTEN: exit 1 with one `uds: ` line; the file is left as it was", .timeLimit(.minutes(2)))
    func regularFileAtListen() throws {
        let dir = try TempDirectory()
        for type in ["stream", "seqpacket", "dgram"] {
            let path = dir.write("precious-\(type)", Array("precious \(type)".utf8))
            let result = try CLI.uds(["proxy", "-t", type, path, dir.file("t.sock")], in: dir, seconds: 30)
            #expect(result.status == 1, "\(type): \(String(describing: result.status)) \(result.error)")
            #expect(CLI.isOneUDSLine(result.error), "\(type): \(result.error)")
            #expect(result.error.contains(path) && result.error.contains("not a socket"), "\(type): \(result.error)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data("precious \(type)".utf8))
        }
    }

    // MARK: credentials

    @Test(
        "as root the target sees the client's own pid, uid and gid (SCM_CREDENTIALS), the client the target's",
        .timeLimit(.minutes(3))
    )
    func credentialsAreTheClientsOwn() throws {
        guard CLI.isRoot, let setpriv = CLI.which("setpriv") else {
            print("skipped: forwarding another process's credentials needs root (and setpriv for nobody)")
            return
        }
        let dir = try TempDirectory(worldReadable: true)
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(
            """
            for _ in range(2):
                c, _ = s.accept(); c.settimeout(60); c.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
                peer = struct.unpack('3i', c.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                m, creds = credentials(c)
                print('message %s; credentials %s; peercred pid=%d' % (m.decode(), creds, peer[0]), flush=True)
                c.sendall(b'from the target'); c.close()
            """,
            type: "STREAM",
            at: dir.file("t.sock"),
            passCredentials: true,
            in: dir
        )
        let proxy = try Self.startProxy(["--mode", "666"], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = Self.peer(
            """
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1); c.connect(sys.argv[1])
            c.sendall(b'who am i')
            m, creds = credentials(c)
            print('pid=%d uid=%d gid=%d; reply %s; credentials %s' % (os.getpid(), os.getuid(), os.getgid(), m.decode(), creds))
            """
        )
        for asNobody in [false, true] {
            let command =
                asNobody
                ? [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", CLI.python, "-c", client, listen]
                : [CLI.python, "-c", client, listen]
            let result = try CLI.runProcess(command, in: dir, seconds: 60)
            #expect(result.status == 0, "\(result.error)")
            let fields = result.outputText.split(separator: ";").map {
                $0.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            try #require(fields.count == 3, "\(result.outputText) \(result.error)")
            let own = fields[0]
            #expect(own.hasSuffix(asNobody ? "uid=65534 gid=65534" : "uid=\(getuid()) gid=\(getgid())"), "\(own)")
            #expect(fields[1] == "reply from the target")
            #expect(fields[2] == "credentials pid=\(target.pid) uid=\(getuid()) gid=\(getgid())", "\(fields[2])")
            #expect(
                CLI.waitUntil(seconds: 60) {
                    target.outputText.contains("message who am i; credentials \(own); peercred pid=\(proxy.pid)\n")
                },
                "the target saw \(target.outputText); the client is \(own), the proxy pid=\(proxy.pid)"
            )
        }
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        Self.stop(proxy)
    }

    @Test(
        "--allow-uid: a client running as nobody is closed before the target hears of it; --mode is exact",
        .timeLimit(.minutes(3))
    )
    func allowUIDRefusesBeforeConnecting() throws {
        guard CLI.isRoot, let setpriv = CLI.which("setpriv") else {
            print("skipped: --allow-uid against another user needs root and setpriv")
            return
        }
        let dir = try TempDirectory(worldReadable: true)
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(
            """
            c, _ = s.accept(); c.settimeout(60)
            print('accepted', c.recv(100).decode(), flush=True); c.sendall(b'served'); c.close()
            """,
            type: "STREAM",
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy(
            ["-v", "--allow-uid", "0", "--mode", "666"],
            listen,
            dir.file("t.sock"),
            in: dir
        )
        defer { Self.reap([proxy, target]) }
        var info = stat()
        #expect(lstat(listen, &info) == 0 && info.st_mode & 0o7777 == 0o666)
        let client = Self.peer(
            """
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
            try:
                c.sendall(b'from uid %d' % os.getuid()); c.shutdown(socket.SHUT_WR)
                print(c.recv(100).decode() or 'closed')
            except OSError:
                print('closed')
            """
        )
        let nobody = try CLI.runProcess(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", CLI.python, "-c", client, listen],
            in: dir,
            seconds: 60
        )
        #expect(nobody.outputText == "closed\n", "\(nobody.error)")
        let root = try CLI.runProcess([CLI.python, "-c", client, listen], in: dir, seconds: 60)
        #expect(root.outputText == "served\n", "\(root.error)")
        #expect(target.wait(seconds: 60) == 0)
        #expect(target.outputText == "listening\naccepted from uid 0\n")  // nobody's client never got there
        #expect(proxy.errorText.contains("uds: refused peer"), "\(proxy.errorText)")
        #expect(proxy.errorText.contains("uid=65534"), "\(proxy.errorText)")
        Self.stop(proxy)
    }

    @Test(
        "dgram --allow-uid: a datagram from nobody is dropped before the target sees it; root's gets a reply",
        .timeLimit(.minutes(3))
    )
    func allowUIDFiltersDatagrams() throws {
        guard CLI.isRoot, let setpriv = CLI.which("setpriv") else {
            print("skipped: --allow-uid against another user needs root and setpriv")
            return
        }
        let dir = try TempDirectory(worldReadable: true)
        let listen = dir.file("l.sock")
        let target = try Self.startTarget(
            """
            s.settimeout(60)
            m, a = s.recvfrom(100); print('got', m.decode(), flush=True); s.sendto(b'served', a)
            """,
            type: "DGRAM",
            at: dir.file("t.sock"),
            in: dir
        )
        let proxy = try Self.startProxy(
            ["-t", "dgram", "-v", "--allow-uid", "0", "--mode", "666"],
            listen,
            dir.file("t.sock"),
            in: dir
        )
        defer { Self.reap([proxy, target]) }
        let sender = Self.peer(
            """
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(''); s.settimeout(float(sys.argv[2]))  # autobind
            s.sendto(b'from uid %d' % os.getuid(), sys.argv[1])
            try:
                print(s.recv(100).decode())
            except socket.timeout:
                print('no reply')
            """
        )
        let nobody = try CLI.runProcess(
            [
                setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", CLI.python, "-c", sender, listen,
                "1",
            ],
            in: dir,
            seconds: 60
        )
        #expect(nobody.outputText == "no reply\n", "\(nobody.error)")
        let root = try CLI.runProcess(
            [CLI.python, "-c", sender, listen, "60"],
            in: dir,
            seconds: 60
        )
        #expect(root.outputText == "served\n", "\(root.error)")
        #expect(target.wait(seconds: 60) == 0)
        #expect(target.outputText == "listening\ngot from uid 0\n")  // nobody's datagram never got there
        #expect(proxy.errorText.contains("uds: refused peer"), "\(proxy.errorText)")
        #expect(proxy.errorText.contains("uid=65534"), "\(proxy.errorText)")
        Self.stop(proxy)
    }

    // MARK: --dump

    @Test(
        "--dump: open line with the client's pid, transfer header, hex dump, descriptor, credentials, closed line",
        .timeLimit(.minutes(3))
    )
    func dumpText() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let file = dir.write("passed.txt", Array("passed along".utf8))
        let target = try Self.startTarget(Self.descriptorReceiver, type: "STREAM", at: dir.file("t.sock"), in: dir)
        let proxy = try Self.startProxy(["--dump"], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = try CLI.python(Self.descriptorSender, [listen, file], in: dir, seconds: 60)
        #expect(client.status == 0, "\(client.error)")
        let pid = try #require(
            client.outputText.split(separator: "\n").first.flatMap { Int($0) },
            "\(client.outputText)"
        )
        #expect(client.outputText.hasSuffix("\nreply\n"))
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(target.outputText == "listening\ngot hello, proxy! passed along\n")
        #expect(CLI.waitUntil(seconds: 60) { proxy.errorText.contains("[1] closed: ") }, "\(proxy.errorText)")
        let trace = proxy.errorText
        let ids = "uid=\(getuid()) gid=\(getgid())"
        #expect(
            trace.contains(
                "[1] open: client pid=\(pid) \(ids) on \(listen); target \(dir.file("t.sock")), its peer pid=\(target.pid) "
            ),
            "\(trace)"
        )
        #expect(trace.contains("the target's SO_PEERCRED names the proxy (pid=\(proxy.pid) "), "\(trace)")
        #expect(trace.contains("\n[1] > 13 bytes, 1 descriptor\n"), "\(trace)")
        #expect(
            trace.contains("\n  00000000  68 65 6c 6c 6f 2c 20 70  72 6f 78 79 21           |hello, proxy!|\n"),
            "\(trace)"
        )
        let descriptor = trace.split(separator: "\n").first { $0.hasPrefix("  fd ") }
        #expect(descriptor?.hasSuffix(": \(file) (regular file, read-only)") == true, "\(trace)")
        if CLI.isRoot {
            #expect(trace.contains("  credentials pid=\(pid) \(ids), passed on as the sender's own\n"), "\(trace)")
        }
        #expect(trace.contains("\n[1] < 5 bytes, 0 descriptors\n"), "\(trace)")
        #expect(trace.contains("|reply|"), "\(trace)")
        #expect(
            trace.contains(
                "\n[1] closed: > 13 bytes in 1 transfers, 1 descriptors; < 5 bytes in 1 transfers, 0 descriptors\n"
            ),
            "\(trace)"
        )
        Self.stop(proxy)
    }

    @Test(
        "--dump --json: every stderr line is JSON; open, transfer (bytes, hex, descriptor path) and close events",
        .timeLimit(.minutes(3))
    )
    func dumpJSON() throws {
        let dir = try TempDirectory()
        let listen = dir.file("l.sock")
        let file = dir.write("passed.txt", Array("passed along".utf8))
        let target = try Self.startTarget(Self.descriptorReceiver, type: "STREAM", at: dir.file("t.sock"), in: dir)
        let proxy = try Self.startProxy(["--dump", "--json"], listen, dir.file("t.sock"), in: dir)
        defer { Self.reap([proxy, target]) }
        let client = try CLI.python(Self.descriptorSender, [listen, file], in: dir, seconds: 60)
        #expect(client.status == 0, "\(client.error)")
        let pid = try #require(
            client.outputText.split(separator: "\n").first.flatMap { Int($0) },
            "\(client.outputText)"
        )
        #expect(target.wait(seconds: 60) == 0, "\(target.errorText)")
        #expect(CLI.waitUntil(seconds: 60) { proxy.errorText.contains("\"event\":\"close\"") }, "\(proxy.errorText)")
        Self.stop(proxy)
        var events: [[String: Any]] = []
        for line in proxy.errorText.split(separator: "\n") {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object != nil, "not a JSON object: \(line)")
            if let object { events.append(object) }
        }
        // The two transfers are traced by two tasks: either may come first.
        let kinds = events.map { $0["event"] as? String ?? "?" }
        #expect(kinds.first == "open" && kinds.last == "close", "\(kinds)")
        #expect(kinds.sorted() == ["close", "open", "transfer", "transfer"], "\(kinds)")
        let open = try #require(events.first { $0["event"] as? String == "open" })
        #expect((open["connection"] as? NSNumber)?.intValue == 1)
        #expect(((open["client"] as? [String: Any])?["pid"] as? NSNumber)?.intValue == pid, "\(open)")
        #expect(((open["targetPeer"] as? [String: Any])?["pid"] as? NSNumber)?.int32Value == target.pid, "\(open)")
        #expect(open["listen"] as? String == listen)
        #expect(open["target"] as? String == dir.file("t.sock"))
        let sent = try #require(
            events.first { $0["event"] as? String == "transfer" && $0["direction"] as? String == ">" }
        )
        #expect((sent["bytes"] as? NSNumber)?.intValue == 13)
        #expect(sent["hex"] as? String == ProcessProbe.hex(Array("hello, proxy!".utf8)))
        let descriptors = try #require(sent["descriptors"] as? [[String: Any]])
        #expect(descriptors.count == 1)
        #expect(descriptors.first?["path"] as? String == file, "\(descriptors)")
        #expect(descriptors.first?["type"] as? String == "regular file")
        #expect(descriptors.first?["access"] as? String == "read-only")
        #expect(descriptors.first?["fd"] is NSNumber)
        let credentials = try #require(sent["credentials"] as? [String: Any], "\(sent)")
        #expect((credentials["pid"] as? NSNumber)?.intValue == pid)
        #expect((credentials["uid"] as? NSNumber)?.uint32Value == getuid())
        if CLI.isRoot { #expect(credentials["forwarded"] as? String == "client") }
        let back = try #require(
            events.first { $0["event"] as? String == "transfer" && $0["direction"] as? String == "<" }
        )
        #expect(back["hex"] as? String == ProcessProbe.hex(Array("reply".utf8)))
        let close = try #require(events.last)
        #expect((close["bytesToTarget"] as? NSNumber)?.intValue == 13)
        #expect((close["bytesToClient"] as? NSNumber)?.intValue == 5)
        #expect((close["descriptorsToTarget"] as? NSNumber)?.intValue == 1)
        #expect(close["error"] is NSNull)
    }

    // MARK: real programs

    @Test(
        "tmux attach works through the proxy (the client's terminal crosses as a descriptor); through socat it fails",
        .timeLimit(.minutes(4))
    )
    func tmuxAttach() throws {
        guard let tmux = CLI.which("tmux"), let script = CLI.which("script") else {
            print("skipped: tmux attach through the proxy needs tmux and script (apt-get install -y tmux bsdutils)")
            return
        }
        let dir = try TempDirectory()
        let server = dir.file("tmux.sock")
        let environment = ["TERM": "xterm", "TMUX": ""]
        let started = try CLI.runProcess(
            [tmux, "-S", server, "-f", "/dev/null", "new-session", "-d", "-s", "t", "sleep 600"],
            in: dir,
            seconds: 60,
            environment: environment
        )
        defer { _ = try? CLI.runProcess([tmux, "-S", server, "kill-server"], in: dir, seconds: 30) }
        try #require(started.status == 0, "tmux did not start: \(started.error)")
        func clients() -> String {
            (try? CLI.runProcess([tmux, "-S", server, "list-clients"], in: dir, seconds: 30).outputText) ?? ""
        }
        func attach(_ socket: String) throws -> Spawned {
            try Spawned(
                [script, "-qc", "\(tmux) -S \(socket) attach -t t", "/dev/null"],
                stdin: "pipe",
                directory: dir,
                environment: environment
            )
        }

        let listen = dir.file("l.sock")
        let proxy = try Self.startProxy([], listen, server, in: dir)
        let attached = try attach(listen)
        var socat: Spawned?
        var control: Spawned?
        defer { Self.reap([attached, control, socat, proxy]) }
        #expect(
            Self.poll { clients().contains(": t ") },
            "no client attached through the proxy: \(attached.outputText)"
        )
        _ = try CLI.runProcess([tmux, "-S", server, "detach-client", "-s", "t"], in: dir, seconds: 30)
        attached.closeInput()
        #expect(attached.wait(seconds: 60) == 0, "\(attached.outputText)")
        #expect(attached.outputText.contains("[detached (from session t)]"), "\(attached.outputText)")
        Self.stop(proxy)

        guard let socatPath = CLI.which("socat") else {
            Issue.record("socat is not installed (apt-get install -y socat): no control")
            return
        }
        let plain = dir.file("socat.sock")
        let socatRelay = try Spawned(
            [socatPath, "UNIX-LISTEN:\(plain),fork", "UNIX-CONNECT:\(server)"],
            directory: dir
        )
        socat = socatRelay
        #expect(Self.waitForListening(plain, pid: socatRelay.pid))
        let failed = try attach(plain)
        control = failed
        #expect(failed.wait(seconds: 60) != nil, "tmux attach through socat did not end")
        #expect(failed.outputText.contains("open terminal failed: not a terminal"), "\(failed.outputText)")
        #expect(!clients().contains(": t "), "a client attached through socat")
        if let socat { Self.endSocat(socat) }
    }

    @Test(
        "D-Bus: a method call passing a Unix fd (signature h) works through the proxy; through socat it fails",
        .timeLimit(.minutes(4))
    )
    func dbusUnixFd() throws {
        let python = "/usr/bin/python3"
        let dir = try TempDirectory()
        guard let daemon = CLI.which("dbus-daemon"),
            (try? CLI.runProcess([python, "-c", "import dbus, gi"], in: dir, seconds: 30).status) == 0
        else {
            print("skipped: D-Bus needs dbus-daemon and /usr/bin/python3 with dbus and gi (python3-dbus, python3-gi)")
            return
        }
        let bus = dir.file("bus")
        let daemonProcess = try Spawned(
            [daemon, "--session", "--nofork", "--address=unix:path=\(bus)", "--print-address"],
            directory: dir
        )
        var service: Spawned?
        var proxy: Spawned?
        var socat: Spawned?
        defer { Self.reap([service, proxy, socat, daemonProcess]) }
        try #require(
            Self.waitForListening(bus, pid: daemonProcess.pid),
            "dbus-daemon did not start: \(daemonProcess.errorText)"
        )
        let started = try Spawned(
            [
                python, "-c",
                """
                import os, sys, signal
                import dbus, dbus.service, dbus.mainloop.glib
                from gi.repository import GLib
                signal.alarm(600)
                dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
                bus = dbus.bus.BusConnection(sys.argv[1])
                name = dbus.service.BusName('org.example.FdReader', bus)
                class Reader(dbus.service.Object):
                    @dbus.service.method('org.example.FdReader', in_signature='h', out_signature='s')
                    def Read(self, fd):
                        n = fd.take()
                        try:
                            return os.pread(n, 4096, 0).decode()
                        finally:
                            os.close(n)
                reader = Reader(bus, '/org/example/FdReader')
                print('ready', flush=True)
                GLib.MainLoop().run()
                """, "unix:path=\(bus)",
            ],
            directory: dir
        )
        service = started
        try #require(
            CLI.waitUntil(seconds: 60) { started.outputText == "ready\n" },
            "the service did not start: \(started.errorText)"
        )
        let content = "read through the descriptor " + ProcessProbe.hex(CLI.randomBytes(6))
        let file = dir.write("content.txt", Array(content.utf8))
        let caller = """
            import sys, signal
            import dbus
            signal.alarm(600)
            bus = dbus.bus.BusConnection('unix:path=' + sys.argv[1])
            reader = bus.get_object('org.example.FdReader', '/org/example/FdReader')
            with open(sys.argv[2], 'rb') as f:
                try:
                    print('read:', reader.Read(dbus.types.UnixFd(f), dbus_interface='org.example.FdReader', timeout=60))
                except dbus.exceptions.DBusException as e:
                    print('failed:', e.get_dbus_name())
            """

        let listen = dir.file("l.sock")
        proxy = try Self.startProxy([], listen, bus, in: dir)
        let through = try CLI.runProcess([python, "-c", caller, listen, file], in: dir, seconds: 90)
        #expect(through.outputText == "read: \(content)\n", "\(through.error)")

        guard let socatPath = CLI.which("socat") else {
            Issue.record("socat is not installed (apt-get install -y socat): no control")
            return
        }
        let plain = dir.file("socat.sock")
        let relay = try Spawned([socatPath, "UNIX-LISTEN:\(plain),fork", "UNIX-CONNECT:\(bus)"], directory: dir)
        socat = relay
        #expect(Self.waitForListening(plain, pid: relay.pid))
        let control = try CLI.runProcess([python, "-c", caller, plain, file], in: dir, seconds: 90)
        #expect(control.outputText.hasPrefix("failed: "), "through socat: \(control.outputText) \(control.error)")
        #expect(!control.outputText.contains(content))
        Self.endSocat(relay)
        if let proxy { Self.stop(proxy) }
    }
}

// MARK: - Helpers

extension ProxyTests {
    /// What every python3 peer starts with: the modules, a `signal.alarm` that ends a peer the test forgot,
    /// and `describe` (a message as `length:hash`, `:TRUNC` if it was cut) and `credentials` (one recvmsg with
    /// room for SCM_CREDENTIALS: the bytes and `pid=P uid=U gid=G`, or `none`).
    static func peer(_ script: String) -> String {
        """
        import hashlib, os, socket, struct, sys, time, signal
        signal.alarm(600)
        def describe(m, flags):
            return '%d:%s%s' % (len(m), hashlib.sha256(m).hexdigest()[:12], ':TRUNC' if flags & socket.MSG_TRUNC else '')
        def credentials(c):
            m, ancillary, _, _ = c.recvmsg(1 << 16, socket.CMSG_SPACE(12))
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    return m, 'pid=%d uid=%d gid=%d' % struct.unpack('3i', data[:12])
            return m, 'none'

        """ + script
    }

    /// Starts a python3 target: `s` is its socket (`SOCK_` + `type`) bound at `path`, listening for the
    /// connected types; it prints `listening`, then runs `script` (argv[2...] are `arguments`). Waits for that line.
    static func startTarget(
        _ script: String,
        type: String,
        at path: String,
        arguments: [String] = [],
        passCredentials: Bool = false,
        in dir: TempDirectory
    ) throws -> Spawned {
        let head = """
            s = socket.socket(socket.AF_UNIX, getattr(socket, 'SOCK_' + sys.argv[2]))
            if sys.argv[3] == 'passcred': s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            s.bind(sys.argv[1])
            if sys.argv[2] != 'DGRAM': s.listen(64)
            print('listening', flush=True)
            sys.argv[2:4] = []

            """
        let target = try CLI.spawnPython(
            peer(head + script),
            [path, type, passCredentials ? "passcred" : "-"] + arguments,
            in: dir
        )
        let ready = CLI.waitUntil(seconds: 60) { target.outputText.hasPrefix("listening\n") }
        if !ready { reap([target]) }
        try #require(ready, "the target did not start: \(target.errorText)")
        return target
    }

    /// A python3 echo target body for ``startTarget``: one thread per connection, until it is killed.
    static let echoServer = """
        import threading
        def echo(c):
            with c:
                c.settimeout(60)
                while True:
                    b = c.recv(1 << 16)
                    if not b: break
                    c.sendall(b)
        while True:
            c, _ = s.accept()
            threading.Thread(target=echo, args=(c,), daemon=True).start()
        """

    /// A target body that takes one message with its descriptor, prints `got MESSAGE FILE-CONTENT`, replies.
    static let descriptorReceiver = """
        c, _ = s.accept(); c.settimeout(60)
        m, fds, _, _ = socket.recv_fds(c, 1 << 16, 8)
        print('got', m.decode(), *[os.pread(fd, 4096, 0).decode() for fd in fds], flush=True)
        c.sendall(b'reply'); c.close()
        """

    /// A client that prints its pid, sends `hello, proxy!` with a read-only descriptor of argv[2], half-closes
    /// and prints the reply.
    static let descriptorSender = peer(
        """
        print(os.getpid(), flush=True)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(sys.argv[1])
        fd = os.open(sys.argv[2], os.O_RDONLY)
        socket.send_fds(c, [b'hello, proxy!'], [fd]); os.close(fd); c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while True:
            b = c.recv(100)
            if not b: break
            got += b
        print(got.decode())
        """
    )

    /// Starts `uds proxy ARGUMENTS LISTEN TARGET` and waits until it listens (dgram: until it is bound).
    static func startProxy(
        _ arguments: [String],
        _ listen: String,
        _ target: String,
        in dir: TempDirectory
    ) throws
        -> Spawned
    {
        let proxy = try CLI.spawnUDS(["proxy"] + arguments + [listen, target], in: dir)
        let ready =
            arguments.contains("dgram")
            ? CLI.waitForSocket(listen, seconds: 60) : waitForListening(listen, pid: proxy.pid)
        if !ready {
            var info = stat()
            let file = lstat(listen, &info) == 0 ? String(info.st_mode & S_IFMT, radix: 8) : "errno \(errno)"
            let state =
                "pid \(proxy.pid) running \(proxy.process.isRunning), \(listen): \(file), status "
                + "\((try? String(contentsOfFile: "/proc/\(proxy.pid)/stat", encoding: .utf8)) ?? "?") threads "
                + "\(ProcessProbe.status(proxy.pid, "Threads").map { "\($0)" } ?? "?"), descriptors "
                + "\(ProcessProbe.descriptorTargets(proxy.pid)), sockets \(ProcessProbe.unixSocketRows(proxy.pid)), "
                + "wchan \((try? String(contentsOfFile: "/proc/\(proxy.pid)/wchan", encoding: .utf8)) ?? "?")"
            reap([proxy])
            try #require(ready, "the proxy did not start: \(state); stderr: \(proxy.errorText)")
        }
        return proxy
    }

    /// Whether process `pid` listens at `path` within `seconds`: the socket file exists and one of the process's
    /// socket descriptors is a listening socket (__SO_ACCEPTCON in /proc/net/unix). The file appears at bind, a
    /// moment before listen(). The table's inode is the socket's (sockfs), not the file's, and its path column is
    /// the name as bound (uds binds relative to the checked directory), so the process's descriptors name it.
    static func waitForListening(_ path: String, pid: Int32, seconds: Double = 60) -> Bool {
        CLI.waitUntil(seconds: seconds) {
            var info = stat()
            guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK else { return false }
            return ProcessProbe.unixSocketRows(pid).contains { $0[3] == "00010000" }
        }
    }

    /// Polls `condition` every 100 ms (it runs a program) for up to `seconds`.
    static func poll(seconds: Double = 60, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(100_000)
        }
        return condition()
    }

    /// SIGTERM to a proxy that should still be running: it ends with 0 and removes its socket file.
    static func stop(_ proxy: Spawned, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(proxy.process.isRunning, "the proxy had ended: \(proxy.errorText)", sourceLocation: sourceLocation)
        proxy.signal(SIGTERM)
        #expect(proxy.wait(seconds: 60) == 0, "\(proxy.errorText)", sourceLocation: sourceLocation)
    }

    /// Ends a `socat ...,fork`: its per-connection children first (they are not this process's to reap).
    static func endSocat(_ socat: Spawned) {
        let children =
            (try? String(contentsOfFile: "/proc/\(socat.pid)/task/\(socat.pid)/children", encoding: .utf8))
            ?? ""
        for child in children.split(separator: " ").compactMap({ Int32($0) }) { kill(child, SIGTERM) }
        socat.signal(SIGTERM)
        socat.wait(seconds: 30)
    }

    /// Ends whatever of `processes` still runs (SIGKILL) and reaps it, so that a failed check leaves nothing behind.
    static func reap(_ processes: [Spawned?]) {
        for case let process? in processes where process.process.isRunning {
            process.signal(SIGKILL)
            process.wait(seconds: 30)
        }
    }

    /// The SHA-256 of a file (python3's hashlib), hex.
    static func sha256(_ path: String, in dir: TempDirectory) throws -> String {
        let result = try CLI.python(
            "import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())",
            [path],
            in: dir
        )
        return result.outputText.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
