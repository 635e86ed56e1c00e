import CUnixSockets  // stat and S_IF* through the shim's headers, as in Socket/Splice.swift
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
        var info = stat()
        return system_fstat(fd.rawValue, &info).map { _ in
            switch info.st_mode & mode_t(S_IFMT) {
            case mode_t(S_IFREG): .regularFile
            case mode_t(S_IFDIR): .directory
            case mode_t(S_IFIFO): .pipe
            case mode_t(S_IFSOCK): .socket
            case mode_t(S_IFCHR): .characterDevice
            case mode_t(S_IFBLK): .blockDevice
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
                switch pollReadable(fd, timeoutMilliseconds: idleMilliseconds) {
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

    /// poll(2) for readability: true when readable (or hung up), false when the timeout passed first.
    /// POLLNVAL is EBADF.
    static func pollReadable(_ fd: FileDescriptor, timeoutMilliseconds: Int32) -> Result<Bool, Errno> {
        var entry = pollfd(fd: fd.rawValue, events: Int16(POLLIN), revents: 0)
        while true {
            switch system_poll(&entry, 1, timeoutMilliseconds) {
            case .failure(.interrupted): continue  // a signal: poll again (with the whole idle bound, as before)
            case .failure(let errno): return .failure(errno)
            case .success(0): return .success(false)
            case .success:
                if entry.revents & Int16(POLLNVAL) != 0 { return .failure(.badFileDescriptor) }
                return .success(true)
            }
        }
    }
}
