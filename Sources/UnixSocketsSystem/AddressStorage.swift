// The `sockaddr_un` of a Unix socket address, both ways, for the layers above: they build one from the
// bytes of `sun_path` and hand it to a `system_*` call without naming the C structure.
package import CUnixSockets
package import SystemPackage

/// A `sockaddr_un` with its exact length (the family and `length` bytes of `sun_path`).
package struct SocketAddressStorage {
    /// What a `system_*` call takes as the address: a pointer to `sockaddr` ...
    package typealias Pointer = UnsafePointer<sockaddr>
    /// ... and its length.
    package typealias Length = socklen_t
    /// The structure the kernel returns for a Unix socket (getsockname, getpeername, recvmsg).
    package typealias Unix = sockaddr_un

    private var storage = sockaddr_un()
    private var length = socklen_t(0)

    /// The bytes `sun_path` holds.
    package static let unixPathCapacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)

    /// An AF_UNIX address whose `sun_path` starts with `bytes` (the rest zeroed) and whose length covers
    /// the family and `pathLength` bytes of `sun_path`. Both must fit in `sun_path`.
    package init(unixPath bytes: [UInt8], pathLength: Int) {
        storage.sun_family = sa_family_t(AF_UNIX)
        var length = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        withUnsafeMutableBytes(of: &storage.sun_path) { $0.copyBytes(from: bytes) }
        length += pathLength
        self.length = socklen_t(length)
    }

    /// Calls `body` with the address as a `sockaddr` pointer and its exact length.
    package func withSockAddr<R>(_ body: (Pointer, Length) -> R) -> R {
        withUnsafePointer(to: storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) }
        }
    }

    /// The meaningful bytes of `sun_path` in an address the kernel returned, or nil for none (an unnamed
    /// socket, or not AF_UNIX). The length is honoured (abstract names may hold any byte) and clamped to
    /// the structure (a peer bound to a 108-byte path reports a longer length).
    package static func unixPath(of storage: Unix, length: Length) -> [UInt8]? {
        let offset = MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)!
        let capacity = MemoryLayout<sockaddr_un>.size - offset
        let count = min(max(Int(length) - offset, 0), capacity)
        if count == 0 || storage.sun_family != sa_family_t(AF_UNIX) { return nil }
        var copy = storage
        return withUnsafeBytes(of: &copy.sun_path) { Array($0.prefix(count)) }
    }
}

extension SocketAddressStorage {
    /// getsockname(2) of `fd` into a `sockaddr_un`: the address and the length the kernel reported.
    package static func localUnixAddress(of fd: CInt) -> Result<(address: Unix, length: Length), Errno> {
        readUnix { system_getsockname(fd, $0, $1) }
    }

    /// getpeername(2) of `fd` into a `sockaddr_un`.
    package static func peerUnixAddress(of fd: CInt) -> Result<(address: Unix, length: Length), Errno> {
        readUnix { system_getpeername(fd, $0, $1) }
    }

    /// Whether an address the kernel returned is AF_UNIX.
    package static func isUnixFamily(_ address: Unix) -> Bool { address.sun_family == sa_family_t(AF_UNIX) }

    private static func readUnix(
        _ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Result<CInt, Errno>
    ) -> Result<(address: Unix, length: Length), Errno> {
        var storage = sockaddr_un()
        var length = socklen_t(MemoryLayout<sockaddr_un>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, &length) }
        }
        return result.map { _ in (storage, length) }
    }
}
