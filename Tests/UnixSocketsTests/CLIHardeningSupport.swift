import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the hardening tests read about a running process from /proc, and how they start `uds` with
/// arguments that are not UTF-8.
enum ProcessProbe {
    /// A `Key:   value kB` (or plain number) line of /proc/PID/status: VmSize, VmRSS (kB), Threads.
    static func status(_ pid: Int32, _ key: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let fields = line.dropFirst(key.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" })
            return fields.first.flatMap { Int($0) }
        }
        return nil
    }

    /// The number of open descriptors of `pid` (-1 if it cannot be read).
    static func descriptorCount(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// What the descriptors of `pid` refer to (the links of /proc/PID/fd: a path, `socket:[INODE]`, ...).
    static func descriptorTargets(_ pid: Int32) -> [String] {
        let directory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)") }
    }

    /// The socket inodes of `pid`'s descriptors, as /proc/net/unix writes them.
    static func socketInodes(_ pid: Int32) -> Set<Substring> {
        Set(
            descriptorTargets(pid).compactMap { link in
                link.hasPrefix("socket:[") ? Substring(link.dropFirst(8).dropLast()) : nil
            }
        )
    }

    /// The rows of /proc/net/unix for `pid`'s sockets, split into fields (flags at 3, state at 5).
    static func unixSocketRows(_ pid: Int32) -> [[Substring]] {
        let inodes = socketInodes(pid)
        guard let table = try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8) else { return [] }
        return table.split(separator: "\n").map { $0.split(separator: " ") }.filter {
            $0.count >= 7 && inodes.contains($0[6])
        }
    }

    /// The descriptor count of `pid` once it is at rest, for a baseline; -1 if it does not come to rest within
    /// `seconds`. At rest: no connected Unix socket (a client that has gone, but whose EOF the server has not
    /// yet handled) and no bind lock (SocketFile holds `.NAME.lock` until just after listen(), so a server
    /// already listens a moment before it closes it). A count taken earlier can be one or more too high, and
    /// then never comes back.
    static func restingDescriptorCount(_ pid: Int32, seconds: Double = 60) -> Int {
        let rested = CLI.waitUntil(seconds: seconds) {
            !descriptorTargets(pid).contains { $0.hasSuffix(".lock") || $0.hasSuffix(".lock (deleted)") }
                && !unixSocketRows(pid).contains { $0[5] == "03" }
        }
        return rested ? descriptorCount(pid) : -1
    }

    /// The exact names in a directory (readdir: no UTF-8 repair), without "." and "..".
    static func rawNames(in directory: String) -> [[UInt8]] {
        guard let handle = opendir(directory) else { return [] }
        defer { closedir(handle) }
        var names: [[UInt8]] = []
        while let entry = readdir(handle) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            if name != [0x2E] && name != [0x2E, 0x2E] { names.append(name) }
        }
        return names
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// Starts `uds` with arguments given as exact bytes: python3 execs it (same pid), so no UTF-8 repair
    /// happens on the way.
    static func spawnUDSRaw(_ arguments: [[UInt8]], in directory: TempDirectory) throws -> Spawned {
        let executable = try #require(CLI.executable)
        let script = """
            import os, sys
            args = [bytes.fromhex(a) for a in sys.argv[1:]]
            os.execv(args[0], args)
            """
        return try Spawned(
            [CLI.python, "-c", script] + ([Array(executable.utf8)] + arguments).map(hex),
            directory: directory
        )
    }
}
