import CUnixSockets
import SystemPackage

/// The identity of a socket file this process created: removed on close only while it is still ours.
struct SocketFileClaim: Sendable {
    let path: [UInt8]
    let device: UInt64
    let inode: UInt64

    /// Unlinks the path if it is still the same inode.
    func removeIfOurs() {
        guard let now = SocketFile.identity(path), now.device == device, now.inode == inode else { return }
        _ = SocketFile.withCPath(path) { system_unlink($0) }
    }
}

/// Safe socket files: bind replaces a stale socket file only after proving it stale (sock_diag: no socket
/// on the system is bound to its device and inode), refuses a live one and never touches a non-socket.
/// An advisory lock on the parent directory is held from the check until `listen()` returns.
enum SocketFile {
    static func withCPath<R>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (path + [0]).withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
        }
    }

    /// lstat: (is socket, device, inode), or nil if the path does not exist (other errors throw).
    static func lstatInfo(_ path: [UInt8], operation: String, address: UnixAddress) throws(UnixSocketError)
        -> (isSocket: Bool, device: UInt64, inode: UInt64)?
    {
        var info = stat()
        switch withCPath(path, { system_lstat($0, &info) }) {
        case .success:
            return ((info.st_mode & mode_t(S_IFMT)) == mode_t(S_IFSOCK), UInt64(info.st_dev), UInt64(info.st_ino))
        case .failure(.noSuchFileOrDirectory): return nil
        case .failure(let errno): throw .system(operation, errno, address: address)
        }
    }

    static func identity(_ path: [UInt8]) -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard case .success = withCPath(path, { system_lstat($0, &info) }) else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// The lock on the parent directory; released by closing it.
    struct DirectoryLock: ~Copyable {
        let fd: CInt
        deinit { if fd >= 0 { _ = system_close(fd) } }
    }

    static func lockParent(of path: [UInt8]) -> DirectoryLock {
        var parent = Array(path.prefix(upTo: path.lastIndex(of: UInt8(ascii: "/")) ?? 0))
        if parent.isEmpty { parent = path.first == UInt8(ascii: "/") ? [UInt8(ascii: "/")] : [UInt8(ascii: ".")] }
        // An unreadable directory cannot be locked; the bind then relies on EADDRINUSE alone.
        guard case .success(let fd) = withCPath(parent, { system_open($0, O_RDONLY | O_DIRECTORY) }) else {
            return DirectoryLock(fd: -1)
        }
        _ = system_flock(fd, LOCK_EX)
        return DirectoryLock(fd: fd)
    }

    /// Binds `core` to the path of `address` safely (see the type's documentation), with `mode` exact.
    /// Returns the claim to the new file. The caller keeps `lock` until `listen()` returned.
    static func bind(
        _ core: SocketCore, to address: UnixAddress, path: [UInt8], mode: UInt32?, lock: borrowing DirectoryLock
    ) throws(UnixSocketError) -> SocketFileClaim {
        if let existing = try lstatInfo(path, operation: "bind", address: address) {
            guard existing.isSocket else {
                throw UnixSocketError(
                    .notASocket, operation: "bind", address: address,
                    detail: "the path exists and is not a socket; it was left untouched")
            }
            switch isBound(device: existing.device, inode: existing.inode) {
            case .success(true):
                throw UnixSocketError(
                    .addressInUse, operation: "bind", address: address, errno: .addressInUse,
                    detail: "already in use by a running server")
            case .success(false):
                if case .failure(let errno) = withCPath(path, { system_unlink($0) }), errno != .noSuchFileOrDirectory {
                    throw .system("unlink stale socket", errno, address: address)
                }
            case .failure(let errno):
                throw UnixSocketError(
                    .system, operation: "bind", address: address, errno: errno,
                    detail: "cannot prove the existing socket file stale (sock_diag failed); it was left untouched")
            }
        }
        if let mode {
            try bindWithExactMode(core, to: address, mode: mode)
        } else {
            try core.bind(to: address)
        }
        guard let identity = identity(path) else {
            throw UnixSocketError(
                .system, operation: "bind", address: address, errno: .noSuchFileOrDirectory,
                detail: "the socket file vanished right after bind")
        }
        return SocketFileClaim(path: path, device: identity.device, inode: identity.inode)
    }

    /// fchmod the socket, then bind on a thread with its own fs context and umask 0: the file appears
    /// with exactly `mode`, and the process's umask is never touched.
    static func bindWithExactMode(_ core: SocketCore, to address: UnixAddress, mode: UInt32) throws(UnixSocketError) {
        if mode & ~0o7777 != 0 {
            throw UnixSocketError(
                .invalidArgument, operation: "bind", address: address, detail: "mode \(String(mode, radix: 8)) is not a permission mode")
        }
        try core.withDescriptor("fchmod") { (fd) throws(UnixSocketError) in
            if case .failure(let errno) = system_fchmod(fd, mode_t(mode)) { throw .system("fchmod", errno, address: address) }
        }
        nonisolated(unsafe) var outcome: Result<Void, UnixSocketError> = .success(())
        let started = system_runOnFreshThread {
            if case .failure(let errno) = system_unshare(UDS_CLONE_FS) {
                outcome = .failure(.system("unshare CLONE_FS", errno, address: address))
                return
            }
            _ = system_umask(0)
            do throws(UnixSocketError) {
                try core.bind(to: address)
            } catch {
                outcome = .failure(error)
            }
        }
        if case .failure(let errno) = started { throw .system("pthread_create", errno, address: address) }
        try outcome.get()
    }

    /// Whether any socket on the system is bound to (device, inode), asked of the kernel via sock_diag
    /// (NETLINK_SOCK_DIAG, UDIAG_SHOW_VFS): what `ss -x` reads. Never connects to the socket.
    static func isBound(device: UInt64, inode: UInt64) -> Result<Bool, Errno> {
        let wantedDevice = decodeUserDevice(device)
        var found = false
        let dumped = SockDiag.dump(show: UInt32(UDIAG_SHOW_VFS)) { message in
            for (type, payload) in message.attributes where type == UNIX_DIAG_VFS && payload.count >= 8 {
                // udiag_vfs_ino is 32 bits wide: compare the low 32 bits of lstat's inode.
                let boundInode = SockDiag.read32(payload, 0)
                let boundDevice = decodeKernelDevice(SockDiag.read32(payload, 4))
                if boundInode == UInt32(truncatingIfNeeded: inode) && boundDevice == wantedDevice { found = true }
            }
        }
        return dumped.map { found }
    }

    /// The kernel's internal dev_t (`sb->s_dev`, MAJOR << 20 | MINOR: what UNIX_DIAG_VFS reports, not the
    /// new_encode_dev form), as (major, minor).
    static func decodeKernelDevice(_ device: UInt32) -> (UInt32, UInt32) {
        (device >> 20, device & 0xF_FFFF)
    }

    /// glibc's dev_t, as (major, minor).
    static func decodeUserDevice(_ device: UInt64) -> (UInt32, UInt32) {
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~UInt64(0xfff))
        let minor = (device & 0xff) | ((device >> 12) & ~UInt64(0xff))
        return (UInt32(truncatingIfNeeded: major), UInt32(truncatingIfNeeded: minor))
    }
}
