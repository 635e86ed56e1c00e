import Foundation
import Synchronization
import SystemPackage
import UnixSockets

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The one way `uds` ends once a command is running: cleanups first (listeners close and remove their
/// socket files), then at most one `uds: ` line, then the exit status. Whichever thread ends the process
/// first wins; any other thread that tries afterwards waits for the exit.
enum Lifecycle {
    private struct State {
        var exiting = false
        var cleanups: [@Sendable () -> Void] = []
    }

    private static let state = Mutex(State())
    /// Held while a resource is made and its cleanup registered; `exit` waits for it.
    private static let startup = NSLock()

    /// Runs `body` (make a socket, register its cleanup) so that no exit happens in the middle.
    static func starting<R>(_ body: () throws -> R) rethrows -> R {
        startup.lock()
        defer { startup.unlock() }
        return try body()
    }

    /// Runs `cleanup` before the process exits, on every path (success, error, SIGINT, SIGTERM).
    static func onExit(_ cleanup: @escaping @Sendable () -> Void) {
        state.withLock { $0.cleanups.append(cleanup) }
    }

    /// Ends the process with `code`, after the cleanups; `message` (an error) is printed as `uds: message`.
    static func exit(_ code: Int32, message: String? = nil) -> Never {
        startup.lock()  // never released: the process ends (a second caller waits here, like below)
        let cleanups = state.withLock { state -> [@Sendable () -> Void]? in
            if state.exiting { return nil }
            state.exiting = true
            return state.cleanups
        }
        guard let cleanups else {
            while true { pause() }  // another thread is ending the process
        }
        for cleanup in cleanups.reversed() { cleanup() }
        if let message { diagnostic(message) }
        processExit(code)
    }

    /// Ends the process with status 1 and one `uds: ` line describing `error`.
    static func fail(_ error: any Error) -> Never {
        exit(1, message: describe(error))
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
        default: String(describing: error)
        }
    }

    /// SIGINT and SIGTERM end the process cleanly (cleanups run, socket files are removed, status 0).
    ///
    /// The signals are blocked in this thread before any other thread exists, so every thread inherits the
    /// mask, and one dedicated thread takes them with sigwait: no async-signal-safety constraints.
    static func handleTerminationSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        let mask = set
        Thread.detachNewThread {
            var wanted = mask
            var signal: CInt = 0
            while sigwait(&wanted, &signal) != 0 {}
            Lifecycle.exit(0)
        }
    }

    /// Runs `body` on a new thread (one per role, never one per client).
    static func thread(_ body: @escaping @Sendable () -> Void) {
        Thread.detachNewThread(body)
    }

    /// Pauses the calling thread.
    static func sleep(milliseconds: Int) {
        usleep(useconds_t(milliseconds * 1000))
    }

    /// Blocks the calling thread until the process exits.
    static func parkForever() -> Never {
        while true { pause() }
    }
}

/// exit(3): stdio flushed, atexit handlers run.
func processExit(_ code: Int32) -> Never { exit(code) }

/// A runtime error of the CLI itself (not the library's): printed as `uds: message`, status 1.
struct CLIError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// Runs a command body: runtime errors become one `uds: ` line and status 1.
func runCommand(_ body: () throws -> Void) -> Never {
    do {
        try body()
    } catch {
        Lifecycle.fail(error)
    }
    Lifecycle.exit(0)
}
