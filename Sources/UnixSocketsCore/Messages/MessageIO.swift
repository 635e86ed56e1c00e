import Synchronization
import SystemPackage
import UnixSocketsSystem

/// What one recvmsg returned besides its byte count, before the truncation checks. Descriptors are owned
/// from the moment they are parsed. Filled in place by the `Receive` operation (no copies of it through `Result`).
package struct RawReceived {
    package init() {}
    var flags: CInt = 0
    package var descriptors: [OwnedDescriptor] = []
    package var credentials: UnixCredentials?
    package var sender: UnixAddress?

    /// What the syscall layer returned besides the descriptors, as Swift values.
    mutating func take(_ header: ReceivedHeader) {
        flags = header.flags
        if let raw = header.credentials { credentials = UnixCredentials(raw) }
        if let name = header.sender { sender = UnixAddress(sockaddr: name.address, length: name.length) }
    }
}

/// The most descriptors one message can carry (SCM_MAX_FD is 253 on Linux).
package let maximumDescriptorsPerMessage = 253

extension SocketCore {
    /// Checks a descriptor list before any syscall.
    func checkDescriptors(_ count: Int, operation: String) throws(UnixSocketError) {
        if count > maximumDescriptorsPerMessage {
            throw UnixSocketError(
                .invalidArgument,
                operation: operation,
                address: address,
                detail: "\(count) descriptors in one message; the kernel takes at most \(maximumDescriptorsPerMessage)"
            )
        }
    }

    /// The EMSGSIZE error with the limit: SO_SNDBUF - 32 (the kernel reports the doubled buffer).
    func messageTooLong(_ size: Int, operation: String, address: UnixAddress?) -> UnixSocketError {
        let buffer = (try? getOption(SystemConstants.solSocket, SystemConstants.soSndBuf, operation: operation)) ?? 0
        let limit = buffer > 32 ? " (the limit is \(buffer - 32) bytes: SO_SNDBUF - 32)" : ""
        return UnixSocketError(
            .system,
            operation: operation,
            address: address,
            errno: .messageTooLong,
            detail: "message of \(size) bytes is too long\(limit)"
        )
    }

    /// What a message send (seqpacket, datagram) refuses before any syscall, blocking and async alike.
    func checkMessageSend(
        byteCount: Int,
        descriptorCount: Int,
        to destination: UnixAddress?,
        operation: String
    )
        throws(UnixSocketError)
    {
        if destination?.isUnnamed == true {
            throw UnixSocketError(
                .invalidAddress,
                operation: operation,
                address: destination,
                detail: "cannot send to an unnamed address (the peer is not bound; it cannot be answered)"
            )
        }
        try checkDescriptors(descriptorCount, operation: operation)
        if type == .seqPacket && byteCount == 0 {
            throw UnixSocketError(
                .invalidArgument,
                operation: operation,
                address: address,
                detail: "an empty seqpacket message would read like end-of-stream at the peer"
            )
        }
    }

    /// What a stream send with descriptors refuses before any syscall, blocking and async alike.
    func checkStreamSend(byteCount: Int, descriptorCount: Int) throws(UnixSocketError) {
        try checkDescriptors(descriptorCount, operation: "sendmsg")
        if descriptorCount > 0 && byteCount == 0 {
            throw UnixSocketError(
                .invalidArgument,
                operation: "sendmsg",
                address: address,
                detail: "descriptors on a stream need at least one payload byte (the kernel drops them otherwise)"
            )
        }
    }

    // MARK: recvmsg

    /// Wraps received descriptors in owners at once; MSG_CTRUNC and (for messages) MSG_TRUNC become errors
    /// after closing every descriptor that arrived.
    func checkReceived(
        _ raw: borrowing RawReceived,
        count: Int,
        capacity: Int,
        maxDescriptors: Int,
        operation: String
    )
        throws(UnixSocketError)
    {
        // Fast path: no control data arrived and the message fit.
        if raw.flags & (SystemConstants.msgCtrunc | SystemConstants.msgTrunc) == 0 && raw.descriptors.isEmpty
            && (type == .stream || count <= capacity)
        {
            return
        }
        let owned = raw.descriptors
        // CMSG_SPACE pads an odd count, so one descriptor more than asked can fit: over the cap is truncation too.
        if raw.flags & SystemConstants.msgCtrunc != 0 || owned.count > maxDescriptors {
            owned.forEach { $0.close() }
            let fate =
                owned.isEmpty
                ? "the kernel discarded the descriptors that did not fit"
                : "the \(owned.count) that arrived were closed, and the kernel discarded any others"
            throw UnixSocketError(
                .controlTruncated,
                operation: operation,
                address: address,
                detail: "control data was cut (MSG_CTRUNC): room for \(maxDescriptors) descriptors; \(fate)"
            )
        }
        if type != .stream && count > capacity {
            owned.forEach { $0.close() }
            throw UnixSocketError(
                .messageTruncated,
                operation: operation,
                address: address,
                detail: "a message of \(count) bytes did not fit in \(capacity) bytes (MSG_TRUNC); "
                    + "it was discarded"
            )
        }
    }

    /// Receives one message into a new array of at most `maxBytes` (allocated once, filled in place).
    func receiveMessage(
        maxBytes: Int,
        maxDescriptors: Int,
        wantSender: Bool,
        timeout: Duration?
    ) throws(UnixSocketError) -> UnixMessage {
        let maxBytes = try receiveCapacity(maxBytes, message: true)
        var received = RawReceived()
        var failure: UnixSocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: max(maxBytes, 1)) { storage, initialized in
            initialized = 0
            do throws(UnixSocketError) {
                let buffer = UnsafeMutableRawBufferPointer(
                    rebasing: UnsafeMutableRawBufferPointer(storage)[..<maxBytes]
                )
                var operation = try Receive(
                    into: buffer,
                    maxDescriptors: maxDescriptors,
                    wantSender: wantSender,
                    on: self
                )
                initialized = try perform(&operation, timeout: timeout)
                received = operation.received
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return UnixMessage(
            bytes: bytes,
            descriptors: received.descriptors,
            credentials: received.credentials,
            sender: received.sender
        )
    }

    /// Turns on SO_PASSCRED: every later receive carries the sender's credentials.
    package func enableCredentials() throws(UnixSocketError) {
        try setOption(SystemConstants.solSocket, SystemConstants.soPassCred, 1, operation: "setsockopt SO_PASSCRED")
        passCredentials.store(true, ordering: .relaxed)
    }

    /// SO_PEERCRED, plus SO_PEERGROUPS when `groups` is true.
    func peerCredentials(groups: Bool) throws(UnixSocketError) -> UnixCredentials {
        try withDescriptor("getsockopt SO_PEERCRED") { (fd) throws(UnixSocketError) -> UnixCredentials in
            var credentials: UnixCredentials
            switch system_peerCredentials(fd) {
            case .success(let raw): credentials = UnixCredentials(raw)
            case .failure(let errno): throw mapError("getsockopt SO_PEERCRED", errno)
            }
            if groups && credentials.isKnown {
                credentials.groups = try Self.peerGroups(fd, address: address)
            }
            return credentials
        }
    }

    private static func peerGroups(_ fd: CInt, address: UnixAddress?) throws(UnixSocketError) -> [UInt32] {
        var capacity = 64
        while true {
            var groups = [UInt32](repeating: 0, count: capacity)
            let (result, count) = groups.withUnsafeMutableBufferPointer { system_peerGroups(fd, into: $0) }
            switch result {
            case .success:
                return Array(groups.prefix(count))
            case .failure(.outOfRange) where count > capacity:
                capacity = count
            case .failure(let errno):
                throw .system("getsockopt SO_PEERGROUPS", errno, address: address)
            }
        }
    }
}
