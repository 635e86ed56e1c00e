import Synchronization
import SystemPackage
import UnixSocketsCore
@_spi(Locking) import UnixSocketsSystem

/// Readiness of one registered descriptor, and the tasks waiting on it.
///
/// Readiness is latched as a sequence number per direction: a waiter reads the number before its
/// syscall and suspends only if no event arrived since, so a wake-up between EAGAIN and the wait is
/// never lost. The descriptor is registered edge-triggered for input; output is added (EPOLL_CTL_MOD) the
/// first time a writer has to wait, so sockets that never wait to write cost the reactor no wake-up each
/// time their peer reads.
final class Registration: SocketAttachment {
    struct Waiter {
        let id: UInt64
        let continuation: UnsafeContinuation<Void, any Error>
    }

    struct State {
        var readSequence: UInt64 = 0
        var writeSequence: UInt64 = 0
        var readers: [Waiter] = []
        var writers: [Waiter] = []
        var closedError: UnixSocketError?
    }

    let id: UInt64
    let fd: CInt
    /// What its waiters are woken with when the socket is closed.
    let closedError: UnixSocketError
    let state = Lock(State())
    /// Whether EPOLLOUT is in the registration's event mask (set once, by the first writer that waits).
    let writeArmed = Atomic<Bool>(false)

    init(id: UInt64, fd: CInt, closedError: UnixSocketError) {
        self.id = id
        self.fd = fd
        self.closedError = closedError
    }

    /// The socket core is closing or releasing the descriptor: leave epoll first (a duplicated descriptor
    /// would keep the registration alive) and wake the waiters with `.closed`.
    func socketWillClose(_ descriptor: CInt) {
        UnixReactor.shared.deregister(self, error: closedError)
    }

    /// The current sequence number of a direction.
    func sequence(writing: Bool) -> UInt64 {
        state.withLock { writing ? $0.writeSequence : $0.readSequence }
    }

    /// Called by the reactor thread with the epoll event mask: bumps the sequences and moves the waiters
    /// into `woken` (the reactor's reused array: no allocation per event).
    func fire(readable: Bool, writable: Bool, into woken: inout [Waiter]) {
        state.withLock { state in
            if readable {
                state.readSequence &+= 1
                if !state.readers.isEmpty {
                    woken.append(contentsOf: state.readers)
                    state.readers.removeAll(keepingCapacity: true)
                }
            }
            if writable {
                state.writeSequence &+= 1
                if !state.writers.isEmpty {
                    woken.append(contentsOf: state.writers)
                    state.writers.removeAll(keepingCapacity: true)
                }
            }
        }
    }

    /// Marks the registration closed and takes every waiter, to be resumed with `error`.
    func close(with error: UnixSocketError) -> [Waiter] {
        state.withLock { state in
            state.closedError = error
            defer {
                state.readers.removeAll()
                state.writers.removeAll()
            }
            return state.readers + state.writers
        }
    }
}

/// The one epoll reactor thread of the process: async socket operations try their syscall first and
/// only on EAGAIN wait here. It is also a `TaskExecutor`: tasks that prefer it
/// (`withTaskExecutorPreference(UnixReactor.shared)`) run on the reactor thread itself, so a ready socket
/// resumes its task without a thread hop (the lowest latency; keep such tasks short, as on any event loop).
public final class UnixReactor: TaskExecutor, @unchecked Sendable {
    // @unchecked only for the TaskExecutor conformance's sake: all mutable state is in Atomics and Locks.

    /// The process-wide reactor, started on first use.
    public static let shared = UnixReactor()

    private let epollFD = Atomic<CInt>(-1)
    /// The events that wake readers and writers, as masks computed once: option-set literals in the loop
    /// were built element by element through unspecialized generic code (the set type lives in the syscall
    /// layer's module), an allocation and a metadata lookup per event.
    private static let readableBits = EpollEvents([.error, .hangUp, .input, .readHangUp]).rawValue
    private static let writableBits = EpollEvents([.error, .hangUp, .output]).rawValue
    private let wakeFD = Atomic<CInt>(-1)
    private let startLock = Lock<Void>(())
    private let registrations = Lock<[UInt64: Registration]>([:])
    private let nextID = Atomic<UInt64>(1)
    private let jobs = Lock<JobQueue>(JobQueue())
    private let timers = Lock<Timers>(Timers())
    private let threadID = Atomic<UInt>(0)

    private struct JobQueue {
        var jobs: [UnownedJob] = []
        var sleeping = false
    }

    private struct Timers {
        var deadlines: [UInt64: (end: UInt64, fire: @Sendable () -> Void)] = [:]
        var earliest: UInt64 = .max
    }

    private init() {}

    /// Creates the epoll descriptor, the wake-up eventfd and the thread on first use. Out of descriptors
    /// (EMFILE) this throws, and a later call tries again: the reactor never takes the process down.
    private func start() throws(UnixSocketError) {
        if epollFD.load(ordering: .acquiring) >= 0 { return }
        try startLock.withLock { (_) throws(UnixSocketError) in
            if epollFD.load(ordering: .acquiring) >= 0 { return }
            let epoll: CInt
            switch system_epoll_create() {
            case .success(let fd): epoll = fd
            case .failure(let errno): throw .system("epoll_create1", errno)
            }
            let wake: CInt
            switch system_eventfd() {
            case .success(let fd): wake = fd
            case .failure(let errno):
                _ = system_close(epoll)
                throw .system("eventfd", errno)
            }
            _ = Epoll.control(epoll, .add, wake, EpollEvent(events: .input, data: 0))
            wakeFD.store(wake, ordering: .releasing)
            guard system_startDetachedThread({ [self] in run(epoll: epoll, wake: wake) }) else {
                _ = system_close(wake)
                _ = system_close(epoll)
                throw .system("pthread_create", .resourceTemporarilyUnavailable)
            }
            epollFD.store(epoll, ordering: .releasing)
        }
    }

    /// Whether the caller runs on the reactor thread.
    var isReactorThread: Bool { threadID.load(ordering: .relaxed) == system_currentThreadID() }

    // MARK: Registration

    /// Registers `fd` edge-triggered for input and peer hang-up (errors and hang-up are always reported);
    /// output readiness is added by `armWrite` when a writer first waits.
    func register(_ fd: CInt, closedError: UnixSocketError) throws(UnixSocketError) -> Registration {
        try start()
        let registration = Registration(
            id: nextID.wrappingAdd(1, ordering: .relaxed).oldValue,
            fd: fd,
            closedError: closedError
        )
        registrations.withLock { $0[registration.id] = registration }
        let event = EpollEvent(events: [.input, .readHangUp, .edgeTriggered], data: registration.id)
        if case .failure(let errno) = Epoll.control(epollFD.load(ordering: .acquiring), .add, fd, event) {
            _ = registrations.withLock { $0.removeValue(forKey: registration.id) }
            throw .system("epoll_ctl", errno)
        }
        return registration
    }

    /// Adds EPOLLOUT to the registration (once). The caller holds the descriptor (`withDescriptor`), so it
    /// is still registered. epoll reports a writability that is already there at once (it bumps the write
    /// sequence), so a writer that read its sequence before its EAGAIN cannot miss it.
    func armWrite(_ registration: Registration) throws(UnixSocketError) {
        guard registration.writeArmed.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
        else { return }
        let event = EpollEvent(events: [.input, .output, .readHangUp, .edgeTriggered], data: registration.id)
        if case .failure(let errno) = Epoll.control(
            epollFD.load(ordering: .acquiring),
            .modify,
            registration.fd,
            event
        ) {
            registration.writeArmed.store(false, ordering: .relaxed)
            throw .system("epoll_ctl", errno)
        }
    }

    /// Removes the registration before its descriptor is closed and wakes its waiters with `error`.
    func deregister(_ registration: Registration, error: UnixSocketError) {
        _ = Epoll.control(epollFD.load(ordering: .acquiring), .delete, registration.fd, nil)
        _ = registrations.withLock { $0.removeValue(forKey: registration.id) }
        for waiter in registration.close(with: error) { waiter.continuation.resume(throwing: error) }
    }

    // MARK: Waiting

    /// Suspends until an event for the direction arrives after `sequence`, the deadline passes (throws
    /// `.timedOut`), the task is cancelled (`.cancelled`) or the socket is closed (`.closed`).
    func wait(
        _ registration: Registration,
        writing: Bool,
        after sequence: UInt64,
        deadline: Deadline?,
        operation: String,
        address: UnixAddress?
    ) async throws(UnixSocketError) {
        do {
            let waiterID = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
            try await withTaskCancellationHandler {
                try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                    let immediate: (any Error)?? = registration.state.withLock { state in
                        if let closed = state.closedError { return .some(closed) }
                        let current = writing ? state.writeSequence : state.readSequence
                        if current != sequence { return .some(nil) }
                        if Task.isCancelled { return .some(UnixSocketError.cancelled(operation, address: address)) }
                        let waiter = Registration.Waiter(id: waiterID, continuation: continuation)
                        if writing { state.writers.append(waiter) } else { state.readers.append(waiter) }
                        return .none
                    }
                    switch immediate {
                    case .some(.some(let error)): continuation.resume(throwing: error)
                    case .some(.none): continuation.resume()
                    case .none:
                        if let deadline {
                            addTimer(id: waiterID, end: deadline.end) { [registration] in
                                Self.resumeWaiter(
                                    registration,
                                    id: waiterID,
                                    error: UnixSocketError(
                                        .timedOut,
                                        operation: operation,
                                        address: address,
                                        detail: "timed out"
                                    )
                                )
                            }
                        }
                    }
                }
            } onCancel: {
                Self.resumeWaiter(
                    registration,
                    id: waiterID,
                    error: UnixSocketError.cancelled(operation, address: address)
                )
            }
            if deadline != nil { removeTimer(id: waiterID) }
        } catch let error as UnixSocketError {
            throw error
        } catch {
            throw .cancelled(operation, address: address)
        }
    }

    private static func resumeWaiter(_ registration: Registration, id: UInt64, error: any Error) {
        let waiter = registration.state.withLock { state -> Registration.Waiter? in
            if let index = state.readers.firstIndex(where: { $0.id == id }) { return state.readers.remove(at: index) }
            if let index = state.writers.firstIndex(where: { $0.id == id }) { return state.writers.remove(at: index) }
            return nil
        }
        waiter?.continuation.resume(throwing: error)
    }

    /// Sleeps on the reactor's own timers (used for back-off): unlike `Task.sleep` it needs no new
    /// descriptor, so it works when the process is out of them (EMFILE), where Dispatch's lazily created
    /// timer machinery would fail. Falls back to `Task.sleep` if the reactor cannot start.
    static func sleep(nanoseconds: UInt64) async throws {
        let reactor = UnixReactor.shared
        guard (try? reactor.start()) != nil else {
            try await Task.sleep(nanoseconds: nanoseconds)
            return
        }
        let id = reactor.nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let sleeper = Sleeper()
        try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                sleeper.set(continuation)
                reactor.addTimer(id: id, end: Deadline.saturatingEnd(after: nanoseconds)) { sleeper.resume(nil) }
            }
        } onCancel: {
            reactor.removeTimer(id: id)
            sleeper.resume(CancellationError())
        }
    }

    /// A continuation resumed exactly once, by a timer or by cancellation, whichever comes first.
    private final class Sleeper: Sendable {
        private let state = Lock<(continuation: UnsafeContinuation<Void, any Error>?, early: (any Error)??)>((nil, nil))

        func set(_ continuation: UnsafeContinuation<Void, any Error>) {
            let early = state.withLock { state -> (any Error)?? in
                if let early = state.early { return early }
                state.continuation = continuation
                return nil
            }
            if let early { early.map { continuation.resume(throwing: $0) } ?? continuation.resume() }
        }

        func resume(_ error: (any Error)?) {
            let continuation = state.withLock { state -> UnsafeContinuation<Void, any Error>? in
                guard let continuation = state.continuation else {
                    if state.early == nil { state.early = .some(error) }
                    return nil
                }
                state.continuation = nil
                state.early = .some(error)
                return continuation
            }
            guard let continuation else { return }
            if let error { continuation.resume(throwing: error) } else { continuation.resume() }
        }
    }

    // MARK: Timers (deadlines of waiting operations)

    private func addTimer(id: UInt64, end: UInt64, fire: @escaping @Sendable () -> Void) {
        let earlier = timers.withLock { timers -> Bool in
            timers.deadlines[id] = (end, fire)
            if end < timers.earliest {
                timers.earliest = end
                return true
            }
            return false
        }
        if earlier && !isReactorThread { wake() }
    }

    private func removeTimer(id: UInt64) {
        _ = timers.withLock { $0.deadlines.removeValue(forKey: id) }
    }

    /// Fires expired timers; returns the epoll timeout (ms) until the next one, or -1.
    private func runTimers() -> CInt {
        let now = system_monotonicNanoseconds()
        let (expired, earliest) = timers.withLock { timers -> ([@Sendable () -> Void], UInt64) in
            guard timers.earliest <= now else { return ([], timers.earliest) }
            var expired: [@Sendable () -> Void] = []
            var earliest = UInt64.max
            for (id, timer) in timers.deadlines {
                if timer.end <= now {
                    expired.append(timer.fire)
                    timers.deadlines.removeValue(forKey: id)
                } else {
                    earliest = min(earliest, timer.end)
                }
            }
            timers.earliest = earliest
            return (expired, earliest)
        }
        for fire in expired { fire() }
        if earliest == .max { return -1 }
        let left = earliest - min(now, earliest)
        return CInt(clamping: left / 1_000_000 + (left % 1_000_000 == 0 ? 0 : 1))
    }

    // MARK: Executor

    /// Runs `job` on the reactor thread.
    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        if (try? start()) == nil {
            // The reactor cannot start (out of descriptors): run the job on the global executor instead.
            globalConcurrentExecutor.enqueue(unowned)
            return
        }
        let mustWake = jobs.withLock { queue -> Bool in
            queue.jobs.append(unowned)
            return queue.sleeping
        }
        if mustWake { wake() }
    }

    private func wake() {
        var one: UInt64 = 1
        _ = withUnsafeBytes(of: &one) { system_write(wakeFD.load(ordering: .acquiring), $0) }
    }

    // MARK: The loop

    private func run(epoll epollFD: CInt, wake wakeFD: CInt) {
        threadID.store(system_currentThreadID(), ordering: .relaxed)
        let events = EpollEventBuffer(capacity: 256)
        var batch: [UnownedJob] = []
        var woken: [Registration.Waiter] = []
        while true {
            // Run what is queued (tasks resumed onto this executor).
            batch = jobs.withLock { queue in
                let taken = queue.jobs
                queue.jobs.removeAll(keepingCapacity: true)
                queue.sleeping = taken.isEmpty
                return taken
            }
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
            batch.removeAll(keepingCapacity: true)
            var timeout = runTimers()
            if !jobs.withLock({ queue in
                if queue.jobs.isEmpty {
                    queue.sleeping = true
                    return true
                }
                queue.sleeping = false
                return false
            }) {
                timeout = 0
            }
            let count: CInt
            switch events.wait(epollFD, timeoutMilliseconds: timeout) {
            case .success(let value): count = value
            case .failure: count = 0
            }
            jobs.withLock { $0.sleeping = false }
            for index in 0..<Int(count) {
                let event = events[index]
                let id = event.data
                if id == 0 {
                    var value: UInt64 = 0
                    _ = withUnsafeMutableBytes(of: &value) { system_read(wakeFD, $0) }
                    continue
                }
                guard let registration = registrations.withLock({ $0[id] }) else { continue }
                let mask = event.events.rawValue
                let readable = mask & Self.readableBits != 0
                let writable = mask & Self.writableBits != 0
                registration.fire(readable: readable, writable: writable, into: &woken)
            }
            for waiter in woken { waiter.continuation.resume() }
            woken.removeAll(keepingCapacity: true)
        }
    }
}
