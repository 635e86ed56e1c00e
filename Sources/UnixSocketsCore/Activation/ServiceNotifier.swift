public import SystemPackage
import UnixSocketsSystem

// sd_notify(3): one datagram of NAME=VALUE lines to $NOTIFY_SOCKET (a path, or `@` for an abstract name),
// sent with this process's credentials (systemd drops a message without them), descriptors only with
// FDSTORE=1. BARRIER=1 carries the write end of a fresh pipe; the manager closes its copy once it has
// handled everything sent before, which the sender sees as the read end's hang-up.

/// One assignment of a service notification (sd_notify(3)).
public enum ServiceState: Sendable, Equatable {
    /// `READY=1`: start-up is finished.
    case ready
    /// `RELOADING=1` with `MONOTONIC_USEC=` now: reloading its configuration (send ``ready`` when done).
    case reloading
    /// `STOPPING=1`: shutting down.
    case stopping
    /// `STATUS=...`: a one-line status for `systemctl status`.
    case status(String)
    /// `ERRNO=...`: the error the service failed with.
    case errno(Int32)
    /// `MAINPID=...`: the service's main process.
    case mainPID(Int32)
    /// `WATCHDOG=1`: the watchdog keep-alive ping.
    case watchdog
    /// `FDSTORE=1` with `FDNAME=` when given: keep the descriptors sent with this message.
    case storeDescriptors(name: String?)

    var lines: [String] {
        switch self {
        case .ready: ["READY=1"]
        case .reloading: ["RELOADING=1", "MONOTONIC_USEC=\(system_monotonicNanoseconds() / 1000)"]
        case .stopping: ["STOPPING=1"]
        case .status(let text): ["STATUS=\(text)"]
        case .errno(let value): ["ERRNO=\(value)"]
        case .mainPID(let pid): ["MAINPID=\(pid)"]
        case .watchdog: ["WATCHDOG=1"]
        case .storeDescriptors(let name): ["FDSTORE=1"] + (name.map { ["FDNAME=\($0)"] } ?? [])
        }
    }
}

/// Tells the service manager about this service's state (sd_notify). ``fromEnvironment()`` is nil when
/// `NOTIFY_SOCKET` is unset (not started by a manager): every notification is then a no-op.
///
/// ```swift
/// let notifier = try ServiceNotifier.fromEnvironment()
/// try notifier?.notify(.ready, .status("serving on /run/app.sock"))
/// ```
public struct ServiceNotifier: Sendable {
    /// Where notifications go.
    public let address: UnixAddress
    /// How long one notification may wait for room in the manager's queue, and BARRIER=1 for its answer.
    public var timeout: Duration

    /// A notifier for `address` (what `NOTIFY_SOCKET` names).
    public init(address: UnixAddress, timeout: Duration = .seconds(5)) {
        self.address = address
        self.timeout = timeout
    }

    /// The notifier `NOTIFY_SOCKET` names, or nil when it is unset or empty.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` when it is set to something that is no address
    ///   (neither an absolute path nor `@name`).
    public static func fromEnvironment() throws(UnixSocketError) -> ServiceNotifier? {
        guard let raw = system_getenv("NOTIFY_SOCKET"), !raw.isEmpty else { return nil }
        guard raw.first == UInt8(ascii: "/") || raw.first == UInt8(ascii: "@") else {
            throw UnixSocketError(
                .invalidArgument,
                operation: "notify",
                detail: "NOTIFY_SOCKET=\(String(decoding: raw, as: UTF8.self)) is neither an absolute path nor @name"
            )
        }
        let address: UnixAddress
        if raw.first == UInt8(ascii: "@") {
            address = try UnixAddress.abstract(Array(raw.dropFirst()))
        } else {
            address = try UnixAddress.path(bytes: raw)
        }
        return ServiceNotifier(address: address)
    }

    /// Sends `states` in one datagram, with `descriptors` (only with ``ServiceState/storeDescriptors(name:)``).
    /// - Throws: ``UnixSocketError``: the manager's socket is missing or refuses (ENOENT, ECONNREFUSED), its
    ///   queue stayed full for ``timeout``, a value holds a newline or NUL, or descriptors without FDSTORE=1.
    public func notify(_ states: ServiceState..., descriptors: [FileDescriptor] = []) throws(UnixSocketError) {
        try notify(states, descriptors: descriptors)
    }

    /// Sends `states` in one datagram (see the variadic form).
    public func notify(_ states: [ServiceState], descriptors: [FileDescriptor] = []) throws(UnixSocketError) {
        let lines = states.flatMap(\.lines)
        for line in lines where line.utf8.contains(where: { $0 == 0 || $0 == 0x0A }) {
            throw UnixSocketError(
                .invalidArgument,
                operation: "notify",
                address: address,
                detail: "\(line.prefix(40).debugDescription) holds a newline or NUL: it would forge another field"
            )
        }
        if !descriptors.isEmpty && !states.contains(where: { if case .storeDescriptors = $0 { true } else { false } }) {
            throw UnixSocketError(
                .invalidArgument,
                operation: "notify",
                address: address,
                detail: "descriptors go only with FDSTORE=1 (.storeDescriptors); the manager would close them"
            )
        }
        try send(Array(lines.joined(separator: "\n").utf8), descriptors: descriptors)
    }

    /// `BARRIER=1`: sends the write end of a fresh pipe and waits, at most ``timeout``, until the manager
    /// closes it, which it does once it has handled every notification sent before (what
    /// `systemd-notify --ready` does after READY=1).
    /// - Throws: ``UnixSocketError`` `.timedOut` when the manager did not answer in time.
    public func barrier() throws(UnixSocketError) {
        let ends: (read: CInt, write: CInt)
        switch system_pipe() {
        case .success(let pair): ends = pair
        case .failure(let errno): throw .system("notify", errno, address: address)
        }
        let reader = OwnedDescriptor(ends.read)
        defer { reader.close() }
        let writer = OwnedDescriptor(ends.write)
        let sent = Result { () throws(UnixSocketError) in
            try send(Array("BARRIER=1".utf8), descriptors: [FileDescriptor(rawValue: ends.write)])
        }
        writer.close()  // the manager's copy is now the only one
        try sent.get()
        let deadline = system_monotonicNanoseconds() + UInt64(max(timeout.components.seconds, 0)) * 1_000_000_000
        while true {
            let now = system_monotonicNanoseconds()
            guard now < deadline else {
                throw UnixSocketError(
                    .timedOut,
                    operation: "notify",
                    address: address,
                    detail: "BARRIER=1 was not answered within \(timeout): the manager did not close the pipe"
                )
            }
            var entry = PollDescriptor(ends.read, events: SystemConstants.pollIn)
            switch entry.poll(timeoutMilliseconds: CInt(min((deadline - now) / 1_000_000 + 1, 60_000))) {
            case .success(0), .failure(.interrupted): continue
            case .success: return  // POLLHUP: every copy of the write end is closed
            case .failure(let errno): throw .system("notify", errno, address: address)
            }
        }
    }

    /// The watchdog interval the manager expects pings within (`WATCHDOG_USEC`), when it is meant for this
    /// process (`WATCHDOG_PID` unset or ours); ping at half of it.
    public static var watchdogInterval: Duration? {
        if let pid = system_getenv("WATCHDOG_PID").map({ String(decoding: $0, as: UTF8.self) }),
            Int32(pid) != system_getpid()
        {
            return nil
        }
        guard let text = system_getenv("WATCHDOG_USEC").map({ String(decoding: $0, as: UTF8.self) }),
            let microseconds = Int64(text), microseconds > 0
        else { return nil }
        return .microseconds(microseconds)
    }

    private func send(_ message: [UInt8], descriptors: [FileDescriptor]) throws(UnixSocketError) {
        let socket = try UnixDatagram.unbound()
        defer { socket.close() }
        try socket.core.sendMessage(
            message,
            descriptors: descriptors,
            credentials: .current,
            to: address,
            timeout: timeout
        )
    }
}
