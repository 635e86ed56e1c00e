import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs the built `uds` executable (and python3, socat, nc peers) as real processes, each with a time limit.
enum CLI {
    /// The `uds` executable next to the test bundle (`swift test` builds every target of the package, the
    /// executable included), or in the usual build directories.
    static let executable: String? = {
        var candidates: [String] = []
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = runner.deletingLastPathComponent()
        for _ in 0..<4 {  // the runner may sit inside a .xctest bundle directory
            candidates.append(directory.appendingPathComponent("uds").path)
            directory = directory.deletingLastPathComponent()
        }
        if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
            candidates.append(
                URL(fileURLWithPath: bundle.bundlePath).deletingLastPathComponent().appendingPathComponent("uds").path
            )
        }
        let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates.append(package.appendingPathComponent(".build/debug/uds").path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) && !$0.hasSuffix(".xctest") }
    }()

    /// python3 that any user can run (not a shim in root's home).
    static let python: String = {
        for path in ["/usr/bin/python3", "/usr/local/bin/python3"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        return "python3"
    }()

    static func which(_ name: String) -> String? {
        for directory in ["/usr/bin", "/bin", "/usr/local/bin", "/usr/sbin"] {
            let path = directory + "/" + name
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static var isRoot: Bool { getuid() == 0 }
}

/// A process started by a test: stdout and stderr go to files (no pipe can fill up and stall it).
final class Spawned: @unchecked Sendable {  // used by one test at a time
    let process: ChildProcess
    let outputPath: String
    let errorPath: String
    private let inputPipe: TestPipe?

    static func cloexecDescriptor(_ path: String, _ flags: CInt) throws -> CInt {
        let fd = open(path, flags | O_CLOEXEC)
        guard fd >= 0 else { throw PythonPeerError(description: "open \(path): errno \(errno)") }
        return fd
    }

    /// Starts `arguments[0]` with the rest; `stdin` is a file path, "pipe" (write with ``write(_:)``) or nil
    /// (/dev/null).
    init(
        _ arguments: [String],
        stdin: String? = nil,
        directory: TempDirectory,
        environment: [String: String]? = nil
    )
        throws
    {
        let tag = UUID().uuidString.prefix(8)
        outputPath = directory.file("out-\(tag)")
        errorPath = directory.file("err-\(tag)")
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        // Close-on-exec: other tests' child processes, exit tests among them, must not inherit these files,
        // or their descriptor counts see strangers. The child gets its copies as 0, 1 and 2.
        let output = try Self.cloexecDescriptor(outputPath, O_WRONLY)
        defer { close(output) }
        let error = try Self.cloexecDescriptor(errorPath, O_WRONLY)
        defer { close(error) }
        let pipe = stdin == "pipe" ? try TestPipe() : nil
        let file = try stdin.flatMap { $0 == "pipe" ? nil : try Self.cloexecDescriptor($0, O_RDONLY) }
        defer { if let file { close(file) } }
        inputPipe = pipe
        let input = pipe?.read ?? file
        let merged = environment.map { ProcessInfo.processInfo.environment.merging($0) { $1 } }
        process = try ChildProcess(
            arguments[0],
            Array(arguments.dropFirst()),
            environment: merged,
            stdin: input,
            stdout: output,
            stderr: error
        )
    }

    var pid: Int32 { process.pid }

    func write(_ bytes: [UInt8]) {
        guard let fd = inputPipe?.write, fd >= 0 else { return }
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return }
            offset += count
        }
    }

    func closeInput() { inputPipe?.closeWrite() }

    /// Waits up to `seconds`; kills the process (SIGKILL) if it is still running then.
    /// - Returns: the exit status, or nil if it had to be killed or died of a signal.
    @discardableResult
    func wait(seconds: Double = 30) -> Int32? {
        process.wait(seconds: seconds) ? process.exitStatus : nil
    }

    var terminatedBySignal: Bool { process.terminationSignal != nil }

    func signal(_ number: Int32) { process.signal(number) }

    var output: [UInt8] { Array((try? Data(contentsOf: URL(fileURLWithPath: outputPath))) ?? Data()) }
    var outputText: String { String(decoding: output, as: UTF8.self) }
    var errorText: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }
}

/// The result of a finished process.
struct CLIResult {
    let status: Int32?
    let output: [UInt8]
    let error: String
    var outputText: String { String(decoding: output, as: UTF8.self) }
}

/// A short temporary directory (/tmp/uds-XXXXXX): socket paths hold 107 bytes.
final class TempDirectory: @unchecked Sendable {
    let path: String

    init(worldReadable: Bool = false) throws {
        var template = Array("/tmp/uds-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw CocoaError(.fileWriteUnknown)
        }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if worldReadable { chmod(path, 0o755) }
    }

    func file(_ name: String) -> String { path + "/" + name }

    /// Writes `bytes` to a new file and returns its path.
    func write(_ name: String, _ bytes: [UInt8]) -> String {
        let target = file(name)
        _ = FileManager.default.createFile(atPath: target, contents: Data(bytes))
        return target
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

extension CLI {
    /// Runs a command to completion (time-limited) with stdin from a file (or /dev/null).
    static func runProcess(
        _ arguments: [String],
        stdin: String? = nil,
        in directory: TempDirectory,
        seconds: Double = 30,
        environment: [String: String]? = nil
    ) throws -> CLIResult {
        let spawned = try Spawned(arguments, stdin: stdin, directory: directory, environment: environment)
        let status = spawned.wait(seconds: seconds)
        return CLIResult(status: status, output: spawned.output, error: spawned.errorText)
    }

    /// Runs `uds` with `arguments`.
    static func uds(
        _ arguments: [String],
        stdin: String? = nil,
        in directory: TempDirectory,
        seconds: Double = 30,
        environment: [String: String]? = nil
    ) throws -> CLIResult {
        try runProcess(
            [try #require(CLI.executable)] + arguments,
            stdin: stdin,
            in: directory,
            seconds: seconds,
            environment: environment
        )
    }

    /// Starts `uds` with `arguments` in the background.
    static func spawnUDS(_ arguments: [String], stdin: String? = nil, in directory: TempDirectory) throws -> Spawned {
        try Spawned([try #require(CLI.executable)] + arguments, stdin: stdin, directory: directory)
    }

    /// Runs a python3 script (the peer) with `arguments` (sys.argv[1...]).
    static func python(
        _ script: String,
        _ arguments: [String] = [],
        stdin: String? = nil,
        in directory: TempDirectory,
        seconds: Double = 30
    ) throws -> CLIResult {
        try runProcess([CLI.python, "-c", script] + arguments, stdin: stdin, in: directory, seconds: seconds)
    }

    static func spawnPython(_ script: String, _ arguments: [String] = [], in directory: TempDirectory) throws -> Spawned
    {
        try Spawned([CLI.python, "-c", script] + arguments, directory: directory)
    }

    /// Waits until a socket file exists at `path` (the server is listening), up to `seconds`.
    static func waitForSocket(_ path: String, seconds: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            var info = stat()
            if lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK { return true }
            usleep(10_000)
        }
        return false
    }

    /// Waits until `condition` holds, up to `seconds`.
    /// The port a `uds bridge tcp:127.0.0.1:0 ...` says on stderr that it listens on; 0 if it never says.
    static func listeningPort(of bridge: Spawned) -> Int {
        var port = 0
        _ = waitUntil {
            if let range = bridge.errorText.range(of: "127.0.0.1:"),
                let value = Int(bridge.errorText[range.upperBound...].prefix { $0.isNumber })
            {
                port = value
            }
            return port > 0
        }
        return port
    }

    static func waitUntil(seconds: Double = 20, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    /// Whether anything exists at `path` (a socket file left behind, or not).
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var index = 0
            while index + 8 <= raw.count {
                raw.storeBytes(of: generator.next() as UInt64, toByteOffset: index, as: UInt64.self)
                index += 8
            }
            while index < raw.count {
                raw[index] = UInt8.random(in: 0...255, using: &generator)
                index += 1
            }
        }
        return bytes
    }

    /// A runtime error is exactly one stderr line starting `uds: `.
    static func isOneUDSLine(_ text: String) -> Bool {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        return lines.count == 1 && lines[0].hasPrefix("uds: ")
    }
}
