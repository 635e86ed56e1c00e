import Synchronization
public import SystemPackage
public import UnixSocketsCore
import UnixSocketsSystem

// The relay that keeps everything (`uds proxy`): bytes or whole messages, the descriptors that came with them
// (SCM_RIGHTS), and the sender's credentials (SCM_CREDENTIALS), both ways, until both directions ended. The
// descriptors are the relay's while in flight: each is closed once it was forwarded or could not be.

/// Which way a relayed transfer went: `>` client to target, `<` target to client.
public enum UnixRelayDirection: String, Sendable {
    case toTarget = ">"
    case toClient = "<"
}

/// Whose credentials a relayed transfer carried on to its receiver.
public enum UnixRelayCredentials: String, Sendable {
    /// The sender's own (the kernel let the relay pass them on: it runs as root, or as the sender itself).
    case sender
    /// The relay's own (the kernel refused the sender's: EPERM for another user's, ESRCH once the sender
    /// exited), attached by the kernel where the receiver asked for credentials.
    case relay
}

/// One relayed transfer, as an observer sees it right after it was forwarded (before its descriptors are
/// closed). `bytes` and `descriptors` are valid only during the observer's call.
public struct UnixRelayTransfer {
    /// The connection (or datagram association) it belongs to.
    public let connection: UInt64
    public let direction: UnixRelayDirection
    /// The bytes (a stream chunk, one message, one datagram).
    public let bytes: UnsafeRawBufferPointer
    /// The descriptors that came with them, numbered in this process.
    public let descriptors: [FileDescriptor]
    /// The credentials that came with them (SO_PASSCRED), if any.
    public let credentials: UnixCredentials?
    /// Whose credentials went on with them; nil when none came.
    public let forwardedCredentials: UnixRelayCredentials?
    /// The sender's address (datagrams).
    public let sender: UnixAddress?
}

/// What one relayed connection moved, and how it ended.
public struct UnixRelaySummary: Sendable {
    public var bytesToTarget = 0
    public var bytesToClient = 0
    public var transfersToTarget = 0
    public var transfersToClient = 0
    public var descriptorsToTarget = 0
    public var descriptorsToClient = 0
    /// The error that ended it, if it did not end with both sides' EOF.
    public var error: UnixSocketError?
}

/// The relay: two connected sockets of the same type, both directions at once, until both ended.
///
/// - stream: every byte in order; each chunk a receive returns goes on in its own send with the descriptors
///   that came with it attached to its first byte (never merged into a later chunk's send). EOF from one
///   side becomes `shutdown(.write)` on the other; the other direction goes on until it ends too.
/// - seqpacket: each message whole (its size learnt with MSG_PEEK | MSG_TRUNC, the buffer grown to fit),
///   with its descriptors; a zero-length message is forwarded (POLLRDHUP tells it from EOF).
/// - credentials: where the source has SO_PASSCRED on, each transfer carries them on as the sender's own
///   when the kernel allows it, otherwise the relay's own (``UnixRelayCredentials``).
///
/// An error on either side ends both directions and closes both sockets (which wakes the other direction);
/// on a clean end neither is closed: the caller owns them.
public enum UnixRelay {
    /// The most descriptors one message can carry (SCM_MAX_FD).
    public static let maxDescriptors = 253
    /// Bytes per stream receive.
    public static let streamChunk = 1 << 18

    public typealias Observer = @Sendable (borrowing UnixRelayTransfer) -> Void

    /// Relays two connected streams.
    public static func relay(
        client: UnixStream,
        target: UnixStream,
        connection: UInt64 = 0,
        observer: Observer? = nil
    ) async -> UnixRelaySummary {
        await relayBoth(client.core, target.core, connection: connection, observer: observer, message: false)
    }

    /// Relays two connected seqpacket sockets.
    public static func relay(
        client: UnixSeqPacket,
        target: UnixSeqPacket,
        connection: UInt64 = 0,
        observer: Observer? = nil
    ) async -> UnixRelaySummary {
        await relayBoth(client.core, target.core, connection: connection, observer: observer, message: true)
    }

    /// Turns on SO_PASSCRED on a listener before it accepts, so that even the bytes a client sends right
    /// after connecting carry its credentials (accepted sockets inherit the option).
    public static func passCredentials<Connection>(on listener: UnixListener<Connection>) throws(UnixSocketError) {
        try listener.core.enableCredentials()
    }

    /// Marks an accepted connection as receiving credentials (its listener had SO_PASSCRED on).
    public static func passCredentials(on socket: UnixSocket) throws(UnixSocketError) {
        try socket.core.enableCredentials()
    }

    /// Connects to `address` with SO_PASSCRED on before the connection exists, so that every byte the
    /// target sends carries its credentials.
    public static func connect<Connection: UnixConnection>(
        _ type: Connection.Type,
        to address: UnixAddress,
        timeout: Duration? = nil
    ) async throws(UnixSocketError) -> Connection {
        let core = try SocketCore.make(Connection.socketType, address: address, operation: "connect")
        do throws(UnixSocketError) {
            try core.enableCredentials()
            var operation = try Connect(to: address)
            try await core.perform(&operation, timeout: timeout)
        } catch {
            core.close()
            throw error
        }
        return Connection(core: core)
    }

    private static func relayBoth(
        _ client: SocketCore,
        _ target: SocketCore,
        connection: UInt64,
        observer: Observer?,
        message: Bool
    ) async -> UnixRelaySummary {
        await withTaskGroup(of: (Moved, UnixSocketError?).self) { group in
            group.addTask {
                await Pump(.toClient, connection: connection, observer: observer)
                    .run(from: target, to: client, message: message)
            }
            let (toTarget, targetError) = await Pump(.toTarget, connection: connection, observer: observer)
                .run(from: client, to: target, message: message)
            let (toClient, clientError) = await group.next() ?? (Moved(), nil)
            var summary = UnixRelaySummary()
            summary.bytesToTarget = toTarget.bytes
            summary.transfersToTarget = toTarget.transfers
            summary.descriptorsToTarget = toTarget.descriptors
            summary.bytesToClient = toClient.bytes
            summary.transfersToClient = toClient.transfers
            summary.descriptorsToClient = toClient.descriptors
            summary.error = targetError ?? clientError
            return summary
        }
    }
}

/// Counts of one direction.
struct Moved {
    var bytes = 0
    var transfers = 0
    var descriptors = 0
}

/// One direction of a relay.
struct Pump: Sendable {
    let direction: UnixRelayDirection
    let connection: UInt64
    let observer: UnixRelay.Observer?

    init(_ direction: UnixRelayDirection, connection: UInt64, observer: UnixRelay.Observer?) {
        self.direction = direction
        self.connection = connection
        self.observer = observer
    }

    /// Copies `source` -> `destination` until EOF (then shuts down `destination`'s write side) or an error
    /// (then closes both, which ends the other direction too).
    func run(from source: SocketCore, to destination: SocketCore, message: Bool) async -> (Moved, UnixSocketError?) {
        var moved = Moved()
        var capacity = message ? 1 << 16 : UnixRelay.streamChunk
        var buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 4096)
        defer { buffer.deallocate() }
        var forwardCredentials = true
        do throws(UnixSocketError) {
            while true {
                if message {
                    var peek = Peek()
                    let size = try await source.perform(&peek, timeout: nil)
                    if size > capacity {
                        buffer.deallocate()
                        capacity = size
                        buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 4096)
                    }
                }
                var receive = try Receive(
                    into: buffer,
                    maxDescriptors: UnixRelay.maxDescriptors,
                    wantSender: false,
                    on: source
                )
                let count = try await source.perform(&receive, timeout: nil)
                let descriptors = receive.received.descriptors
                defer { for descriptor in descriptors { descriptor.close() } }
                // A seqpacket receive of 0 bytes is EOF or a zero-length message. Where the source passes
                // credentials (the client's side: SO_PASSCRED), a message carries them and EOF does not, which
                // tells them apart even when the peer shut down right after sending an empty message; without
                // credentials, POLLRDHUP decides (an empty message then queued behind the shutdown is taken
                // for EOF).
                if count == 0 && (!message || (receive.received.credentials == nil && source.peerHasShutDown())) {
                    try? destination.shutdown(.write)
                    return (moved, nil)
                }
                let credentials = receive.received.credentials
                let fds = descriptors.compactMap(\.rawValue)
                let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<count])
                var send = RelaySend(
                    bytes,
                    descriptors: fds,
                    credentials: forwardCredentials ? credentials : nil,
                    whole: message
                )
                try await destination.perform(&send, timeout: nil)
                if send.fellBack { forwardCredentials = false }
                moved.bytes += count
                moved.transfers += 1
                moved.descriptors += fds.count
                if let observer {
                    let forwarded: UnixRelayCredentials? =
                        credentials == nil ? nil : (send.credentials == nil ? .relay : .sender)
                    observer(
                        UnixRelayTransfer(
                            connection: connection,
                            direction: direction,
                            bytes: bytes,
                            descriptors: fds.map(FileDescriptor.init(rawValue:)),
                            credentials: credentials,
                            forwardedCredentials: forwarded,
                            sender: nil
                        )
                    )
                }
            }
        } catch {
            source.close()
            destination.close()
            return (moved, error)
        }
    }
}

/// One relayed send: the bytes with their descriptors (on the first sendmsg) and credentials (on every
/// sendmsg, so that each piece of a short-written chunk carries them). `whole`: a message, one sendmsg
/// (zero-length allowed). If the kernel refuses the sender's credentials (EPERM: another user's, without
/// CAP_SETUID/CAP_SYS_ADMIN; ESRCH: the sender exited), the send goes on without them (`fellBack`): the
/// kernel then attaches the relay's own where the receiver asked for credentials.
struct RelaySend: WritingOperation {
    let bytes: UnsafeRawBufferPointer
    let descriptors: [CInt]
    private(set) var credentials: KernelCredentials.Raw?
    let whole: Bool
    private(set) var progress = 0
    private(set) var fellBack = false
    var descriptorsSent: Bool

    init(_ bytes: UnsafeRawBufferPointer, descriptors: [CInt], credentials: UnixCredentials?, whole: Bool) {
        self.bytes = bytes
        self.descriptors = descriptors
        self.credentials = credentials?.raw
        self.whole = whole
        descriptorsSent = descriptors.isEmpty
    }

    var name: String { "sendmsg" }

    mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        repeat {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[progress...])
            let result = descriptors.withUnsafeBufferPointer { fds in
                system_sendMessage(
                    fd,
                    rest,
                    descriptors: descriptorsSent ? UnsafeBufferPointer(start: nil, count: 0) : fds,
                    credentials: credentials,
                    destination: nil
                )
            }
            if case .failure(let errno) = result, credentials != nil,
                errno == .noSuchProcess || errno == .notPermitted
            {
                credentials = nil
                fellBack = true
                continue
            }
            guard let sent = try core.outcome(result, "sendmsg") else { return nil }
            descriptorsSent = true
            progress = whole ? bytes.count : progress + sent
        } while progress < bytes.count
        return ()
    }
}

extension SocketCore {
    /// Whether the peer has shut down its writing side (POLLRDHUP): on a seqpacket socket a receive of 0
    /// bytes is then EOF, otherwise a zero-length message.
    func peerHasShutDown() -> Bool {
        (try? withDescriptor("poll") { (fd) throws(UnixSocketError) -> Bool in
            system_peerHasShutDown(fd)
        }) ?? true
    }
}
