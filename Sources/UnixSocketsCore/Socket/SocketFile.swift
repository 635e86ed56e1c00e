import Synchronization
import SystemPackage
import UnixSocketsSystem

/// What `fstatat` (no symlink followed) says of a directory entry.
struct EntryIdentity: Equatable, Sendable {
    let isSocket: Bool
    let isRegular: Bool
    let device: UInt64
    let inode: UInt64

    init(_ info: FileStatus) {
        isSocket = info.type == .socket
        isRegular = info.type == .regular
        device = info.device
        inode = info.inode
    }

    func isSameFile(as other: EntryIdentity) -> Bool { device == other.device && inode == other.inode }
}

/// A socket file's parent directory, opened once (`O_PATH|O_DIRECTORY`), and the file's name in it.
///
/// Every check, removal and bind goes through this one descriptor (`fstatat`, `unlinkat`, and a bind or
/// probe after `fchdir` on a thread with its own fs context), so a directory on the path swapped for a
/// symlink between two steps cannot redirect them: what was checked is what is removed and bound.
/// The descriptor is closed exactly once, by ``close()`` or when the object goes away.
final class SocketFileLocation: Sendable {
    private let directory: Atomic<CInt>
    /// The file's name in the directory (no slash).
    let name: [UInt8]
    /// The full address, for messages.
    let address: UnixAddress

    private init(directory: CInt, name: [UInt8], address: UnixAddress) {
        self.directory = Atomic(directory)
        self.name = name
        self.address = address
    }

    deinit { close() }

    /// Opens the parent directory of `path`.
    static func open(
        _ path: [UInt8],
        address: UnixAddress,
        operation: String
    ) throws(UnixSocketError)
        -> SocketFileLocation
    {
        let slash = path.lastIndex(of: UInt8(ascii: "/"))
        let name = Array(path[(slash.map { $0 + 1 } ?? 0)...])
        var parent = slash.map { Array(path[..<$0]) } ?? [UInt8(ascii: ".")]
        if parent.isEmpty { parent = [UInt8(ascii: "/")] }
        if name.isEmpty || name == [UInt8(ascii: ".")] || name == [UInt8(ascii: "."), UInt8(ascii: ".")] {
            throw UnixSocketError(
                .invalidAddress,
                operation: operation,
                address: address,
                detail: "the path must end in a file name, not a directory"
            )
        }
        let flags = SystemConstants.openPath | SystemConstants.openDirectory
        switch withCString(parent, { system_open($0, flags) }) {
        case .success(let fd): return SocketFileLocation(directory: fd, name: name, address: address)
        case .failure(let errno):
            throw .system(
                operation,
                errno,
                address: address,
                detail: errno == .noSuchFileOrDirectory ? "its directory does not exist" : nil
            )
        }
    }

    /// Closes the directory (once; later calls do nothing).
    func close() {
        let fd = directory.exchange(-1, ordering: .acquiringAndReleasing)
        if fd >= 0 { _ = system_close(fd) }
    }

    /// Runs `body` with the directory descriptor, or returns nil once closed.
    func withDirectory<R>(_ body: (CInt) throws(UnixSocketError) -> R) throws(UnixSocketError) -> R? {
        let fd = directory.load(ordering: .acquiring)
        guard fd >= 0 else { return nil }
        return try body(fd)
    }

    /// The identity of `entry` (default: the socket file's name), nil if there is none.
    func identity(of entry: [UInt8]? = nil) -> Result<EntryIdentity?, Errno> {
        let fd = directory.load(ordering: .acquiring)
        guard fd >= 0 else { return .failure(.badFileDescriptor) }
        switch Self.withCString(entry ?? name, { FileStatus.of(entry: $0, in: fd) }) {
        case .success(let info): return .success(EntryIdentity(info))
        case .failure(.noSuchFileOrDirectory): return .success(nil)
        case .failure(let errno): return .failure(errno)
        }
    }

    /// Removes `entry` (default: the socket file) only if it is still the file `expected`.
    @discardableResult
    func remove(_ entry: [UInt8]? = nil, ifStill expected: EntryIdentity) -> Bool {
        let fd = directory.load(ordering: .acquiring)
        guard fd >= 0, case .success(let now?) = identity(of: entry), now.isSameFile(as: expected) else {
            return false
        }
        return Self.withCString(entry ?? name, { system_unlinkat(fd, $0) }).isSuccess
    }

    static func withCString<R>(_ bytes: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (bytes + [0]).withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { body($0.baseAddress!) }
        }
    }
}

extension Result {
    var isSuccess: Bool { if case .success = self { true } else { false } }
}

/// The identity of a socket file this process created: removed on close only while it is still ours,
/// through the directory it was bound in.
struct SocketFileClaim: Sendable {
    let location: SocketFileLocation
    let identity: EntryIdentity

    /// Unlinks the file if it is still the same inode, then closes the directory.
    func removeIfOurs() {
        location.remove(ifStill: identity)
        location.close()
    }

    /// A claim on the file an adopted socket is bound to, if it is there and a socket.
    static func adopting(_ path: [UInt8], address: UnixAddress) -> SocketFileClaim? {
        guard let location = try? SocketFileLocation.open(path, address: address, operation: "adopt"),
            case .success(let identity?) = location.identity(), identity.isSocket
        else { return nil }
        return SocketFileClaim(location: location, identity: identity)
    }
}

/// Safe socket files.
///
/// Bind replaces a socket file only after the kernel said no socket is bound to it, refuses a live one and
/// never touches a non-socket. The kernel is asked with a SOCK_DGRAM `connect()` to the file, which sees
/// every network namespace (sock_diag sees only ours) and queues nothing: EPROTOTYPE means a stream or
/// seqpacket socket is bound, success means a datagram socket is, ECONNREFUSED means none is.
/// Two binders of one path are serialized by a lock file beside it (`.NAME.lock`, mode 0600), which only
/// those who may create the socket can create or open; it is waited on for at most ``lockTimeout``.
enum SocketFile {
    /// How long a bind waits for another binder of the same path to finish.
    static let lockTimeout: Duration = .seconds(2)

    /// The lock file's name for a socket file's name.
    static func lockName(for name: [UInt8]) -> [UInt8] {
        Array(".".utf8) + name + Array(".lock".utf8)
    }

    /// Binds `core` to the path of `address` safely, with `mode` exact, and listens with `backlog` (for a
    /// listener) right after the bind on the same thread, so that the file is connectable a moment after it
    /// appears; all before the lock is released. Returns the claim to the new file.
    ///
    /// A listener binds the file's name relative to its directory (`byName`), so that not even the bind
    /// can be redirected; the kernel then records that name alone as the socket's address, which
    /// `SocketCore` maps back to the full path for its own sockets. A datagram socket binds the full path,
    /// because its peers reply to the address they see; a bind that did not land in the checked directory
    /// is detected and fails.
    static func bind(
        _ core: SocketCore,
        to address: UnixAddress,
        path: [UInt8],
        mode: UInt32?,
        byName: Bool,
        listenBacklog: Int32? = nil
    ) throws(UnixSocketError) -> SocketFileClaim? {
        _ = try address.sockAddr(operation: "bind")  // an invalid literal fails before any syscall
        if let mode, mode & ~0o777 != 0 {
            throw UnixSocketError(
                .invalidArgument,
                operation: "bind",
                address: address,
                detail:
                    "mode \(String(mode, radix: 8)) is not a permission mode (0 to 777; no setuid, setgid or sticky bit)"
            )
        }
        let location = try SocketFileLocation.open(path, address: address, operation: "bind")
        let lock = try PathLock(location, timeout: lockTimeout)
        if let mode {
            try core.withDescriptor("fchmod") { (fd) throws(UnixSocketError) in
                if case .failure(let errno) = system_fchmod(fd, mode) {
                    throw .system("fchmod", errno, address: address)
                }
            }
        }
        let identity = try bindInDirectory(
            core,
            location: location,
            exactMode: mode != nil,
            byName: byName,
            backlog: listenBacklog
        )
        _ = consume lock  // held until listen() returned: two servers cannot both win the path
        // A file someone removed or replaced at once is not ours to remove on close: no claim.
        return identity.map { SocketFileClaim(location: location, identity: $0) }
    }

    /// On a fresh thread with its own fs context, in the socket file's directory (`fchdir`): checks the
    /// name, removes it if the kernel says it is a stale socket file, and binds the name there.
    /// With `exactMode`, the thread's umask is 0 (the socket was fchmod'ed before).
    /// Returns the new file's identity, read right after the bind (nil if it was already gone or replaced).
    static func bindInDirectory(
        _ core: SocketCore,
        location: SocketFileLocation,
        exactMode: Bool,
        byName: Bool,
        backlog: Int32?
    ) throws(UnixSocketError) -> EntryIdentity? {
        let address = location.address
        nonisolated(unsafe) var outcome: Result<EntryIdentity?, UnixSocketError> = .success(nil)
        let started = system_runOnFreshThread {
            do throws(UnixSocketError) {
                if case .failure(let errno) = system_unshare(SystemConstants.cloneFS) {
                    throw .system("unshare CLONE_FS", errno, address: address)
                }
                let entered = try location.withDirectory { (fd) throws(UnixSocketError) -> Bool in
                    if case .failure(let errno) = system_fchdir(fd) { throw .system("fchdir", errno, address: address) }
                    return true
                }
                guard entered == true else { throw core.closedError("bind") }
                if exactMode { _ = system_umask(0) }
                try replaceStale(location)
                let bound = byName ? try UnixAddress.path(bytes: location.name) : address
                outcome = .success(
                    try bound.withSockAddr(operation: "bind") { (pointer, length) throws(UnixSocketError) in
                        try core.withDescriptor("bind") { (fd) throws(UnixSocketError) in
                            if case .failure(let errno) = system_bind(fd, pointer, length) {
                                throw errno == .addressInUse
                                    ? UnixSocketError(
                                        .addressInUse,
                                        operation: "bind",
                                        address: address,
                                        errno: errno,
                                        detail: "already in use by a running server"
                                    )
                                    : .system("bind", errno, address: address)
                            }
                            var made: EntryIdentity?
                            if case .success(let identity?) = location.identity(), identity.isSocket { made = identity }
                            if made == nil && !byName {
                                // A full path resolved elsewhere (a directory swapped meanwhile): refuse it.
                                throw UnixSocketError(
                                    .system,
                                    operation: "bind",
                                    address: address,
                                    errno: .noSuchFileOrDirectory,
                                    detail: "the socket file did not appear in the directory that was checked"
                                )
                            }
                            guard let backlog else { return made }
                            if case .failure(let errno) = system_listen(fd, backlog) {
                                // Ours since a moment ago, and the lock is held: take it back.
                                if let made { location.remove(ifStill: made) }
                                throw .system("listen", errno, address: address)
                            }
                            return made
                        }
                    }
                )
            } catch {
                outcome = .failure(error)
            }
        }
        if case .failure(let errno) = started { throw .system("pthread_create", errno, address: address) }
        return try outcome.get()
    }

    /// Leaves the name free or throws: nothing there is fine; a socket file the kernel says nobody is bound
    /// to is removed (only if it is still the file that was checked); anything else is an error and is
    /// left untouched. Runs with the socket file's directory as the working directory.
    static func replaceStale(_ location: SocketFileLocation) throws(UnixSocketError) {
        let address = location.address
        let existing: EntryIdentity
        switch location.identity() {
        case .success(nil): return
        case .success(let identity?): existing = identity
        case .failure(let errno): throw .system("bind", errno, address: address)
        }
        guard existing.isSocket else {
            throw UnixSocketError(
                .notASocket,
                operation: "bind",
                address: address,
                detail: "the path exists and is not a socket; it was left untouched"
            )
        }
        switch probe(name: location.name) {
        case .failure(.noSuchFileOrDirectory):
            return  // gone meanwhile
        case .failure(.connectionRefused):
            // Stale: no socket of any namespace is bound to it.
            if !location.remove(ifStill: existing), case .success(.some) = location.identity() {
                // Replaced between the probe and the removal: leave the newcomer alone.
                throw UnixSocketError(
                    .addressInUse,
                    operation: "bind",
                    address: address,
                    errno: .addressInUse,
                    detail: "the socket file changed while it was being replaced; it was left untouched"
                )
            }
        case .success, .failure(.protocolWrongTypeForSocket), .failure(.notPermitted):
            throw UnixSocketError(
                .addressInUse,
                operation: "bind",
                address: address,
                errno: .addressInUse,
                detail: "already in use by a running server"
            )
        case .failure(let errno):
            throw .system(
                "bind",
                errno,
                address: address,
                detail: "cannot prove the existing socket file stale; it was left untouched"
            )
        }
    }

    /// Asks the kernel whether a socket is bound to the socket file `name` (relative to the working
    /// directory), in any network namespace: a SOCK_DGRAM `connect()`, which sends and queues nothing.
    /// ECONNREFUSED: none is; EPROTOTYPE: a stream or seqpacket socket is; success or EPERM: a datagram
    /// socket is (EPERM: it is connected to another peer).
    static func probe(name: [UInt8]) -> Result<Void, Errno> {
        let probe: CInt
        switch system_socket(SystemConstants.afUnix, UnixSocketType.datagram.flags, 0) {
        case .success(let fd): probe = fd
        case .failure(let errno): return .failure(errno)
        }
        defer { _ = system_close(probe) }
        guard let relative = try? UnixAddress.path(bytes: name),
            let sockAddr = try? relative.sockAddr(operation: "probe")
        else { return .failure(.invalidArgument) }
        return sockAddr.withSockAddr { pointer, length in
            switch system_connect(probe, pointer, length) {
            case .success(.done): .success(())
            case .success(.wouldBlock): .failure(.resourceTemporarilyUnavailable)
            case .failure(let errno): .failure(errno)
            }
        }
    }

    /// The lock file beside a socket file, held from the check until `listen()` returned. Created 0600 in
    /// the socket's directory (so only those who may create the socket there can create or open it),
    /// locked with `flock` and removed by whoever holds it; a holder re-checks after locking that the name
    /// still refers to the file it locked, so a removal racing a new locker cannot admit two.
    struct PathLock: ~Copyable {
        private let fd: CInt
        private let identity: EntryIdentity
        private let location: SocketFileLocation
        private let name: [UInt8]

        init(_ location: SocketFileLocation, timeout: Duration) throws(UnixSocketError) {
            let address = location.address
            let name = SocketFile.lockName(for: location.name)
            let deadline = try Deadline.after(timeout, operation: "bind")
            var pause = 1_000_000  // 1 ms, doubling up to 50 ms
            let flags =
                SystemConstants.openReadOnly | SystemConstants.openCreate | SystemConstants.openNoFollow
                | SystemConstants.openNonBlocking
            while true {
                let opened = try location.withDirectory { (directory) throws(UnixSocketError) -> CInt in
                    switch SocketFileLocation.withCString(name, { system_openat(directory, $0, flags, 0o600) }) {
                    case .success(let fd): return fd
                    case .failure(let errno):
                        throw .system(
                            "bind",
                            errno,
                            address: address,
                            detail:
                                "cannot open the lock file \(UnixAddress.escape(name)) beside it: \(UnixSocketError.explain(errno, operation: "open").0)"
                        )
                    }
                }
                guard let fd = opened else { throw UnixSocketError(.closed, operation: "bind", address: address) }
                guard case .success(let info) = FileStatus.of(fd), EntryIdentity(info).isRegular else {
                    _ = system_close(fd)
                    throw UnixSocketError(
                        .system,
                        operation: "bind",
                        address: address,
                        errno: .invalidArgument,
                        detail: "the lock file \(UnixAddress.escape(name)) beside it is not a regular file"
                    )
                }
                let identity = EntryIdentity(info)
                switch system_flock(fd, SystemConstants.lockExclusiveNonBlocking) {
                case .success:
                    // Still the file at that name? (Its last holder may have removed it meanwhile.)
                    if case .success(let now?) = location.identity(of: name), now.isSameFile(as: identity) {
                        self.fd = fd
                        self.identity = identity
                        self.location = location
                        self.name = name
                        return
                    }
                    _ = system_close(fd)
                    continue
                case .failure(let errno) where errno == .resourceTemporarilyUnavailable || errno == .wouldBlock:
                    _ = system_close(fd)
                    if deadline?.hasPassed ?? false {
                        throw UnixSocketError(
                            .timedOut,
                            operation: "bind",
                            address: address,
                            errno: .resourceTemporarilyUnavailable,
                            detail:
                                "another process has held the lock file \(UnixAddress.escape(name)) for \(timeout); is another server starting?"
                        )
                    }
                    system_nanosleep(nanoseconds: pause)
                    pause = min(pause * 2, 50_000_000)
                case .failure(let errno):
                    _ = system_close(fd)
                    throw .system("bind", errno, address: address, detail: "cannot lock the lock file")
                }
            }
        }

        /// Removes the lock file (still ours: we hold the lock), then releases the lock by closing it.
        deinit {
            location.remove(name, ifStill: identity)
            _ = system_close(fd)
        }
    }
}
