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
public final class UnixStream: UnixSocket, UnixConnection, @unchecked Sendable {
    // @unchecked Sendable restated from UnixSocket: no stored property of its own (the invariant is there).
    /// Always `.stream`.
    override public class var socketType: UnixSocketType { .stream }

    // MARK: Reading

    /// Reads what is there, up to `buffer.count` bytes; 0 means the peer closed its side (EOF).
    /// - Throws: ``UnixSocketError`` (ECONNRESET when the peer closed with our data unread; `.timedOut`).
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func read(
        into buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration? = nil
    ) throws(UnixSocketError) -> Int {
        var operation = ReadSome(into: buffer)
        return try core.perform(&operation, timeout: timeout)
    }

    /// Reads what is there, at most `maxBytes`; an empty array means EOF.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` for a negative `maxBytes`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func read(maxBytes: Int = 65536, timeout: Duration? = nil) throws(UnixSocketError) -> [UInt8] {
        let capacity = try core.receiveCapacity(maxBytes, message: false)
        var failure: UnixSocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: max(capacity, 1)) { storage, count in
            count = 0
            var operation = ReadSome(
                into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(storage)[..<capacity])
            )
            do throws(UnixSocketError) { count = try core.perform(&operation, timeout: timeout) } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Reads exactly `count` bytes, looping over short reads.
    /// - Throws: ``UnixSocketError`` `.unexpectedEOF` if the peer closes first (the bytes so far are in
    ///   its detail count), `.timedOut`, or a system error.
    ///   A negative `count`, or one over 1 GiB, is `.invalidArgument`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func read(exactly count: Int, timeout: Duration? = nil) throws(UnixSocketError) -> [UInt8] {
        _ = try checkedByteCount(count, "count", operation: "read", address: core.address)
        var failure: UnixSocketError?
        let bytes = [UInt8](unsafeUninitializedCapacity: count) { storage, initialized in
            initialized = 0
            var operation = ReadExactly(into: UnsafeMutableRawBufferPointer(storage))
            do throws(UnixSocketError) {
                try core.perform(&operation, timeout: timeout)
                initialized = count
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Fills `buffer` completely, looping over short reads.
    /// - Throws: as ``read(exactly:timeout:)``.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func read(
        exactlyInto buffer: UnsafeMutableRawBufferPointer,
        timeout: Duration? = nil
    ) throws(UnixSocketError) {
        var operation = ReadExactly(into: buffer)
        try core.perform(&operation, timeout: timeout)
    }

    /// Reads until the peer closes its side, refusing to hold more than `maxBytes`.
    /// - Throws: ``UnixSocketError`` `.tooLarge` past the cap.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func readToEnd(maxBytes: Int, timeout: Duration? = nil) throws(UnixSocketError) -> [UInt8] {
        var operation = try ReadToEnd(maxBytes: maxBytes, on: core)
        return try core.perform(&operation, timeout: timeout)
    }

    // MARK: Writing

    /// Writes every byte, looping over short writes and EINTR; waits while the peer's buffer is full.
    /// - Throws: ``UnixSocketError`` (EPIPE when the peer has closed: never a SIGPIPE), `.timedOut`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func write(all bytes: some Collection<UInt8>, timeout: Duration? = nil) throws(UnixSocketError) {
        try withBytes(bytes) { (raw) throws(UnixSocketError) in
            var operation = WriteAll(raw)
            try core.perform(&operation, timeout: timeout)
        }
    }

    /// Writes several buffers in order as one stream (vectored: each goes whole, in sequence).
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func write(vectored buffers: [[UInt8]], timeout: Duration? = nil) throws(UnixSocketError) {
        var operation = WriteVectored(buffers)
        try core.perform(&operation, timeout: timeout)
    }

    // MARK: Messages with descriptors

    /// Sends `bytes` with `descriptors` attached (SCM_RIGHTS) to its first byte. The descriptors ride on the
    /// first sendmsg only; the rest of the bytes follow without them. Descriptors stay owned by the caller.
    /// - Throws: ``UnixSocketError`` `.invalidArgument` if descriptors come with no payload byte or exceed
    ///   253; EBADF if one is not open. The corresponding C function is `sendmsg`.
    @available(*, noasync, message: "this blocking call would stall async code: 'try await' it inside an async func")
    public func send(
        _ bytes: some Collection<UInt8>,
        descriptors: [FileDescriptor] = [],
        timeout: Duration? = nil
    )
        throws(UnixSocketError)
    {
        try withRawDescriptors(descriptors) { (fds) throws(UnixSocketError) in
            try withBytes(bytes) { (raw) throws(UnixSocketError) in
                var operation = try StreamSend(raw, descriptors: fds, on: core)
                try core.perform(&operation, timeout: timeout)
            }
        }
    }
}
