package import SystemPackage
import UnixSocketsSystem

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
        var table: [UInt64: UnixSocketTableEntry] = [:]
        let dumped = SockDiag.dump(show: SystemConstants.netlinkUnixShowName | SystemConstants.netlinkUnixShowPeer) {
            message in
            var entry = UnixSocketTableEntry(
                inode: UInt64(message.inode),
                type: message.type,
                state: message.state,
                address: nil,
                peerInode: nil
            )
            for (type, payload) in message.attributes {
                if type == SystemConstants.netlinkUnixAttributeName, let first = payload.first {
                    if first == 0 {
                        entry.address = try? UnixAddress.abstract(Array(payload.dropFirst()))
                    } else {
                        entry.address = try? UnixAddress.path(bytes: Array(payload.prefix { $0 != 0 }))
                    }
                } else if type == SystemConstants.netlinkUnixAttributePeer && payload.count >= 4 {
                    let peer = UInt64(SockDiag.read32(payload, 0))
                    if peer != 0 { entry.peerInode = peer }
                }
            }
            table[entry.inode] = entry
        }
        return dumped.map { table }
    }
}
