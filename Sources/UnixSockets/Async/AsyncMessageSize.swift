// The async twin of `nextMessageSize(timeout:)`: wait for a message without holding a buffer for it.
// A server with many idle clients then allocates for a message only once one has arrived, and only as much
// as it holds (`uds listen -k -t seqpacket`).

extension SocketCore {
    /// The size of the next message without consuming it (MSG_PEEK | MSG_TRUNC, no control buffer: no
    /// descriptor is installed by the peek), waiting on the reactor; 0 at EOF.
    func asyncNextMessageSize(timeout: Duration?) async throws -> Int {
        // One byte of room: MSG_TRUNC makes the kernel report the whole length anyway.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 1)
        defer { scratch.deallocate() }
        return try await asyncIO("peek", writing: false, timeout: timeout) { fd in
            system_recv(fd, scratch, SystemConstants.msgPeek | SystemConstants.msgTrunc)
        }
    }
}

extension UnixSeqPacket {
    /// The size of the next message, without consuming it and without a buffer for it (MSG_PEEK |
    /// MSG_TRUNC), waiting without blocking a thread; 0 at EOF.
    /// - Throws: ``UnixSocketError`` (`.timedOut`, `.closed`) or `CancellationError`.
    public func nextMessageSize(timeout: Duration? = nil) async throws -> Int {
        try await core.asyncNextMessageSize(timeout: timeout)
    }
}

extension UnixDatagram {
    /// The size of the next datagram, without consuming it and without a buffer for it (MSG_PEEK |
    /// MSG_TRUNC), waiting without blocking a thread.
    /// - Throws: ``UnixSocketError`` (`.timedOut`, `.closed`) or `CancellationError`.
    public func nextMessageSize(timeout: Duration? = nil) async throws -> Int {
        try await core.asyncNextMessageSize(timeout: timeout)
    }
}
