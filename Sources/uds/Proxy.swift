import ArgumentParser
import Synchronization
import SystemPackage
import UnixSockets

struct Proxy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Relay clients to a target, keeping descriptors, credentials and message boundaries.",
        discussion: """
            Binds LISTEN (safe socket-file rules: a live socket there is refused and left working, a \
            non-socket is left untouched) and, for each client, connects to TARGET and relays both ways \
            until both sides have ended: stream bytes with the descriptors (SCM_RIGHTS) that came with them \
            and half-close; seqpacket messages whole, zero-length ones included; datagrams through one \
            socket per sender, so that replies reach their sender only (closed after --idle seconds \
            without traffic). The client's credentials go on as its own where the kernel allows it \
            (root), otherwise the proxy's. A client whose target cannot be reached is closed at once with \
            one line on stderr; the proxy goes on serving. Runs until SIGINT/SIGTERM, then removes its \
            socket file.

            --dump traces every transfer on stderr: direction (> client to target, < target to client), \
            connection, sizes, a hex dump, each descriptor (its number here, what it refers to, its type \
            and access mode) and the credentials; --json makes that JSON Lines.

            Examples:
              uds proxy /tmp/tmux-proxy.sock /tmp/tmux-0/default     # tmux attach works through it
              uds proxy --dump /tmp/watch.sock /run/app.sock         # see what crosses, descriptors too
              uds proxy -t dgram --idle 10 @log-proxy @log
            """
    )

    @Argument(
        help: ArgumentHelp(
            "The path or @abstract-name to listen on (omitted when a socket was activated: LISTEN_FDS).",
            valueName: "listen"
        ),
        transform: parseAddress
    )
    var first: UnixAddress?

    @Argument(
        help: ArgumentHelp("The path or @abstract-name to connect to for each client.", valueName: "target"),
        transform: parseAddress
    )
    var second: UnixAddress?

    /// LISTEN (nil: the activated socket) and TARGET: a single address is the TARGET.
    private var endpoints: (listen: UnixAddress?, target: UnixAddress) {
        get throws {
            guard let first else { throw ValidationError("missing TARGET") }
            guard let second else { return (nil, first) }
            return (first, second)
        }
    }

    @Option(
        name: .shortAndLong,
        help: "Socket type: stream, seqpacket or dgram, both sides (default: the activated socket's, else stream)."
    )
    var type: UnixSocketType?

    @Flag(help: "Trace every transfer on stderr (hex dump, descriptors, credentials).")
    var dump = false

    @Flag(help: "With --dump: the trace as JSON Lines (one object per event).")
    var json = false

    @Option(help: "Datagrams: close a sender's association after this many seconds without traffic.")
    var idle: Double = 60

    @OptionGroup var permissions: ModeOption

    @OptionGroup var peers: PeerOptions

    func validate() throws {
        let (listen, target) = try endpoints
        _ = try Activated.pick(listen, what: "LISTEN")
        if let listen { try permissions.check(listen) }
        if json && !dump { throw ValidationError("--json applies to --dump's trace: add --dump") }
        if !(idle > 0) || idle > 1e9 { throw ValidationError("--idle takes a number of seconds above 0") }
        if listen == target { throw ValidationError("LISTEN and TARGET are the same address") }
    }

    func run() async throws {
        let (address, target) = try endpoints
        let activated = try Activated.pick(address, what: "LISTEN")
        let type = Activated.type(given: type, activated: activated, fallback: .stream)
        let mode = permissions.mode
        let policy = peers.policy
        let trace = dump ? ProxyTrace(json: json) : nil
        let idle = Duration.milliseconds(Int64(idle * 1000))
        let admit: (@Sendable (UnixCredentials?) -> Bool)? =
            policy.restricts ? { @Sendable credentials in policy.admit(credentials) } : nil
        try await Lifecycle.runAsync(endOnSignals: true, onReactor: true) { _ in
            let listen = activated?.address ?? address ?? .unnamed
            let context = ProxyContext(listen: listen, target: target, policy: policy, trace: trace)
            switch type {
            case .stream:
                let listener = try Activated.listener(
                    UnixStream.self,
                    activated: activated,
                    address: address,
                    mode: mode
                )
                try UnixRelay.passCredentials(on: listener)
                await context.serve(listener) {
                    await UnixRelay.relay(client: $0, target: $1, connection: $2, observer: $3)
                }
            case .seqPacket:
                let listener = try Activated.listener(
                    UnixSeqPacket.self,
                    activated: activated,
                    address: address,
                    mode: mode
                )
                try UnixRelay.passCredentials(on: listener)
                await context.serve(listener) {
                    await UnixRelay.relay(client: $0, target: $1, connection: $2, observer: $3)
                }
            case .datagram:
                let socket = try Activated.datagram(activated: activated, address: address, mode: mode)
                await UnixDatagramRelay.serve(
                    listener: socket,
                    target: target,
                    idle: idle,
                    admit: admit,
                    observer: trace?.observer,
                    events: { event in context.datagramEvent(event) }
                )
            }
        }
    }
}

/// What every connection of one proxy shares.
struct ProxyContext: Sendable {
    let listen: UnixAddress
    let target: UnixAddress
    let policy: PeerPolicy
    let trace: ProxyTrace?
    private let next = Counter()

    init(listen: UnixAddress, target: UnixAddress, policy: PeerPolicy, trace: ProxyTrace?) {
        self.listen = listen
        self.target = target
        self.policy = policy
        self.trace = trace
    }

    /// Accepts until the listener is closed (SIGINT/SIGTERM), one task per client.
    func serve<Connection: UnixConnection>(
        _ listener: UnixListener<Connection>,
        relay: @escaping @Sendable (Connection, Connection, UInt64, UnixRelay.Observer?) async -> UnixRelaySummary
    ) async {
        await withDiscardingTaskGroup { group in
            while true {
                let client: Connection
                do {
                    client = try await listener.accept()
                } catch let error as UnixSocketError where error.code == .closed {
                    return
                } catch {
                    Lifecycle.diagnostic(Lifecycle.describe(error))
                    try? await Task.sleep(for: .milliseconds(50))  // never spin on a persistent error
                    continue
                }
                let id = next.increment()
                group.addTask { await serveOne(client, id: id, relay: relay) }
            }
        }
    }

    private func serveOne<Connection: UnixConnection>(
        _ client: Connection,
        id: UInt64,
        relay: @Sendable (Connection, Connection, UInt64, UnixRelay.Observer?) async -> UnixRelaySummary
    ) async {
        defer { client.close() }
        let credentials = try? client.credentials
        guard policy.admit(credentials) || !policy.restricts else { return }
        do {
            try UnixRelay.passCredentials(on: client)
        } catch {
            Lifecycle.diagnostic("\(Lifecycle.describe(error)); closed client \(credentials?.description ?? "")")
            return
        }
        let server: Connection
        do {
            server = try await UnixRelay.connect(Connection.self, to: target, timeout: .seconds(10))
        } catch {
            let who = credentials.map { " (\($0))" } ?? ""
            Lifecycle.diagnostic("\(Lifecycle.describe(error)); closed client \(id)\(who)")
            trace?.error(connection: id, message: error.description)
            return
        }
        defer { server.close() }
        trace?.open(
            connection: id,
            client: credentials,
            listen: listen,
            target: target,
            targetPeer: try? server.credentials
        )
        let summary = await relay(client, server, id, trace?.observer)
        trace?.close(connection: id, summary: summary)
        if policy.verbose, let error = summary.error {
            Lifecycle.diagnostic("connection \(id) ended: \(error)")
        }
    }

    func datagramEvent(_ event: UnixDatagramRelayEvent) {
        switch event {
        case .opened(let association, let sender, let local, let credentials):
            if policy.verbose {
                Lifecycle.diagnostic(
                    "datagram sender \(sender.map { "\($0)" } ?? "(unbound)") \(credentials?.description ?? "")"
                )
            }
            trace?.openAssociation(association, sender: sender, local: local, credentials: credentials, target: target)
        case .closed(let association, _, let summary):
            trace?.close(connection: association, summary: summary)
        case .problem(let association, let sender, let message):
            let who = sender.map { " (from \($0))" } ?? ""
            Lifecycle.diagnostic(message + who)
            trace?.error(connection: association, message: message + who)
        }
    }
}

/// Connection numbers.
final class Counter: Sendable {
    private let value = Atomic<UInt64>(0)
    func increment() -> UInt64 { value.add(1, ordering: .relaxed).newValue }
}

/// `--dump`: the trace on stderr, one write per event so that concurrent connections never interleave
/// inside an event.
struct ProxyTrace: Sendable {
    let json: Bool

    var observer: UnixRelay.Observer {
        let json = json
        return { transfer in
            ProxyTrace.write(json ? ProxyTrace.jsonTransfer(transfer) : ProxyTrace.textTransfer(transfer))
        }
    }

    func open(
        connection: UInt64,
        client: UnixCredentials?,
        listen: UnixAddress,
        target: UnixAddress,
        targetPeer: UnixCredentials?
    ) {
        if json {
            Self.write(
                "{\"event\":\"open\",\"connection\":\(connection),\"client\":\(Self.jsonCredentials(client)),"
                    + "\"listen\":\(Self.jsonString("\(listen)")),\"target\":\(Self.jsonString("\(target)")),"
                    + "\"targetPeer\":\(Self.jsonCredentials(targetPeer)),"
                    + "\"proxy\":\(Self.jsonCredentials(UnixCredentials.current))}\n"
            )
        } else {
            Self.write(
                "[\(connection)] open: client \(Self.text(client)) on \(listen); target \(target), its peer "
                    + "\(Self.text(targetPeer)); the target's SO_PEERCRED names the proxy "
                    + "(\(UnixCredentials.current))\n"
            )
        }
    }

    func openAssociation(
        _ association: UInt64,
        sender: UnixAddress?,
        local: UnixAddress?,
        credentials: UnixCredentials?,
        target: UnixAddress
    ) {
        let from = sender.map { "\($0)" } ?? "(unbound)"
        if json {
            Self.write(
                "{\"event\":\"open\",\"connection\":\(association),\"client\":\(Self.jsonCredentials(credentials)),"
                    + "\"sender\":\(sender.map { Self.jsonString("\($0)") } ?? "null"),"
                    + "\"via\":\(local.map { Self.jsonString("\($0)") } ?? "null"),"
                    + "\"target\":\(Self.jsonString("\(target)")),\"replies\":\(sender != nil)}\n"
            )
        } else {
            let replies = sender == nil ? "; the sender is unbound: no reply can reach it" : ""
            Self.write(
                "[\(association)] open: datagrams from \(from), client \(Self.text(credentials)), to \(target) via "
                    + "\(local.map { "\($0)" } ?? "?")\(replies)\n"
            )
        }
    }

    func close(connection: UInt64, summary: UnixRelaySummary) {
        if json {
            Self.write(
                "{\"event\":\"close\",\"connection\":\(connection),\"bytesToTarget\":\(summary.bytesToTarget),"
                    + "\"bytesToClient\":\(summary.bytesToClient),"
                    + "\"descriptorsToTarget\":\(summary.descriptorsToTarget),"
                    + "\"descriptorsToClient\":\(summary.descriptorsToClient),"
                    + "\"error\":\(summary.error.map { Self.jsonString($0.description) } ?? "null")}\n"
            )
        } else {
            let ending = summary.error.map { "; ended by \($0)" } ?? ""
            Self.write(
                "[\(connection)] closed: > \(summary.bytesToTarget) bytes in \(summary.transfersToTarget) transfers, "
                    + "\(summary.descriptorsToTarget) descriptors; < \(summary.bytesToClient) bytes in "
                    + "\(summary.transfersToClient) transfers, \(summary.descriptorsToClient) descriptors\(ending)\n"
            )
        }
    }

    func error(connection: UInt64?, message: String) {
        if json {
            Self.write(
                "{\"event\":\"error\",\"connection\":\(connection.map { "\($0)" } ?? "null"),"
                    + "\"message\":\(Self.jsonString(message))}\n"
            )
        } else {
            Self.write("[\(connection.map { "\($0)" } ?? "-")] error: \(message)\n")
        }
    }

    // MARK: Formatting

    private static let lock = Mutex(())

    static func write(_ text: String) {
        let bytes = Array(text.utf8)
        lock.withLock { _ in
            _ = try? bytes.withUnsafeBytes { try FileDescriptor.standardError.writeAll($0) }
        }
    }

    static func text(_ credentials: UnixCredentials?) -> String {
        credentials?.description ?? "pid=unknown uid=unknown gid=unknown"
    }

    static func textTransfer(_ transfer: borrowing UnixRelayTransfer) -> String {
        let count = transfer.descriptors.count
        var out = "[\(transfer.connection)] \(transfer.direction.rawValue) \(transfer.bytes.count) bytes, "
        out += "\(count) descriptor\(count == 1 ? "" : "s")"
        if let sender = transfer.sender { out += ", from \(sender)" }
        out += "\n"
        out += hexDump(transfer.bytes)
        for descriptor in transfer.descriptors {
            out += "  fd \(DescriptorInfo(of: descriptor))\n"
        }
        if let credentials = transfer.credentials {
            let whose =
                transfer.forwardedCredentials == .sender
                ? "passed on as the sender's own" : "the kernel refused them: the proxy's own went on"
            out += "  credentials \(credentials), \(whose)\n"
        }
        return out
    }

    /// `hexdump -C`: offset, 16 bytes in two groups of 8, the printable ASCII between bars.
    static func hexDump(_ bytes: UnsafeRawBufferPointer) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count / 16 * 79 + 80)
        var offset = 0
        while offset < bytes.count {
            out += Array("  ".utf8)
            for shift in stride(from: 28, through: 0, by: -4) { out.append(digits[(offset >> shift) & 0xf]) }
            out += [0x20, 0x20]
            let line = min(16, bytes.count - offset)
            for index in 0..<16 {
                if index < line {
                    let byte = bytes[offset + index]
                    out += [digits[Int(byte >> 4)], digits[Int(byte & 0xf)], 0x20]
                } else {
                    out += [0x20, 0x20, 0x20]
                }
                if index == 7 { out.append(0x20) }
            }
            out += Array(" |".utf8)
            for index in 0..<line {
                let byte = bytes[offset + index]
                out.append(byte >= 0x20 && byte < 0x7f ? byte : UInt8(ascii: "."))
            }
            out += Array("|\n".utf8)
            offset += 16
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func jsonTransfer(_ transfer: borrowing UnixRelayTransfer) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var hex: [UInt8] = []
        hex.reserveCapacity(transfer.bytes.count * 2)
        for byte in transfer.bytes { hex += [digits[Int(byte >> 4)], digits[Int(byte & 0xf)]] }
        let descriptors = transfer.descriptors.map { descriptor -> String in
            let info = DescriptorInfo(of: descriptor)
            return "{\"fd\":\(info.descriptor),\"path\":\(info.target.map(jsonString) ?? "null"),"
                + "\"type\":\(info.type.map(jsonString) ?? "null"),\"access\":\(info.access.map(jsonString) ?? "null")}"
        }
        var out =
            "{\"event\":\"transfer\",\"connection\":\(transfer.connection),"
            + "\"direction\":\"\(transfer.direction.rawValue)\",\"bytes\":\(transfer.bytes.count),"
            + "\"hex\":\"\(String(decoding: hex, as: UTF8.self))\",\"descriptors\":[\(descriptors.joined(separator: ","))]"
        if let sender = transfer.sender { out += ",\"sender\":\(jsonString("\(sender)"))" }
        if let credentials = transfer.credentials {
            let whose =
                transfer.forwardedCredentials == .sender
                ? (transfer.direction == .toTarget ? "client" : "target") : "proxy"
            out += ",\"credentials\":{\(jsonFields(credentials)),\"forwarded\":\"\(whose)\"}"
        }
        return out + "}\n"
    }

    static func jsonCredentials(_ credentials: UnixCredentials?) -> String {
        guard let credentials else { return "null" }
        return "{\(jsonFields(credentials))}"
    }

    static func jsonFields(_ credentials: UnixCredentials) -> String {
        func number<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "null" }
        return
            "\"pid\":\(number(credentials.pid)),\"uid\":\(number(credentials.uid)),\"gid\":\(number(credentials.gid))"
    }

    /// A JSON string literal (quotes, backslashes and control characters escaped).
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
