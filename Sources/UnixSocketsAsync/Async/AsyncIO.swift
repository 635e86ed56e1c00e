import Synchronization
import SystemPackage
package import UnixSocketsCore
import UnixSocketsSystem

// The async driver of `SocketOperation`s: the same operations as the blocking face (Socket/SocketOperation.swift),
// waiting on the reactor instead of poll(2).

extension SocketCore {
    /// The reactor registration of this socket, made on first use and removed before close (it is the
    /// socket's attachment).
    func registration() throws(UnixSocketError) -> Registration {
        if let existing = attachedObject as? Registration { return existing }
        let attached = try attach("epoll_ctl") { (fd) throws(UnixSocketError) -> Registration in
            try UnixReactor.shared.register(fd, closedError: closedError("wait"))
        }
        guard let registration = attached as? Registration else {
            preconditionFailure("UnixSockets bug: a socket's attachment is not its reactor registration")
        }
        return registration
    }

    /// Runs `operation`, waiting on the reactor (or backing off on its timers) on EAGAIN, until it is done
    /// or `timeout` passes without progress. No thread is blocked. Task cancellation wakes the wait with
    /// `.cancelled`; closing the socket wakes it with `.closed`.
    @inline(__always)
    package func perform<Operation: SocketOperation>(
        _ operation: inout Operation,
        timeout: Duration?
    )
        async
        throws(UnixSocketError) -> Operation.Output
    {
        do {
            switch operation.readiness {
            case .input: return try await reacting(&operation, writing: false, timeout: timeout)
            case .output: return try await reacting(&operation, writing: true, timeout: timeout)
            case .backOff: return try await backingOff(&operation, timeout: timeout)
            }
        } catch {
            throw operation.mapFailure(error, on: self)
        }
    }

    /// Tries the operation; on EAGAIN waits on the reactor for readiness, then tries again.
    private func reacting<Operation: SocketOperation>(
        _ operation: inout Operation,
        writing: Bool,
        timeout: Duration?
    )
        async throws(UnixSocketError) -> Operation.Output
    {
        // A zero or negative timeout is invalid input even when the call would not have to wait.
        if let timeout, timeout <= .zero { _ = try Deadline.after(timeout, operation: operation.name) }
        // A registration made by an earlier wait is used from the first attempt on: its sequence is read
        // before the syscall, so a first EAGAIN waits at once instead of repeating the syscall.
        var registration = attachedObject as? Registration
        var sequence: UInt64 = 0
        var deadline: Deadline?
        var deadlineSet = false
        while true {
            if let registration { sequence = registration.sequence(writing: writing) }
            let before = operation.progress
            if let value = try attemptOnce(&operation) { return value }
            if operation.progress != before { deadlineSet = false }
            if !deadlineSet {
                deadline = try Deadline.after(timeout, operation: operation.name)
                deadlineSet = true
            }
            guard let current = registration else {
                // First wait: register (epoll reports a readiness that is already there), then retry.
                registration = try self.registration()
                continue
            }
            if let deadline, deadline.hasPassed {
                throw UnixSocketError(.timedOut, operation: operation.name, address: address, detail: "timed out")
            }
            if writing && !current.writeArmed.load(ordering: .relaxed) {
                try withDescriptor(operation.name) { (_) throws(UnixSocketError) in
                    try UnixReactor.shared.armWrite(current)
                }
            }
            try await UnixReactor.shared.wait(
                current,
                writing: writing,
                after: sequence,
                deadline: deadline,
                operation: operation.name,
                address: address
            )
        }
    }

    /// Retries the operation with a short back-off on the reactor's timers while it reports EAGAIN.
    private func backingOff<Operation: SocketOperation>(
        _ operation: inout Operation,
        timeout: Duration?
    )
        async throws(UnixSocketError) -> Operation.Output
    {
        let deadline = try Deadline.after(timeout, operation: operation.name)
        var pause = Self.firstBackOffNanoseconds
        while true {
            if let value = try attemptOnce(&operation) { return value }
            if let deadline, deadline.hasPassed { throw backOffTimedOut(operation.name) }
            try await sleep(nanoseconds: pause, operation: operation.name)
            pause = Self.nextBackOff(after: pause)
        }
    }

    /// Waits until a byte (or EOF) can be read, without reading it or holding a buffer (MSG_PEEK with no
    /// control buffer: no descriptor is installed).
    package func waitReadable(_ operation: String, timeout: Duration?) async throws(UnixSocketError) {
        var peek = Peek(name: operation, flags: SystemConstants.msgPeek)
        _ = try await perform(&peek, timeout: timeout)
    }

    /// Sleeps on the reactor's timers; cancellation is `.cancelled`.
    func sleep(nanoseconds: Int, operation: String) async throws(UnixSocketError) {
        do {
            try await UnixReactor.sleep(nanoseconds: UInt64(nanoseconds))
        } catch {
            throw .cancelled(operation, address: address)
        }
    }

    /// Accepts one connection without blocking a thread. Out of descriptors (EMFILE/ENFILE) it pauses and
    /// retries rather than failing or spinning (an async server's accept loop must not die of it).
    func acceptPausing(timeout: Duration?) async throws(UnixSocketError) -> CInt {
        _ = try? registration()  // start the reactor and register while descriptors are still free
        var pause = 10_000_000
        while true {
            do throws(UnixSocketError) {
                var operation = Accept()
                return try await perform(&operation, timeout: timeout)
            } catch  where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
                try await sleep(nanoseconds: pause, operation: "accept")
                pause = min(pause * 2, 200_000_000)
            }
        }
    }
}
