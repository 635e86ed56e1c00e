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
            """)

    @Argument(help: "The path or @abstract-name to send to.", transform: parseAddress)
    var address: UnixAddress

    @Argument(help: "The messages, one per argument.")
    var messages: [String]

    @Option(name: .shortAndLong, help: "Socket type: dgram or seqpacket.")
    var type: SocketKind = .dgram

    func validate() throws {
        if type == .stream {
            throw ValidationError("send sends messages: use -t dgram or -t seqpacket (for a stream, use connect)")
        }
        if messages.isEmpty { throw ValidationError("give at least one MSG") }
        if type == .seqpacket && messages.contains(where: \.isEmpty) {
            throw ValidationError("an empty message cannot be sent on seqpacket (the peer would read it as end-of-stream)")
        }
    }

    func run() throws {
        let payloads = rawArgumentBytes(for: messages)
        let address = address, type = type
        runCommand {
            if type == .seqpacket {
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

/// The exact bytes of command-line arguments: Swift's `CommandLine.arguments` repairs invalid UTF-8, so
/// each parsed value is matched, in order, to the raw argv entry it came from.
func rawArgumentBytes(for values: [String]) -> [[UInt8]] {
    let raw: [[UInt8]] = (0..<Int(CommandLine.argc)).map { index in
        guard let pointer = CommandLine.unsafeArgv[index] else { return [] }
        var bytes: [UInt8] = []
        var cursor = pointer
        while cursor.pointee != 0 {
            bytes.append(UInt8(bitPattern: cursor.pointee))
            cursor += 1
        }
        return bytes
    }
    // Values are the trailing positional arguments: match from the end backwards.
    var result: [[UInt8]] = []
    var index = raw.count - 1
    for value in values.reversed() {
        var found: [UInt8]?
        while index > 0 {
            let candidate = raw[index]
            index -= 1
            if String(decoding: candidate, as: UTF8.self) == value {
                found = candidate
                break
            }
        }
        result.append(found ?? Array(value.utf8))
    }
    return result.reversed()
}
