import ArgumentParser
import SystemPackage
import UnixSockets

/// The sockets systemd (or `uds activate`, or `systemd-socket-activate`) passed to this process, read once,
/// the environment variables then removed so that no child inherits them.
enum Activated {
    static let sockets: Result<[ActivatedSocket], UnixSocketError> = Result { () throws(UnixSocketError) in
        try SocketActivation.sockets()
    }

    /// The activated socket a command serves on: the one at `address` when it is given, the only one when it
    /// is not; nil when this process was not activated (then `address` is required).
    /// - Throws: a usage error (64) when the address matches no activated socket (both shown), when several
    ///   were passed and no address picks one (listed), or when neither an address nor a socket is there.
    static func pick(_ address: UnixAddress?, what: String = "ADDRESS") throws -> ActivatedSocket? {
        let sockets: [ActivatedSocket]
        switch Self.sockets {
        case .success(let found): sockets = found
        case .failure(let error): throw ValidationError(error.description)
        }
        if sockets.isEmpty {
            guard address != nil else {
                throw ValidationError("missing \(what) (none was activated: LISTEN_FDS does not name this process)")
            }
            return nil
        }
        let list = sockets.map(\.description).joined(separator: "; ")
        guard let address else {
            guard sockets.count == 1 else {
                throw ValidationError("\(sockets.count) sockets were activated: give the \(what) of one: \(list)")
            }
            return sockets[0]
        }
        guard let match = sockets.first(where: { $0.address == address }) else {
            throw ValidationError("\(what) \(address) is not the activated socket's address: \(list)")
        }
        return match
    }

    /// The socket type a command uses: the one given with -t, else the activated socket's, else `fallback`.
    static func type(given: UnixSocketType?, activated: ActivatedSocket?, fallback: UnixSocketType) -> UnixSocketType {
        if let given { return given }
        switch activated?.kind {
        case .listener(let type), .connection(let type): return type
        case .datagram: return .datagram
        case .other, nil: return fallback
        }
    }

    /// The listener a command serves on: the activated one (never unlinked), or `address` bound with the
    /// safe socket-file rules; closed at exit either way, READY=1 once it is there.
    static func listener<Connection: UnixConnection>(
        _ type: Connection.Type,
        activated: ActivatedSocket?,
        address: UnixAddress?,
        mode: FilePermissions?
    ) throws -> UnixListener<Connection> {
        let listener = try closingOnExit({ () throws in
            if let activated { return try activated.listener(Connection.self) }
            return try UnixListener<Connection>.bind(address!, mode: mode)
        }) { $0.close() }
        Notification.ready("listening on \(listener.address)")
        return listener
    }

    /// The same for a bound datagram socket.
    static func datagram(
        activated: ActivatedSocket?,
        address: UnixAddress?,
        mode: FilePermissions?
    ) throws
        -> UnixDatagram
    {
        let socket = try closingOnExit({ () throws in
            if let activated { return try activated.datagram() }
            return try UnixDatagram.bind(address!, mode: mode)
        }) { $0.close() }
        Notification.ready("receiving on \((activated?.address ?? address).map { "\($0)" } ?? "an activated socket")")
        return socket
    }

    /// The activated Accept=yes connection, when that is what was passed: the command's one peer.
    static func connection<Connection: UnixConnection>(
        _ type: Connection.Type,
        activated: ActivatedSocket?
    ) throws
        -> Connection?
    {
        guard let activated, isConnection(activated) else { return nil }
        let connection = try closingOnExit({ try activated.connection(Connection.self) }) { $0.close() }
        Notification.ready("serving one connection")
        return connection
    }

    /// Whether `socket` is an accepted connection (Accept=yes), served as the one peer.
    static func isConnection(_ socket: ActivatedSocket?) -> Bool {
        if case .connection = socket?.kind { return true }
        return false
    }
}

/// sd_notify for the commands: READY=1 once a command accepts, STOPPING=1 when it ends. Not started by a
/// service manager (NOTIFY_SOCKET unset), nothing is sent; a manager that cannot be reached gets one
/// `uds: ` line and the command goes on serving.
enum Notification {
    static let notifier: ServiceNotifier? = {
        do {
            return try ServiceNotifier.fromEnvironment()
        } catch {
            Lifecycle.diagnostic("\(error)")
            return nil
        }
    }()

    /// READY=1 (with a status line), and STOPPING=1 registered for the end of the command.
    static func ready(_ status: String) {
        guard let notifier else { return }
        send(notifier, [.ready, .status(status)])
        Lifecycle.onExit { send(notifier, [.stopping]) }
    }

    private static func send(_ notifier: ServiceNotifier, _ states: [ServiceState]) {
        do {
            try notifier.notify(states)
        } catch {
            Lifecycle.diagnostic("\(error)")
        }
    }
}
