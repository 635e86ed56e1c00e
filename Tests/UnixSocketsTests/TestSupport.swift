import Foundation
import SystemPackage
import Testing
@testable import UnixSockets

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
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await withTaskExecutorPreference(UnixReactor.shared) { try await function() }
    }
}

extension Trait where Self == OnReactorTrait {
    /// Run on the reactor executor (see `OnReactorTrait`).
    static var onReactor: Self { Self() }
}

/// Starts `process` while holding a process-wide lock. Foundation's `Process.run()` on Linux is not safe to
/// call from several threads at once (a concurrent launch crashed in memmove inside `Process.run`), and
/// Swift Testing runs tests in parallel.
func launch(_ process: Process) throws {
    processLaunchLock.lock()
    defer { processLaunchLock.unlock() }
    try process.run()
}

private let processLaunchLock = NSLock()
