import Synchronization
import UnixSocketsCore
@_spi(Locking) import UnixSocketsSystem

/// A one-shot wake-up: the first ``resolve(_:)`` wins and resumes the waiter (now, or when it arrives).
final class Ticket: Sendable {
    enum Outcome: Sendable, Equatable {
        case granted, closed, timedOut, cancelled
    }

    private let state = Lock<(continuation: UnsafeContinuation<Outcome, Never>?, outcome: Outcome?)>((nil, nil))

    /// Waits for the outcome (returns at once if it is already there). One waiter per ticket.
    func wait() async -> Outcome {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
            let ready = state.withLock { state -> Outcome? in
                if let outcome = state.outcome { return outcome }
                state.continuation = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Sets the outcome if none is set yet; returns whether this call set it.
    @discardableResult
    func resolve(_ outcome: Outcome) -> Bool {
        let (continuation, won) = state.withLock { state -> (UnsafeContinuation<Outcome, Never>?, Bool) in
            guard state.outcome == nil else { return (nil, false) }
            state.outcome = outcome
            defer { state.continuation = nil }
            return (state.continuation, true)
        }
        continuation?.resume(returning: outcome)
        return won
    }
}

/// A server-wide byte budget. Large requests (a whole frame) are handed out first come, first served: one that
/// does not fit waits (with a deadline) behind the large ones before it, so a large frame is not starved by a
/// stream of other large ones. Small requests (at most `smallRequest` bytes: one read) are taken whenever they
/// fit, so a burst of huge frames waiting for room does not stop the small frames of other clients. Accounting
/// only: nothing is allocated here; callers allocate after they were granted the bytes.
final class ByteBudget: Sendable {
    let limit: Int
    let smallRequest: Int

    private struct Waiter {
        let ticket: Ticket
        let amount: Int
        let owner: UInt64
    }

    private struct State {
        var used = 0
        var peak = 0
        var waiters: [Waiter] = []
    }

    private let state = Lock(State())

    init(limit: Int, smallRequest: Int = 0) {
        self.limit = limit
        self.smallRequest = smallRequest
    }

    /// Bytes handed out now.
    var used: Int { state.withLock { $0.used } }
    /// The most bytes ever handed out at once (for tests and diagnostics).
    var peak: Int { state.withLock { $0.peak } }

    /// Takes `amount` bytes for `owner`, waiting for them until `timeout` passes.
    /// - Returns: `.granted`, or `.timedOut`, `.closed` (``withdraw(owner:)``), `.cancelled` (task cancelled).
    func acquire(_ amount: Int, owner: UInt64, timeout: Duration?) async -> Ticket.Outcome {
        precondition(amount >= 0 && amount <= limit, "a request over the whole budget can never be granted")
        let ticket = Ticket()
        let granted = state.withLock { state -> Bool in
            let mayPass = amount <= smallRequest || !state.waiters.contains { $0.amount > smallRequest }
            if mayPass && state.used + amount <= limit {
                state.used += amount
                state.peak = max(state.peak, state.used)
                return true
            }
            state.waiters.append(Waiter(ticket: ticket, amount: amount, owner: owner))
            return false
        }
        if granted { return .granted }
        return await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                if let timeout {
                    let nanoseconds =
                        UInt64(clamping: timeout.components.seconds) &* 1_000_000_000
                        &+ UInt64(clamping: timeout.components.attoseconds / 1_000_000_000)
                    group.addTask {
                        // Cancelled (the ticket was resolved first): nothing to withdraw.
                        guard (try? await UnixReactor.sleep(nanoseconds: max(nanoseconds, 1))) != nil else { return }
                        self.withdraw(ticket, .timedOut)
                    }
                }
                let outcome = await ticket.wait()
                group.cancelAll()
                return outcome
            }
        } onCancel: {
            self.withdraw(ticket, .cancelled)
        }
    }

    /// Takes `amount` bytes at once if they fit; never waits (for budgets nobody waits on).
    func tryAcquire(_ amount: Int) -> Bool {
        state.withLock { state -> Bool in
            guard state.used + amount <= limit else { return false }
            state.used += amount
            state.peak = max(state.peak, state.used)
            return true
        }
    }

    /// Gives back `amount` bytes and grants waiting requests that now fit, in order.
    func release(_ amount: Int) {
        guard amount > 0 else { return }
        let granted = state.withLock { state -> [Ticket] in
            state.used -= amount
            precondition(state.used >= 0, "released more than was acquired")
            return Self.grantWaiters(&state, limit: limit, smallRequest: smallRequest)
        }
        for ticket in granted { ticket.resolve(.granted) }
    }

    /// Ends every wait of `owner` with `.closed`.
    func withdraw(owner: UInt64) {
        let (removed, granted) = state.withLock { state -> ([Ticket], [Ticket]) in
            var removed: [Ticket] = []
            state.waiters.removeAll { waiter in
                guard waiter.owner == owner else { return false }
                removed.append(waiter.ticket)
                return true
            }
            return (removed, removed.isEmpty ? [] : Self.grantWaiters(&state, limit: limit, smallRequest: smallRequest))
        }
        for ticket in removed { ticket.resolve(.closed) }
        for ticket in granted { ticket.resolve(.granted) }
    }

    /// Ends the wait of `ticket` with `outcome` unless it was granted already.
    private func withdraw(_ ticket: Ticket, _ outcome: Ticket.Outcome) {
        let (found, granted) = state.withLock { state -> (Bool, [Ticket]) in
            guard let index = state.waiters.firstIndex(where: { $0.ticket === ticket }) else { return (false, []) }
            state.waiters.remove(at: index)
            // Whoever queued behind it may fit now.
            return (true, Self.grantWaiters(&state, limit: limit, smallRequest: smallRequest))
        }
        if found { ticket.resolve(outcome) }
        for ticket in granted { ticket.resolve(.granted) }
    }

    /// Grants waiters that fit, in order: a large one only while no large one before it is still waiting.
    private static func grantWaiters(_ state: inout State, limit: Int, smallRequest: Int) -> [Ticket] {
        guard !state.waiters.isEmpty else { return [] }
        var granted: [Ticket] = []
        var waiting: [Waiter] = []
        var largeBlocked = false
        for waiter in state.waiters {
            let large = waiter.amount > smallRequest
            if !(large && largeBlocked) && state.used + waiter.amount <= limit {
                state.used += waiter.amount
                granted.append(waiter.ticket)
            } else {
                if large { largeBlocked = true }
                waiting.append(waiter)
            }
        }
        state.peak = max(state.peak, state.used)
        state.waiters = waiting
        return granted
    }
}
