// The C side of TCP for the layers above: name resolution (getaddrinfo), the kernel's `sockaddr_in` /
// `sockaddr_in6` as opaque bytes, and the host and port of an address the kernel returned.
package import CUnixSockets
import SystemPackage

/// IPv4/IPv6 socket addresses, kept as the bytes getaddrinfo returned.
package enum InetAddress {
    /// Why a host could not be resolved (gai_strerror's text).
    package struct ResolveFailure: Error, Sendable {
        package let reason: String
    }

    /// Resolves `host` (numeric or by name) and the numeric `port` to stream socket addresses
    /// (getaddrinfo, AF_UNSPEC, SOCK_STREAM, AI_NUMERICSERV, and AI_PASSIVE for a listener), in the order
    /// getaddrinfo returned them: each with its family (for `socket`) and its bytes (for `connect`/`bind`).
    package static func resolve(
        host: String,
        port: UInt16,
        passive: Bool
    )
        -> Result<[(family: CInt, address: [UInt8])], ResolveFailure>
    {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = CInt(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let list else {
            let why =
                gai_strerror(status).map { String(validatingCString: $0) ?? "error \(status)" } ?? "error \(status)"
            return .failure(ResolveFailure(reason: why))
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
        return .success(result)
    }

    /// Calls `body` with the address `bytes` (from ``resolve(host:port:passive:)``) as a `sockaddr`
    /// pointer and its length, for `system_connect` / `system_bind`.
    package static func withSockAddr<R>(
        _ bytes: [UInt8],
        _ body: (SocketAddressStorage.Pointer, SocketAddressStorage.Length) -> R
    ) -> R {
        bytes.withUnsafeBytes { raw in
            body(raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(raw.count))
        }
    }
}

/// Room for any socket address the kernel returns (`sockaddr_storage`): accept, getsockname, getpeername.
package struct InetAddressStorage {
    private var storage = sockaddr_storage()
    private var length = socklen_t(MemoryLayout<sockaddr_storage>.size)

    package init() {}

    /// Calls `body` with a pointer to the storage and to its length, the length first reset to the
    /// storage's full size (the kernel writes the address and its length).
    package mutating func withMutableSockAddr<R>(
        _ body: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> R
    ) -> R {
        length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, &length) }
        }
    }

    /// The numeric host (inet_ntop) and port of an IPv4 or IPv6 address; nil for any other family.
    package var hostAndPort: (host: String, port: UInt16)? {
        var storage = storage
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        return withUnsafePointer(to: &storage) { pointer -> (host: String, port: UInt16)? in
            switch CInt(pointer.pointee.ss_family) {
            case AF_INET:
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { v4 in
                    var address = v4.pointee.sin_addr
                    guard inet_ntop(AF_INET, &address, &text, socklen_t(text.count)) != nil else { return nil }
                    return (Self.string(text), UInt16(bigEndian: v4.pointee.sin_port))
                }
            case AF_INET6:
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { v6 in
                    var address = v6.pointee.sin6_addr
                    guard inet_ntop(AF_INET6, &address, &text, socklen_t(text.count)) != nil else { return nil }
                    return (Self.string(text), UInt16(bigEndian: v6.pointee.sin6_port))
                }
            default: return nil
            }
        }
    }

    static func string(_ text: [CChar]) -> String {
        String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
