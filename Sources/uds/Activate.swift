import ArgumentParser
import Foundation
import Synchronization
import SystemPackage
import UnixSockets

/// `uds activate`: what `systemd-socket-activate` does (socket activation for testing a service without
/// systemd), with this project's safe socket files, staying the parent so that the files are removed at the end.
struct Activate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a socket-activated COMMAND: bind each -l ADDRESS, hand the sockets over as fds 3, 4, ...",
        discussion: """
            Binds every ADDRESS with the safe socket-file rules (a stale socket file is replaced; a live \
            server's socket, a regular file or a directory at the path is an error and is left alone), then \
            starts COMMAND with the sockets as descriptors 3, 4, ... and LISTEN_FDS, LISTEN_PID (the child's \
            own pid) and LISTEN_FDNAMES set, as systemd does (sd_listen_fds(3)). The whole environment passes \
            through, without any LISTEN_* of our own, plus -E NAME=VALUE. COMMAND starts with default signal \
            dispositions and an empty signal mask.

            uds activate stays the parent: SIGINT and SIGTERM are forwarded to the command, the socket files \
            are removed when it ends, and it exits with the command's exit status (128 + N when signal N \
            killed it). A COMMAND that cannot be found or run exits 127 or 126, as in a shell.

            With --accept (Accept=yes) it accepts each connection itself and starts COMMAND for it with the \
            connection as descriptor 3 and LISTEN_FDNAMES=connection, several at once; on SIGINT/SIGTERM it \
            stops accepting, forwards the signal to every running command, waits for them, and exits 0.

            Names: one --fdname names every socket; otherwise give one per -l (or NAME:NAME:..., as \
            systemd-socket-activate takes them). Without --fdname each is "unknown".

            Examples:
              uds activate -l /tmp/echo.sock -- uds listen -k --echo
              uds activate -l /tmp/a.sock -l @b --fdname web --fdname admin -- ./server
              uds activate -t seqpacket --accept -l /tmp/inetd.sock -- uds listen --echo
            """
    )

    @Option(name: .shortAndLong, help: "A path or @abstract-name to bind (repeatable: fds 3, 4, ... in order).")
    var listen: [String] = []

    @Option(name: .shortAndLong, help: "Socket type of every socket: stream, seqpacket or dgram.")
    var type: UnixSocketType = .stream

    @Flag(name: .shortAndLong, help: "Start COMMAND once per connection, with the connection as fd 3 (Accept=yes).")
    var accept = false

    @Option(help: "The name of the sockets (LISTEN_FDNAMES): one for all, or one per -l; NAME:NAME is accepted too.")
    var fdname: [String] = []

    @OptionGroup var permissions: ModeOption

    @Option(
        name: [.customShort("E"), .customLong("setenv")],
        help: "Set NAME=VALUE in COMMAND's environment (repeatable; NAME alone: it passes through anyway)."
    )
    var setenv: [String] = []

    @Flag(name: .shortAndLong, help: "Say on stderr which sockets are passed, and when each command starts and ends.")
    var verbose = false

    @Argument(parsing: .captureForPassthrough, help: "The command to start, after --, and its arguments.")
    var command: [String] = []

    /// The command and its arguments as the kernel passed them (`--` dropped).
    private var commandLine: [[UInt8]] {
        let words = command.first == "--" ? Array(command.dropFirst()) : command
        return words.map { RawArguments.bytes(of: $0) }
    }

    private var addresses: [UnixAddress] {
        get throws { try listen.map(parseAddress) }
    }

    /// The name of each socket, in -l order.
    private var names: [String] {
        let given = fdname.flatMap { $0.split(separator: ":", omittingEmptySubsequences: false).map(String.init) }
        if given.isEmpty { return Array(repeating: "unknown", count: listen.count) }
        if given.count == 1 { return Array(repeating: given[0], count: listen.count) }
        return given
    }

    func validate() throws {
        if commandLine.isEmpty { throw ValidationError("missing COMMAND (after --)") }
        if listen.isEmpty { throw ValidationError("missing -l ADDRESS: at least one socket to pass") }
        for address in try addresses { try permissions.check(address) }
        if accept && type == .datagram {
            throw ValidationError("--accept needs connections: -t stream or seqpacket (a datagram socket accepts none)")
        }
        let names = names
        if names.count != listen.count {
            throw ValidationError(
                "\(names.count) --fdname names for \(listen.count) -l sockets: give one name for all, or one per socket"
            )
        }
        for name in names {
            // sd_notify's rules for a descriptor name (fdname_is_valid): printable ASCII, no ':', 1...255.
            let valid =
                !name.isEmpty && name.utf8.count <= 255
                && name.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") }
            if !valid {
                throw ValidationError(
                    "--fdname '\(name)': a name is 1 to 255 printable ASCII characters without ':'"
                )
            }
        }
        for entry in setenv where entry.hasPrefix("=") || entry.isEmpty {
            throw ValidationError("-E '\(entry)': give NAME=VALUE or NAME")
        }
    }

    func run() async throws {
        defer { Lifecycle.end() }  // every path: the socket files this process made go
        let executable = try locate()
        let sockets = try bindAll()
        if verbose {
            for (index, socket) in sockets.enumerated() {
                Lifecycle.diagnostic("fd \(3 + index): \(socket.description) named \(names[index])")
            }
        }
        let status: Int32
        if accept {
            status = try await serveConnections(executable, sockets)
        } else {
            status = try await runOnce(executable, sockets)
        }
        if status != 0 { throw ExitCode(status) }
    }

    /// COMMAND's executable, as execvp would find it (PATH, or a path as is); exit 127 when there is none.
    private func locate() throws -> [UInt8] {
        let name = commandLine[0]
        var searchPath: [UInt8]?
        for entry in ChildProcess.environment where entry.starts(with: Array("PATH=".utf8)) {
            searchPath = Array(entry.dropFirst(5))
        }
        guard let executable = ChildProcess.resolve(name, searchPath: searchPath) else {
            Lifecycle.diagnostic("activate: \(String(decoding: name, as: UTF8.self)): command not found (PATH)")
            throw ExitCode(127)
        }
        return executable
    }

    /// A bound socket handed over, whatever its type.
    private struct Bound: Sendable, CustomStringConvertible {
        let core: SocketCore
        let address: UnixAddress
        let stream: UnixListener<UnixStream>?
        let seqpacket: UnixListener<UnixSeqPacket>?
        var description: String { "\(address)" }
    }

    /// Binds every -l ADDRESS (closed at exit, which removes the socket files this process created).
    private func bindAll() throws -> [Bound] {
        let mode = permissions.mode
        return try addresses.map { address in
            switch type {
            case .stream:
                let listener = try closingOnExit({
                    try UnixListener<UnixStream>.bind(address, mode: mode, backlog: 4096, recordingFullPath: true)
                }) { $0.close() }
                return Bound(core: listener.core, address: address, stream: listener, seqpacket: nil)
            case .seqPacket:
                let listener = try closingOnExit({
                    try UnixListener<UnixSeqPacket>.bind(address, mode: mode, backlog: 4096, recordingFullPath: true)
                }) {
                    $0.close()
                }
                return Bound(core: listener.core, address: address, stream: nil, seqpacket: listener)
            case .datagram:
                let socket = try closingOnExit({ try UnixDatagram.bind(address, mode: mode) }) { $0.close() }
                return Bound(core: socket.core, address: address, stream: nil, seqpacket: nil)
            }
        }
    }

    /// COMMAND's environment: ours without LISTEN_*, then -E, then LISTEN_FDS and LISTEN_FDNAMES
    /// (LISTEN_PID is written by the child itself).
    private func environment(count: Int, names: [String]) -> [[UInt8]] {
        let replaced = Set(
            ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]
                + setenv.compactMap { entry in entry.contains("=") ? String(entry.prefix { $0 != "=" }) : nil }
        )
        var entries = ChildProcess.environment.filter { entry in
            let name = String(decoding: entry.prefix { $0 != UInt8(ascii: "=") }, as: UTF8.self)
            return !replaced.contains(name)
        }
        entries += setenv.filter { $0.contains("=") }.map { RawArguments.bytes(of: $0) }
        entries.append(Array("LISTEN_FDS=\(count)".utf8))
        entries.append(Array("LISTEN_FDNAMES=\(names.joined(separator: ":"))".utf8))
        return entries
    }

    private func start(_ executable: [UInt8], sockets: [SocketCore], names: [String]) throws -> ChildProcess {
        let child = try ChildProcess.start(
            executable,
            arguments: commandLine,
            environment: environment(count: sockets.count, names: names),
            listenPIDVariable: "LISTEN_PID",
            sockets: sockets
        )
        if verbose { Lifecycle.diagnostic("started pid \(child.pid)") }
        return child
    }

    /// A command that could not be started, as a shell reports it: 127 not found, 126 found but not
    /// executable; a fork failure is ours (1).
    private func startFailed(_ failure: ChildProcess.StartFailure) -> ExitCode {
        Lifecycle.diagnostic("activate: \(failure)")
        return ExitCode(failure.inExec ? (failure.errno == .noSuchFileOrDirectory ? 127 : 126) : 1)
    }

    /// Waits for the child on a thread of its own (waitpid blocks); the caller's task holds no thread.
    private func ended(_ child: ChildProcess) async -> ChildProcess.Termination {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread { continuation.resume(returning: child.wait()) }
        }
    }

    /// One COMMAND with every socket; SIGINT/SIGTERM forwarded; its status is ours.
    private func runOnce(_ executable: [UInt8], _ sockets: [Bound]) async throws -> Int32 {
        let signals = ProcessControl.signals([.interrupt, .terminate])
        let child: ChildProcess
        do {
            child = try start(executable, sockets: sockets.map(\.core), names: names)
        } catch let failure as ChildProcess.StartFailure {
            throw startFailed(failure)
        }
        let forwarding = Task {
            for await signal in signals { child.send(signal) }
        }
        let termination = await ended(child)
        forwarding.cancel()
        if verbose { Lifecycle.diagnostic("pid \(child.pid) ended: \(termination)") }
        return termination.shellStatus
    }

    /// The commands started for connections, and the signal that ends them once it came.
    private final class Running: Sendable {
        struct State {
            var children: [Int32: ChildProcess] = [:]
            var signal: ProcessControl.ProcessSignal?
        }
        private let state = Mutex(State())
        func withLock<R>(_ body: (inout State) -> R) -> R { state.withLock { body(&$0) } }
    }

    private final class FirstFailure: Sendable {
        private let state = Mutex<String?>(nil)
        func record(_ error: any Error) { state.withLock { $0 = $0 ?? Lifecycle.describe(error) } }
        var message: String? { state.withLock { $0 } }
    }

    /// Accept=yes: one COMMAND per connection, several at once, until SIGINT/SIGTERM.
    private func serveConnections(_ executable: [UInt8], _ sockets: [Bound]) async throws -> Int32 {
        let signals = ProcessControl.signals([.interrupt, .terminate])
        let running = Running()
        let failure = FirstFailure()
        await withTaskGroup(of: Void.self) { group in
            for socket in sockets {
                group.addTask {
                    do {
                        while !Task.isCancelled {
                            let connection: SocketCore
                            if let listener = socket.stream {
                                connection = try await listener.accept().core
                            } else if let listener = socket.seqpacket {
                                connection = try await listener.accept().core
                            } else {
                                return
                            }
                            defer { connection.close() }
                            let child: ChildProcess
                            do {
                                child = try start(executable, sockets: [connection], names: ["connection"])
                            } catch let failure as ChildProcess.StartFailure {
                                _ = startFailed(failure)  // this connection only; the next one may start
                                continue
                            }
                            let late = running.withLock { running -> ProcessControl.ProcessSignal? in
                                running.children[child.pid] = child
                                return running.signal
                            }
                            if let late { child.send(late) }
                            Thread.detachNewThread {
                                let termination = child.wait()
                                running.withLock { _ = $0.children.removeValue(forKey: child.pid) }
                                if verbose { Lifecycle.diagnostic("pid \(child.pid) ended: \(termination)") }
                            }
                        }
                    } catch is CancellationError {
                    } catch let error as UnixSocketError where error.code == .cancelled {
                    } catch {
                        failure.record(error)
                    }
                }
            }
            // The end: a signal (forwarded to every running command) or an accept loop that failed.
            group.addTask {
                for await signal in signals {
                    // Recorded first: a command started from now on gets it too.
                    let children = running.withLock { running in
                        running.signal = signal
                        return Array(running.children.values)
                    }
                    for child in children { child.send(signal) }
                    return
                }
            }
            _ = await group.next()
            group.cancelAll()
        }
        // Stop accepting (the sockets stay bound until the end), then wait for the running commands.
        var waited = 0
        while !running.withLock({ $0.children.isEmpty }) {
            try? await Task.sleep(for: .milliseconds(10))
            waited += 1
            if waited % 1_000 == 0 && verbose {
                Lifecycle.diagnostic("waiting for \(running.withLock { $0.children.count }) commands")
            }
        }
        if let message = failure.message {
            Lifecycle.diagnostic(message)
            return 1
        }
        return 0
    }
}
