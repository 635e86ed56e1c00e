import SystemPackage
import UnixSocketsSystem

/// The kernel's table of Unix sockets, asked through sock_diag (NETLINK_SOCK_DIAG): what `ss -x` reads.
/// One dump request, then every `unix_diag_msg` with the attributes asked for in `show`.
enum SockDiag {
    /// One socket: its `unix_diag_msg` fields and its attributes (type, payload).
    struct Message {
        var type: UInt8
        var state: UInt8
        var inode: UInt32
        var attributes: [(type: Int32, payload: ArraySlice<UInt8>)]
    }

    /// Dumps every Unix socket with the `UDIAG_SHOW_*` attributes in `show`, calling `body` for each.
    static func dump(show: UInt32, _ body: (Message) -> Void) -> Result<Void, Errno> {
        let fd: CInt
        switch system_sockDiagSocket() {
        case .success(let value): fd = value
        case .failure(let errno): return .failure(errno)
        }
        defer { _ = system_close(fd) }
        // nlmsghdr (16 bytes) + unix_diag_req (24 bytes).
        var request = [UInt8](repeating: 0, count: 40)
        func put32(_ value: UInt32, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { request.replaceSubrange(offset..<offset + 4, with: $0) }
        }
        func put16(_ value: UInt16, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { request.replaceSubrange(offset..<offset + 2, with: $0) }
        }
        put32(40, at: 0)  // nlmsg_len
        put16(SystemConstants.netlinkSockDiagByFamily, at: 4)  // nlmsg_type
        put16(SystemConstants.netlinkRequestDump, at: 6)  // nlmsg_flags
        put32(1, at: 8)  // nlmsg_seq
        request[16] = SystemConstants.netlinkFamilyUnix  // sdiag_family
        put32(0xFFFF_FFFF, at: 20)  // udiag_states: all
        put32(show, at: 28)  // udiag_show
        switch request.withUnsafeBytes({ system_send(fd, $0, 0) }) {
        case .failure(let errno): return .failure(errno)
        case .success(.wouldBlock): return .failure(.resourceTemporarilyUnavailable)
        case .success: break
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count: Int
            switch buffer.withUnsafeMutableBytes({ system_recv(fd, $0, 0) }) {
            case .failure(let errno): return .failure(errno)
            case .success(.wouldBlock): return .failure(.resourceTemporarilyUnavailable)
            case .success(.done(let value)): count = value
            }
            if count == 0 { return .failure(.ioError) }
            var offset = 0
            while offset + 16 <= count {
                let length = Int(read32(buffer, offset))
                let type = Int32(read16(buffer, offset + 4))
                if length < 16 || offset + length > count { return .failure(.ioError) }
                if type == SystemConstants.netlinkDone { return .success(()) }
                if type == SystemConstants.netlinkError {
                    let code = Int32(bitPattern: read32(buffer, offset + 16))
                    return .failure(Errno(rawValue: code < 0 ? -code : .max))
                }
                if type == Int32(SystemConstants.netlinkSockDiagByFamily) && length >= 32 {
                    // unix_diag_msg: family, type, state, pad (u8 each), inode (u32), cookie (2 x u32);
                    // then attributes (rtattr: u16 length, u16 type, payload, padded to 4).
                    let start = offset + 16
                    var message = Message(
                        type: buffer[start + 1],
                        state: buffer[start + 2],
                        inode: read32(buffer, start + 4),
                        attributes: []
                    )
                    var attribute = start + 16
                    let end = offset + length
                    while attribute + 4 <= end {
                        let attributeLength = Int(read16(buffer, attribute))
                        let attributeType = Int32(read16(buffer, attribute + 2))
                        if attributeLength < 4 || attribute + attributeLength > end { break }
                        message.attributes.append(
                            (attributeType, buffer[(attribute + 4)..<(attribute + attributeLength)])
                        )
                        attribute += (attributeLength + 3) & ~3
                    }
                    body(message)
                }
                offset += (length + 3) & ~3
            }
        }
    }

    /// A little-endian u32 at `offset` of `bytes` (indices are the collection's own).
    static func read32(_ bytes: some Collection<UInt8>, _ offset: Int) -> UInt32 {
        let start = bytes.index(bytes.startIndex, offsetBy: offset)
        var value: UInt32 = 0
        for (shift, byte) in bytes[start...].prefix(4).enumerated() { value |= UInt32(byte) << (8 * shift) }
        return value
    }

    static func read16(_ bytes: some Collection<UInt8>, _ offset: Int) -> UInt16 {
        let start = bytes.index(bytes.startIndex, offsetBy: offset)
        var value: UInt16 = 0
        for (shift, byte) in bytes[start...].prefix(2).enumerated() { value |= UInt16(byte) << (8 * shift) }
        return value
    }
}
