import CUnixSockets
import SystemPackage

/// One Unix socket of this machine (network namespace) as sock_diag reports it.
package struct UnixSocketTableEntry: Sendable, Hashable {
    /// The socket's inode (what /proc/PID/fd links name as `socket:[INODE]`).
    package var inode: UInt64
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5).
    package var type: UInt8
    /// The kernel's sk_state: TCP_ESTABLISHED (1), TCP_SYN_SENT (2), TCP_CLOSE (7), TCP_LISTEN (10).
    package var state: UInt8
    /// The bound address with its exact bytes (abstract names may hold NUL), or nil if unbound.
    package var address: UnixAddress?
    /// The peer's inode, for a connected socket.
    package var peerInode: UInt64?
}

/// The machine's Unix sockets via sock_diag (NETLINK_SOCK_DIAG, UDIAG_SHOW_NAME | UDIAG_SHOW_PEER): what
/// `ss -x` reads. Unlike /proc/net/unix it gives the peer inode and names with their exact bytes.
package enum UnixSocketTable {
    /// Every Unix socket the kernel reports, by inode.
    package static func entries() -> Result<[UInt64: UnixSocketTableEntry], Errno> {
        let fd: CInt
        switch system_socket(CInt(AF_NETLINK), CInt(SOCK_DGRAM.rawValue) | UDS_SOCK_CLOEXEC, CInt(NETLINK_SOCK_DIAG)) {
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
        put16(UInt16(SOCK_DIAG_BY_FAMILY), at: 4)  // nlmsg_type
        put16(UInt16(NLM_F_REQUEST | NLM_F_DUMP), at: 6)  // nlmsg_flags
        put32(1, at: 8)  // nlmsg_seq
        request[16] = UInt8(AF_UNIX)  // sdiag_family
        put32(0xFFFF_FFFF, at: 20)  // udiag_states: all
        put32(UInt32(UDIAG_SHOW_NAME | UDIAG_SHOW_PEER), at: 28)  // udiag_show
        switch request.withUnsafeBytes({ system_send(fd, $0, 0) }) {
        case .failure(let errno): return .failure(errno)
        case .success(.wouldBlock): return .failure(.resourceTemporarilyUnavailable)
        case .success: break
        }
        var table: [UInt64: UnixSocketTableEntry] = [:]
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
                if type == NLMSG_DONE { return .success(table) }
                if type == NLMSG_ERROR {
                    let code = Int32(bitPattern: read32(buffer, offset + 16))
                    return .failure(Errno(rawValue: code < 0 ? -code : .max))
                }
                if type == SOCK_DIAG_BY_FAMILY && length >= 32 {
                    // unix_diag_msg: family, type, state, pad (u8 each), inode (u32), cookie (2 x u32).
                    let message = offset + 16
                    var entry = UnixSocketTableEntry(
                        inode: UInt64(read32(buffer, message + 4)), type: buffer[message + 1],
                        state: buffer[message + 2], address: nil, peerInode: nil)
                    var attribute = message + 16
                    let end = offset + length
                    while attribute + 4 <= end {
                        let attributeLength = Int(read16(buffer, attribute))
                        let attributeType = Int32(read16(buffer, attribute + 2))
                        if attributeLength < 4 || attribute + attributeLength > end { break }
                        let payload = Array(buffer[(attribute + 4)..<(attribute + attributeLength)])
                        if attributeType == UNIX_DIAG_NAME && !payload.isEmpty {
                            if payload[0] == 0 {
                                entry.address = try? UnixAddress.abstract(Array(payload.dropFirst()))
                            } else {
                                let path = payload.prefix { $0 != 0 }
                                entry.address = try? UnixAddress.path(bytes: Array(path))
                            }
                        } else if attributeType == UNIX_DIAG_PEER && payload.count >= 4 {
                            let peer = UInt64(read32(payload, 0))
                            if peer != 0 { entry.peerInode = peer }
                        }
                        attribute += (attributeLength + 3) & ~3
                    }
                    table[entry.inode] = entry
                }
                offset += (length + 3) & ~3
            }
        }
    }

    private static func read32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16
            | UInt32(bytes[offset + 3]) << 24
    }

    private static func read16(_ bytes: [UInt8], _ offset: Int) -> UInt16 {
        UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }
}
