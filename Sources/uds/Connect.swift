import ArgumentParser
import Foundation
import Synchronization
import UnixSockets

struct Connect: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connect like nc -U: stdin -> socket and socket -> stdout at the same time.",
        discussion: """
            On stdin EOF the write side is shut down and reading goes on until the peer closes; it exits 0 \
            once the peer's EOF has arrived and everything received is written out, even if stdin is still \
            open. With -t dgram it binds an autobound address so replies come back, sends each stdin line \
            (--lines) or read chunk as one datagram, and after stdin EOF prints replies until --wait seconds \
            pass without one. For stream and seqpacket --wait bounds the connect (a full backlog).

            Examples:
              uds connect /tmp/app.sock < request.bin > reply.bin
              printf 'ping\\n' | uds connect -t dgram --lines @echo
            """
    )

    @Argument(help: "The path or @abstract-name to connect to.", transform: parseAddress)
    var address: UnixAddress

    @Option(name: .shortAndLong, help: "Socket type: stream, seqpacket or dgram.")
    var type: UnixSocketType = .stream

    @Flag(help: "Messages: each stdin line is one message; each received message is printed with a newline.")
    var lines = false

    @Option(
        name: .shortAndLong,
        help: ArgumentHelp(
            "dgram: seconds to wait for replies after stdin EOF (default 1); stream, seqpacket: bound on the connect.",
            valueName: "seconds"
        )
    )
    var wait: Double?

    @Flag(name: .shortAndLong, help: "Say on stderr how many descriptors that came with a message were closed.")
    var verbose = false

    func validate() throws {
        if let wait, !(wait >= 0 && wait < 1e9) { throw ValidationError("--wait takes a number of seconds >= 0") }
    }

    func run() async throws {
        let address = address
        let type = type
        let lines = lines
        let wait = wait
        let verbose = verbose
        try await Lifecycle.run { outcome in
            let bound = wait.map { Duration.milliseconds(max(Int64($0 * 1000), 1)) }
            switch type {
            case .stream:
                let stream = try UnixStream.connect(to: address, timeout: bound)
                try Relay.runStream(stream, useStdin: true, outcome: outcome)
            case .seqPacket:
                let connection = try UnixSeqPacket.connect(to: address, timeout: bound)
                try Relay.runSeqPacket(connection, useStdin: true, lines: lines, verbose: verbose, outcome: outcome)
            case .datagram:
                try DatagramClient(address: address, lines: lines, wait: wait ?? 1, verbose: verbose).run(outcome)
            }
        }
    }
}

/// `connect -t dgram`: stdin -> datagrams, replies -> stdout until `wait` seconds pass without one after EOF.
struct DatagramClient {
    let address: UnixAddress
    let lines: Bool
    let wait: Double
    let verbose: Bool

    /// When stdin ended (nil while it is open) and when the last reply arrived.
    final class Progress: Sendable {
        let state = Mutex<(stdinEnded: ContinuousClock.Instant?, lastReply: ContinuousClock.Instant?)>((nil, nil))
    }

    func run(_ outcome: CommandOutcome) throws {
        let socket = try UnixDatagram.bind(.unnamed)
        try socket.connect(to: address)
        let progress = Progress()
        let lines = lines
        Thread.detachNewThread {  // stdin is blocking and shared: its own thread, one per command
            do {
                try StdioRelay.inputToMessages(StandardIO.input, lines: lines, skipEmpty: false) { bytes in
                    try socket.send(bytes)
                }
            } catch {
                outcome.finish(error)
            }
            progress.state.withLock { $0.stdinEnded = .now }
        }
        let patience = Duration.milliseconds(Int64(wait * 1000))
        do {
            try Relay.messagesToStdout(lines: lines) { () throws(UnixSocketError) -> [UInt8]? in
                while true {
                    let (ended, last) = progress.state.withLock { $0 }
                    var timeout = Duration.milliseconds(100)  // stdin still open: look again soon
                    if let ended {
                        let since = max(ended, last ?? ended)
                        let left = patience - (ContinuousClock.now - since)
                        if left <= .zero { return nil }
                        timeout = min(left, timeout)
                    }
                    do throws(UnixSocketError) {
                        let message = try socket.receiveIgnoringDescriptors(verbose: verbose, timeout: timeout)
                        progress.state.withLock { $0.lastReply = .now }
                        return message.bytes
                    } catch {
                        guard error.code == .timedOut else { throw error }
                        continue
                    }
                }
            }
        } catch let error as UnixSocketError where error.code == .closed {
            return
        }
    }
}
