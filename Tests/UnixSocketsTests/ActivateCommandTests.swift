import Foundation
import SystemPackage
import Testing
import UnixSockets

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12, the rest: `uds activate` starting a consumer written with python3-systemd (libsystemd's own
/// `listen_fds_with_names`), `systemd-socket-activate` starting `uds recv` and a `UnixServer` program
/// (Examples/echo-service) that notifies READY=1 / STOPPING=1 and shuts down through a ServiceGroup.
@Suite("uds activate, uds recv under systemd-socket-activate, a UnixServer service")
struct ActivateCommandTests {
    static var haveSystemdPython: Bool {
        let check = try? CLI.runProcess([CLI.python, "-c", "import systemd.daemon"], in: try TempDirectory())
        return check?.status == 0
    }
    static var haveActivate: Bool { FileManager.default.isExecutableFile(atPath: ActivationTests.activate) }

    /// A consumer written with python3-systemd: prints one JSON line with what libsystemd's
    /// listen_fds_with_names() found and what each descriptor is, its environment and signal state; then,
    /// for a connection (Accept=yes), echoes what it reads until EOF; then exits with status argv[1].
    static let consumer = """
        import json, os, signal, socket, sys
        from systemd import daemon
        passed = range(3, 3 + int(os.environ.get('LISTEN_FDS', '0')))
        inheritable = {fd: os.get_inheritable(fd) for fd in passed}  # before libsystemd marks them CLOEXEC
        fds = daemon.listen_fds_with_names(unset_environment=False)
        info = {'fds': {str(k): v for k, v in fds.items()}, 'pid': os.getpid(),
                'listen_pid': os.environ.get('LISTEN_PID'), 'listen_fds': os.environ.get('LISTEN_FDS'),
                'extra': os.environ.get('UDS_EXTRA'), 'kept': os.environ.get('UDS_KEPT'),
                'sockets': []}
        for fd in fds:
            s = socket.socket(fileno=os.dup(fd))
            name = s.getsockname()
            info['sockets'].append({'fd': fd, 'type': int(s.type), 'inheritable': inheritable.get(fd),
                                    'listening': s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                                    'name': name if isinstance(name, str) else '@' + name[1:].decode()})
            s.close()
        print(json.dumps(info), flush=True)
        if 'connection' in fds.values():
            c = socket.socket(fileno=3)
            while True:
                b = c.recv(100)
                if not b: break
                c.sendall(b)
            c.close()
        if len(sys.argv) > 2:
            open(sys.argv[2], 'w').write('waiting')
            signal.signal(signal.SIGTERM, lambda *_: (open(sys.argv[2], 'w').write('term'), sys.exit(0)))
            signal.pause()
        sys.exit(int(sys.argv[1]))
        """

    static func report(_ text: String) -> [String: Any]? {
        guard let line = text.split(separator: "\n").first else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
    }

    /// A file holding `text`, for a command's stdin.
    static func input(_ text: String, in dir: TempDirectory) throws -> String {
        let path = dir.file("stdin-\(UUID().uuidString.prefix(8))")
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    @Test(
        "uds activate: two named sockets reach a python3-systemd consumer as fds 3 and 4, LISTEN_PID its own pid",
        .enabled(if: haveSystemdPython),
        .timeLimit(.minutes(2))
    )
    func consumerSeesNamedSockets() throws {
        let dir = try TempDirectory()
        let path = dir.file("web.sock")
        let abstract = "@uds-activate-\(getpid())"
        let run = try CLI.runProcess(
            [
                try #require(CLI.executable), "activate", "-l", path, "-l", abstract, "--fdname", "web", "--fdname",
                "admin", "-E", "UDS_EXTRA=given", "-E", "UDS_KEPT", "--", CLI.python, "-c", Self.consumer, "3",
            ],
            in: dir,
            environment: ["UDS_KEPT": "inherited", "LISTEN_FDNAMES": "stale", "LISTEN_FDS": "7"]
        )
        #expect(run.status == 3, "uds activate exits with the command's status: \(run.error)")
        let info = try #require(Self.report(run.outputText), "\(run.outputText) \(run.error)")
        #expect(info["fds"] as? [String: String] == ["3": "web", "4": "admin"], "\(info)")
        #expect(info["listen_pid"] as? String == "\(info["pid"] as? Int ?? -1)", "\(info)")
        #expect(info["listen_fds"] as? String == "2", "our own LISTEN_* never pass: \(info)")
        #expect(info["extra"] as? String == "given" && info["kept"] as? String == "inherited", "\(info)")
        let sockets = try #require(info["sockets"] as? [[String: Any]])
        try #require(sockets.count == 2)
        #expect(sockets[0]["name"] as? String == path && sockets[1]["name"] as? String == abstract, "\(sockets)")
        for socket in sockets {
            #expect(socket["type"] as? Int == 1 && socket["listening"] as? Int == 1, "\(socket)")
            #expect(socket["inheritable"] as? Bool == true, "fds 3 and 4 are not close-on-exec: \(socket)")
        }
        #expect(!Self.exists(path), "uds activate removes the socket file it made when it ends")
    }

    @Test(
        "uds activate: the command starts with nothing blocked and nothing ignored, though uds ignores SIGPIPE",
        .timeLimit(.minutes(2))
    )
    func defaultSignalState() throws {
        let dir = try TempDirectory()
        let run = try CLI.runProcess(
            [
                try #require(CLI.executable), "activate", "-l", dir.file("s.sock"), "--", "grep", "^Sig",
                "/proc/self/status",
            ],
            in: dir
        )
        #expect(run.status == 0, "\(run.error)")
        let fields = Dictionary(
            run.outputText.split(separator: "\n").map { line in
                let parts = line.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                return (parts[0], parts.count > 1 ? parts[1] : "")
            },
            uniquingKeysWith: { $1 }
        )
        #expect(fields["SigBlk"] == "0000000000000000", "an empty signal mask: \(run.outputText)")
        #expect(fields["SigIgn"] == "0000000000000000", "default dispositions: \(run.outputText)")
    }

    @Test(
        "uds activate -t seqpacket: one --fdname names every socket; names must match -l; dgram --accept refused",
        .enabled(if: haveSystemdPython),
        .timeLimit(.minutes(2))
    )
    func namesAndUsage() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let run = try CLI.runProcess(
            [
                uds, "activate", "-t", "seqpacket", "-l", dir.file("a.sock"), "-l", dir.file("b.sock"), "--fdname",
                "both", "--", CLI.python, "-c", Self.consumer, "0",
            ],
            in: dir
        )
        #expect(run.status == 0, "\(run.error)")
        let info = try #require(Self.report(run.outputText), "\(run.error)")
        #expect(info["fds"] as? [String: String] == ["3": "both", "4": "both"], "\(info)")
        let types = (info["sockets"] as? [[String: Any]])?.compactMap { $0["type"] as? Int }
        #expect(types == [5, 5], "SOCK_SEQPACKET both: \(info)")
        for arguments in [
            ["-l", dir.file("c.sock"), "-l", dir.file("d.sock"), "--fdname", "x", "--fdname", "y", "--fdname", "z"],
            ["-t", "dgram", "--accept", "-l", dir.file("e.sock")],
            ["-l", dir.file("f.sock"), "--fdname", "has:colon:three"],
            ["-l", dir.file("g.sock")],  // no COMMAND
        ] {
            let refused = try CLI.runProcess(
                [uds, "activate"] + arguments + (arguments.count == 2 ? [] : ["true"]),
                in: dir
            )
            #expect(refused.status == 64, "\(arguments): \(refused.error)")
        }
        #expect(!Self.exists(dir.file("c.sock")) && !Self.exists(dir.file("e.sock")), "nothing bound on a usage error")
    }

    @Test(
        "uds activate --accept: one command per connection, fd 3 named connection, several at once; SIGTERM reaches them",
        .enabled(if: haveSystemdPython),
        .timeLimit(.minutes(2))
    )
    func acceptPerConnection() throws {
        let dir = try TempDirectory()
        let path = dir.file("i.sock")
        let marker = dir.file("child-state")
        let server = try Spawned(
            [
                try #require(CLI.executable), "activate", "--accept", "-l", path, "--", CLI.python, "-c",
                Self.consumer, "0", marker,
            ],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        try #require(CLI.waitForSocket(path), "\(server.errorText)")
        let run = try CLI.python(ActivationTests.client, [path, "STREAM", "2"], in: dir)
        #expect(run.outputText == "hello 0\nhello 1\n", "\(run.error) \(server.errorText)")
        let reports = server.outputText.split(separator: "\n").compactMap { Self.report(String($0)) }
        #expect(reports.count == 2, "\(server.outputText)")
        for info in reports {
            #expect(info["fds"] as? [String: String] == ["3": "connection"], "\(info)")
            let socket = (info["sockets"] as? [[String: Any]])?.first
            #expect(socket?["listening"] as? Int == 0 && socket?["name"] as? String == path, "\(info)")
        }
        // The commands now wait for a signal; SIGTERM to uds activate reaches both, and it ends after them.
        #expect(CLI.waitUntil { (try? String(contentsOfFile: marker, encoding: .utf8)) == "waiting" })
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "\(server.errorText)")
        #expect((try? String(contentsOfFile: marker, encoding: .utf8)) == "term", "the command got SIGTERM")
        #expect(!Self.exists(path))
    }

    @Test(
        "uds activate -- uds listen -k --echo: served, SIGTERM forwarded, status and files as a parent should",
        .timeLimit(.minutes(2))
    )
    func parentOfListen() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let path = dir.file("e.sock")
        let server = try Spawned([uds, "activate", "-l", path, "--", uds, "listen", "-k", "--echo"], directory: dir)
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        try #require(CLI.waitForSocket(path), "\(server.errorText)")
        let run = try CLI.runProcess(
            [uds, "connect", path],
            stdin: try Self.input("through activate\n", in: dir),
            in: dir
        )
        #expect(run.outputText == "through activate\n", "\(run.error) \(server.errorText)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "uds listen ended 0 on the forwarded SIGTERM: \(server.errorText)")
        #expect(!Self.exists(path))
        // The command's status, 128 + N for a signal, 127 not found, 126 not executable.
        for (command, status) in [
            (["sh", "-c", "exit 7"], Int32(7)), (["sh", "-c", "kill -9 $$"], 137), (["no-such-command-here"], 127),
            (["/etc/hostname"], 126),
        ] {
            let ended = try CLI.runProcess([uds, "activate", "-l", dir.file("s.sock"), "--"] + command, in: dir)
            #expect(ended.status == status, "\(command): \(ended.error)")
            #expect(!Self.exists(dir.file("s.sock")))
        }
    }

    @Test(
        "uds activate keeps the socket-file rules: a regular file or a live server at -l is left as it was",
        .timeLimit(.minutes(2))
    )
    func safeSocketFiles() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let file = dir.file("data")
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: file))
        let onFile = try CLI.runProcess([uds, "activate", "-l", file, "--", "true"], in: dir)
        #expect(onFile.status == 1 && onFile.error.contains("not a socket"), "\(onFile.error)")
        #expect((try? String(contentsOfFile: file, encoding: .utf8)) == "keep me")
        let live = dir.file("live.sock")
        let server = try CLI.spawnUDS(["listen", "-k", "--echo", live], in: dir)
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        try #require(CLI.waitForSocket(live))
        let onLive = try CLI.runProcess([uds, "activate", "-l", live, "--", "true"], in: dir)
        #expect(onLive.status == 1 && onLive.error.contains("in use"), "\(onLive.error)")
        let still = try CLI.runProcess(
            [uds, "connect", live],
            stdin: try Self.input("still served\n", in: dir),
            in: dir
        )
        #expect(still.outputText == "still served\n", "the live server's socket is untouched: \(still.error)")
        server.signal(SIGTERM)
        _ = server.wait()
    }

    // MARK: uds recv under systemd-socket-activate

    @Test(
        "systemd-socket-activate --datagram --fdname: uds recv takes the passed socket, its type and no ADDRESS",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func recvDatagram() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let path = dir.file("d.sock")
        let server = try Spawned(
            [ActivationTests.activate, "--datagram", "--fdname=logs", "-l", path, uds, "recv", "--count", "2"],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        try #require(CLI.waitForSocket(path))
        for message in ["one", "two"] {
            let sent = try CLI.runProcess([uds, "send", path, message], in: dir)
            #expect(sent.status == 0, "\(sent.error)")
        }
        #expect(server.wait() == 0, "\(server.errorText)")
        #expect(server.outputText == "one\ntwo\n", "\(server.errorText)")
        #expect(Self.exists(path), "the activated socket's file belongs to systemd-socket-activate")
    }

    @Test(
        "systemd-socket-activate --seqpacket, and --seqpacket --accept: uds recv serves the listener or the one peer",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func recvSeqPacket() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        for accept in [false, true] {
            let path = dir.file(accept ? "a.sock" : "q.sock")
            let server = try Spawned(
                [ActivationTests.activate, "--seqpacket"] + (accept ? ["--accept"] : []) + [
                    "-l", path, uds, "recv", "--count", "2",
                ],
                directory: dir
            )
            defer { if server.process.isRunning { server.signal(SIGKILL) } }
            try #require(CLI.waitForSocket(path))
            let sent = try CLI.runProcess(
                [uds, "connect", "-t", "seqpacket", "--lines", path],
                stdin: try Self.input("first\nsecond\n", in: dir),
                in: dir
            )
            #expect(sent.status == 0, "\(sent.error)")
            // With --accept, the connection's uds recv prints to systemd-socket-activate's own stdout.
            #expect(
                CLI.waitUntil { server.outputText == "first\nsecond\n" },
                "\(server.outputText) \(server.errorText)"
            )
            if !accept { #expect(server.wait() == 0, "\(server.errorText)") }
            server.signal(SIGTERM)
            _ = server.wait()
        }
    }

    @Test("recv and proxy: an ADDRESS that is not the activated socket's is a usage error showing both")
    func addressMustMatch() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let activated = dir.file("act.sock")
        for command in [["recv", dir.file("other.sock")], ["proxy", dir.file("other.sock"), dir.file("target.sock")]] {
            let run = try CLI.runProcess(
                [uds, "activate", "-t", command[0] == "recv" ? "dgram" : "stream", "-l", activated, "--", uds]
                    + command,
                in: dir
            )
            #expect(run.status == 64, "\(command): \(run.error)")
            #expect(run.error.contains(dir.file("other.sock")) && run.error.contains(activated), "\(run.error)")
        }
    }

    // MARK: a UnixServer program

    static var echoService: String? {
        guard let uds = CLI.executable else { return nil }
        let path = URL(fileURLWithPath: uds).deletingLastPathComponent().appendingPathComponent("echo-service").path
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }

    static let framedClient = """
        import socket, struct, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(30); s.connect(sys.argv[1])
        for text in sys.argv[2:]:
            s.sendall(struct.pack('>I', len(text)) + text.encode())
            head = b''
            while len(head) < 4: head += s.recv(4 - len(head))
            body = b''
            while len(body) < struct.unpack('>I', head)[0]: body += s.recv(100)
            print(body.decode(), flush=True)
        """

    @Test(
        "systemd-socket-activate starts a UnixServer program: READY=1 from its pid, framed echo, SIGTERM: STOPPING=1, 0",
        .enabled(if: haveActivate),
        .timeLimit(.minutes(2))
    )
    func unixServerService() throws {
        let dir = try TempDirectory()
        let service = try #require(Self.echoService, "echo-service is built beside uds")
        let path = dir.file("svc.sock")
        let notify = dir.file("n.sock")
        let receiver = try ActivationTests.startReceiver(notify, count: 2, in: dir)
        defer { if receiver.process.isRunning { receiver.signal(SIGKILL) } }
        let server = try Spawned(
            [ActivationTests.activate, "-E", "NOTIFY_SOCKET=\(notify)", "-l", path, service],
            directory: dir
        )
        defer { if server.process.isRunning { server.signal(SIGKILL) } }
        try #require(CLI.waitForSocket(path))
        let run = try CLI.python(Self.framedClient, [path, "framed", "twice"], in: dir)
        #expect(run.outputText == "framed\ntwice\n", "\(run.error) \(server.errorText)")
        #expect(CLI.waitUntil { ActivationTests.events(receiver).count == 1 }, "\(receiver.outputText)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0, "a graceful shutdown ends 0: \(server.errorText)")
        #expect(receiver.wait() == 0, "\(receiver.errorText)")
        let events = ActivationTests.events(receiver)
        try #require(events.count == 2, "\(receiver.outputText)")
        for event in events { #expect((event["problems"] as? [String]) == [], "\(event)") }
        #expect((events[0]["fields"] as? [String: String])?["READY"] == "1", "\(events[0])")
        #expect(events[0]["pid"] as? Int == Int(server.pid), "READY=1 comes from the service itself")
        #expect(events[1]["fields"] as? [String: String] == ["STOPPING": "1"], "\(events[1])")
        #expect(Self.exists(path), "an activated listener never unlinks its path")
    }

    @Test(
        "the UnixServer program pings the watchdog (WATCHDOG_USEC) only when WATCHDOG_PID is unset or its own",
        .enabled(if: haveSystemdPython),
        .timeLimit(.minutes(2))
    )
    func watchdogPings() throws {
        let dir = try TempDirectory()
        let uds = try #require(CLI.executable)
        let service = try #require(Self.echoService)
        for (pidValue, expectPings) in [(nil as String?, true), ("1", false)] {
            let notify = dir.file("w\(expectPings).sock")
            let receiver = try ActivationTests.startReceiver(notify, count: expectPings ? 4 : 2, in: dir)
            defer { if receiver.process.isRunning { receiver.signal(SIGKILL) } }
            var environment = ["NOTIFY_SOCKET": notify, "WATCHDOG_USEC": "100000"]
            if let pidValue { environment["WATCHDOG_PID"] = pidValue }
            let path = dir.file("s\(expectPings).sock")
            let server = try Spawned(
                [uds, "activate", "-l", path, "--", service],
                directory: dir,
                environment: environment
            )
            defer { if server.process.isRunning { server.signal(SIGKILL) } }
            try #require(CLI.waitUntil { ActivationTests.events(receiver).count >= (expectPings ? 3 : 1) })
            server.signal(SIGTERM)
            #expect(server.wait() == 0, "\(server.errorText)")
            #expect(receiver.wait() == 0, "\(receiver.errorText)")
            let fields = ActivationTests.events(receiver).compactMap { $0["fields"] as? [String: String] }
            let pings = fields.filter { $0 == ["WATCHDOG": "1"] }.count
            if expectPings {
                #expect(pings >= 2, "\(fields)")
            } else {
                #expect(pings == 0 && fields.last == ["STOPPING": "1"], "another process's watchdog: \(fields)")
            }
        }
    }
}
