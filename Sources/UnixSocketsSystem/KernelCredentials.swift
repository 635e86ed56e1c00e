// `struct ucred` (the shim's `uds_ucred`) to and from Swift values: what SO_PEERCRED and SCM_CREDENTIALS
// carry.
package import CUnixSockets

/// Conversions of the kernel's credentials structure.
package enum KernelCredentials {
    /// The structure itself, as SO_PEERCRED fills it and SCM_CREDENTIALS carries it.
    package typealias Raw = uds_ucred

    /// Its fields, as the kernel wrote them.
    package static func fields(of raw: Raw) -> (pid: Int32, uid: UInt32, gid: UInt32) {
        (raw.pid, raw.uid, raw.gid)
    }

    /// The structure with these fields.
    package static func make(pid: Int32, uid: UInt32, gid: UInt32) -> Raw {
        uds_ucred(pid: pid, uid: uid, gid: gid)
    }
}
