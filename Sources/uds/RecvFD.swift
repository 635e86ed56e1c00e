import ArgumentParser
import SystemPackage
import UnixSockets

struct RecvFD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recv-fd",
        abstract: "Receive descriptors (SCM_RIGHTS) and copy what can be read from each to stdout.",
        discussion: """
            Listens (stream by default, or -t seqpacket), accepts one peer and, for each descriptor received, \
            in order, copies what can be read from it to stdout. Payloads are not printed; a message without \
            descriptors is skipped. Exits 0 when the peer closes, or at once after --count descriptors. The \
            socket file is removed on exit.

            Examples:
              uds recv-fd /tmp/fd.sock > copy.bin
              uds recv-fd --count 1 @fd-drop
            """)

    @Argument(help: "The path or @abstract-name to bind.", transform: parseAddress)
    var address: UnixAddress

    @Option(name: .shortAndLong, help: "Socket type: stream or seqpacket.")
    var type: SocketKind = .stream

    @Option(help: "Exit after this many descriptors.")
    var count: Int?

    @Option(help: "The socket file's exact permission bits, in octal (0 to 777), whatever the umask.", transform: parseMode)
    var mode: UInt32?

    @OptionGroup var peers: PeerOptions

    func validate() throws {
        if type == .dgram { throw ValidationError("recv-fd accepts a connection: use -t stream or -t seqpacket") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        if mode != nil && address.isAbstract { throw ValidationError("--mode: abstract names have no file and no mode") }
    }

    func run() throws {
        Lifecycle.handleTerminationSignals()
        let address = address, type = type, limit = count ?? Int.max, mode = mode, policy = peers.policy
        runCommand {
            let receive: () throws(UnixSocketError) -> UnixMessage?
            if type == .seqpacket {
                let listener = try UnixSeqPacketListener.bind(address, mode: mode)
                closeOnExit { listener.close() }
                let connection = try acceptAdmitted(listener) { policy.admit($0) }
                receive = { () throws(UnixSocketError) -> UnixMessage? in
                    let message = try connection.receive(maxBytes: 65536, maxDescriptors: 253)
                    return message.bytes.isEmpty && message.descriptors.isEmpty ? nil : message
                }
            } else {
                let listener = try UnixStreamListener.bind(address, mode: mode)
                closeOnExit { listener.close() }
                let connection = try acceptAdmitted(listener) { policy.admit($0) }
                receive = { () throws(UnixSocketError) -> UnixMessage? in
                    let message = try connection.receive(maxBytes: 65536, maxDescriptors: 253)
                    return message.bytes.isEmpty && message.descriptors.isEmpty ? nil : message
                }
            }
            var copied = 0
            let buffer = Relay.allocate(1 << 20)
            while let message = try receive() {
                for owned in message.descriptors {
                    guard let descriptor = owned.take() else { continue }
                    defer { try? descriptor.close() }
                    try copyAll(from: descriptor, buffer: buffer)
                    copied += 1
                    if copied >= limit { Lifecycle.exit(0) }
                }
            }
        }
    }

    /// Copies what can be read from `descriptor` (to its end of file) to stdout.
    func copyAll(from descriptor: FileDescriptor, buffer: UnsafeMutableRawBufferPointer) throws {
        while true {
            let count: Int
            do {
                count = try descriptor.read(into: buffer)
            } catch {
                throw CLIError("read received descriptor \(descriptor.rawValue): \(error)")
            }
            if count == 0 { return }
            StandardIO.write(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
        }
    }
}

/// Accepts until a peer is admitted; SIGINT/SIGTERM (which closes the listener) ends the process with 0.
func acceptAdmitted<C>(_ listener: UnixListener<C>, admit: (C) -> Bool) throws(UnixSocketError) -> C {
    while true {
        let connection: C
        do throws(UnixSocketError) {
            connection = try listener.accept()
        } catch {
            guard error.code == .closed else { throw error }
            Lifecycle.exit(0)
        }
        if admit(connection) { return connection }
        closeConnection(connection)
    }
}
