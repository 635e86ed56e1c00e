import Synchronization
public import SystemPackage
import UnixSocketsSystem

// systemd socket activation, as sd_listen_fds_with_names(3) defines it: the service manager passes sockets
// as descriptors 3, 4, ..., counted by LISTEN_FDS, meant for the process whose pid is LISTEN_PID, named by
// LISTEN_FDNAMES (colon-separated). What each descriptor is, is asked of the kernel (SO_DOMAIN, SO_TYPE,
// SO_ACCEPTCONN, getsockname), never guessed from its name: systemd names an Accept=yes connection
// `connection`, but `systemd-socket-activate -a` sets no LISTEN_FDNAMES at all.

/// One descriptor the service manager passed, with its name and what the kernel says it is. Take it as the
/// typed socket it is with ``listener(_:)``, ``datagram()`` or ``connection(_:)``; the socket then owns the
/// descriptor. One that is never taken stays open and untouched.
public final class ActivatedSocket: Sendable, CustomStringConvertible {
    /// What an activated descriptor is.
    public enum Kind: Sendable, Equatable {
        /// A listening Unix socket (stream or seqpacket): take it with ``listener(_:)``.
        case listener(UnixSocketType)
        /// A Unix datagram socket: take it with ``datagram()``.
        case datagram
        /// A connected Unix socket (Accept=yes, `systemd-socket-activate -a`): take it with ``connection(_:)``.
        case connection(UnixSocketType)
        /// Anything else, described ("an AF_INET stream socket", "a regular file", "not open"): never taken.
        case other(String)
    }

    /// The descriptor number (3, 4, ...).
    public let descriptor: FileDescriptor
    /// Its name from LISTEN_FDNAMES (`unknown` when the manager gave none).
    public let name: String
    public let kind: Kind
    /// The address it is bound to (Unix sockets; `.unnamed` for an unbound one).
    public let address: UnixAddress?
    private let taken = Atomic<Bool>(false)

    init(descriptor: FileDescriptor, name: String, kind: Kind, address: UnixAddress?) {
        self.descriptor = descriptor
        self.name = name
        self.kind = kind
        self.address = address
    }

    /// `descriptor 3 "web" (a stream listener on /run/app.sock)`.
    public var description: String {
        "descriptor \(descriptor.rawValue) \"\(name)\" (\(Self.describe(kind))\(address.map { " on \($0)" } ?? ""))"
    }

    /// Takes a listening socket of `Connection`'s type. It never removes its socket file (the service
    /// manager owns it).
    /// - Throws: ``UnixSocketError`` `.invalidArgument` naming the descriptor, what it is and what was asked,
    ///   if it is not a listening Unix socket of that type, or was already taken.
    public func listener<Connection: UnixConnection>(
        _ type: Connection.Type = Connection.self
    ) throws(UnixSocketError) -> UnixListener<Connection> {
        try check(.listener(Connection.socketType), asked: "a \(Connection.socketType.rawValue) listener")
        return try UnixListener(adopting: descriptor, removeSocketFileOnClose: false)
    }

    /// Takes a Unix datagram socket.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` if it is something else, or was already taken.
    public func datagram() throws(UnixSocketError) -> UnixDatagram {
        try check(.datagram, asked: "a datagram socket")
        return try UnixDatagram(adopting: descriptor)
    }

    /// Takes a connected socket of `Connection`'s type (an Accept=yes connection).
    /// - Throws: ``UnixSocketError`` `.invalidArgument` if it is something else, or was already taken.
    public func connection<Connection: UnixConnection>(
        _ type: Connection.Type = Connection.self
    ) throws(UnixSocketError) -> Connection {
        try check(.connection(Connection.socketType), asked: "a connected \(Connection.socketType.rawValue) socket")
        return Connection(core: try SocketCore.adopt(descriptor, type: Connection.socketType, operation: "adopt"))
    }

    private func check(_ wanted: Kind, asked: String) throws(UnixSocketError) {
        guard kind == wanted else {
            throw UnixSocketError(
                .invalidArgument,
                operation: "socket activation",
                detail: "\(self) is not \(asked)"
            )
        }
        guard !taken.exchange(true, ordering: .acquiringAndReleasing) else {
            throw UnixSocketError(.invalidArgument, operation: "socket activation", detail: "\(self) was already taken")
        }
    }

    static func describe(_ kind: Kind) -> String {
        switch kind {
        case .listener(let type): "a \(type.rawValue) listener"
        case .datagram: "a datagram socket"
        case .connection(let type): "a connected \(type.rawValue) socket"
        case .other(let what): what
        }
    }
}

/// systemd socket activation: the sockets the service manager passed to this process.
public enum SocketActivation {
    /// The first passed descriptor (SD_LISTEN_FDS_START).
    public static let firstDescriptor: CInt = 3

    /// The sockets passed to this process, as `sd_listen_fds_with_names` reads them: none unless
    /// `LISTEN_PID` is this process's pid; `LISTEN_FDS` of them from descriptor 3, each marked close-on-exec
    /// and named from `LISTEN_FDNAMES` (`unknown` where it gives none). With `unsetEnvironment` (the default)
    /// the three variables are removed, so that children do not inherit them. Nothing is taken: see
    /// ``ActivatedSocket``.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` when LISTEN_FDS or LISTEN_PID is not a number, or
    ///   LISTEN_FDNAMES does not name every descriptor (the variables are then removed all the same).
    public static func sockets(unsetEnvironment: Bool = true) throws(UnixSocketError) -> [ActivatedSocket] {
        let pidText = system_getenv("LISTEN_PID")
        let countText = system_getenv("LISTEN_FDS")
        let namesText = system_getenv("LISTEN_FDNAMES")
        if unsetEnvironment {
            for variable in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] { system_unsetenv(variable) }
        }
        guard let pidText, let countText else { return [] }
        guard let pid = number(pidText), pid > 0 else {
            throw invalid("LISTEN_PID=\(String(decoding: pidText, as: UTF8.self)) is not a process id")
        }
        guard pid == Int(system_getpid()) else { return [] }  // meant for another process (a parent's)
        guard let count = number(countText), count >= 0, count <= Int(CInt.max) - Int(firstDescriptor) else {
            throw invalid("LISTEN_FDS=\(String(decoding: countText, as: UTF8.self)) is not a descriptor count")
        }
        var names = Array(repeating: "unknown", count: count)
        if let namesText {
            let given = namesText.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self) }
            guard given.count == count else {
                throw invalid("LISTEN_FDNAMES names \(given.count) descriptors, LISTEN_FDS=\(count)")
            }
            names = given.map { $0.isEmpty ? "unknown" : $0 }
        }
        return (0..<count).map { index in
            let fd = firstDescriptor + CInt(index)
            if case .success(let flags) = system_fcntl(fd, SystemConstants.fcntlGetDescriptorFlags),
                flags & SystemConstants.descriptorCloseOnExec == 0
            {
                _ = system_fcntl(
                    fd,
                    SystemConstants.fcntlSetDescriptorFlags,
                    flags | SystemConstants.descriptorCloseOnExec
                )
            }
            let (kind, address) = inspect(fd)
            return ActivatedSocket(
                descriptor: FileDescriptor(rawValue: fd),
                name: names[index],
                kind: kind,
                address: address
            )
        }
    }

    /// What the kernel says descriptor `fd` is.
    static func inspect(_ fd: CInt) -> (ActivatedSocket.Kind, UnixAddress?) {
        let domain: CInt
        switch IntSocketOption.get(fd, level: SystemConstants.solSocket, name: SystemConstants.soDomain) {
        case .success(let value): domain = value
        case .failure(let errno):
            if errno == .badFileDescriptor { return (.other("not open"), nil) }
            if errno == .notSocket {
                let type = FileStatus.of(fd).map { "a \($0.type.name)" }
                return (.other((try? type.get()) ?? "not a socket"), nil)
            }
            return (.other("unreadable (\(errno))"), nil)
        }
        let type = (try? SocketCore.socketType(of: fd).get()) ?? nil
        guard domain == SystemConstants.afUnix, let type else {
            let family =
                switch domain {
                case SystemConstants.afUnix: "AF_UNIX"
                case SystemConstants.afInet: "AF_INET"
                case SystemConstants.afInet6: "AF_INET6"
                default: "family \(domain)"
                }
            return (.other("an \(family) \(type?.rawValue ?? "other") socket"), nil)
        }
        let address = try? SocketCore.readAddress(
            "getsockname",
            address: nil,
            SocketAddressStorage.localUnixAddress(of: fd)
        )
        if type == .datagram { return (.datagram, address) }
        let listening = IntSocketOption.get(fd, level: SystemConstants.solSocket, name: SystemConstants.soAcceptConn)
        return ((try? listening.get()) ?? 0 != 0 ? .listener(type) : .connection(type), address)
    }

    private static func number(_ text: [UInt8]) -> Int? {
        guard !text.isEmpty, text.count <= 18, text.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(String(decoding: text, as: UTF8.self))
    }

    private static func invalid(_ detail: String) -> UnixSocketError {
        UnixSocketError(.invalidArgument, operation: "socket activation", detail: detail)
    }
}
