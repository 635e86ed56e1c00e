import Foundation
import Synchronization
import SystemPackage
import UnixSockets

/// stdin and stdout as the process inherited them, through the library's relay engine (``StdioRelay``).
enum StandardIO {
    static let input = FileDescriptor.standardInput
    static let output = FileDescriptor.standardOutput

    /// Writes all of `buffer` to stdout; a reader that went away throws ``StdioRelay/Failure/outputClosed``
    /// (the command then ends with status 0).
    static func write(_ buffer: UnsafeRawBufferPointer) throws(StdioRelay.Failure) {
        try StdioRelay.write(buffer, to: output)
    }

    static func write(_ bytes: [UInt8]) throws(StdioRelay.Failure) {
        try bytes.withUnsafeBytes { raw in Result { () throws(StdioRelay.Failure) in try write(raw) } }.get()
    }
}

/// The `listen`/`connect` relays of one connection: the library's engine does the copying; this decides
/// when the command ends.
enum Relay {
    /// Room for the largest message we accept (the kernel's default limit is about 208 KiB).
    static let messageCapacity = 1 << 22

    static func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer { StdioRelay.allocate(count) }

    /// Messages -> stdout: `receive` returns one message, or nil at EOF. A message that could not be
    /// received whole (too large, or its descriptors cut short) is reported on stderr and skipped.
    static func messagesToStdout(lines: Bool, _ receive: () throws(UnixSocketError) -> [UInt8]?) throws {
        try StdioRelay.messagesToOutput(StandardIO.output, lines: lines, skip: skipRecoverable, receive)
    }

    /// Says on stderr that one message was lost, if that is all the error costs.
    static func skipRecoverable(_ error: UnixSocketError) -> Bool {
        guard MessageReceiver.isRecoverable(error) else { return false }
        Lifecycle.diagnostic(error.description)
        return true
    }

    /// Prints one message (raw, or with a newline when `lines`).
    static func printMessage(_ bytes: [UInt8], lines: Bool) throws(StdioRelay.Failure) {
        try StdioRelay.writeMessage(bytes, lines: lines, to: StandardIO.output)
    }

    /// The `listen`/`connect` end rule for a connected stream: socket -> stdout on this thread, stdin ->
    /// socket on another (the pump, one per command). Once the peer's EOF arrived and everything is written
    /// out, it returns (see ``finishAfterPeerEOF(_:hungUp:)`` for stdin still being sent). A failed socket
    /// write before the peer's EOF (the peer went away) is a runtime error, decided by the pump.
    static func runStream(_ stream: UnixStream, useStdin: Bool, outcome: CommandOutcome) throws {
        let pump = StdinPump(outcome: outcome)
        if useStdin {
            pump.start {
                try StdioRelay.inputToStream(StandardIO.input, stream: stream) { pump.progressed() }
            }
        } else {
            pump.finish()
        }
        do {
            try StdioRelay.streamToOutput(stream, output: StandardIO.output)
        } catch let error as UnixSocketError where error.code == .closed {
            return
        }
        try finishAfterPeerEOF(pump) { stream.isHungUp }
    }

    /// The same end rule for a seqpacket connection (one message per line or stdin chunk). Descriptors that
    /// come with a message are closed (`verbose`: said on stderr).
    static func runSeqPacket(
        _ connection: UnixSeqPacket,
        useStdin: Bool,
        lines: Bool,
        verbose: Bool,
        outcome: CommandOutcome
    ) throws {
        let pump = StdinPump(outcome: outcome)
        if useStdin {
            pump.start {
                try StdioRelay.inputToMessages(StandardIO.input, lines: lines, skipEmpty: true) { bytes in
                    try connection.send(bytes)
                    pump.progressed()
                }
                try? connection.shutdown(.write)
            }
        } else {
            pump.finish()
        }
        do {
            try messagesToStdout(lines: lines) { () throws(UnixSocketError) -> [UInt8]? in
                try connection.receiveIgnoringDescriptors(verbose: verbose)
            }
        } catch let error as UnixSocketError where error.code == .closed {
            return
        }
        try finishAfterPeerEOF(pump) { connection.isHungUp }
    }

    /// After the peer's EOF, with everything received written out: done at once if the peer closed
    /// entirely (nothing more can be sent) or stdin is done; if the peer only shut down its write side and
    /// stdin is still being sent (a file or a busy pipe), finish sending it, as nc does; stdin that stays
    /// idle (a terminal, an open pipe) is not waited for beyond a short grace (0.5 s), as with socat.
    static func finishAfterPeerEOF(_ pump: StdinPump, hungUp: () -> Bool) throws {
        pump.peerEnded()
        while true {
            let (done, idle) = pump.status()
            if done || hungUp() || idle > .milliseconds(500) { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
    }
}

/// The stdin -> socket side of a relay: its progress, its end, and how its errors count.
final class StdinPump: Sendable {
    private struct State {
        var done = false
        var peerEnded = false
        var lastProgress = ContinuousClock.now
    }

    private let state = Mutex(State())
    private let outcome: CommandOutcome

    init(outcome: CommandOutcome) { self.outcome = outcome }

    /// Runs `body` (stdin -> socket) on a thread of its own: stdin is blocking and shared, the reactor
    /// cannot wait on it.
    func start(_ body: @escaping @Sendable () throws -> Void) {
        Thread.detachNewThread {
            do {
                try body()
                self.finish()
            } catch {
                self.fail(error)
            }
        }
    }

    /// A chunk or message was sent.
    func progressed() { state.withLock { $0.lastProgress = .now } }

    /// stdin reached its end and the write side was shut down.
    func finish() { state.withLock { $0.done = true } }

    /// The peer's EOF arrived on the other side.
    func peerEnded() { state.withLock { $0.peerEnded = true } }

    /// (done, time since the last progress).
    func status() -> (Bool, Duration) {
        state.withLock { ($0.done, ContinuousClock.now - $0.lastProgress) }
    }

    /// A send failed: a runtime error that ends the command, unless the peer had already ended (then its
    /// EOF rules: the relay finishes by itself with status 0).
    func fail(_ error: any Error) {
        let ended = state.withLock { state -> Bool in
            state.done = true
            return state.peerEnded
        }
        if case StdioRelay.Failure.io = error {
            outcome.finish(error)  // stdin itself failed
            return
        }
        if ended { return }
        if let error = error as? UnixSocketError, error.code == .closed {
            outcome.finish(.success)
        } else {
            outcome.finish(error)
        }
    }
}
