/// Closes a bound socket when the process ends, on every path (success, error, SIGINT, SIGTERM).
///
/// Closing is all it takes: the library's listener and bound datagram socket remove their own socket file
/// on close, and only while the path still holds their own inode. The CLI never deletes anything by path
/// itself: whatever is at the path by then (a directory, a regular file, someone else's socket) is not ours.
func closeOnExit(_ close: @escaping @Sendable () -> Void) {
    Lifecycle.onExit(close)
}

/// Binds with `bind` and registers `close` for exit as one step: an exit (SIGTERM) that comes meanwhile
/// waits for it, so a socket file is never left behind by a signal that arrived between the two.
func closingOnExit<Socket: Sendable>(
    _ bind: () throws -> Socket,
    close: @escaping @Sendable (Socket) -> Void
) throws -> Socket {
    try Lifecycle.starting {
        let socket = try bind()
        closeOnExit { close(socket) }
        return socket
    }
}
