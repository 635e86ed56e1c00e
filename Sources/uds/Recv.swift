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

    @Argument(help: "The path or @abstract-name to bind.", transform: parseAddress)
    var address: UnixAddress

    @Option(name: .shortAndLong, help: "Socket type: dgram or seqpacket.")
    var type: UnixSocketType = .datagram

    @Option(help: "Stop after this many messages.")
    var count: Int?

    @OptionGroup var permissions: ModeOption

    @Flag(name: .shortAndLong, help: "Say on stderr how many descriptors that came with a message were closed.")
    var verbose = false

    func validate() throws {
        if type == .stream {
            throw ValidationError("recv receives messages: use -t dgram or -t seqpacket (for a stream, use listen)")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        try permissions.check(address)
    }

    func run() async throws {
        let address = address
        let type = type
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
                let socket = try closingOnExit({ try UnixDatagram.bind(address, mode: mode) }) { $0.close() }
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
            let listener = try closingOnExit({ try UnixSeqPacketListener.bind(address, mode: mode) }) { $0.close() }
            while true {
                let connection: UnixSeqPacket
                do throws(UnixSocketError) {
                    connection = try listener.accept()
                } catch {
                    guard error.code == .closed else { throw error }
                    return
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
            }
        }
    }
}
