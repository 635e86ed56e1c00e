// `int`-valued socket options, the one shape of getsockopt/setsockopt most callers need.
import CUnixSockets
package import SystemPackage

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
