// The few TCP calls `uds bridge` needs (socket, bind with SO_REUSEADDR, listen, accept, connect, name
// resolution), at package access, so the CLI never calls libc for them. Beside the Unix sockets, on the
// same wrappers: the C side (addresses, getaddrinfo) is in System/InetAddress.swift; I/O, waiting (poll),
// shutdown and close-once reuse `SocketCore`, which works on any socket descriptor.
import SystemPackage
import UnixSocketsSystem

/// A TCP endpoint: `tcp:HOST:PORT` (`[::1]` for an IPv6 literal; the host is always explicit).
package struct TCPEndpoint: Sendable, Hashable, CustomStringConvertible {
    package let host: String
    package let port: UInt16

    package init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT` or `[V6]:PORT` (without the `tcp:` prefix).
    package init(parsing text: String) throws(UnixSocketError) {
        func bad(_ why: String) -> UnixSocketError {
            UnixSocketError(.invalidAddress, operation: "address", detail: "tcp:\(text): \(why)")
        }
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw bad("missing ] after an IPv6 address") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw bad("expected :PORT after ]") }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw bad("expected HOST:PORT") }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { throw bad("write an IPv6 address in brackets: tcp:[::1]:PORT") }
        }
        guard !host.isEmpty else { throw bad("the host is missing (write it explicitly, e.g. 127.0.0.1)") }
        guard let port = UInt16(portText) else { throw bad("the port must be a number 0...65535") }
        self.init(host: String(host), port: port)
    }

    package var description: String { host.contains(":") ? "tcp:[\(host)]:\(port)" : "tcp:\(host):\(port)" }
}

/// A blocking TCP socket (non-blocking underneath, waiting with poll), close-once like the Unix types.
package final class TCPSocket: Sendable, CustomStringConvertible {
    package let core: SocketCore
    /// The peer (connected, accepted) or the local endpoint (listening).
    package let endpoint: TCPEndpoint

    init(core: SocketCore, endpoint: TCPEndpoint) {
        self.core = core
        self.endpoint = endpoint
    }

    /// Resolves `endpoint` (numeric or by name) to socket addresses.
    static func resolve(
        _ endpoint: TCPEndpoint,
        passive: Bool,
        operation: String
    ) throws(UnixSocketError)
        -> [(family: CInt, address: [UInt8])]
    {
        switch InetAddress.resolve(host: endpoint.host, port: endpoint.port, passive: passive) {
        case .success(let addresses): return addresses
        case .failure(let failure):
            throw UnixSocketError(
                .invalidAddress,
                operation: operation,
                detail: "\(endpoint): cannot resolve the host: \(failure.reason)"
            )
        }
    }

    static func error(_ operation: String, _ endpoint: TCPEndpoint, _ errno: Errno) -> UnixSocketError {
        let (what, hint) = UnixSocketError.explain(errno, operation: operation == "connect" ? "tcp connect" : operation)
        var detail = "\(endpoint): \(what) (\(UnixSocketError.name(of: errno)))"
        if errno == .connectionRefused && operation == "connect" {
            detail += ": nothing is listening there"
        } else if let hint {
            detail += ": \(hint)"
        }
        return UnixSocketError(.system, operation: operation, detail: detail)
    }

    static func makeSocket(
        _ family: CInt,
        _ endpoint: TCPEndpoint,
        operation: String
    ) throws(UnixSocketError)
        -> SocketCore
    {
        switch system_socket(family, UnixSocketType.stream.flags, 0) {
        case .success(let fd): return SocketCore(adopting: fd, type: .stream, address: nil)
        case .failure(let errno): throw error(operation, endpoint, errno)
        }
    }

    /// Connects to `endpoint`, trying each resolved address in turn.
    /// - Throws: ``UnixSocketError`` naming the endpoint (ECONNREFUSED, ETIMEDOUT, `.timedOut`).
    package static func connect(
        to endpoint: TCPEndpoint,
        timeout: Duration? = nil
    ) throws(UnixSocketError)
        -> TCPSocket
    {
        var dialer = try Dialer(endpoint)
        while true {
            var (core, operation) = try dialer.next()
            do throws(UnixSocketError) { try core.perform(&operation, timeout: timeout) } catch {
                try dialer.failed(core, error)
                continue
            }
            return dialer.connected(core)
        }
    }

    /// The addresses a connect tries in turn, one socket each: the blocking and the async connect share it
    /// and differ only in how they perform the `TCPConnect` of each.
    package struct Dialer {
        let endpoint: TCPEndpoint
        var addresses: [(family: CInt, address: [UInt8])]
        var lastError: UnixSocketError?

        package init(_ endpoint: TCPEndpoint) throws(UnixSocketError) {
            self.endpoint = endpoint
            addresses = try resolve(endpoint, passive: false, operation: "connect").reversed()
        }

        /// A new socket and its connect for the next address; throws the last failure once none is left.
        package mutating func next() throws(UnixSocketError) -> (core: SocketCore, operation: TCPConnect) {
            guard let (family, address) = addresses.popLast() else {
                throw lastError
                    ?? UnixSocketError(.invalidAddress, operation: "connect", detail: "\(endpoint): no address")
            }
            return (try makeSocket(family, endpoint, operation: "connect"), TCPConnect(address, endpoint: endpoint))
        }

        /// The connected socket, with TCP_NODELAY.
        package func connected(_ core: SocketCore) -> TCPSocket {
            _ = core.withDescriptorIfOpen { fd in
                IntSocketOption.set(fd, level: SystemConstants.ipprotoTCP, name: SystemConstants.tcpNoDelay, 1)
            }
            return TCPSocket(core: core, endpoint: endpoint)
        }

        /// Closes the socket of a failed try and keeps its error; a cancellation ends the dialling at once.
        package mutating func failed(_ core: SocketCore, _ error: UnixSocketError) throws(UnixSocketError) {
            core.close()
            if error.code == .cancelled { throw error }
            lastError =
                error.code == .timedOut
                ? UnixSocketError(.timedOut, operation: "connect", detail: "\(endpoint): timed out") : error
        }
    }

    /// Binds `endpoint` (SO_REUSEADDR) and listens. Port 0 picks a free port (see ``localPort``).
    package static func listen(on endpoint: TCPEndpoint, backlog: Int32 = 128) throws(UnixSocketError) -> TCPSocket {
        var lastError: UnixSocketError?
        for (family, address) in try resolve(endpoint, passive: true, operation: "bind") {
            let core = try makeSocket(family, endpoint, operation: "bind")
            do throws(UnixSocketError) {
                try core.withDescriptor("bind") { (fd) throws(UnixSocketError) in
                    if case .failure(let errno) = IntSocketOption.set(
                        fd,
                        level: SystemConstants.solSocket,
                        name: SystemConstants.soReuseAddr,
                        1
                    ) {
                        throw error("setsockopt SO_REUSEADDR", endpoint, errno)
                    }
                    let bound = InetAddress.withSockAddr(address) { system_bind(fd, $0, $1) }
                    if case .failure(let errno) = bound { throw error("bind", endpoint, errno) }
                    if case .failure(let errno) = system_listen(fd, backlog) { throw error("listen", endpoint, errno) }
                }
                return TCPSocket(core: core, endpoint: endpoint)
            } catch {
                core.close()
                lastError = error
            }
        }
        throw lastError ?? UnixSocketError(.invalidAddress, operation: "bind", detail: "\(endpoint): no address")
    }

    /// Accepts one connection (CLOEXEC, TCP_NODELAY). A thread blocked here wakes with `.closed` on close.
    package func accept(timeout: Duration? = nil) throws(UnixSocketError) -> TCPSocket {
        var operation = Accept()
        return Self.accepted(try core.perform(&operation, timeout: timeout))
    }

    /// The socket that owns an accepted descriptor, with TCP_NODELAY and its peer's endpoint.
    package static func accepted(_ fd: CInt) -> TCPSocket {
        _ = IntSocketOption.set(fd, level: SystemConstants.ipprotoTCP, name: SystemConstants.tcpNoDelay, 1)
        var storage = InetAddressStorage()
        let named = storage.withMutableSockAddr { system_getpeername(fd, $0, $1) }
        var peer = TCPEndpoint(host: "unknown", port: 0)
        if case .success = named, let known = endpoint(of: storage) { peer = known }
        return TCPSocket(core: SocketCore(adopting: fd, type: .stream, address: nil), endpoint: peer)
    }

    /// The host and port of an IPv4 or IPv6 address the kernel returned; nil for any other family.
    static func endpoint(of storage: InetAddressStorage) -> TCPEndpoint? {
        storage.hostAndPort.map { TCPEndpoint(host: $0.host, port: $0.port) }
    }

    /// The bound local port (after listening on port 0).
    package var localPort: UInt16? {
        core.withDescriptorIfOpen { fd -> UInt16? in
            var storage = InetAddressStorage()
            let result = storage.withMutableSockAddr { system_getsockname(fd, $0, $1) }
            guard case .success = result else { return nil }
            return Self.endpoint(of: storage)?.port
        } ?? nil
    }

    /// Reads what is there into `buffer`; 0 means the peer closed its side.
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws(UnixSocketError) -> Int {
        var operation = ReadSome(into: buffer)
        return try core.perform(&operation, timeout: nil)
    }

    /// Writes every byte (MSG_NOSIGNAL), looping over short writes.
    package func write(all buffer: UnsafeRawBufferPointer) throws(UnixSocketError) {
        var operation = WriteAll(buffer)
        try core.perform(&operation, timeout: nil)
    }

    /// Closes one or both directions.
    package func shutdown(_ direction: ShutdownDirection) throws(UnixSocketError) { try core.shutdown(direction) }

    /// Closes the socket once; a thread blocked in it wakes with `.closed`.
    package func close() { core.close() }

    package var description: String { "TCPSocket(\(endpoint))" }
}

extension SocketCore {
    /// Lends the descriptor to `body` if the socket is still open.
    func withDescriptorIfOpen<R>(_ body: (CInt) -> R) -> R? {
        try? withDescriptor("descriptor") { (fd) throws(UnixSocketError) -> R in body(fd) }
    }
}

/// A non-blocking TCP connect: EINPROGRESS, then wait for writability, then SO_ERROR says how it ended.
package struct TCPConnect: SocketOperation {
    let address: [UInt8]
    let endpoint: TCPEndpoint
    var started = false

    init(_ address: [UInt8], endpoint: TCPEndpoint) {
        self.address = address
        self.endpoint = endpoint
    }

    package var name: String { "connect" }
    package var readiness: Readiness { .output }

    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        if !started {
            switch InetAddress.withSockAddr(address, { system_connect(fd, $0, $1) }) {
            case .success(.done): return ()
            case .success(.wouldBlock), .failure(.nowInProgress), .failure(.alreadyInProcess): started = true
            case .failure(let errno): throw TCPSocket.error("connect", endpoint, errno)
            }
        }
        // In progress: done once the socket is writable (a wait may end early: look without waiting).
        var entry = PollDescriptor(fd, events: SystemConstants.pollOut)
        switch entry.poll(timeoutMilliseconds: 0) {
        case .success(0), .failure(.interrupted): return nil
        case .success: break
        case .failure(let errno): throw core.mapError("connect", errno)
        }
        switch IntSocketOption.get(fd, level: SystemConstants.solSocket, name: SystemConstants.soError) {
        case .success(0): return ()
        case .success(let pending): throw TCPSocket.error("connect", endpoint, Errno(rawValue: pending))
        case .failure(let errno): throw TCPSocket.error("connect", endpoint, errno)
        }
    }
}
