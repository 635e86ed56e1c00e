import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

#if canImport(Glibc)
import Glibc
#endif

/// Whether the tests run as root: permission cases then run their subject as `nobody` (root ignores modes).
let runningAsRoot = geteuid() == 0

/// Whether `/usr/bin/python3` and `/usr/bin/setpriv` are there (the peer and the privilege drop).
let pythonAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")
let setprivAvailable = FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv")

/// Failures of a Python peer (the test then fails with the peer's stderr).
struct PythonPeerError: Error, CustomStringConvertible {
    let description: String
}

/// A peer written with Python's standard `socket` module, running as a separate process
/// (`/usr/bin/python3 -c SCRIPT ARGS...`, optionally as `nobody` through `setpriv`). It talks to the test through
/// the socket, one line per fact on stdout, and its exit status. Every wait is bounded: a peer that hangs is
/// killed and reported. `signal.alarm` in the prelude kills a peer the test forgot.
final class PythonPeer: @unchecked Sendable {  // used by one test at a time
    /// Helpers every script gets: `out` (flushed line), `ename` (errno name of an OSError), `A(hex)` (an
    /// address from its hex form: sun_path bytes; a leading 00 makes it abstract).
    static let prelude = """
        import os, sys, socket, struct, array, errno, select, signal, time, hashlib, ctypes
        signal.alarm(30)
        def out(*a):
            print(*a, flush=True)
        def ename(e):
            return errno.errorcode.get(e.errno, str(e.errno))
        def A(h):
            return bytes.fromhex(h)
        def fnv(b):
            h = 0xcbf29ce484222325
            for x in b:
                h = ((h ^ x) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
            return h
        def wait_readable(s, t=20):
            r, _, _ = select.select([s], [], [], t)
            if not r:
                out('TIMEOUT'); sys.exit(3)

        """

    let process: ChildProcess
    private let stdoutPipe: TestPipe
    private let stderrPipe: TestPipe
    private var pending: [UInt8] = []
    private var stdoutDone = false

    /// Starts `script` (after the prelude) with `arguments` in `sys.argv[1:]`.
    init(_ script: String, _ arguments: [String] = [], asNobody: Bool = false) throws {
        guard pythonAvailable else {
            throw PythonPeerError(
                description: "the core tests need /usr/bin/python3 (the standard socket module) as a peer"
            )
        }
        let code = Self.prelude + script
        stdoutPipe = try TestPipe()
        stderrPipe = try TestPipe()
        if asNobody {
            process = try ChildProcess(
                "/usr/bin/setpriv",
                ["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", code] + arguments,
                stdout: stdoutPipe.write,
                stderr: stderrPipe.write
            )
        } else {
            process = try ChildProcess(
                "/usr/bin/python3",
                ["-c", code] + arguments,
                stdout: stdoutPipe.write,
                stderr: stderrPipe.write
            )
        }
        stdoutPipe.closeWrite()
        stderrPipe.closeWrite()
    }

    var pid: Int32 { process.pid }

    /// The next line the peer printed, waiting at most `timeout`.
    func line(timeout: Duration = .seconds(20)) throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let text = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                return text
            }
            if stdoutDone { throw PythonPeerError(description: "peer ended its output; stderr: \(stderrText())") }
            let left = deadline - ContinuousClock.now
            if left <= .zero {
                throw PythonPeerError(description: "no line from the peer in \(timeout); stderr: \(stderrText())")
            }
            let milliseconds = CInt(clamping: left.components.seconds * 1000 + 1)
            if !readStdout(pollMilliseconds: milliseconds) && !process.isRunning {
                // Exited: what it wrote is in the pipe already; drain without waiting.
                while readStdout(pollMilliseconds: 0) {}
                if pending.firstIndex(of: UInt8(ascii: "\n")) == nil { stdoutDone = true }
            }
        }
    }

    /// Reads the next line and checks it is `expected`.
    func expectLine(_ expected: String, timeout: Duration = .seconds(20)) throws {
        let got = try line(timeout: timeout)
        if got != expected {
            throw PythonPeerError(
                description:
                    "peer said \(got.debugDescription), expected \(expected.debugDescription); stderr: \(stderrText())"
            )
        }
    }

    /// One read from stdout if poll says it is ready within `pollMilliseconds`; false if nothing came.
    private func readStdout(pollMilliseconds: CInt) -> Bool {
        if stdoutDone { return false }
        let fd = stdoutPipe.read
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&entry, 1, pollMilliseconds)
        guard ready > 0 else { return false }
        var chunk = [UInt8](repeating: 0, count: 4096)
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count <= 0 {
            stdoutDone = true
            return false
        }
        pending += chunk[..<count]
        return true
    }

    /// Waits (at most `timeout`) for the peer to exit; returns its status and the rest of its stdout lines.
    /// A peer still running at the deadline is killed and the wait throws.
    @discardableResult
    func finish(timeout: Duration = .seconds(20)) throws -> (status: Int32, lines: [String]) {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                process.signal(SIGKILL)
                process.waitUntilExit()
                throw PythonPeerError(
                    description: "peer still running after \(timeout): killed; stderr: \(stderrText())"
                )
            }
            _ = readStdout(pollMilliseconds: 10)  // keeps the pipe from filling; bounded by the deadline
        }
        process.waitUntilExit()
        while readStdout(pollMilliseconds: 0) {}
        let text = String(decoding: pending, as: UTF8.self)
        pending = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init).filter {
            !$0.isEmpty
        }
        return (process.exitStatus ?? -1, lines)
    }

    /// Waits for a successful exit and returns the remaining lines; a non-zero exit throws with stderr.
    @discardableResult
    func succeed(timeout: Duration = .seconds(20)) throws -> [String] {
        let (status, lines) = try finish(timeout: timeout)
        if status != 0 || process.exitStatus == nil {
            throw PythonPeerError(
                description: "peer exited with \(status) (\(process.exitStatus != nil ? "exit" : "signal")); "
                    + "stdout: \(lines); stderr: \(stderrText())"
            )
        }
        return lines
    }

    /// Kills the peer with `signal` and reaps it.
    func terminate(signal: Int32) {
        if process.isRunning {
            process.signal(signal)
            process.waitUntilExit()
        }
    }

    /// Whatever the peer wrote to stderr so far (non-blocking).
    func stderrText() -> String {
        let fd = stderrPipe.read
        var text: [UInt8] = []
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var chunk = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<64 {
            guard poll(&entry, 1, 0) > 0 else { break }
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count <= 0 { break }
            text += chunk[..<count]
        }
        return String(decoding: text, as: UTF8.self)
    }
}

// MARK: - Addresses for Python

extension UnixAddress {
    /// The sun_path bytes (abstract: a leading NUL) as hex, for `A(hex)` in a Python peer.
    var pythonHex: String {
        let raw: [UInt8]
        switch kind {
        case .path(let bytes): raw = bytes
        case .abstract(let bytes): raw = [0] + bytes
        case .unnamed: raw = []
        }
        return raw.map { String(format: "%02x", $0) }.joined()
    }
}

// MARK: - Small helpers shared by the core tests

/// An abstract name holding NUL and 0xFF bytes (plus a unique suffix): any byte is part of the name.
func binaryAbstract(_ tag: String) -> UnixAddress {
    let unique = Array("\(getpid())-\(tag)-\(UInt64.random(in: 0...UInt64.max))".utf8)
    return try! UnixAddress.abstract([0x00, 0xFF, 0x01, 0x00, 0xFE] + unique + [0x00, 0xFF])
}

/// A 107-byte path in `dir` (the longest that fits sun_path with its NUL).
func longestPath(in dir: TempDir, length: Int = UnixAddress.maximumPathLength) -> [UInt8] {
    let prefix = Array((dir.path + "/").utf8)
    return prefix + [UInt8](repeating: UInt8(ascii: "p"), count: length - prefix.count)
}

/// lstat of raw path bytes: the mode, or nil if it does not exist.
func fileMode(_ path: [UInt8]) -> mode_t? {
    var info = stat()
    let result = (path + [0]).withUnsafeBufferPointer { bytes in
        bytes.withMemoryRebound(to: CChar.self) { lstat($0.baseAddress!, &info) }
    }
    return result == 0 ? info.st_mode : nil
}

func fileMode(_ path: String) -> mode_t? { fileMode(Array(path.utf8)) }

func isSocketFile(_ path: String) -> Bool { fileMode(path).map { $0 & S_IFMT == S_IFSOCK } ?? false }

/// Reads what `fd` holds from offset 0 (a regular file) or what is there (a pipe), at most 4096 bytes.
func readAll(_ fd: CInt) -> [UInt8] {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
    if count >= 0 { return Array(buffer[..<count]) }
    let again = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
    return again > 0 ? Array(buffer[..<again]) : []
}

/// A file in `dir` holding `content`, opened read-only (the caller closes the descriptor).
func makeFile(_ dir: TempDir, _ name: String, _ content: String, mode: mode_t = 0o644) throws -> FileDescriptor {
    let path = dir.file(name)
    let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC | O_TRUNC, mode)
    guard fd >= 0 else { throw PythonPeerError(description: "open \(path) failed: \(errno)") }
    _ = Array(content.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    fchmod(fd, mode)
    return FileDescriptor(rawValue: fd)
}

/// Whether a descriptor has FD_CLOEXEC.
func isCloseOnExec(_ fd: CInt) -> Bool { fcntl(fd, F_GETFD) & FD_CLOEXEC != 0 }

/// The errno of a thrown UnixSocketError, or nil.
func errnoOf(_ body: () throws -> Void) -> Errno? {
    do {
        try body()
        return nil
    } catch let error as UnixSocketError {
        return error.errno
    } catch {
        return nil
    }
}

/// Fails a check inside an exit test: records the issue (Swift Testing forwards it to the parent test) and
/// exits 1, so the exit condition fails too.
func exitCheck(
    _ condition: Bool,
    _ message: @autoclosure () -> String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    if !condition {
        Issue.record("exit-test check failed: \(message())", sourceLocation: sourceLocation)
        exit(1)
    }
}

/// The open descriptors of this process, without the one that lists them.
func descriptorNumbers() -> Set<Int32> {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    var numbers = Set(names.compactMap { Int32($0) })
    // The directory stream's own descriptor is closed again by now; keep only the still-open ones.
    numbers = numbers.filter { fcntl($0, F_GETFD) != -1 }
    return numbers
}
