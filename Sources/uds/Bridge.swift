import ArgumentParser
import Foundation
import Synchronization
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
            let accept: () throws(UnixSocketError) -> any ByteChannel
            switch listen {
            case .unix(let address):
                let listener = try UnixStreamListener.bind(address, mode: mode)
                closeOnExit { listener.close() }
                accept = { () throws(UnixSocketError) -> any ByteChannel in try listener.accept() }
            case .tcp(let endpoint):
                let listener = try TCPSocket.listen(on: endpoint)
                Lifecycle.onExit { listener.close() }
                if endpoint.port == 0, let port = listener.localPort {
                    Lifecycle.diagnostic("listening on \(TCPEndpoint(host: endpoint.host, port: port))")
                }
                accept = { () throws(UnixSocketError) -> any ByteChannel in try listener.accept() }
            }
            while true {
                let client: any ByteChannel
                do throws(UnixSocketError) {
                    client = try accept()
                } catch {
                    if error.code == .closed { Lifecycle.exit(0) }  // SIGINT/SIGTERM closed the listener
                    guard error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem else { throw error }
                    Lifecycle.diagnostic(error.description)
                    Thread.sleep(forTimeInterval: 0.1)  // out of descriptors: pause, never spin
                    continue
                }
                Lifecycle.thread {
                    let server: any ByteChannel
                    do throws(UnixSocketError) {
                        switch target {
                        case .unix(let address): server = try UnixStream.connect(to: address, timeout: .seconds(10))
                        case .tcp(let endpoint): server = try TCPSocket.connect(to: endpoint, timeout: .seconds(10))
                        }
                    } catch {
                        Lifecycle.diagnostic(error.description)
                        client.closeChannel()
                        return
                    }
                    if verbose { Lifecycle.diagnostic("relaying \(client.name) <-> \(server.name)") }
                    BridgeRelay.run(client, server)
                }
            }
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

/// A connected byte stream the bridge relays: a Unix stream or a TCP connection.
protocol ByteChannel: AnyObject, Sendable {
    func readSome(_ buffer: UnsafeMutableRawBufferPointer) throws(UnixSocketError) -> Int
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws(UnixSocketError)
    func shutdownWrite()
    func closeChannel()
    var name: String { get }
}

extension UnixStream: ByteChannel {
    func readSome(_ buffer: UnsafeMutableRawBufferPointer) throws(UnixSocketError) -> Int { try read(into: buffer) }
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws(UnixSocketError) { try write(all: buffer) }
    func shutdownWrite() { try? shutdown(.write) }
    func closeChannel() { close() }
    var name: String { (try? peer).map { $0.isUnnamed ? "unix peer" : "\($0)" } ?? "unix peer" }
}

extension TCPSocket: ByteChannel {
    func readSome(_ buffer: UnsafeMutableRawBufferPointer) throws(UnixSocketError) -> Int { try read(into: buffer) }
    func writeAll(_ buffer: UnsafeRawBufferPointer) throws(UnixSocketError) { try write(all: buffer) }
    func shutdownWrite() { try? shutdown(.write) }
    func closeChannel() { close() }
    var name: String { endpoint.description }
}

/// Relays one connection pair: one thread per direction; EOF on one side shuts down the other's write
/// side (half-close); an error ends both directions; both sockets are closed when both directions ended.
enum BridgeRelay {
    static func run(_ a: any ByteChannel, _ b: any ByteChannel) {
        let remaining = Countdown()
        let finish: @Sendable () -> Void = {
            if remaining.left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
                a.closeChannel()
                b.closeChannel()
            }
        }
        Lifecycle.thread {
            pump(from: b, to: a)
            finish()
        }
        pump(from: a, to: b)
        finish()
    }

    static func pump(from source: any ByteChannel, to destination: any ByteChannel) {
        let buffer = Relay.allocate(1 << 18)
        defer { buffer.deallocate() }
        do throws(UnixSocketError) {
            while true {
                let count = try source.readSome(buffer)
                if count == 0 { break }
                try destination.writeAll(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
            destination.shutdownWrite()
        } catch {
            // A reset or a vanished peer on either side ends the whole connection.
            source.closeChannel()
            destination.closeChannel()
        }
    }
}

/// Two directions of one relayed connection; the last to end closes both sockets.
final class Countdown: Sendable {
    let left = Atomic<Int>(2)
}
