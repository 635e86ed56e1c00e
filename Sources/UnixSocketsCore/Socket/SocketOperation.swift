import Synchronization
package import SystemPackage
package import UnixSocketsSystem

// One I/O path. Every socket operation is written once, as a `SocketOperation`: its argument checks, its
// syscall, control-message building and parsing, descriptor ownership, truncation checks, error mapping and
// partial-read/-write loops. Two drivers run an operation: the blocking one below (poll(2)) and the async
// one in Async/ (the reactor). Only the wait differs.
//
// An operation is a transient value: built, performed and dropped by one call. Where it lends a caller's
// buffer (`UnsafeMutableRawBufferPointer`) it lives inside that caller's `withUnsafe...` scope; where the
// async face sends, the operation owns its bytes (`[UInt8]`) and takes the pointer inside each attempt.

/// What an operation waits for when its syscall would block.
package enum Readiness: Sendable {
    /// Readable (POLLIN / EPOLLIN).
    case input
    /// Writable (POLLOUT / EPOLLOUT).
    case output
    /// Cannot be waited on: poll and epoll report the socket writable at once (connect to a full backlog,
    /// an unconnected sendto to a full receiver). Retried with a short exponential back-off instead.
    case backOff
}

/// One socket operation around its syscall, shared by the blocking and the async face.
package protocol SocketOperation {
    associatedtype Output
    /// The operation's name in errors (`recv`, `sendto`, `accept`).
    var name: String { get }
    /// What to wait for on EAGAIN.
    var readiness: Readiness { get }
    /// Bytes moved so far. Progress restarts the timeout: a timeout bounds each wait, not the whole transfer.
    var progress: Int { get }
    /// Tries without waiting: the result when done, nil when it would block. May loop internally (short
    /// reads and writes).
    mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Output?
    /// Rewrites an error of the operation (the address dialled, the size limit of a message).
    func mapFailure(_ error: UnixSocketError, on core: SocketCore) -> UnixSocketError
}

/// An operation that reads: `recv`, waiting for input.
package protocol ReadingOperation: SocketOperation {}

extension ReadingOperation {
    package var name: String { "recv" }
    package var readiness: Readiness { .input }
}

/// An operation that writes: `send`, waiting for room.
package protocol WritingOperation: SocketOperation {}

extension WritingOperation {
    package var name: String { "send" }
    package var readiness: Readiness { .output }
}

extension SocketOperation {
    package var progress: Int { 0 }
    package func mapFailure(_ error: UnixSocketError, on core: SocketCore) -> UnixSocketError { error }
}

/// Bytes an operation sends: borrowed (`UnsafeRawBufferPointer`, the blocking face) or owned (`[UInt8]`,
/// the async face, whose pointer is taken anew in each attempt, never across an `await`).
package protocol OutgoingBytes {
    var count: Int { get }
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws(UnixSocketError) -> R) throws(UnixSocketError) -> R
}

extension UnsafeRawBufferPointer: OutgoingBytes {
    @inline(__always)
    package func withBytes<R>(
        _ body: (UnsafeRawBufferPointer) throws(UnixSocketError) -> R
    ) throws(UnixSocketError)
        -> R
    { try body(self) }
}

extension Array: OutgoingBytes where Element == UInt8 {
    @inline(__always)
    package func withBytes<R>(
        _ body: (UnsafeRawBufferPointer) throws(UnixSocketError) -> R
    ) throws(UnixSocketError)
        -> R
    {
        try withUnsafeBytes { raw in Result { () throws(UnixSocketError) -> R in try body(raw) } }.get()
    }
}

/// Descriptors an operation attaches (SCM_RIGHTS): borrowed or owned, as `OutgoingBytes`.
package protocol OutgoingDescriptors {
    var count: Int { get }
    func withDescriptors<R>(
        _ body: (UnsafeBufferPointer<CInt>) throws(UnixSocketError) -> R
    ) throws(UnixSocketError)
        -> R
}

extension UnsafeBufferPointer: OutgoingDescriptors where Element == CInt {
    @inline(__always)
    package func withDescriptors<R>(
        _ body: (UnsafeBufferPointer<CInt>) throws(UnixSocketError) -> R
    )
        throws(UnixSocketError) -> R
    { try body(self) }
}

extension Array: OutgoingDescriptors where Element == CInt {
    @inline(__always)
    package func withDescriptors<R>(
        _ body: (UnsafeBufferPointer<CInt>) throws(UnixSocketError) -> R
    )
        throws(UnixSocketError) -> R
    {
        try withUnsafeBufferPointer { fds in Result { () throws(UnixSocketError) -> R in try body(fds) } }.get()
    }
}

extension SocketCore {
    /// A syscall's result as an operation's: the value, nil on EAGAIN, the mapped error.
    @inline(__always)
    package func outcome<R>(_ result: Result<IOResult<R>, Errno>, _ operation: String) throws(UnixSocketError) -> R? {
        switch result {
        case .success(.done(let value)): return value
        case .success(.wouldBlock): return nil
        case .failure(let errno): throw mapError(operation, errno)
        }
    }

    /// The error of a back-off that ran out of time.
    package func backOffTimedOut(_ operation: String) -> UnixSocketError {
        UnixSocketError(
            .timedOut,
            operation: operation,
            address: address,
            errno: .resourceTemporarilyUnavailable,
            detail: operation == "connect" ? "the server's backlog stayed full" : "the receiver's queue stayed full"
        )
    }

    // MARK: The blocking driver

    /// Runs `operation`, waiting with poll(2) (or backing off) on EAGAIN, until it is done or `timeout`
    /// passes without progress. `close()` from another thread wakes the wait with `.closed`.
    @inline(__always)
    package func perform<Operation: SocketOperation>(
        _ operation: inout Operation,
        timeout: Duration?
    )
        throws(UnixSocketError) -> Operation.Output
    {
        do {
            switch operation.readiness {
            case .input: return try polling(&operation, events: SystemConstants.pollIn, timeout: timeout)
            case .output: return try polling(&operation, events: SystemConstants.pollOut, timeout: timeout)
            case .backOff: return try backingOff(&operation, timeout: timeout)
            }
        } catch {
            throw operation.mapFailure(error, on: self)
        }
    }

    /// Tries the operation; on EAGAIN waits for `events` with poll, then tries again, until the deadline.
    ///
    /// When the previous receive had to wait, this one polls first (a round trip then
    /// costs poll + syscall instead of syscall, poll, syscall). A poll that returns at once (the data
    /// or room was already there) drops the hint, so a reader that runs behind its writer goes back to
    /// one syscall per call.
    @inline(__always)
    private func polling<Operation: SocketOperation>(
        _ operation: inout Operation,
        events: Int16,
        timeout: Duration?
    )
        throws(UnixSocketError) -> Operation.Output
    {
        // A zero or negative timeout is invalid input even when the call would not have to wait.
        if let timeout, timeout <= .zero { _ = try Deadline.after(timeout, operation: operation.name) }
        let hint: UInt8 = events == SystemConstants.pollIn ? 1 : 0
        let fd = try beginUse(operation.name)
        do throws(UnixSocketError) {
            var deadline: Deadline?
            var deadlineSet = false
            if hint != 0 && waitHint(hint) {
                deadline = try Deadline.after(timeout, operation: operation.name)
                deadlineSet = true
                let before = system_monotonicNanoseconds()
                do throws(UnixSocketError) {
                    try wait(fd, events: events, deadline: deadline, operation: operation.name)
                } catch  where error.code == .timedOut {
                    // The deadline passed before the poll: the attempt below still gets its chance, as
                    // it would have without the hint, and times out only on EAGAIN.
                }
                if system_monotonicNanoseconds() &- before < Self.immediatePollNanoseconds { dropWaitHint(hint) }
            }
            while true {
                let before = operation.progress
                if let value = try operation.attempt(fd, on: self) {
                    endUse()
                    return value
                }
                if operation.progress != before { deadlineSet = false }
                if !deadlineSet {
                    deadline = try Deadline.after(timeout, operation: operation.name)
                    deadlineSet = true
                }
                if hint != 0 { setWaitHint(hint) }
                try wait(fd, events: events, deadline: deadline, operation: operation.name)
            }
        } catch {
            endUse()
            throw error
        }
    }

    /// Retries the operation with a short exponential back-off while it reports EAGAIN.
    private func backingOff<Operation: SocketOperation>(
        _ operation: inout Operation,
        timeout: Duration?
    )
        throws(UnixSocketError) -> Operation.Output
    {
        let fd = try beginUse(operation.name)
        do throws(UnixSocketError) {
            let deadline = try Deadline.after(timeout, operation: operation.name)
            var pause = Self.firstBackOffNanoseconds
            while true {
                if let value = try operation.attempt(fd, on: self) {
                    endUse()
                    return value
                }
                if let deadline, deadline.hasPassed { throw backOffTimedOut(operation.name) }
                if isClosed { throw closedError(operation.name) }
                system_nanosleep(nanoseconds: pause)
                pause = Self.nextBackOff(after: pause)
            }
        } catch {
            endUse()
            throw error
        }
    }

    // MARK: One attempt, for the async driver

    /// One attempt of `operation` for the async driver (Async/AsyncIO.swift), which calls it between its
    /// waits on the reactor: the descriptor is held only for the syscall, never across a wait; task
    /// cancellation is `.cancelled`.
    ///
    /// Prespecialized for every operation the async face runs: a generic `package` function is neither
    /// inlined nor specialized in another module (Swift 6.3), so the async driver, specialized in its own
    /// module, calls these copies, in which the operation's `attempt` is specialized and inlined.
    @_specialize(exported:true,where Operation == ReadSome)
    @_specialize(exported:true,where Operation == ReadExactly)
    @_specialize(exported:true,where Operation == ReadToEnd)
    @_specialize(exported:true,where Operation == WriteAll<[UInt8]>)
    @_specialize(exported:true,where Operation == WriteAll<UnsafeRawBufferPointer>)
    @_specialize(exported:true,where Operation == WriteVectored)
    @_specialize(exported:true,where Operation == StreamSend<[UInt8], [CInt]>)
    @_specialize(exported:true,where Operation == MessageSend<[UInt8], [CInt], ConnectedPeer>)
    @_specialize(exported:true,where Operation == MessageSend<[UInt8], [CInt], Recipient>)
    @_specialize(exported:true,where Operation == Receive)
    @_specialize(exported:true,where Operation == Peek)
    @_specialize(exported:true,where Operation == Accept)
    @_specialize(exported:true,where Operation == Connect)
    @_specialize(exported:true,where Operation == TCPConnect)
    package func attemptOnce<Operation: SocketOperation>(
        _ operation: inout Operation
    ) throws(UnixSocketError) -> Operation.Output? {
        if Task.isCancelled { throw .cancelled(operation.name, address: address) }
        let fd = try beginUse(operation.name)
        do throws(UnixSocketError) {
            let value = try operation.attempt(fd, on: self)
            endUse()
            return value
        } catch {
            endUse()
            throw error
        }
    }

    /// The first back-off pause (20 us), doubling up to 5 ms.
    package static let firstBackOffNanoseconds = 20_000
    package static func nextBackOff(after pause: Int) -> Int { min(pause * 2, 5_000_000) }
}

// MARK: - The operations

/// Reads what is there (at least one byte, or 0 at EOF) into `buffer`.
package struct ReadSome: ReadingOperation {
    let buffer: UnsafeMutableRawBufferPointer
    package init(into buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
    @inline(__always)
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Int? {
        try core.outcome(system_recv(fd, buffer, 0), "recv")
    }
}

/// Fills `buffer` completely, looping over short reads; EOF first is `.unexpectedEOF`.
package struct ReadExactly: ReadingOperation {
    let buffer: UnsafeMutableRawBufferPointer
    /// Bytes moved so far (the offset of the next one).
    package fileprivate(set) var progress = 0
    package init(into buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
    @inline(__always)
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        while progress < buffer.count {
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[progress...])
            guard let count = try core.outcome(system_recv(fd, rest, 0), "recv") else { return nil }
            if count == 0 {
                throw UnixSocketError(
                    .unexpectedEOF,
                    operation: "read",
                    address: core.address,
                    detail: "the peer closed after \(progress) of \(buffer.count) bytes"
                )
            }
            progress += count
        }
        return ()
    }
}

/// Reads until the peer closes its side, refusing to hold more than `maxBytes`.
package struct ReadToEnd: ReadingOperation {
    let maxBytes: Int
    var result: [UInt8] = []
    var chunk: [UInt8]
    package init(maxBytes: Int, on core: SocketCore) throws(UnixSocketError) {
        _ = try checkedByteCount(maxBytes, "maxBytes", operation: "read", address: core.address, allocationCap: 0)
        self.maxBytes = maxBytes
        chunk = [UInt8](repeating: 0, count: min(maxBytes, 65535) + 1)
    }
    package var progress: Int { result.count }
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> [UInt8]? {
        while true {
            let read = chunk.withUnsafeMutableBytes { system_recv(fd, $0, 0) }
            guard let count = try core.outcome(read, "recv") else { return nil }
            if count == 0 { return result }
            if result.count + count > maxBytes {
                throw UnixSocketError(
                    .tooLarge,
                    operation: "read",
                    address: core.address,
                    detail: "the peer sent more than the \(maxBytes)-byte limit"
                )
            }
            result.append(contentsOf: chunk[..<count])
        }
    }
}

/// Writes every byte, looping over short writes (MSG_NOSIGNAL).
package struct WriteAll<Bytes: OutgoingBytes>: WritingOperation {
    let bytes: Bytes
    /// Bytes moved so far (the offset of the next one).
    package fileprivate(set) var progress = 0
    @_specialize(exported:true,where Bytes == [UInt8])
    @_specialize(exported:true,where Bytes == UnsafeRawBufferPointer)
    package init(_ bytes: Bytes) { self.bytes = bytes }
    @inline(__always)
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        try bytes.withBytes { (raw) throws(UnixSocketError) -> Void? in
            while progress < raw.count {
                let rest = UnsafeRawBufferPointer(rebasing: raw[progress...])
                guard let count = try core.outcome(system_send(fd, rest, SystemConstants.msgNoSignal), "send")
                else { return nil }
                progress += count
            }
            return ()
        }
    }
}

/// Writes several buffers in order as one stream. sendmsg with one iovec per call keeps MSG_NOSIGNAL
/// (writev would raise SIGPIPE); for small buffers the join is cheaper than several syscalls.
package struct WriteVectored: WritingOperation {
    let buffers: [[UInt8]]
    var index = 0
    var current: WriteAll<[UInt8]>?
    var written = 0
    package init(_ buffers: [[UInt8]]) {
        let total = buffers.reduce(0) { $0 + $1.count }
        if total <= 65536 && buffers.count > 1 {
            var joined = [UInt8]()
            joined.reserveCapacity(total)
            for buffer in buffers { joined += buffer }
            self.buffers = [joined]
        } else {
            self.buffers = buffers
        }
    }
    package var progress: Int { written + (current?.progress ?? 0) }
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        while index < buffers.count {
            var write = current ?? WriteAll(buffers[index])
            let done: Void? = try write.attempt(fd, on: core)
            guard done != nil else {
                current = write
                return nil
            }
            written += write.progress
            current = nil
            index += 1
        }
        return ()
    }
}

/// A stream send with descriptors: they ride on the first sendmsg only (which must carry a payload byte);
/// the rest of the bytes follow without them.
package struct StreamSend<Bytes: OutgoingBytes, Descriptors: OutgoingDescriptors>: WritingOperation {
    var write: WriteAll<Bytes>
    let descriptors: Descriptors
    var descriptorsSent: Bool
    @_specialize(exported:true,where Bytes == [UInt8], Descriptors == [CInt])
    package init(_ bytes: Bytes, descriptors: Descriptors, on core: SocketCore) throws(UnixSocketError) {
        try core.checkStreamSend(byteCount: bytes.count, descriptorCount: descriptors.count)
        write = WriteAll(bytes)
        self.descriptors = descriptors
        descriptorsSent = descriptors.count == 0
    }
    package var name: String { descriptorsSent ? "send" : "sendmsg" }
    package var progress: Int { write.progress }
    @inline(__always)
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        if !descriptorsSent {
            let sent = try write.bytes.withBytes { (raw) throws(UnixSocketError) -> Int? in
                try descriptors.withDescriptors { (fds) throws(UnixSocketError) -> Int? in
                    try core.outcome(
                        system_sendMessage(fd, raw, descriptors: fds, credentials: nil, destination: nil),
                        "sendmsg"
                    )
                }
            }
            guard let sent else { return nil }
            write.progress = sent
            descriptorsSent = true
        }
        return try write.attempt(fd, on: core)
    }
}

/// Sends one whole message (seqpacket, datagram), to the connected peer or to `destination` (unconnected
/// datagram: a full receiver is retried with back-off). EMSGSIZE names the limit.
package struct MessageSend<Bytes: OutgoingBytes, Descriptors: OutgoingDescriptors, Destination: MessageDestination>:
    SocketOperation
{
    let bytes: Bytes
    let descriptors: Descriptors
    /// The kernel's form, a plain value: the operation then has nothing to release.
    let credentials: KernelCredentials.Raw?
    let destination: Destination
    // The async face (another module) builds this with its owned types: exported specializations spare it a
    // generic-metadata lookup per send (callgrind, async send+receive on a socketpair: 6,181 -> 5,564).
    @_specialize(exported:true,where Bytes == [UInt8], Descriptors == [CInt], Destination == ConnectedPeer)
    @_specialize(exported:true,where Bytes == [UInt8], Descriptors == [CInt], Destination == Recipient)
    package init(
        _ bytes: Bytes,
        descriptors: Descriptors,
        credentials: UnixCredentials?,
        to destination: Destination,
        on core: SocketCore
    ) throws(UnixSocketError) {
        try core.checkMessageSend(
            byteCount: bytes.count,
            descriptorCount: descriptors.count,
            to: destination.address,
            operation: Destination.operation
        )
        self.bytes = bytes
        self.descriptors = descriptors
        self.credentials = credentials?.raw
        self.destination = destination
    }
    package var name: String { Destination.operation }
    package var readiness: Readiness { Destination.readiness }
    @inline(__always)
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        let result = try bytes.withBytes { (raw) throws(UnixSocketError) -> Result<IOResult<Int>, Errno> in
            try descriptors.withDescriptors { (fds) throws(UnixSocketError) -> Result<IOResult<Int>, Errno> in
                destination.withName { name in
                    system_sendMessage(fd, raw, descriptors: fds, credentials: credentials, destination: name)
                }
            }
        }
        return try core.outcome(result, Destination.operation).map { _ in () }
    }
    package func mapFailure(_ error: UnixSocketError, on core: SocketCore) -> UnixSocketError {
        if error.errno == .messageTooLong {
            return core.messageTooLong(bytes.count, operation: name, address: destination.address ?? core.address)
        }
        if let address = destination.address, error.code == .system {
            return UnixSocketError(.system, operation: name, address: address, errno: error.errno)
        }
        return error
    }
}

/// Where a message send goes: the connected peer, or an address (a generic parameter, so a connected send
/// carries no address at all).
package protocol MessageDestination {
    /// `send` or `sendto`.
    static var operation: String { get }
    /// A connected send waits for room; an unconnected one backs off (poll says writable at once).
    static var readiness: Readiness { get }
    var address: UnixAddress? { get }
    func withName<R>(_ body: ((SocketAddressStorage.Pointer, SocketAddressStorage.Length)?) -> R) -> R
}

/// The connected peer.
package struct ConnectedPeer: MessageDestination {
    package init() {}
    package static var operation: String { "send" }
    package static var readiness: Readiness { .output }
    package var address: UnixAddress? { nil }
    @inline(__always)
    package func withName<R>(
        _ body: ((SocketAddressStorage.Pointer, SocketAddressStorage.Length)?) -> R
    ) -> R {
        body(nil)
    }
}

/// An address, for an unconnected datagram send.
package struct Recipient: MessageDestination {
    let recipient: UnixAddress
    let storage: UnixAddress.SockAddr
    package init(_ address: UnixAddress) throws(UnixSocketError) {
        recipient = address
        storage = try address.sockAddr(operation: Self.operation)
    }
    package static var operation: String { "sendto" }
    package static var readiness: Readiness { .backOff }
    package var address: UnixAddress? { recipient }
    package func withName<R>(_ body: ((SocketAddressStorage.Pointer, SocketAddressStorage.Length)?) -> R) -> R {
        storage.withSockAddr { body(($0, $1)) }
    }
}

/// Receives one message (or, on a stream, what is there) into `buffer` with room for `maxDescriptors` and
/// (when SO_PASSCRED is on) credentials. MSG_CTRUNC and (for messages) MSG_TRUNC are errors; every
/// descriptor that arrived is closed then. What came besides the bytes is in `received` afterwards.
package struct Receive: ReadingOperation {
    let buffer: UnsafeMutableRawBufferPointer
    let maxDescriptors: Int
    let credentials: Bool
    let wantSender: Bool
    let flags: CInt
    package var received = RawReceived()
    /// - Throws: `.invalidArgument` for a `maxDescriptors` outside 0...253.
    package init(
        into buffer: UnsafeMutableRawBufferPointer,
        maxDescriptors: Int,
        wantSender: Bool,
        on core: SocketCore
    ) throws(UnixSocketError) {
        if maxDescriptors < 0 || maxDescriptors > maximumDescriptorsPerMessage {
            throw UnixSocketError(
                .invalidArgument,
                operation: "receive",
                address: core.address,
                detail: "maxDescriptors must be 0...\(maximumDescriptorsPerMessage)"
            )
        }
        self.init(into: buffer, maxDescriptors: maxDescriptors, wantSender: wantSender, core: core)
    }

    /// Without descriptors or sender: the allocation-free `receive(into:)` (nothing to check, nothing thrown).
    package init(into buffer: UnsafeMutableRawBufferPointer, on core: SocketCore) {
        self.init(into: buffer, maxDescriptors: 0, wantSender: false, core: core)
    }

    private init(into buffer: UnsafeMutableRawBufferPointer, maxDescriptors: Int, wantSender: Bool, core: SocketCore) {
        self.buffer = buffer
        self.maxDescriptors = maxDescriptors
        self.wantSender = wantSender
        flags = core.type != .stream ? SystemConstants.msgTrunc : 0
        credentials = core.passCredentials.load(ordering: .relaxed)
    }
    package var name: String { "receive" }
    @inline(__always)
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Int? {
        var header = ReceivedHeader()
        // Each descriptor is owned the moment it is parsed.
        let result = system_receiveMessage(
            fd,
            buffer,
            maxDescriptors: maxDescriptors,
            credentials: credentials,
            wantSender: wantSender,
            flags: flags,
            header: &header
        ) { received.descriptors.append(OwnedDescriptor($0)) }
        guard let count = try core.outcome(result, "receive") else { return nil }
        received.take(header)
        try core.checkReceived(
            received,
            count: count,
            capacity: buffer.count,
            maxDescriptors: maxDescriptors,
            operation: "receive"
        )
        return count
    }
    /// The message of `count` received bytes held in `bytes`.
    package func message(_ bytes: [UInt8]) -> UnixMessage {
        UnixMessage(
            bytes: bytes,
            descriptors: received.descriptors,
            credentials: received.credentials,
            sender: received.sender
        )
    }
}

/// Peeks at the next message without consuming it and without a buffer for it (MSG_PEEK | MSG_TRUNC
/// reports its whole length; no control buffer, so no descriptor is installed); 0 at EOF.
package struct Peek: ReadingOperation {
    package let name: String
    let flags: CInt
    package init(name: String = "peek", flags: CInt = SystemConstants.msgPeek | SystemConstants.msgTrunc) {
        self.name = name
        self.flags = flags
    }
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Int? {
        var byte: UInt8 = 0
        let result = withUnsafeMutableBytes(of: &byte) { system_recv(fd, $0, flags) }
        return try core.outcome(result, name)
    }
}

/// Accepts one connection (accept4 with `flags`, CLOEXEC and non-blocking).
package struct Accept: ReadingOperation {
    let flags: CInt
    package init(flags: CInt = SystemConstants.socketFlags) { self.flags = flags }
    package var name: String { "accept" }
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> CInt? {
        try core.outcome(system_accept4(fd, nil, nil, flags), "accept")
    }
}

/// Connects a Unix socket to `address`; a full backlog (EAGAIN) is retried with back-off. Errors name the
/// address dialled, not the socket's own.
package struct Connect: SocketOperation {
    let address: UnixAddress
    let storage: UnixAddress.SockAddr
    package init(to address: UnixAddress) throws(UnixSocketError) {
        self.address = address
        storage = try address.sockAddr(operation: "connect")
    }
    package var name: String { "connect" }
    package var readiness: Readiness { .backOff }
    package mutating func attempt(_ fd: CInt, on core: SocketCore) throws(UnixSocketError) -> Void? {
        try core.outcome(storage.withSockAddr { system_connect(fd, $0, $1) }, "connect").map { _ in () }
    }
    package func mapFailure(_ error: UnixSocketError, on core: SocketCore) -> UnixSocketError {
        if error.code == .system {
            return UnixSocketError(.system, operation: "connect", address: address, errno: error.errno)
        }
        return UnixSocketError(
            error.code,
            operation: "connect",
            address: address,
            errno: error.errno,
            detail: error.detail
        )
    }
}
