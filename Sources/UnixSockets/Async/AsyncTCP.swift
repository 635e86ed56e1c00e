// The async face of the few TCP calls `uds bridge` needs, at package access: accept, connect, read and
// write without a thread per connection, on the same reactor as the Unix sockets.
import SystemPackage

extension TCPSocket {
    /// Connects to `endpoint` without blocking a thread, trying each resolved address in turn (TCP_NODELAY).
    /// Name resolution itself (getaddrinfo) is synchronous; numeric hosts resolve without I/O.
    /// - Throws: ``UnixSocketError`` naming the endpoint (ECONNREFUSED, `.timedOut`), or `CancellationError`.
    package static func connect(to endpoint: TCPEndpoint, timeout: Duration? = nil) async throws -> TCPSocket {
        var lastError: (any Error)?
        for (family, address) in try resolve(endpoint, passive: false, operation: "connect") {
            let core = try makeSocket(family, endpoint, operation: "connect")
            do {
                try await core.asyncTCPConnect(address, endpoint: endpoint, timeout: timeout)
                _ = core.withDescriptorIfOpen { fd in
                    IntSocketOption.set(fd, level: SystemConstants.ipprotoTCP, name: SystemConstants.tcpNoDelay, 1)
                }
                return TCPSocket(core: core, endpoint: endpoint)
            } catch let error as UnixSocketError {
                core.close()
                lastError =
                    error.code == .timedOut
                    ? UnixSocketError(.timedOut, operation: "connect", detail: "\(endpoint): timed out") : error
            } catch {
                core.close()
                throw error  // cancelled: do not try the other addresses
            }
        }
        throw lastError ?? UnixSocketError(.invalidAddress, operation: "connect", detail: "\(endpoint): no address")
    }

    /// Accepts one connection without blocking a thread (CLOEXEC, TCP_NODELAY). Out of descriptors it pauses
    /// and retries, as the Unix listeners do. Closing the listener wakes it with `.closed`.
    package func accept() async throws -> TCPSocket {
        let fd = try await core.asyncAccept(flags: SocketType.stream.flags & ~SocketType.stream.rawValue, timeout: nil)
        _ = IntSocketOption.set(fd, level: SystemConstants.ipprotoTCP, name: SystemConstants.tcpNoDelay, 1)
        var storage = InetAddressStorage()
        let named = storage.withMutableSockAddr { system_getpeername(fd, $0, $1) }
        var peer = TCPEndpoint(host: "unknown", port: 0)
        if case .success = named, let known = Self.endpoint(of: storage) { peer = known }
        return TCPSocket(core: SocketCore(adopting: fd, type: .stream, address: nil), endpoint: peer)
    }

    /// Reads what is there into `buffer` without blocking a thread; 0 means the peer closed its side.
    package func read(into buffer: UnsafeMutableRawBufferPointer) async throws -> Int {
        try await core.asyncReadSome(buffer, timeout: nil)
    }

    /// Writes every byte of `buffer` (MSG_NOSIGNAL) without blocking a thread.
    package func write(all buffer: UnsafeRawBufferPointer) async throws {
        try await core.asyncWriteAll(buffer, timeout: nil)
    }
}

extension SocketCore {
    /// A non-blocking TCP connect: EINPROGRESS, then wait for writability on the reactor, then SO_ERROR says
    /// how it ended.
    func asyncTCPConnect(_ address: [UInt8], endpoint: TCPEndpoint, timeout: Duration?) async throws {
        let first = try withDescriptor("connect") { (fd) throws(UnixSocketError) -> Result<IOResult<CInt>, Errno> in
            InetAddress.withSockAddr(address) { system_connect(fd, $0, $1) }
        }
        switch first {
        case .success(.done): return
        case .success(.wouldBlock), .failure(.nowInProgress), .failure(.alreadyInProcess): break
        case .failure(let errno): throw TCPSocket.error("connect", endpoint, errno)
        }
        try await asyncIO("connect", writing: true, timeout: timeout) { fd -> Result<IOResult<Void>, Errno> in
            var entry = PollDescriptor(fd, events: SystemConstants.pollOut)
            switch entry.poll(timeoutMilliseconds: 0) {
            case .success(0): return .success(.wouldBlock)
            case .success: return .success(.done(()))
            case .failure(.interrupted): return .success(.wouldBlock)
            case .failure(let errno): return .failure(errno)
            }
        }
        let pending = try withDescriptor("connect") { (fd) throws(UnixSocketError) -> CInt in
            switch IntSocketOption.get(fd, level: SystemConstants.solSocket, name: SystemConstants.soError) {
            case .success(let value): return value
            case .failure(let errno): throw TCPSocket.error("connect", endpoint, errno)
            }
        }
        if pending != 0 { throw TCPSocket.error("connect", endpoint, Errno(rawValue: pending)) }
    }
}
