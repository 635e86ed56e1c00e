// `uds bench` plumbing: the job description shared by the measuring process and its peer, process
// spawning with an inherited readiness pipe, CPU pinning, the descriptor limit, statistics, and running
// async code from the synchronous command.
import CBaseline
import Foundation
import Synchronization
import UnixSockets

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif

/// What one side of one run does. The measuring process encodes it as JSON for `uds bench --peer JOB`.
struct BenchJob: Codable, Sendable, Hashable {
    enum Scenario: String, Codable, Sendable { case rtt, throughput, fdpass, accept, many }
    enum Impl: String, Codable, Sendable { case swift, c }
    /// blocking API, async API on the default executor, async API on the reactor's executor.
    enum API: String, Codable, Sendable {
        case blocking
        case async
        case asyncReactor = "async-reactor"
    }
    enum Role: String, Codable, Sendable { case server, client }

    var scenario: Scenario
    var impl: Impl
    var api: API
    var role: Role = .server
    var type: String  // "stream", "seqpacket", "dgram"
    var size: Int = 64
    var warmup: Int = 0
    /// rtt: timed round trips; fdpass: descriptors; accept: connections; many: round trips per client.
    var iterations: Int = 0
    var totalBytes: UInt64 = 0
    var sockbuf: Int = 0
    var clients: Int = 0
    var path: String
    var clientPath: String
    var cpu: Int? = nil
    /// Descriptor to write the one readiness byte to (-1: none).
    var readyFD: Int32 = -1
    /// Seconds after which a peer kills itself (a server waits forever for a client that never comes).
    var watchdog: UInt32 = 0

    var socketType: Int32 {
        switch type {
        case "seqpacket": Int32(SOCK_SEQPACKET.rawValue)
        case "dgram": Int32(SOCK_DGRAM.rawValue)
        default: Int32(SOCK_STREAM.rawValue)
        }
    }
}

/// A bench failure, printed as one `uds: ` line.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }

    /// From a CBaseline return code (-errno).
    static func c(_ what: String, _ rc: Int32) -> BenchError {
        BenchError("\(what): \(String(cString: strerror(-rc))) (errno \(-rc))")
    }
}

// MARK: - Process environment

enum BenchSystem {
    /// Raises RLIMIT_NOFILE's soft limit to the hard limit (descriptor passing and 1,000 clients need it).
    @discardableResult
    static func raiseDescriptorLimit() -> UInt64 {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return UInt64(limit.rlim_cur)
    }

    /// The CPUs this process may run on (call before pinning).
    static func allowedCPUs() -> [Int] {
        let count = cb_cpu_count()
        guard count > 0 else { return [0] }
        return (0..<count).compactMap { index in
            let cpu = cb_allowed_cpu(index)
            return cpu >= 0 ? Int(cpu) : nil
        }
    }

    static func pin(_ cpu: Int) throws(BenchError) {
        let rc = cb_pin_to_cpu(Int32(cpu))
        if rc != 0 { throw BenchError.c("sched_setaffinity(CPU \(cpu))", rc) }
    }

    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 { return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments[0]
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// A short private directory for the socket files (sun_path holds 107 bytes).
    static func makeTempDir() throws(BenchError) -> String {
        var template = Array("/tmp/udsb-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard made != nil else { throw BenchError("mkdtemp: \(String(cString: strerror(errno)))") }
        return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    static func kernelRelease() -> String {
        var name = utsname()
        uname(&name)
        return withUnsafeBytes(of: &name.release) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    static func stderrIsTerminal() -> Bool { isatty(2) == 1 }

    static func writeStderr(_ text: String) {
        var text = text
        text.withUTF8 { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { if n < 0 && errno == EINTR { continue } else { return } }
                offset += n
            }
        }
    }
}

// MARK: - The peer process

/// A running `uds bench --peer` process: the server side of one run.
struct BenchPeer {
    let pid: pid_t

    /// Starts `executable bench --peer JOB` with the write end of a pipe as descriptor 3 and waits (up to
    /// `timeout`) for its readiness byte.
    static func start(_ job: BenchJob, executable: String, timeout: Int32 = 20_000) throws -> BenchPeer {
        var job = job
        job.readyFD = 3
        let json = String(decoding: try JSONEncoder().encode(job), as: UTF8.self)
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw BenchError("pipe: \(String(cString: strerror(errno)))") }
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        defer { close(fds[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if fds[1] == 3 {
            // dup2 onto itself would keep CLOEXEC: clear it (nothing else spawns meanwhile).
            _ = fcntl(3, F_SETFD, 0)
        } else {
            posix_spawn_file_actions_adddup2(&actions, fds[1], 3)
        }
        let arguments = [executable, "bench", "--peer", json]
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, nil, argv, environ)
        close(fds[1])
        guard status == 0 else { throw BenchError("posix_spawn \(executable): \(String(cString: strerror(status)))") }
        let peer = BenchPeer(pid: pid)
        var entry = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        while true {
            let ready = poll(&entry, 1, timeout)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 {
                peer.kill()
                throw BenchError("the bench peer did not become ready in \(timeout / 1000) s")
            }
            break
        }
        var byte: UInt8 = 0
        let count = read(fds[0], &byte, 1)
        if count != 1 {
            let code = peer.wait() ?? "exit status 0"
            throw BenchError("the bench peer exited before it was ready (\(code))")
        }
        return peer
    }

    func kill() {
        _ = Glibc.kill(pid, SIGKILL)
        _ = wait()
    }

    /// Waits for the peer; returns a description of a failure, or nil when it exited with 0.
    @discardableResult
    func wait() -> String? {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return "waitpid: \(String(cString: strerror(errno)))" }
        }
        let signal = status & 0x7f
        if signal != 0 { return "killed by signal \(signal)" }
        let code = (status >> 8) & 0xff
        return code == 0 ? nil : "exit status \(code)"
    }
}

// MARK: - Async from the synchronous command

private final class AsyncOutcome<T: Sendable>: @unchecked Sendable {
    // @unchecked: `result` is written by the task before `done.signal()` and read after `done.wait()`.
    var result: Result<T, any Error>?
    let done = DispatchSemaphore(value: 0)
}

/// Runs `body` in a task (on the reactor's executor when `onReactor`) and blocks the calling thread,
/// which is not one of the cooperative pool's, until it finishes.
func runBlocking<T: Sendable>(onReactor: Bool, _ body: @escaping @Sendable () async throws -> T) throws -> T {
    let outcome = AsyncOutcome<T>()
    let work: @Sendable () async -> Void = {
        do { outcome.result = .success(try await body()) } catch { outcome.result = .failure(error) }
        outcome.done.signal()
    }
    if onReactor {
        Task(executorPreference: UnixReactor.shared) { await work() }
    } else {
        Task { await work() }
    }
    outcome.done.wait()
    return try outcome.result!.get()
}

// MARK: - Statistics

enum BenchStats {
    static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// Nearest-rank percentile of sorted values.
    static func percentile(_ sorted: [UInt64], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
        return Double(sorted[min(max(rank, 1), sorted.count) - 1])
    }
}
