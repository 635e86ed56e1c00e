import SystemPackage
package import UnixSocketsCore

/// A connected byte stream a relay copies to or from: a Unix stream or a TCP connection, read and written
/// with the async API (a waiting connection holds no thread). Built on the types' public and package API
/// only, so the relay engine does not depend on the library's internals.
package protocol RelayChannel: AnyObject, Sendable {
    func relayRead(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int
    func relayWrite(all buffer: UnsafeRawBufferPointer) async throws
    /// Shuts down the write side (the other end reads EOF); errors are ignored (the peer may be gone).
    func relayShutdownWrite()
    func relayClose()
    /// How the peer is named in diagnostics.
    var relayName: String { get }
}

extension UnixStream: RelayChannel {
    package func relayRead(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int {
        try await read(into: buffer)
    }
    package func relayWrite(all buffer: UnsafeRawBufferPointer) async throws { try await write(all: buffer) }
    package func relayShutdownWrite() { try? shutdown(.write) }
    package func relayClose() { close() }
    package var relayName: String { (try? peer).map { $0.isUnnamed ? "unix peer" : "\($0)" } ?? "unix peer" }
}

extension TCPSocket: RelayChannel {
    package func relayRead(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int {
        try await read(into: buffer)
    }
    package func relayWrite(all buffer: UnsafeRawBufferPointer) async throws { try await write(all: buffer) }
    package func relayShutdownWrite() { try? shutdown(.write) }
    package func relayClose() { close() }
    package var relayName: String { endpoint.description }
}
