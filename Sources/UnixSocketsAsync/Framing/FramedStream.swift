import Synchronization
public import SystemPackage
public import UnixSocketsCore
@_spi(Locking) import UnixSocketsSystem

/// A frame received over a ``FramedStream``: its bytes (the payload, without the length header) and the
/// descriptors that arrived with its first byte. Named as ``UnixMessage``'s parts are.
public struct FramedMessage: Sendable {
    /// The frame's bytes: its payload, without the 4-byte length header.
    public var bytes: [UInt8]
    /// Descriptors sent with this frame (owned; closed when dropped unless taken).
    public var descriptors: [OwnedDescriptor]
}

/// Length-prefixed frames (4-byte big-endian length, then the payload) over a ``UnixStream``, carrying
/// descriptors. Blocking and async.
///
/// Sending: each frame goes out starting a new sendmsg at its first byte, with its descriptors attached
/// to that sendmsg and no other frame batched into it. Receiving: the kernel may merge earlier bytes into
/// the read that delivers descriptors, never later ones, so descriptors go to the last frame that begins
/// within the read that delivered them. A length over `maximumFrameLength` (default 16 MiB) fails before
/// any allocation (`.frameTooLarge`); the stream ending inside a frame is `.truncatedFrame`.
///
/// One task receives at a time and one task sends at a time (a second concurrent receive throws
/// `.invalidArgument`); sending and receiving may run concurrently.
///
/// ```swift
/// let framed = FramedStream(try UnixStream.connect(to: "/run/app.sock"))
/// try await framed.send(Array("hello".utf8))
/// let reply = try await framed.receive()        // nil at a clean end of stream
/// ```
public final class FramedStream: Sendable {
    /// The underlying stream.
    public let stream: UnixStream
    private let encoder: FrameEncoder
    private let reader: Lock<ReaderState?>
    /// One sender at a time: a frame's bytes are never interleaved with another's.
    private let sendGate = SendGate()

    struct ReaderState: Sendable {
        var decoder: FrameDecoder
        var ready: [FramedMessage] = []
        /// Descriptors of the frame in progress (which starts at `offset`), waiting for it to complete.
        var pending: (offset: UInt64, descriptors: [OwnedDescriptor])?
        var ended = false
    }

    /// The address errors name: the one this stream was connected to (nil for a pair).
    private var address: UnixAddress? { stream.core.address }

    /// The most descriptors accepted with one read.
    public let maxDescriptorsPerRead: Int
    /// The most descriptors one frame may collect.
    public let maxDescriptorsPerFrame: Int
    /// The default of ``maxDescriptorsPerFrame``.
    public static let defaultMaxDescriptorsPerFrame = 64
    /// Bytes asked for per read.
    static let readSize = 64 * 1024

    /// Wraps `stream` with the defaults: 16 MiB frames, 16 descriptors per read, 64 pending descriptors.
    public init(_ stream: UnixStream) {
        self.stream = stream
        self.encoder = FrameEncoder(maximumFrameLength: FrameFormat.defaultMaximumFrameLength)
        self.reader = Lock(
            ReaderState(decoder: FrameDecoder(maximumFrameLength: FrameFormat.defaultMaximumFrameLength))
        )
        self.maxDescriptorsPerRead = 16
        self.maxDescriptorsPerFrame = Self.defaultMaxDescriptorsPerFrame
    }

    /// Wraps `stream`.
    /// - Parameters:
    ///   - maximumFrameLength: the largest payload accepted or sent (default 16 MiB; at most 2^32 - 1).
    ///   - maxDescriptorsPerRead: descriptors accepted per read (0...253); more is `.controlTruncated` (all
    ///     closed).
    ///   - maxDescriptorsPerFrame: descriptors one frame may collect over its reads; more is `.tooLarge`
    ///     (all closed), so a peer cannot make the receiver hold an unbounded number.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a limit out of range.
    public init(
        _ stream: UnixStream,
        maximumFrameLength: Int = FrameFormat.defaultMaximumFrameLength,
        maxDescriptorsPerRead: Int = 16,
        maxDescriptorsPerFrame: Int = 64
    ) throws(UnixSocketError) {
        func invalid(_ detail: String) -> UnixSocketError {
            UnixSocketError(.invalidArgument, operation: "framed stream", address: stream.core.address, detail: detail)
        }
        guard (0...Int(UInt32.max)).contains(maximumFrameLength) else {
            throw invalid("maximumFrameLength must be 0...\(UInt32.max) (got \(maximumFrameLength))")
        }
        guard (0...maximumDescriptorsPerMessage).contains(maxDescriptorsPerRead) else {
            throw invalid(
                "maxDescriptorsPerRead must be 0...\(maximumDescriptorsPerMessage) (got \(maxDescriptorsPerRead))"
            )
        }
        guard maxDescriptorsPerFrame >= 0 else {
            throw invalid("maxDescriptorsPerFrame must not be negative (got \(maxDescriptorsPerFrame))")
        }
        self.stream = stream
        self.encoder = FrameEncoder(maximumFrameLength: maximumFrameLength)
        self.reader = Lock(ReaderState(decoder: FrameDecoder(maximumFrameLength: maximumFrameLength)))
        self.maxDescriptorsPerRead = maxDescriptorsPerRead
        self.maxDescriptorsPerFrame = maxDescriptorsPerFrame
    }

    // MARK: Sending

    private func encode(_ bytes: [UInt8]) throws(UnixSocketError) -> [UInt8] {
        var wire: [UInt8] = []
        try encoder.encode(bytes, into: &wire)
        return wire
    }

    /// Sends one frame with `descriptors` attached to its first byte (blocking).
    /// - Throws: ``UnixSocketError`` `.frameTooLarge`, or what the stream's send throws.
    public func send(
        _ bytes: [UInt8],
        descriptors: [FileDescriptor] = [],
        timeout: Duration? = nil
    )
        throws(UnixSocketError)
    {
        let wire = try encode(bytes)
        try sendGate.withBlockingTurn(timeout: timeout, address: address) { () throws(UnixSocketError) in
            try stream.send(wire, descriptors: descriptors, timeout: timeout)
        }
    }

    /// Sends one frame with `descriptors` attached to its first byte.
    public func send(_ bytes: [UInt8], descriptors: [FileDescriptor] = [], timeout: Duration? = nil) async throws {
        let wire = try encode(bytes)
        await sendGate.enter()
        defer { sendGate.leave() }
        try await stream.send(wire, descriptors: descriptors, timeout: timeout)
    }

    // MARK: Receiving

    private func checkOut(_ operation: String) throws(UnixSocketError) -> ReaderState {
        let state = reader.withLock { slot -> ReaderState? in
            defer { slot = nil }
            return slot
        }
        guard let state else {
            throw UnixSocketError(
                .invalidArgument,
                operation: operation,
                address: address,
                detail: "another task is already receiving on this framed stream"
            )
        }
        return state
    }

    private func checkIn(_ state: consuming ReaderState) {
        let state = state
        reader.withLock { $0 = state }
    }

    /// Feeds one read's bytes and descriptors to the decoder and moves complete frames to `ready`.
    ///
    /// The descriptors of a read belong to the last frame that begins within it (the sender attached them
    /// to that frame's first byte; the kernel may merge earlier bytes into the read, never later ones);
    /// when no frame begins within it, to the frame that was in progress (a peer that sent them with the
    /// payload rather than the header). A frame holds at most `maxDescriptorsPerFrame`; its descriptors
    /// are handed over when it completes and never kept past it.
    static func absorb(
        _ state: inout ReaderState,
        bytes: UnsafeRawBufferPointer,
        descriptors: [OwnedDescriptor],
        maxDescriptorsPerFrame: Int,
        address: UnixAddress?
    ) throws(UnixSocketError) {
        let readStart = state.decoder.totalBytesAppended
        let inProgress = state.decoder.nextFrameOffset  // the frame this read continues (or begins)
        state.decoder.append(bytes)
        var lastStartingHere: Int?  // index in `ready` of the last complete frame that began in this read
        var inProgressIndex: Int?  // index in `ready` of the frame in progress, if this read completed it
        while let frame = try state.decoder.nextFrame() {
            var attached: [OwnedDescriptor] = []
            if let pending = state.pending, pending.offset == frame.startOffset {
                attached = pending.descriptors
                state.pending = nil
            }
            state.ready.append(FramedMessage(bytes: frame.payload, descriptors: attached))
            if frame.startOffset >= readStart { lastStartingHere = state.ready.count - 1 }
            if frame.startOffset == inProgress { inProgressIndex = state.ready.count - 1 }
        }
        guard !descriptors.isEmpty else { return }
        let partialStartsHere = state.decoder.bufferedByteCount > 0 && state.decoder.nextFrameOffset >= readStart
        let target: Int?  // a complete frame's index, or nil for the frame still in progress
        if partialStartsHere {
            target = nil
        } else if let index = lastStartingHere {
            target = index
        } else {
            target = inProgressIndex  // nil: the frame in progress is still not complete
        }
        if let target {
            let total = state.ready[target].descriptors.count + descriptors.count
            guard total <= maxDescriptorsPerFrame else {
                descriptors.forEach { $0.close() }
                state.ready[target].descriptors.forEach { $0.close() }
                state.ready[target].descriptors = []
                throw tooManyDescriptors(total, limit: maxDescriptorsPerFrame, address: address)
            }
            state.ready[target].descriptors += descriptors
            return
        }
        let offset = state.decoder.nextFrameOffset
        var collected = state.pending?.offset == offset ? state.pending!.descriptors : []
        if let stale = state.pending, stale.offset != offset { stale.descriptors.forEach { $0.close() } }
        collected += descriptors
        guard collected.count <= maxDescriptorsPerFrame else {
            collected.forEach { $0.close() }
            state.pending = nil
            throw tooManyDescriptors(collected.count, limit: maxDescriptorsPerFrame, address: address)
        }
        state.pending = (offset, collected)
    }

    static func tooManyDescriptors(_ count: Int, limit: Int, address: UnixAddress?) -> UnixSocketError {
        UnixSocketError(
            .tooLarge,
            operation: "receive frame",
            address: address,
            detail: "one frame came with \(count) descriptors, over the limit of \(limit); all were closed"
        )
    }

    /// The deadlines of one frame receive: overall, idle (no byte of the next frame yet) and per frame
    /// (from its first byte).
    struct FrameDeadlines {
        let overall: Deadline?
        let idle: Deadline?
        let frameTimeout: Duration?
        var frame: Deadline?

        init(timeout: Duration?, idleTimeout: Duration?, frameTimeout: Duration?) throws(UnixSocketError) {
            overall = try Deadline.after(timeout, operation: "receive frame")
            idle = try Deadline.after(idleTimeout, operation: "receive frame")
            _ = try Deadline.after(frameTimeout, operation: "receive frame")
            self.frameTimeout = frameTimeout
        }

        /// The time left for the next read, or nil for no limit; throws `.timedOut` once passed.
        mutating func remaining(frameStarted: Bool, address: UnixAddress?) throws(UnixSocketError) -> Duration? {
            if frameStarted && frame == nil { frame = try Deadline.after(frameTimeout, operation: "receive frame") }
            let applicable = [overall, frameStarted ? frame : idle].compactMap { $0?.end }
            guard let end = applicable.min() else { return nil }
            let now = system_monotonicNanoseconds()
            guard end > now else {
                throw UnixSocketError(
                    .timedOut,
                    operation: "receive frame",
                    address: address,
                    detail: frameStarted ? "the frame did not complete in time" : "no frame arrived in time"
                )
            }
            return .nanoseconds(Int64(clamping: end - now))
        }
    }

    /// One receive call in progress: the reader state it checked out and its deadlines. All of a receive but
    /// the read itself lives here, once for both faces: whether a frame is ready or the stream ended, how long
    /// the next read may wait, how many bytes and descriptors it may take, and what the read's bytes and
    /// descriptors become. A face asks ``nextRead()`` until it returns nil, doing each read its own way
    /// (blocking, or awaited), then takes the frame.
    struct Receiving {
        /// What the next read may take and how long it may wait (nil: no limit).
        struct Read {
            let maxBytes: Int
            let maxDescriptors: Int
            let timeout: Duration?
        }

        fileprivate(set) var state: ReaderState
        private var deadlines: FrameDeadlines
        private let maxDescriptorsPerRead: Int
        private let maxDescriptorsPerFrame: Int
        private let address: UnixAddress?

        fileprivate init(
            state: ReaderState,
            deadlines: FrameDeadlines,
            maxDescriptorsPerRead: Int,
            maxDescriptorsPerFrame: Int,
            address: UnixAddress?
        ) {
            self.state = state
            self.deadlines = deadlines
            self.maxDescriptorsPerRead = maxDescriptorsPerRead
            self.maxDescriptorsPerFrame = maxDescriptorsPerFrame
            self.address = address
        }

        /// The read to do next, or nil when a frame is ready or the stream has ended.
        /// - Throws: ``UnixSocketError`` `.timedOut` once a deadline has passed.
        mutating func nextRead() throws(UnixSocketError) -> Read? {
            guard state.ready.isEmpty, !state.ended else { return nil }
            let timeout = try deadlines.remaining(frameStarted: state.decoder.bufferedByteCount > 0, address: address)
            return Read(maxBytes: FramedStream.readSize, maxDescriptors: maxDescriptorsPerRead, timeout: timeout)
        }

        /// Feeds one read's message (see ``FramedStream/ingest(_:_:maxDescriptorsPerFrame:address:)``).
        mutating func ingest(_ message: UnixMessage) throws(UnixSocketError) {
            try FramedStream.ingest(&state, message, maxDescriptorsPerFrame: maxDescriptorsPerFrame, address: address)
        }

        /// The next frame once ``nextRead()`` returned nil; nil at the end of the stream.
        mutating func takeFrame() -> FramedMessage? {
            state.ready.isEmpty ? nil : state.ready.removeFirst()
        }
    }

    /// Checks the reader state out for one receive (hand it back with `checkIn(receiving.state)`).
    private func beginReceive(
        timeout: Duration?,
        idleTimeout: Duration?,
        frameTimeout: Duration?
    )
        throws(UnixSocketError) -> Receiving
    {
        let deadlines = try FrameDeadlines(timeout: timeout, idleTimeout: idleTimeout, frameTimeout: frameTimeout)
        return Receiving(
            state: try checkOut("receive frame"),
            deadlines: deadlines,
            maxDescriptorsPerRead: maxDescriptorsPerRead,
            maxDescriptorsPerFrame: maxDescriptorsPerFrame,
            address: address
        )
    }

    /// Receives the next frame (blocking); nil at a clean end of stream.
    /// - Parameters:
    ///   - timeout: a deadline for the whole call.
    ///   - idleTimeout: how long to wait for the first byte of the next frame.
    ///   - frameTimeout: how long a frame may take from its first byte (a peer trickling bytes is cut off).
    /// - Throws: ``UnixSocketError`` `.truncatedFrame` (EOF inside a frame), `.frameTooLarge`, `.timedOut`.
    public func receive(
        timeout: Duration? = nil,
        idleTimeout: Duration? = nil,
        frameTimeout: Duration? = nil
    )
        throws(UnixSocketError) -> FramedMessage?
    {
        var receiving = try beginReceive(timeout: timeout, idleTimeout: idleTimeout, frameTimeout: frameTimeout)
        defer { checkIn(receiving.state) }
        while let read = try receiving.nextRead() {
            try receiving.ingest(
                stream.receive(maxBytes: read.maxBytes, maxDescriptors: read.maxDescriptors, timeout: read.timeout)
            )
        }
        return receiving.takeFrame()
    }

    /// Receives the next frame; nil at a clean end of stream.
    /// - Parameters: as the blocking ``receive(timeout:idleTimeout:frameTimeout:)``.
    public func receive(
        timeout: Duration? = nil,
        idleTimeout: Duration? = nil,
        frameTimeout: Duration? = nil
    )
        async throws -> FramedMessage?
    {
        var receiving = try beginReceive(timeout: timeout, idleTimeout: idleTimeout, frameTimeout: frameTimeout)
        defer { checkIn(receiving.state) }
        while let read = try receiving.nextRead() {
            let message = try await stream.receive(
                maxBytes: read.maxBytes,
                maxDescriptors: read.maxDescriptors,
                timeout: read.timeout
            )
            try receiving.ingest(message)
        }
        return receiving.takeFrame()
    }

    /// Feeds one read to `state`: an empty read is the end of the stream (every descriptor still held is
    /// closed), anything else goes through ``absorb(_:bytes:descriptors:maxDescriptorsPerFrame:address:)``.
    static func ingest(
        _ state: inout ReaderState,
        _ message: UnixMessage,
        maxDescriptorsPerFrame: Int,
        address: UnixAddress?
    ) throws(UnixSocketError) {
        if message.bytes.isEmpty {
            state.ended = true
            message.descriptors.forEach { $0.close() }
            state.pending?.descriptors.forEach { $0.close() }
            state.pending = nil
            try state.decoder.finish()
            return
        }
        try message.bytes.withUnsafeBytes { raw in
            Result { () throws(UnixSocketError) in
                try absorb(
                    &state,
                    bytes: raw,
                    descriptors: message.descriptors,
                    maxDescriptorsPerFrame: maxDescriptorsPerFrame,
                    address: address
                )
            }
        }.get()
    }
}

/// Lets one sender at a time through, async or blocking. Async senders wait in line (FIFO, handed the turn
/// directly); a blocking sender that finds the gate taken sleeps with a short back-off until its timeout
/// (contention between blocking senders on one stream is the rare case).
final class SendGate: Sendable {
    private struct State {
        var taken = false
        var waiters: [UnsafeContinuation<Void, Never>] = []
    }
    private let state = Lock(State())

    func enter() async {
        if state.withLock({ state in
            if state.taken { return false }
            state.taken = true
            return true
        }) {
            return
        }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                if !state.taken {
                    state.taken = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    func tryEnter() -> Bool {
        state.withLock { state in
            if state.taken { return false }
            state.taken = true
            return true
        }
    }

    func leave() {
        let next = state.withLock { state -> UnsafeContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.taken = false
                return nil
            }
            return state.waiters.removeFirst()  // the turn passes straight to it: `taken` stays set
        }
        next?.resume()
    }

    func withBlockingTurn<R>(
        timeout: Duration?,
        address: UnixAddress?,
        _ body: () throws(UnixSocketError) -> R
    )
        throws(UnixSocketError) -> R
    {
        if !tryEnter() {
            let deadline = try Deadline.after(timeout, operation: "send frame")
            var pause = 20_000
            while !tryEnter() {
                if deadline?.hasPassed ?? false {
                    throw UnixSocketError(
                        .timedOut,
                        operation: "send frame",
                        address: address,
                        detail: "another sender held the stream until the deadline"
                    )
                }
                system_nanosleep(nanoseconds: pause)
                pause = min(pause * 2, 1_000_000)
            }
        }
        defer { leave() }
        return try body()
    }
}
