import ArgumentParser
import SystemPackage
import UnixSockets

struct Bridge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Relay connections between a Unix socket and TCP, both ways with half-close.",
        discussion: """
            Accepts connections on LISTEN and relays each, both ways with half-close, to a new connection \
            to TARGET. An endpoint is unix:ADDRESS (or a bare ADDRESS) or tcp:HOST:PORT (the host is always \
            explicit; [::1] for IPv6). Runs until SIGINT/SIGTERM; a Unix socket file it bound is removed.

            Examples:
              uds bridge tcp:0.0.0.0:8080 /run/app.sock      # reach a local service from another machine
              uds bridge /tmp/db.sock tcp:db.internal:5432   # and the reverse
            """
    )

    @Argument(
        help: ArgumentHelp(
            "Where to accept: unix:ADDRESS, ADDRESS or tcp:HOST:PORT (omitted when a Unix socket was activated).",
            valueName: "listen"
        ),
        transform: BridgeEndpoint.init(parsing:)
    )
    var first: BridgeEndpoint?

    @Argument(
        help: ArgumentHelp(
            "Where to connect for each client: unix:ADDRESS, ADDRESS or tcp:HOST:PORT.",
            valueName: "target"
        ),
        transform: BridgeEndpoint.init(parsing:)
    )
    var second: BridgeEndpoint?

    /// LISTEN (nil: the activated Unix socket) and TARGET: a single endpoint is the TARGET.
    private var endpoints: (listen: BridgeEndpoint?, target: BridgeEndpoint) {
        get throws {
            guard let first else { throw ValidationError("missing TARGET") }
            guard let second else { return (nil, first) }
            return (first, second)
        }
    }

    /// The activated Unix listener, when LISTEN is a Unix address or omitted.
    private func activated(_ listen: BridgeEndpoint?) throws -> ActivatedSocket? {
        switch listen {
        case .tcp: nil
        case .unix(let address): try Activated.pick(address, what: "LISTEN")
        case nil: try Activated.pick(nil, what: "LISTEN")
        }
    }

    @OptionGroup var permissions: ModeOption

    @Flag(name: .shortAndLong, help: "One stderr line per relayed connection.")
    var verbose = false

    func validate() throws {
        let (listen, _) = try endpoints
        _ = try activated(listen)
        if permissions.mode != nil {
            guard case .unix(let address) = listen, address.isPath else {
                throw ValidationError("--mode applies to a Unix socket path to listen on")
            }
        }
    }

    func run() async throws {
        let (listen, target) = try endpoints
        let activated = try activated(listen)
        let mode = permissions.mode
        let verbose = verbose
        try await Lifecycle.runAsync(endOnSignals: true, onReactor: true) { _ in
            let acceptor: BridgeAcceptor
            switch listen {
            case .unix(let address):
                acceptor = .unix(
                    try Activated.listener(UnixStream.self, activated: activated, address: address, mode: mode)
                )
            case nil:
                acceptor = .unix(
                    try Activated.listener(UnixStream.self, activated: activated, address: nil, mode: mode)
                )
            case .tcp(let endpoint):
                let listener = try closingOnExit({ try TCPSocket.listen(on: endpoint) }) { $0.close() }
                if endpoint.port == 0, let port = listener.localPort {
                    Lifecycle.diagnostic("listening on \(TCPEndpoint(host: endpoint.host, port: port))")
                }
                acceptor = .tcp(listener)
            }
            await BridgeRelay.serve(acceptor, target: target, verbose: verbose)
        }
    }
}

/// `unix:ADDRESS`, a bare ADDRESS, or `tcp:HOST:PORT`.
enum BridgeEndpoint: Sendable {
    case unix(UnixAddress)
    case tcp(TCPEndpoint)

    /// Parses the argument's exact bytes: a Unix path need not be UTF-8.
    init(parsing text: String) throws {
        let bytes = RawArguments.bytes(of: text)
        if bytes.starts(with: Array("tcp:".utf8)) {
            self = .tcp(try TCPEndpoint(parsing: String(decoding: bytes.dropFirst(4), as: UTF8.self)))
        } else if bytes.starts(with: Array("unix:".utf8)) {
            self = .unix(try address(fromArgument: Array(bytes.dropFirst(5))))
        } else {
            self = .unix(try address(fromArgument: bytes))
        }
    }
}

/// Where the bridge accepts.
enum BridgeAcceptor: Sendable {
    case unix(UnixStreamListener)
    case tcp(TCPSocket)

    /// One connection, without blocking a thread (out of descriptors, the library pauses and retries).
    func accept() async throws -> any RelayChannel {
        switch self {
        case .unix(let listener): try await listener.accept()
        case .tcp(let listener): try await listener.accept()
        }
    }
}

/// The bridge's relays, on the library's relay engine (``ChannelRelay``): one task per connection in one
/// task group, no thread per connection (threads are the process's few: the cooperative pool, the reactor).
/// A connection that cannot be served (the target refuses, is missing, or descriptors ran out) is closed at
/// once with one stderr line, never left waiting.
enum BridgeRelay {
    /// Accepts and relays until SIGINT/SIGTERM closes the listener (the command ends then, without waiting
    /// for the relays).
    static func serve(_ acceptor: BridgeAcceptor, target: BridgeEndpoint, verbose: Bool) async {
        await withDiscardingTaskGroup { group in
            while true {
                let client: any RelayChannel
                do {
                    client = try await acceptor.accept()
                } catch let error as UnixSocketError where error.code == .closed {
                    return  // SIGINT/SIGTERM closed the listener
                } catch {
                    Lifecycle.diagnostic(Lifecycle.describe(error))
                    try? await Task.sleep(for: .milliseconds(50))  // never spin on a persistent error
                    continue
                }
                group.addTask { await relay(client, to: target, verbose: verbose) }
            }
        }
    }

    static func connect(to target: BridgeEndpoint) async throws -> any RelayChannel {
        switch target {
        case .unix(let address): try await UnixStream.connect(to: address, timeout: .seconds(10))
        case .tcp(let endpoint): try await TCPSocket.connect(to: endpoint, timeout: .seconds(10))
        }
    }

    /// Relays one client: connects to the target, then both directions at once (the library's engine);
    /// both sockets are closed at the end.
    static func relay(_ client: any RelayChannel, to target: BridgeEndpoint, verbose: Bool) async {
        let server: any RelayChannel
        do {
            server = try await connect(to: target)
        } catch {
            Lifecycle.diagnostic("\(Lifecycle.describe(error)); closed \(client.relayName)")
            client.relayClose()
            return
        }
        if verbose { Lifecycle.diagnostic("relaying \(client.relayName) <-> \(server.relayName)") }
        await ChannelRelay.relay(client, server)
        client.relayClose()
        server.relayClose()
    }
}
