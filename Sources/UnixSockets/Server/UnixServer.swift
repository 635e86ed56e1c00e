public import Logging
import Synchronization
public import SystemPackage

/// Limits and deadlines of a ``UnixServer``.
public struct UnixServerConfiguration: Sendable {
    /// The most connections served at once; more are accepted and closed at once (logged).
    public var maxConnections = 1024
    /// The most connections one peer uid may hold at once (nil: no limit).
    public var maxConnectionsPerUID: Int?
    /// Only these uids (or members of ``allowedGIDs``) are served, checked with SO_PEERCRED before a byte is
    /// read. Nil: everyone the socket file's permissions let in. An unknown peer is never allowed.
    public var allowedUIDs: Set<UInt32>?
    /// Groups (primary or supplementary) that are served when ``allowedUIDs`` is set.
    public var allowedGIDs: Set<UInt32> = []
    /// How long a connection may sit between frames before it is closed (nil: forever).
    public var idleTimeout: Duration?
    /// How long one frame may take from its first byte (a peer trickling bytes is cut off).
    public var frameTimeout: Duration? = .seconds(30)
    /// The most frames queued for one client; a client that does not read is disconnected beyond it.
    public var maxOutboundFrames = 256
    /// The largest frame accepted or sent.
    public var maximumFrameLength = FrameFormat.defaultMaximumFrameLength
    /// How long ``UnixServer/shutdown()`` lets in-flight connections finish before closing them.
    public var shutdownGracePeriod: Duration = .seconds(5)
    /// The socket file's exact mode (paths only).
    public var mode: UInt32?

    /// The defaults: 1,024 connections, 30 s per frame, 256 queued frames, 16 MiB frames, 5 s grace.
    public init() {}
}

/// One client of a ``UnixServer``: receive frames, queue frames to send.
public final class UnixServerConnection: Sendable {
    /// The peer's credentials (SO_PEERCRED + SO_PEERGROUPS), read at accept.
    public let credentials: UnixCredentials
    /// A number unique within the server, for logs.
    public let id: UInt64
    /// The framed stream (for direct use; prefer ``receive()`` and ``send(_:descriptors:)``).
    public let framed: FramedStream
    let configuration: UnixServerConfiguration
    private let outbound: AsyncStream<Outbound>.Continuation
    private let outboundStream: AsyncStream<Outbound>
    private let queued = Atomic<Int>(0)

    struct Outbound: Sendable {
        let payload: [UInt8]
        let descriptors: [OwnedDescriptor]
    }

    init(stream: UnixStream, credentials: UnixCredentials, id: UInt64, configuration: UnixServerConfiguration) {
        self.credentials = credentials
        self.id = id
        self.configuration = configuration
        // An out-of-range maximumFrameLength is refused by UnixServer.init; the default stands in here.
        self.framed =
            (try? FramedStream(stream, maximumFrameLength: configuration.maximumFrameLength)) ?? FramedStream(stream)
        (outboundStream, outbound) = AsyncStream.makeStream(of: Outbound.self)
    }

    /// The next frame from the client, or nil when it closed cleanly (or the server is shutting down).
    /// - Throws: ``UnixSocketError`` `.timedOut` (idle or frame deadline), `.truncatedFrame`, `.frameTooLarge`.
    public func receive() async throws -> FramedMessage? {
        try await framed.receive(idleTimeout: configuration.idleTimeout, frameTimeout: configuration.frameTimeout)
    }

    /// Queues a frame for the client without waiting. Descriptors are duplicated (you may close yours).
    /// - Throws: ``UnixSocketError`` `.tooLarge` when the client has ``UnixServerConfiguration/maxOutboundFrames``
    ///   frames unread: the client is disconnected (others are unaffected).
    public func send(_ payload: [UInt8], descriptors: [FileDescriptor] = []) throws {
        if queued.wrappingAdd(1, ordering: .relaxed).newValue > configuration.maxOutboundFrames {
            disconnect()
            throw UnixSocketError(
                .tooLarge, operation: "send frame", address: framed.stream.core.address,
                detail: "the client did not read \(configuration.maxOutboundFrames) queued frames; disconnected")
        }
        var owned: [OwnedDescriptor] = []
        for descriptor in descriptors {
            switch system_dupCloexec(descriptor.rawValue) {
            case .success(let copy): owned.append(OwnedDescriptor(copy))
            case .failure(let errno): throw UnixSocketError.system("dup", errno)
            }
        }
        outbound.yield(Outbound(payload: payload, descriptors: owned))
    }

    /// Closes the connection now (queued frames are dropped); a waiting ``receive()`` wakes with `.closed`.
    public func disconnect() {
        outbound.finish()
        framed.stream.close()
    }

    /// Sends queued frames in order until the queue is finished, then returns.
    func runWriter() async {
        for await item in outboundStream {
            let fds = item.descriptors.compactMap { $0.rawValue.map(FileDescriptor.init(rawValue:)) }
            do {
                try await framed.send(item.payload, descriptors: fds)
            } catch {
                framed.stream.close()
                return
            }
            _ = queued.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    /// No more frames will be queued: the writer flushes what is queued and ends.
    func finishOutbound() { outbound.finish() }

    /// Stops reading (frames already received are still delivered, then ``receive()`` returns nil).
    func stopReading() { try? framed.stream.shutdown(.read) }
}

/// A framed server: binds, accepts, and runs a handler per connection in a task group, with caps on total
/// connections and per peer uid, idle and per-frame deadlines, a bounded outbound queue per client and a
/// graceful shutdown that lets in-flight work finish and removes the socket file.
///
/// ```swift
/// let server = try UnixServer(address: "/run/app.sock")
/// try await server.run { connection in
///     while let frame = try await connection.receive() {
///         try connection.send(frame.payload)                 // echo
///     }
/// }
/// ```
public final class UnixServer: Sendable {
    /// The listening socket.
    public let listener: UnixStreamListener
    /// The limits in force.
    public let configuration: UnixServerConfiguration
    let logger: Logger
    private let state = Lock(ServerState())

    struct ServerState {
        var connections: [UInt64: UnixServerConnection] = [:]
        var perUID: [UInt32: Int] = [:]
        var nextID: UInt64 = 1
        var shuttingDown = false
    }

    /// Binds `address` (safe socket-file rules, ``UnixServerConfiguration/mode``) and listens.
    /// - Parameter logger: where connection events go (the library never bootstraps logging).
    public init(
        address: UnixAddress, configuration: UnixServerConfiguration = UnixServerConfiguration(),
        logger: Logger = Logger(label: "UnixSockets.UnixServer")
    ) throws {
        guard (0...Int(UInt32.max)).contains(configuration.maximumFrameLength) else {
            throw UnixSocketError(
                .invalidArgument, operation: "server", address: address,
                detail: "maximumFrameLength must be 0...\(UInt32.max) (got \(configuration.maximumFrameLength))")
        }
        self.listener = try UnixStreamListener.bind(address, mode: configuration.mode)
        self.configuration = configuration
        self.logger = logger
    }

    /// The number of connections being served.
    public var connectionCount: Int { state.withLock { $0.connections.count } }

    /// Accepts connections and runs `handler` for each in a child task until ``shutdown()``; returns when
    /// every connection has finished. Queued outbound frames are flushed before each connection closes.
    public func run(_ handler: @escaping @Sendable (UnixServerConnection) async throws -> Void) async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for try await stream in listener.connections {
                guard let connection = admit(stream) else { continue }
                group.addTask { [logger] in
                    await withDiscardingTaskGroup { inner in
                        inner.addTask { await connection.runWriter() }
                        do {
                            try await handler(connection)
                        } catch {
                            logger.debug("connection \(connection.id) ended: \(error)")
                        }
                        connection.finishOutbound()
                    }
                    connection.framed.stream.close()
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
        let admitted = state.withLock { state -> UnixServerConnection? in
            if state.shuttingDown || state.connections.count >= configuration.maxConnections { return nil }
            if let cap = configuration.maxConnectionsPerUID, let uid = credentials.uid, state.perUID[uid, default: 0] >= cap {
                return nil
            }
            let connection = UnixServerConnection(
                stream: stream, credentials: credentials, id: state.nextID, configuration: configuration)
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
        state.withLock { state in
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
        let connections = state.withLock { state -> [UnixServerConnection] in
            state.shuttingDown = true
            return Array(state.connections.values)
        }
        listener.close()
        for connection in connections { connection.stopReading() }
        let grace = configuration.shutdownGracePeriod
        Task { [self] in
            try? await Task.sleep(for: grace)
            let left = state.withLock { Array($0.connections.values) }
            for connection in left { connection.disconnect() }
        }
    }
}
