// sendmsg(2) and recvmsg(2) with their control messages (SCM_RIGHTS, SCM_CREDENTIALS), and the peer's
// credentials (SO_PEERCRED, SO_PEERGROUPS): the `msghdr`, `cmsghdr` and `ucred` structures stay here.
// The layers above pass and get plain values; a received descriptor is handed to the caller's closure the
// moment it is parsed, so the caller owns it from then on.
import CUnixSockets
package import SystemPackage

/// What one recvmsg returned besides its bytes and descriptors.
package struct ReceivedHeader {
    package init() {}
    /// `msg_flags` (MSG_TRUNC, MSG_CTRUNC).
    package var flags: CInt = 0
    /// SCM_CREDENTIALS, when they came.
    package var credentials: KernelCredentials.Raw?
    /// The sender's address, when asked for.
    package var sender: (address: SocketAddressStorage.Unix, length: SocketAddressStorage.Length)?
}

/// One sendmsg(2) of `bytes` with SCM_RIGHTS and SCM_CREDENTIALS control data, to `destination` if given
/// (MSG_NOSIGNAL).
package func system_sendMessage(
    _ fd: CInt,
    _ bytes: UnsafeRawBufferPointer,
    descriptors: UnsafeBufferPointer<CInt>,
    credentials: KernelCredentials.Raw?,
    destination: (SocketAddressStorage.Pointer, SocketAddressStorage.Length)?
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

/// One recvmsg(2) into `buffer` with room for `maxDescriptors` and (when `credentials`) SCM_CREDENTIALS,
/// MSG_CMSG_CLOEXEC added to `flags`. Each received descriptor goes to `descriptor` as it is parsed (every
/// SCM_RIGHTS message, in order, bounded by msg_controllen); the rest goes into `header`.
package func system_receiveMessage(
    _ fd: CInt,
    _ buffer: UnsafeMutableRawBufferPointer,
    maxDescriptors: Int,
    credentials: Bool,
    wantSender: Bool,
    flags: CInt,
    header: inout ReceivedHeader,
    descriptor: (CInt) -> Void
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
                    header.flags = message.msg_flags
                    if wantSender { header.sender = (namePointer.pointee, message.msg_namelen) }
                    if space > 0 && message.msg_controllen > 0 {
                        parseControl(&message, header: &header, descriptor: descriptor)
                    }
                }
                return result
            }
        }
    }
}

/// Reads every control message (several SCM_RIGHTS, credentials in any order), bounded by msg_controllen.
private func parseControl(_ message: inout msghdr, header received: inout ReceivedHeader, descriptor: (CInt) -> Void) {
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
                    descriptor(data.loadUnaligned(fromByteOffset: index * MemoryLayout<CInt>.size, as: CInt.self))
                }
            } else if cmsg.pointee.cmsg_type == SystemConstants.scmCredentials,
                payload >= MemoryLayout<uds_ucred>.size
            {
                received.credentials = data.loadUnaligned(as: uds_ucred.self)
            }
        }
        header = uds_cmsg_nxthdr(&message, cmsg)
    }
}

/// SO_PEERCRED: the credentials the peer had when it connected (or the socketpair was made).
package func system_peerCredentials(_ fd: CInt) -> Result<KernelCredentials.Raw, Errno> {
    var raw = uds_ucred()
    var length = socklen_t(MemoryLayout<uds_ucred>.size)
    return system_getsockopt(fd, SystemConstants.solSocket, SystemConstants.soPeerCred, &raw, &length).map { _ in raw }
}

/// SO_PEERGROUPS into `groups`, and the number of groups the kernel reported: those written on success;
/// on ERANGE (`groups` too small), how many there are.
package func system_peerGroups(
    _ fd: CInt,
    into groups: UnsafeMutableBufferPointer<UInt32>
) -> (result: Result<Void, Errno>, count: Int) {
    var length = socklen_t(groups.count * MemoryLayout<UInt32>.size)
    let result = system_getsockopt(
        fd,
        SystemConstants.solSocket,
        SystemConstants.soPeerGroups,
        UnsafeMutableRawPointer(groups.baseAddress!),
        &length
    )
    return (result.map { _ in () }, Int(length) / MemoryLayout<UInt32>.size)
}
