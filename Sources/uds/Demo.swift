import ArgumentParser
import Foundation
import Subprocess
import SystemPackage
import UnixSockets

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole story in one command, in a temporary directory, nothing to set up.",
        discussion: """
            Shows a stream, a seqpacket and a datagram exchange, a descriptor of a file the receiving \
            process cannot open itself handed over and read (as root the receiver runs as nobody), the \
            peer's credentials, and the cleanup. Works in $TMPDIR (or /tmp).

            Example:
              swift run -c release uds demo
            """
    )

    func run() async throws {
        try await runAsyncCommand { try await DemoStory().run() }
    }
}

/// The child role of `uds demo`: a separate process (as `nobody` when the demo runs as root) that first
/// fails to open the secret file itself, then receives a descriptor of it and reads it.
struct DemoChild: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-child",
        abstract: "The receiving process of `uds demo` (internal).",
        shouldDisplay: false
    )

    @Argument(transform: parseAddress) var address: UnixAddress
    @Argument var path: String

    func run() throws {
        let address = address
        let path = path
        try runCommand {
            let say = { (line: String) throws(StdioRelay.Failure) in try StandardIO.write(Array((line + "\n").utf8)) }
            try say(
                "I am pid \(ProcessControl.processID), uid \(ProcessControl.userID), gid \(ProcessControl.groupID)."
            )
            do {
                let direct = try FileDescriptor.open(path, .readOnly)
                try? direct.close()
                try say("I could open \(path) myself (unexpected).")
            } catch {
                try say("open(\(path)) myself: \(error) - as expected, I may not read it.")
            }
            let stream = try UnixStream.connect(to: address, timeout: .seconds(10))
            let message = try stream.receive(maxBytes: 4096, maxDescriptors: 1, timeout: .seconds(10))
            guard let received = message.descriptors.first?.take() else {
                throw CLIError("demo-child: no descriptor arrived")
            }
            defer { try? received.close() }
            var content: [UInt8] = []
            let buffer = Relay.allocate(65536)
            defer { buffer.deallocate() }
            while true {
                let count = try received.read(into: buffer)
                if count == 0 { break }
                content += buffer[..<count]
            }
            try say(
                "received descriptor \(received.rawValue) with the payload \"\(String(decoding: message.bytes.filter { $0 != 10 }, as: UTF8.self))\" and read \(content.count) bytes through it."
            )
            try stream.write(all: content)
            try stream.shutdown(.write)
            _ = try stream.readToEnd(maxBytes: 0, timeout: .seconds(10))
        }
    }
}

/// The narrative of `uds demo`.
struct DemoStory {
    func say(_ text: String) throws(StdioRelay.Failure) { try StandardIO.write(Array((text + "\n").utf8)) }
    func text(_ bytes: [UInt8]) -> String { "\"" + String(decoding: bytes, as: UTF8.self) + "\"" }

    func run() async throws {
        let directory = try makeDirectory()
        Lifecycle.onExit { try? FileManager.default.removeItem(atPath: directory) }
        try say("uds demo: Unix domain sockets, the whole story, in \(directory)")
        try say("")
        try stream(in: directory)
        try seqPacket(in: directory)
        try datagram(in: directory)
        try await descriptorPassing(in: directory)
        try say("6. Cleanup")
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter {
            let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + $0)
            return attributes?[.type] as? FileAttributeType == .typeSocket
        }
        try say(
            "   every socket closed; socket files left in \(directory): \(left.isEmpty ? "none" : left.joined(separator: ", "))"
        )
        try? FileManager.default.removeItem(atPath: directory)
        try say("   removed \(directory). Done.")
    }

    /// A short private directory in $TMPDIR (socket paths hold 107 bytes; fall back to /tmp if too long).
    func makeDirectory() throws -> String {
        var base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        while base.count > 1 && base.hasSuffix("/") { base.removeLast() }
        // "/uds-demo-XXXXXXXX/" + the longest socket name ("seqpacket.sock") must fit in 107 bytes.
        if base.utf8.count + 19 + 14 > UnixAddress.maximumPathLength {
            try say("($TMPDIR is too long for socket paths of at most 107 bytes: using /tmp instead)")
            base = "/tmp"
        }
        let name = "uds-demo-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let directory = base + "/" + name
        do {
            try FileManager.default.createDirectory(
                atPath: directory,
                withIntermediateDirectories: false,
                attributes: [.posixPermissions: 0o700]
            )
        } catch {
            throw CLIError("create the demo directory \(directory): \(error.localizedDescription)")
        }
        return directory
    }

    func stream(in directory: String) throws {
        let address = try section(
            "1. A byte stream (SOCK_STREAM) on a socket file",
            socket: "stream.sock",
            in: directory
        )
        let listener = try UnixStreamListener.bind(address, mode: [.ownerReadWrite])
        defer { listener.close() }
        try say("   server: bound \(address) with mode 600, listening")
        let client = try UnixStream.connect(to: address, timeout: .seconds(5))
        defer { client.close() }
        let request = Array("hello over a stream".utf8)
        try client.write(all: request)
        try client.shutdown(.write)
        try say("   client: connected, sent \(text(request)) and shut down its write side")
        let connection = try listener.accept(timeout: .seconds(5))
        defer { connection.close() }
        let credentials = try connection.credentials
        try say("   server: accepted; the kernel says the peer is \(credentials) (SO_PEERCRED: this very process)")
        let received = try connection.readToEnd(maxBytes: 4096, timeout: .seconds(5))
        try say("   server: read \(text(received)) then end-of-stream")
        try connection.write(all: Array(String(decoding: received, as: UTF8.self).uppercased().utf8))
        try connection.shutdown(.write)
        let reply = try client.readToEnd(maxBytes: 4096, timeout: .seconds(5))
        try say("   client: got the reply \(text(reply))")
        try say("")
    }

    /// Prints a section's heading; returns the address of its socket file in `directory`.
    func section(_ heading: String, socket name: String, in directory: String) throws -> UnixAddress {
        try say(heading)
        return try UnixAddress(directory + "/" + name)
    }

    func seqPacket(in directory: String) throws {
        let address = try section(
            "2. Ordered messages with boundaries (SOCK_SEQPACKET)",
            socket: "seqpacket.sock",
            in: directory
        )
        let listener = try UnixSeqPacketListener.bind(address, mode: [.ownerReadWrite])
        defer { listener.close() }
        let client = try UnixSeqPacket.connect(to: address, timeout: .seconds(5))
        defer { client.close() }
        let messages = ["one", "two", "three"].map { Array($0.utf8) }
        for message in messages { try client.send(message) }
        try say("   client: sent 3 messages: \(messages.map(text).joined(separator: ", "))")
        let connection = try listener.accept(timeout: .seconds(5))
        defer { connection.close() }
        var received: [String] = []
        for _ in messages {
            received.append(text(try connection.receive(maxBytes: 4096, maxDescriptors: 0, timeout: .seconds(5)).bytes))
        }
        try say("   server: received 3 messages, boundaries kept: \(received.joined(separator: ", "))")
        try say("")
    }

    func datagram(in directory: String) throws {
        let address = try section(
            "3. Datagrams (SOCK_DGRAM), answered to the sender's address",
            socket: "dgram.sock",
            in: directory
        )
        let server = try UnixDatagram.bind(address, mode: [.ownerReadWrite])
        defer { server.close() }
        let client = try UnixDatagram.bind(.unnamed)
        defer { client.close() }
        try say("   client: autobound to \(try client.local) (a kernel-chosen abstract name)")
        try client.send(Array("ping".utf8), to: address, timeout: .seconds(5))
        let message = try server.receive(maxBytes: 4096, maxDescriptors: 0, timeout: .seconds(5))
        let sender = message.sender ?? .unnamed
        try say("   server: received \(text(message.bytes)) from \(sender)")
        try server.send(Array("pong".utf8), to: sender, timeout: .seconds(5))
        let reply = try client.receive(maxBytes: 4096, maxDescriptors: 0, timeout: .seconds(5))
        try say("   client: got \(text(reply.bytes)) back")
        try say("")
    }

    func descriptorPassing(in directory: String) async throws {
        try say("4. A descriptor handed to another process (SCM_RIGHTS), and 5. that peer's credentials (SO_PEERCRED)")
        let secretPath = directory + "/secret.txt"
        let secret = Array("The secret is: descriptors carry the right to read, not the path.\n".utf8)
        guard
            FileManager.default.createFile(
                atPath: secretPath,
                contents: Data(secret),
                attributes: [.posixPermissions: 0o600]
            )
        else { throw CLIError("create \(secretPath)") }
        let file = try FileDescriptor.open(secretPath, .readOnly, options: [.closeOnExec])
        defer { try? file.close() }
        let isRoot = ProcessControl.userID == 0
        var command: [String]
        if isRoot {
            guard let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].first(where: FileManager.default.isExecutableFile)
            else {
                try say("   skipped: running as root, the receiver should run as nobody, but setpriv is not installed")
                try say("")
                return
            }
            guard let executable = copyExecutableForOthers(directory: directory) else {
                try say("   skipped: could not copy this executable where nobody can run it")
                try say("")
                return
            }
            try say("   running as root, who may open anything: the receiver runs as nobody (uid 65534) instead,")
            try say("   from a world-readable copy of this executable, and \(secretPath) is root's, mode 600")
            command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", executable]
        } else {
            try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: secretPath)
            try say("   opened \(secretPath), then made it mode 000: nobody may open it now, not even its owner")
            command = [try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")]
        }
        let name = "@uds-demo-\(ProcessControl.processID)-\(UInt32.random(in: 0...UInt32.max))"
        let address = try UnixAddress(name)
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        try say("   sender: listening on the abstract name \(address) (no file, no permissions)")
        // The receiver is started with swift-subprocess (Foundation's Process crashes when many descriptors
        // are open, corelibs-foundation #5472); its stdout and stderr are collected and shown at the end.
        let outcome: ExecutionResult<Result<HandOver, any Error>, StringOutput<UTF8>, CombinedErrorOutput>
        do {
            outcome = try await Subprocess.run(
                .path(FilePath(command[0])),
                arguments: Arguments(Array(command.dropFirst()) + ["demo-child", name, secretPath]),
                input: .none,
                output: .string(limit: 1 << 20),
                error: .combinedWithOutput
            ) { execution in
                do {
                    return .success(try await handOver(file, listener: listener))
                } catch {
                    try? execution.send(signal: .terminate)
                    return .failure(error)
                }
            }
        } catch {
            try say("   skipped: could not start the receiver: \(error)")
            try say("")
            return
        }
        let printed = outcome.standardOutput
        let echoed: [UInt8]
        switch outcome.closureResult {
        case .success(.echoed(let bytes)):
            echoed = bytes
        case .success(.notConnected(let error)):
            try say(
                "   skipped: the receiver did not connect (\(error)); it said: \(printed.trimmingCharacters(in: .whitespacesAndNewlines))"
            )
            try say("")
            return
        case .failure(let error):
            throw error
        }
        for line in printed.split(separator: "\n") { try say("   receiver: \(line)") }
        if echoed == secret {
            try say(
                "   sender: the receiver sent back exactly the file's \(secret.count) bytes: \(text(Array(secret.dropLast())))"
            )
        } else {
            throw CLIError("demo: the receiver read \(echoed.count) bytes, not the secret's \(secret.count)")
        }
        try say("")
    }

    enum HandOver {
        case echoed([UInt8])
        case notConnected(String)
    }

    /// The sender's side while the receiver runs: accepts it, sends `file`, reads back what it read.
    func handOver(_ file: FileDescriptor, listener: UnixStreamListener) async throws -> HandOver {
        let connection: UnixStream
        do {
            connection = try await listener.accept(timeout: .seconds(20))
        } catch {
            return .notConnected("\(error)")
        }
        defer { connection.close() }
        let credentials = try connection.credentials
        try say("   sender: a peer connected; the kernel vouches for it: \(credentials) (SO_PEERCRED)")
        try await connection.send(Array("secret.txt\n".utf8), descriptors: [file])
        try say("   sender: sent one message carrying a read-only descriptor of the secret file")
        var echoed: [UInt8] = []
        while echoed.count <= 1 << 20 {
            let chunk = try await connection.read(maxBytes: 65536, timeout: .seconds(20))
            if chunk.isEmpty { break }
            echoed += chunk
        }
        try? connection.shutdown(.write)
        return .echoed(echoed)
    }

    /// A copy of /proc/self/exe in a world-readable directory (the checkout may sit where only root can
    /// enter), so that a child started as another user can run it.
    func copyExecutableForOthers(directory: String) -> String? {
        let files = FileManager.default
        let base = (directory as NSString).deletingLastPathComponent
        let folder = base + "/uds-exe-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        do {
            try files.createDirectory(
                atPath: folder,
                withIntermediateDirectories: false,
                attributes: [.posixPermissions: 0o755]
            )
            Lifecycle.onExit { try? FileManager.default.removeItem(atPath: folder) }
            let copy = folder + "/uds"
            try files.copyItem(atPath: try files.destinationOfSymbolicLink(atPath: "/proc/self/exe"), toPath: copy)
            try files.setAttributes([.posixPermissions: 0o755], ofItemAtPath: copy)
            return copy
        } catch {
            return nil
        }
    }
}
