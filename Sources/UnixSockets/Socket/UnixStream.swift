public import SystemPackage

/// A connected byte-stream Unix socket (SOCK_STREAM).
///
/// Reads return what is there; ``read(exactly:timeout:)`` and ``write(all:timeout:)`` loop until their
/// contract holds. Sends never raise SIGPIPE (MSG_NOSIGNAL). Every call takes an optional timeout; the
/// socket is non-blocking underneath and waits with poll(2). Closing (or dropping) it closes the descriptor
/// exactly once; a call blocked in another thread wakes with `.closed`.
///
/// ```swift
/// let stream = try UnixStream.connect(to: "/run/app.sock")
/// try stream.write(all: Array("ping".utf8))
/// let reply = try stream.read(exactly: 4)
/// ```
public final class UnixStream: UnixConnection, CustomStringConvertible {
    let core: SocketCore

    /// Always `.stream`.
    public static var socketType: UnixSocketType { .stream }

    init(core: SocketCore) { self.core = core }

    /// Implementation detail of ``UnixListener``.
    public init(_ accepted: _AcceptedSocket) { core = accepted.core }

    /// Connects to a listening stream socket.
    /// - Parameters:
    ///   - address: the server's path or abstract name.
    ///   - timeout: how long to keep retrying while the server's backlog is full (nil: forever).
    /// - Throws: ``UnixSocketError`` (ENOENT: no socket file; ECONNREFUSED: nobody listening; EACCES; ...).
    ///   The corresponding C function is `connect`.
    public static func connect(to address: UnixAddress, timeout: Duration? = nil) throws(UnixSocketError) -> UnixStream {
        let core = try SocketCore.make(.stream, address: address, operation: "connect")
        try core.connect(to: address, timeout: timeout)
        return UnixStream(core: core)
    }

    /// A connected pair (socketpair).
    public static func pair() throws(UnixSocketError) -> (UnixStream, UnixStream) {
        let (a, b) = try SocketCore.pair(.stream)
        return (UnixStream(core: a), UnixStream(core: b))
    }

    /// Adopts a connected stream socket descriptor (e.g. from SwiftNIO or an inherited one); it becomes
    /// non-blocking and this object owns it.
    public convenience init(adopting descriptor: FileDescriptor) throws(UnixSocketError) {
        self.init(core: try SocketCore.adopt(descriptor, type: .stream, operation: "adopt"))
    }

    /// Gives up ownership of the descriptor (for swift-subprocess or SwiftNIO); the caller must close it.
    public func releaseDescriptor() throws(UnixSocketError) -> FileDescriptor {
        FileDescriptor(rawValue: try core.release())
    }

    // MARK: Reading

    /// Reads what is there, up to `buffer.count` bytes; 0 means the peer closed its side (EOF).
    /// - Throws: ``UnixSocketError`` (ECONNRESET when the peer closed with our data unread; `.timedOut`).
    public func read(into buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) throws(UnixSocketError) -> Int {
        try core.readSome(buffer, timeout: timeout)
    }

    /// Reads what is there, at most `maxBytes`; an empty array means EOF.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a negative `maxBytes`.
    public func read(maxBytes: Int = 65536, timeout: Duration? = nil) throws(UnixSocketError) -> [UInt8] {
        let capacity = try checkedByteCount(
            maxBytes, "maxBytes", operation: "read", address: core.address, allocationCap: maximumStreamReadBuffer)
        var failure: UnixSocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { storage, count in
            do throws(UnixSocketError) {
                count = try core.readSome(
                    UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(storage)[..<capacity]),
                    timeout: timeout)
            } catch {
                failure = error
                count = 0
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Reads exactly `count` bytes, looping over short reads.
    /// - Throws: ``UnixSocketError`` `.unexpectedEOF` if the peer closes first (the bytes so far are in
    ///   its detail count), `.timedOut`, or a system error.
    ///   A negative `count`, or one over 1 GiB, is `.invalidArgument`.
    public func read(exactly count: Int, timeout: Duration? = nil) throws(UnixSocketError) -> [UInt8] {
        _ = try checkedByteCount(count, "count", operation: "read", address: core.address)
        var failure: UnixSocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { storage, initialized in
            do throws(UnixSocketError) {
                try read(exactlyInto: UnsafeMutableRawBufferPointer(storage), timeout: timeout)
                initialized = count
            } catch {
                failure = error
                initialized = 0
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Fills `buffer` completely, looping over short reads.
    /// - Throws: as ``read(exactly:timeout:)``.
    public func read(exactlyInto buffer: UnsafeMutableRawBufferPointer, timeout: Duration? = nil) throws(UnixSocketError) {
        var offset = 0
        while offset < buffer.count {
            let count = try core.readSome(UnsafeMutableRawBufferPointer(rebasing: buffer[offset...]), timeout: timeout)
            if count == 0 {
                throw UnixSocketError(
                    .unexpectedEOF, operation: "read", address: core.address,
                    detail: "the peer closed after \(offset) of \(buffer.count) bytes")
            }
            offset += count
        }
    }

    /// Reads until the peer closes its side, refusing to hold more than `maxBytes`.
    /// - Throws: ``UnixSocketError`` `.tooLarge` past the cap.
    public func readToEnd(maxBytes: Int, timeout: Duration? = nil) throws(UnixSocketError) -> [UInt8] {
        _ = try checkedByteCount(maxBytes, "maxBytes", operation: "read", address: core.address, allocationCap: 0)
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: min(maxBytes, 65535) + 1)
        while true {
            let count = try chunk.withUnsafeMutableBytes { raw in
                Result { () throws(UnixSocketError) -> Int in try core.readSome(raw, timeout: timeout) }
            }.get()
            if count == 0 { return result }
            if result.count + count > maxBytes {
                throw UnixSocketError(
                    .tooLarge, operation: "read", address: core.address,
                    detail: "the peer sent more than the \(maxBytes)-byte limit")
            }
            result.append(contentsOf: chunk[..<count])
        }
    }

    // MARK: Writing

    /// Writes every byte, looping over short writes and EINTR; waits while the peer's buffer is full.
    /// - Throws: ``UnixSocketError`` (EPIPE when the peer has closed: never a SIGPIPE), `.timedOut`.
    public func write(all bytes: some Collection<UInt8>, timeout: Duration? = nil) throws(UnixSocketError) {
        try withBytes(bytes) { (raw) throws(UnixSocketError) in try core.writeAll(raw, timeout: timeout) }
    }

    /// Writes several buffers in order as one stream (vectored: each goes whole, in sequence).
    public func write(vectored buffers: [[UInt8]], timeout: Duration? = nil) throws(UnixSocketError) {
        // sendmsg with one iovec per call keeps MSG_NOSIGNAL (writev would raise SIGPIPE); for small
        // buffers the join is cheaper than several syscalls.
        let total = buffers.reduce(0) { $0 + $1.count }
        if total <= 65536 {
            var joined = [UInt8]()
            joined.reserveCapacity(total)
            for buffer in buffers { joined += buffer }
            try write(all: joined, timeout: timeout)
        } else {
            for buffer in buffers { try write(all: buffer, timeout: timeout) }
        }
    }

    // MARK: Messages with descriptors

    /// Sends `bytes` with `descriptors` attached (SCM_RIGHTS) to its first byte. The descriptors ride on the
    /// first sendmsg only; the rest of the bytes follow without them. Descriptors stay owned by the caller.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` if descriptors come with no payload byte or exceed
    ///   253; EBADF if one is not open. The corresponding C function is `sendmsg`.
    public func send(_ bytes: some Collection<UInt8>, descriptors: [FileDescriptor] = [], timeout: Duration? = nil)
        throws(UnixSocketError)
    {
        try withRawDescriptors(descriptors) { (fds) throws(UnixSocketError) in
            try withBytes(bytes) { (raw) throws(UnixSocketError) in
                try core.sendStream(raw, descriptors: fds, timeout: timeout)
            }
        }
    }

    /// Receives what is there (up to `maxBytes`) with any descriptors that arrived with those bytes.
    /// - Throws: ``UnixSocketError`` `.controlTruncated` if more descriptors arrived than `maxDescriptors`
    ///   (all that arrived are closed). The corresponding C function is `recvmsg`.
    public func receive(maxBytes: Int = 65536, maxDescriptors: Int = 8, timeout: Duration? = nil) throws(UnixSocketError)
        -> UnixMessage
    {
        try core.receiveMessage(maxBytes: maxBytes, maxDescriptors: maxDescriptors, wantSender: false, timeout: timeout)
    }

    // MARK: Connection state

    /// Closes one or both directions; after `.write` the peer reads EOF while it can still send to us.
    public func shutdown(_ direction: ShutdownDirection) throws(UnixSocketError) { try core.shutdown(direction) }

    /// The peer's credentials at connect time (SO_PEERCRED), with supplementary groups (SO_PEERGROUPS).
    public var credentials: UnixCredentials { get throws(UnixSocketError) { try core.peerCredentials(groups: true) } }

    /// The peer's address (`.unnamed` for an unbound client).
    public var peer: UnixAddress { get throws(UnixSocketError) { try core.peerAddress() } }

    /// This socket's own address.
    public var local: UnixAddress { get throws(UnixSocketError) { try core.localAddress() } }

    /// Closes the socket (once; later calls do nothing).
    public func close() { core.close() }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { core.isClosed }

    public var description: String { "UnixStream(\(core.address.map { "\($0)" } ?? "pair"))" }
}

/// Lends the numbers of `descriptors` without copying them (FileDescriptor is a frozen wrapper of CInt).
@inline(__always)
func withRawDescriptors(
    _ descriptors: [FileDescriptor], _ body: (UnsafeBufferPointer<CInt>) throws(UnixSocketError) -> Void
) throws(UnixSocketError) {
    if descriptors.isEmpty { return try body(UnsafeBufferPointer(start: nil, count: 0)) }
    var failure: UnixSocketError?
    descriptors.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CInt.self) { fds in
            do throws(UnixSocketError) { try body(fds) } catch { failure = error }
        }
    }
    if let failure { throw failure }
}

/// Calls `body` with the bytes of `value` (no copy for contiguous collections such as arrays).
///
/// Not generic over a result: its callers are unspecialized generics (`some Collection<UInt8>` across the
/// module boundary), where a `Result<R, _>?` made the runtime instantiate generic metadata on every call
/// (about 700 instructions per send, measured with callgrind for `uds bench`).
@inline(__always)
func withBytes(_ value: some Collection<UInt8>, _ body: (UnsafeRawBufferPointer) throws(UnixSocketError) -> Void)
    throws(UnixSocketError)
{
    var failure: UnixSocketError?
    let contiguous: Void? = value.withContiguousStorageIfAvailable { buffer in
        do throws(UnixSocketError) { try body(UnsafeRawBufferPointer(buffer)) } catch { failure = error }
    }
    if contiguous == nil {
        Array(value).withUnsafeBytes { raw in
            do throws(UnixSocketError) { try body(raw) } catch { failure = error }
        }
    }
    if let failure { throw failure }
}
