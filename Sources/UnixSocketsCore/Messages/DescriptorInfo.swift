public import SystemPackage
import UnixSocketsSystem

/// What an open descriptor refers to, as a trace shows it: the text of its `/proc/self/fd` link
/// (`/etc/hostname`, `/dev/pts/3`, `socket:[12345]`, `pipe:[678]`), its file type and its access mode.
///
/// ```swift
/// let info = DescriptorInfo(of: file)   // 7: /etc/hostname (regular file, read-only)
/// ```
public struct DescriptorInfo: Sendable, Hashable, CustomStringConvertible {
    /// The descriptor's number in this process.
    public let descriptor: CInt
    /// What `/proc/self/fd/N` links to, or nil if it could not be read.
    public let target: String?
    /// "regular file", "directory", "character device", "block device", "socket", "pipe" or "file"; nil if
    /// fstat failed.
    public let type: String?
    /// "read-only", "write-only", "read-write" or "path only" (O_PATH); nil if fcntl failed.
    public let access: String?

    /// Reads what the kernel says of `descriptor` (readlink of /proc/self/fd/N, fstat, fcntl F_GETFL). It
    /// never throws: what cannot be read is nil (a descriptor closed meanwhile has all three nil).
    public init(of descriptor: FileDescriptor) {
        self.init(descriptor: descriptor.rawValue)
    }

    package init(descriptor: CInt) {
        let facts = DescriptorFacts.of(descriptor)
        self.descriptor = descriptor
        target = facts.target
        type = facts.type?.name
        access = facts.access.map {
            switch $0 {
            case .readOnly: "read-only"
            case .writeOnly: "write-only"
            case .readWrite: "read-write"
            case .path: "path only"
            }
        }
    }

    /// `7: /etc/hostname (regular file, read-only)`.
    public var description: String {
        "\(descriptor): \(target ?? "?") (\(type ?? "unknown type"), \(access ?? "unknown access"))"
    }
}
