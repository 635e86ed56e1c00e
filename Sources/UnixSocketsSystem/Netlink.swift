// The sock_diag (NETLINK_SOCK_DIAG) socket and constants, as Swift values: what `SockDiag` needs to ask
// the kernel for its table of Unix sockets.
import CUnixSockets
package import SystemPackage

package enum Netlink {
    /// A datagram NETLINK_SOCK_DIAG socket (CLOEXEC, blocking).
    package static func openSockDiag() -> Result<CInt, Errno> {
        system_socket(CInt(AF_NETLINK), CInt(SOCK_DGRAM.rawValue) | UDS_SOCK_CLOEXEC, CInt(NETLINK_SOCK_DIAG))
    }

    /// nlmsg_type of a sock_diag request and of each socket in its answer.
    package static let sockDiagByFamily = UInt16(SOCK_DIAG_BY_FAMILY)
    /// nlmsg_flags of a dump request.
    package static let requestDump = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
    /// nlmsg_type of the end of a dump.
    package static let done = Int32(NLMSG_DONE)
    /// nlmsg_type of an error (the payload starts with a negative errno).
    package static let error = Int32(NLMSG_ERROR)
    /// sdiag_family of a Unix socket request.
    package static let familyUnix = UInt8(AF_UNIX)
    /// udiag_show: the bound name.
    package static let unixShowName = UInt32(UDIAG_SHOW_NAME)
    /// udiag_show: the peer's inode.
    package static let unixShowPeer = UInt32(UDIAG_SHOW_PEER)
    /// Attribute type of the bound name.
    package static let unixAttributeName = Int32(UNIX_DIAG_NAME)
    /// Attribute type of the peer's inode.
    package static let unixAttributePeer = Int32(UNIX_DIAG_PEER)
}
