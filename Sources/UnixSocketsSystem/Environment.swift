// The process environment, for systemd's protocols (LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC): read and
// unset here, the one place that calls getenv/unsetenv.
import CUnixSockets
package import SystemPackage

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif

/// The value of environment variable `name` as bytes, or nil when it is unset.
package func system_getenv(_ name: String) -> [UInt8]? {
    guard let value = getenv(name) else { return nil }
    return Array(
        UnsafeBufferPointer(start: UnsafeRawPointer(value).assumingMemoryBound(to: UInt8.self), count: strlen(value))
    )
}

/// Removes environment variable `name` (so that children do not inherit it).
package func system_unsetenv(_ name: String) {
    _ = unsetenv(name)
}

extension SystemConstants {
    package static let soDomain = CInt(SO_DOMAIN)  // the socket's address family
    package static let soAcceptConn = CInt(SO_ACCEPTCONN)  // whether it listens
    package static let afInet = CInt(AF_INET)
    package static let afInet6 = CInt(AF_INET6)
    package static let fcntlGetDescriptorFlags = CInt(F_GETFD)
    package static let fcntlSetDescriptorFlags = CInt(F_SETFD)
    package static let descriptorCloseOnExec = CInt(FD_CLOEXEC)
}

/// pipe2(2) with O_CLOEXEC: (read end, write end). For sd_notify's BARRIER=1.
package func system_pipe() -> Result<(read: CInt, write: CInt), Errno> {
    var ends: (CInt, CInt) = (-1, -1)
    return withUnsafeMutableBytes(of: &ends) { raw in
        valueOrErrno("pipe2") { uds_pipe2(raw.baseAddress!.assumingMemoryBound(to: CInt.self), O_CLOEXEC) }
    }.map { _ in (ends.0, ends.1) }
}
