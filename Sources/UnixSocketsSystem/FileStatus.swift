// What fstat/fstatat say of a file, as Swift values: its type and identity (device, inode).
import CUnixSockets
package import SystemPackage

/// The type and identity of a file, from `struct stat`.
package struct FileStatus: Equatable, Sendable {
    /// The file type bits of `st_mode`.
    package enum FileType: Sendable, Equatable {
        case fifo, regular, directory, socket, characterDevice, blockDevice, other

        /// The type's name in messages ("pipe", "regular file", ...).
        package var name: String {
            switch self {
            case .fifo: "pipe"
            case .regular: "regular file"
            case .directory: "directory"
            case .socket: "socket"
            case .characterDevice: "character device"
            case .blockDevice: "block device"
            case .other: "file"
            }
        }
    }

    package let type: FileType
    package let device: UInt64
    package let inode: UInt64

    init(_ info: stat) {
        switch info.st_mode & mode_t(S_IFMT) {
        case mode_t(S_IFIFO): type = .fifo
        case mode_t(S_IFREG): type = .regular
        case mode_t(S_IFSOCK): type = .socket
        case mode_t(S_IFCHR): type = .characterDevice
        case mode_t(S_IFDIR): type = .directory
        case mode_t(S_IFBLK): type = .blockDevice
        default: type = .other
        }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }

    /// fstat(2) of `fd`.
    package static func of(_ fd: CInt) -> Result<FileStatus, Errno> {
        var info = stat()
        return system_fstat(fd, &info).map { _ in FileStatus(info) }
    }

    /// fstatat(2) of `name` in `directory`, never following a symlink in the last component.
    package static func of(entry name: UnsafePointer<CChar>, in directory: CInt) -> Result<FileStatus, Errno> {
        var info = stat()
        return system_fstatatNoFollow(directory, name, &info).map { _ in FileStatus(info) }
    }
}

/// What an open descriptor refers to, for traces: the text of its `/proc/self/fd` link (`/etc/hostname`,
/// `socket:[12345]`, `pipe:[678]`), its file type and its access mode.
package struct DescriptorFacts: Sendable {
    package enum Access: Sendable { case readOnly, writeOnly, readWrite, path }
    package let target: String?
    package let type: FileStatus.FileType?
    package let access: Access?

    /// Reads readlink(/proc/self/fd/N), fstat and fcntl(F_GETFL) of `fd`; what cannot be read is nil.
    package static func of(_ fd: CInt) -> DescriptorFacts {
        var link = [CChar](repeating: 0, count: 4097)
        let length = "/proc/self/fd/\(fd)".withCString { path in
            link.withUnsafeMutableBufferPointer { system_readlink(path, $0) }
        }
        let target: String? =
            switch length {
            case .success(let count):
                String(decoding: link[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            case .failure: nil
            }
        let type = try? FileStatus.of(fd).get().type
        let access: Access? =
            switch system_fcntl(fd, SystemConstants.fcntlGetStatusFlags) {
            case .success(let flags):
                if flags & 0o10_000_000 != 0 {  // O_PATH (Linux; not exported by Glibc's Swift module)
                    .path
                } else {
                    switch flags & CInt(O_ACCMODE) {
                    case CInt(O_RDONLY): .readOnly
                    case CInt(O_WRONLY): .writeOnly
                    default: .readWrite
                    }
                }
            case .failure: nil
            }
        return DescriptorFacts(target: target, type: type, access: access)
    }
}
