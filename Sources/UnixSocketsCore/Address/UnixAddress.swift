import UnixSocketsSystem

/// The address of a Unix domain socket: a file-system path, a Linux abstract name, or unnamed.
///
/// Text form: `"@name"` is the abstract name `name` (in which `\xHH` stands for any byte, NUL included, and
/// `\\` for a backslash); anything else is a path (write a path that begins with `@` as `./@...`).
/// Paths hold at most 107 bytes, must not be empty and must not contain NUL; abstract names hold at most
/// 107 bytes of anything. Invalid addresses are rejected before any syscall.
///
/// ```swift
/// let file: UnixAddress = "/run/app.sock"
/// let name = try UnixAddress("@app\\x00v2")   // abstract, 6 bytes
/// ```
public struct UnixAddress: Hashable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// What an address is.
    public enum Kind: Hashable, Sendable {
        /// A file-system path, as raw bytes (they need not be UTF-8).
        case path([UInt8])
        /// A Linux abstract name: any bytes, without the leading NUL.
        case abstract([UInt8])
        /// No address: an unbound peer, or (for `bind`) a request to autobind.
        case unnamed
    }

    /// The address itself.
    public let kind: Kind
    /// Why the address is invalid, for one made from a string literal; `nil` when valid.
    let invalidReason: String?

    /// The most bytes `sun_path` can hold for a path (one byte is kept for the terminating NUL).
    public static let maximumPathLength = 107
    /// The most bytes an abstract name can hold (after the leading NUL).
    public static let maximumAbstractLength = 107

    /// The unnamed address: an unbound peer's. Binding to it asks the kernel to choose a unique abstract
    /// name (`\0` + 5 hex digits; autobind), so a datagram socket can be answered.
    public static let unnamed = UnixAddress(kind: .unnamed, invalidReason: nil)

    private init(kind: Kind, invalidReason: String?) {
        self.kind = kind
        self.invalidReason = invalidReason
    }

    /// A file-system path.
    /// - Throws: ``UnixSocketError`` with code `.invalidAddress` if the path is empty, contains NUL or is
    ///   longer than 107 bytes.
    public static func path(_ path: String) throws(UnixSocketError) -> UnixAddress {
        try .path(bytes: Array(path.utf8))
    }

    /// A file-system path given as raw bytes (they need not be UTF-8).
    /// - Throws: ``UnixSocketError`` with code `.invalidAddress` as for ``path(_:)``.
    public static func path(bytes: [UInt8]) throws(UnixSocketError) -> UnixAddress {
        if let reason = Self.pathProblem(bytes) {
            throw UnixSocketError(.invalidAddress, operation: "address", detail: reason)
        }
        return UnixAddress(kind: .path(bytes), invalidReason: nil)
    }

    /// A Linux abstract name (any bytes, NUL and 0xFF included), without the leading NUL.
    /// - Throws: ``UnixSocketError`` with code `.invalidAddress` if the name is longer than 107 bytes.
    public static func abstract(_ name: [UInt8]) throws(UnixSocketError) -> UnixAddress {
        if name.count > maximumAbstractLength {
            throw UnixSocketError(
                .invalidAddress,
                operation: "address",
                detail: "abstract name too long: \(name.count) bytes, at most \(maximumAbstractLength) fit"
            )
        }
        return UnixAddress(kind: .abstract(name), invalidReason: nil)
    }

    /// A Linux abstract name given as UTF-8 text (no escapes are interpreted).
    public static func abstract(_ name: String) throws(UnixSocketError) -> UnixAddress {
        try .abstract(Array(name.utf8))
    }

    /// Parses the text form: `"@name"` (with `\xHH` and `\\` escapes) is abstract, anything else a path.
    /// - Throws: ``UnixSocketError`` with code `.invalidAddress` for an invalid address or escape.
    public init(_ text: String) throws(UnixSocketError) {
        let bytes = Array(text.utf8)
        if bytes.first == UInt8(ascii: "@") {
            self = try .abstract(Self.unescape(bytes.dropFirst()))
        } else {
            self = try .path(bytes: bytes)
        }
    }

    /// A literal in code. An invalid literal is not a crash: every operation on it throws `.invalidAddress`.
    public init(stringLiteral text: String) {
        do throws(UnixSocketError) {
            self = try UnixAddress(text)
        } catch {
            self = UnixAddress(kind: .path(Array(text.utf8)), invalidReason: error.detail ?? "invalid address")
        }
    }

    /// Whether this is a file-system path.
    public var isPath: Bool { if case .path = kind { true } else { false } }
    /// Whether this is an abstract name.
    public var isAbstract: Bool { if case .abstract = kind { true } else { false } }
    /// Whether this is unnamed.
    public var isUnnamed: Bool { kind == .unnamed }

    /// The path bytes, for a path address.
    public var pathBytes: [UInt8]? { if case .path(let bytes) = kind { bytes } else { nil } }

    /// The text form: a path as is (`./@x` for a relative path starting with `@`), an abstract name as
    /// `@` + the name with `\xHH` for bytes that are not printable ASCII, `(unnamed)` for no address.
    /// A path that is not UTF-8 or holds control characters (a newline, an escape sequence) is written
    /// with `\xHH` escapes too, so that no address can forge a line of a log or clear a screen.
    public var description: String {
        switch kind {
        case .path(let bytes):
            let text = String(decoding: bytes, as: UTF8.self)
            if text.utf8.elementsEqual(bytes) && !bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
                return bytes.first == UInt8(ascii: "@") ? "./" + text : text
            }
            return Self.escape(bytes)
        case .abstract(let bytes): return "@" + Self.escape(bytes)
        case .unnamed: return "(unnamed)"
        }
    }

    // MARK: sockaddr_un, both ways

    /// Why a path cannot be used, or nil.
    static func pathProblem(_ bytes: [UInt8]) -> String? {
        if bytes.isEmpty { return "empty path (an empty path would silently become an abstract address)" }
        if bytes.contains(0) { return "path contains a NUL byte" }
        if bytes.count > maximumPathLength {
            return "path too long: \(bytes.count) bytes, at most \(maximumPathLength) fit in sun_path"
        }
        return nil
    }

    /// The kernel's form of an address (a `sockaddr_un` and its length), built in the syscall layer.
    typealias SockAddr = SocketAddressStorage

    /// The `sockaddr_un` form with its exact length (paths: with the NUL; abstract: leading NUL + the
    /// name's bytes, no padding; unnamed: the family alone), or `.invalidAddress` (for an invalid literal)
    /// before any syscall.
    func sockAddr(operation: String) throws(UnixSocketError) -> SockAddr {
        if let invalidReason {
            throw UnixSocketError(.invalidAddress, operation: operation, address: self, detail: invalidReason)
        }
        switch kind {
        case .path(let bytes):
            // The NUL (the rest is zeroed; 107 bytes + NUL fill 108). A 108-byte path the kernel reported
            // for a peer has no room for it: pass exactly the structure, as the kernel expects.
            return SockAddr(unixPath: bytes, pathLength: min(bytes.count + 1, SockAddr.unixPathCapacity))
        case .abstract(let bytes):
            return SockAddr(unixPath: [0] + bytes, pathLength: 1 + bytes.count)
        case .unnamed:
            return SockAddr(unixPath: [], pathLength: 0)
        }
    }

    /// Calls `body` with the `sockaddr_un` of this address and its exact length.
    func withSockAddr<R>(
        operation: String,
        _ body: (SockAddr.Pointer, SockAddr.Length) throws(UnixSocketError) -> R
    ) throws(UnixSocketError) -> R {
        let address = try sockAddr(operation: operation)
        return try address.withSockAddr { pointer, length in
            Result { () throws(UnixSocketError) -> R in try body(pointer, length) }
        }.get()
    }

    /// Reads an address the kernel returned. The length is honoured (abstract names may hold any byte)
    /// and clamped to the structure (a peer bound to a 108-byte path reports a longer length).
    init(sockaddr storage: SockAddr.Unix, length: SockAddr.Length) {
        guard let bytes = SockAddr.unixPath(of: storage, length: length) else {
            self = .unnamed
            return
        }
        if bytes[0] == 0 {
            self.init(kind: .abstract(Array(bytes.dropFirst())), invalidReason: nil)
        } else {
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            self.init(kind: .path(Array(bytes[..<end])), invalidReason: nil)
        }
    }

    // MARK: escapes

    /// The address syntax's escape of `bytes`: printable ASCII as is, `\\` for a backslash, `\xHH` for any
    /// other byte. What ``description`` writes for an abstract name (after the `@`) or an unsafe path.
    public static func escape(_ bytes: some Sequence<UInt8>) -> String {
        var text = ""
        for byte in bytes {
            if byte == UInt8(ascii: "\\") {
                text += "\\\\"
            } else if byte >= 0x20 && byte < 0x7F {
                text.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = String(byte, radix: 16, uppercase: false)
                text += "\\x" + (hex.count == 1 ? "0" + hex : hex)
            }
        }
        return text
    }

    static func unescape(_ bytes: ArraySlice<UInt8>) throws(UnixSocketError) -> [UInt8] {
        var output: [UInt8] = []
        var index = bytes.startIndex
        func hexValue(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while index < bytes.endIndex {
            let byte = bytes[index]
            guard byte == UInt8(ascii: "\\") else {
                output.append(byte)
                index += 1
                continue
            }
            let next = index + 1 < bytes.endIndex ? bytes[index + 1] : nil
            if next == UInt8(ascii: "\\") {
                output.append(byte)
                index += 2
            } else if next == UInt8(ascii: "x"), index + 3 < bytes.endIndex,
                let high = hexValue(bytes[index + 2]), let low = hexValue(bytes[index + 3])
            {
                output.append(high << 4 | low)
                index += 4
            } else {
                throw UnixSocketError(
                    .invalidAddress,
                    operation: "address",
                    detail: "bad escape in abstract name: use \\xHH for a byte or \\\\ for a backslash"
                )
            }
        }
        return output
    }
}
