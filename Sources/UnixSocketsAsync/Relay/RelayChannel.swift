import SystemPackage
package import UnixSocketsCore

/// A connected byte stream a relay copies to or from: a Unix stream or a TCP connection, read and written
/// with the async API (a waiting connection holds no thread). Built on the types' public and package API
/// only, so the relay engine does not depend on the library's internals.
package protocol RelayChannel: AnyObject, Sendable {
    /// The socket under the channel.
    var core: SocketCore { get }
    /// How the peer is named in diagnostics.
    var relayName: String { get }
}

extension RelayChannel {
    /// Reads what is there (0 at EOF), waiting on the reactor.
    package func relayRead(into buffer: UnsafeMutableRawBufferPointer) async throws(UnixSocketError) -> Int {
        var operation = ReadSome(into: buffer)
        return try await core.perform(&operation, timeout: nil)
    }

    /// Writes every byte, waiting on the reactor.
    package func relayWrite(all buffer: UnsafeRawBufferPointer) async throws(UnixSocketError) {
        var operation = WriteAll(buffer)
        try await core.perform(&operation, timeout: nil)
    }

    /// Shuts down the write side (the other end reads EOF); errors are ignored (the peer may be gone).
    package func relayShutdownWrite() { try? core.shutdown(.write) }

    package func relayClose() { core.close() }
}

extension UnixStream: RelayChannel {
    package var relayName: String { (try? peer).map { $0.isUnnamed ? "unix peer" : "\($0)" } ?? "unix peer" }
}

extension TCPSocket: RelayChannel {
    package var relayName: String { endpoint.description }
}
