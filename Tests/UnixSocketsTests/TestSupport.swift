import CUnixSockets
import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// A short temporary directory (socket paths hold 107 bytes), removed by `cleanup()`.
struct TempDir {
    let path: String

    init() throws {
        var template = Array("/tmp/uds-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw UnixSocketError(.system, operation: "mkdtemp") }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func file(_ name: String) -> String { path + "/" + name }
    func address(_ name: String) -> UnixAddress { UnixAddress(stringLiteral: file(name)) }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

/// A unique abstract name for this test run.
func uniqueAbstract(_ tag: String = "t") -> UnixAddress {
    let name = "uds-test-\(getpid())-\(tag)-\(UInt64.random(in: 0...UInt64.max))"
    return try! UnixAddress("@" + name)  // ASCII, well under 107 bytes
}

/// The number of open descriptors of this process.
func openDescriptorCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// Runs a test (or every test of a suite) with the reactor as its task executor.
///
/// Swift Testing runs synchronous tests on the cooperative pool, which has one thread per core (two here).
/// Many tests block a thread on purpose (blocking sockets, child processes), and async tests running beside
/// them could then wait for a pool thread longer than their own timeouts. On the reactor's thread they do
/// not depend on the pool. (Unstructured `Task {}`s do not inherit the preference: use
/// `Task(executorPreference: UnixReactor.shared)`.)
struct OnReactorTrait: TestTrait, SuiteTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(
        for test: Test,
        testCase: Test.Case?,
        performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(UnixReactor.shared) { try await function() }
    }
}

extension Trait where Self == OnReactorTrait {
    /// Run on the reactor executor (see `OnReactorTrait`).
    static var onReactor: Self { Self() }
}

/// A child process started with `posix_spawn`, for the tests' peers.
///
/// Not Foundation's `Process`: on Linux its `run()` scans /proc/self/fd copying a fixed 256 bytes of each
/// directory entry's name, reading past the end of readdir's buffer; when the test process holds many
/// descriptors (parallel tests do) the last entry can sit at the end of a mapping and the whole suite dies of
/// SIGSEGV in memmove under `Process.run` (swift-corelibs-foundation #5472; it crashed CI here).
///
/// The child gets `stdin`/`stdout`/`stderr` as given (/dev/null otherwise), every other descriptor closed,
/// an empty signal mask and default dispositions. It is killed (SIGKILL) and reaped when this object goes
/// away, so a failing test leaves nothing running.
final class ChildProcess: @unchecked Sendable {  // used by one test at a time
    let pid: pid_t
    private var reaped: CInt?

    /// Starts `executable` with `arguments` (argv[1...]), with `environment` (the whole environment; nil
    /// inherits this process's).
    init(
        _ executable: String,
        _ arguments: [String],
        environment: [String: String]? = nil,
        stdin: CInt? = nil,
        stdout: CInt? = nil,
        stderr: CInt? = nil
    ) throws {
        let null = open("/dev/null", O_RDWR | O_CLOEXEC)
        guard null >= 0 else { throw UnixSocketError.system("open /dev/null", Errno(rawValue: errno)) }
        defer { close(null) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (source, target) in [(stdin ?? null, CInt(0)), (stdout ?? null, 1), (stderr ?? null, 2)] {
            posix_spawn_file_actions_adddup2(&actions, source, target)
        }
        guard let closeFrom, closeFrom(&actions, 3) == 0 else {
            throw UnixSocketError(.system, operation: "posix_spawn_file_actions_addclosefrom_np (glibc 2.34 or later)")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var signals = sigset_t()
        sigemptyset(&signals)
        posix_spawnattr_setsigmask(&attributes, &signals)
        sigfillset(&signals)
        posix_spawnattr_setsigdefault(&attributes, &signals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) }
        let environmentEntries = (environment ?? ProcessInfo.processInfo.environment).map {
            strdup("\($0.key)=\($0.value)")
        }
        defer { (argv + environmentEntries).forEach { free($0) } }
        var child = pid_t()
        let result = posix_spawn(&child, executable, &actions, &attributes, argv + [nil], environmentEntries + [nil])
        guard result == 0 else {
            throw UnixSocketError.system("posix_spawn \(executable)", Errno(rawValue: result))
        }
        pid = child
    }

    /// Whether the child is still running (reaps it if it has exited).
    var isRunning: Bool {
        if reaped != nil { return false }
        var status: CInt = 0
        let result = waitpid(pid, &status, WNOHANG)
        if result == pid { reaped = status }
        return result == 0
    }

    /// Waits at most `seconds` for the child to exit; SIGKILLs and reaps it if it is still running then.
    /// - Returns: whether it exited by itself.
    @discardableResult
    func wait(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning {
            if Date() >= deadline {
                signal(SIGKILL)
                waitUntilExit()
                return false
            }
            usleep(5_000)
        }
        return true
    }

    /// Blocks until the child has exited.
    func waitUntilExit() {
        while reaped == nil {
            var status: CInt = 0
            let result = waitpid(pid, &status, 0)
            if result == pid { reaped = status } else if result < 0 && errno != EINTR { reaped = -1 }
        }
    }

    /// Sends `number` to the child if it has not been reaped.
    func signal(_ number: CInt) { if reaped == nil { kill(pid, number) } }

    /// The exit status, if the child has been reaped and exited normally.
    var exitStatus: CInt? {
        guard let status = reaped, status >= 0, status & 0x7F == 0 else { return nil }
        return (status >> 8) & 0xFF
    }

    /// The signal that ended the child, if it was reaped after dying of one.
    var terminationSignal: CInt? {
        guard let status = reaped, status >= 0, status & 0x7F != 0, status & 0x7F != 0x7F else { return nil }
        return status & 0x7F
    }

    deinit {
        if reaped == nil {
            kill(pid, SIGKILL)
            waitUntilExit()
        }
    }
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34), which the Glibc module hides behind
/// _GNU_SOURCE: looked up once by name.
/// (nil before glibc 2.34: starting a child then throws.)
private let closeFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, CInt) -> CInt)? = {
    guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(
        symbol,
        to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, CInt) -> CInt).self
    )
}()

/// A pipe whose two ends are close-on-exec in this process (a child gets one end through `ChildProcess`).
final class TestPipe: @unchecked Sendable {  // used by one test at a time
    let read: CInt
    private(set) var write: CInt

    init() throws {
        var ends: [CInt] = [-1, -1]
        guard uds_pipe2(&ends, O_CLOEXEC) == 0 else { throw UnixSocketError.system("pipe2", Errno(rawValue: errno)) }
        read = ends[0]
        write = ends[1]
    }

    /// Closes this process's write end (after the child has its copy: the reader then sees EOF when the
    /// child exits).
    func closeWrite() {
        if write >= 0 { close(write) }
        write = -1
    }

    deinit {
        close(read)
        closeWrite()
    }
}

/// Runs blocking socket calls from an async context (an exit test's body): the closure is synchronous, so
/// the blocking overloads (marked `noasync`) are the ones meant.
func synchronously(_ body: () throws -> Void) rethrows { try body() }
