// Socket buffer sizes (SO_SNDBUF / SO_RCVBUF) for the connected and datagram socket types.

extension SocketCore {
    func setBufferSizes(send: Int?, receive: Int?) throws(UnixSocketError) {
        for (name, value, option) in [
            ("SO_SNDBUF", send, SystemConstants.soSndBuf), ("SO_RCVBUF", receive, SystemConstants.soRcvBuf),
        ] {
            guard let value else { continue }
            guard value > 0, value <= Int(Int32.max) / 2 else {
                throw UnixSocketError(
                    .invalidArgument, operation: "setsockopt \(name)", address: address,
                    detail: "the buffer size must be 1...\(Int32.max / 2) bytes (got \(value))")
            }
            try setOption(SystemConstants.solSocket, option, CInt(value), operation: "setsockopt \(name)")
        }
    }

    func bufferSizes() throws(UnixSocketError) -> (send: Int, receive: Int) {
        let send = try getOption(SystemConstants.solSocket, SystemConstants.soSndBuf, operation: "getsockopt SO_SNDBUF")
        let receive = try getOption(
            SystemConstants.solSocket, SystemConstants.soRcvBuf, operation: "getsockopt SO_RCVBUF")
        return (Int(send), Int(receive))
    }
}

extension UnixStream {
    /// Requests socket buffer sizes in bytes (nil leaves one unchanged). The kernel doubles the value for
    /// its bookkeeping and caps it at `net.core.wmem_max` / `rmem_max` silently; ``bufferSizes`` reports
    /// what it granted. On a Unix stream the sender's SO_SNDBUF bounds the bytes in flight.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a size of 0 or less. The corresponding C
    ///   function is `setsockopt` (SO_SNDBUF, SO_RCVBUF).
    public func setBufferSizes(send: Int? = nil, receive: Int? = nil) throws(UnixSocketError) {
        try core.setBufferSizes(send: send, receive: receive)
    }

    /// The granted buffer sizes (SO_SNDBUF, SO_RCVBUF), as the kernel reports them (doubled).
    public var bufferSizes: (send: Int, receive: Int) { get throws(UnixSocketError) { try core.bufferSizes() } }
}

extension UnixSeqPacket {
    /// Requests socket buffer sizes in bytes (nil leaves one unchanged). The largest message this socket
    /// can send is the granted SO_SNDBUF - 32 bytes; the kernel doubles the value and caps it at
    /// `net.core.wmem_max` / `rmem_max` silently (``bufferSizes`` reports what it granted).
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a size of 0 or less. The corresponding C
    ///   function is `setsockopt` (SO_SNDBUF, SO_RCVBUF).
    public func setBufferSizes(send: Int? = nil, receive: Int? = nil) throws(UnixSocketError) {
        try core.setBufferSizes(send: send, receive: receive)
    }

    /// The granted buffer sizes (SO_SNDBUF, SO_RCVBUF), as the kernel reports them (doubled).
    public var bufferSizes: (send: Int, receive: Int) { get throws(UnixSocketError) { try core.bufferSizes() } }
}

extension UnixDatagram {
    /// Requests socket buffer sizes in bytes (nil leaves one unchanged). The largest datagram this socket
    /// can send is the granted SO_SNDBUF - 32 bytes; the kernel doubles the value and caps it at
    /// `net.core.wmem_max` / `rmem_max` silently (``bufferSizes`` reports what it granted).
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a size of 0 or less. The corresponding C
    ///   function is `setsockopt` (SO_SNDBUF, SO_RCVBUF).
    public func setBufferSizes(send: Int? = nil, receive: Int? = nil) throws(UnixSocketError) {
        try core.setBufferSizes(send: send, receive: receive)
    }

    /// The granted buffer sizes (SO_SNDBUF, SO_RCVBUF), as the kernel reports them (doubled).
    public var bufferSizes: (send: Int, receive: Int) { get throws(UnixSocketError) { try core.bufferSizes() } }
}
