import SystemPackage
import Synchronization

extension SocketCore {
    /// The reactor registration of this socket, made on first use and removed before close.
    func registration() throws(UnixSocketError) -> Registration {
        if let existing = asyncRegistration.withLock({ $0 }) { return existing }
        return try withDescriptor("epoll_ctl") { (fd) throws(UnixSocketError) -> Registration in
            try asyncRegistration.withLock { (slot) throws(UnixSocketError) -> Registration in
                if let existing = slot { return existing }
                let made = try UnixReactor.shared.register(fd)
                slot = made
                let closed = closedError("wait")
                closeHooks.withLock {
                    $0.append { _ in UnixReactor.shared.deregister(made, error: closed) }
                }
                return made
            }
        }
    }

    /// Tries `attempt`; on EAGAIN waits on the reactor for `writing` readiness, then tries again.
    /// Cancellation surfaces as `CancellationError`; the deadline as `.timedOut`.
    func asyncIO<R>(
        _ operation: String, writing: Bool, timeout: Duration?,
        _ attempt: (CInt) -> Result<IOResult<R>, Errno>
    ) async throws -> R {
        // A registration made by an earlier wait is used from the first attempt on: its sequence is read
        // before the syscall, so a first EAGAIN waits at once instead of repeating the syscall.
        var registration: Registration? = asyncRegistration.withLock { $0 }
        var sequence: UInt64 = 0
        var deadline: Deadline?
        var deadlineSet = false
        while true {
            try Task.checkCancellation()
            if let registration { sequence = registration.sequence(writing: writing) }
            let result = try withDescriptor(operation) { (fd) throws(UnixSocketError) -> IOResult<R> in
                switch attempt(fd) {
                case .success(let value): return value
                case .failure(let errno): throw mapError(operation, errno)
                }
            }
            switch result {
            case .done(let value): return value
            case .wouldBlock:
                if !deadlineSet {
                    deadline = try Deadline.after(timeout, operation: operation)
                    deadlineSet = true
                }
                guard let current = registration else {
                    // First wait: register (epoll reports a readiness that is already there), then retry.
                    registration = try self.registration()
                    continue
                }
                if let deadline, deadline.hasPassed {
                    throw UnixSocketError(.timedOut, operation: operation, address: address, detail: "timed out")
                }
                if writing && !current.writeArmed.load(ordering: .relaxed) {
                    try withDescriptor(operation) { (_) throws(UnixSocketError) in
                        try UnixReactor.shared.armWrite(current)
                    }
                }
                try await UnixReactor.shared.wait(
                    current, writing: writing, after: sequence, deadline: deadline, operation: operation,
                    address: address)
            }
        }
    }

    /// Retries `attempt` with a short back-off while it reports EAGAIN (a full backlog on connect, a full
    /// receiver on an unconnected sendto: readiness cannot be waited on for those).
    func asyncBackingOff<R>(
        _ operation: String, timeout: Duration?, _ attempt: (CInt) -> Result<IOResult<R>, Errno>
    ) async throws -> R {
        let deadline = try Deadline.after(timeout, operation: operation)
        var pause = 20_000
        while true {
            try Task.checkCancellation()
            let result = try withDescriptor(operation) { (fd) throws(UnixSocketError) -> IOResult<R> in
                switch attempt(fd) {
                case .success(let value): return value
                case .failure(let errno): throw mapError(operation, errno)
                }
            }
            if case .done(let value) = result { return value }
            if let deadline, deadline.hasPassed {
                throw UnixSocketError(
                    .timedOut, operation: operation, address: address, errno: .resourceTemporarilyUnavailable,
                    detail: operation == "connect" ? "the server's backlog stayed full" : "the receiver's queue stayed full")
            }
            try await UnixReactor.sleep(nanoseconds: UInt64(pause))
            pause = min(pause * 2, 5_000_000)
        }
    }

    // MARK: Async building blocks

    func asyncConnect(to address: UnixAddress, timeout: Duration?) async throws {
        let storage = try address.sockAddr(operation: "connect")
        do {
            _ = try await asyncBackingOff("connect", timeout: timeout) { fd in
                storage.withSockAddr { system_connect(fd, $0, $1) }
            }
        } catch let error as UnixSocketError {
            throw UnixSocketError(error.code, operation: "connect", address: address, errno: error.errno, detail: error.detail)
        }
    }

    func asyncReadSome(_ buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws -> Int {
        try await asyncIO("recv", writing: false, timeout: timeout) { fd in system_recv(fd, buffer, 0) }
    }

    func asyncWriteAll(_ bytes: UnsafeRawBufferPointer, timeout: Duration?) async throws {
        var offset = 0
        while offset < bytes.count {
            offset += try await asyncIO("send", writing: true, timeout: timeout) { fd in
                system_send(fd, UnsafeRawBufferPointer(rebasing: bytes[offset...]), SystemConstants.msgNoSignal)
            }
        }
    }

    func asyncSendStream(_ bytes: UnsafeRawBufferPointer, descriptors: [CInt], timeout: Duration?) async throws {
        try checkStreamSend(byteCount: bytes.count, descriptorCount: descriptors.count)
        var sent = 0
        if !descriptors.isEmpty {
            sent = try await asyncIO("sendmsg", writing: true, timeout: timeout) { fd in
                descriptors.withUnsafeBufferPointer { fds in
                    Self.sendmsgOnce(fd, bytes, descriptors: fds, credentials: nil, destination: nil)
                }
            }
        }
        try await asyncWriteAll(UnsafeRawBufferPointer(rebasing: bytes[sent...]), timeout: timeout)
    }

    func asyncSendMessage(
        _ bytes: UnsafeRawBufferPointer, descriptors: [CInt], credentials: UnixCredentials?,
        to destination: UnixAddress?, timeout: Duration?
    ) async throws {
        let operation = destination == nil ? "send" : "sendto"
        try checkMessageSend(
            byteCount: bytes.count, descriptorCount: descriptors.count, to: destination, operation: operation)
        do {
            if let destination {
                let storage = try destination.sockAddr(operation: operation)
                do {
                    _ = try await asyncBackingOff(operation, timeout: timeout) { fd in
                        storage.withSockAddr { name, length in
                            descriptors.withUnsafeBufferPointer { fds in
                                Self.sendmsgOnce(
                                    fd, bytes, descriptors: fds, credentials: credentials, destination: (name, length))
                            }
                        }
                    }
                } catch let error as UnixSocketError where error.code == .system {
                    throw UnixSocketError(.system, operation: operation, address: destination, errno: error.errno)
                }
            } else {
                _ = try await asyncIO(operation, writing: true, timeout: timeout) { fd in
                    descriptors.withUnsafeBufferPointer { fds in
                        Self.sendmsgOnce(fd, bytes, descriptors: fds, credentials: credentials, destination: nil)
                    }
                }
            }
        } catch let error as UnixSocketError where error.errno == .messageTooLong {
            throw messageTooLong(bytes.count, operation: operation, address: destination ?? address)
        }
    }

    func asyncReceiveMessage(
        maxBytes: Int, maxDescriptors: Int, wantSender: Bool, timeout: Duration?
    ) async throws -> UnixMessage {
        let maxBytes = try checkedByteCount(
            maxBytes, "maxBytes", operation: "receive", address: address, allocationCap: maximumMessageBuffer)
        if maxDescriptors < 0 || maxDescriptors > maximumDescriptorsPerMessage {
            throw UnixSocketError(
                .invalidArgument, operation: "receive", address: address,
                detail: "maxDescriptors must be 0...\(maximumDescriptorsPerMessage)")
        }
        let isMessage = type != .stream
        let flags = isMessage ? SystemConstants.msgTrunc : 0
        let credentials = passCredentials.load(ordering: .relaxed)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxBytes, 1), alignment: 16)
        defer { storage.deallocate() }
        let usable = UnsafeMutableRawBufferPointer(rebasing: storage[..<maxBytes])
        var raw = RawReceived()
        let count = try await asyncIO("receive", writing: false, timeout: timeout) { fd in
            Self.recvmsgOnce(
                fd, usable, maxDescriptors: maxDescriptors, credentials: credentials, wantSender: wantSender,
                flags: flags, into: &raw)
        }
        try checkReceived(raw, count: count, capacity: maxBytes, maxDescriptors: maxDescriptors, operation: "receive")
        return UnixMessage(
            bytes: Array(UnsafeRawBufferPointer(rebasing: usable[..<count])), descriptors: raw.descriptors,
            credentials: raw.credentials, sender: raw.sender)
    }

    /// Receives one message into `buffer` (no allocation), without descriptors or sender; as the blocking
    /// `receiveMessage(into:timeout:)`.
    func asyncReceiveMessage(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration?) async throws -> Int {
        let flags = type != .stream ? SystemConstants.msgTrunc : 0
        let credentials = passCredentials.load(ordering: .relaxed)
        var raw = RawReceived()
        let count = try await asyncIO("receive", writing: false, timeout: timeout) { fd in
            Self.recvmsgOnce(
                fd, buffer, maxDescriptors: 0, credentials: credentials, wantSender: false, flags: flags, into: &raw)
        }
        try checkReceived(raw, count: count, capacity: buffer.count, maxDescriptors: 0, operation: "receive")
        return count
    }

    func asyncAccept(flags: CInt, timeout: Duration?) async throws -> CInt {
        _ = try? self.registration()  // start the reactor and register while descriptors are still free
        var pause: UInt64 = 10_000_000
        while true {
            do {
                return try await asyncIO("accept", writing: false, timeout: timeout) { fd in
                    system_accept4(fd, nil, nil, flags)
                }
            } catch let error as UnixSocketError
                where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem
            {
                // Out of descriptors: pause accepting (no busy loop), resume when some are freed.
                try await UnixReactor.sleep(nanoseconds: UInt64(pause))
                pause = min(pause * 2, 200_000_000)
            }
        }
    }
}
