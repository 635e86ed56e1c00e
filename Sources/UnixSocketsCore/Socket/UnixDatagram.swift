public import SystemPackage
@_spi(Locking) import UnixSocketsSystem

/// A datagram Unix socket (SOCK_DGRAM): messages with boundaries, reliable and ordered on one host.
///
/// Bind it to receive (``bind(_:)``, or ``UnixAddress/unnamed`` for a kernel-chosen abstract name that
/// peers can reply to); connect it to fix a default destination. A send is whole or fails; a send to a
/// full receiver waits (connected: with poll; unconnected: with a short back-off, since poll cannot tell).
///
/// ```swift
/// let server = try UnixDatagram.bind("@echo")
/// let client = try UnixDatagram.bind(.unnamed)
/// try client.send(Array("hi".utf8), to: "@echo")
/// let message = try server.receive()                 // message.sender is the client's address
/// try server.send(message.bytes, to: message.sender!)
/// ```
public final class UnixDatagram: UnixSocket, UnixMessageSocket, @unchecked Sendable {
    // @unchecked Sendable restated from UnixSocket: no stored property of its own (the invariant is there).
    /// Always `.datagram`.
    override public class var socketType: UnixSocketType { .datagram }

    /// An unbound datagram socket (it can send; replies need an address: bind to `.unnamed` for one).
    public static func unbound() throws(UnixSocketError) -> UnixDatagram {
        UnixDatagram(core: try SocketCore.make(.datagram, address: nil, operation: "socket"))
    }

    /// Binds a datagram socket to `address` (`.unnamed` for a kernel-chosen abstract name).
    ///
    /// A path gets the same safe socket-file rules as a listener: a stale file is replaced, a live one or
    /// a non-socket is an error; the file has exactly `mode` if given; it is removed on close.
    /// - Throws: ``UnixSocketError``.
    public static func bind(
        _ address: UnixAddress,
        mode: FilePermissions? = nil
    ) throws(UnixSocketError) -> UnixDatagram {
        let core = try SocketCore.make(.datagram, address: address, operation: "bind")
        if case .path(let path) = address.kind {
            if let claim = try SocketFile.bind(core, to: address, path: path, mode: mode?.rawValue, byName: false) {
                core.afterClose.withLock { $0 = { claim.removeIfOurs() } }
            }
            return UnixDatagram(core: core)
        }
        try core.bindWithoutFile(to: address, mode: mode)
        return UnixDatagram(core: core)
    }

    /// Sets the default destination; afterwards only that peer's datagrams are received.
    public func connect(to address: UnixAddress) throws(UnixSocketError) {
        try core.connect(to: address, timeout: nil)
    }

    /// Sends one datagram to `address` (unconnected), whole.
    /// - Throws: ``UnixSocketError``: EMSGSIZE with the limit, ENOENT/ECONNREFUSED if nobody is bound
    ///   there, `.timedOut` if the receiver's queue stays full. The corresponding C function is `sendmsg`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    @inlinable
    public func send(
        _ bytes: some Collection<UInt8>,
        to address: UnixAddress,
        descriptors: [FileDescriptor] = [],
        credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) throws(UnixSocketError) {
        try core.sendMessage(bytes, descriptors: descriptors, credentials: credentials, to: address, timeout: timeout)
    }
}
