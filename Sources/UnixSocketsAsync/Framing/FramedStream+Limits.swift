import UnixSocketsCore

// What a reader that meters its memory needs from the frame codec and the framed stream: the size of the frame
// in progress, and a reader whose state lives with its owner (``UnixServer``'s connections), so the owner can
// decide before every read how many bytes it may take in. Descriptor attribution is FramedStream's own
// (`FramedStream.absorb`), so both readers hand descriptors to the same frames.

extension FrameDecoder {
    /// The wire length (header plus payload) of the frame in progress once its 4 header bytes are buffered;
    /// nil before that, and after a failure. Never more than `headerLength + maximumFrameLength`: a longer
    /// announcement fails the decoder as soon as its header is complete.
    var pendingFrameWireLength: Int? {
        guard failure == nil, storage.count - readIndex >= FrameFormat.headerLength else { return nil }
        var announced = 0
        for index in readIndex..<(readIndex + FrameFormat.headerLength) {
            announced = announced << 8 | Int(storage[index])
        }
        return FrameFormat.headerLength + announced
    }
}

extension FramedStream {
    /// The receive side of a framed stream, held by its owner instead of the stream: the owner does the reads
    /// (sized as it likes) and feeds each one to ``ingest(_:)``. Frames come out in order with the descriptors
    /// ``FramedStream`` would give them.
    struct MeteredReader: Sendable {
        private var state: ReaderState
        /// Index in `state.ready` of the next frame to hand out (taking from the front of an array is O(n)).
        private var readyHead = 0
        /// Wire bytes (header + payload) of the decoded frames not handed out yet.
        private(set) var readyByteCount = 0

        init(maximumFrameLength: Int) {
            state = ReaderState(decoder: FrameDecoder(maximumFrameLength: maximumFrameLength))
        }

        /// Bytes of the frame in progress that are buffered.
        var bufferedByteCount: Int { state.decoder.bufferedByteCount }
        /// The wire length of the frame in progress, once its header has arrived.
        var pendingFrameWireLength: Int? { state.decoder.pendingFrameWireLength }
        /// The capacity of the decoder's buffer (for tests of memory use).
        var bufferCapacity: Int { state.decoder.storageCapacity }
        /// Whether the stream ended (a clean EOF was ingested).
        var ended: Bool { state.ended }

        /// The next decoded frame, if one is ready.
        mutating func takeFrame() -> FramedMessage? {
            guard readyHead < state.ready.count else { return nil }
            let frame = state.ready[readyHead]
            state.ready[readyHead] = FramedMessage(bytes: [], descriptors: [])  // let go of its memory now
            readyHead += 1
            readyByteCount -= FrameFormat.headerLength + frame.bytes.count
            if readyHead == state.ready.count {
                state.ready.removeAll(keepingCapacity: state.ready.count <= 64)
                readyHead = 0
            }
            return frame
        }

        /// Between frames, drops the decoder's buffer (the decoder keeps up to 1 MiB of capacity for reuse,
        /// which across thousands of idle connections is memory nobody accounts for). Kept when descriptors
        /// wait for the next frame, whose offset the decoder tracks.
        mutating func releaseIdleBuffer() {
            guard state.decoder.bufferedByteCount == 0, state.decoder.storageCapacity > 0, state.pending == nil,
                state.decoder.failure == nil, !state.ended
            else { return }
            state.decoder = FrameDecoder(maximumFrameLength: state.decoder.maximumFrameLength)
        }

        /// Feeds one read: decodes the frames it completes; an empty read is the end of the stream.
        /// - Throws: ``UnixSocketError`` `.truncatedFrame` (the stream ended inside a frame), `.frameTooLarge`.
        mutating func ingest(_ message: UnixMessage) throws(UnixSocketError) {
            let before = state.ready.count
            try FramedStream.ingest(
                &state,
                message,
                maxDescriptorsPerFrame: FramedStream.defaultMaxDescriptorsPerFrame,
                address: nil
            )
            for index in before..<state.ready.count {
                readyByteCount += FrameFormat.headerLength + state.ready[index].bytes.count
            }
        }
    }
}
