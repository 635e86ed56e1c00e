package import SystemPackage
package import UnixSocketsSystem

/// Reading a descriptor the process was handed (by `SCM_RIGHTS`, or inherited) without changing its open
/// file: its O_NONBLOCK flag is shared with other processes and never touched. For `uds recv-fd`.
package enum InheritedFile {
    /// What a descriptor is (a pipe, a regular file, ...).
    package typealias FileType = FileStatus.FileType

    /// The type of file behind `fd` (fstat).
    package static func kind(of fd: FileDescriptor) -> Result<FileType, Errno> {
        FileStatus.of(fd.rawValue).map(\.type)
    }

    /// The type's name in messages ("pipe", "regular file", ...).
    package static func name(of kind: FileType) -> String { kind.name }

    /// Whether the descriptor is a directory (nothing to read).
    package static func isDirectory(_ kind: FileType) -> Bool { kind == .directory }

    /// Whether the descriptor is a pipe or FIFO (which `privateReader(for:)` can reopen).
    package static func isPipe(_ kind: FileType) -> Bool { kind == .fifo }

    /// Whether a read of this type of file can wait for a writer (so it goes through poll first).
    package static func canWait(_ kind: FileType) -> Bool { kind != .regular && kind != .blockDevice }

    /// Whether O_NONBLOCK is set on the open file behind `fd` (read only; never changed here).
    package static func isNonBlocking(_ fd: FileDescriptor) -> Bool {
        guard case .success(let flags) = system_fcntl(fd.rawValue, SystemConstants.fcntlGetStatusFlags) else {
            return false
        }
        return flags & SystemConstants.openNonBlocking != 0
    }

    /// Waits until `fd` is readable (or hung up). For an inherited descriptor someone else made non-blocking.
    package static func waitReadable(_ fd: FileDescriptor) { wait(fd, events: SystemConstants.pollIn) }

    /// Waits until `fd` is writable (or hung up).
    package static func waitWritable(_ fd: FileDescriptor) { wait(fd, events: SystemConstants.pollOut) }

    private static func wait(_ fd: FileDescriptor, events: Int16) {
        var entry = PollDescriptor(fd.rawValue, events: events)
        while true {
            switch entry.poll(timeoutMilliseconds: -1) {
            case .success: return
            case .failure(.interrupted): continue
            case .failure: return  // the next I/O call reports the problem
            }
        }
    }

    /// A non-blocking open file of our own on the same pipe or FIFO, if the descriptor may be read and the
    /// kernel lets us reopen it (/proc/self/fd/N); nil otherwise.
    package static func privateReader(for fd: FileDescriptor) -> FileDescriptor? {
        guard system_isReadable(fd.rawValue) else { return nil }
        return try? FileDescriptor.open(
            "/proc/self/fd/\(fd.rawValue)",
            .readOnly,
            options: [.nonBlocking, .closeOnExec]
        )
    }

    package enum ReadResult: Sendable {
        case data(Int), endOfFile, idle, failed(Errno)
    }

    /// One bounded read: directly for files that cannot wait; otherwise after poll said readable (for at
    /// most `idleMilliseconds`), and again after poll if the data was gone (EAGAIN). A socket is read with
    /// MSG_DONTWAIT.
    package static func readOnce(
        _ fd: FileDescriptor,
        kind: FileType,
        into buffer: UnsafeMutableRawBufferPointer,
        idleMilliseconds: Int32
    ) -> ReadResult {
        while true {
            if canWait(kind) {
                switch pollReadable(fd, timeoutMilliseconds: idleMilliseconds) {
                case .success(true): break
                case .success(false): return .idle
                case .failure(let errno): return .failed(errno)
                }
            }
            switch system_readOnce(fd.rawValue, into: buffer, socket: kind == .socket) {
            case .success(let count): return count == 0 ? .endOfFile : .data(count)
            case .failure(let errno) where errno == .resourceTemporarilyUnavailable && canWait(kind): continue
            case .failure(let errno): return .failed(errno)
            }
        }
    }

    /// poll(2) for readability: true when readable (or hung up), false when the timeout passed first.
    /// POLLNVAL is EBADF.
    static func pollReadable(_ fd: FileDescriptor, timeoutMilliseconds: Int32) -> Result<Bool, Errno> {
        var entry = PollDescriptor(fd.rawValue, events: SystemConstants.pollIn)
        while true {
            switch entry.poll(timeoutMilliseconds: timeoutMilliseconds) {
            case .failure(.interrupted): continue  // a signal: poll again (with the whole idle bound, as before)
            case .failure(let errno): return .failure(errno)
            case .success(0): return .success(false)
            case .success:
                if entry.returnedEvents & SystemConstants.pollInvalid != 0 { return .failure(.badFileDescriptor) }
                return .success(true)
            }
        }
    }
}
