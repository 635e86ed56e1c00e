public import UnixSocketsCore

// The throwing API of the frame codec: maps `FrameCodecFailure` to `UnixSocketError`.
// (FrameCodec.swift stays free of package types so the fuzzer can compile it alone.)

extension FrameCodecFailure {
    /// The `UnixSocketError` reporting this failure; `operation` names what failed when the frame was too large.
    func unixSocketError(operation: String) -> UnixSocketError {
        switch self {
        case .frameTooLarge(let length, let maximum):
            UnixSocketError(
                .frameTooLarge,
                operation: operation,
                detail: "frame length \(length) exceeds the maximum \(maximum)"
            )
        case .truncatedFrame(let expected, let received):
            UnixSocketError(
                .truncatedFrame,
                operation: "receive frame",
                detail: "stream ended inside a frame (got \(received) of \(expected) bytes)"
            )
        }
    }
}

extension FrameEncoder {
    /// Appends the frame for `payload` (its 4-byte big-endian length, then the payload) to `buffer`.
    /// - Parameters:
    ///   - payload: The payload bytes.
    ///   - buffer: The buffer to append to; left untouched on failure.
    /// - Throws: `UnixSocketError` with code `.frameTooLarge` if the payload is longer than
    ///   ``maximumFrameLength``.
    public func encode(_ payload: some Collection<UInt8>, into buffer: inout [UInt8]) throws(UnixSocketError) {
        if let failure = encodeCore(payload, into: &buffer) {
            throw failure.unixSocketError(operation: "encode frame")
        }
    }

    /// The frame for `payload`: its 4-byte big-endian length, then the payload.
    /// - Parameters:
    ///   - payload: The payload bytes.
    /// - Returns: The encoded frame.
    /// - Throws: `UnixSocketError` with code `.frameTooLarge` if the payload is longer than
    ///   ``maximumFrameLength``.
    public func encode(_ payload: some Collection<UInt8>) throws(UnixSocketError) -> [UInt8] {
        var buffer: [UInt8] = []
        try encode(payload, into: &buffer)
        return buffer
    }

    /// The header of a frame whose payload is `length` bytes long, for sending the header and the payload
    /// separately (for example with a vectored write).
    /// - Parameters:
    ///   - length: The payload length, at least 0.
    /// - Returns: The 4 header bytes, most significant first.
    /// - Throws: `UnixSocketError` with code `.frameTooLarge` if `length` is over ``maximumFrameLength``.
    public func header(payloadLength length: Int) throws(UnixSocketError) -> (UInt8, UInt8, UInt8, UInt8) {
        switch headerCore(payloadLength: length) {
        case .success(let header): return header
        case .failure(let failure): throw failure.unixSocketError(operation: "encode frame")
        }
    }
}

extension FrameDecoder {
    /// Takes the next complete frame from the buffer.
    /// - Returns: The frame, or `nil` if more bytes are needed.
    /// - Throws: `UnixSocketError` with code `.frameTooLarge` once a header announcing more than
    ///   ``maximumFrameLength`` bytes is buffered (before any room is made for its body), and on every later call;
    ///   or the failure `finish()` reported, on calls after it.
    public mutating func nextFrame() throws(UnixSocketError) -> DecodedFrame? {
        switch nextFrameCore() {
        case .success(let frame): return frame
        case .failure(let failure): throw failure.unixSocketError(operation: "decode frame")
        }
    }

    /// Checks that the stream may end here; call it at end of stream, after ``nextFrame()`` returned `nil`.
    /// - Throws: `UnixSocketError` with code `.truncatedFrame` if the stream ended inside a frame's header or body
    ///   (the detail says how many of the frame's bytes arrived), or the decoder's earlier failure.
    public mutating func finish() throws(UnixSocketError) {
        if let failure = finishCore() {
            throw failure.unixSocketError(operation: "decode frame")
        }
    }
}
