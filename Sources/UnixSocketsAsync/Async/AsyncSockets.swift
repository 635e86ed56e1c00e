public import SystemPackage
public import UnixSocketsCore

// The async face: the same operations as the blocking face, with the same parameters and the same typed
// errors, awaited. Each runs the same `SocketOperation` as its blocking twin; it tries the syscall first and
// only on EAGAIN waits on the reactor (`UnixReactor.shared`): no thread is blocked. Cancellation of the task
// wakes the waiter with `.cancelled`; `timeout` bounds each wait (`.timedOut`); closing a socket another
// task waits on wakes that task with `.closed`.

extension UnixSocket {
    /// Receives what is there (a stream) or one message (seqpacket, datagram), as the blocking
    /// ``receive(maxBytes:maxDescriptors:timeout:)``, without blocking a thread.
    /// - Throws: ``UnixSocketError`` as the blocking call, or `.cancelled`.
    public func receive(
        maxBytes: Int = 65536,
        maxDescriptors: Int = 8,
        timeout: Duration? = nil
    )
        async
        throws(UnixSocketError) -> UnixMessage
    {
        let capacity = try core.receiveCapacity(maxBytes, message: true)
        // Owned storage (not a borrowed pointer) lives across the wait; the message copies what arrived.
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        defer { storage.deallocate() }
        let usable = UnsafeMutableRawBufferPointer(rebasing: storage[..<capacity])
        var operation = try Receive(
            into: usable,
            maxDescriptors: maxDescriptors,
            wantSender: core.type == .datagram,
            on: core
        )
        let count = try await core.perform(&operation, timeout: timeout)
        return operation.message(Array(UnsafeRawBufferPointer(rebasing: usable[..<count])))
    }
}

extension UnixConnection {
    /// Connects to a listening socket of this type without blocking a thread.
    /// - Throws: ``UnixSocketError`` as the blocking ``connect(to:timeout:)``, or `.cancelled`.
    public static func connect(
        to address: UnixAddress,
        timeout: Duration? = nil
    ) async throws(UnixSocketError)
        -> Self
    {
        let core = try SocketCore.make(socketType, address: address, operation: "connect")
        var operation = try Connect(to: address)
        try await core.perform(&operation, timeout: timeout)
        return Self(core: core)
    }
}

extension UnixStream {
    /// Reads what is there into `buffer`; 0 means EOF.
    public func read(
        into buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration? = nil
    )
        async
        throws(UnixSocketError) -> Int
    {
        var operation = ReadSome(into: buffer)
        return try await core.perform(&operation, timeout: timeout)
    }

    /// Reads what is there, at most `maxBytes`; an empty array means EOF.
    public func read(maxBytes: Int = 65536, timeout: Duration? = nil) async throws(UnixSocketError) -> [UInt8] {
        let capacity = try core.receiveCapacity(maxBytes, message: false)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        defer { storage.deallocate() }
        var operation = ReadSome(into: UnsafeMutableRawBufferPointer(rebasing: storage[..<capacity]))
        let count = try await core.perform(&operation, timeout: timeout)
        return Array(UnsafeRawBufferPointer(rebasing: storage[..<count]))
    }

    /// Reads exactly `count` bytes.
    /// - Throws: ``UnixSocketError`` `.unexpectedEOF` if the peer closes first.
    public func read(exactly count: Int, timeout: Duration? = nil) async throws(UnixSocketError) -> [UInt8] {
        _ = try checkedByteCount(count, "count", operation: "read", address: core.address)
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        defer { storage.deallocate() }
        let target = UnsafeMutableRawBufferPointer(rebasing: storage[..<count])
        var operation = ReadExactly(into: target)
        try await core.perform(&operation, timeout: timeout)
        return Array(UnsafeRawBufferPointer(target))
    }

    /// Fills `buffer` completely.
    public func read(
        exactlyInto buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration? = nil
    )
        async
        throws(UnixSocketError)
    {
        var operation = ReadExactly(into: buffer)
        try await core.perform(&operation, timeout: timeout)
    }

    /// Reads until the peer closes its side, refusing to hold more than `maxBytes`.
    /// - Throws: ``UnixSocketError`` `.tooLarge` past the cap.
    public func readToEnd(maxBytes: Int, timeout: Duration? = nil) async throws(UnixSocketError) -> [UInt8] {
        var operation = try ReadToEnd(maxBytes: maxBytes, on: core)
        return try await core.perform(&operation, timeout: timeout)
    }

    /// Writes every byte, looping over short writes.
    public func write(all bytes: some Collection<UInt8>, timeout: Duration? = nil) async throws(UnixSocketError) {
        var operation = WriteAll(Array(bytes))
        try await core.perform(&operation, timeout: timeout)
    }

    /// Writes every byte of `buffer` (no copy; the caller keeps it valid until the call returns).
    public func write(all buffer: UnsafeRawBufferPointer, timeout: Duration? = nil) async throws(UnixSocketError) {
        var operation = WriteAll(buffer)
        try await core.perform(&operation, timeout: timeout)
    }

    /// Writes several buffers in order as one stream.
    public func write(vectored buffers: [[UInt8]], timeout: Duration? = nil) async throws(UnixSocketError) {
        var operation = WriteVectored(buffers)
        try await core.perform(&operation, timeout: timeout)
    }

    /// Sends `bytes` with `descriptors` attached to the first byte (SCM_RIGHTS).
    public func send(
        _ bytes: some Collection<UInt8>,
        descriptors: [FileDescriptor] = [],
        timeout: Duration? = nil
    )
        async throws(UnixSocketError)
    {
        var operation = try StreamSend(Array(bytes), descriptors: descriptors.map(\.rawValue), on: core)
        try await core.perform(&operation, timeout: timeout)
    }
}

extension UnixMessageSocket {
    /// Sends one message to the connected peer, whole, with descriptors and optional credentials.
    public func send(
        _ bytes: some Collection<UInt8>,
        descriptors: [FileDescriptor] = [],
        credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) async throws(UnixSocketError) {
        try await core.sendMessage(bytes, descriptors: descriptors, credentials: credentials, to: nil, timeout: timeout)
    }

    /// Receives one message into `buffer` (no allocation); returns its length (0 at EOF).
    /// - Throws: ``UnixSocketError`` `.messageTruncated` if it did not fit, `.controlTruncated` if
    ///   descriptors came with it (they are closed), or `.cancelled`.
    public func receive(
        into buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration? = nil
    )
        async
        throws(UnixSocketError) -> Int
    {
        try await core.receiveMessage(into: buffer, timeout: timeout)
    }

    /// The size of the next message, without consuming it and without a buffer for it (MSG_PEEK |
    /// MSG_TRUNC); 0 at EOF. A server with many idle clients then allocates for a message only once one
    /// has arrived, and only as much as it holds.
    public func nextMessageSize(timeout: Duration? = nil) async throws(UnixSocketError) -> Int {
        var operation = Peek()
        return try await core.perform(&operation, timeout: timeout)
    }
}

extension UnixDatagram {
    /// Sends one datagram to `address`, whole.
    public func send(
        _ bytes: some Collection<UInt8>,
        to address: UnixAddress,  // a full receiver is retried with back-off on the reactor's timers
        descriptors: [FileDescriptor] = [],
        credentials: UnixCredentials? = nil,
        timeout: Duration? = nil
    ) async throws(UnixSocketError) {
        try await core.sendMessage(
            bytes,
            descriptors: descriptors,
            credentials: credentials,
            to: address,
            timeout: timeout
        )
    }
}

extension SocketCore {
    // Concrete functions under the generic faces, as on the blocking side: the operations get specialized.

    /// One message into `buffer`, without descriptors or sender.
    @inline(__always)
    func receiveMessage(
        into buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration?
    ) async throws(UnixSocketError)
        -> Int
    {
        var operation = Receive(into: buffer, on: self)
        return try await perform(&operation, timeout: timeout)
    }

    /// One whole message, owning its bytes and descriptor numbers across the wait.
    @inline(__always)
    func sendMessage(
        _ collection: some Collection<UInt8>,
        descriptors: [FileDescriptor],
        credentials: UnixCredentials?,
        to destination: UnixAddress?,
        timeout: Duration?
    ) async throws(UnixSocketError) {
        let bytes = Array(collection)
        let fds = descriptors.map(\.rawValue)
        if let destination {
            var operation = try MessageSend(
                bytes,
                descriptors: fds,
                credentials: credentials,
                to: Recipient(destination),
                on: self
            )
            try await perform(&operation, timeout: timeout)
        } else {
            var operation = try MessageSend(
                bytes,
                descriptors: fds,
                credentials: credentials,
                to: ConnectedPeer(),
                on: self
            )
            try await perform(&operation, timeout: timeout)
        }
    }
}

extension UnixListener {
    /// Accepts one connection without blocking a thread. Out of descriptors (EMFILE/ENFILE), it pauses and
    /// retries rather than failing or spinning.
    public func accept(timeout: Duration? = nil) async throws(UnixSocketError) -> Connection {
        accepted(try await core.acceptPausing(timeout: timeout))
    }

    /// The incoming connections, for `for try await connection in listener.connections { ... }`. The
    /// sequence ends when the listener is closed.
    public var connections: Connections { Connections(listener: self) }

    /// An `AsyncSequence` of accepted connections.
    public struct Connections: AsyncSequence, Sendable {
        public typealias Element = Connection
        public typealias Failure = UnixSocketError
        let listener: UnixListener<Connection>

        public func makeAsyncIterator() -> Iterator { Iterator(listener: listener) }

        /// The iterator: each `next()` accepts one connection; nil once the listener is closed.
        public struct Iterator: AsyncIteratorProtocol {
            public typealias Element = Connection
            public typealias Failure = UnixSocketError
            let listener: UnixListener<Connection>

            public mutating func next() async throws(UnixSocketError) -> Connection? {
                do throws(UnixSocketError) {
                    return try await listener.accept()
                } catch  where error.code == .closed {
                    return nil
                }
            }
        }
    }
}
