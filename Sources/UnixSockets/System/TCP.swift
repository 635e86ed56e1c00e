// The few TCP calls `uds bridge` needs (socket, bind with SO_REUSEADDR, listen, accept, connect,
// getaddrinfo), at package access: part of the syscall layer, so the CLI never calls libc for them.
// I/O, waiting (poll), shutdown and close-once reuse `SocketCore`, which works on any socket descriptor.
import CUnixSockets
import SystemPackage

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif

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
    let core: SocketCore
    /// The peer (connected, accepted) or the local endpoint (listening).
    package let endpoint: TCPEndpoint

    init(core: SocketCore, endpoint: TCPEndpoint) {
        self.core = core
        self.endpoint = endpoint
    }

    /// Resolves `endpoint` (numeric or by name) to socket addresses.
    static func resolve(_ endpoint: TCPEndpoint, passive: Bool, operation: String) throws(UnixSocketError)
        -> [(family: CInt, address: [UInt8])]
    {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &list)
        guard status == 0, let list else {
            let why = gai_strerror(status).map { String(validatingCString: $0) ?? "error \(status)" } ?? "error \(status)"
            throw UnixSocketError(
                .invalidAddress, operation: operation, detail: "\(endpoint): cannot resolve the host: \(why)")
        }
        defer { freeaddrinfo(list) }
        var result: [(CInt, [UInt8])] = []
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            if let address = current.pointee.ai_addr {
                let bytes = Array(UnsafeRawBufferPointer(start: address, count: Int(current.pointee.ai_addrlen)))
                result.append((current.pointee.ai_family, bytes))
            }
            entry = current.pointee.ai_next
        }
        return result
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

    static func makeSocket(_ family: CInt, _ endpoint: TCPEndpoint, operation: String) throws(UnixSocketError)
        -> SocketCore
    {
        switch system_socket(family, SocketType.stream.flags, 0) {
        case .success(let fd): return SocketCore(adopting: fd, type: .stream, address: nil)
        case .failure(let errno): throw error(operation, endpoint, errno)
        }
    }

    /// Connects to `endpoint`, trying each resolved address in turn.
    /// - Throws: ``UnixSocketError`` naming the endpoint (ECONNREFUSED, ETIMEDOUT, `.timedOut`).
    package static func connect(to endpoint: TCPEndpoint, timeout: Duration? = nil) throws(UnixSocketError)
        -> TCPSocket
    {
        var lastError: UnixSocketError?
        for (family, address) in try resolve(endpoint, passive: false, operation: "connect") {
            let core = try makeSocket(family, endpoint, operation: "connect")
            do throws(UnixSocketError) {
                try core.withDescriptor("connect") { (fd) throws(UnixSocketError) in
                    let result = address.withUnsafeBytes { raw in
                        system_connect(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
                    }
                    switch result {
                    case .success(.done): return
                    case .success(.wouldBlock), .failure(.nowInProgress):
                        let deadline = try Deadline.after(timeout, operation: "connect")
                        try core.wait(fd, events: SystemConstants.pollOut, deadline: deadline, operation: "connect")
                        var value: CInt = 0
                        var length = socklen_t(MemoryLayout<CInt>.size)
                        if case .failure(let errno) = system_getsockopt(fd, SOL_SOCKET, SO_ERROR, &value, &length) {
                            throw error("connect", endpoint, errno)
                        }
                        if value != 0 { throw error("connect", endpoint, Errno(rawValue: value)) }
                    case .failure(let errno): throw error("connect", endpoint, errno)
                    }
                }
                var one: CInt = 1
                _ = core.withDescriptorIfOpen { fd in
                    system_setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
                }
                return TCPSocket(core: core, endpoint: endpoint)
            } catch {
                core.close()
                lastError = error.code == .timedOut
                    ? UnixSocketError(.timedOut, operation: "connect", detail: "\(endpoint): timed out") : error
            }
        }
        throw lastError ?? UnixSocketError(.invalidAddress, operation: "connect", detail: "\(endpoint): no address")
    }

    /// Binds `endpoint` (SO_REUSEADDR) and listens. Port 0 picks a free port (see ``localPort``).
    package static func listen(on endpoint: TCPEndpoint, backlog: Int32 = 128) throws(UnixSocketError) -> TCPSocket {
        var lastError: UnixSocketError?
        for (family, address) in try resolve(endpoint, passive: true, operation: "bind") {
            let core = try makeSocket(family, endpoint, operation: "bind")
            do throws(UnixSocketError) {
                try core.withDescriptor("bind") { (fd) throws(UnixSocketError) in
                    var one: CInt = 1
                    if case .failure(let errno) = system_setsockopt(
                        fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
                    {
                        throw error("setsockopt SO_REUSEADDR", endpoint, errno)
                    }
                    let bound = address.withUnsafeBytes { raw in
                        system_bind(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
                    }
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
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = try withUnsafeMutablePointer(to: &storage) { (pointer) throws(UnixSocketError) -> CInt in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { (address) throws(UnixSocketError) -> CInt in
                try core.blocking("accept", events: SystemConstants.pollIn, timeout: timeout) { fd in
                    length = socklen_t(MemoryLayout<sockaddr_storage>.size)
                    return system_accept4(fd, address, &length, SocketType.stream.flags & ~SocketType.stream.rawValue)
                }
            }
        }
        var one: CInt = 1
        _ = system_setsockopt(fd, CInt(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<CInt>.size))
        let peer = Self.endpoint(of: storage) ?? TCPEndpoint(host: "unknown", port: 0)
        return TCPSocket(core: SocketCore(adopting: fd, type: .stream, address: nil), endpoint: peer)
    }

    static func endpoint(of storage: sockaddr_storage) -> TCPEndpoint? {
        var storage = storage
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        return withUnsafePointer(to: &storage) { pointer -> TCPEndpoint? in
            switch CInt(pointer.pointee.ss_family) {
            case AF_INET:
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                    var address = v4.pointee.sin_addr
                    guard inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil else { return nil }
                    return TCPEndpoint(host: Self.string(text), port: UInt16(bigEndian: v4.pointee.sin_port))
                }
            case AF_INET6:
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    var address = v6.pointee.sin6_addr
                    guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { return nil }
                    return TCPEndpoint(host: Self.string(text), port: UInt16(bigEndian: v6.pointee.sin6_port))
                }
            default: return nil
            }
        }
    }

    static func string(_ text: [CChar]) -> String {
        String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The bound local port (after listening on port 0).
    package var localPort: UInt16? {
        core.withDescriptorIfOpen { fd -> UInt16? in
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let result = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { system_getsockname(fd, $0, &length) }
            }
            guard case .success = result else { return nil }
            return Self.endpoint(of: storage)?.port
        } ?? nil
    }

    /// Reads what is there into `buffer`; 0 means the peer closed its side.
    package func read(into buffer: UnsafeMutableRawBufferPointer) throws(UnixSocketError) -> Int {
        try core.readSome(buffer, timeout: nil)
    }

    /// Writes every byte (MSG_NOSIGNAL), looping over short writes.
    package func write(all buffer: UnsafeRawBufferPointer) throws(UnixSocketError) {
        try core.writeAll(buffer, timeout: nil)
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
