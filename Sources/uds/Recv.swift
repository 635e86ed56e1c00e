import ArgumentParser
import SystemPackage
import UnixSockets

struct Recv: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bind and print each received message followed by a newline (dgram by default).",
        discussion: """
            Runs until --count messages arrived, or SIGINT/SIGTERM; the socket file is removed on exit. With \
            -t seqpacket it accepts peers one after another and prints their messages. Descriptors a peer \
            attaches to a message are closed (-v says how many); a message that cannot be received whole (too \
            large, or its descriptors cut short) is reported on stderr and skipped.

            Examples:
              uds recv @log
              uds recv --count 1 /tmp/reply.sock
            """
    )

    @Argument(
        help: "The path or @abstract-name to bind (optional when a socket was activated: LISTEN_FDS).",
        transform: parseAddress
    )
    var address: UnixAddress?

    @Option(
        name: .shortAndLong,
        help: "Socket type: dgram or seqpacket (default: the activated socket's type, else dgram)."
    )
    var type: UnixSocketType?

    @Option(help: "Stop after this many messages.")
    var count: Int?

    @OptionGroup var permissions: ModeOption

    @Flag(name: .shortAndLong, help: "Say on stderr how many descriptors that came with a message were closed.")
    var verbose = false

    func validate() throws {
        let activated = try Activated.pick(address)
        if Activated.type(given: type, activated: activated, fallback: .datagram) == .stream {
            throw ValidationError("recv receives messages: use -t dgram or -t seqpacket (for a stream, use listen)")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let address { try permissions.check(address) }
    }

    func run() async throws {
        let address = address
        let activated = try Activated.pick(address)
        let type = Activated.type(given: type, activated: activated, fallback: .datagram)
        let limit = count ?? Int.max
        let mode = permissions.mode
        let verbose = verbose
        try await Lifecycle.run(endOnSignals: true) { _ in
            var received = 0
            /// Prints one message; true once --count messages arrived.
            func deliver(_ bytes: [UInt8]) throws(StdioRelay.Failure) -> Bool {
                try Relay.printMessage(bytes, lines: true)
                received += 1
                return received >= limit
            }
            if type == .datagram {
                let socket = try Activated.datagram(activated: activated, address: address, mode: mode)
                while true {
                    let bytes: [UInt8]
                    do throws(UnixSocketError) {
                        bytes = try socket.receiveIgnoringDescriptors(verbose: verbose).bytes
                    } catch {
                        if error.code == .closed { return }
                        guard MessageReceiver.isRecoverable(error) else { throw error }
                        Lifecycle.diagnostic(error.description)  // that message is lost; the next one is not
                        continue
                    }
                    if try deliver(bytes) { return }
                }
            }
            // An activated Accept=yes connection is the one peer; else peers one after another.
            let one = try Activated.connection(UnixSeqPacket.self, activated: activated)
            let listener =
                one == nil
                ? try Activated.listener(UnixSeqPacket.self, activated: activated, address: address, mode: mode) : nil
            while true {
                let connection: UnixSeqPacket
                if let one {
                    connection = one
                } else {
                    do throws(UnixSocketError) {
                        connection = try listener!.accept()
                    } catch {
                        guard error.code == .closed else { throw error }
                        return
                    }
                }
                defer { connection.close() }
                while true {
                    let bytes: [UInt8]
                    do throws(UnixSocketError) {
                        guard let received = try connection.receiveIgnoringDescriptors(verbose: verbose) else { break }
                        bytes = received
                    } catch {
                        if error.code == .closed { return }
                        Lifecycle.diagnostic(error.description)
                        if MessageReceiver.isRecoverable(error) { continue }
                        break  // this peer failed; serve the next one
                    }
                    if try deliver(bytes) { return }
                }
                if one != nil { return }  // its peer is done: so are we
            }
        }
    }
}
