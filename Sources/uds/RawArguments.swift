import UnixSockets

/// argv exactly as the kernel passed it.
///
/// Swift's `CommandLine.arguments` repairs bytes that are not UTF-8 into U+FFFD, so `uds listen
/// $'\xff.sock'` would bind another path. Each argument that is not valid UTF-8 therefore reaches the parser
/// as a token standing for its exact bytes: NUL (which no real argument can hold, so no real argument can be
/// mistaken for a token) followed by the bytes in the address syntax's escaped form (`\xHH`, `\\`), which
/// also keeps error messages readable. ADDRESS, MSG and FILE values are turned back into their exact bytes
/// with ``bytes(of:)``.
enum RawArguments {
    /// The arguments for the parser (without the program name), and the exact bytes behind each token.
    static let parsed: (arguments: [String], tokens: [String: [UInt8]]) = {
        var arguments: [String] = []
        var tokens: [String: [UInt8]] = [:]
        var afterTerminator = false
        for index in 1..<Int(CommandLine.argc) {
            guard let pointer = CommandLine.unsafeArgv[index] else { continue }
            var bytes: [UInt8] = []
            var cursor = pointer
            while cursor.pointee != 0 {
                bytes.append(UInt8(bitPattern: cursor.pointee))
                cursor += 1
            }
            if let text = String(validating: bytes, as: UTF8.self) {
                arguments.append(text)
                if text == "--" { afterTerminator = true }
            } else if !afterTerminator && bytes.first == UInt8(ascii: "-") {
                // Not UTF-8, so not one of our options: let the parser say so as it always did.
                arguments.append(String(decoding: bytes, as: UTF8.self))
            } else {
                let token = "\u{0}" + escapeBytes(bytes)
                tokens[token] = bytes
                arguments.append(token)
            }
        }
        return (arguments, tokens)
    }()

    /// The exact bytes of a parsed argument value.
    static func bytes(of value: String) -> [UInt8] {
        parsed.tokens[value] ?? Array(value.utf8)
    }
}

/// The address syntax's escape (`UnixAddress.escape`).
func escapeBytes(_ bytes: some Sequence<UInt8>) -> String { UnixAddress.escape(bytes) }

/// An ADDRESS from its exact bytes: `@name` is an abstract name (with `\xHH` and `\\` escapes), anything
/// else a path, byte for byte.
func address(fromArgument bytes: [UInt8]) throws(UnixSocketError) -> UnixAddress {
    guard bytes.first == UInt8(ascii: "@") else { return try .path(bytes: bytes) }
    // The escapes are ASCII; bytes that are not become `\xHH`, which the library reads back as themselves.
    // A backslash before such a byte is a bad escape, as the library would say.
    var text = ""
    var index = 0
    while index < bytes.count {
        let byte = bytes[index]
        if byte == UInt8(ascii: "\\"), index + 1 < bytes.count {
            guard bytes[index + 1] < 0x80 else {
                throw UnixSocketError(
                    .invalidAddress,
                    operation: "address",
                    detail: "bad escape in abstract name: use \\xHH for a byte or \\\\ for a backslash"
                )
            }
            text.unicodeScalars.append(Unicode.Scalar(byte))
            text.unicodeScalars.append(Unicode.Scalar(bytes[index + 1]))
            index += 2
            continue
        }
        if byte < 0x80 {
            text.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            text += "\\x" + String(byte, radix: 16)
        }
        index += 1
    }
    return try UnixAddress(text)
}
