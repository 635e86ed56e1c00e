import ArgumentParser
import Foundation
import UnixSockets

struct Ls: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the Unix sockets on this machine: address, type, state, peer and owning process.",
        discussion: """
            Reads /proc/net/unix, sock_diag (peer inodes, exact abstract names) and /proc/*/fd (owners; \
            other users' processes are visible to root only). --json prints one array of objects with the \
            keys address, type, state, inode, peer_inode, pid, command (null where unknown).

            Examples:
              uds ls
              uds ls --json | python3 -m json.tool
            """)

    @Flag(help: "Print one JSON array of objects.")
    var json = false

    func run() throws {
        let json = json
        runCommand {
            let sockets = try SocketInventory.collect()
            if json {
                StandardIO.write(Array((SocketInventory.json(sockets) + "\n").utf8))
            } else {
                StandardIO.write(Array(SocketInventory.table(sockets).utf8))
            }
        }
    }
}

/// One row of `uds ls`.
struct SocketInfo {
    var address: String?
    var type: String
    var state: String
    var inode: UInt64
    var peerInode: UInt64?
    var pid: Int32?
    var command: String?
}

enum SocketInventory {
    static func collect() throws -> [SocketInfo] {
        let text: String
        do {
            text = try String(contentsOfFile: "/proc/net/unix", encoding: .utf8)
        } catch {
            throw CLIError("read /proc/net/unix: \(error.localizedDescription)")
        }
        let diagnostics = (try? UnixSocketTable.entries().get()) ?? [:]
        let owners = socketOwners()
        var result: [SocketInfo] = []
        for line in text.split(separator: "\n").dropFirst() {
            guard let row = parse(line) else { continue }
            let diag = diagnostics[row.inode]
            var address: String?
            if let bound = diag?.address {
                address = bound.description
            } else if let path = row.path, !path.isEmpty {
                address = path
            }
            let type =
                switch row.type {
                case 1: "stream"
                case 2: "dgram"
                case 5: "seqpacket"
                default: "type-\(row.type)"
                }
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
            let owner = owners[row.inode]
            result.append(
                SocketInfo(
                    address: address, type: type, state: state, inode: row.inode, peerInode: diag?.peerInode,
                    pid: owner, command: owner.flatMap(command(of:))))
        }
        return result
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

    static func command(of pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return nil }
        return text.trimmingCharacters(in: .newlines)
    }

    static func table(_ sockets: [SocketInfo]) -> String {
        var rows = [["TYPE", "STATE", "INODE", "PEER", "PID", "COMMAND", "ADDRESS"]]
        for socket in sockets {
            rows.append([
                socket.type, socket.state, "\(socket.inode)", socket.peerInode.map { "\($0)" } ?? "-",
                socket.pid.map { "\($0)" } ?? "-", socket.command ?? "-", socket.address ?? "-",
            ])
        }
        var widths = [Int](repeating: 0, count: 7)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        var output = ""
        for row in rows {
            var line = ""
            for (index, cell) in row.enumerated() {
                line += index == row.count - 1 ? cell : cell.padding(toLength: widths[index] + 2, withPad: " ", startingAt: 0)
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
                case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                    out += String(format: "\\u%04x", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        func number<T: BinaryInteger>(_ value: T?) -> String { value.map { "\($0)" } ?? "null" }
        let objects = sockets.map { socket in
            "{\"address\":\(string(socket.address)),\"type\":\(string(socket.type)),\"state\":\(string(socket.state)),"
                + "\"inode\":\(socket.inode),\"peer_inode\":\(number(socket.peerInode)),\"pid\":\(number(socket.pid)),"
                + "\"command\":\(string(socket.command))}"
        }
        return "[" + objects.joined(separator: ",\n") + "]"
    }
}
