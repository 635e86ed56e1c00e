import ArgumentParser
import Foundation
import UnixSockets

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the Unix sockets on this machine: address, type, state, peer and owning process.",
        discussion: """
            Reads sock_diag (what ss -x reads: exact names, peer inodes; /proc/net/unix only where sock_diag \
            is unavailable) and /proc/*/fd (owners; other users' processes are visible to root only). An \
            address or command name holding control or format characters is printed escaped (\\xHH for each \
            byte other than printable ASCII, \\\\ for a backslash), so no name can forge a row or drive the \
            terminal. --json prints one array of objects with the keys address, type, state, inode, \
            peer_inode, pid, command (null where unknown), escaped as JSON.

            Examples:
              uds ls
              uds ls --json | python3 -m json.tool
            """
    )

    @Flag(help: "Print one JSON array of objects.")
    var json = false

    func run() throws {
        let json = json
        try runCommand {
            let sockets = try SocketInventory.collect()
            if json {
                try StandardIO.write(Array((SocketInventory.json(sockets) + "\n").utf8))
            } else {
                try StandardIO.write(Array(SocketInventory.table(sockets).utf8))
            }
        }
    }
}

/// One row of `uds ls`.
struct SocketInfo {
    var address: String?
    /// The kernel's type number (SOCK_*), as sock_diag or /proc/net/unix gave it.
    var kernelType: UInt16
    var state: String
    var inode: UInt64
    var peerInode: UInt64?
    var pid: Int32?
    var command: String?

    /// The TYPE column: the library's type as its raw value (`stream`, `seqpacket`, `dgram`), `type-N` for a
    /// number it has no type for.
    var typeName: String { UnixSocketType(kernelType: kernelType)?.rawValue ?? "type-\(kernelType)" }
}

extension UnixSocketType {
    /// The type a kernel SOCK_* number names (Linux's values on every architecture this tool builds for:
    /// SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5); the one place `uds ls` reads those numbers.
    init?(kernelType: UInt16) {
        switch kernelType {
        case 1: self = .stream
        case 2: self = .datagram
        case 5: self = .seqPacket
        default: return nil
        }
    }
}

enum SocketInventory {
    /// The sockets from sock_diag, which gives every field exactly (the bound name with its own length);
    /// /proc/net/unix only if sock_diag is unavailable. That file prints a path's bytes raw, newlines
    /// included, so a socket bound to a crafted path could add rows of its choosing to it.
    static func collect() throws -> [SocketInfo] {
        let owners = socketOwners()
        func info(type: UInt16, state: String, inode: UInt64, address: String?, peer: UInt64?) -> SocketInfo {
            let owner = owners[inode]
            return SocketInfo(
                address: address,
                kernelType: type,
                state: state,
                inode: inode,
                peerInode: peer,
                pid: owner,
                command: owner.flatMap(command(of:))
            )
        }
        if case .success(let table) = UnixSocketTable.entries() {
            return table.values.sorted { $0.inode < $1.inode }.map { entry in
                info(
                    type: UInt16(entry.type),
                    state: diagStateName(entry.state),
                    inode: entry.inode,
                    address: entry.address.map(exactText),
                    peer: entry.peerInode
                )
            }
        }
        let text: String
        do {
            text = try String(contentsOfFile: "/proc/net/unix", encoding: .utf8)
        } catch {
            throw CLIError("read /proc/net/unix: \(error.localizedDescription)")
        }
        var result: [SocketInfo] = []
        for line in text.split(separator: "\n").dropFirst() {
            guard let row = parse(line) else { continue }
            let state: String
            if row.flags & 0x10000 != 0 {
                state = "listening"
            } else {
                switch row.state {
                case 1: state = "unconnected"
                case 2: state = "connecting"
                case 3: state = "connected"
                case 4: state = "disconnecting"
                default: state = "state-\(row.state)"
                }
            }
            let path = row.path.flatMap { $0.isEmpty ? nil : $0 }
            result.append(info(type: row.type, state: state, inode: row.inode, address: path, peer: nil))
        }
        return result
    }

    /// sock_diag's sk_state, in the words /proc/net/unix's state gave.
    static func diagStateName(_ state: UInt8) -> String {
        switch state {
        case 10: "listening"  // TCP_LISTEN
        case 1: "connected"  // TCP_ESTABLISHED
        case 2: "connecting"  // TCP_SYN_SENT
        case 7: "unconnected"  // TCP_CLOSE
        default: "state-\(state)"
        }
    }

    /// One line of /proc/net/unix: Num RefCount Protocol Flags Type St Inode [Path].
    static func parse(_ line: Substring) -> (flags: UInt32, type: UInt16, state: UInt8, inode: UInt64, path: String?)? {
        var fields: [Substring] = []
        var rest = line[...]
        for _ in 0..<7 {
            rest = rest.drop { $0 == " " }
            let end = rest.firstIndex(of: " ") ?? rest.endIndex
            fields.append(rest[..<end])
            rest = rest[end...]
        }
        guard fields.count == 7, let flags = UInt32(fields[3], radix: 16), let type = UInt16(fields[4], radix: 16),
            let state = UInt8(fields[5], radix: 16), let inode = UInt64(fields[6])
        else { return nil }
        let path = rest.first == " " ? String(rest.dropFirst()) : nil
        return (flags, type, state, inode, path)
    }

    /// Socket inode -> the lowest pid holding it, from /proc/*/fd (what we are allowed to see).
    static func socketOwners() -> [UInt64: Int32] {
        let files = FileManager.default
        guard let entries = try? files.contentsOfDirectory(atPath: "/proc") else { return [:] }
        var owners: [UInt64: Int32] = [:]
        for pid in entries.compactMap(Int32.init).sorted() {
            guard let descriptors = try? files.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { continue }
            for descriptor in descriptors {
                guard let target = try? files.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)"),
                    target.hasPrefix("socket:["), target.hasSuffix("]"),
                    let inode = UInt64(target.dropFirst(8).dropLast())
                else { continue }
                if owners[inode] == nil { owners[inode] = pid }
            }
        }
        return owners
    }

    /// An address as exact text for the JSON output (a UTF-8 path as it is, control characters included:
    /// JSON escapes them), and in the address syntax otherwise; the table escapes its cells itself.
    static func exactText(_ address: UnixAddress) -> String {
        if let bytes = address.pathBytes, let text = String(validating: bytes, as: UTF8.self) {
            return bytes.first == UInt8(ascii: "@") ? "./" + text : text
        }
        return address.description
    }

    /// The command name (/proc/PID/comm, which the process itself sets and may fill with any bytes but
    /// NUL): as text when it is UTF-8, else in the escaped form.
    static func command(of pid: Int32) -> String? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/comm") else { return nil }
        var bytes = Array(data)
        if bytes.last == UInt8(ascii: "\n") { bytes.removeLast() }  // the kernel's own line end
        return String(validating: bytes, as: UTF8.self) ?? escapeBytes(bytes)
    }

    /// A cell of the table: text with nothing a terminal would act on. Anything holding a control
    /// character (C0, DEL, C1), a format character (bidirectional overrides, zero-width) or a line or
    /// paragraph separator is written in the address syntax's escaped form: printable ASCII as is, `\\` for a
    /// backslash, `\xHH` for every other byte (as `UnixAddress` describes a path that is not UTF-8). So no
    /// name can end a row early, forge one or move the cursor.
    static func printable(_ text: String) -> String {
        let unsafe = text.unicodeScalars.contains { scalar in
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator: true
            default: false
            }
        }
        return unsafe ? escapeBytes(text.utf8) : text
    }

    static func table(_ sockets: [SocketInfo]) -> String {
        var rows = [["TYPE", "STATE", "INODE", "PEER", "PID", "COMMAND", "ADDRESS"]]
        for socket in sockets {
            rows.append([
                socket.typeName, socket.state, "\(socket.inode)", socket.peerInode.map { "\($0)" } ?? "-",
                socket.pid.map { "\($0)" } ?? "-", socket.command.map(printable) ?? "-",
                socket.address.map(printable) ?? "-",
            ])
        }
        var widths = [Int](repeating: 0, count: 7)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        var output = ""
        for row in rows {
            var line = ""
            for (index, cell) in row.enumerated() {
                line +=
                    index == row.count - 1
                    ? cell : cell.padding(toLength: widths[index] + 2, withPad: " ", startingAt: 0)
            }
            output += line + "\n"
        }
        return output
    }

    static func json(_ sockets: [SocketInfo]) -> String {
        func string(_ value: String?) -> String {
            guard let value else { return "null" }
            var out = "\""
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value):
                    out += String(format: "\\u%04x", scalar.value)
                case _ where [.format, .lineSeparator, .paragraphSeparator].contains(scalar.properties.generalCategory):
                    // Valid JSON raw, but a terminal showing it would act on it (bidi overrides, U+2028).
                    out += scalar.utf16.map { String(format: "\\u%04x", $0) }.joined()
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        func number<T: BinaryInteger>(_ value: T?) -> String { value.map { "\($0)" } ?? "null" }
        let objects = sockets.map { socket in
            "{\"address\":\(string(socket.address)),\"type\":\(string(socket.typeName)),\"state\":\(string(socket.state)),"
                + "\"inode\":\(socket.inode),\"peer_inode\":\(number(socket.peerInode)),\"pid\":\(number(socket.pid)),"
                + "\"command\":\(string(socket.command))}"
        }
        return "[" + objects.joined(separator: ",\n") + "]"
    }
}
