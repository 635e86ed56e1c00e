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
public final class UnixSeqPacket: UnixSocket, UnixConnection, UnixMessageSocket, @unchecked Sendable {
    // @unchecked Sendable restated from UnixSocket: no stored property of its own (the invariant is there).
    /// Always `.seqPacket`.
    override public class var socketType: UnixSocketType { .seqPacket }
}
