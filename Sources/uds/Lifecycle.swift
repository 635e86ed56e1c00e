import ArgumentParser
import Foundation
import Synchronization
import SystemPackage
import UnixSockets

/// How a running command ends, without ending the process from any thread: the command's roles (its body
/// on a thread of its own, a stdin pump, the signal watcher) each may decide the outcome; the first one to
/// do so wins and the command's `run` returns (status 0) or throws `ExitCode(1)` after its one `uds: `
/// line. Cleanups run first: listeners close, which removes the socket files they created.
enum Lifecycle {
    private struct State {
        var ended = false
        var cleanups: [@Sendable () -> Void] = []
    }

    private static let state = Mutex(State())
    private static let current = Mutex<CommandOutcome?>(nil)

    /// The outcome of the running command (one per process), for its roles that were not handed it.
    static var outcome: CommandOutcome? { current.withLock { $0 } }
    /// Held while a resource is made and its cleanup registered; ending waits for it.
    private static let startup = NSLock()

    /// Runs `body` (make a socket, register its cleanup) so that the command does not end in the middle;
    /// once it has ended, nothing new is made (``CommandEnd`` is thrown instead).
    static func starting<R>(_ body: () throws -> R) throws -> R {
        startup.lock()
        defer { startup.unlock() }
        if state.withLock({ $0.ended }) { throw CommandEnd() }
        return try body()
    }

    /// Runs `cleanup` when the command ends, on every path (success, error, SIGINT, SIGTERM); at once if
    /// it has ended already.
    static func onExit(_ cleanup: @escaping @Sendable () -> Void) {
        let ended = state.withLock { state -> Bool in
            if !state.ended { state.cleanups.append(cleanup) }
            return state.ended
        }
        if ended { cleanup() }
    }

    /// Runs the cleanups once, newest first (after any resource being made meanwhile is registered).
    static func end() {
        startup.lock()
        let cleanups = state.withLock { state -> [@Sendable () -> Void] in
            state.ended = true
            defer { state.cleanups = [] }
            return state.cleanups
        }
        startup.unlock()
        for cleanup in cleanups.reversed() { cleanup() }
    }

    /// Prints `uds: message` on stderr (diagnostics never go to stdout).
    static func diagnostic(_ message: String) {
        let line = Array(("uds: " + message.replacingOccurrences(of: "\n", with: " ") + "\n").utf8)
        _ = try? line.withUnsafeBytes { try FileDescriptor.standardError.writeAll($0) }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case let error as UnixSocketError: error.description
        case let error as CLIError: error.message
        case let error as StdioRelay.Failure: error.description
        default: String(describing: error)
        }
    }

    /// Runs a command whose body blocks: `body` on a thread of its own (one per command, never one per
    /// client), until it returns, throws, or decides the outcome itself; with `endOnSignals`, SIGINT and
    /// SIGTERM end it cleanly (status 0). Then the cleanups run, and a failure is printed and thrown as
    /// `ExitCode(1)`.
    static func run(
        endOnSignals: Bool = false,
        _ body: @escaping @Sendable (CommandOutcome) throws -> Void
    ) async throws {
        let outcome = CommandOutcome()
        current.withLock { $0 = outcome }
        if endOnSignals { watchSignals(outcome) }
        Thread.detachNewThread {
            do {
                try body(outcome)
                outcome.finish(.success)
            } catch {
                outcome.finish(error)
            }
        }
        try await conclude(outcome)
    }

    /// Same for a command whose body is async (it holds no thread while it waits). With `onReactor`, the
    /// body and its child tasks prefer the library's reactor as their executor (a ready socket is served on
    /// the reactor thread, no hop): only for bodies that never block on anything but sockets.
    static func runAsync(
        endOnSignals: Bool = false,
        onReactor: Bool = false,
        _ body: @escaping @Sendable (CommandOutcome) async throws -> Void
    ) async throws {
        let outcome = CommandOutcome()
        current.withLock { $0 = outcome }
        if endOnSignals { watchSignals(outcome) }
        let work: @Sendable () async -> Void = {
            do {
                try await body(outcome)
                outcome.finish(.success)
            } catch {
                outcome.finish(error)
            }
        }
        if onReactor {
            Task(executorPreference: UnixReactor.shared) { await work() }
        } else {
            Task { await work() }
        }
        try await conclude(outcome)
    }

    private static func watchSignals(_ outcome: CommandOutcome) {
        let signals = ProcessControl.signals([.interrupt, .terminate])
        Task {
            for await _ in signals {
                outcome.finish(.success)
                return
            }
        }
    }

    private static func conclude(_ outcome: CommandOutcome) async throws {
        let result = await outcome.value()
        end()
        if case .failure(let message) = result {
            diagnostic(message)
            throw ExitCode(1)
        }
    }
}

/// Thrown where a command is done with status 0 deep inside its work (the peer's EOF after everything was
/// written, a stdout reader that went away, a listener closed by SIGINT/SIGTERM).
struct CommandEnd: Error {}

/// The outcome of a running command, decided once, awaited by its `run`.
final class CommandOutcome: Sendable {
    enum Result: Sendable {
        case success
        case failure(String)
    }

    private struct State {
        var result: Result?
        var waiter: CheckedContinuation<Result, Never>?
    }

    private let state = Mutex(State())

    /// Decides the outcome (the first decision wins; later ones are ignored).
    func finish(_ result: Result) {
        let waiter = state.withLock { state -> CheckedContinuation<Result, Never>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: result)
    }

    /// Decides the outcome from an error: the ends that mean status 0 are success, anything else is one line.
    func finish(_ error: any Error) {
        switch error {
        case is CommandEnd: finish(.success)
        case StdioRelay.Failure.outputClosed: finish(.success)
        default: finish(.failure(Lifecycle.describe(error)))
        }
    }

    /// The outcome if it was decided.
    var decided: Result? { state.withLock { $0.result } }

    func value() async -> Result {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Result? in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// A runtime error of the CLI itself (not the library's): printed as `uds: message`, status 1.
struct CLIError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// Runs a short synchronous command body on the calling thread: cleanups run at the end; a runtime error
/// becomes one `uds: ` line and `ExitCode(1)`.
func runCommand(_ body: () throws -> Void) throws {
    try endCommand(Result { try body() })
}

/// The same for a short async command body. Its own name, not an overload of ``runCommand(_:)``: a trailing
/// closure then never picks the blocking one by accident.
func runAsyncCommand(_ body: () async throws -> Void) async throws {
    let result: Result<Void, any Error>
    do {
        result = .success(try await body())
    } catch {
        result = .failure(error)
    }
    try endCommand(result)
}

/// How a short command ends, blocking or async: the cleanups run, then a failure is printed and thrown.
private func endCommand(_ result: Result<Void, any Error>) throws {
    let outcome = CommandOutcome()
    switch result {
    case .success: outcome.finish(.success)
    case .failure(let error): outcome.finish(error)
    }
    Lifecycle.end()
    if case .failure(let message) = outcome.decided {
        Lifecycle.diagnostic(message)
        throw ExitCode(1)
    }
}
