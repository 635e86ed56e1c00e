import Synchronization
public import SystemPackage
import UnixSocketsSystem

/// A descriptor received from a peer (SCM_RIGHTS), owned from the moment it arrived.
///
/// It is closed when this object goes away unless ``take()`` handed it to the caller; ``close()`` closes it
/// earlier. Received descriptors are CLOEXEC (MSG_CMSG_CLOEXEC).
public final class OwnedDescriptor: Sendable, CustomStringConvertible {
    private let state: Atomic<CInt>  // -1 once taken or closed; taken by one exchange, so exactly once

    package init(_ fd: CInt) { state = Atomic(fd) }

    deinit { close() }

    /// The descriptor number while this object still owns it, else nil. Do not close it yourself.
    public var rawValue: CInt? {
        let fd = state.load(ordering: .acquiring)
        return fd >= 0 ? fd : nil
    }

    /// Hands the descriptor to the caller, who must close it. Nil if already taken or closed.
    public func take() -> FileDescriptor? {
        let fd = state.exchange(-1, ordering: .acquiringAndReleasing)
        return fd >= 0 ? FileDescriptor(rawValue: fd) : nil
    }

    /// Closes the descriptor now (once; later calls do nothing).
    public func close() {
        if let descriptor = take() {
            if case .failure(let errno) = system_close(descriptor.rawValue) {
                precondition(errno != .badFileDescriptor, "UnixSockets lost track of received descriptor \(descriptor)")
            }
        }
    }

    /// Lends the descriptor to `body` without giving up ownership.
    /// - Throws: ``UnixSocketError`` `.closed` if it was taken or closed, or what `body` throws.
    public func withDescriptor<R>(_ body: (FileDescriptor) throws -> R) throws -> R {
        guard let fd = rawValue else {
            throw UnixSocketError(.closed, operation: "descriptor", detail: "the descriptor was taken or closed")
        }
        return try body(FileDescriptor(rawValue: fd))
    }

    public var description: String { rawValue.map { "OwnedDescriptor(\($0))" } ?? "OwnedDescriptor(closed)" }
}

/// A message received from a socket: its bytes, the descriptors that came with it, the sender's
/// credentials (SCM_CREDENTIALS, when enabled) and, for datagrams, the sender's address.
public struct UnixMessage: Sendable {
    /// The payload.
    public var bytes: [UInt8]
    /// Descriptors that arrived with it, owned (closed when dropped unless taken).
    public var descriptors: [OwnedDescriptor]
    /// The sender's credentials, if SO_PASSCRED is on (see `enableCredentialPassing()`) or they were sent.
    public var credentials: UnixCredentials?
    /// The sender's address (datagrams), `.unnamed` for an unbound sender, nil for connected sockets.
    public var sender: UnixAddress?

    /// Creates a message value.
    public init(
        bytes: [UInt8],
        descriptors: [OwnedDescriptor] = [],
        credentials: UnixCredentials? = nil,
        sender: UnixAddress? = nil
    ) {
        self.bytes = bytes
        self.descriptors = descriptors
        self.credentials = credentials
        self.sender = sender
    }
}
