import UnixSocketsSystem

// Socket buffer sizes (SO_SNDBUF / SO_RCVBUF); the public face is on `UnixSocket`.

extension SocketCore {
    func setBufferSizes(send: Int?, receive: Int?) throws(UnixSocketError) {
        for (name, value, option) in [
            ("SO_SNDBUF", send, SystemConstants.soSndBuf), ("SO_RCVBUF", receive, SystemConstants.soRcvBuf),
        ] {
            guard let value else { continue }
            guard value > 0, value <= Int(Int32.max) / 2 else {
                throw UnixSocketError(
                    .invalidArgument,
                    operation: "setsockopt \(name)",
                    address: address,
                    detail: "the buffer size must be 1...\(Int32.max / 2) bytes (got \(value))"
                )
            }
            try setOption(SystemConstants.solSocket, option, CInt(value), operation: "setsockopt \(name)")
        }
    }

    func bufferSizes() throws(UnixSocketError) -> (send: Int, receive: Int) {
        let send = try getOption(SystemConstants.solSocket, SystemConstants.soSndBuf, operation: "getsockopt SO_SNDBUF")
        let receive = try getOption(
            SystemConstants.solSocket,
            SystemConstants.soRcvBuf,
            operation: "getsockopt SO_RCVBUF"
        )
        return (Int(send), Int(receive))
    }
}
