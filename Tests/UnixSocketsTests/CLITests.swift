import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `uds` run as a real process against python3 `socket` peers, socat, nc -U and itself. Every spawned
/// process has a time limit; every test works in its own /tmp/uds-XXXXXX directory.
@Suite(.serialized)
struct CLITests {
    // MARK: conventions

    @Test("--help on the root and every subcommand prints to stdout with an example; --version")
    func helpAndVersion() throws {
        let dir = try TempDirectory()
        let root = try CLI.uds(["--help"], in: dir)
        #expect(root.status == 0)
        for name in ["listen", "connect", "send", "recv", "send-fd", "recv-fd", "bridge", "ls", "demo", "bench"] {
            #expect(root.outputText.contains(name))
        }
        for name in ["listen", "connect", "send", "recv", "send-fd", "recv-fd", "bridge", "ls", "demo"] {
            let help = try CLI.uds([name, "--help"], in: dir)
            #expect(help.status == 0, "\(name) --help")
            #expect(help.outputText.contains("Example"), "\(name) --help has an example")
            #expect(help.error.isEmpty)
        }
        let version = try CLI.uds(["--version"], in: dir)
        #expect(version.status == 0)
        #expect(!version.outputText.isEmpty)
    }

    @Test("usage errors exit 64 before any socket is made: too long, empty, bad flags")
    func usageErrors() throws {
        let dir = try TempDirectory()
        let tooLong = dir.path + "/" + String(repeating: "a", count: 120)
        for arguments in [
            ["listen", tooLong], ["connect", tooLong], ["recv", tooLong], ["listen", ""], ["send", "", "x"],
            ["send", "-t", "stream", "@x", "m"], ["send", "-t", "seqpacket", "@x", ""],
            ["listen", "--mode", "99x", dir.file("a")],
            ["listen", "--mode", "600", "@abstract"], ["listen", "-t", "bogus", dir.file("a")],
            ["recv", "--count", "0", "@x"],
            ["bridge", "tcp:nohostport", "@x"], ["bridge", "tcp::80", "@x"], ["frobnicate"],
        ] {
            let result = try CLI.uds(arguments, in: dir, seconds: 10)
            #expect(result.status == 64, "\(arguments) -> \(String(describing: result.status)) \(result.error)")
            #expect(result.output.isEmpty)
        }
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: dir.path).allSatisfy {
                $0.hasPrefix("out-") || $0.hasPrefix("err-")
            }
        )
    }

    @Test("a runtime error is one `uds: ` line and status 1")
    func runtimeError() throws {
        let dir = try TempDirectory()
        let result = try CLI.uds(["connect", dir.file("missing.sock")], in: dir)
        #expect(result.status == 1)
        #expect(CLI.isOneUDSLine(result.error))
        #expect(result.error.contains("ENOENT"))
    }

    @Test("--mode is exact whatever the umask; SIGINT while relaying ends with 0 and removes the socket file")
    func modeAndSignal() throws {
        let dir = try TempDirectory()
        let socket = dir.file("mode.sock")
        let shell = try Spawned(
            ["/bin/sh", "-c", "umask 077; exec \"$0\" listen --mode 664 \"$1\"", try #require(CLI.executable), socket],
            stdin: "pipe",
            directory: dir
        )
        #expect(CLI.waitForSocket(socket))
        var info = stat()
        #expect(lstat(socket, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o664)
        let client = try Spawned([try #require(CLI.executable), "connect", socket], stdin: "pipe", directory: dir)
        shell.write(Array("relayed\n".utf8))
        #expect(CLI.waitUntil { client.outputText == "relayed\n" })  // a connection is being relayed
        shell.signal(SIGINT)
        #expect(shell.wait() == 0)
        #expect(!CLI.exists(socket))
        #expect(client.wait() == 0)  // the server's end is the client's EOF
        client.closeInput()
        shell.closeInput()
    }

    // MARK: listen / connect, stream

    @Test("uds connect < file into uds listen > file: 8 MiB random, byte for byte, both ways; socket file removed")
    func streamAgainstItself() throws {
        let dir = try TempDirectory()
        let socket = dir.file("s.sock")
        let payload = CLI.randomBytes(8 << 20)
        let input = dir.write("in.bin", payload)
        // client -> server
        let server = try CLI.spawnUDS(["listen", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let client = try CLI.uds(["connect", socket], stdin: input, in: dir)
        #expect(client.status == 0)
        #expect(server.wait() == 0)
        #expect(server.output == payload)
        #expect(!CLI.exists(socket))
        // server -> client
        let sender = try CLI.spawnUDS(["listen", socket], stdin: input, in: dir)
        #expect(CLI.waitForSocket(socket))
        let receiver = try CLI.uds(["connect", socket], in: dir)
        #expect(receiver.status == 0)
        #expect(receiver.output == payload)
        #expect(sender.wait() == 0)
        #expect(!CLI.exists(socket))
    }

    @Test("uds connect against a python3 server, uds listen against a python3 client (half-close both ways)")
    func streamAgainstPython() throws {
        let dir = try TempDirectory()
        let socket = dir.file("py.sock")
        let payload = CLI.randomBytes(3 << 20)
        let input = dir.write("in.bin", payload)
        // python server: read to EOF, answer with the bytes reversed, close.
        let server = try CLI.spawnPython(
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
            c, _ = s.accept(); data = bytearray()
            while True:
                b = c.recv(1 << 16)
                if not b: break
                data += b
            c.sendall(bytes(reversed(data))); c.close()
            """,
            [socket],
            in: dir
        )
        #expect(CLI.waitForSocket(socket))
        let client = try CLI.uds(["connect", socket], stdin: input, in: dir)
        #expect(client.status == 0)
        #expect(client.output == Array(payload.reversed()))
        #expect(server.wait() == 0)
        try? FileManager.default.removeItem(atPath: socket)

        // python client: send, shut down writing, read the server's stdin to EOF.
        let reply = CLI.randomBytes(1 << 20)
        let replyFile = dir.write("reply.bin", reply)
        let listener = try CLI.spawnUDS(["listen", socket], stdin: replyFile, in: dir)
        #expect(CLI.waitForSocket(socket))
        let peer = try CLI.python(
            """
            import socket, sys
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
            c.sendall(open(sys.argv[2], 'rb').read()); c.shutdown(socket.SHUT_WR)
            data = bytearray()
            while True:
                b = c.recv(1 << 16)
                if not b: break
                data += b
            sys.stdout.buffer.write(data)
            """,
            [socket, input],
            in: dir
        )
        #expect(peer.status == 0)
        #expect(peer.output == reply)
        #expect(listener.wait() == 0)
        #expect(listener.output == payload)
        #expect(!CLI.exists(socket))
    }

    @Test("interoperates with socat and nc -U in both roles")
    func streamAgainstSocatAndNetcat() throws {
        let dir = try TempDirectory()
        let payload = CLI.randomBytes(2 << 20)
        let input = dir.write("in.bin", payload)
        if let socat = CLI.which("socat") {
            let socket = dir.file("socat1.sock")
            let server = try CLI.spawnUDS(["listen", socket], in: dir)
            #expect(CLI.waitForSocket(socket))
            let sent = try CLI.runProcess([socat, "-u", "STDIN", "UNIX-CONNECT:" + socket], stdin: input, in: dir)
            #expect(sent.status == 0)
            #expect(server.wait() == 0)
            #expect(server.output == payload)

            let socket2 = dir.file("socat2.sock")
            let socatServer = try Spawned([socat, "-u", "UNIX-LISTEN:" + socket2, "STDOUT"], directory: dir)
            #expect(CLI.waitForSocket(socket2))
            let client = try CLI.uds(["connect", socket2], stdin: input, in: dir)
            #expect(client.status == 0)
            #expect(socatServer.wait() == 0)
            #expect(socatServer.output == payload)
        } else {
            Issue.record("socat is not installed (apt-get install -y socat)")
        }
        if let nc = CLI.which("nc") {
            let socket = dir.file("nc1.sock")
            let server = try CLI.spawnUDS(["listen", socket], in: dir)
            #expect(CLI.waitForSocket(socket))
            let sent = try CLI.runProcess([nc, "-U", "-N", socket], stdin: input, in: dir)
            #expect(sent.status == 0)
            #expect(server.wait() == 0)
            #expect(server.output == payload)

            let socket2 = dir.file("nc2.sock")
            let ncServer = try Spawned([nc, "-lU", socket2], directory: dir)
            #expect(CLI.waitForSocket(socket2))
            let client = try CLI.uds(["connect", socket2], stdin: input, in: dir)
            #expect(client.status == 0)
            #expect(ncServer.wait() == 0)
            #expect(ncServer.output == payload)
        } else {
            Issue.record("nc is not installed (apt-get install -y netcat-openbsd)")
        }
    }

    @Test("listen -k --echo serves 40 concurrent clients byte for byte; SIGTERM ends it with 0 and removes the file")
    func keepOpenEchoConcurrent() throws {
        let dir = try TempDirectory()
        let socket = dir.file("echo.sock")
        let server = try CLI.spawnUDS(["listen", "-k", "--echo", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let clients = try CLI.python(
            """
            import os, socket, sys, threading
            path, n = sys.argv[1], 40
            conns = []
            for i in range(n):   # all connected at once before any data: served concurrently or not at all
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(path); conns.append(c)
            bad = []
            def run(c, i):
                data = os.urandom(100000 + i)
                t = threading.Thread(target=c.sendall, args=(data,)); t.start()
                got = bytearray()
                while len(got) < len(data):
                    b = c.recv(65536)
                    if not b: break
                    got += b
                t.join(); c.shutdown(socket.SHUT_WR)
                if c.recv(1) != b'' or bytes(got) != data: bad.append(i)
                c.close()
            threads = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(conns)]
            for t in threads: t.start()
            for t in threads: t.join()
            print('bad', bad) if bad else print('ok')
            """,
            [socket],
            in: dir,
            seconds: 60
        )
        #expect(clients.outputText == "ok\n", "\(clients.outputText) \(clients.error)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0)
        #expect(!CLI.exists(socket))
        #expect(server.output.isEmpty)  // --echo prints nothing
    }

    @Test("a second listen on a live socket fails clearly; the first keeps serving")
    func secondListenOnLiveSocket() throws {
        let dir = try TempDirectory()
        let socket = dir.file("live.sock")
        let first = try CLI.spawnUDS(["listen", "-k", "--echo", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let second = try CLI.uds(["listen", socket], in: dir, seconds: 10)
        #expect(second.status == 1)
        #expect(CLI.isOneUDSLine(second.error))
        #expect(second.error.contains("already in use"))
        let probe = try CLI.python(
            """
            import socket, sys
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
            c.sendall(b'still here'); c.shutdown(socket.SHUT_WR); print(c.recv(100).decode())
            """,
            [socket],
            in: dir
        )
        #expect(probe.outputText == "still here\n")
        first.signal(SIGINT)
        #expect(first.wait() == 0)
        #expect(!CLI.exists(socket))
    }

    @Test("a regular file at the path: error, file untouched; a stale socket file: recovered")
    func regularFileAndStaleSocket() throws {
        let dir = try TempDirectory()
        let path = dir.write("not-a-socket", Array("precious".utf8))
        let result = try CLI.uds(["listen", path], in: dir, seconds: 10)
        #expect(result.status == 1)
        #expect(CLI.isOneUDSLine(result.error))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == Data("precious".utf8))

        let stale = dir.file("stale.sock")
        let made = try CLI.python(
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
            """,
            [stale],
            in: dir
        )  // exits without unlinking: a stale socket file
        #expect(made.status == 0)
        #expect(CLI.exists(stale))
        let server = try CLI.spawnUDS(["listen", stale], in: dir)
        let payload = CLI.randomBytes(4096)
        let input = dir.write("in.bin", payload)
        #expect(CLI.waitUntil { (try? CLI.uds(["connect", stale], stdin: input, in: dir, seconds: 10).status) == 0 })
        #expect(server.wait() == 0)
        #expect(server.output == payload)
        #expect(!CLI.exists(stale))
    }

    @Test("a peer that closes early: no SIGPIPE death; a stdout reader that goes away: quiet exit 0")
    func peerClosesEarly() throws {
        let dir = try TempDirectory()
        let socket = dir.file("early.sock")
        let input = dir.write("big.bin", CLI.randomBytes(32 << 20))
        let server = try CLI.spawnPython(
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
            c, _ = s.accept(); c.recv(10); c.close()
            """,
            [socket],
            in: dir
        )
        #expect(CLI.waitForSocket(socket))
        let client = try CLI.uds(["connect", socket], stdin: input, in: dir)
        #expect(client.status == 0 || client.status == 1, "ended by \(String(describing: client.status))")
        if client.status == 1 { #expect(CLI.isOneUDSLine(client.error)) }
        server.wait()

        // uds connect | head -c 10: the server streams 32 MiB; the reader leaves after 10 bytes.
        let socket3 = dir.file("head3.sock")
        let sender3 = try CLI.spawnUDS(["listen", socket3], stdin: input, in: dir)
        #expect(CLI.waitForSocket(socket3))
        let status = try CLI.runProcess(
            [
                "/bin/bash", "-c", "\"$0\" connect \"$1\" < /dev/null | head -c 10 > /dev/null; echo ${PIPESTATUS[0]}",
                try #require(CLI.executable), socket3,
            ],
            in: dir
        )
        #expect(status.outputText == "0\n", "uds connect | head -c 10 exited \(status.outputText)")
        // The listener's peer went away while it was sending: status 0 or 1, never a signal.
        let end = sender3.wait()
        #expect(end == 0 || end == 1)
        #expect(!sender3.terminatedBySignal)
    }

    @Test("--allow-uid refuses a client running as nobody before reading a byte and keeps waiting")
    func allowUIDAgainstNobody() throws {
        guard CLI.isRoot, let setpriv = CLI.which("setpriv") else {
            print("skipped: --allow-uid against another user needs root and setpriv")
            return
        }
        let dir = try TempDirectory(worldReadable: true)
        let socket = dir.file("guarded.sock")
        let server = try CLI.spawnUDS(["listen", "--allow-uid", "0", "-v", "--mode", "666", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let nobody = try CLI.runProcess(
            [
                setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", CLI.python, "-c",
                """
                import socket, sys, os
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
                try:
                    c.sendall(b'from nobody'); c.shutdown(socket.SHUT_WR)
                    print('eof' if c.recv(10) == b'' else 'data', os.getuid())
                except OSError as e:
                    print('reset', os.getuid())
                """, socket,
            ],
            in: dir
        )
        #expect(nobody.status == 0, "\(nobody.error)")
        #expect(nobody.outputText.hasSuffix(" 65534\n"))
        let root = try CLI.python(
            """
            import socket, sys
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
            c.sendall(b'from root'); c.shutdown(socket.SHUT_WR); c.recv(10)
            """,
            [socket],
            in: dir
        )
        #expect(root.status == 0)
        #expect(server.wait() == 0)
        #expect(server.outputText == "from root")  // nothing of the refused peer was read
        #expect(server.errorText.contains("uds: refused peer"))
        #expect(server.errorText.contains("uid=65534"))
        #expect(server.errorText.contains("uds: peer pid="))
        #expect(!CLI.exists(socket))
    }

    // MARK: messages

    @Test("dgram: send and recv --count, listen -t dgram --lines until SIGINT, --echo back to the sender")
    func datagrams() throws {
        let dir = try TempDirectory()
        let socket = dir.file("d.sock")
        let receiver = try CLI.spawnUDS(["recv", "--count", "3", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let sent = try CLI.uds(["send", socket, "one", "", "three\r\u{1}"], in: dir)
        #expect(sent.status == 0)
        #expect(receiver.wait() == 0)
        #expect(receiver.outputText == "one\n\nthree\r\u{1}\n")
        #expect(!CLI.exists(socket))

        let printer = try CLI.spawnUDS(["listen", "-t", "dgram", "--lines", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let fromPython = try CLI.python(
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            for m in [b'alpha', b'', b'gamma']: s.sendto(m, sys.argv[1])
            """,
            [socket],
            in: dir
        )
        #expect(fromPython.status == 0)
        #expect(CLI.waitUntil { printer.outputText == "alpha\n\ngamma\n" })
        printer.signal(SIGINT)
        #expect(printer.wait() == 0)
        #expect(!CLI.exists(socket))

        let name = "@uds-cli-test-\(getpid())-echo"
        let echo = try CLI.spawnUDS(["listen", "-t", "dgram", "--echo", name], in: dir)
        let lines = dir.write("lines.txt", Array("p1\np2\n".utf8))
        #expect(
            CLI.waitUntil {
                let reply = try? CLI.uds(["connect", "-t", "dgram", "--lines", "-w", "1", name], stdin: lines, in: dir)
                return reply?.status == 0 && reply?.outputText == "p1\np2\n"
            }
        )
        echo.signal(SIGTERM)
        #expect(echo.wait() == 0)
        #expect(echo.output.isEmpty)
    }

    @Test("seqpacket: connect --lines against a python3 server; send -t seqpacket to listen -t seqpacket")
    func seqPackets() throws {
        let dir = try TempDirectory()
        let socket = dir.file("sp.sock")
        let server = try CLI.spawnPython(
            """
            import socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1]); s.listen(1)
            c, _ = s.accept(); seen = []
            while True:
                m = c.recv(65536)
                if not m: break
                seen.append(m); c.send(b'ok:' + m)
            c.close(); print(seen)
            """,
            [socket],
            in: dir
        )
        #expect(CLI.waitForSocket(socket))
        let input = dir.write("in.txt", Array("a\n\nb b\n".utf8))
        let client = try CLI.uds(["connect", "-t", "seqpacket", "--lines", socket], stdin: input, in: dir)
        #expect(client.status == 0)
        #expect(client.outputText == "ok:a\nok:b b\n")
        #expect(server.wait() == 0)
        #expect(server.outputText == "[b'a', b'b b']\n")  // the empty line was skipped, boundaries kept
        try? FileManager.default.removeItem(atPath: socket)

        let listener = try CLI.spawnUDS(["listen", "-t", "seqpacket", "--lines", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let sent = try CLI.uds(["send", "-t", "seqpacket", socket, "first", "second"], in: dir)
        #expect(sent.status == 0)
        #expect(listener.wait() == 0)
        #expect(listener.outputText == "first\nsecond\n")
    }

    // MARK: descriptors

    @Test("send-fd to recv-fd: the content of each file, in order, and '-' for stdin; python3 send_fds too")
    func descriptors() throws {
        let dir = try TempDirectory()
        let socket = dir.file("fd.sock")
        let first = CLI.randomBytes(300_000)
        let second = Array("second file\n".utf8)
        let firstPath = dir.write("first.bin", first)
        let secondPath = dir.write("second.txt", second)
        chmod(secondPath, 0)  // the receiver reads it through the descriptor, not the path
        let stdinContent = Array("from stdin\n".utf8)
        let stdinPath = dir.write("stdin.txt", stdinContent)
        for type in ["stream", "seqpacket"] {
            let receiver = try CLI.spawnUDS(["recv-fd", "-t", type, socket], in: dir)
            #expect(CLI.waitForSocket(socket))
            let sender = try CLI.uds(
                ["send-fd", "-t", type, socket, firstPath, secondPath, "-"],
                stdin: stdinPath,
                in: dir
            )
            #expect(sender.status == 0, "\(sender.error)")
            #expect(receiver.wait() == 0)
            #expect(receiver.output == first + second + stdinContent)
            #expect(!CLI.exists(socket))
        }
        let counted = try CLI.spawnUDS(["recv-fd", "--count", "1", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let python = try CLI.python(
            """
            import socket, sys, os, time
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
            socket.send_fds(c, [b'x\\n'], [os.open(sys.argv[2], os.O_RDONLY)])
            time.sleep(0.2)
            """,
            [socket, secondPath],
            in: dir
        )
        #expect(python.status == 0)
        #expect(counted.wait() == 0)
        #expect(counted.output == second)
    }

    // MARK: bridge, ls, demo

    @Test("bridge: TCP -> Unix and Unix -> TCP, both ways with half-close")
    func bridge() throws {
        let dir = try TempDirectory()
        let socket = dir.file("svc.sock")
        let service = try CLI.spawnUDS(["listen", "-k", "--echo", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let tcpSide = try CLI.spawnUDS(["bridge", "tcp:127.0.0.1:0", "unix:" + socket], in: dir)
        let port = CLI.listeningPort(of: tcpSide)
        #expect(port > 0)
        let payload = CLI.randomBytes(1 << 20)
        let input = dir.write("in.bin", payload)
        let viaTCP = try CLI.python(
            """
            import socket, sys, threading
            c = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
            data = open(sys.argv[2], 'rb').read()
            def send(): c.sendall(data); c.shutdown(socket.SHUT_WR)
            t = threading.Thread(target=send); t.start()
            got = bytearray()
            while True:
                b = c.recv(65536)
                if not b: break
                got += b
            t.join(); print('ok' if bytes(got) == data else 'mismatch %d' % len(got))
            """,
            [String(port), input],
            in: dir
        )
        #expect(viaTCP.outputText == "ok\n", "\(viaTCP.error)")

        // Unix -> TCP: a bridge socket in front of the TCP side of the first bridge.
        let front = dir.file("front.sock")
        let unixSide = try CLI.spawnUDS(["bridge", front, "tcp:127.0.0.1:\(port)"], in: dir)
        #expect(CLI.waitForSocket(front))
        let client = try CLI.uds(["connect", front], stdin: input, in: dir)
        #expect(client.status == 0)
        #expect(client.output == payload)
        for process in [unixSide, tcpSide, service] {
            process.signal(SIGTERM)
            #expect(process.wait() == 0)
        }
        #expect(!CLI.exists(front))
        #expect(!CLI.exists(socket))
    }

    @Test("ls --json lists a listening uds with its pid and command; keys exactly as documented")
    func ls() throws {
        let dir = try TempDirectory()
        let socket = dir.file("seen.sock")
        let server = try CLI.spawnUDS(["listen", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let name = "@uds-cli-ls-\(getpid())\\x00end"
        let abstract = try CLI.spawnUDS(["listen", "-t", "seqpacket", name], in: dir)
        var entries: [[String: Any]] = []
        #expect(
            CLI.waitUntil(seconds: 90) {
                guard let listing = try? CLI.uds(["ls", "--json"], in: dir), listing.status == 0,
                    let parsed = try? JSONSerialization.jsonObject(with: Data(listing.output)) as? [[String: Any]]
                else { return false }
                entries = parsed
                return parsed.contains { $0["address"] as? String == name }
            }
        )
        #expect(!entries.isEmpty)
        for entry in entries {
            #expect(Set(entry.keys) == ["address", "type", "state", "inode", "peer_inode", "pid", "command"])
        }
        // A listener binds its file's name inside the directory it checked (so no directory swap can
        // redirect it): the kernel records that name, which is what ls (and ss -x) show.
        let mine = try #require(entries.first { $0["address"] as? String == "seen.sock" })
        #expect(mine["type"] as? String == "stream")
        #expect(mine["state"] as? String == "listening")
        #expect((mine["pid"] as? NSNumber)?.int32Value == server.pid)
        #expect(mine["command"] as? String == "uds")
        let named = try #require(entries.first { $0["address"] as? String == name })
        #expect(named["type"] as? String == "seqpacket")
        let table = try CLI.uds(["ls"], in: dir)
        #expect(table.status == 0)
        #expect(table.outputText.contains("seen.sock"))
        for process in [server, abstract] {
            process.signal(SIGINT)
            #expect(process.wait() == 0)
        }
        #expect(!CLI.exists(socket))
    }

    @Test("uds demo runs, honours TMPDIR and leaves nothing behind")
    func demo() throws {
        let dir = try TempDirectory(worldReadable: true)
        let result = try CLI.uds(["demo"], in: dir, seconds: 60, environment: ["TMPDIR": dir.path])
        #expect(result.status == 0, "\(result.error)")
        #expect(result.outputText.contains("SCM_RIGHTS"))
        #expect(result.outputText.contains("SO_PEERCRED"))
        #expect(result.outputText.contains(dir.path))
        let left = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter {
            !$0.hasPrefix("out-") && !$0.hasPrefix("err-")
        }
        #expect(left.isEmpty, "left behind: \(left)")
    }
}
