public import SystemPackage

/// The one error type of UnixSockets.
///
/// It names the operation, the address (where there is one) and the `Errno` (where the kernel gave one),
/// and its ``description`` reads as a sentence a user can act on:
/// `connect /run/app.sock: no such socket file (ENOENT): is the server running?`
public struct UnixSocketError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. Compare with the static members (`error.code == .timedOut`).
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let rawValue: String
        init(_ rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        /// The kernel refused the call; ``UnixSocketError/errno`` says why.
        public static let system = Code("system")
        /// The address cannot be used (too long, empty, NUL in a path); no syscall was made.
        public static let invalidAddress = Code("invalidAddress")
        /// An argument is out of range (a zero timeout, too many descriptors, an empty message).
        public static let invalidArgument = Code("invalidArgument")
        /// The deadline passed before the operation completed.
        public static let timedOut = Code("timedOut")
        /// The socket was closed (by this process) before or while the operation ran.
        public static let closed = Code("closed")
        /// The peer ended the stream before the requested bytes arrived.
        public static let unexpectedEOF = Code("unexpectedEOF")
        /// A message was longer than the receive buffer (MSG_TRUNC); it was not delivered cut.
        public static let messageTruncated = Code("messageTruncated")
        /// Control data (descriptors, credentials) did not fit (MSG_CTRUNC); what arrived was closed.
        public static let controlTruncated = Code("controlTruncated")
        /// A live socket is bound to the path: another server is running there.
        public static let addressInUse = Code("addressInUse")
        /// The path exists and is not a socket; it was left untouched.
        public static let notASocket = Code("notASocket")
        /// More bytes arrived than the caller's cap allows.
        public static let tooLarge = Code("tooLarge")
        /// A frame header announced a length over the configured maximum.
        public static let frameTooLarge = Code("frameTooLarge")
        /// The stream ended inside a frame (header or body).
        public static let truncatedFrame = Code("truncatedFrame")
        /// The peer is not allowed (credentials check failed).
        public static let notPermitted = Code("notPermitted")
        /// The task waiting in an async operation was cancelled.
        public static let cancelled = Code("cancelled")
    }

    /// What kind of failure this is.
    public let code: Code
    /// The operation that failed, named like the syscall or method (`connect`, `bind`, `receive`).
    public let operation: String
    /// The address the operation worked on, if any.
    public let address: UnixAddress?
    /// The errno the kernel returned, if the kernel refused the call.
    public let errno: Errno?
    /// Extra detail that completes the sentence (a limit, a hint).
    public let detail: String?

    /// Creates an error. Library users rarely need this; it is public so adapters can report alike.
    public init(
        _ code: Code,
        operation: String,
        address: UnixAddress? = nil,
        errno: Errno? = nil,
        detail: String? = nil
    ) {
        self.code = code
        self.operation = operation
        self.address = address
        self.errno = errno
        self.detail = detail
    }

    /// The task running `operation` on `address` was cancelled.
    package static func cancelled(_ operation: String, address: UnixAddress? = nil) -> UnixSocketError {
        UnixSocketError(.cancelled, operation: operation, address: address, detail: "cancelled")
    }

    /// A kernel refusal of `operation` on `address`.
    package static func system(
        _ operation: String,
        _ errno: Errno,
        address: UnixAddress? = nil,
        detail: String? = nil
    )
        -> UnixSocketError
    {
        UnixSocketError(.system, operation: operation, address: address, errno: errno, detail: detail)
    }

    public var description: String {
        var text = operation
        if let address { text += " \(address)" }
        text += ": "
        if let errno {
            let (what, hint) = Self.explain(errno, operation: operation)
            text += "\(detail ?? what) (\(Self.name(of: errno)))"
            // A detail is already the specific sentence; the generic hint goes with the generic text only.
            if let hint, detail == nil { text += ": \(hint)" }
        } else {
            text += detail ?? code.rawValue
        }
        return text
    }

    /// A short explanation and an optional hint for the errno of an operation.
    static func explain(_ errno: Errno, operation: String) -> (String, String?) {
        switch errno {
        case .noSuchFileOrDirectory:
            if operation == "connect" || operation == "sendto" {
                return ("no such socket file", "is the server running?")
            }
            return ("no such file or directory", nil)
        case .connectionRefused:
            if operation == "connect" || operation == "sendto" {
                return ("connection refused", "nothing is listening there (stale socket file or no server)")
            }
            return ("connection refused", "the peer has gone away")
        case .permissionDenied:
            return ("permission denied", "check the socket file's mode and its directories' search permission")
        case .notPermitted: return ("operation not permitted", nil)
        case .addressInUse: return ("address already in use", "another socket is bound to it")
        case .protocolWrongTypeForSocket:
            return ("wrong socket type", "the server uses another type (stream, seqpacket or dgram)")
        case .brokenPipe: return ("broken pipe", "the peer closed the connection")
        case .connectionReset: return ("connection reset by peer", "the peer closed with data unread")
        case .messageTooLong: return ("message too long", nil)
        case .socketNotConnected: return ("socket is not connected", nil)
        case .tooManyOpenFiles: return ("too many open files", "raise RLIMIT_NOFILE or close descriptors")
        case .tooManyOpenFilesInSystem: return ("too many open files in the system", nil)
        case .badFileDescriptor: return ("bad file descriptor", "a descriptor passed in is not open")
        case .invalidArgument: return ("invalid argument", nil)
        case .resourceTemporarilyUnavailable: return ("resource temporarily unavailable", "the peer's queue is full")
        case .noBufferSpace: return ("no buffer space available", nil)
        case .notDirectory: return ("a path component is not a directory", nil)
        case .readOnlyFileSystem: return ("read-only file system", nil)
        case .tooManySymbolicLinkLevels: return ("too many levels of symbolic links", nil)
        default: return (errno.description.lowercased(), nil)
        }
    }

    /// The C name of an errno (`ENOENT`), for messages.
    static func name(of errno: Errno) -> String {
        switch errno {
        case .notPermitted: "EPERM"
        case .noSuchFileOrDirectory: "ENOENT"
        case .interrupted: "EINTR"
        case .ioError: "EIO"
        case .badFileDescriptor: "EBADF"
        case .resourceTemporarilyUnavailable: "EAGAIN"
        case .noMemory: "ENOMEM"
        case .permissionDenied: "EACCES"
        case .badAddress: "EFAULT"
        case .fileExists: "EEXIST"
        case .notDirectory: "ENOTDIR"
        case .invalidArgument: "EINVAL"
        case .tooManyOpenFilesInSystem: "ENFILE"
        case .tooManyOpenFiles: "EMFILE"
        case .readOnlyFileSystem: "EROFS"
        case .brokenPipe: "EPIPE"
        case .notSocket: "ENOTSOCK"
        case .messageTooLong: "EMSGSIZE"
        case .protocolWrongTypeForSocket: "EPROTOTYPE"
        case .protocolNotSupported: "EPROTONOSUPPORT"
        case .notSupportedOnSocket: "EOPNOTSUPP"
        case .addressInUse: "EADDRINUSE"
        case .addressNotAvailable: "EADDRNOTAVAIL"
        case .connectionReset: "ECONNRESET"
        case .noBufferSpace: "ENOBUFS"
        case .socketIsConnected: "EISCONN"
        case .socketNotConnected: "ENOTCONN"
        case .timedOut: "ETIMEDOUT"
        case .connectionRefused: "ECONNREFUSED"
        case .tooManySymbolicLinkLevels: "ELOOP"
        case .fileNameTooLong: "ENAMETOOLONG"
        case .connectionAbort: "ECONNABORTED"
        case .nowInProgress: "EINPROGRESS"
        case .alreadyInProcess: "EALREADY"
        case .addressRequired: "EDESTADDRREQ"
        case .protocolNotAvailable: "ENOPROTOOPT"
        case .noSuchProcess: "ESRCH"
        default: "errno \(errno.rawValue)"
        }
    }
}
