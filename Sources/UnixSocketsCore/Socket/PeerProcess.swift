import SystemPackage
import UnixSocketsSystem

extension SocketCore {
    /// SO_PEERPIDFD: a pidfd naming the peer process, immune to pid reuse (Linux 6.5 and later).
    func peerProcessDescriptor() throws(UnixSocketError) -> OwnedDescriptor {
        try withDescriptor("getsockopt SO_PEERPIDFD") { (fd) throws(UnixSocketError) -> OwnedDescriptor in
            switch IntSocketOption.get(
                fd,
                level: SystemConstants.solSocket,
                name: SystemConstants.soPeerPidfd,
                initial: -1
            ) {
            case .success(let pidfd) where pidfd >= 0: return OwnedDescriptor(pidfd)
            case .success:
                throw .system("getsockopt SO_PEERPIDFD", .noSuchProcess, address: address)
            case .failure(let errno):
                let tooOld = "this kernel has no SO_PEERPIDFD (Linux 6.5+); fall back to credentials.pid"
                throw .system(
                    "getsockopt SO_PEERPIDFD",
                    errno,
                    address: address,
                    detail: errno == .protocolNotAvailable ? tooOld : nil
                )
            }
        }
    }
}

extension UnixStream {
    /// A pidfd for the peer process (SO_PEERPIDFD): unlike ``credentials``' pid it cannot name another
    /// process after the peer exits and its pid is reused. Owned; closed when dropped unless taken.
    /// - Throws: ``UnixSocketError`` (ENOPROTOOPT on kernels before 6.5; ESRCH if the peer has exited).
    public func peerProcessDescriptor() throws(UnixSocketError) -> OwnedDescriptor {
        try core.peerProcessDescriptor()
    }
}

extension UnixSeqPacket {
    /// A pidfd for the peer process (SO_PEERPIDFD); see ``UnixStream/peerProcessDescriptor()``.
    public func peerProcessDescriptor() throws(UnixSocketError) -> OwnedDescriptor {
        try core.peerProcessDescriptor()
    }
}
