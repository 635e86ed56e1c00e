/// Closes a bound socket when the process ends, on every path (success, error, SIGINT, SIGTERM).
///
/// Closing is all it takes: the library's listener and bound datagram socket remove their own socket file
/// on close, and only while the path still holds their own inode. The CLI never deletes anything by path
/// itself: whatever is at the path by then (a directory, a regular file, someone else's socket) is not ours.
func closeOnExit(_ close: @escaping @Sendable () -> Void) {
    Lifecycle.onExit(close)
}
