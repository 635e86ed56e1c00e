// The syscall layer's wrappers (with MessageCalls, Poll, Epoll, InetAddress and the other files of
// this target, the only code that calls libc). One `system_*` wrapper per syscall; errno is read in
// `valueOrErrno` alone; EINTR is retried on every call but `close`; EAGAIN is returned as a value.
package import CUnixSockets
import Synchronization
package import SystemPackage

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency package import Musl
#endif

// MARK: - Results

/// The outcome of a syscall that may would-block: EAGAIN is a value, not an error.
package enum IOResult<Value> {
    case done(Value)
    case wouldBlock
}

/// What a call that may would-block returns: its value, EAGAIN as `.wouldBlock`, or the error.
package typealias IOOutcome<Value> = Result<IOResult<Value>, Errno>

/// Runs `body`, reads errno once on failure, retries EINTR when asked, consults the test mock (debug builds).
@inline(__always)
func valueOrErrno<T: FixedWidthInteger>(
    _ name: StaticString,
    retryOnInterrupt: Bool = true,
    _ body: () -> T
) -> Result<T, Errno> {
    while true {
        #if DEBUG
        if SyscallMock.isActive, let forced = SyscallMock.next(for: name) {
            if forced == .interrupted && retryOnInterrupt { continue }
            return .failure(forced)
        }
        #endif
        let value = body()
        if value != -1 { return .success(value) }
        let errno = Errno(rawValue: uds_errno())
        if errno == .interrupted && retryOnInterrupt { continue }
        return .failure(errno)
    }
}

/// Same as `valueOrErrno`, but EAGAIN/EWOULDBLOCK becomes `.wouldBlock`.
@inline(__always)
func ioResultOrErrno<T: FixedWidthInteger>(_ name: StaticString, _ body: () -> T) -> Result<IOResult<T>, Errno> {
    switch valueOrErrno(name, body) {
    case .success(let value): return .success(.done(value))
    case .failure(let errno) where errno == .resourceTemporarilyUnavailable || errno == .wouldBlock:
        return .success(.wouldBlock)
    case .failure(let errno): return .failure(errno)
    }
}

// MARK: - Locks

/// A mutual-exclusion lock around a value, on pthread_mutex. The library uses it instead of
/// `Synchronization.Mutex`, whose contended path hands the lock over in the kernel (a PI futex), where
/// ThreadSanitizer cannot see it: every contended section was reported as a race. Same shape as `Mutex`.
@_spi(Locking) public final class Lock<Value>: @unchecked Sendable {  // the value is reached only under the lock
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    /// Behind a pointer, not a stored `var`: no class-property access tracking outside the lock.
    @usableFromInline let value: UnsafeMutablePointer<Value>

    public init(_ value: consuming sending Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        precondition(pthread_mutex_init(mutex, nil) == 0, "pthread_mutex_init")
        self.value = .allocate(capacity: 1)
        self.value.initialize(to: value)
    }

    deinit {
        value.deinitialize(count: 1)
        value.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, under the lock.
    ///
    /// Public (behind the `Locking` SPI, for the library's own layers) and inlinable, so that the callers
    /// in the layers above specialize and inline it: Swift 6.3 does not inline an `@inlinable package`
    /// function into another module, nor one with `sending` in its signature, and a generic call across
    /// the module boundary costs a metadata lookup and a closure context per lock.
    @inlinable
    public func withLock<Result, E: Error>(
        _ body: (inout Value) throws(E) -> Result
    ) throws(E) -> Result {
        lock()
        defer { unlock() }
        return try body(&value.pointee)
    }

    @usableFromInline func lock() { pthread_mutex_lock(mutex) }
    @usableFromInline func unlock() { pthread_mutex_unlock(mutex) }
}

// MARK: - Test hook

#if DEBUG
/// A syscall mock for tests: queue errnos that the next calls of a named wrapper, on the calling thread,
/// return instead of calling the kernel (EINTR is then retried like a real one). Inactive, it costs one
/// atomic load per syscall. Debug builds only (the tests build in debug): a release build has no mock and
/// no check.
package enum SyscallMock {
    private static let active = Atomic<Int>(0)
    private static let queues = Lock<[UInt: [String: [Errno]]]>([:])

    static var isActive: Bool { active.load(ordering: .relaxed) > 0 }

    /// Runs `body` with the given errnos queued for this thread: `[("recv", [.interrupted, .interrupted])]`.
    package static func with<R>(_ plan: [(String, [Errno])], _ body: () throws -> R) rethrows -> R {
        let thread = UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
        queues.withLock { queues in
            var mine: [String: [Errno]] = [:]
            for (name, errnos) in plan { mine[name, default: []] += errnos }
            queues[thread] = mine
        }
        active.add(1, ordering: .relaxed)
        defer {
            active.subtract(1, ordering: .relaxed)
            _ = queues.withLock { $0.removeValue(forKey: thread) }
        }
        return try body()
    }

    /// Errnos left unconsumed for `name` on this thread.
    package static func remaining(_ name: String) -> Int {
        let thread = UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
        return queues.withLock { $0[thread]?[name]?.count ?? 0 }
    }

    static func next(for name: StaticString) -> Errno? {
        let thread = UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
        let key = name.description
        return queues.withLock { queues in
            guard var errnos = queues[thread]?[key], !errnos.isEmpty else { return nil }
            let first = errnos.removeFirst()
            queues[thread]?[key] = errnos
            return first
        }
    }
}
#endif

// MARK: - Constants

package enum SystemConstants {
    package static let sockStream = CInt(1)
    package static let sockDatagram = CInt(2)
    package static let sockSeqPacket = CInt(5)
    package static let socketFlags = CInt(UDS_SOCK_CLOEXEC | UDS_SOCK_NONBLOCK)  // every socket and accepted connection
    package static let afUnix = CInt(AF_UNIX)
    package static let msgNoSignal = CInt(UDS_MSG_NOSIGNAL)
    package static let msgCmsgCloexec = CInt(UDS_MSG_CMSG_CLOEXEC)
    package static let msgTrunc = CInt(MSG_TRUNC)
    package static let msgCtrunc = CInt(MSG_CTRUNC)
    package static let msgPeek = CInt(MSG_PEEK)
    package static let solSocket = CInt(SOL_SOCKET)
    package static let scmRights = CInt(UDS_SCM_RIGHTS)
    package static let scmCredentials = CInt(UDS_SCM_CREDENTIALS)
    package static let soPeerCred = CInt(UDS_SO_PEERCRED)
    package static let soPassCred = CInt(UDS_SO_PASSCRED)
    package static let soPeerGroups = CInt(UDS_SO_PEERGROUPS)
    package static let soSndBuf = CInt(SO_SNDBUF)
    package static let soRcvBuf = CInt(SO_RCVBUF)
    package static let soType = CInt(SO_TYPE)
    package static let pollIn = Int16(POLLIN)
    package static let pollOut = Int16(POLLOUT)
    package static let shutRead = CInt(SHUT_RD)
    package static let shutWrite = CInt(SHUT_WR)
    package static let shutBoth = CInt(SHUT_RDWR)
    package static let somaxconn = CInt(SOMAXCONN)
    package static let openPath = CInt(UDS_O_PATH)
    package static let openDirectory = CInt(O_DIRECTORY)
    package static let openNoFollow = CInt(O_NOFOLLOW)
    package static let openCreate = CInt(O_CREAT)
    package static let openReadOnly = CInt(O_RDONLY)
    package static let openNonBlocking = CInt(O_NONBLOCK)
    package static let lockExclusiveNonBlocking = CInt(LOCK_EX | LOCK_NB)
    package static let netlinkSockDiagByFamily = UInt16(SOCK_DIAG_BY_FAMILY)  // nlmsg_type, request and answer
    package static let netlinkRequestDump = UInt16(NLM_F_REQUEST | NLM_F_DUMP)  // nlmsg_flags of a dump request
    package static let netlinkDone = Int32(NLMSG_DONE)  // nlmsg_type of the end of a dump
    package static let netlinkError = Int32(NLMSG_ERROR)  // nlmsg_type (payload: -errno)
    package static let netlinkFamilyUnix = UInt8(AF_UNIX)  // sdiag_family of a Unix socket request
    package static let netlinkUnixShowName = UInt32(UDIAG_SHOW_NAME)  // udiag_show: the bound name
    package static let netlinkUnixShowPeer = UInt32(UDIAG_SHOW_PEER)  // udiag_show: the peer's inode
    package static let netlinkUnixAttributeName = Int32(UNIX_DIAG_NAME)  // Attribute type of the bound name
    package static let netlinkUnixAttributePeer = Int32(UNIX_DIAG_PEER)  // Attribute type of the peer's inode
    package static let cloneFS = CInt(UDS_CLONE_FS)  // unshare: private cwd and umask
    package static let spliceMove = UInt32(UDS_SPLICE_F_MOVE)  // splice: move pages if it can
    package static let fcntlGetStatusFlags = CInt(F_GETFL)  // fcntl: read the status flags
    package static let soPeerPidfd = CInt(UDS_SO_PEERPIDFD)  // SO_PEERPIDFD (Linux 6.5+)
    package static let soError = CInt(SO_ERROR)  // how a non-blocking connect ended
    package static let soReuseAddr = CInt(SO_REUSEADDR)
    package static let ipprotoTCP = CInt(IPPROTO_TCP)  // IPPROTO_TCP, the level of TCP_NODELAY
    package static let tcpNoDelay = CInt(TCP_NODELAY)
}

// MARK: - Sockets

package func system_socket(_ domain: CInt, _ type: CInt, _ proto: CInt) -> Result<CInt, Errno> {
    valueOrErrno("socket") { socket(domain, type, proto) }
}

/// A datagram NETLINK_SOCK_DIAG socket (CLOEXEC, blocking): where `SockDiag` asks the kernel for its table
/// of Unix sockets.
package func system_sockDiagSocket() -> Result<CInt, Errno> {
    system_socket(CInt(AF_NETLINK), CInt(SOCK_DGRAM.rawValue) | UDS_SOCK_CLOEXEC, CInt(NETLINK_SOCK_DIAG))
}

package func system_socketpair(_ type: CInt, _ fds: UnsafeMutablePointer<CInt>) -> Result<CInt, Errno> {
    valueOrErrno("socketpair") { socketpair(AF_UNIX, type, 0, fds) }
}

package func system_bind(_ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t) -> Result<CInt, Errno> {
    valueOrErrno("bind") { bind(fd, addr, len) }
}

package func system_listen(_ fd: CInt, _ backlog: CInt) -> Result<CInt, Errno> {
    valueOrErrno("listen") { listen(fd, backlog) }
}

/// connect(2). EINTR is retried (for AF_UNIX the kernel completes or fails a connect synchronously).
package func system_connect(_ fd: CInt, _ addr: UnsafePointer<sockaddr>, _ len: socklen_t) -> IOOutcome<CInt> {
    ioResultOrErrno("connect") { connect(fd, addr, len) }
}

package func system_accept4(
    _ fd: CInt,
    _ addr: UnsafeMutablePointer<sockaddr>?,
    _ len: UnsafeMutablePointer<socklen_t>?,
    _ flags: CInt
) -> Result<IOResult<CInt>, Errno> {
    ioResultOrErrno("accept4") { uds_accept4(fd, addr, len, flags) }
}

/// An address the kernel fills in, and its length (in: the room; out: the length).
package typealias SockAddrOut = UnsafeMutablePointer<sockaddr>
package typealias SockLenInOut = UnsafeMutablePointer<socklen_t>

package func system_getsockname(_ fd: CInt, _ addr: SockAddrOut, _ len: SockLenInOut) -> Result<CInt, Errno> {
    valueOrErrno("getsockname") { getsockname(fd, addr, len) }
}

package func system_getpeername(_ fd: CInt, _ addr: SockAddrOut, _ len: SockLenInOut) -> Result<CInt, Errno> {
    valueOrErrno("getpeername") { getpeername(fd, addr, len) }
}

package func system_getsockopt(
    _ fd: CInt,
    _ level: CInt,
    _ name: CInt,
    _ value: UnsafeMutableRawPointer,
    _ len: UnsafeMutablePointer<socklen_t>
) -> Result<CInt, Errno> {
    valueOrErrno("getsockopt") { getsockopt(fd, level, name, value, len) }
}

package func system_setsockopt(
    _ fd: CInt,
    _ level: CInt,
    _ name: CInt,
    _ value: UnsafeRawPointer,
    _ len: socklen_t
) -> Result<CInt, Errno> {
    valueOrErrno("setsockopt") { setsockopt(fd, level, name, value, len) }
}

package func system_shutdown(_ fd: CInt, _ how: CInt) -> Result<CInt, Errno> {
    valueOrErrno("shutdown") { shutdown(fd, how) }
}

/// close(2): never retried. Linux releases the descriptor even when close reports EINTR.
package func system_close(_ fd: CInt) -> Result<CInt, Errno> {
    valueOrErrno("close", retryOnInterrupt: false) { close(fd) }
}

package func system_recv(
    _ fd: CInt,
    _ buffer: UnsafeMutableRawBufferPointer,
    _ flags: CInt
) -> Result<IOResult<Int>, Errno> {
    ioResultOrErrno("recv") { recv(fd, buffer.baseAddress, buffer.count, flags) }
}

package func system_send(_ fd: CInt, _ buffer: UnsafeRawBufferPointer, _ flags: CInt) -> Result<IOResult<Int>, Errno> {
    ioResultOrErrno("send") { send(fd, buffer.baseAddress, buffer.count, flags) }
}

package func system_recvmsg(_ fd: CInt, _ message: UnsafeMutablePointer<msghdr>, _ flags: CInt) -> IOOutcome<Int> {
    ioResultOrErrno("recvmsg") { recvmsg(fd, message, flags) }
}

package func system_sendmsg(_ fd: CInt, _ message: UnsafePointer<msghdr>, _ flags: CInt) -> IOOutcome<Int> {
    ioResultOrErrno("sendmsg") { sendmsg(fd, message, flags) }
}

// MARK: - Files and descriptors

package func system_read(_ fd: CInt, _ buffer: UnsafeMutableRawBufferPointer) -> Result<IOResult<Int>, Errno> {
    ioResultOrErrno("read") { read(fd, buffer.baseAddress, buffer.count) }
}

package func system_write(_ fd: CInt, _ buffer: UnsafeRawBufferPointer) -> Result<IOResult<Int>, Errno> {
    ioResultOrErrno("write") { write(fd, buffer.baseAddress, buffer.count) }
}

package func system_poll(
    _ fds: UnsafeMutablePointer<pollfd>,
    _ count: Int,
    _ timeoutMilliseconds: CInt
) -> Result<CInt, Errno> {
    // EINTR is not retried here: the caller recomputes the remaining time and polls again.
    valueOrErrno("poll", retryOnInterrupt: false) { poll(fds, nfds_t(count), timeoutMilliseconds) }
}

package func system_fcntl(_ fd: CInt, _ command: CInt, _ value: CInt) -> Result<CInt, Errno> {
    valueOrErrno("fcntl") { fcntl(fd, command, value) }
}

package func system_fcntl(_ fd: CInt, _ command: CInt) -> Result<CInt, Errno> {
    valueOrErrno("fcntl") { fcntl(fd, command) }
}

/// dup(2) with CLOEXEC (fcntl F_DUPFD_CLOEXEC).
package func system_dupCloexec(_ fd: CInt) -> Result<CInt, Errno> {
    valueOrErrno("fcntl") { fcntl(fd, UDS_F_DUPFD_CLOEXEC, 0) }
}

/// readlink(2) of `path` into `buffer` (not NUL-terminated); the length written.
package func system_readlink(
    _ path: UnsafePointer<CChar>,
    _ buffer: UnsafeMutableBufferPointer<CChar>
) -> Result<Int, Errno> {
    valueOrErrno("readlink") { readlink(path, buffer.baseAddress!, buffer.count) }
}

package func system_fstat(_ fd: CInt, _ info: UnsafeMutablePointer<stat>) -> Result<CInt, Errno> {
    valueOrErrno("fstat") { fstat(fd, info) }
}

/// fstatat(2) relative to `directory`, never following a symlink in the last component.
package func system_fstatatNoFollow(
    _ directory: CInt,
    _ name: UnsafePointer<CChar>,
    _ info: UnsafeMutablePointer<stat>
)
    -> Result<CInt, Errno>
{
    valueOrErrno("fstatat") { fstatat(directory, name, info, AT_SYMLINK_NOFOLLOW) }
}

/// unlinkat(2) of a non-directory entry of `directory`.
package func system_unlinkat(_ directory: CInt, _ name: UnsafePointer<CChar>) -> Result<CInt, Errno> {
    valueOrErrno("unlinkat") { unlinkat(directory, name, 0) }
}

package func system_open(_ path: UnsafePointer<CChar>, _ flags: CInt, _ mode: mode_t = 0) -> Result<CInt, Errno> {
    valueOrErrno("open") { open(path, flags | O_CLOEXEC, mode) }
}

/// openat(2), always CLOEXEC.
package func system_openat(
    _ directory: CInt,
    _ name: UnsafePointer<CChar>,
    _ flags: CInt,
    _ mode: mode_t = 0
)
    -> Result<CInt, Errno>
{
    valueOrErrno("openat") { openat(directory, name, flags | O_CLOEXEC, mode) }
}

/// fchdir(2): only on a thread that has its own fs context (`unshare(CLONE_FS)`).
package func system_fchdir(_ directory: CInt) -> Result<CInt, Errno> {
    valueOrErrno("fchdir") { fchdir(directory) }
}

package func system_fchmod(_ fd: CInt, _ mode: mode_t) -> Result<CInt, Errno> {
    valueOrErrno("fchmod") { fchmod(fd, mode) }
}

package func system_flock(_ fd: CInt, _ operation: CInt) -> Result<CInt, Errno> {
    valueOrErrno("flock") { flock(fd, operation) }
}

package func system_unshare(_ flags: CInt) -> Result<CInt, Errno> {
    valueOrErrno("unshare") { uds_unshare(flags) }
}

/// umask(2) cannot fail; it returns the previous mask. Used only on a thread with its own fs context.
package func system_umask(_ mask: mode_t) -> mode_t { umask(mask) }

package func system_splice(_ from: CInt, _ to: CInt, _ length: Int, _ flags: UInt32) -> Result<IOResult<Int>, Errno> {
    ioResultOrErrno("splice") { uds_splice(from, to, length, flags) }
}

package func system_getpid() -> CInt { getpid() }
package func system_getuid() -> UInt32 { getuid() }
package func system_getgid() -> UInt32 { getgid() }

package func system_nanosleep(nanoseconds: Int) {
    var request = timespec(tv_sec: nanoseconds / 1_000_000_000, tv_nsec: nanoseconds % 1_000_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) == -1 && uds_errno() == EINTR { request = remaining }
}

/// CLOCK_MONOTONIC in nanoseconds.
package func system_monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// Runs `body` on a new OS thread and waits for it (used for a bind under a thread-private umask).
package func system_runOnFreshThread(_ body: @escaping @Sendable () -> Void) -> Result<Void, Errno> {
    startThread(body).map { pthread_join($0, nil) }
}

/// Starts an OS thread running `body`; the caller joins or detaches it.
private func startThread(_ body: @escaping @Sendable () -> Void) -> Result<pthread_t, Errno> {
    final class Box: @unchecked Sendable {  // handed to exactly one thread, read once
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let status = pthread_create(
        &thread,
        nil,
        { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        },
        box
    )
    if status != 0 {
        Unmanaged<Box>.fromOpaque(box).release()
        return .failure(Errno(rawValue: status))
    }
    return .success(thread)
}

// MARK: - epoll and eventfd (the async reactor)

package func system_epoll_create() -> Result<CInt, Errno> {
    valueOrErrno("epoll_create1") { epoll_create1(CInt(EPOLL_CLOEXEC)) }
}

package func system_epoll_ctl(
    _ epfd: CInt,
    _ op: CInt,
    _ fd: CInt,
    _ event: UnsafeMutablePointer<epoll_event>?
) -> Result<CInt, Errno> {
    valueOrErrno("epoll_ctl") { epoll_ctl(epfd, op, fd, event) }
}

package func system_epoll_wait(
    _ epfd: CInt,
    _ events: UnsafeMutablePointer<epoll_event>,
    _ max: CInt,
    _ timeout: CInt
)
    -> Result<CInt, Errno>
{
    valueOrErrno("epoll_wait") { epoll_wait(epfd, events, max, timeout) }
}

package func system_eventfd() -> Result<CInt, Errno> {
    valueOrErrno("eventfd") { eventfd(0, CInt(EFD_CLOEXEC | EFD_NONBLOCK)) }
}

/// Starts a detached OS thread running `body` (the reactor). Returns false if the thread could not start.
package func system_startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Bool {
    guard case .success(let thread) = startThread(body) else { return false }
    pthread_detach(thread)
    return true
}

/// An identifier of the calling OS thread.
package func system_currentThreadID() -> UInt { UInt(pthread_self()) }

// MARK: - Processes

// Process-wide calls for the `uds` executable (see Process/ProcessControl.swift). The library itself never
// calls these: it never changes process-wide state on its own.

// getpid, getuid and getgid have their wrappers above.

/// signal(2) with SIG_IGN.
package func system_ignoreSignal(_ number: CInt) { _ = signal(number, SIG_IGN) }
/// Whether the signal's disposition is SIG_IGN (sigaction, read only).
package func system_signalIsIgnored(_ number: CInt) -> Bool {
    var action = sigaction()
    guard sigaction(number, nil, &action) == 0 else { return false }
    return unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
}

package func system_isatty(_ fd: CInt) -> Bool { isatty(fd) == 1 }
/// alarm(2): SIGALRM (which ends the process) after `seconds`; 0 cancels.
package func system_alarm(_ seconds: UInt32) { _ = alarm(seconds) }
/// Ends the process with `status` (exit(3): atexit handlers, stdio flushed).
package func system_exit(_ status: CInt) -> Never { exit(status) }

/// RLIMIT_NOFILE as (soft, hard).
package func system_getDescriptorLimit() -> Result<(UInt64, UInt64), Errno> {
    var limit = rlimit()
    return valueOrErrno("getrlimit") { getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
        .map { _ in (UInt64(limit.rlim_cur), UInt64(limit.rlim_max)) }
}

package func system_setDescriptorLimit(soft: UInt64, hard: UInt64) -> Result<Void, Errno> {
    var limit = rlimit(rlim_cur: rlim_t(soft), rlim_max: rlim_t(hard))
    return valueOrErrno("setrlimit") { setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }.map { _ in () }
}

package let system_SIGINT = SIGINT
package let system_SIGTERM = SIGTERM
package let system_SIGHUP = SIGHUP
package let system_SIGPIPE = SIGPIPE

// MARK: - Descriptors handed to the process (`uds recv-fd` copies what they hold)

// fstat(2) is `system_fstat` in Syscalls.swift; the file-type bits are read in Process/InheritedFile.swift.

/// Whether the open file behind `fd` may be read (its access mode is not O_WRONLY).
package func system_isReadable(_ fd: CInt) -> Bool {
    guard case .success(let flags) = valueOrErrno("fcntl", { fcntl(fd, F_GETFL) }) else { return false }
    return flags & O_ACCMODE != O_WRONLY
}

// poll(2) is `system_poll` in Syscalls.swift; the pollfd is made in Process/InheritedFile.swift (it sees
// the type through CUnixSockets).

/// One read(2), or for a socket one recv(2) with MSG_DONTWAIT; EAGAIN is an error here (errno).
package func system_readOnce(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, socket: Bool) -> Result<Int, Errno>
{
    valueOrErrno("read") {
        socket
            ? recv(fd, buffer.baseAddress, buffer.count, CInt(MSG_DONTWAIT))
            : read(fd, buffer.baseAddress, buffer.count)
    }
}
