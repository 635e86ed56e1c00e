// The length-prefixed frame codec: pure, no I/O.
//
// Wire format (stable): a 4-byte big-endian unsigned length, then that many payload bytes.
//
// This file must compile on its own with nothing but the standard library: `scripts/fuzz-framing.sh` builds it
// together with `fuzz/FrameCodecFuzz.swift` and nothing else. Do not import Foundation or use other package types
// here; the throwing, `UnixSocketError`-based API lives in `FrameCodec+Errors.swift`.

/// Constants of the frame wire format: a 4-byte big-endian unsigned length, then that many payload bytes.
public enum FrameFormat {
    /// The size of a frame header in bytes.
    public static let headerLength = 4

    /// The largest payload a frame may carry unless configured otherwise: 16 MiB.
    public static let defaultMaximumFrameLength = 16 * 1024 * 1024

    /// The largest payload length the header can express (`UInt32.max`), clamped so that a header plus a payload
    /// of that length still fits in an `Int` on every platform.
    public static let largestExpressibleLength = min(Int(clamping: UInt32.max), Int.max - headerLength)
}

/// Why a frame could not be encoded or decoded.
///
/// The throwing API maps these to `UnixSocketError` codes `.frameTooLarge` and `.truncatedFrame`.
enum FrameCodecFailure: Error, Equatable, Sendable {
    /// A header announced, or a payload to encode has, `length` bytes: more than `maximum`.
    case frameTooLarge(length: UInt64, maximum: Int)
    /// The stream ended inside a frame: only `received` of its `expected` bytes arrived.
    ///
    /// Both counts include the 4 header bytes. When the stream ended inside the header, `expected` is 4 and
    /// `received` is 1, 2 or 3; when it ended inside the body, `expected` is 4 plus the announced length and
    /// `received` is at least 4.
    case truncatedFrame(expected: Int, received: Int)
}

/// A frame returned by ``FrameDecoder``: its payload, and where it sat in the byte stream.
public struct DecodedFrame: Hashable, Sendable {
    /// The frame's payload (without the header).
    public var payload: [UInt8]

    /// The stream offset of the frame's first header byte: how many bytes had been appended to the decoder
    /// before it.
    public var startOffset: UInt64

    /// Creates a decoded frame.
    /// - Parameters:
    ///   - payload: The payload bytes.
    ///   - startOffset: The stream offset of the frame's first header byte.
    public init(payload: [UInt8], startOffset: UInt64) {
        self.payload = payload
        self.startOffset = startOffset
    }

    /// The stream offset just past the frame's last byte, where the next frame begins.
    public var endOffset: UInt64 {
        startOffset + UInt64(FrameFormat.headerLength) + UInt64(payload.count)
    }
}

/// Encodes payloads as length-prefixed frames.
///
/// ```swift
/// var wire: [UInt8] = []
/// try FrameEncoder().encode([1, 2, 3], into: &wire)   // wire == [0, 0, 0, 3, 1, 2, 3]
/// ```
public struct FrameEncoder: Sendable {
    /// The largest payload this encoder accepts, in bytes.
    public let maximumFrameLength: Int

    /// Creates an encoder.
    /// - Parameters:
    ///   - maximumFrameLength: The largest payload to accept, in bytes; at least 0. Values over what a header can
    ///     express (`UInt32.max`) are clamped to it.
    public init(maximumFrameLength: Int = FrameFormat.defaultMaximumFrameLength) {
        precondition(maximumFrameLength >= 0, "maximumFrameLength must not be negative")
        self.maximumFrameLength = min(maximumFrameLength, FrameFormat.largestExpressibleLength)
    }

    /// The header of a frame whose payload is `length` bytes long, ignoring any configured maximum.
    /// - Parameters:
    ///   - length: The payload length.
    /// - Returns: The 4 header bytes, most significant first; `nil` if `length` is negative or over `UInt32.max`.
    public static func header(length: Int) -> (UInt8, UInt8, UInt8, UInt8)? {
        guard let value = UInt32(exactly: length) else { return nil }
        return (
            UInt8(truncatingIfNeeded: value >> 24),
            UInt8(truncatingIfNeeded: value >> 16),
            UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value)
        )
    }

    /// Checks a payload length against this encoder's maximum.
    /// - Returns: `.frameTooLarge` if the length is over the maximum, `nil` if it can be encoded.
    func checkCore(payloadLength length: Int) -> FrameCodecFailure? {
        precondition(length >= 0, "a payload length cannot be negative")
        guard length <= maximumFrameLength else {
            return .frameTooLarge(length: UInt64(length), maximum: maximumFrameLength)
        }
        return nil
    }

    /// The header for a payload of `length` bytes, checked against this encoder's maximum.
    func headerCore(payloadLength length: Int) -> Result<(UInt8, UInt8, UInt8, UInt8), FrameCodecFailure> {
        if let failure = checkCore(payloadLength: length) { return .failure(failure) }
        guard let header = Self.header(length: length) else {
            // Unreachable: the maximum is clamped to what a header can express.
            return .failure(.frameTooLarge(length: UInt64(length), maximum: maximumFrameLength))
        }
        return .success(header)
    }

    /// Appends the frame for `payload` (header, then payload) to `buffer`.
    /// - Returns: `.frameTooLarge` (and `buffer` untouched) if the payload is over the maximum, `nil` on success.
    func encodeCore(_ payload: some Collection<UInt8>, into buffer: inout [UInt8]) -> FrameCodecFailure? {
        let length = payload.count
        let header: (UInt8, UInt8, UInt8, UInt8)
        switch headerCore(payloadLength: length) {
        case .success(let value): header = value
        case .failure(let failure): return failure
        }
        let needed = buffer.count + FrameFormat.headerLength + length
        if buffer.capacity < needed {
            // Grow geometrically: reserving just enough on every call would make repeated encodes quadratic.
            buffer.reserveCapacity(max(needed, 2 * buffer.capacity))
        }
        buffer.append(header.0)
        buffer.append(header.1)
        buffer.append(header.2)
        buffer.append(header.3)
        buffer.append(contentsOf: payload)
        return nil
    }
}

/// An incremental decoder of length-prefixed frames.
///
/// Feed it bytes as reads deliver them with ``append(_:)`` or ``append(contentsOf:)``, take every complete frame
/// with `nextFrame()` until it returns `nil`, and at end of stream call `finish()`, which fails if the stream
/// ended inside a frame.
///
/// A header announcing more than ``maximumFrameLength`` bytes fails as soon as its 4 bytes are buffered, before
/// any room is made for the body. Failures are sticky: once the decoder has failed, every later call reports the
/// same failure and appended bytes are dropped.
///
/// Each frame carries its ``DecodedFrame/startOffset``, the count of bytes appended before its first header byte,
/// so a caller can tell which read a frame began in (for example to attach the descriptors that read delivered).
public struct FrameDecoder: Sendable {
    /// The largest payload accepted, in bytes.
    public let maximumFrameLength: Int

    /// The buffered bytes; those before `readIndex` are already consumed.
    private(set) var storage: [UInt8] = []
    /// The index in `storage` of the first unconsumed byte: the start of the next frame.
    private(set) var readIndex = 0
    /// The sticky failure, once there is one.
    private(set) var failure: FrameCodecFailure?

    /// How many bytes have been appended since the decoder was created (including bytes dropped after a failure).
    public private(set) var totalBytesAppended: UInt64 = 0

    /// The consumed prefix is moved out of the buffer only once it is at least this long (and at least as long as
    /// the unconsumed rest), so each byte is moved O(1) times on average.
    let compactionThreshold: Int
    /// The default of ``compactionThreshold``.
    static let defaultCompactionThreshold = 64 * 1024
    /// An emptied buffer whose capacity is over this is released rather than kept for reuse.
    static let retainedCapacityLimit = 1024 * 1024

    /// Creates a decoder.
    /// - Parameters:
    ///   - maximumFrameLength: The largest payload to accept, in bytes; at least 0. Values over what a header can
    ///     express (`UInt32.max`) are clamped to it.
    public init(maximumFrameLength: Int = FrameFormat.defaultMaximumFrameLength) {
        self.init(maximumFrameLength: maximumFrameLength, compactionThreshold: Self.defaultCompactionThreshold)
    }

    /// Creates a decoder that compacts its buffer at another threshold (tests and the fuzzer use small ones).
    init(maximumFrameLength: Int, compactionThreshold: Int) {
        precondition(maximumFrameLength >= 0, "maximumFrameLength must not be negative")
        precondition(compactionThreshold >= 0, "compactionThreshold must not be negative")
        self.maximumFrameLength = min(maximumFrameLength, FrameFormat.largestExpressibleLength)
        self.compactionThreshold = compactionThreshold
    }

    /// How many appended bytes are buffered and not yet returned in a frame (0 after a failure).
    public var bufferedByteCount: Int { storage.count - readIndex }

    /// The stream offset where the next frame begins: the count of bytes returned in frames so far (until a
    /// failure; after one it is ``totalBytesAppended``).
    public var nextFrameOffset: UInt64 { totalBytesAppended - UInt64(bufferedByteCount) }

    /// The capacity of the internal buffer (for tests of memory use).
    var storageCapacity: Int { storage.capacity }

    /// Appends bytes that arrived from the stream.
    /// - Parameters:
    ///   - bytes: The bytes, in stream order. They are copied; the buffer need not outlive the call.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        totalBytesAppended += UInt64(bytes.count)
        guard failure == nil, !bytes.isEmpty else { return }
        compactBeforeAppending()
        bytes.withMemoryRebound(to: UInt8.self) { storage.append(contentsOf: $0) }
        checkPendingHeader()
    }

    /// Appends bytes that arrived from the stream.
    /// - Parameters:
    ///   - bytes: The bytes, in stream order.
    public mutating func append(contentsOf bytes: some Sequence<UInt8>) {
        guard failure == nil else {
            let count = bytes.withContiguousStorageIfAvailable { $0.count } ?? bytes.reduce(0) { count, _ in count + 1 }
            totalBytesAppended += UInt64(count)
            return
        }
        compactBeforeAppending()
        let before = storage.count
        storage.append(contentsOf: bytes)
        totalBytesAppended += UInt64(storage.count - before)
        checkPendingHeader()
    }

    /// Takes the next complete frame from the buffer.
    /// - Returns: `.success(frame)` for a complete frame, `.success(nil)` if more bytes are needed, or the
    ///   (sticky) failure: `.frameTooLarge` once a header over the maximum is buffered.
    mutating func nextFrameCore() -> Result<DecodedFrame?, FrameCodecFailure> {
        if let failure { return .failure(failure) }
        let available = storage.count - readIndex
        guard available >= FrameFormat.headerLength else { return .success(nil) }
        let announced = Self.readLength(storage, at: readIndex)
        guard announced <= UInt64(maximumFrameLength) else {
            return .failure(fail(.frameTooLarge(length: announced, maximum: maximumFrameLength)))
        }
        let length = Int(announced)  // At most maximumFrameLength, so it fits.
        guard available - FrameFormat.headerLength >= length else { return .success(nil) }

        let startOffset = totalBytesAppended - UInt64(available)
        let bodyStart = readIndex + FrameFormat.headerLength
        let payload = Array(storage[bodyStart..<(bodyStart + length)])
        readIndex = bodyStart + length
        if readIndex == storage.count {
            releaseConsumedBytes()
        } else {
            checkPendingHeader()
        }
        return .success(DecodedFrame(payload: payload, startOffset: startOffset))
    }

    /// Reports whether the stream may end here; call it at end of stream, after `nextFrame()` returned `nil`.
    ///
    /// Complete frames still buffered do not make the end unclean (they can still be taken); a partial frame after
    /// them does, and the failure discards them.
    /// - Returns: `nil` if no partial frame is buffered; otherwise the (now sticky) failure: `.truncatedFrame` for a
    ///   partial header or body, or an earlier failure.
    mutating func finishCore() -> FrameCodecFailure? {
        if let failure { return failure }
        var index = readIndex
        while true {
            let remaining = storage.count - index
            if remaining == 0 { return nil }
            guard remaining >= FrameFormat.headerLength else {
                return fail(.truncatedFrame(expected: FrameFormat.headerLength, received: remaining))
            }
            let announced = Self.readLength(storage, at: index)
            guard announced <= UInt64(maximumFrameLength) else {
                return fail(.frameTooLarge(length: announced, maximum: maximumFrameLength))
            }
            let frameLength = FrameFormat.headerLength + Int(announced)
            guard remaining >= frameLength else {
                return fail(.truncatedFrame(expected: frameLength, received: remaining))
            }
            index += frameLength
        }
    }

    // MARK: - Internals

    /// Records `failure` as sticky, drops the buffer, and returns it.
    private mutating func fail(_ failure: FrameCodecFailure) -> FrameCodecFailure {
        self.failure = failure
        storage = []
        readIndex = 0
        return failure
    }

    /// Fails at once if the header of the next frame is complete and over the maximum.
    private mutating func checkPendingHeader() {
        guard failure == nil, storage.count - readIndex >= FrameFormat.headerLength else { return }
        let announced = Self.readLength(storage, at: readIndex)
        if announced > UInt64(maximumFrameLength) {
            _ = fail(.frameTooLarge(length: announced, maximum: maximumFrameLength))
        }
    }

    /// Empties the buffer once everything in it is consumed, keeping a modest capacity for reuse.
    private mutating func releaseConsumedBytes() {
        if storage.capacity > Self.retainedCapacityLimit {
            storage = []
        } else {
            storage.removeAll(keepingCapacity: true)
        }
        readIndex = 0
    }

    /// Drops the consumed prefix when it is large, so appends don't grow the buffer without bound.
    private mutating func compactBeforeAppending() {
        if readIndex == storage.count {
            if readIndex > 0 { releaseConsumedBytes() }
        } else if readIndex >= compactionThreshold && readIndex >= storage.count - readIndex {
            storage.removeSubrange(0..<readIndex)
            readIndex = 0
        }
    }

    /// The big-endian length in the 4 bytes of `bytes` at `index` (which the caller has checked exist).
    private static func readLength(_ bytes: [UInt8], at index: Int) -> UInt64 {
        UInt64(bytes[index]) << 24 | UInt64(bytes[index + 1]) << 16 | UInt64(bytes[index + 2]) << 8
            | UInt64(bytes[index + 3])
    }
}
