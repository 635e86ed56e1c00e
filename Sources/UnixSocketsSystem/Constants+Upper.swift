// Constants the layers above need, as Swift values (next to the ones in Syscalls.swift).
import CUnixSockets
package import SystemPackage

extension SystemConstants {
    /// unshare(2): a thread-private fs context (working directory, umask).
    package static let cloneFS = UDS_CLONE_FS
    /// splice(2): move pages rather than copy, if the kernel can.
    package static let spliceMove = UInt32(UDS_SPLICE_F_MOVE)
    /// fcntl(2): read the open file's status flags.
    package static let fcntlGetStatusFlags = CInt(F_GETFL)
    /// SO_PEERPIDFD (Linux 6.5+).
    package static let soPeerPidfd = UDS_SO_PEERPIDFD
    /// SO_ERROR: the pending error of a socket (how a non-blocking connect ended).
    package static let soError = CInt(SO_ERROR)
    /// SO_REUSEADDR.
    package static let soReuseAddr = CInt(SO_REUSEADDR)
    /// IPPROTO_TCP, the level of TCP_NODELAY.
    package static let ipprotoTCP = CInt(IPPROTO_TCP)
    /// TCP_NODELAY.
    package static let tcpNoDelay = CInt(TCP_NODELAY)
}

/// An `int`-valued socket option: getsockopt/setsockopt with the value and length handled here.
package enum IntSocketOption {
    /// getsockopt(2) of an `int` option; `initial` is what the value holds if the kernel writes nothing.
    package static func get(_ fd: CInt, level: CInt, name: CInt, initial: CInt = 0) -> Result<CInt, Errno> {
        var value = initial
        var length = socklen_t(MemoryLayout<CInt>.size)
        return system_getsockopt(fd, level, name, &value, &length).map { _ in value }
    }

    /// setsockopt(2) of an `int` option.
    package static func set(_ fd: CInt, level: CInt, name: CInt, _ value: CInt) -> Result<CInt, Errno> {
        var value = value
        return system_setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<CInt>.size))
    }
}
