import ArgumentParser
import UnixSockets

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send each MSG as one message (dgram by default, or -t seqpacket).",
        discussion: """
            Each argument is one message, exactly the argument's bytes (no newline added). An empty message \
            is an empty datagram; on seqpacket it is refused (it would read like end-of-stream).

            Examples:
              uds send @log 'first message' 'second message'
              uds send -t seqpacket /tmp/jobs.sock job-1 job-2
            """
    )

    @Argument(help: "The path or @abstract-name to send to.", transform: parseAddress)
    var address: UnixAddress

    @Argument(help: "The messages, one per argument.")
    var messages: [String]

    @Option(name: .shortAndLong, help: "Socket type: dgram or seqpacket.")
    var type: UnixSocketType = .datagram

    func validate() throws {
        if type == .stream {
            throw ValidationError("send sends messages: use -t dgram or -t seqpacket (for a stream, use connect)")
        }
        if messages.isEmpty { throw ValidationError("give at least one MSG") }
        if type == .seqPacket && messages.contains(where: \.isEmpty) {
            throw ValidationError(
                "an empty message cannot be sent on seqpacket (the peer would read it as end-of-stream)"
            )
        }
    }

    func run() throws {
        let payloads = rawArgumentBytes(for: messages)
        let address = address
        let type = type
        try runCommand {
            if type == .seqPacket {
                let connection = try UnixSeqPacket.connect(to: address)
                defer { connection.close() }
                for payload in payloads { try connection.send(payload) }
            } else {
                let socket = try UnixDatagram.unbound()
                defer { socket.close() }
                for payload in payloads { try socket.send(payload, to: address) }
            }
        }
    }
}

/// The exact bytes of command-line argument values (see ``RawArguments``).
func rawArgumentBytes(for values: [String]) -> [[UInt8]] {
    values.map(RawArguments.bytes(of:))
}
