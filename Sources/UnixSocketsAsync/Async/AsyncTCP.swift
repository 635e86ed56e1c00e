// The async face of the few TCP calls `uds bridge` needs, at package access: accept, connect, read and
// write without a thread per connection, on the same reactor as the Unix sockets.
import SystemPackage
package import UnixSocketsCore

extension TCPSocket {
    /// Connects to `endpoint` without blocking a thread, trying each resolved address in turn (TCP_NODELAY).
    /// Name resolution itself (getaddrinfo) is synchronous; numeric hosts resolve without I/O.
    /// - Throws: ``UnixSocketError`` naming the endpoint (ECONNREFUSED, `.timedOut`), or `.cancelled`.
    package static func connect(
        to endpoint: TCPEndpoint,
        timeout: Duration? = nil
    ) async throws(UnixSocketError)
        -> TCPSocket
    {
        var dialer = try Dialer(endpoint)
        while true {
            var (core, operation) = try dialer.next()
            do throws(UnixSocketError) { try await core.perform(&operation, timeout: timeout) } catch {
                try dialer.failed(core, error)
                continue
            }
            return dialer.connected(core)
        }
    }

    /// Accepts one connection without blocking a thread (CLOEXEC, TCP_NODELAY). Out of descriptors it pauses
    /// and retries, as the Unix listeners do. Closing the listener wakes it with `.closed`.
    package func accept() async throws(UnixSocketError) -> TCPSocket {
        Self.accepted(try await core.acceptPausing(timeout: nil))
    }
}
