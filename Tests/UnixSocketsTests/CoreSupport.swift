import Foundation
import Synchronization
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// The timeout for every library call in the core tests: a hang becomes a failure, never a stuck run.
let ioTimeout: Duration = .seconds(10)

/// Every socket type, for parameterized tests.
let allSocketTypes: [UnixSocketType] = [.stream, .seqPacket, .datagram]
/// The connection-oriented ones (listen/accept).
let connectionTypes: [UnixSocketType] = [.stream, .seqPacket]
/// The message-oriented ones (boundaries, truncation, EMSGSIZE).
let messageTypes: [UnixSocketType] = [.seqPacket, .datagram]

extension UnixSocketType {
    /// Python's constant name.
    var python: String {
        switch self {
        case .stream: "socket.SOCK_STREAM"
        case .seqPacket: "socket.SOCK_SEQPACKET"
        case .datagram: "socket.SOCK_DGRAM"
        }
    }
}

/// Whether `body` throws a `UnixSocketError` with `code` (and `errno` if given); returns the error.
@discardableResult
func expectError(
    _ code: UnixSocketError.Code,
    errno: Errno? = nil,
    _ comment: Comment? = nil,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) -> UnixSocketError? {
    do {
        try body()
        Issue.record(
            "expected \(code)\(errno.map { " (\($0))" } ?? ""), but nothing was thrown. \(comment.map { "\($0)" } ?? "")",
            sourceLocation: sourceLocation
        )
        return nil
    } catch let error as UnixSocketError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        if let errno { #expect(error.errno == errno, "\(error)", sourceLocation: sourceLocation) }
        return error
    } catch {
        Issue.record("expected UnixSocketError \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// A server of any type bound to an address, with a way to run one exchange against it.
final class AnyServer: Sendable {
    let type: UnixSocketType
    let stream: UnixStreamListener?
    let seqPacket: UnixSeqPacketListener?
    let datagram: UnixDatagram?

    init(_ type: UnixSocketType, _ address: UnixAddress, mode: FilePermissions? = nil, backlog: Int32 = 64) throws {
        self.type = type
        switch type {
        case .stream:
            stream = try UnixStreamListener.bind(address, mode: mode, backlog: backlog)
            seqPacket = nil
            datagram = nil
        case .seqPacket:
            seqPacket = try UnixSeqPacketListener.bind(address, mode: mode, backlog: backlog)
            stream = nil
            datagram = nil
        case .datagram:
            datagram = try UnixDatagram.bind(address, mode: mode)
            stream = nil
            seqPacket = nil
        }
    }

    var local: UnixAddress {
        get throws {
            if let stream { return try stream.local }
            if let seqPacket { return try seqPacket.local }
            return try datagram!.local
        }
    }

    func close() {
        stream?.close()
        seqPacket?.close()
        datagram?.close()
    }

    var isClosed: Bool { stream?.isClosed ?? seqPacket?.isClosed ?? datagram!.isClosed }

    /// One request/reply from a fresh client (bound to `clientAddress` if given) to `address`.
    /// Returns what the client sees as the server's address and what the server sees as the client's.
    @discardableResult
    func exchange(
        via address: UnixAddress,
        clientAddress: UnixAddress? = nil,
        payload: [UInt8] = bytes("ping")
    ) throws -> (serverSeenByClient: UnixAddress, clientSeenByServer: UnixAddress) {
        switch type {
        case .stream:
            precondition(clientAddress == nil, "stream clients are not bound in these tests")
            let client = try UnixStream.connect(to: address, timeout: ioTimeout)
            defer { client.close() }
            let connection = try stream!.accept(timeout: ioTimeout)
            defer { connection.close() }
            try client.write(all: payload, timeout: ioTimeout)
            #expect(try connection.read(exactly: payload.count, timeout: ioTimeout) == payload)
            try connection.write(all: bytes("pong"), timeout: ioTimeout)
            #expect(try client.read(exactly: 4, timeout: ioTimeout) == bytes("pong"))
            return (try client.peer, try connection.peer)
        case .seqPacket:
            precondition(clientAddress == nil, "seqpacket clients are not bound in these tests")
            let client = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
            defer { client.close() }
            let connection = try seqPacket!.accept(timeout: ioTimeout)
            defer { connection.close() }
            try client.send(payload, timeout: ioTimeout)
            #expect(try connection.receive(timeout: ioTimeout).bytes == payload)
            try connection.send(bytes("pong"), timeout: ioTimeout)
            #expect(try client.receive(timeout: ioTimeout).bytes == bytes("pong"))
            return (try client.peer, try connection.peer)
        case .datagram:
            let client = try UnixDatagram.bind(clientAddress ?? .unnamed)
            defer { client.close() }
            try client.connect(to: address)
            try client.send(payload, timeout: ioTimeout)
            let message = try datagram!.receive(timeout: ioTimeout)
            #expect(message.bytes == payload)
            let sender = try #require(message.sender)
            try datagram!.send(bytes("pong"), to: sender, timeout: ioTimeout)
            #expect(try client.receive(timeout: ioTimeout).bytes == bytes("pong"))
            return (try client.peer, sender)
        }
    }
}

/// Runs `body` on its own thread (blocking calls in parallel with the test); `value` waits at most a bound.
final class Background<Value: Sendable>: @unchecked Sendable {  // result guarded by the semaphore + lock
    private let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var result: Result<Value, any Error>?

    init(_ body: @escaping @Sendable () throws -> Value) {
        let thread = Thread { [self] in
            let outcome = Result { try body() }
            lock.withLock { result = outcome }
            done.signal()
        }
        thread.start()
    }

    func value(timeout: Duration = .seconds(30)) throws -> Value {
        let milliseconds = Int(timeout.components.seconds * 1000)
        guard done.wait(timeout: .now() + .milliseconds(milliseconds)) == .success else {
            throw PythonPeerError(description: "background work did not finish in \(timeout)")
        }
        return try lock.withLock { result! }.get()
    }
}

/// FNV-1a 64, to compare large payloads cheaply.
func checksum(_ data: some Sequence<UInt8>) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in data { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
    return hash
}

/// A deterministic pseudo-random payload (filled eight bytes at a time: fast even in debug builds).
func patternBytes(_ count: Int, seed: UInt64 = 1) -> [UInt8] {
    var state = seed
    return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        let raw = UnsafeMutableRawBufferPointer(buffer)
        var offset = 0
        while offset < count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            withUnsafeBytes(of: state.byteSwapped) { word in
                let take = min(8, count - offset)
                raw.baseAddress!.advanced(by: offset).copyMemory(from: word.baseAddress!, byteCount: take)
            }
            offset += 8
        }
        initialized = count
    }
}

/// Whether two byte arrays are equal (memcmp: fast even in debug builds).
func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    a.count == b.count
        && a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in a.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 }
        }
}

/// Reads a sysctl integer (e.g. `/proc/sys/net/core/somaxconn`).
func sysctlInt(_ path: String) -> Int? {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// The socket inodes listed in /proc/net/unix.
func unixSocketInodes() -> Set<UInt64> {
    guard let text = try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8) else { return [] }
    var inodes = Set<UInt64>()
    for line in text.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count >= 7, let inode = UInt64(fields[6]) { inodes.insert(inode) }
    }
    return inodes
}

/// The inode of an open descriptor.
func inode(of fd: CInt) -> UInt64 {
    var info = stat()
    return fstat(fd, &info) == 0 ? UInt64(info.st_ino) : 0
}

/// Sets RLIMIT_NOFILE's soft limit; returns the previous one.
@discardableResult
func setDescriptorLimit(_ soft: UInt64) -> UInt64 {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let previous = UInt64(limit.rlim_cur)
    limit.rlim_cur = rlim_t(soft)
    exitCheck(setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, "setrlimit \(soft): errno \(errno)")
    return previous
}

/// Opens /dev/null until EMFILE (bounded): afterwards no descriptor number is free. Returns what it opened.
func exhaustDescriptors(bound: Int = 100_000) -> [CInt] {
    var opened: [CInt] = []
    for _ in 0..<bound {
        let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            exitCheck(errno == EMFILE, "expected EMFILE filling the table, got errno \(errno)")
            return opened
        }
        opened.append(fd)
    }
    exitCheck(false, "the descriptor table never filled (\(bound) opened)")
    return opened
}

/// A socket made with raw libc calls, bound to `path` (and listening for connection types): what a process
/// inherits from systemd or a parent. The caller owns the descriptor.
func rawBoundSocket(_ type: UnixSocketType, path: String) -> CInt {
    let kind: CInt =
        switch type {
        case .stream: CInt(SOCK_STREAM.rawValue)
        case .seqPacket: CInt(SOCK_SEQPACKET.rawValue)
        case .datagram: CInt(SOCK_DGRAM.rawValue)
        }
    let fd = socket(AF_UNIX, kind | CInt(SOCK_CLOEXEC.rawValue), 0)
    precondition(fd >= 0, "socket: \(errno)")
    let bound = UnixAddress(stringLiteral: path).withSockAddrForTest { bind(fd, $0, $1) }
    precondition(bound == 0, "bind \(path): \(errno)")
    if type != .datagram { precondition(listen(fd, 16) == 0, "listen: \(errno)") }
    return fd
}

/// Leaves a stale socket file of `type` at `path`: bound with raw calls, closed without unlink. Returns
/// once the kernel agrees nobody is bound there: a child process another test is starting can hold the
/// socket (inherited across fork, until its exec closes it) for a moment after our close.
func makeStaleSocketFile(_ type: UnixSocketType, path: String) {
    close(rawBoundSocket(type, path: path))
    for _ in 0..<500 {
        let probe = socket(AF_UNIX, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        let refused =
            UnixAddress(stringLiteral: path).withSockAddrForTest { connect(probe, $0, $1) } == -1
            && errno == ECONNREFUSED
        close(probe)
        if refused { return }
        usleep(10_000)
    }
}

extension UnixAddress {
    /// The library's own sockaddr for this address, for raw kernel calls in tests.
    func withSockAddrForTest<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        try! withSockAddr(operation: "test") { (pointer, length) throws(UnixSocketError) -> R in body(pointer, length) }
    }
}

/// The descriptors of the kinds the core tests create (sockets, /dev/null, files under /tmp), as "fd -> target".
/// The test runtime's own (epoll, eventfd, timerfd, pipes) come and go on other threads and are left out.
func trackedDescriptors() -> Set<String> {
    Set(
        descriptorNumbers().compactMap { fd -> String? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") else {
                return nil
            }
            guard target.hasPrefix("socket:") || target == "/dev/null" || target.hasPrefix("/tmp/") else { return nil }
            return "\(fd) -> \(target)"
        }
    )
}

/// Inside an exit test: checks the tracked descriptors are `expected` again (a bounded wait lets a close in
/// flight finish); a leaked descriptor stays and fails, named by its target.
func exitCheckDescriptors(
    _ expected: Set<String>,
    _ what: @autoclosure () -> String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    var now = trackedDescriptors()
    for _ in 0..<100 where now != expected {
        usleep(2_000)
        now = trackedDescriptors()
    }
    exitCheck(
        now == expected,
        "\(what()): leaked \(now.subtracting(expected).sorted()), closed \(expected.subtracting(now).sorted())",
        sourceLocation: sourceLocation
    )
}

/// Inside an exit test that exhausts the descriptor table: lets the runtime open its lazy descriptors (the
/// dispatch timer) first, so that it does not need one while the table is full.
func warmUpRuntime() {
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(5)) { done.signal() }
    done.wait()
}
