// libFuzzer target for the frame codec. Built alone with Sources/UnixSockets/Framing/FrameCodec.swift by
// scripts/fuzz-framing.sh; it traps (fatalError) on any invariant violation.
//
// The first input byte picks how the rest (the byte stream) is cut into appends; the stream is then decoded with
// several maxima and several chunkings, and every run is checked against a simple whole-stream reference decoder:
// same frames, same offsets, same final outcome. Re-encoding the frames must reproduce the consumed prefix.

/// What the reference decoder says the stream holds.
private struct Expectation {
    var frames: [DecodedFrame] = []
    /// The failure at the end: `frameTooLarge` at the first oversized header, `truncatedFrame` for a partial tail.
    var failure: FrameCodecFailure?
    /// How many bytes the frames span.
    var consumed = 0
}

/// A whole-stream, obviously-correct decoder.
private func referenceDecode(_ stream: UnsafeBufferPointer<UInt8>, maximum: Int) -> Expectation {
    var result = Expectation()
    var index = 0
    while index < stream.count {
        let remaining = stream.count - index
        guard remaining >= 4 else {
            result.failure = .truncatedFrame(expected: 4, received: remaining)
            break
        }
        var length: UInt64 = 0
        for k in 0..<4 { length = length << 8 | UInt64(stream[index + k]) }
        guard length <= UInt64(maximum) else {
            result.failure = .frameTooLarge(length: length, maximum: maximum)
            break
        }
        guard remaining >= 4 + Int(length) else {
            result.failure = .truncatedFrame(expected: 4 + Int(length), received: remaining)
            break
        }
        let payload = Array(stream[(index + 4)..<(index + 4 + Int(length))])
        result.frames.append(DecodedFrame(payload: payload, startOffset: UInt64(index)))
        index += 4 + Int(length)
    }
    result.consumed = index
    return result
}

/// A deterministic generator of chunk sizes (SplitMix64).
private struct ChunkSizes {
    var state: UInt64
    let limit: Int

    mutating func next() -> Int {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Int(z % UInt64(limit)) + 1
    }
}

private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("frame codec invariant violated: \(message())") }
}

/// Takes every complete frame; returns the failure if decoding failed.
private func drain(_ decoder: inout FrameDecoder, into frames: inout [DecodedFrame]) -> FrameCodecFailure? {
    while true {
        switch decoder.nextFrameCore() {
        case .success(let frame?):
            check(frame.payload.count <= decoder.maximumFrameLength, "frame longer than the maximum")
            frames.append(frame)
        case .success(nil):
            return nil
        case .failure(let failure):
            return failure
        }
    }
}

/// Decodes `stream` cut into chunks of the sizes `nextSize` gives, and checks the result against `expected`.
private func run(
    _ stream: UnsafeBufferPointer<UInt8>,
    maximum: Int,
    expected: Expectation,
    drainEachChunk: Bool,
    nextSize: (inout ChunkSizes) -> Int,
    sizes: ChunkSizes
) {
    var sizes = sizes
    // A tiny compaction threshold (from the control byte) so short inputs exercise compaction too.
    var decoder = FrameDecoder(maximumFrameLength: maximum, compactionThreshold: Int(sizes.state & 15))
    var frames: [DecodedFrame] = []
    var failure: FrameCodecFailure?
    var index = 0
    var chunkNumber = 0
    while index < stream.count {
        let size = min(nextSize(&sizes), stream.count - index)
        let chunk = UnsafeBufferPointer(rebasing: stream[index..<(index + size)])
        // Exercise the contiguous, the generic-contiguous and the non-contiguous append paths.
        switch chunkNumber % 3 {
        case 0: decoder.append(UnsafeRawBufferPointer(chunk))
        case 1: decoder.append(contentsOf: chunk)
        default: decoder.append(contentsOf: chunk.lazy.map { $0 })
        }
        index += size
        chunkNumber += 1
        check(decoder.totalBytesAppended == UInt64(index), "totalBytesAppended \(decoder.totalBytesAppended)")
        // An oversized header fails the decoder as soon as it is buffered, and the buffer is dropped.
        if case .frameTooLarge = expected.failure, decoder.nextFrameOffset == UInt64(expected.consumed),
            index >= expected.consumed + 4
        {
            check(decoder.failure == expected.failure, "oversized header buffered without failing")
            check(decoder.bufferedByteCount == 0, "buffer kept after an oversized header")
        }
        if drainEachChunk, failure == nil {
            failure = drain(&decoder, into: &frames)
            if failure == nil {
                check(decoder.nextFrameOffset == frames.last?.endOffset ?? 0, "nextFrameOffset after draining")
                // What is left is one partial frame, which is shorter than the largest allowed frame.
                check(
                    decoder.bufferedByteCount < 4 + maximum,
                    "bufferedByteCount \(decoder.bufferedByteCount) after draining"
                )
            }
        }
    }
    if drainEachChunk, failure == nil {
        failure = drain(&decoder, into: &frames)
    }
    if !drainEachChunk {
        // Finish before draining: complete frames must survive a clean end.
        let early = decoder.finishCore()
        if let early {
            check(early == expected.failure, "early finish \(early) != \(String(describing: expected.failure))")
            // The failure is sticky: the complete frames still buffered before it are dropped with the buffer.
            failure = early
        } else {
            failure = drain(&decoder, into: &frames)
        }
    }

    let finished = decoder.finishCore()
    if let failure {
        check(finished == failure, "finish after failure \(String(describing: finished)) != \(failure)")
        check(decoder.bufferedByteCount == 0, "buffer kept after failure")
        // Sticky: every later call reports the same failure, and further input is ignored.
        decoder.append(contentsOf: [0, 0, 0, 0])
        switch decoder.nextFrameCore() {
        case .failure(let again): check(again == failure, "failure not sticky: \(again) != \(failure)")
        case .success: fatalError("frame codec invariant violated: decoding went on after \(failure)")
        }
        check(decoder.finishCore() == failure, "finish not sticky")
    }
    check(
        failure == nil ? finished == expected.failure : failure == expected.failure,
        "outcome \(String(describing: failure ?? finished)) != expected \(String(describing: expected.failure))"
    )

    if drainEachChunk || failure == nil {
        check(frames == expected.frames, "frames differ (\(frames.count) vs \(expected.frames.count))")
    } else {
        // Frames buffered when finish failed are dropped; those returned must still be a prefix of the reference.
        check(
            frames.count <= expected.frames.count && Array(expected.frames.prefix(frames.count)) == frames,
            "frames are not a prefix of the reference"
        )
    }

    // Re-encoding the frames reproduces the consumed prefix of the stream.
    let encoder = FrameEncoder(maximumFrameLength: maximum)
    var reencoded: [UInt8] = []
    for frame in frames {
        check(encoder.encodeCore(frame.payload, into: &reencoded) == nil, "re-encoding a decoded frame failed")
    }
    check(
        reencoded.count <= stream.count && reencoded.elementsEqual(stream.prefix(reencoded.count)),
        "re-encoded frames differ from the stream prefix"
    )
    if frames.count == expected.frames.count {
        check(reencoded.count == expected.consumed, "re-encoded length \(reencoded.count) != \(expected.consumed)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let control = data[0]
    let stream = UnsafeBufferPointer(start: data + 1, count: size - 1)

    // Maxima: none but empty frames, a small one that inputs easily exceed, and a large one.
    for maximum in [0, 64, 1 << 20] {
        let expected = referenceDecode(stream, maximum: maximum)
        for frame in expected.frames {
            check(frame.payload.count <= maximum, "reference frame longer than the maximum")
        }
        let seed = ChunkSizes(state: UInt64(control) &* 0x1000_0001 &+ UInt64(size), limit: Int(control >> 2) + 1)
        for drainEachChunk in [true, false] {
            // The whole stream at once, one byte at a time, and pseudo-random sizes of 1...(control / 4 + 1).
            run(
                stream,
                maximum: maximum,
                expected: expected,
                drainEachChunk: drainEachChunk,
                nextSize: { _ in Int.max },
                sizes: seed
            )
            run(
                stream,
                maximum: maximum,
                expected: expected,
                drainEachChunk: drainEachChunk,
                nextSize: { _ in 1 },
                sizes: seed
            )
            run(
                stream,
                maximum: maximum,
                expected: expected,
                drainEachChunk: drainEachChunk,
                nextSize: { $0.next() },
                sizes: seed
            )
        }
    }

    // The encoder: a payload over the maximum fails and leaves the buffer alone; one within it round-trips.
    let payloadLength = min(stream.count, 200)
    let payload = Array(stream.prefix(payloadLength))
    let small = FrameEncoder(maximumFrameLength: Int(control))
    var buffer: [UInt8] = [control]
    let failure = small.encodeCore(payload, into: &buffer)
    if payloadLength > Int(control) {
        check(failure == .frameTooLarge(length: UInt64(payloadLength), maximum: Int(control)), "encode over maximum")
        check(buffer == [control], "failed encode touched the buffer")
    } else {
        check(failure == nil, "encode within maximum failed")
        var decoder = FrameDecoder(maximumFrameLength: Int(control))
        decoder.append(contentsOf: buffer.dropFirst())
        switch decoder.nextFrameCore() {
        case .success(let frame?):
            check(frame.payload == payload && frame.startOffset == 0, "round trip changed the frame")
        default:
            fatalError("frame codec invariant violated: round trip did not decode")
        }
        check(decoder.finishCore() == nil && decoder.bufferedByteCount == 0, "round trip left bytes")
    }
    return 0
}
