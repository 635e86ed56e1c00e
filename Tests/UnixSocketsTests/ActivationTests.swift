import Foundation
import SystemPackage
import Testing
import UnixSockets

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12: socket activation and sd_notify against real peers: Debian's `systemd-socket-activate` and
/// `systemd-notify`, a python3 harness that hands over descriptors as a service manager does, and a python3
/// notification receiver that checks what systemd checks.
@Suite("systemd: socket activation and readiness notification")
struct ActivationTests {
    static let activate = "/usr/bin/systemd-socket-activate"
    static var haveActivate: Bool { FileManager.default.isExecutableFile(atPath: activate) }

    /// A client: connects `argv[3]` times to argv[1] (type argv[2]), sends `hello N` (seqpacket: also a
    /// second message `again`), half-closes and prints every message or all bytes received, one line per connection.
    static let client = """
        import socket, sys
        for i in range(int(sys.argv[3])):
            c = socket.socket(socket.AF_UNIX, getattr(socket, 'SOCK_' + sys.argv[2])); c.settimeout(30)
            c.connect(sys.argv[1])
            c.sendall(b'hello %d' % i)
            if sys.argv[2] == 'SEQPACKET': c.send(b'again')
            c.shutdown(socket.SHUT_WR)
            got = []
            while True:
                b = c.recv(100)
                if not b: break
                got.append(b.decode())
            print('|'.join(got), flush=True)
        """

    @Test(
        "systemd-socket-activate -l PATH uds listen -k --echo: served on the passed listener, file left to its owner",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func activatedStreamListener() throws {
        let dir = try TempDirectory()
        let path = dir.file("e.sock")
        let server = try Spawned(
            [Self.activate, "-l", path, try #require(CLI.executable), "listen", "-k", "--echo"],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        #expect(CLI.waitForSocket(path))
        let run = try CLI.python(Self.client, [path, "STREAM", "2"], in: dir)
        #expect(run.outputText == "hello 0\nhello 1\n", "\(run.error) \(server.errorText)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "\(server.errorText)")
        var info = stat()
        #expect(lstat(path, &info) == 0, "uds unlinked the activated socket's file (systemd-socket-activate owns it)")
    }

    @Test(
        "systemd-socket-activate --seqpacket: uds listen -k -t seqpacket --echo keeps the boundaries",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func activatedSeqPacketListener() throws {
        let dir = try TempDirectory()
        let path = dir.file("q.sock")
        let server = try Spawned(
            [
                Self.activate, "--seqpacket", "-l", path, try #require(CLI.executable), "listen", "-k", "-t",
                "seqpacket", "--echo",
            ],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        #expect(CLI.waitForSocket(path))
        let run = try CLI.python(Self.client, [path, "SEQPACKET", "1"], in: dir)
        #expect(run.outputText == "hello 0|again\n", "\(run.error) \(server.errorText)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "\(server.errorText)")
    }

    @Test(
        "systemd-socket-activate -a: each connection is served by its own uds listen --echo, inetd style",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func acceptedConnection() throws {
        let dir = try TempDirectory()
        let path = dir.file("a.sock")
        let server = try Spawned(
            [Self.activate, "-a", "-l", path, try #require(CLI.executable), "listen", "--echo"],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        #expect(CLI.waitForSocket(path))
        let run = try CLI.python(Self.client, [path, "STREAM", "2"], in: dir)
        #expect(run.outputText == "hello 0\nhello 1\n", "\(run.error) \(server.errorText)")
        #expect(!server.errorText.contains("uds:"), "\(server.errorText)")
        server.signal(SIGTERM)
        server.wait()
    }

    @Test(
        "systemd-socket-activate --datagram: uds listen -t dgram --lines prints what arrives on the passed socket",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func activatedDatagramSocket() throws {
        let dir = try TempDirectory()
        let path = dir.file("d.sock")
        let server = try Spawned(
            [
                Self.activate, "--datagram", "-l", path, try #require(CLI.executable), "listen", "-t", "dgram",
                "--lines",
            ],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        #expect(CLI.waitForSocket(path))
        let send = try CLI.python(
            "import socket, sys\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                + "for m in (b'first', b'second'): s.sendto(m, sys.argv[1])",
            [path],
            in: dir
        )
        #expect(send.status == 0, "\(send.error)")
        #expect(CLI.waitUntil { server.outputText == "first\nsecond\n" }, "\(server.outputText) \(server.errorText)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "\(server.errorText)")
    }

    @Test(
        "two activated sockets (--fdname): no ADDRESS lists both (64); an ADDRESS picks one; a foreign one is 64",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func severalActivatedSockets() throws {
        let dir = try TempDirectory()
        let first = dir.file("first.sock")
        let second = dir.file("second.sock")
        let uds = try #require(CLI.executable)
        func start(_ arguments: [String]) throws -> Spawned {
            let server = try Spawned(
                [Self.activate, "-l", first, "-l", second, "--fdname=one:two", uds, "listen", "--echo"] + arguments,
                directory: dir
            )
            _ = CLI.waitForSocket(first) && CLI.waitForSocket(second)
            return server
        }
        // systemd-socket-activate execs its command on the first connection.
        let unnamed = try start([])
        _ = try? CLI.python(Self.client, [first, "STREAM", "1"], in: dir)
        #expect(unnamed.wait() == 64)
        #expect(unnamed.errorText.contains("2 sockets were activated"), "\(unnamed.errorText)")
        #expect(unnamed.errorText.contains("\"one\"") && unnamed.errorText.contains("\"two\""), "\(unnamed.errorText)")
        try FileManager.default.removeItem(atPath: first)
        try FileManager.default.removeItem(atPath: second)

        let picked = try start([second])
        defer { if picked.process.isRunning { picked.signal(SIGKILL) } }
        let run = try CLI.python(Self.client, [second, "STREAM", "1"], in: dir)
        #expect(run.outputText == "hello 0\n", "\(run.error) \(picked.errorText)")
        #expect(picked.wait() == 0, "\(picked.errorText)")
        try FileManager.default.removeItem(atPath: first)
        try FileManager.default.removeItem(atPath: second)

        let foreign = try start([dir.file("other.sock")])
        _ = try? CLI.python(Self.client, [first, "STREAM", "1"], in: dir)
        #expect(foreign.wait() == 64)
        #expect(foreign.errorText.contains("is not the activated socket's address"), "\(foreign.errorText)")
    }

    /// A service manager in python3: makes the sockets and files argv[2] names (comma-separated: `dgram`,
    /// `stream`, `inet`, `file`) in directory argv[3], moves them to descriptors 3, 4, ..., sets LISTEN_FDS,
    /// LISTEN_PID (this pid, which exec keeps, or 1 when argv[4] is `other`) and LISTEN_FDNAMES (argv[5],
    /// `-` for none), then execs uds (argv[1]) with the rest of argv.
    static let manager = """
        import os, socket, sys, fcntl
        uds, kinds, where, pid, names = sys.argv[1:6]
        made = []
        for i, kind in enumerate(kinds.split(',')):
            if kind == 'dgram':
                s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind('%s/%d.sock' % (where, i))
            elif kind == 'stream':
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind('%s/%d.sock' % (where, i)); s.listen()
            elif kind == 'inet':
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.bind(('127.0.0.1', 0)); s.listen()
            if kind == 'file':
                fd = os.open('/etc/hostname', os.O_RDONLY)
            else:
                fd = s.detach()
            made.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 100)); os.close(fd)
        for i, fd in enumerate(made):
            os.dup2(fd, 3 + i, inheritable=True); os.close(fd)
        os.environ['LISTEN_FDS'] = str(len(made))
        os.environ['LISTEN_PID'] = '1' if pid == 'other' else str(os.getpid())
        if names != '-': os.environ['LISTEN_FDNAMES'] = names
        os.execv(uds, [uds] + sys.argv[6:])
        """

    @Test(
        "a passed descriptor of another kind is an error naming it, what it is and what was asked",
        arguments: [
            (
                "dgram", ["listen", "-t", "stream"], "descriptor 3 \"unknown\" (a datagram socket on ",
                "is not a stream listener"
            ),
            ("inet", ["listen"], "descriptor 3 \"unknown\" (an AF_INET stream socket)", "is not a stream listener"),
            (
                "file", ["listen", "-t", "dgram"], "descriptor 3 \"unknown\" (a regular file)",
                "is not a datagram socket"
            ),
            ("stream", ["listen", "-t", "seqpacket"], "(a stream listener on ", "is not a seqpacket listener"),
        ]
    )
    func wrongKind(kind: String, arguments: [String], what: String, asked: String) throws {
        let dir = try TempDirectory()
        let result = try CLI.runProcess(
            [CLI.python, "-c", Self.manager, try #require(CLI.executable), kind, dir.path, "ours", "-"] + arguments,
            in: dir
        )
        #expect(result.status == 1, "\(result.error)")
        #expect(result.error.hasPrefix("uds: socket activation: "), "\(result.error)")
        #expect(result.error.contains(what) && result.error.contains(asked), "\(result.error)")
    }

    @Test("LISTEN_PID of another process: nothing was activated, so ADDRESS is missing (64); names travel")
    func foreignListenPID() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let foreign = try CLI.runProcess(
            [CLI.python, "-c", Self.manager, uds, "stream", dir.path, "other", "-", "listen"],
            in: dir
        )
        #expect(foreign.status == 64)
        #expect(foreign.error.contains("missing ADDRESS (none was activated"), "\(foreign.error)")
        let fresh = try TempDirectory()
        let named = try CLI.runProcess(
            [CLI.python, "-c", Self.manager, uds, "dgram,stream", fresh.path, "ours", "logs:web", "listen"],
            in: fresh
        )
        #expect(named.status == 64)
        #expect(named.error.contains("descriptor 3 \"logs\" (a datagram socket on "), "\(named.error)")
        #expect(named.error.contains("descriptor 4 \"web\" (a stream listener on "), "\(named.error)")
    }

    // MARK: notification

    /// A notification receiver that checks what systemd checks: credentials present (SO_PASSCRED), no NUL,
    /// nothing truncated, descriptors only with FDSTORE=1 or BARRIER=1 (closing them answers the barrier).
    /// Prints one JSON object per datagram, `argv[2]` of them.
    static let receiver = """
        import array, json, os, socket, struct, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
        s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1); s.settimeout(60)
        print('bound', flush=True)
        for _ in range(int(sys.argv[2])):
            msg, anc, flags, _ = s.recvmsg(4096, socket.CMSG_SPACE(253 * 4) + socket.CMSG_SPACE(12))
            pid, fds, problems = None, [], []
            for level, kind, data in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS: pid = struct.unpack('iII', data[:12])[0]
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS: fds += array.array('i', data[:len(data) // 4 * 4])
            if flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC): problems.append('truncated')
            if b'\\0' in msg: problems.append('NUL')
            if pid is None: problems.append('no credentials')
            fields = dict(line.split('=', 1) for line in msg.decode().split('\\n') if line)
            if fds and 'FDSTORE' not in fields and 'BARRIER' not in fields: problems.append('descriptors without FDSTORE')
            for fd in fds: os.close(fd)
            print(json.dumps({'fields': fields, 'pid': pid, 'fds': len(fds), 'problems': problems}, sort_keys=True), flush=True)
        """

    static func startReceiver(_ path: String, count: Int, in dir: TempDirectory) throws -> Spawned {
        let receiver = try CLI.spawnPython(Self.receiver, [path, String(count)], in: dir)
        try #require(CLI.waitUntil { receiver.outputText.hasPrefix("bound\n") }, "\(receiver.errorText)")
        return receiver
    }

    static func events(_ receiver: Spawned) -> [[String: Any]] {
        receiver.outputText.split(separator: "\n").dropFirst().compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    @Test(
        "systemd-notify --ready --status and the library send what systemd accepts: READY=1, STATUS, BARRIER=1",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-notify")),
        .timeLimit(.minutes(2))
    )
    func notifyLikeSystemdNotify() throws {
        let dir = try TempDirectory()
        let path = dir.file("n.sock")
        let receiver = try Self.startReceiver(path, count: 4, in: dir)
        defer { if receiver.process.isRunning { receiver.signal(SIGKILL) } }
        let real = try CLI.runProcess(
            ["/usr/bin/systemd-notify", "--ready", "--status=warming up"],
            in: dir,
            environment: ["NOTIFY_SOCKET": path]
        )
        #expect(real.status == 0, "\(real.error)")
        let notifier = ServiceNotifier(address: try UnixAddress(path))
        try notifier.notify(.ready, .status("warming up"))
        try notifier.barrier()  // returns once the receiver closed the pipe's write end
        #expect(receiver.wait() == 0, "\(receiver.errorText)")
        let events = Self.events(receiver)
        try #require(events.count == 4, "\(receiver.outputText)")
        for event in events { #expect((event["problems"] as? [String]) == [], "\(event)") }
        for pair in [(events[0], events[2]), (events[1], events[3])] {
            #expect(pair.0["fields"] as? [String: String] == pair.1["fields"] as? [String: String], "\(pair)")
            #expect(pair.0["fds"] as? Int == pair.1["fds"] as? Int, "\(pair)")
        }
        #expect(events[2]["fields"] as? [String: String] == ["READY": "1", "STATUS": "warming up"])
        #expect(events[3]["fields"] as? [String: String] == ["BARRIER": "1"] && events[3]["fds"] as? Int == 1)
        #expect(events[2]["pid"] as? Int == Int(getpid()), "the library's credentials name this process")
        if CLI.isRoot {
            // As root, systemd-notify sends its parent's pid (this process) as the sender.
            #expect(events[0]["pid"] as? Int == Int(getpid()), "\(events[0])")
        }
    }

    @Test("the library refuses a value with a newline, descriptors without FDSTORE=1, an unanswered BARRIER")
    func notifyRefusesBadInput() throws {
        let dir = try TempDirectory()
        let path = dir.file("n.sock")
        let notifier = ServiceNotifier(address: try UnixAddress(path), timeout: .seconds(1))
        #expect(throws: UnixSocketError.self) { try notifier.notify(.status("fine\nREADY=1")) }
        #expect(throws: UnixSocketError.self) {
            try notifier.notify(.ready, descriptors: [FileDescriptor.standardInput])
        }
        // Nobody bound there: a clear error, not a hang.
        do {
            try notifier.notify(.ready)
            Issue.record("a notification to a missing socket succeeded")
        } catch {
            #expect(error.errno == .noSuchFileOrDirectory, "\(error)")
        }
        // A receiver that keeps the pipe open: BARRIER=1 times out.
        let holder = try CLI.spawnPython(
            """
            import socket, sys, time
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1]); print('bound', flush=True)
            m, anc, _, _ = s.recvmsg(100, 64); time.sleep(30)
            """,
            [path],
            in: dir
        )
        defer {
            holder.signal(SIGKILL)
            holder.wait()
        }
        try #require(CLI.waitUntil { holder.outputText == "bound\n" })
        do {
            try notifier.barrier()
            Issue.record("BARRIER=1 returned though the pipe stayed open")
        } catch {
            #expect(error.code == .timedOut, "\(error)")
        }
    }

    @Test(
        "uds listen under NOTIFY_SOCKET: READY=1 with its status once it listens, STOPPING=1 on SIGTERM",
        .timeLimit(.minutes(2))
    )
    func listenNotifies() throws {
        let dir = try TempDirectory()
        let notify = dir.file("n.sock")
        let receiver = try Self.startReceiver(notify, count: 2, in: dir)
        defer { if receiver.process.isRunning { receiver.signal(SIGKILL) } }
        let path = dir.file("l.sock")
        let server = try Spawned(
            [try #require(CLI.executable), "listen", "-k", "--echo", path],
            directory: dir,
            environment: ["NOTIFY_SOCKET": notify]
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        #expect(CLI.waitUntil { Self.events(receiver).count == 1 }, "\(receiver.outputText) \(server.errorText)")
        let run = try CLI.python(Self.client, [path, "STREAM", "1"], in: dir)
        #expect(run.outputText == "hello 0\n")
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "\(server.errorText)")
        #expect(receiver.wait() == 0, "\(receiver.errorText)")
        let events = Self.events(receiver)
        try #require(events.count == 2, "\(receiver.outputText)")
        #expect(events[0]["fields"] as? [String: String] == ["READY": "1", "STATUS": "listening on \(path)"])
        #expect(events[1]["fields"] as? [String: String] == ["STOPPING": "1"])
        for event in events {
            #expect(event["pid"] as? Int == Int(server.pid), "\(event)")
            #expect((event["problems"] as? [String]) == [], "\(event)")
        }
    }
}
