import Synchronization
import SystemPackage
public import UnixSocketsCore
import UnixSocketsSystem

/// What happens to the associations of a datagram relay, for a trace.
public enum UnixDatagramRelayEvent: Sendable {
    /// A new sender: its datagrams now go to the target from a socket of its own (`local`), so the target's
    /// replies to that socket come back to this sender only. `sender` is nil for an unbound sender, whose
    /// datagrams are forwarded but to whom no reply can be sent.
    case opened(association: UInt64, sender: UnixAddress?, local: UnixAddress?, credentials: UnixCredentials?)
    /// An association idle for the idle time (or at the end) was closed.
    case closed(association: UInt64, sender: UnixAddress?, summary: UnixRelaySummary)
    /// Something went wrong that did not end the relay: no socket to the target for a new sender, a reply
    /// dropped (the sender is unbound, gone, or took none of its replies within the reply timeout).
    case problem(association: UInt64?, sender: UnixAddress?, error: String)
}

/// A datagram relay: what arrives on `listener` goes on to `target`, with its descriptors and credentials,
/// from one socket per sender (autobound, connected to the target), so that each sender's replies come back
/// to that sender only. Associations idle for `idle` are closed.
///
/// The kernel queues only `net.unix.max_dgram_qlen` datagrams per socket (10 by default): a target that
/// falls behind slows the relay's reading (backpressure, nothing dropped on the way in). Replies go back
/// through `listener`, each sender's from its own task: a sender that takes none of its replies stalls only
/// its own association, and a reply it has not taken within `replyTimeout` is dropped (with an event).
public enum UnixDatagramRelay {
    /// Serves until `listener` is closed (e.g. by a signal handler), then closes every association.
    ///
    /// `admit`, when given, sees each datagram's credentials (SO_PASSCRED is on: the kernel attaches the
    /// sender's) before anything else happens to it: a datagram it refuses is dropped, its descriptors
    /// closed, and no association is opened for its sender.
    public static func serve(
        listener: UnixDatagram,
        target: UnixAddress,
        idle: Duration = .seconds(60),
        replyTimeout: Duration = .seconds(2),
        admit: (@Sendable (UnixCredentials?) -> Bool)? = nil,
        observer: UnixRelay.Observer? = nil,
        events: (@Sendable (UnixDatagramRelayEvent) -> Void)? = nil
    ) async {
        let table = AssociationTable()
        do {
            try listener.core.enableCredentials()
        } catch {
            events?(.problem(association: nil, sender: nil, error: "\(error)"))
        }
        await withDiscardingTaskGroup { group in
            group.addTask {
                // The idle sweep: a closed association's socket wakes its reply task, which then ends.
                let period = max(min(idle / 2, .seconds(1)), .milliseconds(20))
                while !listener.isClosed {
                    try? await Task.sleep(for: period)
                    for association in table.expire(idle: idle) {
                        association.socket.close()
                        events?(
                            .closed(
                                association: association.id,
                                sender: association.sender,
                                summary: association.summary
                            )
                        )
                    }
                }
            }
            let buffer = Buffer()
            defer { buffer.release() }
            while true {
                let received: Received
                do throws(UnixSocketError) {
                    received = try await receive(on: listener.core, into: buffer)
                } catch {
                    if error.code != .closed {
                        events?(.problem(association: nil, sender: nil, error: "\(error)"))
                    }
                    break
                }
                defer { for descriptor in received.descriptors { descriptor.close() } }
                if let admit, !admit(received.credentials) { continue }
                let sender = received.sender.flatMap { $0.isUnnamed ? nil : $0 }
                var association = table.find(sender)
                if association == nil {
                    do {
                        let created = try await table.open(sender, target: target)
                        association = created
                        events?(
                            .opened(
                                association: created.id,
                                sender: sender,
                                local: try? created.socket.local,
                                credentials: received.credentials
                            )
                        )
                        group.addTask {
                            await replies(
                                created,
                                listener: listener,
                                timeout: replyTimeout,
                                observer: observer,
                                events: events
                            )
                        }
                    } catch {
                        events?(.problem(association: nil, sender: sender, error: "\(error)"))
                        continue
                    }
                }
                guard let association else { continue }
                association.touch()
                let fds = received.descriptors.compactMap(\.rawValue)
                let bytes = UnsafeRawBufferPointer(rebasing: buffer.memory[..<received.count])
                var send = RelaySend(bytes, descriptors: fds, credentials: received.credentials, whole: true)
                do {
                    try await association.socket.core.perform(&send, timeout: nil)
                } catch {
                    events?(.problem(association: association.id, sender: sender, error: "\(error)"))
                    continue
                }
                association.count(.toTarget, bytes: received.count, descriptors: fds.count)
                observer?(
                    UnixRelayTransfer(
                        connection: association.id,
                        direction: .toTarget,
                        bytes: bytes,
                        descriptors: fds.map(FileDescriptor.init(rawValue:)),
                        credentials: received.credentials,
                        forwardedCredentials: received.credentials == nil
                            ? nil : (send.credentials == nil ? .relay : .sender),
                        sender: sender
                    )
                )
            }
            for association in table.removeAll() {
                association.socket.close()
                events?(.closed(association: association.id, sender: association.sender, summary: association.summary))
            }
        }
    }

    /// The target's replies to one association, sent back to its sender through the listener.
    private static func replies(
        _ association: Association,
        listener: UnixDatagram,
        timeout: Duration,
        observer: UnixRelay.Observer?,
        events: (@Sendable (UnixDatagramRelayEvent) -> Void)?
    ) async {
        let buffer = Buffer()
        defer { buffer.release() }
        while true {
            let received: Received
            do {
                received = try await receive(on: association.socket.core, into: buffer)
            } catch {
                return  // closed (idle, or the end), or the target went away
            }
            defer { for descriptor in received.descriptors { descriptor.close() } }
            association.touch()
            guard let sender = association.sender else {
                events?(
                    .problem(
                        association: association.id,
                        sender: nil,
                        error: "reply dropped: the sender is unbound, no reply can reach it"
                    )
                )
                continue
            }
            let fds = received.descriptors.compactMap(\.rawValue)
            let bytes = UnsafeRawBufferPointer(rebasing: buffer.memory[..<received.count])
            let owned = fds.map(FileDescriptor.init(rawValue:))
            var forwarded: UnixRelayCredentials? = received.credentials == nil ? nil : .sender
            do {
                do {
                    try await listener.core.sendMessage(
                        Array(bytes),
                        descriptors: owned,
                        credentials: received.credentials,
                        to: sender,
                        timeout: timeout
                    )
                } catch
                    where received.credentials != nil
                    && (error.errno == .notPermitted || error.errno == .noSuchProcess)
                {
                    forwarded = .relay
                    try await listener.core.sendMessage(
                        Array(bytes),
                        descriptors: owned,
                        credentials: nil,
                        to: sender,
                        timeout: timeout
                    )
                }
            } catch {
                events?(.problem(association: association.id, sender: sender, error: "reply dropped: \(error)"))
                continue
            }
            association.count(.toClient, bytes: received.count, descriptors: fds.count)
            observer?(
                UnixRelayTransfer(
                    connection: association.id,
                    direction: .toClient,
                    bytes: bytes,
                    descriptors: owned,
                    credentials: received.credentials,
                    forwardedCredentials: forwarded,
                    sender: nil
                )
            )
        }
    }

    private struct Received {
        let count: Int
        let descriptors: [OwnedDescriptor]
        let credentials: UnixCredentials?
        let sender: UnixAddress?
    }

    /// One datagram, whole: its size first (MSG_PEEK | MSG_TRUNC), the buffer grown to fit.
    private static func receive(on core: SocketCore, into buffer: Buffer) async throws(UnixSocketError) -> Received {
        var peek = Peek()
        let size = try await core.perform(&peek, timeout: nil)
        buffer.reserve(size)
        var receive = try Receive(
            into: buffer.memory,
            maxDescriptors: UnixRelay.maxDescriptors,
            wantSender: true,
            on: core
        )
        let count = try await core.perform(&receive, timeout: nil)
        return Received(
            count: count,
            descriptors: receive.received.descriptors,
            credentials: receive.received.credentials,
            sender: receive.received.sender
        )
    }
}

/// A growable receive buffer owned by one task.
private final class Buffer: @unchecked Sendable {
    private(set) var memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 4096)
    func reserve(_ size: Int) {
        guard size > memory.count else { return }
        memory.deallocate()
        memory = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 4096)
    }
    func release() { memory.deallocate() }
}

/// One sender's socket to the target.
private final class Association: Sendable {
    let id: UInt64
    let sender: UnixAddress?
    let socket: UnixDatagram
    private let lastActive = Atomic<UInt64>(system_monotonicNanoseconds())
    private let moved = Mutex(UnixRelaySummary())

    init(id: UInt64, sender: UnixAddress?, socket: UnixDatagram) {
        self.id = id
        self.sender = sender
        self.socket = socket
    }

    func touch() { lastActive.store(system_monotonicNanoseconds(), ordering: .relaxed) }
    func idle(for nanoseconds: UInt64, now: UInt64) -> Bool {
        now &- lastActive.load(ordering: .relaxed) > nanoseconds
    }

    func count(_ direction: UnixRelayDirection, bytes: Int, descriptors: Int) {
        moved.withLock {
            switch direction {
            case .toTarget:
                $0.bytesToTarget += bytes
                $0.transfersToTarget += 1
                $0.descriptorsToTarget += descriptors
            case .toClient:
                $0.bytesToClient += bytes
                $0.transfersToClient += 1
                $0.descriptorsToClient += descriptors
            }
        }
    }
    var summary: UnixRelaySummary { moved.withLock { $0 } }
}

/// The associations by sender (nil: every unbound sender shares one).
private final class AssociationTable: Sendable {
    private let state = Mutex<(next: UInt64, bySender: [UnixAddress?: Association])>((1, [:]))

    func find(_ sender: UnixAddress?) -> Association? { state.withLock { $0.bySender[sender] } }

    /// A socket with a kernel-chosen name (so the target can reply), SO_PASSCRED on, connected to `target`.
    func open(_ sender: UnixAddress?, target: UnixAddress) async throws(UnixSocketError) -> Association {
        let socket = try UnixDatagram.bind(.unnamed)
        do throws(UnixSocketError) {
            try socket.core.enableCredentials()
            var connect = try Connect(to: target)
            try await socket.core.perform(&connect, timeout: .seconds(5))
        } catch {
            socket.close()
            throw error
        }
        return state.withLock {
            let association = Association(id: $0.next, sender: sender, socket: socket)
            $0.next += 1
            $0.bySender[sender] = association
            return association
        }
    }

    /// Removes and returns the associations idle for longer than `idle`.
    func expire(idle: Duration) -> [Association] {
        let (seconds, attoseconds) = idle.components
        let nanoseconds = UInt64(max(seconds, 0)) * 1_000_000_000 + UInt64(max(attoseconds, 0) / 1_000_000_000)
        let now = system_monotonicNanoseconds()
        return state.withLock { state in
            let expired = state.bySender.values.filter { $0.idle(for: nanoseconds, now: now) }
            for association in expired { state.bySender[association.sender] = nil }
            return expired
        }
    }

    func removeAll() -> [Association] {
        state.withLock { state in
            defer { state.bySender = [:] }
            return Array(state.bySender.values)
        }
    }
}
