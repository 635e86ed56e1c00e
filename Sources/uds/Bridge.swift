import ArgumentParser
import SystemPackage
import UnixSockets

struct Bridge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Relay connections between a Unix socket and TCP, both ways with half-close.",
        discussion: """
            Accepts connections on LISTEN and relays each, both ways with half-close, to a new connection \
            to TARGET. An endpoint is unix:ADDRESS (or a bare ADDRESS) or tcp:HOST:PORT (the host is always \
            explicit; [::1] for IPv6). Runs until SIGINT/SIGTERM; a Unix socket file it bound is removed.

            Examples:
              uds bridge tcp:0.0.0.0:8080 /run/app.sock      # reach a local service from another machine
              uds bridge /tmp/db.sock tcp:db.internal:5432   # and the reverse
            """)

    @Argument(help: "Where to accept: unix:ADDRESS, ADDRESS or tcp:HOST:PORT.", transform: BridgeEndpoint.init(parsing:))
    var listen: BridgeEndpoint

    @Argument(help: "Where to connect for each client: unix:ADDRESS, ADDRESS or tcp:HOST:PORT.", transform: BridgeEndpoint.init(parsing:))
    var target: BridgeEndpoint

    @Option(help: "The Unix socket file's exact permission bits, in octal (0 to 777), whatever the umask.", transform: parseMode)
    var mode: UInt32?

    @Flag(name: .shortAndLong, help: "One stderr line per relayed connection.")
    var verbose = false

    func validate() throws {
        if mode != nil {
            guard case .unix(let address) = listen, address.isPath else {
                throw ValidationError("--mode applies to a Unix socket path to listen on")
            }
        }
    }

    func run() throws {
        Lifecycle.handleTerminationSignals()
        let listen = listen, target = target, mode = mode, verbose = verbose
        runCommand {
            let acceptor: BridgeAcceptor
            switch listen {
            case .unix(let address):
                let listener = try closingOnExit({ try UnixStreamListener.bind(address, mode: mode) }) { $0.close() }
                acceptor = .unix(listener)
            case .tcp(let endpoint):
                let listener = try TCPSocket.listen(on: endpoint)
                Lifecycle.onExit { listener.close() }
                if endpoint.port == 0, let port = listener.localPort {
                    Lifecycle.diagnostic("listening on \(TCPEndpoint(host: endpoint.host, port: port))")
                }
                acceptor = .tcp(listener)
            }
            BridgeRelay.serve(acceptor, target: target, verbose: verbose)
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

/// A connected byte stream the bridge relays: a Unix stream or a TCP connection, read and written with the
/// async API (a waiting connection holds no thread).
protocol ByteChannel: AnyObject, Sendable {
    func readSome(_ buffer: UnsafeMutableRawBufferPointer) async throws -> Int
    func writeAll(_ buffer: UnsafeRawBufferPointer) async throws
    func shutdownWrite()
    func closeChannel()
    var name: String { get }
}

extension UnixStream: ByteChannel {
    func readSome(_ buffer: UnsafeMutableRawBufferPointer) async throws -> Int { try await read(into: buffer) }
    func writeAll(_ buffer: UnsafeRawBufferPointer) async throws { try await write(all: buffer) }
    func shutdownWrite() { try? shutdown(.write) }
    func closeChannel() { close() }
    var name: String { (try? peer).map { $0.isUnnamed ? "unix peer" : "\($0)" } ?? "unix peer" }
}

extension TCPSocket: ByteChannel {
    func readSome(_ buffer: UnsafeMutableRawBufferPointer) async throws -> Int { try await read(into: buffer) }
    func writeAll(_ buffer: UnsafeRawBufferPointer) async throws { try await write(all: buffer) }
    func shutdownWrite() { try? shutdown(.write) }
    func closeChannel() { close() }
    var name: String { endpoint.description }
}

/// Where the bridge accepts.
enum BridgeAcceptor: Sendable {
    case unix(UnixStreamListener)
    case tcp(TCPSocket)

    /// One connection, without blocking a thread (out of descriptors, the library pauses and retries).
    func accept() async throws -> any ByteChannel {
        switch self {
        case .unix(let listener): try await listener.accept()
        case .tcp(let listener): try await listener.accept()
        }
    }
}

/// The bridge's relays, all on the async API: one task per connection in one task group, no thread per
/// connection (threads are the process's few: the cooperative pool, the reactor, the signal thread).
/// A connection that cannot be served (the target refuses, is missing, or descriptors ran out) is closed at
/// once with one stderr line, never left waiting.
enum BridgeRelay {
    /// Bytes per read, per direction of each connection.
    static let chunk = 1 << 16

    /// Accepts and relays until SIGINT/SIGTERM closes the listener.
    static func serve(_ acceptor: BridgeAcceptor, target: BridgeEndpoint, verbose: Bool) -> Never {
        Task {
            await withDiscardingTaskGroup { group in
                while true {
                    let client: any ByteChannel
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
            Lifecycle.exit(0)
        }
        Lifecycle.parkForever()
    }

    static func connect(to target: BridgeEndpoint) async throws -> any ByteChannel {
        switch target {
        case .unix(let address): try await UnixStream.connect(to: address, timeout: .seconds(10))
        case .tcp(let endpoint): try await TCPSocket.connect(to: endpoint, timeout: .seconds(10))
        }
    }

    /// Relays one client: connects to the target, then both directions at once; EOF on one side shuts down
    /// the other's write side (half-close); an error ends both; both sockets are closed at the end.
    static func relay(_ client: any ByteChannel, to target: BridgeEndpoint, verbose: Bool) async {
        let server: any ByteChannel
        do {
            server = try await connect(to: target)
        } catch {
            Lifecycle.diagnostic("\(Lifecycle.describe(error)); closed \(client.name)")
            client.closeChannel()
            return
        }
        if verbose { Lifecycle.diagnostic("relaying \(client.name) <-> \(server.name)") }
        await withDiscardingTaskGroup { group in
            group.addTask { await pump(from: server, to: client) }
            await pump(from: client, to: server)
        }
        client.closeChannel()
        server.closeChannel()
    }

    static func pump(from source: any ByteChannel, to destination: any ByteChannel) async {
        let buffer = Relay.allocate(chunk)
        defer { buffer.deallocate() }
        do {
            while true {
                let count = try await source.readSome(buffer)
                if count == 0 { break }
                try await destination.writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
            destination.shutdownWrite()
        } catch {
            // A reset or a vanished peer on either side ends the whole connection: closing both wakes the
            // other direction.
            source.closeChannel()
            destination.closeChannel()
        }
    }
}
