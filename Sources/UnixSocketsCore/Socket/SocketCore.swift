import Synchronization
import SystemPackage
@_spi(Locking) import UnixSocketsSystem

/// The kind of a Unix domain socket.
public enum UnixSocketType: String, Sendable, Hashable, CaseIterable {
    /// A byte stream (SOCK_STREAM).
    case stream
    /// Ordered, reliable messages with boundaries (SOCK_SEQPACKET).
    case seqPacket = "seqpacket"
    /// Datagrams (SOCK_DGRAM); reliable and ordered on Unix sockets, with boundaries.
    case datagram = "dgram"

    /// The kernel's SOCK_* value.
    package var rawType: CInt {
        switch self {
        case .stream: SystemConstants.sockStream
        case .seqPacket: SystemConstants.sockSeqPacket
        case .datagram: SystemConstants.sockDatagram
        }
    }

    /// What socket(2) and socketpair(2) take: the type, CLOEXEC, non-blocking.
    package var flags: CInt { rawType | SystemConstants.socketFlags }
}

/// Which direction(s) `shutdown` closes.
public enum ShutdownDirection: Sendable {
    /// No more receives (SHUT_RD).
    case read
    /// No more sends: the peer reads EOF (SHUT_WR).
    case write
    /// Both (SHUT_RDWR).
    case both
}

/// A point in time after which a blocking call gives up.
package struct Deadline {
    package let end: UInt64

    /// Nil for no timeout; a zero or negative timeout is invalid input.
    package static func after(_ timeout: Duration?, operation: String) throws(UnixSocketError) -> Deadline? {
        guard let timeout else { return nil }
        let (seconds, attoseconds) = timeout.components
        guard seconds > 0 || (seconds == 0 && attoseconds > 0) else {
            throw UnixSocketError(
                .invalidArgument,
                operation: operation,
                detail: "the timeout must be positive (got \(timeout))"
            )
        }
        // Saturating: a timeout too large to represent (`.seconds(1 << 62)`) means "never", not "at once".
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        let (nanoseconds, overflow2) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        if overflow || overflow2 { return Deadline(end: .max) }
        return Deadline(end: saturatingEnd(after: nanoseconds))
    }

    /// Now plus `nanoseconds`, saturating at `UInt64.max` (never).
    package static func saturatingEnd(after nanoseconds: UInt64) -> UInt64 {
        let (end, overflow) = system_monotonicNanoseconds().addingReportingOverflow(nanoseconds)
        return overflow ? .max : end
    }

    /// Milliseconds left, rounded up; 0 once passed.
    var remainingMilliseconds: CInt {
        let now = system_monotonicNanoseconds()
        guard end > now else { return 0 }
        return CInt(clamping: (end - now) / 1_000_000 + ((end - now) % 1_000_000 == 0 ? 0 : 1))
    }

    package var hasPassed: Bool { system_monotonicNanoseconds() >= end }
}

/// Checks a caller's byte count at the API boundary: negative is invalid input, never a trap.
/// - Returns: how many bytes to allocate for it: at most `allocationCap` (a read returns what is there,
///   never more than the socket buffers hold, so a huge `maxBytes` needs no huge buffer).
package func checkedByteCount(
    _ value: Int,
    _ name: String,
    operation: String,
    address: UnixAddress?,
    allocationCap: Int = .max
) throws(UnixSocketError) -> Int {
    if value < 0 {
        throw UnixSocketError(
            .invalidArgument,
            operation: operation,
            address: address,
            detail: "\(name) must not be negative (got \(value))"
        )
    }
    if allocationCap == .max && value > maximumExactRead {
        throw UnixSocketError(
            .invalidArgument,
            operation: operation,
            address: address,
            detail:
                "\(name) of \(value) bytes is over the \(maximumExactRead)-byte limit of one call; read into your own buffer"
        )
    }
    return min(value, allocationCap)
}

extension SocketCore {
    /// The buffer a receive allocates for `maxBytes`, checked (0...1 GiB) and capped: one message
    /// (`receive`) or what a stream read takes at once (`read`).
    package func receiveCapacity(_ maxBytes: Int, message: Bool) throws(UnixSocketError) -> Int {
        let cap = message ? maximumMessageBuffer : maximumStreamReadBuffer
        let operation = message ? "receive" : "read"
        return try checkedByteCount(maxBytes, "maxBytes", operation: operation, address: address, allocationCap: cap)
    }
}

/// The most bytes `read(exactly:)` allocates in one call (1 GiB).
let maximumExactRead = 1 << 30
/// The largest buffer `read(maxBytes:)` allocates: a stream read returns at most what is queued.
package let maximumStreamReadBuffer = 16 << 20
/// The largest buffer `receive(maxBytes:)` allocates: no Unix socket message is larger than the send buffer.
package let maximumMessageBuffer = 64 << 20

/// What an upper layer hangs on a socket (the async reactor's registration), without the core knowing it.
/// A socket holds at most one; it is told once, just before its descriptor is closed or released.
package protocol SocketAttachment: AnyObject, Sendable {
    /// The descriptor is about to be closed or given away: let go of it (deregister, wake waiters).
    func socketWillClose(_ descriptor: CInt)
}

/// The one owner of a socket descriptor. Threads borrow the number through `withDescriptor`; `close`
/// closes it exactly once: at once when nobody is using it, else after the last user returns (in-flight
/// waiters are woken by a shutdown and see `.closed`), so a reused descriptor number is never touched.
@usableFromInline package final class SocketCore: Sendable {
    /// The descriptor; valid until the socket is closed and its last user returned.
    private let fd: CInt
    /// Users and the closed flag in one word: `users << 1 | closed`. A user joins only while the flag is
    /// clear (compare-exchange); whoever brings the word to exactly `closed, 0 users` closes the descriptor,
    /// which happens exactly once: `close` when there were no users, else the last user leaving.
    private let state = Atomic<Int>(0)
    /// Input only: the last blocking receive had to wait, so the next one polls before its syscall
    /// (2 syscalls per wait instead of attempt, poll, retry). Only a hint: a wrong guess costs one syscall,
    /// never correctness. Not for output: poll reports a Unix socket writable only once its send buffer
    /// has drained to a quarter, so polling before each send stalls a writer that could have gone on.
    private let waitHints = Atomic<UInt8>(0)
    /// The socket's type.
    package let type: UnixSocketType
    /// The address used in error messages (bound or connected address), if known.
    package let address: UnixAddress?
    /// Whether SO_PASSCRED is on (receives then reserve room for SCM_CREDENTIALS).
    let passCredentials = Atomic<Bool>(false)
    /// What an upper layer attached (the reactor registration, made on the first async wait); told
    /// before close or release.
    let attachmentSlot = Lock<(any SocketAttachment)?>(nil)
    /// Called after the descriptor is closed (a listener unlinks its socket file here).
    let afterClose = Lock<(@Sendable () -> Void)?>(nil)
    /// An eventfd that `close` makes readable to wake threads blocked in poll on this socket, made on the
    /// first blocking wait (-1 until then). A shutdown would wake them too, but it reaches every holder
    /// of the same open socket (a parent sharing an inherited listener, a dup'ed descriptor's peer).
    private let wakeDescriptor = Atomic<CInt>(-1)

    init(adopting fd: CInt, type: UnixSocketType, address: UnixAddress?) {
        self.fd = fd
        self.type = type
        self.address = address
    }

    deinit {
        // Nobody can be using it (users hold a reference); close quietly if still open.
        if state.load(ordering: .acquiring) & 1 == 0 { finishClose(fd) }
        closeWakeDescriptor()
    }

    /// Closes the wake eventfd once nobody can be waiting on it (no user left).
    private func closeWakeDescriptor() {
        let wake = wakeDescriptor.exchange(-1, ordering: .acquiringAndReleasing)
        if wake >= 0 { _ = system_close(wake) }
    }

    /// Creates a new socket of `type` (CLOEXEC, non-blocking).
    package static func make(
        _ type: UnixSocketType,
        address: UnixAddress?,
        operation: String
    ) throws(UnixSocketError)
        -> SocketCore
    {
        switch system_socket(SystemConstants.afUnix, type.flags, 0) {
        case .success(let fd): return SocketCore(adopting: fd, type: type, address: address)
        case .failure(let errno): throw .system(operation, errno, address: address)
        }
    }

    /// Creates a connected pair (socketpair).
    static func pair(_ type: UnixSocketType) throws(UnixSocketError) -> (SocketCore, SocketCore) {
        var fds: (CInt, CInt) = (-1, -1)
        let result = withUnsafeMutableBytes(of: &fds) { raw in
            system_socketpair(type.flags, raw.baseAddress!.assumingMemoryBound(to: CInt.self))
        }
        if case .failure(let errno) = result { throw .system("socketpair", errno) }
        return (
            SocketCore(adopting: fds.0, type: type, address: nil), SocketCore(adopting: fds.1, type: type, address: nil)
        )
    }

    var isClosed: Bool { state.load(ordering: .acquiring) & 1 != 0 }

    package func closedError(_ operation: String) -> UnixSocketError {
        UnixSocketError(.closed, operation: operation, address: address, detail: "the socket is closed")
    }

    /// Lends the descriptor to `body`; throws `.closed` if the socket is closed.
    @inline(__always)
    package func withDescriptor<R>(
        _ operation: String,
        _ body: (CInt) throws(UnixSocketError) -> R
    ) throws(UnixSocketError)
        -> R
    {
        let fd = try beginUse(operation)
        defer { endUse() }
        return try body(fd)
    }

    /// Joins the users of the descriptor and returns it; throws `.closed` if the socket is closed. Every
    /// successful call is paired with one `endUse()`. (The operation drivers use the pair directly: a
    /// closure capturing a generic operation kept them from being specialized.)
    @inline(__always)
    package func beginUse(_ operation: String) throws(UnixSocketError) -> CInt {
        var current = state.load(ordering: .relaxed)
        while true {
            if current & 1 != 0 { throw closedError(operation) }
            let (exchanged, original) = state.weakCompareExchange(
                expected: current,
                desired: current &+ 2,
                successOrdering: .acquiring,
                failureOrdering: .relaxed
            )
            if exchanged { return fd }
            current = original
        }
    }

    /// Leaves the users of the descriptor (after `beginUse`).
    @inline(__always)
    package func endUse() {
        // Closed with no user left: this was the last user of a socket closed meanwhile.
        if state.subtract(2, ordering: .acquiringAndReleasing).newValue == 1 { finishClose(fd) }
    }

    /// Closes the descriptor once. Later calls do nothing. Waiters in other threads are woken.
    package func close() {
        let previous = state.bitwiseOr(1, ordering: .sequentiallyConsistent).oldValue
        if previous & 1 != 0 { return }
        if previous == 0 {
            finishClose(fd)
        } else {
            // Wake our own threads blocked in poll on it (never a shutdown, which other holders of the
            // socket would see); the last of them closes the descriptor. The socket file goes now: a
            // process may exit right after close() returns.
            let wake = wakeDescriptor.load(ordering: .sequentiallyConsistent)
            if wake >= 0 { Self.signal(wake) }
            runAfterClose()
        }
    }

    private static func signal(_ eventfd: CInt) {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { system_write(eventfd, $0) }
    }

    /// The wake eventfd, made on first use; nil if it cannot be made (the wait then polls in slices).
    private func wakeEventDescriptor() -> CInt? {
        let existing = wakeDescriptor.load(ordering: .sequentiallyConsistent)
        if existing >= 0 { return existing }
        guard case .success(let made) = system_eventfd() else { return nil }
        let (stored, current) = wakeDescriptor.compareExchange(
            expected: -1,
            desired: made,
            ordering: .sequentiallyConsistent
        )
        if stored { return made }
        _ = system_close(made)
        return current
    }

    private func finishClose(_ fd: CInt) {
        closeWakeDescriptor()
        detach(fd)
        if case .failure(let errno) = system_close(fd) {
            precondition(errno != .badFileDescriptor, "UnixSockets closed a descriptor it did not own: \(fd)")
        }
        runAfterClose()
    }

    /// Runs the after-close action once (a listener's socket-file removal).
    private func runAfterClose() {
        let after = afterClose.withLock { slot -> (@Sendable () -> Void)? in
            defer { slot = nil }
            return slot
        }
        after?()
    }

    /// Gives the descriptor away: the socket is closed afterwards, but the descriptor stays open.
    func release(_ operation: String = "release") throws(UnixSocketError) -> CInt {
        let (released, _) = state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing)
        guard released else {
            throw UnixSocketError(
                .closed,
                operation: operation,
                address: address,
                detail: "the socket is closed or in use by another thread"
            )
        }
        // Given away: the socket file stays (only now, once the release cannot fail any more).
        afterClose.withLock { $0 = nil }
        closeWakeDescriptor()
        detach(fd)
        return fd
    }

    /// The attachment, if one was made, as an object for the attaching layer to cast to its own class. (An
    /// `AtomicLazyReference` here cost a generic-metadata lookup per read, about 170 instructions: the
    /// Synchronization library does not specialize it for the caller.)
    package var attachedObject: (any AnyObject & Sendable)? { attachmentSlot.withLock { $0 } }

    /// Attaches what `make` returns unless something is attached already; returns what is attached.
    /// `make` runs under the slot's lock while the descriptor is in use, so it cannot race a close.
    package func attach<A: SocketAttachment>(
        _ operation: String,
        _ make: (CInt) throws(UnixSocketError) -> A
    ) throws(UnixSocketError) -> any SocketAttachment {
        try withDescriptor(operation) { (fd) throws(UnixSocketError) -> any SocketAttachment in
            try attachmentSlot.withLock { (slot) throws(UnixSocketError) -> any SocketAttachment in
                if let existing = slot { return existing }
                let made = try make(fd)
                slot = made
                return made
            }
        }
    }

    /// Tells the attachment, once, that the descriptor goes.
    private func detach(_ fd: CInt) {
        let attached = attachmentSlot.withLock { slot -> (any SocketAttachment)? in
            defer { slot = nil }
            return slot
        }
        attached?.socketWillClose(fd)
    }

    // MARK: Blocking I/O

    /// Waits with poll(2) until the descriptor is ready for `events` or the deadline passes.
    /// `close()` from another thread wakes it (an eventfd polled beside the socket) with `.closed`.
    func wait(_ fd: CInt, events: Int16, deadline: Deadline?, operation: String) throws(UnixSocketError) {
        let wake = wakeEventDescriptor()
        // Published before this check, so a close() either is seen here or sees the eventfd and signals it.
        if state.load(ordering: .sequentiallyConsistent) & 1 != 0 { throw closedError(operation) }
        while true {
            var timeout = deadline?.remainingMilliseconds ?? -1
            if timeout == 0 {
                throw UnixSocketError(.timedOut, operation: operation, address: address, detail: "timed out")
            }
            if wake == nil && (timeout < 0 || timeout > 100) { timeout = 100 }  // no eventfd: notice close() in slices
            switch PollDescriptor.poll(fd, events: events, wake: wake, timeoutMilliseconds: timeout) {
            case .success(0):
                if isClosed { throw closedError(operation) }
                continue  // timeout re-checked above
            case .success:
                if isClosed { throw closedError(operation) }
                return
            case .failure(.interrupted): continue
            case .failure(let errno): throw .system("poll", errno, address: address)
            }
        }
    }

    /// Whether the last blocking receive had to wait (`hint` 1: input).
    @inline(__always)
    func waitHint(_ hint: UInt8) -> Bool { waitHints.load(ordering: .relaxed) & hint != 0 }

    @inline(__always)
    func setWaitHint(_ hint: UInt8) {
        if waitHints.load(ordering: .relaxed) & hint == 0 { waitHints.bitwiseOr(hint, ordering: .relaxed) }
    }

    @inline(__always)
    func dropWaitHint(_ hint: UInt8) { waitHints.bitwiseAnd(~hint, ordering: .relaxed) }

    /// A poll shorter than this did not sleep: what it waited for was already there.
    static let immediatePollNanoseconds: UInt64 = 1_500

    /// Maps an errno to the public error; EBADF/EFAULT/ENOTSOCK on our own descriptor is our bug.
    func mapError(_ operation: String, _ errno: Errno) -> UnixSocketError {
        precondition(
            errno != .badAddress && errno != .notSocket,
            "UnixSockets bug: \(operation) on its own descriptor failed with \(errno)"
        )
        if errno == .badFileDescriptor && isClosed { return closedError(operation) }
        return .system(operation, errno, address: address)
    }

    // MARK: Options and addresses

    func getOption(_ level: CInt, _ name: CInt, operation: String) throws(UnixSocketError) -> CInt {
        try withDescriptor(operation) { (fd) throws(UnixSocketError) -> CInt in
            switch IntSocketOption.get(fd, level: level, name: name) {
            case .success(let value): return value
            case .failure(let errno): throw mapError(operation, errno)
            }
        }
    }

    func setOption(_ level: CInt, _ name: CInt, _ value: CInt, operation: String) throws(UnixSocketError) {
        try withDescriptor(operation) { (fd) throws(UnixSocketError) in
            if case .failure(let errno) = IntSocketOption.set(fd, level: level, name: name, value) {
                throw mapError(operation, errno)
            }
        }
    }

    func localAddress() throws(UnixSocketError) -> UnixAddress {
        try withDescriptor("getsockname") { (fd) throws(UnixSocketError) -> UnixAddress in
            resolved(
                try Self.readAddress("getsockname", address: address, SocketAddressStorage.localUnixAddress(of: fd))
            )
        }
    }

    func peerAddress() throws(UnixSocketError) -> UnixAddress {
        try withDescriptor("getpeername") { (fd) throws(UnixSocketError) -> UnixAddress in
            resolved(
                try Self.readAddress("getpeername", address: address, SocketAddressStorage.peerUnixAddress(of: fd))
            )
        }
    }

    /// A path socket is bound by its name inside its directory (see `SocketFile`), so the kernel reports
    /// that name alone; where it is the last component of the address this socket was made for, report
    /// that address.
    private func resolved(_ reported: UnixAddress) -> UnixAddress {
        guard case .path(let name) = reported.kind, name.first != UInt8(ascii: "/"),
            let address, case .path(let full) = address.kind, full.count > name.count,
            full.suffix(name.count).elementsEqual(name), full[full.count - name.count - 1] == UInt8(ascii: "/")
        else { return reported }
        return address
    }

    static func readAddress(
        _ operation: String,
        address: UnixAddress?,
        _ result: Result<(address: SocketAddressStorage.Unix, length: SocketAddressStorage.Length), Errno>
    ) throws(UnixSocketError) -> UnixAddress {
        switch result {
        case .success(let named): return UnixAddress(sockaddr: named.address, length: named.length)
        case .failure(let errno): throw .system(operation, errno, address: address)
        }
    }

    package func shutdown(_ direction: ShutdownDirection) throws(UnixSocketError) {
        let how =
            switch direction {
            case .read: SystemConstants.shutRead
            case .write: SystemConstants.shutWrite
            case .both: SystemConstants.shutBoth
            }
        try withDescriptor("shutdown") { (fd) throws(UnixSocketError) in
            if case .failure(let errno) = system_shutdown(fd, how) { throw mapError("shutdown", errno) }
        }
    }

    /// Connects to `address`, retrying a full backlog (EAGAIN) with back-off until the deadline.
    func connect(to address: UnixAddress, timeout: Duration?) throws(UnixSocketError) {
        var operation = try Connect(to: address)
        try perform(&operation, timeout: timeout)
    }

    /// Plain bind (datagram sockets, autobind, abstract names). Listeners on paths use `SocketFile`.
    func bind(to address: UnixAddress) throws(UnixSocketError) {
        try address.withSockAddr(operation: "bind") { (pointer, length) throws(UnixSocketError) in
            try withDescriptor("bind") { (fd) throws(UnixSocketError) in
                if case .failure(let errno) = system_bind(fd, pointer, length) {
                    throw .system("bind", errno, address: address)
                }
            }
        }
    }

    /// Binds an abstract name or `.unnamed` (the kernel then chooses an abstract name: autobind). An
    /// abstract name has no file, so a mode for it is an error.
    func bindWithoutFile(to address: UnixAddress, mode: FilePermissions?) throws(UnixSocketError) {
        if mode != nil && address.isAbstract {
            throw UnixSocketError(
                .invalidArgument,
                operation: "bind",
                address: address,
                detail: "abstract names have no file and no mode; check peer credentials instead"
            )
        }
        try bind(to: address)
    }

    /// Reads the `SO_TYPE` of a descriptor (to check an adopted one).
    static func socketType(of fd: CInt) -> Result<UnixSocketType?, Errno> {
        switch IntSocketOption.get(fd, level: SystemConstants.solSocket, name: SystemConstants.soType) {
        case .failure(let errno): return .failure(errno)
        case .success(let value):
            switch value {
            case SystemConstants.sockStream: return .success(.stream)
            case SystemConstants.sockSeqPacket: return .success(.seqPacket)
            case SystemConstants.sockDatagram: return .success(.datagram)
            default: return .success(nil)
            }
        }
    }

    /// Adopts a descriptor handed in by the caller: checks it is an AF_UNIX socket of `type` and makes it
    /// non-blocking (a socket the caller created for us; inherited stdin/stdout are never adopted).
    static func adopt(
        _ descriptor: FileDescriptor,
        type: UnixSocketType,
        operation: String
    ) throws(UnixSocketError)
        -> SocketCore
    {
        let fd = descriptor.rawValue
        switch socketType(of: fd) {
        case .failure(let errno): throw .system(operation, errno)
        case .success(let actual) where actual != type:
            throw UnixSocketError(
                .invalidArgument,
                operation: operation,
                detail: "descriptor \(fd) is a \(actual?.rawValue ?? "non-Unix") socket, not \(type.rawValue)"
            )
        case .success: break
        }
        let named: (address: SocketAddressStorage.Unix, length: SocketAddressStorage.Length)
        switch SocketAddressStorage.localUnixAddress(of: fd) {
        case .success(let found): named = found
        case .failure(let errno): throw .system(operation, errno)
        }
        guard SocketAddressStorage.isUnixFamily(named.address) else {
            throw UnixSocketError(
                .invalidArgument,
                operation: operation,
                detail: "descriptor \(fd) is not a Unix socket"
            )
        }
        switch system_fcntl(fd, SystemConstants.fcntlGetStatusFlags) {
        case .failure(let errno): throw .system(operation, errno)
        case .success(let flags) where flags & SystemConstants.openNonBlocking == 0:
            if case .failure(let errno) = system_fcntl(
                fd,
                SystemConstants.fcntlSetStatusFlags,
                flags | SystemConstants.openNonBlocking
            ) {
                throw .system(operation, errno)
            }
        case .success: break
        }
        return SocketCore(adopting: fd, type: type, address: UnixAddress(sockaddr: named.address, length: named.length))
    }
}
