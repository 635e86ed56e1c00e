import ArgumentParser
import SystemPackage
import UDSBench
import UnixSockets

/// `uds`: a Unix-socket netcat and socat that passes descriptors, shows peers and keeps socket files safe.
///
/// Exit status: 0 success, 1 runtime error (one `uds: ` line on stderr), 64 usage error.
@main
struct UDS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uds",
        abstract: "Unix domain sockets from the shell: nc -U and socat, plus descriptors, peers and safe socket files.",
        discussion: """
            ADDRESS is a file-system path, or @name for a Linux abstract name (\\xHH stands for any byte, \
            NUL included; write a path that begins with @ as ./@...).

            Exit status: 0 success, 1 runtime error (one line on stderr starting "uds: "), 64 usage error.

            Examples:
              uds listen /tmp/app.sock > received.bin
              uds connect /tmp/app.sock < file.bin
              uds listen -k --echo @echo
            """,
        version: udsVersion,
        subcommands: [
            Listen.self, Connect.self, Activate.self, Send.self, Recv.self, SendFD.self, RecvFD.self, Bridge.self,
            Proxy.self, Ls.self,
            Demo.self, Bench.self, DemoChild.self,
        ]
    )

    /// Process-wide setup before any command runs: a reader that goes away (`| head`) must not kill us
    /// with SIGPIPE; stdout writes then see EPIPE and end quietly. The parser gets argv with every byte
    /// kept (see ``RawArguments``), not Swift's repaired `CommandLine.arguments`.
    static func main() async {
        ProcessControl.ignoreBrokenPipe()
        do {
            var command = try parseAsRoot(RawArguments.parsed.arguments)
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            // As ArgumentParser's own main does, except that the NUL marking a raw-bytes token is taken out
            // of the message: it stays readable, and no NUL reaches the terminal.
            let message = String(fullMessage(for: error).unicodeScalars.filter { $0 != "\u{0}" })
            let code = exitCode(for: error)
            if !message.isEmpty {
                let output = code == .success ? StandardIO.output : FileDescriptor.standardError
                _ = try? Array((message + "\n").utf8).withUnsafeBytes { try output.writeAll($0) }
            }
            if code != .success { Self.exit(withError: ExitCode(code.rawValue)) }
        }
    }
}

let udsVersion = "0.1.0"
