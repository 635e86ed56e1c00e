import ArgumentParser
import SystemPackage
import UnixSockets

struct RecvFD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recv-fd",
        abstract: "Receive descriptors (SCM_RIGHTS) and copy what can be read from each to stdout.",
        discussion: """
            Listens (stream by default, or -t seqpacket), accepts one peer and, for each descriptor received, \
            in order, copies what can be read from it to stdout. Payloads are not printed; a message without \
            descriptors is skipped. Exits when the peer closes, or at once after --count descriptors. The \
            socket file is removed on exit.

            Each copy is bounded: at most --max-bytes bytes (default 64 MiB) from one descriptor, and a \
            descriptor that gives no data for --timeout seconds (default 10; a pipe whose writer stays open) \
            is left. A descriptor that cannot be read to its end (too long, idle, unreadable, a directory) \
            gets one stderr line and the copy goes on with the next; the exit status is then 1. With -v, one \
            stderr line per descriptor says how many bytes were copied.

            Examples:
              uds recv-fd /tmp/fd.sock > copy.bin
              uds recv-fd --count 1 @fd-drop
              uds recv-fd --max-bytes 1048576 --timeout 2 -v /tmp/fd.sock
            """
    )

    @Option(
        name: .shortAndLong,
        help: "Socket type: stream or seqpacket (default: the activated socket's type, else stream)."
    )
    var type: UnixSocketType?

    @Argument(
        help: "The path or @abstract-name to bind (optional when a socket was activated: LISTEN_FDS).",
        transform: parseAddress
    )
    var address: UnixAddress?

    @Option(help: "Exit after this many descriptors.")
    var count: Int?

    @OptionGroup var permissions: ModeOption

    @Option(
        name: .customLong("max-bytes"),
        help: ArgumentHelp("Copy at most this many bytes from each descriptor (the default is 64 MiB).", valueName: "n")
    )
    var maxBytes: Int = DescriptorCopy.defaultMaxBytes

    @Option(
        help: ArgumentHelp(
            "Leave a descriptor that gives no data for this many seconds.",
            valueName: "seconds"
        )
    )
    var timeout: Double = 10

    @OptionGroup var peers: PeerOptions

    func validate() throws {
        let activated = try Activated.pick(address)
        if Activated.type(given: type, activated: activated, fallback: .stream) == .datagram {
            throw ValidationError("recv-fd accepts a connection: use -t stream or -t seqpacket")
        }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if let address { try permissions.check(address) }
        if maxBytes < 1 { throw ValidationError("--max-bytes must be at least 1") }
        if !(timeout > 0 && timeout < 1e9) { throw ValidationError("--timeout takes a number of seconds > 0") }
    }

    func run() async throws {
        let address = address
        let activated = try Activated.pick(address)
        let type = Activated.type(given: type, activated: activated, fallback: .stream)
        let limit = count ?? Int.max
        let mode = permissions.mode
        let policy = peers.policy
        let maxBytes = maxBytes
        let timeout = timeout
        try await Lifecycle.run(endOnSignals: true) { _ in
            let copy = DescriptorCopy(
                maxBytes: maxBytes,
                idleMilliseconds: max(Int32(clamping: Int64(timeout * 1000)), 1),
                timeoutText: "\(timeout)",
                verbose: policy.verbose
            )
            let receive: () throws(UnixSocketError) -> UnixMessage?
            if type == .seqPacket {
                let connection = try servedPeer(UnixSeqPacket.self, activated: activated, address: address, mode: mode)
                {
                    policy.admit($0)
                }
                receive = { () throws(UnixSocketError) -> UnixMessage? in
                    let message = try connection.receive(maxBytes: 65536, maxDescriptors: 253)
                    return message.bytes.isEmpty && message.descriptors.isEmpty ? nil : message
                }
            } else {
                let connection = try servedPeer(UnixStream.self, activated: activated, address: address, mode: mode) {
                    policy.admit($0)
                }
                receive = { () throws(UnixSocketError) -> UnixMessage? in
                    let message = try connection.receive(maxBytes: 65536, maxDescriptors: 253)
                    return message.bytes.isEmpty && message.descriptors.isEmpty ? nil : message
                }
            }
            var seen = 0
            var failed = 0
            func finish() throws {
                guard failed > 0 else { return }
                throw CLIError("\(failed) of \(seen) descriptors could not be copied in full")
            }
            while let message = try receive() {
                for owned in message.descriptors {
                    guard let descriptor = owned.take() else { continue }
                    seen += 1
                    let copied = Result { try copy.copy(descriptor, number: seen) }
                    try? descriptor.close()
                    if try !copied.get() { failed += 1 }
                    if seen >= limit { return try finish() }
                }
            }
            try finish()
        }
    }
}

/// Copies what can be read from one received descriptor to stdout, bounded in bytes and in idle time, and
/// says how it went. The descriptor's open file is shared with the sender: its O_NONBLOCK flag is never
/// changed. Regular files are read directly (a read there never waits for a writer). Anything else is read
/// only once poll says it is readable, and without waiting even if another reader takes the data first:
/// sockets with MSG_DONTWAIT, pipes and FIFOs through a private non-blocking open of the same pipe
/// (/proc/self/fd/N). So a writer that keeps its end open without writing costs at most the idle timeout.
final class DescriptorCopy {
    static let defaultMaxBytes = 64 << 20

    let maxBytes: Int
    let idleMilliseconds: Int32
    let timeoutText: String
    let verbose: Bool
    /// One buffer for every copy, in one thread.
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)

    init(maxBytes: Int, idleMilliseconds: Int32, timeoutText: String, verbose: Bool) {
        self.maxBytes = maxBytes
        self.idleMilliseconds = idleMilliseconds
        self.timeoutText = timeoutText
        self.verbose = verbose
    }

    deinit { buffer.deallocate() }

    /// Copies descriptor `number` (1-based, in the order received); false if it could not be read to its end.
    func copy(_ descriptor: FileDescriptor, number: Int) throws(StdioRelay.Failure) -> Bool {
        let kind: InheritedFile.FileType
        switch InheritedFile.kind(of: descriptor) {
        case .success(let found): kind = found
        case .failure(let errno):
            Lifecycle.diagnostic("descriptor \(number): fstat: \(errno); skipped")
            return false
        }
        let label = "descriptor \(number) (\(InheritedFile.name(of: kind)))"
        if InheritedFile.isDirectory(kind) {
            Lifecycle.diagnostic("\(label): a directory has no content to copy; skipped")
            return false
        }
        let reader = InheritedFile.isPipe(kind) ? InheritedFile.privateReader(for: descriptor) : nil
        defer { try? reader?.close() }
        let fd = reader ?? descriptor
        var copied = 0
        while true {
            // One byte more than the bound is asked for: if it comes, the descriptor had more.
            let room = min(buffer.count, maxBytes - copied + 1)
            let window = UnsafeMutableRawBufferPointer(rebasing: buffer[..<room])
            switch InheritedFile.readOnce(fd, kind: kind, into: window, idleMilliseconds: idleMilliseconds) {
            case .data(let count):
                let kept = min(count, maxBytes - copied)
                try StandardIO.write(UnsafeRawBufferPointer(rebasing: buffer[..<kept]))
                copied += kept
                if kept < count {
                    Lifecycle.diagnostic("\(label): stopped at --max-bytes \(maxBytes) (it had more); moved on")
                    return false
                }
            case .endOfFile:
                if verbose { Lifecycle.diagnostic("\(label): copied \(copied) bytes") }
                return true
            case .idle:
                Lifecycle.diagnostic(
                    "\(label): no data for \(timeoutText) s (its writer keeps it open?) after \(copied) bytes; moved on"
                )
                return false
            case .failed(let errno):
                let error = UnixSocketError(.system, operation: "read", errno: errno)
                Lifecycle.diagnostic("\(label): \(error.description); skipped after \(copied) bytes")
                return false
            }
        }
    }
}

/// Accepts until a peer is admitted; SIGINT/SIGTERM (which closes the listener) ends the command with 0
/// (``CommandEnd``).
/// The one peer of a command: an activated Accept=yes connection (refused unless admitted), or the first
/// admitted client of the activated or bound listener.
func servedPeer<C: UnixConnection>(
    _ type: C.Type,
    activated: ActivatedSocket?,
    address: UnixAddress?,
    mode: FilePermissions?,
    admit: (C) -> Bool
) throws -> C {
    if let connection = try Activated.connection(C.self, activated: activated) {
        guard admit(connection) else {
            throw CLIError("the activated connection's peer is not allowed (--allow-uid, --allow-gid)")
        }
        return connection
    }
    return try acceptAdmitted(
        Activated.listener(C.self, activated: activated, address: address, mode: mode),
        admit: admit
    )
}

func acceptAdmitted<C>(_ listener: UnixListener<C>, admit: (C) -> Bool) throws -> C {
    while true {
        let connection: C
        do throws(UnixSocketError) {
            connection = try listener.accept()
        } catch {
            guard error.code == .closed else { throw error }
            throw CommandEnd()
        }
        if admit(connection) { return connection }
        closeConnection(connection)
    }
}
