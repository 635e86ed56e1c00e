public import SystemPackage

/// A connected sequenced-packet Unix socket (SOCK_SEQPACKET): ordered, reliable messages with boundaries.
///
/// A send is whole or fails (EMSGSIZE names the limit). A receive that would cut a message throws
/// `.messageTruncated` instead. An empty message is refused, since the peer would read it like EOF.
///
/// ```swift
/// let (a, b) = try UnixSeqPacket.pair()
/// try a.send(Array("hello".utf8))
/// let message = try b.receive()          // message.bytes == "hello"
/// ```
public final class UnixSeqPacket: UnixConnection, CustomStringConvertible {
    let core: SocketCore

    /// Always `.seqPacket`.
    public static var socketType: UnixSocketType { .seqPacket }

    init(core: SocketCore) { self.core = core }

    /// Implementation detail of ``UnixListener``.
    public init(_ accepted: _AcceptedSocket) { core = accepted.core }

    /// Connects to a listening seqpacket socket.
    /// - Throws: ``UnixSocketError``; EPROTOTYPE if the server is of another type.
    public static func connect(to address: UnixAddress, timeout: Duration? = nil) throws(UnixSocketError) -> UnixSeqPacket {
        let core = try SocketCore.make(.seqPacket, address: address, operation: "connect")
        try core.connect(to: address, timeout: timeout)
        return UnixSeqPacket(core: core)
    }

    /// A connected pair (socketpair).
    public static func pair() throws(UnixSocketError) -> (UnixSeqPacket, UnixSeqPacket) {
        let (a, b) = try SocketCore.pair(.seqPacket)
        return (UnixSeqPacket(core: a), UnixSeqPacket(core: b))
    }

    /// Adopts a connected seqpacket socket descriptor; it becomes non-blocking and this object owns it.
    public convenience init(adopting descriptor: FileDescriptor) throws(UnixSocketError) {
        self.init(core: try SocketCore.adopt(descriptor, type: .seqPacket, operation: "adopt"))
    }

    /// Gives up ownership of the descriptor; the caller must close it.
    public func releaseDescriptor() throws(UnixSocketError) -> FileDescriptor {
        FileDescriptor(rawValue: try core.release())
    }

    /// Sends one message, whole, with `descriptors` attached (SCM_RIGHTS; they stay the caller's).
    /// - Throws: ``UnixSocketError``: EMSGSIZE with the limit, `.invalidArgument` for an empty message or
    ///   over 253 descriptors, EPIPE if the peer closed. The corresponding C function is `sendmsg`.
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

    /// Receives one message of at most `maxBytes` with up to `maxDescriptors` descriptors. An empty
    /// message means the peer closed (EOF).
    /// - Throws: ``UnixSocketError`` `.messageTruncated` (message larger than `maxBytes`; it is discarded,
    ///   use ``nextMessageSize(timeout:)`` first), `.controlTruncated` (descriptors closed).
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration? = nil) throws(UnixSocketError)
        -> UnixMessage
    {
        try core.receiveMessage(maxBytes: maxBytes, maxDescriptors: maxDescriptors, wantSender: false, timeout: timeout)
    }

    /// Receives one message into `buffer` (no allocation); returns its length (0 at EOF).
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) throws(UnixSocketError) -> Int {
        try core.receiveMessage(into: buffer, timeout: timeout)
    }

    /// The size of the next message, without consuming it (MSG_PEEK | MSG_TRUNC); 0 at EOF.
    public func nextMessageSize(timeout: Duration? = nil) throws(UnixSocketError) -> Int {
        try core.nextMessageSize(timeout: timeout)
    }

    /// Turns on SO_PASSCRED so every received message carries the sender's credentials.
    public func receiveCredentials() throws(UnixSocketError) { try core.enableCredentials() }

    /// Closes one or both directions.
    public func shutdown(_ direction: ShutdownDirection) throws(UnixSocketError) { try core.shutdown(direction) }

    /// The peer's credentials at connect time (SO_PEERCRED + SO_PEERGROUPS).
    public var credentials: UnixCredentials { get throws(UnixSocketError) { try core.peerCredentials(groups: true) } }

    /// The peer's address.
    public var peer: UnixAddress { get throws(UnixSocketError) { try core.peerAddress() } }

    /// This socket's own address.
    public var local: UnixAddress { get throws(UnixSocketError) { try core.localAddress() } }

    /// Closes the socket (once).
    public func close() { core.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { core.isClosed }

    public var description: String { "UnixSeqPacket(\(core.address.map { "\($0)" } ?? "pair"))" }
}
