// An echo UnixServer with the default limits (or `--max-connections N`, for the many-connections check), for
// scripts/soak.sh and scripts/many-connections.sh: every frame goes back with its descriptors. Prints `READY`
// once listening and a `usage ...` line every second on stdout; logs refusals and cut-off clients on stderr.
// SIGTERM or SIGINT: graceful shutdown, then exit 0.
//
//     SoakEchoServer ADDRESS [--max-connections N]
import SystemPackage
import UnixSockets

@main
struct SoakEchoServer {
    /// Writes one line, unbuffered (stdout is a pipe to the soak script).
    static func line(_ text: String, to output: FileDescriptor = .standardOutput) {
        _ = try? Array((text + "\n").utf8).withUnsafeBytes { try output.writeAll($0) }
    }

    static func main() async {
        let arguments = CommandLine.arguments
        var configuration = UnixServerConfiguration()
        if arguments.count == 4, arguments[2] == "--max-connections", let cap = Int(arguments[3]) {
            configuration.maxConnections = cap
            configuration.maxConnectionsPerUID = cap
        } else if arguments.count != 2 {
            line("usage: SoakEchoServer ADDRESS [--max-connections N]", to: .standardError)
            ProcessControl.exit(status: 64)
        }
        let server: UnixServer
        do {
            server = try UnixServer(address: try UnixAddress(arguments[1]), configuration: configuration)
        } catch {
            line("SoakEchoServer: \(error)", to: .standardError)
            ProcessControl.exit(status: 1)
        }
        let signals = ProcessControl.signals([.terminate, .interrupt])
        let stopper = Task {
            for await _ in signals {
                server.shutdown()
                return
            }
        }
        let reporter = Task {
            let start = ContinuousClock.now
            while !Task.isCancelled {
                let usage = server.usage
                line(
                    "usage t=\((ContinuousClock.now - start).components.seconds) connections=\(usage.connections) "
                        + "inbound=\(usage.inboundBytes) outbound=\(usage.outboundBytes) "
                        + "peakInbound=\(usage.peakInboundBytes) peakOutbound=\(usage.peakOutboundBytes)"
                )
                try? await Task.sleep(for: .seconds(1))
            }
        }
        line("READY")
        do {
            try await server.run { connection in
                while let frame = try await connection.receive() {
                    let descriptors = frame.descriptors.compactMap { $0.rawValue.map(FileDescriptor.init(rawValue:)) }
                    try connection.send(frame.bytes, descriptors: descriptors)
                }
            }
        } catch {
            line("SoakEchoServer: \(error)", to: .standardError)
            ProcessControl.exit(status: 1)
        }
        reporter.cancel()
        stopper.cancel()
        line("STOPPED")
    }
}
