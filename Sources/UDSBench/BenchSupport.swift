// `uds bench` plumbing: the job description shared by the measuring process and its peer, the peer process
// (swift-subprocess, its stdout the readiness pipe), CPU pinning, the descriptor limit, statistics.
import CBaseline
import Foundation
import Subprocess
import SystemPackage
import UnixSockets

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
    var type: UnixSocketType
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
    /// Descriptor to write the one readiness byte to (-1: none); the peer's stdout when started by the bench.
    var readyFD: Int32 = -1
    /// Seconds after which a peer kills itself (a server waits forever for a client that never comes).
    var watchdog: UInt32 = 0

    /// The C baseline's SOCK_* constant: CBaseline takes the same names as the type's raw values.
    var socketType: Int32 {
        let number = cb_socket_type(type.rawValue)
        precondition(number >= 0, "CBaseline knows no socket type '\(type.rawValue)'")
        return number
    }
}

/// The job travels to the peer process as JSON: the type as its raw value (`stream`, `seqpacket`, `dgram`).
extension UnixSocketType: Codable {}

/// A bench failure, printed as one `uds: ` line.
struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }

    /// From a CBaseline return code (-errno).
    static func c(_ what: String, _ rc: Int32) -> BenchError {
        BenchError("\(what): \(Errno(rawValue: -rc)) (errno \(-rc))")
    }
}

// MARK: - Process environment

enum BenchSystem {
    /// Raises RLIMIT_NOFILE's soft limit to the hard limit (descriptor passing and 1,000 clients need it).
    @discardableResult
    static func raiseDescriptorLimit() -> UInt64 { ProcessControl.raiseDescriptorLimit() }

    /// The CPUs this process may run on (call before pinning).
    static func allowedCPUs() -> [Int] {
        let count = cb_cpu_count()
        guard count > 0 else { return [0] }
        return (0..<count).compactMap { index in
            let cpu = cb_allowed_cpu(index)
            return cpu >= 0 ? Int(cpu) : nil
        }
    }

    /// Runs a blocking job on an OS thread of its own, as a blocking program runs, and awaits its result. A
    /// blocking loop run on a thread of the concurrency pool measured 5 % slower round trips here (seqpacket
    /// 64 B, `uds bench --peer` with both sides on CPU 0, medians of 8 runs), and it would hold a pool
    /// thread the async code needs.
    static func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try body() }) }.start()
        }
    }

    /// Pins the whole process, every thread of it: the command is async, so the concurrency pool's threads
    /// may exist already.
    static func pin(_ cpu: Int) throws(BenchError) {
        let rc = cb_pin_process_to_cpu(Int32(cpu))
        if rc != 0 { throw BenchError.c("sched_setaffinity(CPU \(cpu))", rc) }
    }

    static func executablePath() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// The clock's origin: timings are differences, in ns.
    private static let origin = ContinuousClock.now

    static func now() -> UInt64 {
        let origin = origin  // initialized before the reading below (a lazy global)
        let elapsed = (ContinuousClock.now - origin).components
        return UInt64(elapsed.seconds) * 1_000_000_000 + UInt64(elapsed.attoseconds / 1_000_000_000)
    }

    /// A short private directory for the socket files (sun_path holds 107 bytes).
    static func makeTempDir() throws(BenchError) -> String {
        var lastError: (any Error)?
        for _ in 0..<16 {
            let path = "/tmp/udsb-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
            do {
                try FileManager.default.createDirectory(
                    atPath: path,
                    withIntermediateDirectories: false,
                    attributes: [.posixPermissions: 0o700]
                )
                return path
            } catch {
                lastError = error  // taken: another name
            }
        }
        throw BenchError("create a directory in /tmp: \(lastError.map { "\($0)" } ?? "?")")
    }

    static func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    static func kernelRelease() -> String {
        guard let file = try? FileDescriptor.open("/proc/sys/kernel/osrelease", .readOnly, options: [.closeOnExec])
        else { return "" }
        defer { try? file.close() }
        var bytes = [UInt8](repeating: 0, count: 256)
        let count = (try? bytes.withUnsafeMutableBytes { try file.read(into: $0) }) ?? 0
        return String(decoding: bytes[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    static func stderrIsTerminal() -> Bool { ProcessControl.isTerminal(.standardError) }

    static func writeStderr(_ text: String) {
        _ = try? Array(text.utf8).withUnsafeBytes { try FileDescriptor.standardError.writeAll($0) }
    }
}

// MARK: - The peer process

/// Runs the server side of one run, `executable bench --peer JOB`, as a subprocess whose stdout is the
/// readiness channel (one byte once it listens), and `body` (the client) once it is ready; then waits for
/// the peer to exit. A failing body kills the peer.
enum BenchPeer {
    static func run<T: Sendable>(
        _ job: BenchJob,
        executable: String,
        timeout: Duration = .seconds(20),
        _ body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        var job = job
        job.readyFD = 1
        let json = String(decoding: try JSONEncoder().encode(job), as: UTF8.self)
        let outcome = try await Subprocess.run(
            .path(FilePath(executable)),
            arguments: ["bench", "--peer", json],
            input: .none,
            output: .sequence,
            error: .currentStandardError
        ) { execution in
            let ready = try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for try await _ in execution.standardOutput { return true }
                    return false  // stdout closed without the byte: it exited
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    throw BenchError("the bench peer did not become ready in \(timeout.components.seconds) s")
                }
                defer { group.cancelAll() }
                return try await group.next()!
            }
            guard ready else { return Result<T, any Error>.failure(NotReady()) }
            do {
                return .success(try await body())
            } catch {
                try? execution.send(signal: .kill)
                return .failure(error)
            }
        }
        let value: T
        do {
            value = try outcome.closureResult.get()
        } catch is NotReady {
            let status = Result { () throws(ServerFailure) in try check(outcome.terminationStatus) }
            let code = if case .failure(let failure) = status { failure.description } else { "exit status 0" }
            throw BenchError("the bench peer exited before it was ready (\(code))")
        }
        try Self.check(outcome.terminationStatus)
        return value
    }

    /// Its stdout closed without the readiness byte.
    private struct NotReady: Error {}

    /// The peer exited with a failure once the client was done.
    struct ServerFailure: Error, CustomStringConvertible {
        let description: String
    }

    static func check(_ status: TerminationStatus) throws(ServerFailure) {
        switch status {
        case .exited(0): return
        case .exited(let code): throw ServerFailure(description: "exit status \(code)")
        case .signaled(let signal): throw ServerFailure(description: "killed by signal \(signal)")
        }
    }
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
