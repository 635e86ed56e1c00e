import ArgumentParser
import SystemPackage
import UnixSockets

struct SendFD: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send-fd",
        abstract: "Pass open files to a peer as descriptors (SCM_RIGHTS).",
        discussion: """
            Connects (stream by default, or -t seqpacket) and, for each FILE, sends one message whose payload \
            is the FILE argument followed by a newline, carrying one read-only descriptor of that file. \
            '-' passes this process's own stdin descriptor (payload "-\\n"). The receiver can read a file it \
            could not open itself.

            Examples:
              uds send-fd /tmp/fd.sock /etc/hostname report.pdf
              echo hello | uds send-fd /tmp/fd.sock -
            """
    )

    @Option(name: .shortAndLong, help: "Socket type: stream or seqpacket.")
    var type: UnixSocketType = .stream

    @Argument(help: "The path or @abstract-name to connect to.", transform: parseAddress)
    var address: UnixAddress

    @Argument(help: "The files to pass ('-' for stdin).")
    var files: [String]

    func validate() throws {
        if type == .datagram { throw ValidationError("send-fd connects: use -t stream or -t seqpacket") }
        if files.isEmpty { throw ValidationError("give at least one FILE") }
    }

    func run() throws {
        let names = rawArgumentBytes(for: files)
        let address = address
        let type = type
        try runCommand {
            let send: ([UInt8], FileDescriptor) throws -> Void
            let close: () -> Void
            if type == .seqPacket {
                let connection = try UnixSeqPacket.connect(to: address)
                send = { payload, descriptor in try connection.send(payload, descriptors: [descriptor]) }
                close = { connection.close() }
            } else {
                let connection = try UnixStream.connect(to: address)
                send = { payload, descriptor in try connection.send(payload, descriptors: [descriptor]) }
                close = {
                    try? connection.shutdown(.write)
                    connection.close()
                }
            }
            defer { close() }
            for name in names {
                let payload = name + [UInt8(ascii: "\n")]
                if name == [UInt8(ascii: "-")] {
                    try send(payload, StandardIO.input)
                    continue
                }
                let descriptor: FileDescriptor
                do {
                    descriptor = try name.withUnsafeBufferPointer { bytes in
                        try FilePath(platformString: (bytes.map { CChar(bitPattern: $0) } + [0])).withPlatformString {
                            try FileDescriptor.open($0, .readOnly, options: [.closeOnExec])
                        }
                    }
                } catch {
                    throw CLIError("open \(String(decoding: name, as: UTF8.self)): \(error)")
                }
                defer { try? descriptor.close() }
                try send(payload, descriptor)
            }
        }
    }
}
