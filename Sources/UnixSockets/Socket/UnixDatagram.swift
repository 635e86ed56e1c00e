import Synchronization
public import SystemPackage

/// A datagram Unix socket (SOCK_DGRAM): messages with boundaries, reliable and ordered on one host.
///
/// Bind it to receive (``bind(_:)``, or ``UnixAddress/autobind`` for a kernel-chosen abstract name that
/// peers can reply to); connect it to fix a default destination. A send is whole or fails; a send to a
/// full receiver waits (connected: with poll; unconnected: with a short back-off, since poll cannot tell).
///
/// ```swift
/// let server = try UnixDatagram.bind("@echo")
/// let client = try UnixDatagram.bind(.autobind)
/// try client.send(Array("hi".utf8), to: "@echo")
/// let message = try server.receive()                 // message.sender is the client's address
/// try server.send(message.bytes, to: message.sender!)
/// ```
public final class UnixDatagram: Sendable, CustomStringConvertible {
    let core: SocketCore
    let claim: SocketFileClaim?

    init(core: SocketCore, claim: SocketFileClaim? = nil) {
        self.core = core
        self.claim = claim
        if let claim { core.afterClose.withLock { $0 = { claim.removeIfOurs() } } }
    }

    /// An unbound datagram socket (it can send; replies need an address: use ``bind(_:mode:)`` with `.autobind`).
    public static func unbound() throws(UnixSocketError) -> UnixDatagram {
        UnixDatagram(core: try SocketCore.make(.datagram, address: nil, operation: "socket"))
    }

    /// Binds a datagram socket to `address` (`.autobind` for a kernel-chosen abstract name).
    ///
    /// A path gets the same safe socket-file rules as a listener: a stale file is replaced, a live one or
    /// a non-socket is an error; the file has exactly `mode` if given; it is removed on close.
    /// - Throws: ``UnixSocketError``.
    public static func bind(_ address: UnixAddress, mode: UInt32? = nil) throws(UnixSocketError) -> UnixDatagram {
        let core = try SocketCore.make(.datagram, address: address, operation: "bind")
        if case .path(let path) = address.kind {
            let claim = try SocketFile.bind(core, to: address, path: path, mode: mode, byName: false)
            return UnixDatagram(core: core, claim: claim)
        }
        if mode != nil && address.isAbstract {
            throw UnixSocketError(
                .invalidArgument, operation: "bind", address: address,
                detail: "abstract names have no file and no mode; check peer credentials instead")
        }
        try core.bind(to: address)
        return UnixDatagram(core: core)
    }

    /// A connected pair (socketpair).
    public static func pair() throws(UnixSocketError) -> (UnixDatagram, UnixDatagram) {
        let (a, b) = try SocketCore.pair(.datagram)
        return (UnixDatagram(core: a), UnixDatagram(core: b))
    }

    /// Adopts a datagram socket descriptor; it becomes non-blocking and this object owns it.
    public convenience init(adopting descriptor: FileDescriptor) throws(UnixSocketError) {
        self.init(core: try SocketCore.adopt(descriptor, type: .datagram, operation: "adopt"))
    }

    /// Gives up ownership of the descriptor; the caller must close it (a bound path is not removed).
    public func releaseDescriptor() throws(UnixSocketError) -> FileDescriptor {
        core.afterClose.withLock { $0 = nil }
        return FileDescriptor(rawValue: try core.release())
    }

    /// Sets the default destination; afterwards only that peer's datagrams are received.
    public func connect(to address: UnixAddress) throws(UnixSocketError) {
        try core.connect(to: address, timeout: nil)
    }

    /// Sends one datagram to `address` (unconnected), whole.
    /// - Throws: ``UnixSocketError``: EMSGSIZE with the limit, ENOENT/ECONNREFUSED if nobody is bound
    ///   there, `.timedOut` if the receiver's queue stays full. The corresponding C function is `sendmsg`.
    public func send(
        _ bytes: some Collection<UInt8>, to address: UnixAddress, descriptors: [FileDescriptor] = [],
        credentials: UnixCredentials? = nil, timeout: Duration? = nil
    ) throws(UnixSocketError) {
        try withRawDescriptors(descriptors) { (fds) throws(UnixSocketError) in
            try withBytes(bytes) { (raw) throws(UnixSocketError) in
                try core.sendMessage(raw, descriptors: fds, credentials: credentials, to: address, timeout: timeout)
            }
        }
    }

    /// Sends one datagram to the connected peer, whole.
    /// - Throws: ``UnixSocketError``: ECONNREFUSED then ENOTCONN once the peer has closed.
    public func send(
        _ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) throws(UnixSocketError) {
        try withRawDescriptors(descriptors) { (fds) throws(UnixSocketError) in
            try withBytes(bytes) { (raw) throws(UnixSocketError) in
                try core.sendMessage(raw, descriptors: fds, credentials: credentials, to: nil, timeout: timeout)
            }
        }
    }

    /// Receives one datagram of at most `maxBytes`, with its sender's address, descriptors and (if
    /// ``receiveCredentials()`` was called) credentials. Zero-length datagrams are delivered as empty.
    /// - Throws: ``UnixSocketError`` `.messageTruncated` (the datagram is discarded; ask
    ///   ``nextMessageSize(timeout:)`` first), `.controlTruncated`.
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration? = nil) throws(UnixSocketError)
        -> UnixMessage
    {
        try core.receiveMessage(maxBytes: maxBytes, maxDescriptors: maxDescriptors, wantSender: true, timeout: timeout)
    }

    /// Receives one datagram into `buffer` (no allocation); returns its length.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) throws(UnixSocketError) -> Int {
        try core.receiveMessage(into: buffer, timeout: timeout)
    }

    /// The size of the next datagram without consuming it (MSG_PEEK | MSG_TRUNC).
    public func nextMessageSize(timeout: Duration? = nil) throws(UnixSocketError) -> Int {
        try core.nextMessageSize(timeout: timeout)
    }

    /// Turns on SO_PASSCRED: every later datagram carries its sender's credentials (set it before peers send).
    public func receiveCredentials() throws(UnixSocketError) { try core.enableCredentials() }

    /// The connected peer's credentials (SO_PEERCRED). Unconnected, the kernel reports unknown (nil fields).
    public var credentials: UnixCredentials { get throws(UnixSocketError) { try core.peerCredentials(groups: false) } }

    /// The connected peer's address.
    public var peer: UnixAddress { get throws(UnixSocketError) { try core.peerAddress() } }

    /// This socket's own address (the autobound name after `bind(.autobind)`).
    public var local: UnixAddress { get throws(UnixSocketError) { try core.localAddress() } }

    /// Closes the socket (once) and removes its socket file if it is still the one it created.
    public func close() { core.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { core.isClosed }

    public var description: String { "UnixDatagram(\(core.address.map { "\($0)" } ?? "unbound"))" }
}
