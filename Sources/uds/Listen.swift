import ArgumentParser
import Foundation
import Synchronization
import SystemPackage
import UnixSockets

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve like nc -lU: accept one peer, socket -> stdout and stdin -> socket.",
        discussion: """
            Binds ADDRESS with safe socket-file rules (a stale socket file is replaced, a live one or a \
            non-socket is an error), accepts one peer and copies both ways at once. On stdin EOF the write \
            side is shut down and reading goes on; it exits 0 once the peer's EOF has arrived and everything \
            received is written out. The socket file is removed on exit, SIGINT and SIGTERM included.

            With -t dgram it prints every datagram it receives until SIGINT/SIGTERM; with --echo it answers \
            each sender without waiting (a sender whose queue is full, because it does not read, loses that \
            reply; -v says so). With -k it serves clients concurrently until SIGINT/SIGTERM (their data goes \
            to stdout; stdin is unused). Descriptors a peer attaches to a message are closed (-v says how many).

            Examples:
              uds listen /tmp/app.sock > received.bin
              uds listen -k --echo --mode 660 /tmp/echo.sock
              uds listen -t dgram --lines @log
              uds listen --allow-uid 1000 -v /tmp/private.sock
            """
    )

    @Argument(
        help: "The path or @abstract-name to bind (optional when a socket was activated: LISTEN_FDS).",
        transform: parseAddress
    )
    var address: UnixAddress?

    @Option(
        name: .shortAndLong,
        help: "Socket type: stream, seqpacket or dgram (default: the activated socket's type, else stream)."
    )
    var type: UnixSocketType?

    @Flag(name: .shortAndLong, help: "Serve clients concurrently until SIGINT/SIGTERM.")
    var keepOpen = false

    @Flag(help: "Send every byte or message back to whoever sent it (prints nothing; stdin unused).")
    var echo = false

    @OptionGroup var permissions: ModeOption

    @Flag(help: "Messages: each stdin line is one message; each received message is printed with a newline.")
    var lines = false

    @Option(help: "With -k: the most clients served at once; more are accepted and closed at once.")
    var maxConnections = 4096

    @Option(
        name: .customLong("max-per-uid"),
        help: "With -k: the most clients one user id may hold at once, so that one user cannot take every slot."
    )
    var maxPerUID = 1024

    @OptionGroup var peers: PeerOptions

    func validate() throws {
        if maxConnections < 1 || maxPerUID < 1 {
            throw ValidationError("--max-connections and --max-per-uid must be at least 1")
        }
        if let address { try permissions.check(address, hint: " (check peers with --allow-uid)") }
        _ = try Activated.pick(address)
    }

    func run() async throws {
        let activated = try Activated.pick(address)
        let type = Activated.type(given: type, activated: activated, fallback: .stream)
        let settings = ListenSettings(
            address: address,
            activated: activated,
            type: type,
            keepOpen: keepOpen,
            echo: echo,
            mode: permissions.mode,
            lines: lines,
            policy: peers.policy,
            limits: ConnectionLimits(total: maxConnections, perUID: maxPerUID)
        )
        if keepOpen && type != .datagram && !Activated.isConnection(activated) {
            // -k: accepts and serves on the async API until SIGINT/SIGTERM; no thread is parked.
            try await Lifecycle.runAsync(endOnSignals: true) { _ in
                if settings.type == .stream {
                    try await settings.serveStreamClients()
                } else {
                    try await settings.serveSeqPacketClients()
                }
            }
            return
        }
        try await Lifecycle.run(endOnSignals: true) { outcome in
            switch settings.type {
            case .stream: try settings.serveStream(outcome)
            case .seqPacket: try settings.serveSeqPacket(outcome)
            case .datagram: try settings.serveDatagrams()
            }
        }
    }
}

/// The parsed `listen` settings, as plain values for threads and tasks.
struct ListenSettings: Sendable {
    let address: UnixAddress?
    /// The socket systemd passed, if any: served instead of binding `address` (never unlinked).
    let activated: ActivatedSocket?
    let type: UnixSocketType
    let keepOpen: Bool
    let echo: Bool
    let mode: FilePermissions?
    let lines: Bool
    let policy: PeerPolicy
    let limits: ConnectionLimits

    /// The listener: the activated one, or `address` bound with the safe socket-file rules; READY=1 then.
    func listener<Connection: UnixConnection>(_ type: Connection.Type) throws -> UnixListener<Connection> {
        try Activated.listener(Connection.self, activated: activated, address: address, mode: mode)
    }

    /// The one peer: an activated connection (Accept=yes, inetd style), or the first admitted client.
    func onePeer<Connection: UnixConnection>(_ type: Connection.Type) throws -> Connection {
        let policy = policy
        return try servedPeer(Connection.self, activated: activated, address: address, mode: mode) { connection in
            !policy.needsCredentials || policy.admit(try? connection.credentials)
        }
    }

    // MARK: stream

    func serveStream(_ outcome: CommandOutcome) throws {
        let connection: UnixStream = try onePeer(UnixStream.self)
        if echo {
            do throws(UnixSocketError) {
                try Self.echoStream(connection)
            } catch {
                guard error.code == .closed else { throw error }
            }
            return
        }
        try Relay.runStream(connection, useStdin: true, outcome: outcome)
    }

    /// `-k` on a stream socket: each client echoed or copied to the shared stdout.
    func serveStreamClients() async throws {
        let listener = try listener(UnixStream.self)
        let policy = policy
        let echo = echo
        await serveConcurrently(listener, admit: { policy.admit($0) }, uid: { try? $0.credentials.uid }) { connection in
            if echo { await Self.echoStreamAsync(connection) } else { await Self.streamToSharedStdout(connection) }
        }
    }

    /// Echoes one stream connection until its EOF, then shuts down the write side.
    static func echoStream(_ connection: UnixStream) throws(UnixSocketError) {
        let buffer = Relay.allocate(1 << 18)
        defer { buffer.deallocate() }
        while true {
            let count = try connection.read(into: buffer)
            if count == 0 { break }
            try connection.write(all: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
        try? connection.shutdown(.write)
    }

    static func echoStreamAsync(_ connection: UnixStream) async {
        defer { connection.close() }
        await ChannelRelay.echo(connection)
    }

    static let stdoutLock = Mutex(())

    /// One `-k` client's bytes -> stdout, each read written whole (clients do not interleave mid-chunk).
    /// A stdout reader that went away ends the command (status 0).
    static func streamToSharedStdout(_ connection: UnixStream) async {
        defer { connection.close() }
        let error = await ChannelRelay.drain(connection) { chunk in
            try stdoutLock.withLock { _ throws(StdioRelay.Failure) in try StandardIO.write(chunk) }
        }
        if let error = error as? StdioRelay.Failure { Lifecycle.outcome?.finish(error) }
    }

    // MARK: seqpacket

    /// `-k` on a seqpacket socket.
    func serveSeqPacketClients() async throws {
        let listener = try listener(UnixSeqPacket.self)
        let policy = policy
        let echo = echo
        let lines = lines
        await serveConcurrently(listener, admit: { policy.admit($0) }, uid: { try? $0.credentials.uid }) { connection in
            await Self.serveSeqPacketClient(connection, echo: echo, lines: lines, verbose: policy.verbose)
        }
    }

    func serveSeqPacket(_ outcome: CommandOutcome) throws {
        let connection: UnixSeqPacket = try onePeer(UnixSeqPacket.self)
        if echo {
            do throws(UnixSocketError) {
                while true {
                    let bytes: [UInt8]
                    do throws(UnixSocketError) {
                        guard let received = try connection.receiveIgnoringDescriptors(verbose: policy.verbose)
                        else { break }
                        bytes = received
                    } catch  where MessageReceiver.isRecoverable(error) {
                        Lifecycle.diagnostic(error.description)
                        continue
                    }
                    try connection.send(bytes)
                }
                try? connection.shutdown(.write)
            } catch {
                guard error.code == .closed else { throw error }
            }
            return
        }
        try Relay.runSeqPacket(connection, useStdin: true, lines: lines, verbose: policy.verbose, outcome: outcome)
    }

    /// One `-k` seqpacket client: waits for each message without a buffer (an idle client costs none),
    /// then receives it at its size; descriptors that come with it are closed.
    static func serveSeqPacketClient(_ connection: UnixSeqPacket, echo: Bool, lines: Bool, verbose: Bool) async {
        defer { connection.close() }
        do {
            while true {
                let bytes: [UInt8]
                do {
                    guard let received = try await connection.receiveIgnoringDescriptors(verbose: verbose) else {
                        break
                    }
                    bytes = received
                } catch let error as UnixSocketError where MessageReceiver.isRecoverable(error) {
                    Lifecycle.diagnostic(error.description)
                    continue
                }
                if echo {
                    try await connection.send(bytes)
                } else {
                    try stdoutLock.withLock { _ throws(StdioRelay.Failure) in
                        try Relay.printMessage(bytes, lines: lines)
                    }
                }
            }
            try? connection.shutdown(.write)
        } catch let error as StdioRelay.Failure {
            Lifecycle.outcome?.finish(error)
        } catch {}
    }

    // MARK: datagram

    func serveDatagrams() throws {
        let socket = try Activated.datagram(activated: activated, address: address, mode: mode)
        if policy.needsCredentials { try socket.enableCredentialPassing() }
        while true {
            let message: UnixMessage
            do throws(UnixSocketError) {
                message = try socket.receiveIgnoringDescriptors(verbose: policy.verbose)
            } catch {
                if error.code == .closed { return }
                guard MessageReceiver.isRecoverable(error) else { throw error }
                Lifecycle.diagnostic(error.description)  // that datagram is lost; the next one is not
                continue
            }
            if policy.needsCredentials && !policy.admit(message.credentials) { continue }
            if echo {
                // An unbound sender cannot be answered: skip it.
                guard let sender = message.sender, !sender.isUnnamed else { continue }
                Self.echo(message.bytes, to: sender, on: socket, verbose: policy.verbose)
            } else {
                try Relay.printMessage(message.bytes, lines: lines)
            }
        }
    }

    /// How long an echo may wait for room in its sender's queue: one attempt, in effect. The library's
    /// unconnected send retries a full receiver (EAGAIN) only until its deadline, which has passed by the
    /// time the first attempt returns. So a sender that never reads costs the others nothing: once its
    /// queue is full, its echoes are dropped.
    static let echoPatience = Duration.nanoseconds(1)

    /// Sends one echo without waiting: a sender whose queue is full (it does not read) or that is gone
    /// loses that reply (said on stderr with -v), and the next datagram is served at once. (The kernel
    /// charges unread replies to this socket's send buffer: a sender that never reads pins at most
    /// `max_dgram_qlen` + 1 of them, which with large datagrams can fill it for everyone until it reads or
    /// exits. Nothing here can take them back; at least no one waits.)
    static func echo(_ bytes: [UInt8], to sender: UnixAddress, on socket: UnixDatagram, verbose: Bool) {
        do throws(UnixSocketError) {
            try socket.send(bytes, to: sender, timeout: echoPatience)
        } catch {
            if error.code == .closed { return }  // SIGINT/SIGTERM: the next receive ends the command
            guard verbose else { return }
            if error.code == .timedOut {
                // EAGAIN: the sender's queue is full, or this socket's send buffer is (the kernel charges
                // every reply to it until its receiver reads it).
                Lifecycle.diagnostic(
                    "dropped the echo to \(sender): no room (its receive queue, or this socket's send buffer, "
                        + "is full of replies not yet read)"
                )
            } else {
                Lifecycle.diagnostic("dropped the echo to \(sender): \(error.description)")
            }
        }
    }

    // MARK: accepting

    /// `-k`: accepts on the async API and serves each admitted client in a task of one task group (no
    /// thread per client) until SIGINT/SIGTERM closes the listener (the command ends then, without waiting
    /// for the clients).
    func serveConcurrently<C: UnixConnection>(
        _ listener: UnixListener<C>,
        admit: @escaping @Sendable (C) -> Bool,
        uid: @escaping @Sendable (C) -> UInt32?,
        serve: @escaping @Sendable (C) async -> Void
    ) async {
        let limits = limits
        let verbose = policy.verbose
        await withDiscardingTaskGroup { group in
            while true {
                let connection: C
                do {
                    connection = try await listener.accept()
                } catch let error as UnixSocketError where error.code == .closed {
                    return
                } catch {
                    // EMFILE and the like: the library pauses; anything else, say so and go on.
                    Lifecycle.diagnostic(Lifecycle.describe(error))
                    try? await Task.sleep(for: .milliseconds(50))
                    continue
                }
                guard admit(connection) else {
                    closeConnection(connection)
                    continue
                }
                let owner = uid(connection)
                guard limits.enter(uid: owner) else {
                    if verbose { Lifecycle.diagnostic("refused a client: connection limit reached") }
                    closeConnection(connection)
                    continue
                }
                group.addTask {
                    await serve(connection)
                    limits.leave(uid: owner)
                }
            }
        }
    }
}

/// Closes an accepted connection of either type.
func closeConnection<C>(_ connection: C) {
    if let stream = connection as? UnixStream { stream.close() }
    if let packet = connection as? UnixSeqPacket { packet.close() }
}

/// `listen -k`'s caps: clients in total and per user id (an unknown uid counts as one user of its own).
/// Guarded by an NSLock (pthread): `Synchronization.Mutex` hands a contended lock over in the kernel,
/// where ThreadSanitizer cannot see it.
final class ConnectionLimits: @unchecked Sendable {  // the counts are reached only under `lock`
    let total: Int
    let perUID: Int
    private let lock = NSLock()
    private var count = 0
    private var byUID: [UInt32?: Int] = [:]

    init(total: Int, perUID: Int) {
        self.total = total
        self.perUID = perUID
    }

    /// Takes a slot for a client of `uid`, or returns false when a cap is reached.
    func enter(uid: UInt32?) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if count >= total || byUID[uid, default: 0] >= perUID { return false }
        count += 1
        byUID[uid, default: 0] += 1
        return true
    }

    func leave(uid: UInt32?) {
        lock.lock()
        defer { lock.unlock() }
        count -= 1
        byUID[uid, default: 1] -= 1
        if byUID[uid] == 0 { byUID.removeValue(forKey: uid) }
    }
}
