public import SystemPackage
@_spi(Locking) import UnixSocketsSystem

/// A listening Unix socket that accepts ``UnixStream`` (``UnixStreamListener``) or ``UnixSeqPacket``
/// (``UnixSeqPacketListener``) connections.
///
/// Binding a path follows the safe socket-file rules: a stale socket file (no socket bound to it, proven
/// with sock_diag, never by connecting) is replaced; a live one is refused ("already in use by a running
/// server") and keeps working; a path that is not a socket is never touched. `mode` is exact the moment
/// the file appears, whatever the umask. The listener removes its file on close, only while it is still
/// its own inode.
///
/// ```swift
/// let listener = try UnixStreamListener.bind("/run/app.sock", mode: [.ownerReadWrite, .groupReadWrite])
/// let connection = try listener.accept()
/// print(try connection.credentials)   // pid=... uid=... gid=...
/// ```
public final class UnixListener<Connection: UnixConnection>: Sendable, CustomStringConvertible {
    package let core: SocketCore
    /// The address it was bound to.
    public let address: UnixAddress

    init(core: SocketCore, address: UnixAddress, claim: SocketFileClaim?) {
        self.core = core
        self.address = address
        if let claim { core.afterClose.withLock { $0 = { claim.removeIfOurs() } } }
    }

    /// Binds `address` and listens.
    /// - Parameters:
    ///   - address: a path or an abstract name.
    ///   - mode: the socket file's exact permission bits (paths only; an abstract name has no file).
    ///   - backlog: the accept queue length; the kernel caps it at `net.core.somaxconn` silently.
    /// - Throws: ``UnixSocketError`` `.addressInUse` (a live server there), `.notASocket` (a file that is
    ///   not a socket; untouched), `.invalidAddress`, or a system error. The corresponding C functions are
    ///   `bind` and `listen`.
    public static func bind(
        _ address: UnixAddress,
        mode: FilePermissions? = nil,
        backlog: Int32 = 4096
    )
        throws(UnixSocketError) -> UnixListener<Connection>
    {
        try bind(address, mode: mode, backlog: backlog, recordingFullPath: false)
    }

    /// The same, for a socket handed to another process (`uds activate`): with `recordingFullPath`, the
    /// kernel records the full path as the socket's address (what the other process's getsockname sees,
    /// as with systemd's sockets), bound like a datagram socket's: a bind that did not land in the checked
    /// directory is detected and fails.
    package static func bind(
        _ address: UnixAddress,
        mode: FilePermissions?,
        backlog: Int32,
        recordingFullPath: Bool
    )
        throws(UnixSocketError) -> UnixListener<Connection>
    {
        let core = try SocketCore.make(Connection.socketType, address: address, operation: "bind")
        switch address.kind {
        case .path(let path):
            let claim = try SocketFile.bind(
                core,
                to: address,
                path: path,
                mode: mode?.rawValue,
                byName: !recordingFullPath,
                listenBacklog: backlog
            )
            return UnixListener(core: core, address: address, claim: claim)
        case .abstract, .unnamed:
            try core.bindWithoutFile(to: address, mode: mode)
        }
        try listen(core, address: address, backlog: backlog)
        return UnixListener(core: core, address: address, claim: nil)
    }

    /// Adopts a listening socket descriptor (e.g. from systemd socket activation). It does not remove its
    /// socket file on close unless `removeSocketFileOnClose` is true.
    public convenience init(
        adopting descriptor: FileDescriptor,
        removeSocketFileOnClose: Bool = false
    )
        throws(UnixSocketError)
    {
        let core = try SocketCore.adopt(descriptor, type: Connection.socketType, operation: "adopt")
        let address = core.address ?? .unnamed
        var claim: SocketFileClaim?
        if removeSocketFileOnClose, case .path(let path) = address.kind {
            claim = SocketFileClaim.adopting(path, address: address)
        }
        self.init(core: core, address: address, claim: claim)
    }

    private static func listen(_ core: SocketCore, address: UnixAddress, backlog: Int32) throws(UnixSocketError) {
        try core.withDescriptor("listen") { (fd) throws(UnixSocketError) in
            if case .failure(let errno) = system_listen(fd, backlog) {
                throw .system("listen", errno, address: address)
            }
        }
    }

    /// Waits for and accepts one connection (CLOEXEC). Its peer address and credentials are read on demand.
    /// - Throws: ``UnixSocketError`` (`.timedOut`; EMFILE when out of descriptors; `.closed`).
    ///   The corresponding C function is `accept4`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func accept(timeout: Duration? = nil) throws(UnixSocketError) -> Connection {
        var operation = Accept()
        return accepted(try core.perform(&operation, timeout: timeout))
    }

    /// The connection object that owns an accepted descriptor.
    package func accepted(_ fd: CInt) -> Connection {
        Connection(core: SocketCore(adopting: fd, type: Connection.socketType, address: address))
    }

    /// Gives up ownership of the listening descriptor (the socket file stays); the caller must close it.
    /// - Throws: ``UnixSocketError`` `.closed` if it is closed or in use by another thread (it then stays
    ///   this listener's, and still removes its socket file on close).
    public func releaseDescriptor() throws(UnixSocketError) -> FileDescriptor {
        FileDescriptor(rawValue: try core.release())
    }

    /// This socket's bound address, as the kernel reports it.
    public var local: UnixAddress { get throws(UnixSocketError) { try core.localAddress() } }

    /// Stops listening, closes the socket and removes the socket file if it is still this listener's.
    /// A thread blocked in ``accept(timeout:)`` wakes with `.closed`.
    public func close() { core.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { core.isClosed }

    public var description: String { "UnixListener(\(address), \(Connection.socketType.rawValue))" }
}

/// A listener for byte streams.
public typealias UnixStreamListener = UnixListener<UnixStream>
/// A listener for seqpacket connections.
public typealias UnixSeqPacketListener = UnixListener<UnixSeqPacket>
