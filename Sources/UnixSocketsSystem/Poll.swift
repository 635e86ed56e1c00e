// poll(2) of one descriptor, with Swift values in and out.
import CUnixSockets
package import SystemPackage

/// One descriptor to poll: what to wait for, and what the kernel reported last.
package struct PollDescriptor {
    private var entry: pollfd

    package init(_ fd: CInt, events: Int16) {
        entry = pollfd(fd: fd, events: events, revents: 0)
    }

    /// The events the kernel reported in the last `poll`.
    package var returnedEvents: Int16 { entry.revents }

    /// poll(2) of this one descriptor (EINTR is returned, not retried: see `system_poll`).
    package mutating func poll(timeoutMilliseconds: CInt) -> Result<CInt, Errno> {
        system_poll(&entry, 1, timeoutMilliseconds)
    }
}

extension PollDescriptor {
    /// poll(2) of `fd` for `events` beside `wake` (an eventfd polled for input), or of `fd` alone when `wake`
    /// is nil. EINTR is returned, not retried.
    package static func poll(_ fd: CInt, events: Int16, wake: CInt?, timeoutMilliseconds: CInt) -> Result<CInt, Errno> {
        var entries = (
            pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wake ?? -1, events: Int16(POLLIN), revents: 0)
        )
        return withUnsafeMutableBytes(of: &entries) { raw in
            system_poll(raw.baseAddress!.assumingMemoryBound(to: pollfd.self), wake == nil ? 1 : 2, timeoutMilliseconds)
        }
    }
}

extension SystemConstants {
    package static let pollHup = Int16(POLLHUP)
    package static let pollInvalid = Int16(POLLNVAL)
    package static let fcntlSetStatusFlags = CInt(F_SETFL)
}

/// Whether the peer of `fd` has shut down its writing side: poll(2) with POLLRDHUP (the same bit as
/// EPOLLRDHUP; Glibc's Swift module does not export POLLRDHUP) and no wait.
package func system_peerHasShutDown(_ fd: CInt) -> Bool {
    let readHangUp = Int16(truncatingIfNeeded: EPOLLRDHUP.rawValue)
    var entry = PollDescriptor(fd, events: Int16(POLLIN) | readHangUp)
    guard case .success = entry.poll(timeoutMilliseconds: 0) else { return false }
    return entry.returnedEvents & (readHangUp | SystemConstants.pollHup) != 0
}
