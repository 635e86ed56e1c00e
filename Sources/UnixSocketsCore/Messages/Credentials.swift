package import UnixSocketsSystem

/// Who a peer is: process id, user id, group id and (where asked) supplementary groups.
///
/// Each field is `nil` when the kernel does not know it (an unconnected datagram socket reports pid 0 and
/// uid/gid -1): unknown is never treated as root. The corresponding C data is `struct ucred`.
public struct UnixCredentials: Sendable, Hashable, CustomStringConvertible {
    /// The peer's process id, or nil if unknown.
    public var pid: Int32?
    /// The peer's user id, or nil if unknown.
    public var uid: UInt32?
    /// The peer's primary group id, or nil if unknown.
    public var gid: UInt32?
    /// Supplementary groups (SO_PEERGROUPS), or nil when not asked for or unknown.
    public var groups: [UInt32]?

    /// Creates credentials; pass nil for what is unknown.
    public init(pid: Int32?, uid: UInt32?, gid: UInt32?, groups: [UInt32]? = nil) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    /// This process's own credentials (what SCM_CREDENTIALS sends by default).
    public static var current: UnixCredentials {
        UnixCredentials(pid: system_getpid(), uid: system_getuid(), gid: system_getgid())
    }

    init(_ raw: KernelCredentials.Raw) {
        let raw = KernelCredentials.fields(of: raw)
        // pid 0 with the overflow ids (65534): the kernel attached no credentials (a message sent before
        // SO_PASSCRED was on, or an unmappable peer). That is unknown, not the user "nobody".
        if raw.pid <= 0 && raw.uid == Self.overflowID && raw.gid == Self.overflowID {
            self.init(pid: nil, uid: nil, gid: nil)
            return
        }
        self.init(
            pid: raw.pid > 0 ? raw.pid : nil,
            uid: raw.uid == UInt32.max ? nil : raw.uid,
            gid: raw.gid == UInt32.max ? nil : raw.gid
        )
    }

    /// The kernel's default overflow uid/gid (`/proc/sys/kernel/overflowuid`): what it reports for none.
    static let overflowID: UInt32 = 65534

    package var raw: KernelCredentials.Raw {
        KernelCredentials.make(pid: pid ?? 0, uid: uid ?? UInt32.max, gid: gid ?? UInt32.max)
    }

    /// Whether the kernel knows who the peer is (uid known).
    public var isKnown: Bool { uid != nil }

    /// Whether the peer's uid is in `uids`, or its primary or a supplementary group is in `gids`.
    /// An unknown peer is never allowed.
    public func isAllowed(uids: Set<UInt32>, gids: Set<UInt32> = []) -> Bool {
        guard let uid else { return false }
        if uids.contains(uid) { return true }
        if let gid, gids.contains(gid) { return true }
        return groups?.contains(where: gids.contains) ?? false
    }

    public var description: String {
        func show<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "unknown" }
        return "pid=\(show(pid)) uid=\(show(uid)) gid=\(show(gid))"
    }
}
