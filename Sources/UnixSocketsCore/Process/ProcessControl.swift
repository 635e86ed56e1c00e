import Dispatch
package import SystemPackage
import UnixSocketsSystem

/// Process-wide controls for the `uds` executable: signals, the descriptor limit, who we are. `package`
/// only: the library never changes process-wide state (signal dispositions, limits) on its own.
package enum ProcessControl {
    /// The signals a command may want to end on.
    package enum ProcessSignal: Sendable, Hashable, CaseIterable {
        case interrupt, terminate, hangup

        package var number: CInt {
            switch self {
            case .interrupt: system_SIGINT
            case .terminate: system_SIGTERM
            case .hangup: system_SIGHUP
            }
        }
    }

    /// A reader that goes away makes writes fail with EPIPE instead of killing the process (SIGPIPE).
    package static func ignoreBrokenPipe() { system_ignoreSignal(system_SIGPIPE) }

    /// Each of `signals` is ignored (its default action, ending the process, no longer happens) and
    /// delivered to the stream instead, through a Dispatch signal source (no async-signal-safety limits).
    /// The sources live as long as the process.
    package static func signals(_ signals: Set<ProcessSignal> = [.interrupt, .terminate]) -> AsyncStream<ProcessSignal>
    {
        let (stream, continuation) = AsyncStream.makeStream(of: ProcessSignal.self)
        let queue = DispatchQueue(label: "uds.signals")
        var sources: [any DispatchSourceSignal] = []
        for signal in signals {
            system_ignoreSignal(signal.number)
            let source = DispatchSource.makeSignalSource(signal: signal.number, queue: queue)
            source.setEventHandler { continuation.yield(signal) }
            source.resume()
            sources.append(source)
        }
        // Dispatch installs its own handler for a signal source asynchronously, some time after resume()
        // returns; until then the signal is ignored and lost (a SIGTERM right after the command started hung
        // `uds listen`). Wait, bounded, until every disposition has left SIG_IGN.
        var waited = 0
        while waited < 2_000 && signals.contains(where: { system_signalIsIgnored($0.number) }) {
            system_nanosleep(nanoseconds: 1_000_000)
            waited += 1
        }
        let kept = SignalSources(sources)
        continuation.onTermination = { _ in kept.cancel() }
        return stream
    }

    /// Keeps the sources alive until the stream ends.
    private final class SignalSources: @unchecked Sendable {  // immutable after init; DispatchSource is thread-safe
        let sources: [any DispatchSourceSignal]
        init(_ sources: [any DispatchSourceSignal]) { self.sources = sources }
        func cancel() { for source in sources { source.cancel() } }
    }

    package static var processID: Int32 { system_getpid() }
    package static var userID: UInt32 { system_getuid() }
    package static var groupID: UInt32 { system_getgid() }

    /// Whether `fd` is a terminal.
    package static func isTerminal(_ fd: FileDescriptor) -> Bool { system_isatty(fd.rawValue) }

    /// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the soft limit in force (0 if unknown).
    @discardableResult
    package static func raiseDescriptorLimit() -> UInt64 {
        guard case .success(let (soft, hard)) = system_getDescriptorLimit() else { return 0 }
        if soft < hard, case .success = system_setDescriptorLimit(soft: hard, hard: hard) { return hard }
        return soft
    }

    /// Ends the process with `status`. For a `main` that has nothing to unwind (test support); commands
    /// return from `run` instead.
    package static func exit(status: Int32) -> Never { system_exit(status) }

    /// The process ends (SIGALRM) after `seconds` unless it ended before: a watchdog for a helper process.
    package static func endAfter(seconds: UInt32) { system_alarm(seconds) }
}
