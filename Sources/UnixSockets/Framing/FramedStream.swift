import Synchronization
public import SystemPackage

/// A frame received over a ``FramedStream``: its payload and the descriptors that arrived with its first byte.
public struct FramedMessage: Sendable {
    /// The frame's payload.
    public var payload: [UInt8]
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
    private let reader: Mutex<ReaderState?>
    private let sendLock = Mutex<Bool>(false)

    struct ReaderState: Sendable {
        var decoder: FrameDecoder
        var ready: [FramedMessage] = []
        /// Descriptors waiting for the frame starting at `offset` to complete.
        var pending: [(offset: UInt64, descriptors: [OwnedDescriptor])] = []
        var ended = false
    }

    /// The most descriptors accepted with one read.
    public let maxDescriptorsPerRead: Int
    /// Bytes asked for per read.
    static let readSize = 64 * 1024

    /// Wraps `stream`.
    /// - Parameters:
    ///   - maximumFrameLength: the largest payload accepted or sent (default 16 MiB).
    ///   - maxDescriptorsPerRead: descriptors accepted per read; more is `.controlTruncated` (all closed).
    public init(
        _ stream: UnixStream, maximumFrameLength: Int = FrameFormat.defaultMaximumFrameLength,
        maxDescriptorsPerRead: Int = 16
    ) {
        self.stream = stream
        self.encoder = FrameEncoder(maximumFrameLength: maximumFrameLength)
        self.reader = Mutex(ReaderState(decoder: FrameDecoder(maximumFrameLength: maximumFrameLength)))
        self.maxDescriptorsPerRead = maxDescriptorsPerRead
    }

    // MARK: Sending

    private func encode(_ payload: [UInt8]) throws(UnixSocketError) -> [UInt8] {
        var wire: [UInt8] = []
        try encoder.encode(payload, into: &wire)
        return wire
    }

    /// Sends one frame with `descriptors` attached to its first byte (blocking).
    /// - Throws: ``UnixSocketError`` `.frameTooLarge`, or what the stream's send throws.
    public func send(_ payload: [UInt8], descriptors: [FileDescriptor] = [], timeout: Duration? = nil)
        throws(UnixSocketError)
    {
        let wire = try encode(payload)
        try stream.send(wire, descriptors: descriptors, timeout: timeout)
    }

    /// Sends one frame with `descriptors` attached to its first byte.
    public func send(_ payload: [UInt8], descriptors: [FileDescriptor] = [], timeout: Duration? = nil) async throws {
        let wire = try encode(payload)
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
                .invalidArgument, operation: operation, address: stream.core.address,
                detail: "another task is already receiving on this framed stream")
        }
        return state
    }

    private func checkIn(_ state: consuming ReaderState) {
        let state = state
        reader.withLock { $0 = state }
    }

    /// Feeds one read's bytes and descriptors to the decoder and moves complete frames to `ready`.
    static func absorb(
        _ state: inout ReaderState, bytes: UnsafeRawBufferPointer, descriptors: [OwnedDescriptor]
    ) throws(UnixSocketError) {
        let readStart = state.decoder.totalBytesAppended
        state.decoder.append(bytes)
        var lastStartingHere: Int?  // index in `ready` of the last complete frame that began in this read
        while let frame = try state.decoder.nextFrame() {
            var attached: [OwnedDescriptor] = []
            if let first = state.pending.first, first.offset == frame.startOffset {
                attached = first.descriptors
                state.pending.removeFirst()
            }
            state.ready.append(FramedMessage(payload: frame.payload, descriptors: attached))
            if frame.startOffset >= readStart { lastStartingHere = state.ready.count - 1 }
        }
        guard !descriptors.isEmpty else { return }
        // The last frame that begins within this read gets them: the one still in progress if it began
        // here, else the last complete one that did. (A partial frame that began in an earlier read means
        // no complete frame began here.)
        let partialStartsHere = state.decoder.bufferedByteCount > 0 && state.decoder.nextFrameOffset >= readStart
        if !partialStartsHere, let index = lastStartingHere {
            state.ready[index].descriptors += descriptors
        } else {
            state.pending.append((state.decoder.nextFrameOffset, descriptors))
        }
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
                    .timedOut, operation: "receive frame", address: address,
                    detail: frameStarted ? "the frame did not complete in time" : "no frame arrived in time")
            }
            return .nanoseconds(Int64(clamping: end - now))
        }
    }

    /// Receives the next frame (blocking); nil at a clean end of stream.
    /// - Parameters:
    ///   - timeout: a deadline for the whole call.
    ///   - idleTimeout: how long to wait for the first byte of the next frame.
    ///   - frameTimeout: how long a frame may take from its first byte (a peer trickling bytes is cut off).
    /// - Throws: ``UnixSocketError`` `.truncatedFrame` (EOF inside a frame), `.frameTooLarge`, `.timedOut`.
    public func receive(timeout: Duration? = nil, idleTimeout: Duration? = nil, frameTimeout: Duration? = nil)
        throws(UnixSocketError) -> FramedMessage?
    {
        var state = try checkOut("receive frame")
        defer { checkIn(state) }
        var deadlines = try FrameDeadlines(timeout: timeout, idleTimeout: idleTimeout, frameTimeout: frameTimeout)
        while state.ready.isEmpty {
            if state.ended { return nil }
            let remaining = try deadlines.remaining(
                frameStarted: state.decoder.bufferedByteCount > 0, address: stream.core.address)
            let message = try stream.receive(
                maxBytes: Self.readSize, maxDescriptors: maxDescriptorsPerRead, timeout: remaining)
            try Self.ingest(&state, message)
        }
        return state.ready.removeFirst()
    }

    /// Receives the next frame; nil at a clean end of stream.
    /// - Parameters: as the blocking ``receive(timeout:idleTimeout:frameTimeout:)``.
    public func receive(timeout: Duration? = nil, idleTimeout: Duration? = nil, frameTimeout: Duration? = nil)
        async throws -> FramedMessage?
    {
        var state = try checkOut("receive frame")
        defer { checkIn(state) }
        var deadlines = try FrameDeadlines(timeout: timeout, idleTimeout: idleTimeout, frameTimeout: frameTimeout)
        while state.ready.isEmpty {
            if state.ended { return nil }
            let remaining = try deadlines.remaining(
                frameStarted: state.decoder.bufferedByteCount > 0, address: stream.core.address)
            let message = try await stream.receive(
                maxBytes: Self.readSize, maxDescriptors: maxDescriptorsPerRead, timeout: remaining)
            try Self.ingest(&state, message)
        }
        return state.ready.removeFirst()
    }

    private static func ingest(_ state: inout ReaderState, _ message: UnixMessage) throws(UnixSocketError) {
        if message.bytes.isEmpty {
            state.ended = true
            message.descriptors.forEach { $0.close() }
            try state.decoder.finish()
            return
        }
        try message.bytes.withUnsafeBytes { raw in
            Result { () throws(UnixSocketError) in try absorb(&state, bytes: raw, descriptors: message.descriptors) }
        }.get()
    }
}
