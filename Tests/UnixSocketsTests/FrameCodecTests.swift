import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// A small deterministic generator (SplitMix64) so random tests are reproducible.
private struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The header bytes of `length` as an array, written out by hand (independently of the encoder).
private func headerBytes(_ length: UInt32) -> [UInt8] {
    [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF), UInt8(length & 0xFF)]
}

/// A frame on the wire, built by hand.
private func wireFrame(_ payload: [UInt8]) -> [UInt8] {
    headerBytes(UInt32(payload.count)) + payload
}

/// A payload of `count` bytes with a recognizable pattern (a 251-byte cycle, so frames of different lengths differ).
private func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
    var bytes = (0..<min(count, 251)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    while bytes.count < count {  // Doubling copies in bulk, so even 16 MiB is quick in debug builds.
        bytes.append(contentsOf: bytes.prefix(count - bytes.count))
    }
    return bytes
}

/// Takes every complete frame; stops at the first failure and returns it.
private func drain(_ decoder: inout FrameDecoder) -> (frames: [DecodedFrame], failure: FrameCodecFailure?) {
    var frames: [DecodedFrame] = []
    while true {
        switch decoder.nextFrameCore() {
        case .success(let frame?): frames.append(frame)
        case .success(nil): return (frames, nil)
        case .failure(let failure): return (frames, failure)
        }
    }
}

@Suite("Frame encoder")
struct FrameEncoderTests {
    @Test("header bytes are the big-endian length", arguments: [0, 1, 255, 256, 0x0102_0304, Int(UInt32.max)])
    func headerIsBigEndian(length: Int) throws {
        let header = try #require(FrameEncoder.header(length: length))
        #expect([header.0, header.1, header.2, header.3] == headerBytes(UInt32(length)))
    }

    @Test("a header cannot express a negative length or one over UInt32.max")
    func headerRejectsUnexpressibleLengths() {
        #expect(FrameEncoder.header(length: -1) == nil)
        #expect(FrameEncoder.header(length: Int(UInt32.max) + 1) == nil)
    }

    @Test("encoding lengths 0, 1 and the maximum writes header then payload", arguments: [0, 1, 16 * 1024 * 1024])
    func encodesHeaderThenPayload(length: Int) throws {
        let payload = pattern(length)
        var buffer: [UInt8] = [0xEE]
        try FrameEncoder().encode(payload, into: &buffer)
        #expect(buffer.count == 1 + 4 + length)
        #expect(buffer[0] == 0xEE)
        #expect(Array(buffer[1..<5]) == headerBytes(UInt32(length)))
        #expect(Array(buffer[5...]) == payload)
    }

    @Test("encoding a payload over the maximum throws frameTooLarge and leaves the buffer alone")
    func encodeOverMaximumFails() {
        let encoder = FrameEncoder(maximumFrameLength: 10)
        var buffer: [UInt8] = [1, 2]
        #expect(encoder.encodeCore(pattern(11), into: &buffer) == .frameTooLarge(length: 11, maximum: 10))
        #expect(buffer == [1, 2])
        let error = #expect(throws: UnixSocketError.self) { try encoder.encode(pattern(11), into: &buffer) }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.operation == "encode frame")
        #expect(error?.detail == "frame length 11 exceeds the maximum 10")
        #expect(buffer == [1, 2])
        #expect(throws: UnixSocketError.self) { try encoder.header(payloadLength: 11) }
        #expect(encoder.encodeCore(pattern(10), into: &buffer) == nil)
    }

    @Test("the default maximum is 16 MiB: one byte more fails")
    func defaultMaximumPlusOneFails() {
        let encoder = FrameEncoder()
        let maximum = 16 * 1024 * 1024
        #expect(encoder.maximumFrameLength == maximum)
        var buffer: [UInt8] = []
        let failure = encoder.encodeCore(Repeated(count: maximum + 1), into: &buffer)
        #expect(failure == .frameTooLarge(length: UInt64(maximum) + 1, maximum: maximum))
        #expect(buffer.isEmpty)
    }

    @Test("a maximum over UInt32.max is clamped to what a header can express")
    func maximumIsClamped() {
        #expect(FrameEncoder(maximumFrameLength: Int.max).maximumFrameLength == Int(UInt32.max))
        #expect(FrameDecoder(maximumFrameLength: Int.max).maximumFrameLength == Int(UInt32.max))
        var buffer: [UInt8] = []
        let failure = FrameEncoder(maximumFrameLength: Int.max).encodeCore(
            Repeated(count: Int(UInt32.max) + 1),
            into: &buffer
        )
        #expect(failure == .frameTooLarge(length: UInt64(UInt32.max) + 1, maximum: Int(UInt32.max)))
        #expect(buffer.isEmpty)
    }

    @Test("encoding many frames into one buffer grows it geometrically, not frame by frame")
    func encodeGrowsGeometrically() throws {
        let encoder = FrameEncoder()
        var buffer: [UInt8] = []
        var capacityChanges = 0
        var lastCapacity = buffer.capacity
        for index in 0..<20_000 {
            try encoder.encode(pattern(index % 50), into: &buffer)
            if buffer.capacity != lastCapacity {
                capacityChanges += 1
                lastCapacity = buffer.capacity
            }
        }
        #expect(buffer.count == 20_000 * 4 + 400 * (0..<50).reduce(0, +))
        #expect(capacityChanges < 64)
    }

    @Test("header(payloadLength:) checks the maximum")
    func checkedHeader() throws {
        let header = try FrameEncoder(maximumFrameLength: 300).header(payloadLength: 300)
        #expect([header.0, header.1, header.2, header.3] == [0, 0, 1, 44])
    }
}

/// A collection of `count` zero bytes that allocates nothing (to encode "huge" payloads without memory).
private struct Repeated: RandomAccessCollection {
    var count: Int
    var startIndex: Int { 0 }
    var endIndex: Int { count }
    subscript(position: Int) -> UInt8 { 0 }
}

@Suite("Frame decoder")
struct FrameDecoderTests {
    @Test("lengths 0, 1, 1000 and the maximum decode", arguments: [0, 1, 1000, 16 * 1024 * 1024])
    func decodesLengths(length: Int) throws {
        var decoder = FrameDecoder()
        let payload = pattern(length, seed: 7)
        decoder.append(contentsOf: wireFrame(payload))
        let frame = try #require(try decoder.nextFrame())
        #expect(frame.payload == payload)
        #expect(frame.startOffset == 0)
        #expect(frame.endOffset == UInt64(4 + length))
        #expect(try decoder.nextFrame() == nil)
        #expect(decoder.bufferedByteCount == 0)
        try decoder.finish()
    }

    @Test("a header announcing maximum + 1 fails as soon as it is buffered, with no body bytes")
    func maximumPlusOneFailsAtHeader() {
        var decoder = FrameDecoder()
        let maximum = 16 * 1024 * 1024
        decoder.append(contentsOf: headerBytes(UInt32(maximum + 1)))
        #expect(decoder.nextFrameCore() == .failure(.frameTooLarge(length: UInt64(maximum) + 1, maximum: maximum)))
        #expect(decoder.storageCapacity < 1024)
    }

    @Test(
        "a header announcing 2^32 - 1 fails before any allocation",
        arguments: [0, 64, 16 * 1024 * 1024],
        [false, true]
    )
    func hugeHeaderFailsBeforeAllocating(maximum: Int, rawAppend: Bool) throws {
        var decoder = FrameDecoder(maximumFrameLength: maximum)
        // Found on append already, before nextFrame is even asked.
        let header: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
        if rawAppend {
            header.withUnsafeBytes { decoder.append($0) }
        } else {
            decoder.append(contentsOf: header)
        }
        #expect(decoder.failure == .frameTooLarge(length: UInt64(UInt32.max), maximum: maximum))
        #expect(decoder.storageCapacity < 1024)
        #expect(decoder.bufferedByteCount == 0)
        let error = #expect(throws: UnixSocketError.self) { try decoder.nextFrame() }
        #expect(error?.code == .frameTooLarge)
        #expect(error?.operation == "decode frame")
        #expect(error?.detail == "frame length 4294967295 exceeds the maximum \(maximum)")
        #expect(error?.description == "decode frame: frame length 4294967295 exceeds the maximum \(maximum)")
        // More body bytes are dropped, not buffered.
        decoder.append(contentsOf: [UInt8](repeating: 1, count: 10_000))
        #expect(decoder.bufferedByteCount == 0)
        #expect(decoder.storageCapacity < 1024)
        #expect(decoder.totalBytesAppended == 10_004)
    }

    @Test("an oversized header is found when nextFrame reaches it, after the frames before it")
    func oversizedHeaderAfterGoodFrames() {
        var decoder = FrameDecoder(maximumFrameLength: 8)
        decoder.append(contentsOf: wireFrame([1, 2]) + wireFrame([3]) + headerBytes(9) + pattern(9))
        #expect(decoder.nextFrameCore() == .success(DecodedFrame(payload: [1, 2], startOffset: 0)))
        #expect(decoder.nextFrameCore() == .success(DecodedFrame(payload: [3], startOffset: 6)))
        #expect(decoder.nextFrameCore() == .failure(.frameTooLarge(length: 9, maximum: 8)))
    }

    @Test("a maximum of 0 accepts only empty frames")
    func zeroMaximum() {
        var decoder = FrameDecoder(maximumFrameLength: 0)
        decoder.append(contentsOf: headerBytes(0) + headerBytes(0) + headerBytes(1))
        let (frames, failure) = drain(&decoder)
        #expect(frames == [DecodedFrame(payload: [], startOffset: 0), DecodedFrame(payload: [], startOffset: 4)])
        #expect(failure == .frameTooLarge(length: 1, maximum: 0))
    }

    @Test("a header split at every byte offset decodes once complete")
    func headerSplitAtEveryOffset() throws {
        let payload = pattern(300, seed: 3)
        let wire = wireFrame(payload)
        for split in 0...4 {
            var decoder = FrameDecoder()
            decoder.append(contentsOf: wire[..<split])
            #expect(try decoder.nextFrame() == nil, "split \(split)")
            #expect(decoder.bufferedByteCount == split)
            decoder.append(contentsOf: wire[split...])
            #expect(try decoder.nextFrame() == DecodedFrame(payload: payload, startOffset: 0), "split \(split)")
            #expect(try decoder.nextFrame() == nil)
        }
    }

    @Test("two frames split at every offset, header bytes fed one at a time, decode the same")
    func streamSplitAtEveryOffset() throws {
        let first = pattern(5, seed: 1)
        let second = pattern(258, seed: 2)
        let wire = wireFrame(first) + wireFrame(second)
        let expected = [DecodedFrame(payload: first, startOffset: 0), DecodedFrame(payload: second, startOffset: 9)]
        for split in 0...wire.count {
            var decoder = FrameDecoder()
            var frames: [DecodedFrame] = []
            wire[..<split].withUnsafeBytes { decoder.append($0) }
            frames += drain(&decoder).frames
            #expect(frames == expected.filter { $0.endOffset <= UInt64(split) }, "split \(split)")
            wire[split...].withUnsafeBytes { decoder.append($0) }
            frames += drain(&decoder).frames
            #expect(frames == expected, "split \(split)")
            #expect(decoder.finishCore() == nil)
        }
    }

    @Test("a body split across reads is returned only when complete")
    func bodySplitAcrossReads() throws {
        let payload = pattern(100_000, seed: 9)
        let wire = wireFrame(payload)
        var decoder = FrameDecoder()
        let cuts = [0, 3, 4, 5, 70_000, 99_999, wire.count - 1, wire.count]
        for (from, to) in zip(cuts, cuts.dropFirst()) {
            #expect(try decoder.nextFrame() == nil)
            decoder.append(contentsOf: wire[from..<to])
        }
        #expect(try decoder.nextFrame() == DecodedFrame(payload: payload, startOffset: 0))
        #expect(decoder.bufferedByteCount == 0)
    }

    @Test("many frames in one append come out in order with their offsets")
    func manyFramesInOneAppend() throws {
        var wire: [UInt8] = []
        var expected: [DecodedFrame] = []
        for index in 0..<2000 {
            let payload = pattern(index % 37, seed: UInt8(truncatingIfNeeded: index))
            expected.append(DecodedFrame(payload: payload, startOffset: UInt64(wire.count)))
            wire += wireFrame(payload)
        }
        wire += headerBytes(50)  // A partial frame left at the end.
        var decoder = FrameDecoder()
        wire.withUnsafeBytes { decoder.append($0) }
        let (frames, failure) = drain(&decoder)
        #expect(failure == nil)
        #expect(frames == expected)
        #expect(decoder.bufferedByteCount == 4)
        #expect(decoder.nextFrameOffset == UInt64(wire.count - 4))
    }

    @Test("EOF inside the header is a truncated frame", arguments: [1, 2, 3])
    func eofInsideHeader(received: Int) {
        var decoder = FrameDecoder()
        decoder.append(contentsOf: wireFrame([9]) + headerBytes(7)[..<received])
        #expect(decoder.nextFrameCore() == .success(DecodedFrame(payload: [9], startOffset: 0)))
        #expect(decoder.nextFrameCore() == .success(nil))
        let error = #expect(throws: UnixSocketError.self) { try decoder.finish() }
        #expect(error?.code == .truncatedFrame)
        #expect(error?.operation == "receive frame")
        #expect(error?.detail == "stream ended inside a frame (got \(received) of 4 bytes)")
        #expect(decoder.finishCore() == .truncatedFrame(expected: 4, received: received))
    }

    @Test("EOF inside the body is a truncated frame that counts the header")
    func eofInsideBody() {
        var decoder = FrameDecoder()
        decoder.append(contentsOf: headerBytes(10) + [1, 2, 3])
        #expect(decoder.nextFrameCore() == .success(nil))
        #expect(decoder.finishCore() == .truncatedFrame(expected: 14, received: 7))
        let error = #expect(throws: UnixSocketError.self) { try decoder.finish() }
        #expect(error?.code == .truncatedFrame)
        #expect(error?.description == "receive frame: stream ended inside a frame (got 7 of 14 bytes)")
    }

    @Test("EOF right after the header of a non-empty frame is truncated; of an empty frame, clean")
    func eofAfterHeader() {
        var nonEmpty = FrameDecoder()
        nonEmpty.append(contentsOf: headerBytes(1))
        #expect(nonEmpty.finishCore() == .truncatedFrame(expected: 5, received: 4))
        var empty = FrameDecoder()
        empty.append(contentsOf: headerBytes(0))
        #expect(empty.finishCore() == nil)
        #expect(empty.nextFrameCore() == .success(DecodedFrame(payload: [], startOffset: 0)))
    }

    @Test("EOF at a frame boundary, or on an empty stream, is clean")
    func cleanEOF() throws {
        var empty = FrameDecoder()
        try empty.finish()
        #expect(empty.finishCore() == nil)
        var decoder = FrameDecoder()
        decoder.append(contentsOf: wireFrame([1, 2, 3]) + wireFrame([]))
        // Finishing before draining: complete frames are not an unclean end, and can still be taken.
        #expect(decoder.finishCore() == nil)
        #expect(drain(&decoder).frames.map(\.payload) == [[1, 2, 3], []])
        try decoder.finish()
    }

    @Test("a failure is sticky: later appends, nextFrame and finish all report it")
    func failureIsSticky() {
        var decoder = FrameDecoder(maximumFrameLength: 100)
        decoder.append(contentsOf: headerBytes(101))
        let failure = FrameCodecFailure.frameTooLarge(length: 101, maximum: 100)
        #expect(decoder.nextFrameCore() == .failure(failure))
        decoder.append(contentsOf: wireFrame([1, 2, 3]))
        #expect(decoder.nextFrameCore() == .failure(failure))
        #expect(decoder.nextFrameCore() == .failure(failure))
        #expect(decoder.finishCore() == failure)
        #expect(decoder.bufferedByteCount == 0)

        var truncated = FrameDecoder()
        truncated.append(contentsOf: [0, 0])
        #expect(truncated.finishCore() == .truncatedFrame(expected: 4, received: 2))
        truncated.append(contentsOf: [0, 1, 7])
        #expect(truncated.nextFrameCore() == .failure(.truncatedFrame(expected: 4, received: 2)))
        #expect(truncated.finishCore() == .truncatedFrame(expected: 4, received: 2))
    }

    @Test("offsets tell which read a frame began in")
    func offsetsMatchReads() throws {
        // Reads: [A whole, 2 bytes of B's header] [rest of B] [C whole, 1 byte of D's header] [rest of D]
        let a = wireFrame([1])
        let b = wireFrame([2, 2])
        let c = wireFrame([])
        let d = wireFrame([4, 4, 4, 4])
        let reads = [a + b[..<2], Array(b[2...]), c + d[..<1], Array(d[1...])]
        var decoder = FrameDecoder()
        var readRanges: [Range<UInt64>] = []
        var began: [UInt64: Int] = [:]  // frame start offset -> index of the read it began in
        for read in reads {
            let readStart = decoder.totalBytesAppended
            decoder.append(contentsOf: read)
            readRanges.append(readStart..<decoder.totalBytesAppended)
            for frame in drain(&decoder).frames {
                let readIndex = try #require(readRanges.firstIndex(where: { $0.contains(frame.startOffset) }))
                began[frame.startOffset] = readIndex
            }
        }
        #expect(readRanges == [0..<7, 7..<11, 11..<16, 16..<23])
        #expect(began == [0: 0, 5: 0, 11: 2, 15: 2])
    }

    @Test("appending raw buffers, arrays and non-contiguous sequences is alike")
    func appendVariants() {
        let wire = wireFrame(pattern(20)) + wireFrame(pattern(3))
        var raw = FrameDecoder()
        var array = FrameDecoder()
        var lazy = FrameDecoder()
        wire.withUnsafeBytes { raw.append($0) }
        array.append(contentsOf: wire)
        lazy.append(contentsOf: wire.lazy.map { $0 })
        let expected = [
            DecodedFrame(payload: pattern(20), startOffset: 0), DecodedFrame(payload: pattern(3), startOffset: 24),
        ]
        #expect(drain(&raw).frames == expected)
        #expect(drain(&array).frames == expected)
        #expect(drain(&lazy).frames == expected)
        raw.append(UnsafeRawBufferPointer(start: nil, count: 0))
        #expect(raw.totalBytesAppended == UInt64(wire.count))
    }

    @Test("the buffer is compacted: a long stream with a partial frame always pending stays small")
    func bufferStaysBounded() throws {
        let payload = pattern(1000)
        let frame = wireFrame(payload)
        var decoder = FrameDecoder()
        decoder.append(contentsOf: frame[..<500])
        var largestCapacity = 0
        for _ in 0..<5000 {  // 5 MB through the decoder, 1 frame per read, always half a frame pending.
            decoder.append(contentsOf: frame[500...] + frame[..<500])
            #expect(try decoder.nextFrame()?.payload.count == 1000)
            largestCapacity = max(largestCapacity, decoder.storageCapacity)
        }
        #expect(decoder.bufferedByteCount == 500)
        #expect(largestCapacity < 256 * 1024)
    }

    @Test("an emptied buffer does not keep a large capacity")
    func largeCapacityReleased() throws {
        var decoder = FrameDecoder()
        decoder.append(contentsOf: wireFrame(pattern(2 * 1024 * 1024)))
        #expect(try decoder.nextFrame()?.payload.count == 2 * 1024 * 1024)
        #expect(decoder.storageCapacity < 1024 * 1024)
    }

    @Test(
        "random payloads fed in random chunk sizes round-trip",
        arguments: [(1 as UInt64, FrameDecoder.defaultCompactionThreshold), (2, 0), (42, 1000)]
    )
    func randomRoundTrip(seed: UInt64, compactionThreshold: Int) throws {
        var random = SeededGenerator(state: seed)
        // Payloads are random slices of a random pool: generating them byte by byte is slow in debug builds.
        let pool = (0..<(300_000 / 8)).map { _ in random.next() }.withUnsafeBytes { Array($0) }
        let encoder = FrameEncoder(maximumFrameLength: 200_000)
        var wire: [UInt8] = []
        var expected: [DecodedFrame] = []
        for _ in 0..<200 {
            let length =
                Bool.random(using: &random)
                ? Int.random(in: 0...64, using: &random) : Int.random(in: 0...200_000, using: &random)
            let start = Int.random(in: 0...(pool.count - length), using: &random)
            let payload = Array(pool[start..<(start + length)])
            expected.append(DecodedFrame(payload: payload, startOffset: UInt64(wire.count)))
            try encoder.encode(payload, into: &wire)
        }
        var decoder = FrameDecoder(maximumFrameLength: 200_000, compactionThreshold: compactionThreshold)
        var frames: [DecodedFrame] = []
        var index = 0
        while index < wire.count {
            // Mostly small reads (headers split often), sometimes large ones (many frames per read).
            let limit = Bool.random(using: &random) ? 16 : 300_000
            let size = min(Int.random(in: 1...limit, using: &random), wire.count - index)
            wire[index..<(index + size)].withUnsafeBytes { decoder.append($0) }
            index += size
            while let frame = try decoder.nextFrame() { frames.append(frame) }
        }
        #expect(frames.count == expected.count)
        #expect(frames == expected)
        #expect(decoder.bufferedByteCount == 0)
        #expect(decoder.totalBytesAppended == UInt64(wire.count))
        try decoder.finish()
    }
}
