// epoll with Swift values: the event mask as an option set, `epoll_event` as a Swift struct, and the
// reactor's event buffer, so that the reactor never names the C structure.
import CUnixSockets
package import SystemPackage

/// An epoll event mask (`epoll_event.events`).
package struct EpollEvents: OptionSet, Sendable, Hashable {
    package let rawValue: UInt32
    package init(rawValue: UInt32) { self.rawValue = rawValue }

    /// EPOLLIN.
    package static let input = EpollEvents(rawValue: UInt32(EPOLLIN.rawValue))
    /// EPOLLOUT.
    package static let output = EpollEvents(rawValue: UInt32(EPOLLOUT.rawValue))
    /// EPOLLRDHUP: the peer shut down its writing side.
    package static let readHangUp = EpollEvents(rawValue: UInt32(EPOLLRDHUP.rawValue))
    /// EPOLLERR (always reported).
    package static let error = EpollEvents(rawValue: UInt32(EPOLLERR.rawValue))
    /// EPOLLHUP (always reported).
    package static let hangUp = EpollEvents(rawValue: UInt32(EPOLLHUP.rawValue))
    /// EPOLLET: edge-triggered.
    package static let edgeTriggered = EpollEvents(rawValue: UInt32(EPOLLET.rawValue))
}

/// One `epoll_event`: the mask and the 64-bit user data (`data.u64`).
package struct EpollEvent: Sendable, Hashable {
    package var events: EpollEvents
    package var data: UInt64

    package init(events: EpollEvents, data: UInt64) {
        self.events = events
        self.data = data
    }

    init(_ raw: epoll_event) {
        events = EpollEvents(rawValue: raw.events)
        data = raw.data.u64
    }

    var raw: epoll_event {
        var event = epoll_event()
        event.events = events.rawValue
        event.data.u64 = data
        return event
    }
}

/// What `epoll_ctl` does.
package enum EpollOperation: Sendable {
    case add, modify, delete

    var rawValue: CInt {
        switch self {
        case .add: EPOLL_CTL_ADD
        case .modify: EPOLL_CTL_MOD
        case .delete: EPOLL_CTL_DEL
        }
    }
}

package enum Epoll {
    /// epoll_ctl(2) (`event` nil: no event structure, as for a delete).
    package static func control(
        _ epfd: CInt,
        _ operation: EpollOperation,
        _ fd: CInt,
        _ event: EpollEvent?
    )
        -> Result<CInt, Errno>
    {
        guard let event else { return system_epoll_ctl(epfd, operation.rawValue, fd, nil) }
        var raw = event.raw
        return system_epoll_ctl(epfd, operation.rawValue, fd, &raw)
    }
}

/// The buffer `epoll_wait` fills, allocated once (the reactor keeps it for the life of the process).
package struct EpollEventBuffer: @unchecked Sendable {  // used by the one thread that allocated it
    private let events: UnsafeMutablePointer<epoll_event>
    package let capacity: Int

    package init(capacity: Int) {
        self.capacity = capacity
        events = .allocate(capacity: capacity)
    }

    /// epoll_wait(2) into the buffer: the number of events, at most `capacity`.
    package func wait(_ epfd: CInt, timeoutMilliseconds: CInt) -> Result<CInt, Errno> {
        system_epoll_wait(epfd, events, CInt(capacity), timeoutMilliseconds)
    }

    /// The event at `index` (below what the last `wait` returned).
    package subscript(index: Int) -> EpollEvent { EpollEvent(events[index]) }
}
