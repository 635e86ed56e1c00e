public import ArgumentParser
import SystemPackage
public import UnixSockets

/// `-t, --type`: the library's own socket type, spelled as its raw values (`stream`, `seqpacket`, `dgram`).
/// ArgumentParser is the CLI's choice, so the conformance lives here rather than in the library. Not marked
/// `@retroactive`: the type is declared in this package, where Swift 6.3 refuses the attribute (and gives
/// no warning without it).
extension UnixSocketType: ExpressibleByArgument {}

/// Parses ADDRESS for `@Argument(transform:)` from the argument's exact bytes (a path need not be UTF-8):
/// an invalid address is a usage error (status 64) that carries the library's reason, before any socket
/// is made.
func parseAddress(_ text: String) throws -> UnixAddress {
    try address(fromArgument: RawArguments.bytes(of: text))
}

/// `--mode OCTAL`, for the commands that bind a socket file.
struct ModeOption: ParsableArguments {
    @Option(
        help: "The socket file's exact permission bits, in octal (0 to 777), whatever the umask.",
        transform: parseMode
    )
    var mode: FilePermissions?

    /// A mode needs a file: an abstract name has none.
    func check(_ address: UnixAddress, hint: String = "") throws {
        if mode != nil && address.isAbstract {
            throw ValidationError("--mode: abstract names have no file and no mode" + hint)
        }
    }
}

/// Parses `--mode` as octal permission bits, 0 to 777. The setuid, setgid and sticky bits mean nothing on
/// a socket file (and only mislead whoever reads `ls -l`): refused as a usage error.
func parseMode(_ text: String) throws -> FilePermissions {
    guard let mode = UInt32(text, radix: 8) else {
        throw ValidationError("--mode takes octal permission bits such as 600 or 0660 (got '\(text)')")
    }
    guard mode <= 0o777 else {
        throw ValidationError(
            "--mode takes permission bits 0 to 777 (rwx for user, group and others); setuid, setgid and sticky "
                + "bits are refused (got '\(text)')"
        )
    }
    return FilePermissions(rawValue: mode)
}

/// `--allow-uid`, `--allow-gid`, `-v`: who may connect, and saying so.
struct PeerOptions: ParsableArguments {
    @Option(
        name: .customLong("allow-uid"),
        help: ArgumentHelp("Accept only peers with this user id (repeatable).", valueName: "uid")
    )
    var allowUIDs: [UInt32] = []

    @Option(
        name: .customLong("allow-gid"),
        help: ArgumentHelp(
            "Accept only peers with this primary or supplementary group id (repeatable).",
            valueName: "gid"
        )
    )
    var allowGIDs: [UInt32] = []

    @Flag(
        name: .shortAndLong,
        help: """
            One stderr line per peer (uds: peer pid=PID uid=UID gid=GID), and the command's own notes: \
            descriptors closed, echoes dropped, bytes copied.
            """
    )
    var verbose = false

    /// The plain values, for threads and tasks.
    var policy: PeerPolicy { PeerPolicy(uids: Set(allowUIDs), gids: Set(allowGIDs), verbose: verbose) }
}

/// Who may connect (`--allow-uid`, `--allow-gid`) and whether to say so (`-v`).
struct PeerPolicy: Sendable {
    let uids: Set<UInt32>
    let gids: Set<UInt32>
    let verbose: Bool

    var restricts: Bool { !uids.isEmpty || !gids.isEmpty }
    var needsCredentials: Bool { restricts || verbose }

    /// Whether a peer with `credentials` (nil: unknown, never admitted by a restriction) is admitted;
    /// with `-v` says so on stderr.
    func admit(_ credentials: UnixCredentials?) -> Bool {
        let known = credentials ?? UnixCredentials(pid: nil, uid: nil, gid: nil)
        if restricts && !known.isAllowed(uids: uids, gids: gids) {
            if verbose { Lifecycle.diagnostic("refused peer \(known)") }
            return false
        }
        if verbose { Lifecycle.diagnostic("peer \(known)") }
        return true
    }

    /// Admits (or not) a connected peer from its SO_PEERCRED + SO_PEERGROUPS credentials.
    func admit(_ connection: UnixStream) -> Bool {
        guard needsCredentials else { return true }
        return admit(try? connection.credentials)
    }

    func admit(_ connection: UnixSeqPacket) -> Bool {
        guard needsCredentials else { return true }
        return admit(try? connection.credentials)
    }
}
