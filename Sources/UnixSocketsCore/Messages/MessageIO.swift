import CUnixSockets
import Synchronization
import SystemPackage
import UnixSocketsSystem

/// What one recvmsg returned besides its byte count, before the truncation checks. Descriptors are owned
/// from the moment they are parsed. Filled in place by `recvmsgOnce` (no copies of it through `Result`).
package struct RawReceived {
    package init() {}
    var flags: CInt = 0
    var descriptors: [OwnedDescriptor] = []
    var credentials: UnixCredentials?
    var sender: UnixAddress?
}

/// The most descriptors one message can carry (SCM_MAX_FD is 253 on Linux).
package let maximumDescriptorsPerMessage = 253

extension SocketCore {
    // MARK: sendmsg

    /// One sendmsg(2) of `bytes` with SCM_RIGHTS and SCM_CREDENTIALS control data, to `destination` if given.
    static func sendmsgOnce(
        _ fd: CInt,
        _ bytes: UnsafeRawBufferPointer,
        descriptors: UnsafeBufferPointer<CInt>,
        credentials: KernelCredentials.Raw?,
        destination: (UnsafePointer<sockaddr>, socklen_t)?
    ) -> Result<IOResult<Int>, Errno> {
        let rightsSpace = descriptors.isEmpty ? 0 : uds_cmsg_space(descriptors.count * MemoryLayout<CInt>.size)
        let credentialsSpace = credentials == nil ? 0 : uds_cmsg_space(MemoryLayout<uds_ucred>.size)
        let space = rightsSpace + credentialsSpace
        var iov = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            var message = msghdr()
            message.msg_iov = iovPointer
            message.msg_iovlen = 1
            if let destination {
                message.msg_name = UnsafeMutableRawPointer(mutating: destination.0)
                message.msg_namelen = destination.1
            }
            if space == 0 { return system_sendmsg(fd, &message, SystemConstants.msgNoSignal) }
            return withUnsafeTemporaryAllocation(byteCount: space, alignment: 8) { control in
                control.initializeMemory(as: UInt8.self, repeating: 0)
                message.msg_control = control.baseAddress
                message.msg_controllen = space
                var header = uds_cmsg_firsthdr(&message)
                if !descriptors.isEmpty, let cmsg = header {
                    cmsg.pointee.cmsg_level = SystemConstants.solSocket
                    cmsg.pointee.cmsg_type = SystemConstants.scmRights
                    cmsg.pointee.cmsg_len = uds_cmsg_len(descriptors.count * MemoryLayout<CInt>.size)
                    UnsafeMutableRawPointer(uds_cmsg_data(cmsg)).copyMemory(
                        from: descriptors.baseAddress!,
                        byteCount: descriptors.count * MemoryLayout<CInt>.size
                    )
                    header = uds_cmsg_nxthdr(&message, cmsg)
                }
                if let credentials, let cmsg = header {
                    cmsg.pointee.cmsg_level = SystemConstants.solSocket
                    cmsg.pointee.cmsg_type = SystemConstants.scmCredentials
                    cmsg.pointee.cmsg_len = uds_cmsg_len(MemoryLayout<uds_ucred>.size)
                    var raw = credentials
                    UnsafeMutableRawPointer(uds_cmsg_data(cmsg)).copyMemory(
                        from: &raw,
                        byteCount: MemoryLayout<uds_ucred>.size
                    )
                }
                return system_sendmsg(fd, &message, SystemConstants.msgNoSignal)
            }
        }
    }

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

    /// One recvmsg(2) into `buffer` with room for `maxDescriptors` and (when SO_PASSCRED is on) credentials.
    static func recvmsgOnce(
        _ fd: CInt,
        _ buffer: UnsafeMutableRawBufferPointer,
        maxDescriptors: Int,
        credentials: Bool,
        wantSender: Bool,
        flags: CInt,
        into received: inout RawReceived
    ) -> Result<IOResult<Int>, Errno> {
        let rightsSpace = maxDescriptors > 0 ? uds_cmsg_space(maxDescriptors * MemoryLayout<CInt>.size) : 0
        let credentialsSpace = credentials ? uds_cmsg_space(MemoryLayout<uds_ucred>.size) : 0
        let space = rightsSpace + credentialsSpace
        var iov = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        // Room past sockaddr_un: the kernel reports a longer msg_namelen for a peer bound to a 108-byte path
        // (it writes no more than we offer), and ASan's recvmsg interceptor then marks that many bytes.
        var name = sockaddr_storage()
        return withUnsafeMutablePointer(to: &iov) { iovPointer in
            withUnsafeMutablePointer(to: &name) { storagePointer in
                let namePointer = UnsafeMutableRawPointer(storagePointer).bindMemory(to: sockaddr_un.self, capacity: 1)
                var message = msghdr()
                message.msg_iov = iovPointer
                message.msg_iovlen = 1
                if wantSender {
                    message.msg_name = UnsafeMutableRawPointer(namePointer)
                    message.msg_namelen = socklen_t(MemoryLayout<sockaddr_un>.size)
                }
                let allFlags = flags | SystemConstants.msgCmsgCloexec
                return withUnsafeTemporaryAllocation(byteCount: max(space, 1), alignment: 8) { control in
                    if space > 0 {
                        message.msg_control = control.baseAddress
                        message.msg_controllen = space
                    }
                    let result = system_recvmsg(fd, &message, allFlags)
                    if case .success(.done) = result {
                        received.flags = message.msg_flags
                        if wantSender {
                            received.sender = UnixAddress(sockaddr: namePointer.pointee, length: message.msg_namelen)
                        }
                        if space > 0 && message.msg_controllen > 0 {
                            parseControl(&message, into: &received)
                        }
                    }
                    return result
                }
            }
        }
    }

    /// Reads every control message (several SCM_RIGHTS, credentials in any order), bounded by msg_controllen.
    private static func parseControl(_ message: inout msghdr, into received: inout RawReceived) {
        var header = uds_cmsg_firsthdr(&message)
        let dataOffset = uds_cmsg_len(0)
        while let cmsg = header {
            let length = Int(cmsg.pointee.cmsg_len)
            if length < dataOffset { break }
            guard let data = UnsafeRawPointer(uds_cmsg_data(cmsg)) else { break }
            let payload = length - dataOffset
            if cmsg.pointee.cmsg_level == SystemConstants.solSocket {
                if cmsg.pointee.cmsg_type == SystemConstants.scmRights {
                    let count = payload / MemoryLayout<CInt>.size
                    for index in 0..<count {
                        received.descriptors.append(
                            OwnedDescriptor(
                                data.loadUnaligned(fromByteOffset: index * MemoryLayout<CInt>.size, as: CInt.self)
                            )
                        )
                    }
                } else if cmsg.pointee.cmsg_type == SystemConstants.scmCredentials,
                    payload >= MemoryLayout<uds_ucred>.size
                {
                    received.credentials = UnixCredentials(data.loadUnaligned(as: uds_ucred.self))
                }
            }
            header = uds_cmsg_nxthdr(&message, cmsg)
        }
    }

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
        let maxBytes = try checkedByteCount(
            maxBytes,
            "maxBytes",
            operation: "receive",
            address: address,
            allocationCap: maximumMessageBuffer
        )
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
    func enableCredentials() throws(UnixSocketError) {
        try setOption(SystemConstants.solSocket, SystemConstants.soPassCred, 1, operation: "setsockopt SO_PASSCRED")
        passCredentials.store(true, ordering: .relaxed)
    }

    /// SO_PEERCRED, plus SO_PEERGROUPS when `groups` is true.
    func peerCredentials(groups: Bool) throws(UnixSocketError) -> UnixCredentials {
        try withDescriptor("getsockopt SO_PEERCRED") { (fd) throws(UnixSocketError) -> UnixCredentials in
            var raw = uds_ucred()
            var length = socklen_t(MemoryLayout<uds_ucred>.size)
            if case .failure(let errno) = system_getsockopt(
                fd,
                SystemConstants.solSocket,
                SystemConstants.soPeerCred,
                &raw,
                &length
            ) {
                throw mapError("getsockopt SO_PEERCRED", errno)
            }
            var credentials = UnixCredentials(raw)
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
            var length = socklen_t(capacity * MemoryLayout<UInt32>.size)
            let result = groups.withUnsafeMutableBytes { raw in
                system_getsockopt(
                    fd,
                    SystemConstants.solSocket,
                    SystemConstants.soPeerGroups,
                    raw.baseAddress!,
                    &length
                )
            }
            switch result {
            case .success:
                return Array(groups.prefix(Int(length) / MemoryLayout<UInt32>.size))
            case .failure(.outOfRange) where Int(length) > capacity * MemoryLayout<UInt32>.size:
                capacity = Int(length) / MemoryLayout<UInt32>.size
            case .failure(let errno):
                throw .system("getsockopt SO_PEERGROUPS", errno, address: address)
            }
        }
    }
}
