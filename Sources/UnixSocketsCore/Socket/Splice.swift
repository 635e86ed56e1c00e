package import SystemPackage
import UnixSocketsSystem

// Zero-copy moves between a stream socket and a pipe (splice(2)). Package access: the `uds` tool's fast path.
//
// The socket is non-blocking, which makes the kernel treat the whole splice as non-blocking (the pipe
// side included), so EAGAIN can come from either side: the wait polls the pipe first, then the socket.
// The pipe's own O_NONBLOCK flag is never changed (it belongs to an open file shared with other processes).

extension UnixStream {
    /// Moves up to `maxBytes` from this socket into `pipe` without copying through user space.
    /// - Returns: the bytes moved; 0 when the peer closed its side (EOF).
    /// - Throws: ``UnixSocketError`` (EINVAL when the pipe end cannot take a splice; EPIPE if its reader left).
    ///   The corresponding C function is `splice`.
    package func splice(into pipe: FileDescriptor, maxBytes: Int) throws(UnixSocketError) -> Int {
        try core.withDescriptor("splice") { (fd) throws(UnixSocketError) -> Int in
            while true {
                switch system_splice(fd, pipe.rawValue, maxBytes, SystemConstants.spliceMove) {
                case .success(.done(let count)): return count
                case .success(.wouldBlock):
                    // Either the pipe is full or the socket is empty: wait for the pipe, then the socket.
                    InheritedFile.waitWritable(pipe)
                    try core.wait(fd, events: SystemConstants.pollIn, deadline: nil, operation: "splice")
                case .failure(let errno): throw core.mapError("splice", errno)
                }
            }
        }
    }

    /// Moves up to `maxBytes` from `pipe` into this socket without copying through user space.
    /// - Returns: the bytes moved; 0 when the pipe is at end of file (no writer left).
    /// - Throws: ``UnixSocketError`` (EPIPE when the peer closed). Unlike every other send of this library,
    ///   the kernel's splice into a socket has no MSG_NOSIGNAL: the caller must ignore SIGPIPE (the `uds`
    ///   process does). The corresponding C function is `splice`.
    package func splice(from pipe: FileDescriptor, maxBytes: Int) throws(UnixSocketError) -> Int {
        try core.withDescriptor("splice") { (fd) throws(UnixSocketError) -> Int in
            while true {
                switch system_splice(pipe.rawValue, fd, maxBytes, SystemConstants.spliceMove) {
                case .success(.done(let count)): return count
                case .success(.wouldBlock):
                    InheritedFile.waitReadable(pipe)
                    try core.wait(fd, events: SystemConstants.pollOut, deadline: nil, operation: "splice")
                case .failure(let errno): throw core.mapError("splice", errno)
                }
            }
        }
    }
}

extension SocketCore {
    /// Whether both directions are shut (POLLHUP): the peer closed entirely, not just its write side.
    func isHungUp() -> Bool {
        (try? withDescriptor("poll") { (fd) throws(UnixSocketError) -> Bool in
            var entry = PollDescriptor(fd, events: 0)
            guard case .success(let ready) = entry.poll(timeoutMilliseconds: 0), ready > 0 else { return false }
            return entry.returnedEvents & SystemConstants.pollHup != 0
        }) ?? true
    }
}

extension UnixStream {
    /// Whether the peer closed entirely (POLLHUP), as opposed to shutting down only its write side: after
    /// its EOF, nothing more can be sent. Package access: the CLI's end rule.
    package var isHungUp: Bool { core.isHungUp() }
}

extension UnixSeqPacket {
    /// Whether the peer closed entirely (POLLHUP). Package access: the CLI's end rule.
    package var isHungUp: Bool { core.isHungUp() }
}
