public import Logging
public import ServiceLifecycle
import Synchronization
public import SystemPackage
public import UnixSocketsCore
@_spi(Locking) import UnixSocketsSystem

/// Limits and deadlines of a ``UnixServer``.
///
/// The defaults are meant to be safe for a server anyone who can reach its socket may talk to: no single
/// client, and no single user, can take every connection slot or make the server's memory grow without
/// bound. Buffered bytes are capped per connection and in total, in both directions, so the server's buffer
/// memory stays within about `maxInboundBytes + maxOutboundBytes` (256 MiB by default; allocations for frames
/// near the maximum length can reach about twice that) whatever its clients do.
public struct UnixServerConfiguration: Sendable {
    /// The most connections served at once; more are accepted and closed at once (logged). Default 4,096.
    ///
    /// Each connection is a descriptor: raise `RLIMIT_NOFILE` (systemd `LimitNOFILE=`) above this, or the
    /// server pauses accepting when it runs out of descriptors.
    public var maxConnections = 4096
    /// The most connections one peer uid may hold at once (nil: no limit). Default 1,024, a quarter of
    /// ``maxConnections``: one user cannot take every slot and lock the others out.
    public var maxConnectionsPerUID: Int? = 1024
    /// Only these uids (or members of ``allowedGIDs``) are served, checked with SO_PEERCRED before a byte is
    /// read. Nil: everyone the socket file's permissions let in. An unknown peer is never allowed.
    public var allowedUIDs: Set<UInt32>?
    /// Groups (primary or supplementary) that are served when ``allowedUIDs`` is set.
    public var allowedGIDs: Set<UInt32> = []
    /// How long ``UnixServerConnection/receive()`` waits for the first byte of the next frame before the
    /// connection is closed (nil: forever). Default 60 s: an idle client does not hold its slot forever.
    public var idleTimeout: Duration? = .seconds(60)
    /// How long one frame may take from its first byte (a peer trickling bytes is cut off). Default 30 s.
    public var frameTimeout: Duration? = .seconds(30)
    /// How long the server waits for a client to take any of its queued replies (no progress at all) before
    /// it disconnects that client (nil: forever). Default 30 s.
    public var sendTimeout: Duration? = .seconds(30)
    /// The most frames queued for one client. Default 256.
    public var maxOutboundFrames = 256
    /// The most bytes (frame headers included) queued for one client. Default 32 MiB: two frames of the
    /// maximum length.
    ///
    /// ``UnixServerConnection/receive()`` does not read the client's next frame while another reply of the
    /// maximum length would not fit (backpressure: a client that does not read its replies is not read
    /// either); a ``UnixServerConnection/send(_:descriptors:)`` that would go over this, over
    /// ``maxOutboundFrames`` or over ``maxOutboundDescriptorsPerConnection`` disconnects the client. A frame
    /// sent when nothing is queued is always taken.
    public var maxOutboundBytesPerConnection = 32 * 1024 * 1024
    /// The most descriptors queued for one client (each is a duplicate the server holds open). Default 64.
    public var maxOutboundDescriptorsPerConnection = 64
    /// The most bytes queued for all clients together. Default 128 MiB. When a send would go over it, the
    /// client holding the most queued bytes (the one reading least) is disconnected to make room, which may
    /// be the sender. Keep it at least ``maxOutboundBytesPerConnection``.
    public var maxOutboundBytes = 128 * 1024 * 1024
    /// The most bytes received from one client and not yet handed to the handler: the frame in progress (its
    /// header included) and frames decoded but not yet returned by ``UnixServerConnection/receive()``. Nil
    /// (the default): room for one frame of ``maximumFrameLength`` and one read (64 KiB). A header announcing
    /// a frame that cannot fit is `.frameTooLarge` as soon as it arrives.
    public var maxInboundBytesPerConnection: Int?
    /// The most bytes of unfinished frames held for all clients together. Default 128 MiB.
    ///
    /// A frame's whole announced length is counted once its header has arrived, before its body is read, and
    /// nothing is allocated for it until then: when the budget is used up the server stops reading from the
    /// clients that wait for room, first come first served, until frames complete or their
    /// ``frameTimeout`` cuts them off. Idle connections hold none of it.
    public var maxInboundBytes = 128 * 1024 * 1024
    /// The largest frame accepted or sent. Default 16 MiB.
    public var maximumFrameLength = FrameFormat.defaultMaximumFrameLength
    /// How long ``UnixServer/shutdown()`` lets in-flight connections finish before closing them. Default 5 s.
    public var shutdownGracePeriod: Duration = .seconds(5)
    /// The socket file's exact mode (paths only).
    public var mode: FilePermissions?
    /// Where each connection's handler (and its writer) runs: `nil`, the default, is the global concurrent
    /// executor, so a slow handler delays only its own client. ``UnixReactor/shared`` runs them on the reactor
    /// thread, as an event loop does: a ready socket resumes its handler without a thread hop, but a handler
    /// that computes or blocks stalls every connection's I/O.
    public var connectionExecutor: (any TaskExecutor)?
    /// The service manager to tell about the server's state (sd_notify): `READY=1` once ``UnixServer/run(_:)``
    /// accepts, `STOPPING=1` when ``UnixServer/shutdown()`` begins. `nil`, the default, tells no one; under
    /// systemd use ``ServiceNotifier/fromEnvironment()`` (itself nil when `NOTIFY_SOCKET` is unset). A
    /// notification that cannot be sent is logged; the server goes on.
    public var serviceNotifier: ServiceNotifier?
    /// With a ``serviceNotifier``: send `WATCHDOG=1` at half the interval the manager asked for
    /// (``ServiceNotifier/watchdogInterval``, from `WATCHDOG_USEC`) while the server runs. Default false.
    public var pingsWatchdog = false

    /// The defaults: 4,096 connections and 1,024 per uid; 60 s idle, 30 s per frame and 30 s to take a reply;
    /// 16 MiB frames; per connection 256 queued frames, 32 MiB and 64 descriptors queued; 128 MiB queued and
    /// 128 MiB of unfinished frames in total; 5 s shutdown grace.
    public init() {}

    /// The per-connection inbound cap in force (the default is derived from ``maximumFrameLength``).
    var effectiveMaxInboundBytesPerConnection: Int {
        let derived = maximumFrameLength + FrameFormat.headerLength + FramedStream.readSize
        return min(maxInboundBytesPerConnection ?? derived, maxInboundBytes)
    }

    /// Rejects limits that cannot work.
    func validate() throws(UnixSocketError) {
        let positive: [(String, Int)] = [
            ("maxConnections", maxConnections), ("maxOutboundFrames", maxOutboundFrames),
            ("maxOutboundBytesPerConnection", maxOutboundBytesPerConnection),
            ("maxOutboundBytes", maxOutboundBytes), ("maxInboundBytes", maxInboundBytes),
        ]
        for (name, value) in positive where value <= 0 {
            throw UnixSocketError(.invalidArgument, operation: "configure server", detail: "\(name) must be positive")
        }
        if let cap = maxConnectionsPerUID, cap <= 0 {
            throw UnixSocketError(
                .invalidArgument,
                operation: "configure server",
                detail: "maxConnectionsPerUID must be positive"
            )
        }
        if maxOutboundDescriptorsPerConnection < 0 || !(0...Int(UInt32.max)).contains(maximumFrameLength) {
            throw UnixSocketError(
                .invalidArgument,
                operation: "configure server",
                detail:
                    "maxOutboundDescriptorsPerConnection must not be negative, maximumFrameLength must be 0...\(UInt32.max)"
            )
        }
        if effectiveMaxInboundBytesPerConnection <= FrameFormat.headerLength {
            throw UnixSocketError(
                .invalidArgument,
                operation: "configure server",
                detail: "maxInboundBytesPerConnection and maxInboundBytes must exceed the 4-byte frame header"
            )
        }
    }
}

/// One client of a ``UnixServer``: receive frames, queue frames to send.
public final class UnixServerConnection: Sendable {
    /// The peer's credentials (SO_PEERCRED + SO_PEERGROUPS), read at accept.
    public let credentials: UnixCredentials
    /// A number unique within the server, for logs.
    public let id: UInt64
    /// The framed stream. Use ``receive()`` and ``send(_:descriptors:)``: they are the ones the server's caps
    /// and deadlines apply to; reading from this directly bypasses them and must not be mixed with ``receive()``.
    public let framed: FramedStream
    let configuration: UnixServerConfiguration
    let resources: ServerResources
    private let reader: Lock<FramedStream.MeteredReader?>
    private let state = Lock(State())

    struct Outbound: Sendable {
        let wire: [UInt8]
        let descriptors: [OwnedDescriptor]
    }

    struct State {
        /// Frames waiting for the writer, from `head` on.
        var queue: [Outbound] = []
        var head = 0
        /// What is queued, the frame being written included (all of it is charged to the server's budget).
        var bytes = 0
        var frames = 0
        var descriptors = 0
        /// No more frames are taken (the handler ended); the writer flushes and ends.
        var finished = false
        /// Disconnected: everything was dropped and given back.
        var closed = false
        var writerWaiting: Ticket?
        var readerWaiting: Ticket?
        /// Bytes of the server's inbound budget this connection holds.
        var inboundHeld = 0
        /// The reader's buffer capacity when it last settled (for tests: idle connections keep none).
        var inboundBufferCapacity = 0
    }

    init(stream: UnixStream, credentials: UnixCredentials, id: UInt64, resources: ServerResources) {
        self.credentials = credentials
        self.id = id
        self.configuration = resources.configuration
        self.resources = resources
        // An out-of-range maximumFrameLength is refused by UnixServer.init; the default stands in here.
        self.framed =
            (try? FramedStream(stream, maximumFrameLength: resources.configuration.maximumFrameLength))
            ?? FramedStream(stream)
        self.reader = Lock(FramedStream.MeteredReader(maximumFrameLength: resources.configuration.maximumFrameLength))
    }

    private var address: UnixAddress? { framed.stream.core.address }

    // MARK: Receiving

    /// The next frame from the client, or nil when it closed cleanly (or the server is shutting down).
    ///
    /// Waits first while this client's queued replies are over the cap (see
    /// ``UnixServerConfiguration/maxOutboundBytesPerConnection``), and while the server's inbound budget has
    /// no room for the frame. Any error closes the connection: a peer that idles past
    /// ``UnixServerConfiguration/idleTimeout``, trickles a frame past ``UnixServerConfiguration/frameTimeout``
    /// or breaks the framing is cut off, whatever the handler does next.
    /// - Throws: ``UnixSocketError`` `.timedOut` (idle or frame deadline, or no inbound room in time),
    ///   `.truncatedFrame`, `.frameTooLarge`, `.closed`.
    public func receive() async throws -> FramedMessage? {
        guard
            var reader = reader.withLock({ slot -> FramedStream.MeteredReader? in
                defer { slot = nil }
                return slot
            })
        else {
            throw UnixSocketError(
                .invalidArgument,
                operation: "receive frame",
                address: address,
                detail: "another task is already receiving on this connection"
            )
        }
        defer { self.reader.withLock { [reader] in $0 = reader } }
        do {
            return try await receive(into: &reader)
        } catch {
            disconnect()
            throw error
        }
    }

    private func receive(into reader: inout FramedStream.MeteredReader) async throws -> FramedMessage? {
        try await waitForOutboundRoom()
        var deadlines = try FramedStream.FrameDeadlines(
            timeout: nil,
            idleTimeout: configuration.idleTimeout,
            frameTimeout: configuration.frameTimeout
        )
        let limit = configuration.effectiveMaxInboundBytesPerConnection
        while true {
            if let frame = reader.takeFrame() {
                settleInbound(reader)
                return frame
            }
            if reader.ended {
                settleInbound(reader)
                return nil
            }
            if reader.bufferedByteCount == 0 {
                // Between frames: hold no memory until the next frame's first byte is there.
                try await waitReadable(timeout: try deadlines.remaining(frameStarted: false, address: address))
            }
            let remaining = try deadlines.remaining(frameStarted: true, address: address)
            let frameLength = reader.pendingFrameWireLength
            if let frameLength, frameLength > limit {
                throw UnixSocketError(
                    .frameTooLarge,
                    operation: "receive frame",
                    address: address,
                    detail: "a frame of \(frameLength - FrameFormat.headerLength) bytes does not fit this "
                        + "server's \(limit)-byte inbound limit per connection"
                )
            }
            // The whole frame once its header is known (so frames that were started can finish), and room for
            // one read; taken from the server's budget before anything is read or allocated.
            let target = min(limit, max(frameLength ?? 0, reader.bufferedByteCount + FramedStream.readSize))
            let held = state.withLock { $0.inboundHeld }
            if target > held { try await acquireInbound(target - held, timeout: remaining) }
            let room = min(FramedStream.readSize, state.withLock { $0.inboundHeld } - reader.bufferedByteCount)
            guard room > 0 else { throw UnixSocketError(.closed, operation: "receive frame", address: address) }
            let message = try await framed.stream.receive(
                maxBytes: room,
                maxDescriptors: framed.maxDescriptorsPerRead,
                timeout: remaining
            )
            try reader.ingest(message)
            reader.releaseIdleBuffer()
            settleInbound(reader)
        }
    }

    /// Waits until a byte (or EOF) can be read, without reading it or holding a buffer.
    private func waitReadable(timeout: Duration?) async throws {
        do {
            try await framed.stream.core.waitReadable("receive frame", timeout: timeout)
        } catch  where error.code == .timedOut {
            throw UnixSocketError(
                .timedOut,
                operation: "receive frame",
                address: address,
                detail: "no frame arrived in time (idle timeout)"
            )
        }
    }

    private func acquireInbound(_ amount: Int, timeout: Duration?) async throws {
        switch await resources.inbound.acquire(amount, owner: id, timeout: timeout) {
        case .granted:
            let kept = state.withLock { state -> Bool in
                if state.closed { return false }
                state.inboundHeld += amount
                return true
            }
            if !kept {
                resources.inbound.release(amount)
                throw UnixSocketError(.closed, operation: "receive frame", address: address)
            }
        case .timedOut:
            throw UnixSocketError(
                .timedOut,
                operation: "receive frame",
                address: address,
                detail: "the server's inbound budget (maxInboundBytes) had no room for the frame in time"
            )
        case .closed:
            throw UnixSocketError(.closed, operation: "receive frame", address: address)
        case .cancelled:
            throw CancellationError()
        }
    }

    /// Gives back what the reader no longer needs: it keeps the decoded frames not yet handed out and the
    /// frame in progress (all of it once its header said how long it is).
    private func settleInbound(_ reader: FramedStream.MeteredReader) {
        let keep = reader.readyByteCount + max(reader.bufferedByteCount, reader.pendingFrameWireLength ?? 0)
        let surplus = state.withLock { state -> Int in
            state.inboundBufferCapacity = reader.bufferCapacity
            guard !state.closed, state.inboundHeld > keep else { return 0 }
            defer { state.inboundHeld = keep }
            return state.inboundHeld - keep
        }
        resources.inbound.release(surplus)
    }

    /// Whether another reply may be produced: room for one more frame of the maximum length, half the frame
    /// and descriptor caps.
    private func hasOutboundRoom(_ state: State) -> Bool {
        let largest = FrameFormat.headerLength + configuration.maximumFrameLength
        return (state.bytes == 0 || state.bytes + largest <= configuration.maxOutboundBytesPerConnection)
            && state.frames * 2 <= configuration.maxOutboundFrames
            && state.descriptors * 2 <= configuration.maxOutboundDescriptorsPerConnection
    }

    /// Backpressure: waits while this client's queued replies are over the cap.
    private func waitForOutboundRoom() async throws {
        while true {
            let ticket = state.withLock { state -> Ticket? in
                if state.closed || hasOutboundRoom(state) { return nil }
                let ticket = Ticket()
                state.readerWaiting = ticket
                return ticket
            }
            guard let ticket else { return }  // closed: the read that follows says so
            let outcome = await withTaskCancellationHandler {
                await ticket.wait()
            } onCancel: {
                ticket.resolve(.cancelled)
            }
            if outcome == .cancelled { throw CancellationError() }
        }
    }

    // MARK: Sending

    /// Queues a frame for the client without waiting. Descriptors are duplicated (you may close yours).
    ///
    /// Nothing is allocated for the frame before it is counted against the caps.
    /// - Throws: ``UnixSocketError`` `.frameTooLarge` (over ``UnixServerConfiguration/maximumFrameLength``;
    ///   nothing else happens), `.closed`; `.tooLarge` when this client's queue is over one of its caps or the
    ///   server's total is full and this client holds the most: the client is then disconnected (others are
    ///   unaffected).
    public func send(_ bytes: [UInt8], descriptors: [FileDescriptor] = []) throws {
        guard bytes.count <= configuration.maximumFrameLength else {
            throw UnixSocketError(
                .frameTooLarge,
                operation: "send frame",
                address: address,
                detail: "a payload of \(bytes.count) bytes is over the maximum of \(configuration.maximumFrameLength)"
            )
        }
        let size = FrameFormat.headerLength + bytes.count
        let count = descriptors.count
        // A client over its own caps is cut off: it does not read its replies.
        func notReading(_ over: String) -> UnixSocketError {
            disconnect()
            return UnixSocketError(
                .tooLarge,
                operation: "send frame",
                address: address,
                detail: "the client did not read its replies (\(over)); disconnected"
            )
        }
        if let over = state.withLock({ overCap($0, size: size, descriptors: count) }) { throw notReading(over) }
        guard resources.chargeOutbound(size, for: self) else {
            disconnect()
            throw UnixSocketError(
                .tooLarge,
                operation: "send frame",
                address: address,
                detail: "the server's outbound budget (maxOutboundBytes) is full and this client holds the most "
                    + "unread replies; disconnected"
            )
        }
        enum Verdict { case queued, closed, over(String) }
        let verdict = state.withLock { state -> Verdict in
            if state.closed || state.finished { return .closed }
            if let over = overCap(state, size: size, descriptors: count) { return .over(over) }
            state.bytes += size
            state.frames += 1
            state.descriptors += count
            return .queued
        }
        switch verdict {
        case .queued: break
        case .closed:
            resources.outbound.release(size)
            throw UnixSocketError(
                .closed,
                operation: "send frame",
                address: address,
                detail: "the connection is closed"
            )
        case .over(let over):
            resources.outbound.release(size)
            throw notReading(over)
        }
        // Counted: now the copies may be made.
        var owned: [OwnedDescriptor] = []
        for descriptor in descriptors {
            switch system_dupCloexec(descriptor.rawValue) {
            case .success(let copy): owned.append(OwnedDescriptor(copy))
            case .failure(let errno):
                unqueue(size: size, descriptors: count)
                throw UnixSocketError.system("dup", errno)
            }
        }
        var wire: [UInt8] = []
        wire.reserveCapacity(size)
        try FrameEncoder(maximumFrameLength: configuration.maximumFrameLength).encode(bytes, into: &wire)
        let writer = state.withLock { state -> Ticket?? in
            if state.closed { return .none }  // disconnected meanwhile: it gave our bytes back
            state.queue.append(Outbound(wire: wire, descriptors: owned))
            defer { state.writerWaiting = nil }
            return .some(state.writerWaiting)
        }
        guard let writer else {
            throw UnixSocketError(
                .closed,
                operation: "send frame",
                address: address,
                detail: "the connection is closed"
            )
        }
        writer?.resolve(.granted)
    }

    /// Which per-connection cap a frame of `size` bytes with `descriptors` would break, if any.
    private func overCap(_ state: State, size: Int, descriptors: Int) -> String? {
        if state.frames + 1 > configuration.maxOutboundFrames {
            return "\(configuration.maxOutboundFrames) frames queued"
        }
        guard state.frames > 0 else { return nil }  // a frame into an empty queue is always taken
        if state.bytes + size > configuration.maxOutboundBytesPerConnection {
            return "\(state.bytes) bytes queued, cap \(configuration.maxOutboundBytesPerConnection)"
        }
        if state.descriptors + descriptors > configuration.maxOutboundDescriptorsPerConnection {
            return "\(state.descriptors) descriptors queued, cap \(configuration.maxOutboundDescriptorsPerConnection)"
        }
        return nil
    }

    /// Takes back a frame that was counted but not queued.
    private func unqueue(size: Int, descriptors: Int) {
        let counted = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.bytes -= size
            state.frames -= 1
            state.descriptors -= descriptors
            return true
        }
        if counted { resources.outbound.release(size) }
    }

    /// Bytes queued for this client (the frame being written included).
    var queuedOutboundBytes: Int { state.withLock { $0.bytes } }
    /// The capacity of the reader's buffer when it last settled.
    var inboundBufferCapacity: Int { state.withLock { $0.inboundBufferCapacity } }
    /// Whether ``receive()`` is waiting for this client to take its replies (backpressure).
    var isWaitingForOutboundRoom: Bool { state.withLock { $0.readerWaiting != nil } }
    /// Whether ``disconnect()`` ran.
    var isDisconnected: Bool { state.withLock { $0.closed } }

    /// Closes the connection now: queued frames are dropped and the memory they held is given back; a waiting
    /// ``receive()`` wakes with `.closed`.
    public func disconnect() {
        let taken = state.withLock { state -> (State, [Outbound])? in
            if state.closed { return nil }
            let before = state
            let queue = state.queue
            state = State()
            state.closed = true
            state.finished = true
            return (before, queue)
        }
        framed.stream.close()
        guard let (before, dropped) = taken else { return }
        resources.outbound.release(before.bytes)
        resources.inbound.release(before.inboundHeld)
        resources.inbound.withdraw(owner: id)
        before.writerWaiting?.resolve(.closed)
        before.readerWaiting?.resolve(.closed)
        _ = dropped  // their duplicated descriptors close as the last reference goes
    }

    // MARK: The writer

    /// Sends queued frames in order until the queue is finished, then returns.
    func runWriter() async {
        while let item = await nextOutbound() {
            let fds = item.descriptors.compactMap { $0.rawValue.map(FileDescriptor.init(rawValue:)) }
            do {
                // Frames are queued encoded; each starts its own sendmsg with its descriptors, as
                // FramedStream.send does.
                try await framed.stream.send(item.wire, descriptors: fds, timeout: configuration.sendTimeout)
            } catch {
                disconnect()
                return
            }
            sent(item)
        }
    }

    private func nextOutbound() async -> Outbound? {
        while true {
            let (item, ticket) = state.withLock { state -> (Outbound?, Ticket?) in
                if state.closed { return (nil, nil) }
                if state.head < state.queue.count {
                    let item = state.queue[state.head]
                    state.queue[state.head] = Outbound(wire: [], descriptors: [])
                    state.head += 1
                    if state.head == state.queue.count {
                        state.queue.removeAll(keepingCapacity: state.queue.count <= 64)
                        state.head = 0
                    }
                    return (item, nil)
                }
                if state.finished { return (nil, nil) }
                let ticket = Ticket()
                state.writerWaiting = ticket
                return (nil, ticket)
            }
            if let item { return item }
            guard let ticket else { return nil }
            let outcome = await withTaskCancellationHandler {
                await ticket.wait()
            } onCancel: {
                ticket.resolve(.cancelled)
            }
            if outcome == .cancelled { return nil }
        }
    }

    /// A frame left: give its bytes back and wake a reader waiting for room.
    private func sent(_ item: Outbound) {
        let (counted, reader) = state.withLock { state -> (Bool, Ticket?) in
            guard !state.closed else { return (false, nil) }
            state.bytes -= item.wire.count
            state.frames -= 1
            state.descriptors -= item.descriptors.count
            guard let waiting = state.readerWaiting, hasOutboundRoom(state) else { return (true, nil) }
            state.readerWaiting = nil
            return (true, waiting)
        }
        if counted { resources.outbound.release(item.wire.count) }
        reader?.resolve(.granted)
    }

    /// No more frames will be queued: the writer flushes what is queued and ends.
    func finishOutbound() {
        let writer = state.withLock { state -> Ticket? in
            state.finished = true
            defer { state.writerWaiting = nil }
            return state.writerWaiting
        }
        writer?.resolve(.granted)
    }

    /// Stops reading (frames already received are still delivered, then ``receive()`` returns nil).
    func stopReading() { try? framed.stream.shutdown(.read) }
}

/// What the connections of one server share: its limits, its byte budgets and the table of connections.
final class ServerResources: Sendable {
    let configuration: UnixServerConfiguration
    let logger: Logger
    /// Unfinished inbound frames, all connections together.
    let inbound: ByteBudget
    /// Queued outbound frames, all connections together.
    let outbound: ByteBudget
    let state = Lock(ServerState())

    struct ServerState {
        var connections: [UInt64: UnixServerConnection] = [:]
        var perUID: [UInt32: Int] = [:]
        var nextID: UInt64 = 1
        var shuttingDown = false
    }

    init(configuration: UnixServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        // A request of at most two reads is a small frame or the start of one: it may pass large frames
        // waiting for room.
        self.inbound = ByteBudget(limit: configuration.maxInboundBytes, smallRequest: 2 * FramedStream.readSize)
        self.outbound = ByteBudget(limit: configuration.maxOutboundBytes)
    }

    /// Charges `size` queued bytes to the server's total. When it is full, disconnects the clients holding
    /// the most queued bytes, largest first, while they hold more than `requester`; false if that cannot
    /// make room (the requester holds the most, or the frame is larger than the whole budget).
    func chargeOutbound(_ size: Int, for requester: UnixServerConnection) -> Bool {
        if outbound.tryAcquire(size) { return true }
        let others = state.withLock { Array($0.connections.values) }
            .map { (connection: $0, bytes: $0.queuedOutboundBytes) }
            .sorted { $0.bytes > $1.bytes }
        for (victim, bytes) in others {
            if outbound.tryAcquire(size) { return true }
            guard victim !== requester, bytes > requester.queuedOutboundBytes else { return false }
            guard !victim.isDisconnected else { continue }
            logger.notice(
                "connection \(victim.id) disconnected: the server's outbound budget is full and it holds the most unread replies (\(bytes) bytes)"
            )
            victim.disconnect()
        }
        return outbound.tryAcquire(size)
    }
}

/// What a ``UnixServer`` holds at one moment, for monitoring.
public struct UnixServerUsage: Sendable, Hashable {
    /// Connections being served.
    public var connections: Int
    /// Bytes of unfinished inbound frames counted against ``UnixServerConfiguration/maxInboundBytes``.
    public var inboundBytes: Int
    /// Bytes of queued outbound frames counted against ``UnixServerConfiguration/maxOutboundBytes``.
    public var outboundBytes: Int
    /// The most inbound bytes held at once since the server started.
    public var peakInboundBytes: Int
    /// The most outbound bytes queued at once since the server started.
    public var peakOutboundBytes: Int
}

/// A framed server: binds, accepts, and runs a handler per connection in a task group, with caps on total
/// connections and per peer uid, idle, per-frame and send deadlines, byte caps on what is buffered in each
/// direction (per connection and in total, with backpressure), and a graceful shutdown that lets in-flight
/// work finish and removes the socket file. See ``UnixServerConfiguration`` for the limits and their defaults.
///
/// ```swift
/// let server = try UnixServer(address: "/run/app.sock")
/// try await server.run { connection in
///     while let frame = try await connection.receive() {
///         try connection.send(frame.bytes)                 // echo
///     }
/// }
/// ```
///
/// As a systemd service: serve the activated socket (``init(listener:configuration:logger:handler:)`` with
/// ``ActivatedSocket/listener(_:)``), set ``UnixServerConfiguration/serviceNotifier``, and run the server
/// in a swift-service-lifecycle `ServiceGroup`: it is a `Service`, and SIGTERM's graceful shutdown is
/// ``shutdown()``.
public final class UnixServer: Sendable, Service {
    /// The listening socket.
    public let listener: UnixStreamListener
    /// The limits in force.
    public let configuration: UnixServerConfiguration
    let logger: Logger
    let resources: ServerResources
    /// The handler ``run()`` (the `Service` requirement) runs for each connection.
    let handler: (@Sendable (UnixServerConnection) async throws -> Void)?

    /// Binds `address` (safe socket-file rules, ``UnixServerConfiguration/mode``) and listens.
    /// - Parameters:
    ///   - logger: where connection events go (the library never bootstraps logging).
    ///   - handler: what ``run()`` runs for each connection (``run(_:)`` takes its own instead).
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for limits that cannot work, or what binding throws.
    public convenience init(
        address: UnixAddress,
        configuration: UnixServerConfiguration = UnixServerConfiguration(),
        logger: Logger = Logger(label: "UnixSockets.UnixServer"),
        handler: (@Sendable (UnixServerConnection) async throws -> Void)? = nil
    ) throws {
        try configuration.validate()
        try self.init(
            listener: UnixStreamListener.bind(address, mode: configuration.mode),
            configuration: configuration,
            logger: logger,
            handler: handler
        )
    }

    /// Serves on a listener made elsewhere: typically systemd's, from ``ActivatedSocket/listener(_:)``
    /// (which never removes the socket file: the manager owns it). The server owns the listener from now on
    /// and closes it on ``shutdown()``. ``UnixServerConfiguration/mode`` does not apply.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for limits that cannot work.
    public init(
        listener: UnixStreamListener,
        configuration: UnixServerConfiguration = UnixServerConfiguration(),
        logger: Logger = Logger(label: "UnixSockets.UnixServer"),
        handler: (@Sendable (UnixServerConnection) async throws -> Void)? = nil
    ) throws {
        try configuration.validate()
        self.listener = listener
        self.configuration = configuration
        self.logger = logger
        self.resources = ServerResources(configuration: configuration, logger: logger)
        self.handler = handler
    }

    /// The number of connections being served.
    public var connectionCount: Int { resources.state.withLock { $0.connections.count } }

    /// Connections and buffered bytes now, and the peaks.
    public var usage: UnixServerUsage {
        UnixServerUsage(
            connections: connectionCount,
            inboundBytes: resources.inbound.used,
            outboundBytes: resources.outbound.used,
            peakInboundBytes: resources.inbound.peak,
            peakOutboundBytes: resources.outbound.peak
        )
    }

    /// Bytes of unfinished inbound frames held now, and the most ever held (all connections together).
    var inboundBytes: (now: Int, peak: Int) { (resources.inbound.used, resources.inbound.peak) }
    /// Bytes of outbound frames queued now, and the most ever queued (all connections together).
    var outboundBytes: (now: Int, peak: Int) { (resources.outbound.used, resources.outbound.peak) }

    /// The `Service` entry point: ``run(_:)`` with the handler given at init.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` when the server was made without a handler.
    public func run() async throws {
        guard let handler else {
            throw UnixSocketError(
                .invalidArgument,
                operation: "run server",
                address: listener.address,
                detail: "no handler: pass one to the initializer, or call run(_:)"
            )
        }
        try await run(handler)
    }

    /// Accepts connections and runs `handler` for each in a child task until ``shutdown()`` (or a
    /// swift-service-lifecycle graceful shutdown, which calls it); returns when every connection has
    /// finished. Queued outbound frames are flushed before each connection closes. With a
    /// ``UnixServerConfiguration/serviceNotifier``, `READY=1` is sent once it accepts (and watchdog pings
    /// while it runs, with ``UnixServerConfiguration/pingsWatchdog``).
    public func run(_ handler: @escaping @Sendable (UnixServerConnection) async throws -> Void) async throws {
        try await withGracefulShutdownHandler {
            try await withThrowingTaskGroup(of: Void.self) { outer in
                if configuration.pingsWatchdog, configuration.serviceNotifier != nil,
                    let interval = ServiceNotifier.watchdogInterval
                {
                    outer.addTask { [self] in
                        while !Task.isCancelled {
                            try? await Task.sleep(for: interval / 2)
                            if Task.isCancelled { break }
                            notify(.watchdog)
                        }
                    }
                }
                // The listener is listening already: connections queue from here on.
                notify(.ready, .status("accepting on \(listener.address)"))
                try await serve(handler)
                outer.cancelAll()
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
    }

    /// Sends to the service manager, if there is one; a failure is logged, never thrown.
    private func notify(_ states: ServiceState...) {
        guard let notifier = configuration.serviceNotifier else { return }
        do {
            try notifier.notify(states)
        } catch {
            logger.warning("sd_notify \(states): \(error)")
        }
    }

    private func serve(_ handler: @escaping @Sendable (UnixServerConnection) async throws -> Void) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for try await stream in listener.connections {
                guard let connection = admit(stream) else { continue }
                group.addTask(executorPreference: configuration.connectionExecutor) { [logger] in
                    await withDiscardingTaskGroup { inner in
                        inner.addTask { await connection.runWriter() }
                        do {
                            try await handler(connection)
                        } catch {
                            logger.debug("connection \(connection.id) ended: \(error)")
                        }
                        connection.finishOutbound()
                    }
                    connection.disconnect()  // flushed by now; gives back whatever it still held
                    self.release(connection)
                }
            }
        }
    }

    /// Checks credentials and caps; returns the connection to serve, or nil (closed, logged).
    private func admit(_ stream: UnixStream) -> UnixServerConnection? {
        guard let credentials = try? stream.credentials else {
            stream.close()
            return nil
        }
        if let uids = configuration.allowedUIDs, !credentials.isAllowed(uids: uids, gids: configuration.allowedGIDs) {
            logger.notice("refused peer \(credentials): not allowed")
            stream.close()
            return nil
        }
        let admitted = resources.state.withLock { state -> UnixServerConnection? in
            if state.shuttingDown || state.connections.count >= configuration.maxConnections { return nil }
            if let cap = configuration.maxConnectionsPerUID, let uid = credentials.uid,
                state.perUID[uid, default: 0] >= cap
            {
                return nil
            }
            let connection = UnixServerConnection(
                stream: stream,
                credentials: credentials,
                id: state.nextID,
                resources: resources
            )
            state.nextID += 1
            state.connections[connection.id] = connection
            if let uid = credentials.uid { state.perUID[uid, default: 0] += 1 }
            return connection
        }
        guard let admitted else {
            logger.notice("refused peer \(credentials): connection limit reached")
            stream.close()
            return nil
        }
        logger.debug("accepted connection \(admitted.id) from \(credentials)")
        return admitted
    }

    private func release(_ connection: UnixServerConnection) {
        resources.state.withLock { state in
            state.connections.removeValue(forKey: connection.id)
            if let uid = connection.credentials.uid {
                state.perUID[uid, default: 1] -= 1
                if state.perUID[uid] == 0 { state.perUID.removeValue(forKey: uid) }
            }
        }
    }

    /// Graceful shutdown: stops accepting (the socket file is removed), lets every connection read what was
    /// already sent and flush its queue, and after the grace period closes whatever is left.
    /// ``run(_:)`` returns once all connections have finished.
    public func shutdown() {
        let (connections, first) = resources.state.withLock { state -> ([UnixServerConnection], Bool) in
            defer { state.shuttingDown = true }
            return (Array(state.connections.values), !state.shuttingDown)
        }
        if first { notify(.stopping) }
        listener.close()
        for connection in connections { connection.stopReading() }
        let grace = configuration.shutdownGracePeriod
        Task { [resources] in
            try? await Task.sleep(for: grace)
            let left = resources.state.withLock { Array($0.connections.values) }
            for connection in left { connection.disconnect() }
        }
    }
}
