import SystemPackage

/// Reading a descriptor the process was handed (by `SCM_RIGHTS`, or inherited) without changing its open
/// file: its O_NONBLOCK flag is shared with other processes and never touched. For `uds recv-fd`.
package enum InheritedFile {
    /// What the descriptor is, for messages.
    package enum Kind: String, Sendable {
        case regularFile = "regular file", directory, pipe, socket, characterDevice = "character device"
        case blockDevice = "block device", other = "file"

        /// Whether a read can wait for a writer (so it goes through poll first).
        package var canWait: Bool { self != .regularFile && self != .blockDevice }
    }

    /// The kind of file behind `fd` (fstat).
    package static func kind(of fd: FileDescriptor) -> Result<Kind, Errno> {
        system_fileType(fd.rawValue).map { type in
            switch type {
            case system_S_IFREG: .regularFile
            case system_S_IFDIR: .directory
            case system_S_IFIFO: .pipe
            case system_S_IFSOCK: .socket
            case system_S_IFCHR: .characterDevice
            case system_S_IFBLK: .blockDevice
            default: .other
            }
        }
    }

    /// A non-blocking open file of our own on the same pipe or FIFO, if the descriptor may be read and the
    /// kernel lets us reopen it (/proc/self/fd/N); nil otherwise.
    package static func privateReader(for fd: FileDescriptor) -> FileDescriptor? {
        guard system_isReadable(fd.rawValue) else { return nil }
        return try? FileDescriptor.open("/proc/self/fd/\(fd.rawValue)", .readOnly, options: [.nonBlocking, .closeOnExec])
    }

    package enum ReadResult: Sendable {
        case data(Int), endOfFile, idle, failed(Errno)
    }

    /// One bounded read: directly for files that cannot wait; otherwise after poll said readable (for at
    /// most `idleMilliseconds`), and again after poll if the data was gone (EAGAIN). A socket is read with
    /// MSG_DONTWAIT.
    package static func readOnce(
        _ fd: FileDescriptor, kind: Kind, into buffer: UnsafeMutableRawBufferPointer, idleMilliseconds: Int32
    ) -> ReadResult {
        while true {
            if kind.canWait {
                switch system_pollReadable(fd.rawValue, timeoutMilliseconds: idleMilliseconds) {
                case .success(true): break
                case .success(false): return .idle
                case .failure(let errno): return .failed(errno)
                }
            }
            switch system_readOnce(fd.rawValue, into: buffer, socket: kind == .socket) {
            case .success(let count): return count == 0 ? .endOfFile : .data(count)
            case .failure(let errno) where errno == .resourceTemporarilyUnavailable && kind.canWait: continue
            case .failure(let errno): return .failed(errno)
            }
        }
    }
}
