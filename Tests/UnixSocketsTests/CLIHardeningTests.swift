import Foundation
import Testing
import UnixSockets

#if canImport(Glibc)
import Glibc
#endif

/// The red-team findings of issue 8 against `uds`, each reproduced on real processes and sockets.
@Suite(.serialized)
struct CLIHardeningTests {
    // MARK: 1. exit cleanup never deletes by path

    @Test("listen's exit never deletes by path: a directory or a regular file put at the path survives SIGTERM and EOF")
    func exitLeavesForeignFilesAlone() throws {
        let dir = try TempDirectory()
        for kind in ["directory", "file"] {
            for ending in ["SIGTERM", "peer EOF"] {
                let socket = dir.file("\(kind)-\(ending == "SIGTERM" ? "term" : "eof").sock")
                let server = try CLI.spawnUDS(["listen", socket], in: dir)
                #expect(CLI.waitForSocket(socket))
                var client: Spawned?
                if ending == "peer EOF" {
                    // Connected before the swap, so the listener is relaying when the path changes.
                    let peer = try Spawned(
                        [
                            CLI.python, "-c",
                            """
                            import socket, sys
                            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(sys.argv[1])
                            print('connected', flush=True); sys.stdin.readline()
                            c.sendall(b'bye'); c.close()
                            """, socket,
                        ],
                        stdin: "pipe",
                        directory: dir
                    )
                    #expect(CLI.waitUntil { peer.outputText == "connected\n" })
                    client = peer
                }
                #expect(unlink(socket) == 0)
                if kind == "directory" {
                    #expect(mkdir(socket, 0o755) == 0)
                    _ = dir.write((socket as NSString).lastPathComponent + "/keep", Array("kept".utf8))
                } else {
                    _ = dir.write((socket as NSString).lastPathComponent, Array("precious".utf8))
                }
                if let client {
                    client.write(Array("go\n".utf8))
                    client.closeInput()
                    #expect(client.wait() == 0)
                } else {
                    server.signal(SIGTERM)
                }
                #expect(server.wait() == 0, "\(kind), \(ending): \(server.errorText)")
                if kind == "directory" {
                    #expect(
                        (try? String(contentsOfFile: socket + "/keep", encoding: .utf8)) == "kept",
                        "the directory put at the path was deleted (\(ending))"
                    )
                } else {
                    #expect(
                        (try? String(contentsOfFile: socket, encoding: .utf8)) == "precious",
                        "the regular file put at the path was deleted (\(ending))"
                    )
                }
            }
        }
    }

    @Test("listen's exit removes the socket file through the listener alone: no second removal by path (strace)")
    func exitRemovesOnlyThroughTheListener() throws {
        guard let strace = CLI.which("strace") else {
            print("skipped: counting removals needs strace (apt-get install -y strace)")
            return
        }
        let dir = try TempDirectory()
        let socket = dir.file("traced.sock")
        let trace = dir.file("trace")
        // Every removal fails (injected EBUSY), so the listener's own unlink leaves the file in place: any
        // removal by path that the CLI made afterwards, whatever would be there by then, shows in the trace.
        let traced = try Spawned(
            [
                strace, "-f", "-qq", "-o", trace, "-e", "trace=unlink,unlinkat,rmdir",
                "-e", "inject=unlink,unlinkat,rmdir:error=EBUSY", try #require(CLI.executable), "listen", socket,
            ],
            directory: dir
        )
        #expect(CLI.waitForSocket(socket))
        let children = try String(contentsOfFile: "/proc/\(traced.pid)/task/\(traced.pid)/children", encoding: .utf8)
        let child = try #require(children.split(separator: " ").first.flatMap { Int32($0) })
        kill(child, SIGTERM)
        #expect(traced.wait() == 0, "\(traced.errorText)")
        // The library removes its file by name, relative to the directory it bound in (unlinkat).
        let removals = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n")
            .filter { $0.contains(socket) || $0.contains("\"traced.sock\"") }
        #expect(removals.count == 1, "removals of the path: \(removals)")
        #expect(
            removals.first?.contains("unlinkat(") == true && removals.first?.contains("\"traced.sock\"") == true,
            "\(removals)"
        )
    }

    // MARK: 2. descriptors nobody asked for

    /// A python3 peer that sends one message carrying three descriptors (all the write end of one pipe),
    /// then a plain one, and reports whether the receiver closed every copy (the pipe reads EOF).
    static func descriptorSender(type: String) -> String {
        """
        import array, os, select, socket, sys
        path = sys.argv[1]
        r, w = os.pipe()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_\(type))
        if '\(type)' == 'DGRAM':
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [w, w, w]))]
            s.sendmsg([b'with-fds'], rights, 0, path); os.close(w)
            s.sendto(b'after', path)
        else:
            s.connect(path)
            socket.send_fds(s, [b'with-fds'], [w, w, w]); os.close(w)
            s.send(b'after')
        ready, _, _ = select.select([r], [], [], 20)
        print('closed' if ready and os.read(r, 1) == b'' else 'still open', flush=True)
        if '\(type)' != 'DGRAM': s.close()
        """
    }

    @Test("recv and listen (dgram, seqpacket, -k seqpacket) close unexpected descriptors, say so with -v and go on")
    func unexpectedDescriptorsAreClosed() throws {
        let dir = try TempDirectory()
        let cases: [(arguments: [String], type: String, stops: Bool)] = [
            (["recv", "-v", "--count", "2"], "DGRAM", true),
            (["recv", "-t", "seqpacket", "-v", "--count", "2"], "SEQPACKET", true),
            (["listen", "-t", "seqpacket", "--lines", "-v"], "SEQPACKET", true),
            (["listen", "-k", "-t", "seqpacket", "--lines", "-v"], "SEQPACKET", false),
            (["listen", "-t", "dgram", "--lines", "-v"], "DGRAM", false),
        ]
        for (index, test) in cases.enumerated() {
            let socket = dir.file("fds\(index).sock")
            let server = try CLI.spawnUDS(test.arguments + [socket], in: dir)
            #expect(CLI.waitForSocket(socket))
            let peer = try CLI.python(Self.descriptorSender(type: test.type), [socket], in: dir)
            #expect(peer.outputText == "closed\n", "\(test.arguments): the descriptors were not closed \(peer.error)")
            #expect(
                CLI.waitUntil { server.outputText == "with-fds\nafter\n" },
                "\(test.arguments): \(server.outputText)"
            )
            if !test.stops { server.signal(SIGTERM) }
            #expect(server.wait() == 0, "\(test.arguments): \(server.errorText)")
            #expect(server.outputText == "with-fds\nafter\n")
            #expect(server.errorText.contains("closed 3 descriptors"), "\(test.arguments): \(server.errorText)")
        }
    }

    // MARK: 3. idle seqpacket clients cost no buffer

    @Test("listen -k -t seqpacket: 150 idle clients cost far less than 1 MiB each (VmSize and VmRSS)")
    func idleSeqPacketClientsAreCheap() throws {
        let dir = try TempDirectory()
        let socket = dir.file("idle.sock")
        let server = try CLI.spawnUDS(["listen", "-k", "-t", "seqpacket", "--echo", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let roundTrip = """
            import socket, sys
            for i in range(int(sys.argv[2])):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); c.settimeout(20); c.connect(sys.argv[1])
                c.send(b'ping %d' % i); assert c.recv(100) == b'ping %d' % i; c.close()
            print('ok')
            """
        #expect(try CLI.python(roundTrip, [socket, "4"], in: dir).outputText == "ok\n")  // warm up
        let baseDescriptors = ProcessProbe.restingDescriptorCount(server.pid)
        try #require(baseDescriptors > 0, "the server did not come to rest")
        let baseSize = try #require(ProcessProbe.status(server.pid, "VmSize"))
        let baseResident = try #require(ProcessProbe.status(server.pid, "VmRSS"))
        let clients = 150
        let idle = try Spawned(
            [
                CLI.python, "-c",
                """
                import socket, sys
                conns = []
                for i in range(int(sys.argv[2])):
                    c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); c.connect(sys.argv[1]); conns.append(c)
                print('ready', flush=True); sys.stdin.read()
                """, socket, String(clients),
            ],
            stdin: "pipe",
            directory: dir
        )
        #expect(CLI.waitUntil { idle.outputText == "ready\n" })
        #expect(CLI.waitUntil { ProcessProbe.descriptorCount(server.pid) >= baseDescriptors + clients })
        // One more client after them: the server has gone past every idle one.
        #expect(try CLI.python(roundTrip, [socket, "1"], in: dir).outputText == "ok\n")
        let size = try #require(ProcessProbe.status(server.pid, "VmSize"))
        let resident = try #require(ProcessProbe.status(server.pid, "VmRSS"))
        let perClientSize = (size - baseSize) / clients
        let perClientResident = (resident - baseResident) / clients
        #expect(perClientSize < 1024, "VmSize grew by \(perClientSize) kB per idle client")
        #expect(perClientResident < 1024, "VmRSS grew by \(perClientResident) kB per idle client")
        idle.closeInput()
        #expect(idle.wait() == 0)
        #expect(CLI.waitUntil { ProcessProbe.descriptorCount(server.pid) == baseDescriptors })
        server.signal(SIGTERM)
        #expect(server.wait() == 0)
    }

    // MARK: 4. bridge: async, no thread per connection

    @Test("bridge: 220 concurrent connections through Unix -> TCP -> Unix all echo; few threads; no descriptor left")
    func bridgeManyConnections() throws {
        let dir = try TempDirectory()
        let service = dir.file("svc.sock")
        let front = dir.file("front.sock")
        let echo = try CLI.spawnUDS(["listen", "-k", "--echo", service], in: dir)
        #expect(CLI.waitForSocket(service))
        let tcpSide = try CLI.spawnUDS(["bridge", "tcp:127.0.0.1:0", "unix:" + service], in: dir)
        let port = CLI.listeningPort(of: tcpSide)
        #expect(port > 0)
        let unixSide = try CLI.spawnUDS(["bridge", front, "tcp:127.0.0.1:\(port)"], in: dir)
        #expect(CLI.waitForSocket(front))
        let clients = """
            import os, socket, sys
            path, n, pids = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
            conns = []
            for i in range(n):   # all connected at once
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(60); c.connect(path); conns.append(c)
            data = [os.urandom(20000 + i) for i in range(n)]
            for c, d in zip(conns, data): c.sendall(d)   # fits in the socket buffers on the way
            bad = []
            for i, (c, d) in enumerate(zip(conns, data)):
                got = bytearray()
                try:
                    while len(got) < len(d):
                        b = c.recv(65536)
                        if not b: break
                        got += b
                except OSError as e:
                    bad.append((i, str(e)))
                    continue
                if bytes(got) != d: bad.append((i, len(got)))
            for pid in pids:   # while every connection is still open
                threads = [l.split()[1] for l in open('/proc/%s/status' % pid) if l.startswith('Threads:')][0]
                print('threads', pid, threads, 'fds', len(os.listdir('/proc/%s/fd' % pid)))
            for i, c in enumerate(conns):
                c.shutdown(socket.SHUT_WR)
                try:
                    if c.recv(1) != b'': bad.append((i, 'no EOF'))
                except OSError as e:
                    bad.append((i, str(e)))
                c.close()
            print('bad', bad[:5]) if bad else print('ok')
            """
        // Warm up (the reactor starts, the listeners register), then note each bridge's descriptors.
        #expect(try CLI.python(clients, [front, "1"], in: dir).outputText.hasSuffix("ok\n"))
        let base = [
            unixSide.pid: ProcessProbe.restingDescriptorCount(unixSide.pid),
            tcpSide.pid: ProcessProbe.restingDescriptorCount(tcpSide.pid),
        ]
        let count = 220
        let run = try CLI.python(
            clients,
            [front, String(count), String(unixSide.pid), String(tcpSide.pid)],
            in: dir,
            seconds: 120
        )
        #expect(run.outputText.hasSuffix("ok\n"), "\(run.outputText) \(run.error)")
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        for line in run.outputText.split(separator: "\n") where line.hasPrefix("threads") {
            let fields = line.split(separator: " ")
            let threads = Int(fields[2]) ?? .max
            #expect(threads <= cores + 8, "bridge \(fields[1]) ran \(threads) threads for \(count) connections")
            #expect((Int(fields[4]) ?? 0) >= 2 * count, "bridge \(fields[1]) did not hold the connections at once")
        }
        for (pid, descriptors) in base {
            #expect(
                CLI.waitUntil { ProcessProbe.descriptorCount(pid) == descriptors },
                "bridge \(pid): \(ProcessProbe.descriptorCount(pid)) descriptors open, \(descriptors) before the clients"
            )
        }
        for process in [unixSide, tcpSide, echo] {
            process.signal(SIGTERM)
            #expect(process.wait() == 0)
        }
        #expect(!CLI.exists(front))
    }

    @Test("bridge: a connection that cannot be served (target missing) is closed, with one stderr line")
    func bridgeClosesWhatItCannotServe() throws {
        let dir = try TempDirectory()
        let front = dir.file("front.sock")
        let bridge = try CLI.spawnUDS(["bridge", front, "unix:" + dir.file("missing.sock")], in: dir)
        #expect(CLI.waitForSocket(front))
        let client = try CLI.python(
            """
            import socket, sys
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(20); c.connect(sys.argv[1])
            try:
                print('closed' if c.recv(10) == b'' else 'data')
            except ConnectionResetError:
                print('closed')
            """,
            [front],
            in: dir
        )
        #expect(client.outputText == "closed\n", "\(client.outputText) \(client.error)")
        #expect(bridge.errorText.contains("uds: connect"))
        bridge.signal(SIGTERM)
        #expect(bridge.wait() == 0)
    }

    // MARK: 5. addresses are argv's exact bytes

    @Test(
        "an ADDRESS with bytes 0xFF 0xFE binds and dials exactly that name (listen, send, bridge unix:); MSG bytes too"
    )
    func addressBytesAreExact() throws {
        let dir = try TempDirectory()
        let name: [UInt8] = [0xFF, 0xFE] + Array(".sock".utf8)
        let path = Array(dir.path.utf8) + [UInt8(ascii: "/")] + name
        let pathHex = ProcessProbe.hex(path)

        // listen binds exactly the name; a python3 client dialling the bytes reaches it.
        let server = try ProcessProbe.spawnUDSRaw([Array("listen".utf8), path], in: dir)
        #expect(
            CLI.waitUntil { ProcessProbe.rawNames(in: dir.path).contains(name) },
            "names: \(ProcessProbe.rawNames(in: dir.path).map(ProcessProbe.hex))"
        )
        let client = try CLI.python(
            """
            import socket, sys, time
            p = bytes.fromhex(sys.argv[1])
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            for _ in range(500):
                try:
                    c.connect(p); break
                except OSError:
                    time.sleep(0.02)
            c.sendall(b'exact'); c.close()
            """,
            [pathHex],
            in: dir
        )
        #expect(client.status == 0, "\(client.error)")
        #expect(server.wait() == 0)
        #expect(server.outputText == "exact")
        #expect(!ProcessProbe.rawNames(in: dir.path).contains(name))  // removed on exit, the exact name

        // send dials exactly the name: a python3 receiver is bound there; so does bridge unix:PATH.
        let receiver = try CLI.spawnPython(
            """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(bytes.fromhex(sys.argv[1])); s.settimeout(20)
            print('bound', flush=True); print(s.recv(100).hex(), flush=True); os.unlink(bytes.fromhex(sys.argv[1]))
            """,
            [pathHex],
            in: dir
        )
        #expect(CLI.waitUntil { receiver.outputText == "bound\n" })
        // The message is not UTF-8 either: its exact bytes arrive.
        let sender = try ProcessProbe.spawnUDSRaw([Array("send".utf8), path, [0xFF, 0xFE, 0x41]], in: dir)
        #expect(sender.wait() == 0, "\(sender.errorText)")
        #expect(receiver.wait() == 0)
        #expect(receiver.outputText == "bound\nfffe41\n")

        let front = dir.file("front.sock")
        let bridge = try ProcessProbe.spawnUDSRaw(
            [Array("bridge".utf8), Array(front.utf8), Array("unix:".utf8) + path],
            in: dir
        )
        #expect(CLI.waitForSocket(front))
        let target = try CLI.spawnPython(
            """
            import os, socket, sys
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(bytes.fromhex(sys.argv[1])); s.listen(1)
            print('listening', flush=True); c, _ = s.accept(); c.sendall(b'via bridge'); c.close()
            os.unlink(bytes.fromhex(sys.argv[1]))
            """,
            [pathHex],
            in: dir
        )
        #expect(CLI.waitUntil { target.outputText == "listening\n" })
        let viaBridge = try CLI.uds(["connect", front], in: dir)
        #expect(viaBridge.outputText == "via bridge", "\(viaBridge.error) \(bridge.errorText)")
        #expect(target.wait() == 0)
        bridge.signal(SIGTERM)
        #expect(bridge.wait() == 0)
        #expect(!ProcessProbe.rawNames(in: dir.path).contains(name))
    }

    // MARK: 6. --mode refuses setuid, setgid and sticky bits

    @Test("--mode outside 0...777 (setuid, setgid, sticky) is a usage error (64) naming the rule; 777 works")
    func modeRefusesSpecialBits() throws {
        let dir = try TempDirectory()
        let socket = dir.file("mode.sock")
        for mode in ["7777", "4755", "2770", "1777", "1000"] {
            for command in [["listen"], ["recv"], ["recv-fd"], ["bridge"]] {
                var arguments = command + ["--mode", mode, socket]
                if command == ["bridge"] { arguments.append("unix:" + dir.file("target.sock")) }
                let result = try CLI.uds(arguments, in: dir, seconds: 10)
                #expect(result.status == 64, "\(arguments) -> \(String(describing: result.status))")
                #expect(result.error.contains("0 to 777"), "\(arguments): \(result.error)")
                #expect(result.output.isEmpty)
                #expect(!CLI.exists(socket))
            }
        }
        let server = try CLI.spawnUDS(["listen", "--mode", "777", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        var info = stat()
        #expect(lstat(socket, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o777)
        server.signal(SIGTERM)
        #expect(server.wait() == 0)
    }

    // MARK: 7. ls escapes control characters

    @Test("ls escapes control characters in socket paths and command names: no forged row, no escape sequence")
    func lsEscapesControlCharacters() throws {
        let dir = try TempDirectory()
        let forged = "\nstream  listening  1  -  1  init  @forged-row\u{1B}[2J\u{1B}[H"  // no slash: one file name
        let path = dir.file("x") + forged
        let command = "ev\u{1B}[2J\nil"  // 9 bytes: fits the kernel's 15
        let holder = try CLI.spawnPython(
            """
            import ctypes, socket, sys
            ctypes.CDLL(None).prctl(15, sys.argv[2].encode())   # PR_SET_NAME
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
            print('ready', flush=True); s.accept()   # nobody connects: holds the socket until killed
            """,
            [path, command],
            in: dir
        )
        #expect(CLI.waitUntil { holder.outputText == "ready\n" })
        let table = try CLI.uds(["ls"], in: dir)
        #expect(table.status == 0)
        #expect(!table.output.contains(0x1B), "ls printed a raw ESC")
        #expect(table.output.allSatisfy { $0 >= 0x20 || $0 == 0x0A }, "ls printed a raw control byte")
        let rows = table.outputText.split(separator: "\n")
        #expect(rows.filter { $0.contains("forged-row") }.allSatisfy { $0.contains(dir.path) }, "a row was forged")
        let mine = rows.filter { $0.contains(dir.path) }
        #expect(mine.count == 1, "\(mine)")
        #expect(mine.first?.contains("\\x0a") == true && mine.first?.contains("\\x1b[2J") == true, "\(mine)")
        #expect(mine.first?.contains("ev\\x1b[2J\\x0ail") == true, "the command name is escaped too: \(mine)")

        let json = try CLI.uds(["ls", "--json"], in: dir)
        #expect(json.status == 0)
        #expect(!json.output.contains(0x1B))
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(json.output)) as? [[String: Any]])
        let entry = try #require(entries.first { $0["address"] as? String == path })
        #expect(entry["command"] as? String == command)
        #expect(!entries.contains { ($0["address"] as? String)?.hasPrefix("@forged-row") == true })
        holder.signal(SIGKILL)
        holder.wait()
    }

    // MARK: 8. dgram --echo: a sender that never reads delays nobody

    @Test("listen -t dgram --echo: a flooding sender that never reads does not delay another sender's echoes")
    func datagramEchoIsNotStalledByANonReader() throws {
        let dir = try TempDirectory()
        let socket = dir.file("echo.sock")
        let server = try CLI.spawnUDS(["listen", "-t", "dgram", "--echo", "-v", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let run = try CLI.python(
            """
            import socket, sys, threading, time
            server = sys.argv[1]
            flood = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); flood.bind('')   # autobound, never reads
            good = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); good.bind(''); good.settimeout(20)
            stop = threading.Event(); sent = [0]
            def run():
                while not stop.is_set() and sent[0] < 1_000_000:
                    flood.sendto(b'flood', server); sent[0] += 1
            threading.Thread(target=run, daemon=True).start()
            for _ in range(500):   # the flooder's queue is full long before this
                if sent[0] >= 40: break
                time.sleep(0.01)
            deadline = time.monotonic() + 60
            got = 0
            for i in range(20):
                msg = b'good-%d' % i
                good.sendto(msg, server)
                try:
                    if good.recv(100) == msg: got += 1
                except socket.timeout:
                    break
                if time.monotonic() > deadline: break
            stop.set()
            print('echoed', got, 'flooded', sent[0] >= 40)
            """,
            [socket],
            in: dir,
            seconds: 120
        )
        #expect(run.outputText == "echoed 20 flooded True\n", "\(run.outputText) \(run.error)")
        server.signal(SIGTERM)
        #expect(server.wait() == 0)
        #expect(
            server.errorText.contains("dropped"),
            "with -v a dropped echo is reported: \(server.errorText.prefix(300))"
        )
    }

    // MARK: 9. recv-fd: bounded, never stuck, goes on after a bad descriptor

    @Test(
        "recv-fd: --max-bytes bounds each copy, a pipe kept open is left after --timeout, unreadable ones are skipped"
    )
    func receiveDescriptorsBoundedAndResilient() throws {
        let dir = try TempDirectory()
        let socket = dir.file("fd.sock")
        let big = CLI.randomBytes(100_000)
        let bigPath = dir.write("big.bin", big)
        let small = Array("small file\n".utf8)
        let smallPath = dir.write("small.txt", small)
        let writeOnly = dir.write("write-only.txt", Array("secret".utf8))
        let receiver = try CLI.spawnUDS(["recv-fd", "-v", "--max-bytes", "1000", "--timeout", "0.3", socket], in: dir)
        #expect(CLI.waitForSocket(socket))
        let sender = try CLI.python(
            """
            import os, socket, sys
            path, big, small, writeonly, directory = sys.argv[1:6]
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.connect(path)
            r, w = os.pipe(); os.write(w, b'partial')
            socket.send_fds(c, [b'1'], [r])                                     # writer stays open
            socket.send_fds(c, [b'2'], [os.open(writeonly, os.O_WRONLY)])       # not readable
            socket.send_fds(c, [b'3'], [os.open(directory, os.O_RDONLY)])       # a directory
            socket.send_fds(c, [b'4'], [os.open(big, os.O_RDONLY)])             # over --max-bytes
            socket.send_fds(c, [b'5'], [os.open(small, os.O_RDONLY)])           # fine
            c.shutdown(socket.SHUT_WR); c.settimeout(30); c.recv(1)              # until uds closes
            os.close(w)
            """,
            [socket, bigPath, smallPath, writeOnly, dir.path],
            in: dir,
            seconds: 60
        )
        #expect(sender.status == 0, "\(sender.error)")
        #expect(receiver.wait(seconds: 60) == 1, "\(receiver.errorText)")
        #expect(receiver.output == Array("partial".utf8) + Array(big.prefix(1000)) + small)
        let errors = receiver.errorText
        #expect(errors.contains("descriptor 1 (pipe): no data for 0.3 s"), "\(errors)")
        #expect(errors.contains("descriptor 2"), "\(errors)")
        #expect(errors.contains("EBADF"), "\(errors)")
        #expect(errors.contains("descriptor 3 (directory)"), "\(errors)")
        #expect(errors.contains("descriptor 4 (regular file): stopped at --max-bytes 1000"), "\(errors)")
        #expect(errors.contains("descriptor 5 (regular file): copied \(small.count) bytes"), "\(errors)")
        #expect(errors.split(separator: "\n").last?.hasPrefix("uds: 4 of 5 descriptors") == true, "\(errors)")

        let help = try CLI.uds(["recv-fd", "--help"], in: dir)
        #expect(help.outputText.contains("--max-bytes"))
        #expect(help.outputText.contains("64 MiB"))
        for bad in [["--max-bytes", "0"], ["--timeout", "0"], ["--timeout", "-1"]] {
            let result = try CLI.uds(["recv-fd"] + bad + [socket], in: dir, seconds: 10)
            #expect(result.status == 64, "\(bad)")
        }
    }

    // MARK: listen -k caps: one user cannot take every slot

    @Test("listen -k --max-per-uid: a user's extra client is closed at once while another user is served")
    func listenKeepOpenPerUIDCap() throws {
        guard CLI.isRoot, let setpriv = CLI.which("setpriv") else {
            print("skipped: a second user needs root and setpriv")
            return
        }
        let dir = try TempDirectory(worldReadable: true)
        let socket = dir.file("capped.sock")
        let server = try CLI.spawnUDS(
            ["listen", "-k", "--echo", "--max-per-uid", "2", "--mode", "666", socket],
            in: dir
        )
        #expect(CLI.waitForSocket(socket))
        let address = UnixAddress(stringLiteral: socket)
        // The file appears at bind, a moment before listen(): dial until it is listening.
        func dial() throws -> UnixStream {
            var attempts = 0
            while true {
                do {
                    return try UnixStream.connect(to: address, timeout: .seconds(60))
                } catch {
                    attempts += 1
                    guard attempts < 200, "\(error)".contains("ECONNREFUSED") else { throw error }
                    usleep(10_000)
                }
            }
        }
        // Root holds its two slots (each echoes, so each is being served).
        var held: [UnixStream] = []
        for index in 0..<2 {
            let client = try dial()
            try client.write(all: Array("hold \(index)".utf8), timeout: .seconds(60))
            #expect(try client.read(exactly: 6, timeout: .seconds(60)) == Array("hold \(index)".utf8))
            held.append(client)
        }
        // The third is closed without a byte served.
        let extra = try UnixStream.connect(to: address, timeout: .seconds(60))
        #expect(try extra.read(maxBytes: 16, timeout: .seconds(60)).isEmpty, "a third root client was served")
        extra.close()
        // Another user still gets in.
        let nobody = try CLI.runProcess(
            [
                setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", CLI.python, "-c",
                """
                import socket, sys
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); c.settimeout(10); c.connect(sys.argv[1])
                c.sendall(b'nobody'); print(c.recv(16).decode())
                """, socket,
            ],
            in: dir
        )
        #expect(nobody.outputText == "nobody\n", "\(nobody.error)")
        // A slot given back is taken again.
        held.removeFirst().close()
        var served = false
        for _ in 0..<50 where !served {
            let again = try UnixStream.connect(to: address, timeout: .seconds(60))
            try? again.write(all: Array("again".utf8), timeout: .seconds(60))
            served = (try? again.read(exactly: 5, timeout: .seconds(60))) == Array("again".utf8)
            again.close()
            if !served { usleep(20_000) }
        }
        #expect(served, "the freed slot was not given back")
        held.forEach { $0.close() }
        server.signal(SIGTERM)
        #expect(server.wait() == 0)
    }
}
