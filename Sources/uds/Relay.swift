import Synchronization
import SystemPackage
import UnixSockets

/// stdin and stdout as the process inherited them: blocking, never switched to O_NONBLOCK (that flag
/// belongs to an open file shared with other processes). Regular files, pipes and terminals all work.
enum StandardIO {
    static let input = FileDescriptor.standardInput
    static let output = FileDescriptor.standardOutput

    /// Writes all of `buffer` to stdout. A reader that went away (EPIPE) ends the process quietly (status 0).
    static func write(_ buffer: UnsafeRawBufferPointer) {
        var offset = 0
        while offset < buffer.count {
            do {
                offset += try output.write(UnsafeRawBufferPointer(rebasing: buffer[offset...]))
            } catch let errno as Errno where errno == .brokenPipe {
                Lifecycle.exit(0)
            } catch let errno as Errno where errno == .resourceTemporarilyUnavailable {
                InheritedDescriptor.waitWritable(output)  // someone else made the shared file non-blocking
            } catch {
                Lifecycle.fail(CLIError("write stdout: \(error)"))
            }
        }
    }

    static func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Reads what stdin has (blocking); 0 at end of file.
    static func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        while true {
            do {
                return try input.read(into: buffer)
            } catch let errno as Errno where errno == .resourceTemporarilyUnavailable {
                InheritedDescriptor.waitReadable(input)
            } catch {
                Lifecycle.fail(CLIError("read stdin: \(error)"))
            }
        }
    }

    /// Whether splice(2) can serve `fd`: a pipe that is not in non-blocking mode.
    static func canSplice(_ fd: FileDescriptor) -> Bool {
        InheritedDescriptor.kind(of: fd) == .pipe && !InheritedDescriptor.isNonBlocking(fd)
    }
}

/// The copy loops of `listen` and `connect`: one reused buffer each, no allocation per chunk, and
/// splice(2) where stdin or stdout is a pipe (the bytes never enter user space).
enum Relay {
    /// Bytes per read or splice for streams.
    static let streamChunk = 1 << 20
    /// Bytes per stdin read that becomes one message (seqpacket, dgram) without `--lines`.
    static let messageChunk = 1 << 16
    /// Room for the largest message we accept (the kernel's default limit is about 208 KiB).
    static let messageCapacity = 1 << 22

    static func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    }

    /// socket -> stdout until the peer's EOF. A stdout reader that went away ends the process (status 0).
    static func streamToStdout(_ stream: UnixStream) throws(UnixSocketError) {
        if StandardIO.canSplice(StandardIO.output) {
            var moved = false
            do {
                while true {
                    let count = try stream.splice(into: StandardIO.output, maxBytes: streamChunk)
                    if count == 0 { return }
                    moved = true
                }
            } catch {
                if error.errno == .brokenPipe {
                    Lifecycle.exit(0)
                } else if error.errno == .invalidArgument && !moved {
                    // This pipe end refuses splice: copy through user space below.
                } else {
                    throw error
                }
            }
        }
        let buffer = allocate(streamChunk)
        defer { buffer.deallocate() }
        while true {
            let count = try stream.read(into: buffer)
            if count == 0 { return }
            StandardIO.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }

    /// stdin -> socket until stdin's EOF, then shuts down the write side (the peer reads EOF).
    static func stdinToStream(_ stream: UnixStream, pump: StdinPump) throws(UnixSocketError) {
        defer { try? stream.shutdown(.write) }
        if StandardIO.canSplice(StandardIO.input) {
            var moved = false
            do {
                while true {
                    let count = try stream.splice(from: StandardIO.input, maxBytes: streamChunk)
                    if count == 0 { return }
                    moved = true
                    pump.progressed()
                }
            } catch {
                guard error.errno == .invalidArgument && !moved else { throw error }
                // Fall back to read/write below.
            }
        }
        let buffer = allocate(streamChunk)
        defer { buffer.deallocate() }
        while true {
            let count = StandardIO.read(into: buffer)
            if count == 0 { return }
            try stream.write(all: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            pump.progressed()
        }
    }

    /// stdin -> messages: each line (`lines`, newline stripped) or each read chunk is one message.
    /// Empty lines are skipped when `skipEmpty` (seqpacket: an empty message reads like EOF).
    static func stdinToMessages(
        lines: Bool, skipEmpty: Bool, _ send: (UnsafeRawBufferPointer) throws(UnixSocketError) -> Void
    ) throws(UnixSocketError) {
        let buffer = allocate(messageChunk)
        defer { buffer.deallocate() }
        func emit(_ bytes: UnsafeRawBufferPointer) throws(UnixSocketError) {
            if bytes.isEmpty && skipEmpty { return }
            try send(bytes)
        }
        func emitArray(_ bytes: [UInt8]) throws(UnixSocketError) {
            try bytes.withUnsafeBytes { raw in Result { () throws(UnixSocketError) in try emit(raw) } }.get()
        }
        guard lines else {
            while true {
                let count = StandardIO.read(into: buffer)
                if count == 0 { return }
                try emit(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
        }
        var pending: [UInt8] = []
        while true {
            let count = StandardIO.read(into: buffer)
            if count == 0 {
                if !pending.isEmpty { try emitArray(pending) }
                return
            }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<count])
            var start = 0
            while let newline = chunk[start...].firstIndex(of: UInt8(ascii: "\n")) {
                if pending.isEmpty {
                    try emit(UnsafeRawBufferPointer(rebasing: chunk[start..<newline]))
                } else {
                    pending.append(contentsOf: chunk[start..<newline])
                    try emitArray(pending)
                    pending.removeAll(keepingCapacity: true)
                }
                start = newline + 1
            }
            pending.append(contentsOf: chunk[start...])
        }
    }

    /// Messages -> stdout: `receive` returns one message, or nil at EOF. Each message is printed raw, or
    /// followed by a newline with `lines`. A message that could not be received whole (too large, or its
    /// descriptors cut short) is reported on stderr and skipped.
    static func messagesToStdout(lines: Bool, _ receive: () throws(UnixSocketError) -> [UInt8]?) throws(UnixSocketError) {
        while true {
            let message: [UInt8]?
            do throws(UnixSocketError) {
                message = try receive()
            } catch {
                guard MessageReceiver.isRecoverable(error) else { throw error }
                Lifecycle.diagnostic(error.description)
                continue
            }
            guard let message else { return }
            printMessage(message, lines: lines)
        }
    }

    /// Prints one message (raw, or with a newline when `lines`).
    static func printMessage(_ bytes: [UInt8], lines: Bool) {
        if lines {
            StandardIO.write(bytes + [UInt8(ascii: "\n")])
        } else {
            StandardIO.write(bytes)
        }
    }

    /// The `listen`/`connect` end rule for a connected stream: socket -> stdout on this thread, stdin ->
    /// socket on another. Once the peer's EOF arrived and everything is written out, it exits 0 (see
    /// ``finishAfterPeerEOF(_:hungUp:)`` for stdin still being sent). A failed socket write before the
    /// peer's EOF (the peer went away) is a runtime error.
    static func runStream(_ stream: UnixStream, useStdin: Bool) -> Never {
        let pump = StdinPump()
        if useStdin {
            Lifecycle.thread {
                do throws(UnixSocketError) {
                    try stdinToStream(stream, pump: pump)
                    pump.finish()
                } catch {
                    pump.fail(error)
                }
            }
        } else {
            pump.finish()
        }
        do throws(UnixSocketError) {
            try streamToStdout(stream)
        } catch {
            if error.code == .closed { Lifecycle.exit(0) }
            Lifecycle.fail(error)
        }
        finishAfterPeerEOF(pump) { stream.isHungUp }
    }

    /// The same end rule for a seqpacket connection (one message per line or stdin chunk). Descriptors that
    /// come with a message are closed (`verbose`: said on stderr).
    static func runSeqPacket(_ connection: UnixSeqPacket, useStdin: Bool, lines: Bool, verbose: Bool) -> Never {
        let pump = StdinPump()
        if useStdin {
            Lifecycle.thread {
                do throws(UnixSocketError) {
                    try stdinToMessages(lines: lines, skipEmpty: true) { (bytes) throws(UnixSocketError) in
                        try connection.send(bytes)
                        pump.progressed()
                    }
                    try? connection.shutdown(.write)
                    pump.finish()
                } catch {
                    pump.fail(error)
                }
            }
        } else {
            pump.finish()
        }
        do throws(UnixSocketError) {
            try messagesToStdout(lines: lines) { () throws(UnixSocketError) -> [UInt8]? in
                try connection.receiveIgnoringDescriptors(verbose: verbose)
            }
        } catch {
            if error.code == .closed { Lifecycle.exit(0) }
            Lifecycle.fail(error)
        }
        finishAfterPeerEOF(pump) { connection.isHungUp }
    }

    /// After the peer's EOF, with everything received written out: exit 0 at once if the peer closed
    /// entirely (nothing more can be sent) or stdin is done; if the peer only shut down its write side and
    /// stdin is still being sent (a file or a busy pipe), finish sending it, as nc does; stdin that stays
    /// idle (a terminal, an open pipe) is not waited for beyond a short grace (0.5 s), as with socat.
    static func finishAfterPeerEOF(_ pump: StdinPump, hungUp: () -> Bool) -> Never {
        pump.peerEnded()
        while true {
            let (done, idle) = pump.status()
            if done || hungUp() || idle > .milliseconds(500) { Lifecycle.exit(0) }
            Lifecycle.sleep(milliseconds: 20)
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

    /// A send failed: a runtime error, unless the peer had already ended (then its EOF rules: status 0).
    func fail(_ error: UnixSocketError) -> Never {
        let ended = state.withLock { $0.peerEnded }
        if ended || error.code == .closed { Lifecycle.exit(0) }
        Lifecycle.fail(error)
    }
}
