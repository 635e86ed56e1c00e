import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// Issue 8, socket files: an unprivileged attacker racing a root bind, a live server in another network
/// namespace, and a lock another user could hold.
@Suite("Socket files under attack", .serialized)
struct SocketFileAttackTests {
    /// An unprivileged user who owns a directory on the path swaps a subdirectory holding a stale socket
    /// with a symlink to a root directory (`renameat2(RENAME_EXCHANGE)` in a loop) while root binds there
    /// again and again. The root directory's file named like the socket must survive, and no socket may
    /// appear there.
    @Test(
        "a directory swapped for a symlink during bind never redirects the removal or the bind",
        .enabled(if: runningAsRoot && setprivAvailable, "needs root (the victim) and setpriv (the attacker)"),
        arguments: [UnixSocketType.stream, .datagram]
    )
    func symlinkSwapRace(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(chmod(dir.path, 0o755) == 0)
        let attacker = dir.file("a")
        let victim = dir.file("v")
        #expect(mkdir(attacker, 0o755) == 0 && mkdir(attacker + "/sub", 0o755) == 0 && mkdir(victim, 0o755) == 0)
        #expect(chown(attacker, 65534, 65534) == 0 && chown(attacker + "/sub", 65534, 65534) == 0)
        #expect(symlink(victim, attacker + "/link") == 0)
        #expect(FileManager.default.createFile(atPath: victim + "/s.sock", contents: Data("root's file".utf8)))
        let address = UnixAddress(stringLiteral: attacker + "/sub/s.sock")
        // A stale socket file where the server is about to bind.
        makeStaleSocketFile(type, path: attacker + "/sub/s.sock")

        let swapper = try PythonPeer(
            """
            libc = ctypes.CDLL(None, use_errno=True)
            a, b = sys.argv[1].encode(), sys.argv[2].encode()
            swaps = 0
            out('READY')
            end = time.time() + 25
            while time.time() < end and not os.path.exists(sys.argv[3]):
                if libc.renameat2(-100, a, -100, b, 2) == 0:
                    swaps += 1
            out('SWAPS', swaps)
            """,
            [attacker + "/sub", attacker + "/link", dir.file("stop")],
            asNobody: true
        )
        try swapper.expectLine("READY")
        var bound = 0
        let start = ContinuousClock.now
        for _ in 0..<3000 where ContinuousClock.now - start < .seconds(6) {
            do {
                let descriptor: FileDescriptor
                switch type {
                case .datagram: descriptor = try UnixDatagram.bind(address).releaseDescriptor()
                default: descriptor = try UnixStreamListener.bind(address).releaseDescriptor()
                }
                bound += 1
                try descriptor.close()  // leaves its file behind, stale, for the next round
            } catch {
                // Refusals are fine (the swap made the path a non-socket, or a missing directory).
            }
        }
        #expect(FileManager.default.createFile(atPath: dir.file("stop"), contents: nil))
        let summary = try swapper.succeed()
        #expect(summary.last?.hasPrefix("SWAPS") == true)
        #expect(bound > 0, "the race was run: some binds succeeded")
        let fd = open(victim + "/s.sock", O_RDONLY | O_CLOEXEC)
        #expect(fd >= 0, "root's file was deleted through the swapped directory")
        if fd >= 0 {
            #expect(readAll(fd) == bytes("root's file"))
            close(fd)
        }
        let left = try FileManager.default.contentsOfDirectory(atPath: victim)
        #expect(left == ["s.sock"], "nothing was bound or left in the victim directory: \(left)")
        #expect(!isSocketFile(victim + "/s.sock"))
    }

    /// sock_diag sees only this network namespace; a server in another one (`unshare -n`) sharing the
    /// directory is still live, and its path is not taken over. Once it is killed, the file is stale.
    @Test(
        "a live server in another network namespace keeps its path; once it is killed the file is recovered",
        .enabled(
            if: runningAsRoot && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
            "needs root and unshare"
        ),
        arguments: allSocketTypes
    )
    func serverInAnotherNetworkNamespace(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let path = dir.file("ns.sock")
        let output = try TestPipe()
        let server = try ChildProcess(
            "/usr/bin/unshare",
            [
                "-n", "/usr/bin/python3", "-c",
                """
                import socket, sys, time, signal
                signal.alarm(30)
                s = socket.socket(socket.AF_UNIX, \(type.python))
                s.bind(sys.argv[1])
                if \(type == .datagram ? "False" : "True"): s.listen(8)
                print('READY', flush=True)
                time.sleep(30)
                """, path,
            ],
            stdout: output.write
        )
        output.closeWrite()
        defer { server.wait(seconds: 0) }
        var ready = [UInt8](repeating: 0, count: 64)
        var entry = pollfd(fd: output.read, events: Int16(POLLIN), revents: 0)
        let readable = poll(&entry, 1, 20_000)
        let count = readable > 0 ? ready.withUnsafeMutableBytes { read(output.read, $0.baseAddress, $0.count) } : 0
        #expect(String(decoding: ready.prefix(max(count, 0)), as: UTF8.self).hasPrefix("READY"))
        let before = try #require(fileMode(path))
        #expect(before & S_IFMT == S_IFSOCK)
        let error = expectError(.addressInUse) { _ = try AnyServer(type, UnixAddress(stringLiteral: path)) }
        #expect(
            error?.description.contains("already in use by a running server") == true,
            "\(String(describing: error))"
        )
        #expect(isSocketFile(path), "the live server's file is still there")
        if type != .datagram {
            // The server still has its file: a connection through it reaches the other namespace.
            let client =
                type == .stream
                ? try UnixStream.connect(to: UnixAddress(stringLiteral: path), timeout: ioTimeout).description
                : try UnixSeqPacket.connect(to: UnixAddress(stringLiteral: path), timeout: ioTimeout).description
            #expect(!client.isEmpty)
        }
        server.signal(SIGKILL)
        server.waitUntilExit()
        let recovered = try AnyServer(type, UnixAddress(stringLiteral: path))
        #expect(try recovered.exchange(via: UnixAddress(stringLiteral: path)).serverSeenByClient.pathBytes != nil)
        recovered.close()
        #expect(!isSocketFile(path))
    }

    /// The old lock was flock on the parent directory, which anyone who can read it may hold forever.
    @Test(
        "another user holding a lock on the directory cannot block a bind",
        .enabled(if: runningAsRoot && setprivAvailable, "needs root and setpriv (the other user)")
    )
    func otherUserCannotBlockBind() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(chmod(dir.path, 0o755) == 0)
        let holder = try PythonPeer(
            """
            import fcntl
            d = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(d, fcntl.LOCK_EX)
            try:
                l = os.open(sys.argv[1] + '/.x.sock.lock', os.O_RDONLY | os.O_CREAT, 0o600)
                out('LOCKFILE', 'opened')
            except OSError as e:
                out('LOCKFILE', ename(e))
            out('HELD')
            time.sleep(20)
            """,
            [dir.path],
            asNobody: true
        )
        #expect(try holder.line() == "LOCKFILE EACCES", "nobody cannot create the lock file in a root directory")
        try holder.expectLine("HELD")
        let address = dir.address("x.sock")
        let bind = Background { try UnixStreamListener.bind(address).description }
        let result = try bind.value(timeout: .seconds(15))  // before the fix: blocked until the holder exits
        #expect(result.contains("x.sock"))
        holder.terminate(signal: SIGKILL)
    }

    /// A second binder holding the path's lock makes a bind wait a bounded time, then fail clearly.
    @Test("a bind waits a bounded time for the path's lock and then fails clearly, touching nothing")
    func boundedLockWait() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let holder = try PythonPeer(
            """
            import fcntl
            l = os.open(sys.argv[1] + '/.y.sock.lock', os.O_RDONLY | os.O_CREAT, 0o600)
            fcntl.flock(l, fcntl.LOCK_EX)
            out('HELD')
            time.sleep(20)
            """,
            [dir.path]
        )
        try holder.expectLine("HELD")
        let address = dir.address("y.sock")
        let outcome = Background { () -> String in
            do {
                _ = try UnixStreamListener.bind(address)
                return "bound"
            } catch let error as UnixSocketError {
                return "\(error.code) \(error)"
            } catch {
                return "other \(error)"
            }
        }
        let text = try outcome.value(timeout: .seconds(20))
        #expect(text.hasPrefix("timedOut "), "\(text)")
        #expect(text.contains("held the lock file .y.sock.lock"), "\(text)")
        #expect(fileMode(dir.file("y.sock")) == nil, "nothing was bound")
        holder.terminate(signal: SIGKILL)
        // Once the holder is gone, the lock is free and its file is reused and removed.
        let listener = try UnixStreamListener.bind(address)
        #expect(fileMode(dir.file(".y.sock.lock")) == nil)
        listener.close()
    }

    /// The removal on close goes through the directory that was bound in: a directory swapped afterwards
    /// cannot point it at another file.
    @Test("closing a listener whose directory was swapped removes nothing outside it", arguments: allSocketTypes)
    func closeAfterDirectorySwap(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        #expect(mkdir(dir.file("d"), 0o755) == 0 && mkdir(dir.file("other"), 0o755) == 0)
        let server = try AnyServer(type, UnixAddress(stringLiteral: dir.file("d/s.sock")))
        // Swap: the bound directory moves away, and a directory holding a socket of the same name (a
        // stranger's: bound with raw calls) takes its place.
        #expect(rename(dir.file("d"), dir.file("moved")) == 0)
        #expect(rename(dir.file("other"), dir.file("d")) == 0)
        let stranger = rawBoundSocket(type, path: dir.file("d/s.sock"))
        defer { close(stranger) }
        server.close()
        #expect(isSocketFile(dir.file("d/s.sock")), "the stranger's socket file is untouched")
        #expect(!isSocketFile(dir.file("moved/s.sock")), "our own file was removed where it moved")
    }
}
