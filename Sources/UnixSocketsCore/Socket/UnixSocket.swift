public import SystemPackage

/// What the three Unix socket types share: ``UnixStream``, ``UnixSeqPacket`` and ``UnixDatagram``.
///
/// Each operation is written once, here or in ``UnixConnection`` (stream and seqpacket) and
/// ``UnixMessageSocket`` (seqpacket and datagram). Closing (or dropping) a socket closes its descriptor
/// exactly once; a call blocked in another thread or task wakes with `.closed`.
public class UnixSocket: @unchecked Sendable, CustomStringConvertible {
    // @unchecked: the one stored property is a `let` of a Sendable type, and the subclasses (final, in this
    // module: the class is public, not open) add no stored state. A class only so that the three types
    // share one implementation and travel through async sequences.

    @usableFromInline package let core: SocketCore

    required package init(core: SocketCore) { self.core = core }

    /// The socket type of this class (`.stream`, `.seqPacket` or `.datagram`).
    public class var socketType: UnixSocketType {
        preconditionFailure("UnixSocket is abstract: use UnixStream, UnixSeqPacket or UnixDatagram")
    }

    /// Adopts a socket descriptor of this type (e.g. from SwiftNIO or an inherited one); it becomes
    /// non-blocking and this object owns it.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` if it is not a Unix socket of this type.
    public convenience init(adopting descriptor: FileDescriptor) throws(UnixSocketError) {
        self.init(core: try SocketCore.adopt(descriptor, type: Self.socketType, operation: "adopt"))
    }

    /// Gives up ownership of the descriptor (for swift-subprocess or SwiftNIO); the caller must close it.
    /// A bound socket file is not removed.
    /// - Throws: ``UnixSocketError`` `.closed` if the socket is closed or in use by another thread (it then
    ///   stays this object's, with its socket file's removal on close).
    public func releaseDescriptor() throws(UnixSocketError) -> FileDescriptor {
        FileDescriptor(rawValue: try core.release())
    }

    /// Receives what is there (a stream) or one message (seqpacket, datagram) of at most `maxBytes`, with up
    /// to `maxDescriptors` descriptors that came with it, the credentials (once credential passing is on)
    /// and, for a datagram, the sender's address. An empty message on a connection means EOF.
    /// - Throws: ``UnixSocketError`` `.messageTruncated` (a message larger than `maxBytes`; it is discarded,
    ///   ask ``UnixMessageSocket/nextMessageSize(timeout:)`` first), `.controlTruncated` (more descriptors
    ///   than `maxDescriptors` arrived: all that arrived are closed), `.timedOut`. The corresponding C
    ///   function is `recvmsg`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func receive(
        maxBytes: Int = 65536,
        maxDescriptors: Int = 8,
        timeout: Duration? = nil
    )
        throws(UnixSocketError) -> UnixMessage
    {
        try core.receiveMessage(
            maxBytes: maxBytes,
            maxDescriptors: maxDescriptors,
            wantSender: core.type == .datagram,
            timeout: timeout
        )
    }

    /// Requests socket buffer sizes in bytes (nil leaves one unchanged). The kernel doubles the value for
    /// its bookkeeping and caps it at `net.core.wmem_max` / `rmem_max` silently; ``bufferSizes`` reports
    /// what it granted. On a stream the sender's SO_SNDBUF bounds the bytes in flight; the largest message
    /// a seqpacket or datagram socket can send is the granted SO_SNDBUF - 32 bytes.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a size of 0 or less. The corresponding C
    ///   function is `setsockopt` (SO_SNDBUF, SO_RCVBUF).
    public func setBufferSizes(send: Int? = nil, receive: Int? = nil) throws(UnixSocketError) {
        try core.setBufferSizes(send: send, receive: receive)
    }

    /// The granted buffer sizes (SO_SNDBUF, SO_RCVBUF), as the kernel reports them (doubled).
    public var bufferSizes: (send: Int, receive: Int) { get throws(UnixSocketError) { try core.bufferSizes() } }

    /// The peer's credentials at connect time (SO_PEERCRED), with supplementary groups (SO_PEERGROUPS) on a
    /// connection. An unconnected datagram socket reports unknown (nil fields).
    public var credentials: UnixCredentials {
        get throws(UnixSocketError) { try core.peerCredentials(groups: core.type != .datagram) }
    }

    /// The peer's address (`.unnamed` for an unbound client).
    public var peer: UnixAddress { get throws(UnixSocketError) { try core.peerAddress() } }

    /// This socket's own address (the kernel-chosen name after binding a datagram socket to `.unnamed`).
    public var local: UnixAddress { get throws(UnixSocketError) { try core.localAddress() } }

    /// Closes the socket (once; later calls do nothing) and removes its socket file if it is still the one
    /// it created.
    public func close() { core.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { core.isClosed }

    public var description: String {
        "\(type(of: self))(\(core.address.map { "\($0)" } ?? (core.type == .datagram ? "unbound" : "pair")))"
    }
}

/// One of the three socket types, as a protocol (what their shared static members need: `Self`).
/// Only ``UnixStream``, ``UnixSeqPacket`` and ``UnixDatagram`` conform.
public protocol UnixSocketKind: UnixSocket {}

extension UnixSocketKind {
    /// A connected pair (socketpair).
    /// - Throws: ``UnixSocketError`` (EMFILE when out of descriptors). The corresponding C function is
    ///   `socketpair`.
    public static func pair() throws(UnixSocketError) -> (Self, Self) {
        let (a, b) = try SocketCore.pair(socketType)
        return (Self(core: a), Self(core: b))
    }
}

/// A connection-oriented socket: ``UnixStream`` or ``UnixSeqPacket``, what a ``UnixListener`` accepts.
public protocol UnixConnection: UnixSocketKind {}

extension UnixConnection {
    /// Connects to a listening socket of this type.
    /// - Parameters:
    ///   - address: the server's path or abstract name.
    ///   - timeout: how long to keep retrying while the server's backlog is full (nil: forever).
    /// - Throws: ``UnixSocketError`` (ENOENT: no socket file; ECONNREFUSED: nobody listening; EPROTOTYPE:
    ///   a server of another type; EACCES; ...). The corresponding C function is `connect`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public static func connect(to address: UnixAddress, timeout: Duration? = nil) throws(UnixSocketError) -> Self {
        let core = try SocketCore.make(socketType, address: address, operation: "connect")
        try core.connect(to: address, timeout: timeout)
        return Self(core: core)
    }

    /// Closes one or both directions; after `.write` the peer reads EOF while it can still send to us.
    public func shutdown(_ direction: ShutdownDirection) throws(UnixSocketError) { try core.shutdown(direction) }
}

/// A socket of whole messages: ``UnixSeqPacket`` or ``UnixDatagram``. A send is whole or fails (EMSGSIZE
/// names the limit); a receive that would cut a message throws `.messageTruncated` instead.
public protocol UnixMessageSocket: UnixSocketKind {}

extension UnixMessageSocket {
    /// Sends one message to the connected peer, whole, with `descriptors` attached (SCM_RIGHTS; they stay
    /// the caller's) and optionally `credentials` (SCM_CREDENTIALS).
    /// - Throws: ``UnixSocketError``: EMSGSIZE with the limit, `.invalidArgument` for an empty seqpacket
    ///   message or over 253 descriptors, EPIPE (seqpacket) or ECONNREFUSED then ENOTCONN (datagram) once
    ///   the peer has closed. The corresponding C function is `sendmsg`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    @inlinable
    public func send(
        _ bytes: some Collection<UInt8>,
        descriptors: [FileDescriptor] = [],
        credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) throws(UnixSocketError) {
        try core.sendMessage(bytes, descriptors: descriptors, credentials: credentials, to: nil, timeout: timeout)
    }

    /// Receives one message into `buffer` (no allocation, no descriptors, no sender); returns its length
    /// (0 at EOF on a seqpacket connection).
    /// - Throws: ``UnixSocketError`` `.messageTruncated` if it did not fit, `.controlTruncated` if
    ///   descriptors came with it (they are closed).
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func receive(
        into buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration? = nil
    ) throws(UnixSocketError)
        -> Int
    {
        try core.receiveMessage(into: buffer, timeout: timeout)
    }

    /// The size of the next message, without consuming it (MSG_PEEK | MSG_TRUNC); 0 at EOF.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func nextMessageSize(timeout: Duration? = nil) throws(UnixSocketError) -> Int {
        var operation = Peek()
        return try core.perform(&operation, timeout: timeout)
    }

    /// Turns on credential passing (SO_PASSCRED): every message received afterwards carries its sender's
    /// credentials (turn it on before peers send).
    public func enableCredentialPassing() throws(UnixSocketError) { try core.enableCredentials() }
}

extension SocketCore {
    // The blocking message operations as concrete (non-generic) functions: the generic faces above
    // (over `Self` and the byte collection) call them, so the operation and its driver are specialized.

    /// One whole message of a caller's collection and descriptors, lent without a copy where they are
    /// contiguous. Inlinable with the public sends above it: specialized in the caller's module for its
    /// collection and socket type, a connected seqpacket send+receive costs 840 instructions instead of
    /// 1,221 (callgrind, a socketpair loop).
    @inlinable func sendMessage(
        _ bytes: some Collection<UInt8>,
        descriptors: [FileDescriptor],
        credentials: UnixCredentials?,
        to destination: UnixAddress?,
        timeout: Duration?
    ) throws(UnixSocketError) {
        try withRawDescriptors(descriptors) { (fds) throws(UnixSocketError) in
            try withBytes(bytes) { (raw) throws(UnixSocketError) in
                try sendMessage(raw, descriptors: fds, credentials: credentials, to: destination, timeout: timeout)
            }
        }
    }

    /// One whole message to the connected peer or `destination`, bytes and descriptors lent without a copy.
    @usableFromInline func sendMessage(
        _ bytes: UnsafeRawBufferPointer,
        descriptors: UnsafeBufferPointer<CInt>,
        credentials: UnixCredentials?,
        to destination: UnixAddress?,
        timeout: Duration?
    ) throws(UnixSocketError) {
        // The destination is the operation's type parameter: each branch runs its own specialization.
        if let destination {
            try run(
                MessageSend(
                    bytes,
                    descriptors: descriptors,
                    credentials: credentials,
                    to: Recipient(destination),
                    on: self
                )
            )
        } else {
            try run(
                MessageSend(bytes, descriptors: descriptors, credentials: credentials, to: ConnectedPeer(), on: self)
            )
        }
        func run<Destination>(
            _ operation: MessageSend<UnsafeRawBufferPointer, UnsafeBufferPointer<CInt>, Destination>
        ) throws(UnixSocketError) {
            var operation = operation
            try perform(&operation, timeout: timeout)
        }
    }

    /// One message into `buffer`, without descriptors or sender (allocation-free).
    func receiveMessage(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) throws(UnixSocketError) -> Int {
        var operation = Receive(into: buffer, on: self)
        return try perform(&operation, timeout: timeout)
    }
}

/// Lends the numbers of `descriptors` without copying them (FileDescriptor is a frozen wrapper of CInt).
@inline(__always)
@inlinable func withRawDescriptors(
    _ descriptors: [FileDescriptor],
    _ body: (UnsafeBufferPointer<CInt>) throws(UnixSocketError) -> Void
) throws(UnixSocketError) {
    if descriptors.isEmpty { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
    var failure: UnixSocketError?
    descriptors.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CInt.self) { fds in
            do throws(UnixSocketError) { try body(fds) } catch { failure = error }
        }
    }
    if let failure { throw failure }
}

/// Calls `body` with the bytes of `value` (no copy for contiguous collections such as arrays).
///
/// Not generic over a result: its callers are unspecialized generics (`some Collection<UInt8>` across the
/// module boundary), where a `Result<R, _>?` made the runtime instantiate generic metadata on every call
/// (about 700 instructions per send, measured with callgrind for `uds bench`).
@inline(__always)
@inlinable func withBytes(
    _ value: some Collection<UInt8>,
    _ body: (UnsafeRawBufferPointer) throws(UnixSocketError) -> Void
)
    throws(UnixSocketError)
{
    var failure: UnixSocketError?
    let contiguous: Void? = value.withContiguousStorageIfAvailable { buffer in
        do throws(UnixSocketError) { try body(UnsafeRawBufferPointer(buffer)) } catch { failure = error }
    }
    if contiguous == nil {
        Array(value).withUnsafeBytes { raw in
            do throws(UnixSocketError) { try body(raw) } catch { failure = error }
        }
    }
    if let failure { throw failure }
}
