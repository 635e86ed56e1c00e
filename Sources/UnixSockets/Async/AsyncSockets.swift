public import SystemPackage

// The async face: the same operations as the blocking API, awaited. Each tries its syscall first and only
// on EAGAIN waits on the reactor (`UnixReactor.shared`); no thread is blocked. Cancellation of the task
// wakes the waiter and surfaces as `CancellationError`; `timeout` bounds each call (`.timedOut`); closing a
// socket another task waits on wakes that task with `.closed`.

extension UnixStream {
    /// Connects to a listening stream socket without blocking a thread.
    /// - Throws: ``UnixSocketError`` as the blocking ``connect(to:timeout:)``, or `CancellationError`.
    public static func connect(to address: UnixAddress, timeout: Duration? = nil) async throws -> UnixStream {
        let core = try SocketCore.make(.stream, address: address, operation: "connect")
        try await core.asyncConnect(to: address, timeout: timeout)
        return UnixStream(core: core)
    }

    /// Reads what is there into `buffer`; 0 means EOF.
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws -> Int {
        try await core.asyncReadSome(buffer, timeout: timeout)
    }

    /// Reads what is there, at most `maxBytes`; an empty array means EOF.
    public func read(maxBytes: Int = 65536, timeout: Duration? = nil) async throws -> [UInt8] {
        let capacity = try checkedByteCount(
            maxBytes, "maxBytes", operation: "read", address: core.address, allocationCap: maximumStreamReadBuffer)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        defer { storage.deallocate() }
        let count = try await core.asyncReadSome(UnsafeMutableRawBufferPointer(rebasing: storage[..<capacity]), timeout: timeout)
        return Array(UnsafeRawBufferPointer(rebasing: storage[..<count]))
    }

    /// Reads exactly `count` bytes.
    /// - Throws: ``UnixSocketError`` `.unexpectedEOF` if the peer closes first.
    public func read(exactly count: Int, timeout: Duration? = nil) async throws -> [UInt8] {
        _ = try checkedByteCount(count, "count", operation: "read", address: core.address)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        defer { storage.deallocate() }
        let target = UnsafeMutableRawBufferPointer(rebasing: storage[..<count])
        try await read(exactlyInto: target, timeout: timeout)
        return Array(UnsafeRawBufferPointer(target))
    }

    /// Fills `buffer` completely.
    public func read(exactlyInto buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws {
        var offset = 0
        while offset < buffer.count {
            let count = try await core.asyncReadSome(
                UnsafeMutableRawBufferPointer(rebasing: buffer[offset...]), timeout: timeout)
            if count == 0 {
                throw UnixSocketError(
                    .unexpectedEOF, operation: "read", address: core.address,
                    detail: "the peer closed after \(offset) of \(buffer.count) bytes")
            }
            offset += count
        }
    }

    /// Writes every byte, looping over short writes.
    public func write(all bytes: [UInt8], timeout: Duration? = nil) async throws {
        try await bytes.withUnsafeBytesAsync { try await core.asyncWriteAll($0, timeout: timeout) }
    }

    /// Writes every byte of `buffer` (no copy).
    public func write(all buffer: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws {
        try await core.asyncWriteAll(buffer, timeout: timeout)
    }

    /// Sends `bytes` with `descriptors` attached to the first byte (SCM_RIGHTS).
    public func send(_ bytes: [UInt8], descriptors: [FileDescriptor] = [], timeout: Duration? = nil) async throws {
        let fds = descriptors.map(\.rawValue)
        try await bytes.withUnsafeBytesAsync { try await core.asyncSendStream($0, descriptors: fds, timeout: timeout) }
    }

    /// Receives what is there with the descriptors that came with it.
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration? = nil) async throws
        -> UnixMessage
    {
        try await core.asyncReceiveMessage(
            maxBytes: maxBytes, maxDescriptors: maxDescriptors, wantSender: false, timeout: timeout)
    }
}

extension UnixSeqPacket {
    /// Connects to a listening seqpacket socket without blocking a thread.
    public static func connect(to address: UnixAddress, timeout: Duration? = nil) async throws -> UnixSeqPacket {
        let core = try SocketCore.make(.seqPacket, address: address, operation: "connect")
        try await core.asyncConnect(to: address, timeout: timeout)
        return UnixSeqPacket(core: core)
    }

    /// Sends one message, whole, with descriptors and optional credentials.
    public func send(
        _ bytes: [UInt8], descriptors: [FileDescriptor] = [], credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) async throws {
        let fds = descriptors.map(\.rawValue)
        try await bytes.withUnsafeBytesAsync {
            try await core.asyncSendMessage($0, descriptors: fds, credentials: credentials, to: nil, timeout: timeout)
        }
    }

    /// Receives one message; an empty one means EOF.
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration? = nil) async throws
        -> UnixMessage
    {
        try await core.asyncReceiveMessage(
            maxBytes: maxBytes, maxDescriptors: maxDescriptors, wantSender: false, timeout: timeout)
    }
    /// Receives one message into `buffer` (no allocation); returns its length (0 at EOF).
    /// - Throws: ``UnixSocketError`` `.messageTruncated` if it did not fit, `.controlTruncated` if
    ///   descriptors came with it (they are closed), or `CancellationError`.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws -> Int {
        try await core.asyncReceiveMessage(into: buffer, timeout: timeout)
    }
}

extension UnixDatagram {
    /// Sends one datagram to `address`, whole (a full receiver is retried with back-off).
    public func send(
        _ bytes: [UInt8], to address: UnixAddress, descriptors: [FileDescriptor] = [],
        credentials: UnixCredentials? = nil, timeout: Duration? = nil
    ) async throws {
        let fds = descriptors.map(\.rawValue)
        try await bytes.withUnsafeBytesAsync {
            try await core.asyncSendMessage($0, descriptors: fds, credentials: credentials, to: address, timeout: timeout)
        }
    }

    /// Sends one datagram to the connected peer, whole.
    public func send(
        _ bytes: [UInt8], descriptors: [FileDescriptor] = [], credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) async throws {
        let fds = descriptors.map(\.rawValue)
        try await bytes.withUnsafeBytesAsync {
            try await core.asyncSendMessage($0, descriptors: fds, credentials: credentials, to: nil, timeout: timeout)
        }
    }

    /// Receives one datagram with its sender's address, descriptors and credentials.
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration? = nil) async throws
        -> UnixMessage
    {
        try await core.asyncReceiveMessage(
            maxBytes: maxBytes, maxDescriptors: maxDescriptors, wantSender: true, timeout: timeout)
    }
    /// Receives one datagram into `buffer` (no allocation, no sender address); returns its length.
    /// - Throws: ``UnixSocketError`` `.messageTruncated` if it did not fit, `.controlTruncated` if
    ///   descriptors came with it (they are closed), or `CancellationError`.
    public func receive(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) async throws -> Int {
        try await core.asyncReceiveMessage(into: buffer, timeout: timeout)
    }
}

extension UnixListener {
    /// Accepts one connection without blocking a thread. Out of descriptors (EMFILE/ENFILE), it pauses and
    /// retries rather than failing or spinning.
    public func accept(timeout: Duration? = nil) async throws -> Connection {
        let flags = Connection.socketType.system.flags & ~Connection.socketType.system.rawValue
        let fd = try await core.asyncAccept(flags: flags, timeout: timeout)
        return Connection(_AcceptedSocket(core: SocketCore(adopting: fd, type: Connection.socketType, address: address)))
    }

    /// The incoming connections, for `for try await connection in listener.connections { ... }`. The
    /// sequence ends when the listener is closed.
    public var connections: Connections { Connections(listener: self) }

    /// An `AsyncSequence` of accepted connections.
    public struct Connections: AsyncSequence, Sendable {
        public typealias Element = Connection
        let listener: UnixListener<Connection>

        public func makeAsyncIterator() -> Iterator { Iterator(listener: listener) }

        /// The iterator: each `next()` accepts one connection; nil once the listener is closed.
        public struct Iterator: AsyncIteratorProtocol {
            let listener: UnixListener<Connection>

            public mutating func next() async throws -> Connection? {
                do {
                    return try await listener.accept()
                } catch let error as UnixSocketError where error.code == .closed {
                    return nil
                }
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// `withUnsafeBytes` for an async body, without a copy.
    ///
    /// `withUnsafeBytes` cannot take an async closure. The pointer is taken from `copy`, an immutable
    /// array kept alive until the body returns: its native contiguous storage neither moves nor changes
    /// while a reference exists and nobody mutates it (`copy` is a `let`, so nobody can).
    func withUnsafeBytesAsync<R>(_ body: (UnsafeRawBufferPointer) async throws -> R) async throws -> R {
        let copy = self
        let pointer = copy.withUnsafeBytes { $0 }
        defer { withExtendedLifetime(copy) {} }
        return try await body(pointer)
    }
}
