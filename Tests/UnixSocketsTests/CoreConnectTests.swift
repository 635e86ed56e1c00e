import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// RELIABILITY.md, "Listen, connect, accept".
@Suite("Core: listen, connect, accept")
struct CoreConnectTests {
    @Test("listen(100000) is capped at net.core.somaxconn, silently (exactly somaxconn + 1 connections queue)")
    func backlogIsCappedAtSomaxconn() async throws {
        await #expect(processExitsWith: .success) {
            try synchronously {  // blocking calls: the exit test body is async
                let somaxconn = try #require(sysctlInt("/proc/sys/net/core/somaxconn"))
                // One descriptor per queued client: make room (in this child only).
                var limit = rlimit()
                getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
                let needed = UInt64(somaxconn + 256)
                exitCheck(UInt64(limit.rlim_max) >= needed, "RLIMIT_NOFILE hard limit \(limit.rlim_max) < \(needed)")
                if UInt64(limit.rlim_cur) < needed { setDescriptorLimit(needed) }

                for (backlog, expected) in [(Int32(3), 4), (Int32(100_000), somaxconn + 1)] {
                    let address = uniqueAbstract("somax")
                    let listener = try UnixStreamListener.bind(address, backlog: backlog)  // no error: capped silently
                    var clients: [UnixStream] = []
                    var refused: UnixSocketError?
                    for _ in 0..<(somaxconn + 10) {
                        do {
                            clients.append(try UnixStream.connect(to: address, timeout: .milliseconds(50)))
                        } catch let error as UnixSocketError {
                            refused = error
                            break
                        }
                    }
                    exitCheck(refused?.code == .timedOut, "backlog \(backlog): \(String(describing: refused))")
                    exitCheck(
                        clients.count == expected,
                        "backlog \(backlog): \(clients.count) queued, expected \(expected)"
                    )
                    clients.forEach { $0.close() }
                    listener.close()
                }
            }
        }
    }

    @Test(
        "a full backlog: connect retries, then times out with EAGAIN; service resumes after accept",
        arguments: connectionTypes
    )
    func fullBacklogTimesOut(type: UnixSocketType) throws {
        let address = uniqueAbstract("full")
        func dial() throws(UnixSocketError) -> AnyObject {
            if type == .stream { return try UnixStream.connect(to: address, timeout: .milliseconds(100)) }
            return try UnixSeqPacket.connect(to: address, timeout: .milliseconds(100))
        }
        let server = try AnyServer(type, address, backlog: 1)
        defer { server.close() }
        var kept: [AnyObject] = []
        var failure: UnixSocketError?
        for _ in 0..<10 where failure == nil {
            switch Result(catching: { () throws(UnixSocketError) -> AnyObject in try dial() }) {
            case .success(let client): kept.append(client)
            case .failure(let error): failure = error
            }
        }
        #expect(kept.count == 2, "backlog 1 queues backlog + 1 connections")
        #expect(failure?.code == .timedOut)
        #expect(failure?.errno == .resourceTemporarilyUnavailable)
        #expect(failure?.address == address)
        #expect(failure?.description.contains("backlog stayed full") == true, "\(String(describing: failure))")
        // Accepting one makes room for one more.
        if type == .stream {
            _ = try server.stream!.accept(timeout: ioTimeout)
        } else {
            _ = try server.seqPacket!.accept(timeout: ioTimeout)
        }
        kept.append(try dial())
        #expect(kept.count == 3)

        // Kernel facts behind the back-off: a non-blocking connect to a full backlog fails with EAGAIN (not
        // EINPROGRESS), and poll reports the socket writable at once, so poll cannot be used to wait.
        let raw = socket(AF_UNIX, (type == .stream ? UnixSocketType.stream : UnixSocketType.seqPacket).flags, 0)
        #expect(raw >= 0)
        defer { close(raw) }
        let rc = address.withSockAddrForTest { connect(raw, $0, $1) }
        #expect(rc == -1 && errno == EAGAIN)
        var entry = pollfd(fd: raw, events: Int16(POLLOUT), revents: 0)
        #expect(poll(&entry, 1, 0) == 1 && entry.revents & Int16(POLLOUT) != 0)
    }

    @Test("the server closes without accepting: the queued client reads ECONNRESET", arguments: connectionTypes)
    func serverClosesWithoutAccepting(type: UnixSocketType) throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let address = dir.address("gone.sock")
        let server = try AnyServer(type, address)
        if type == .stream {
            let client = try UnixStream.connect(to: address, timeout: ioTimeout)
            try client.write(all: bytes("unheard"), timeout: ioTimeout)
            server.close()
            let error = expectError(.system, errno: .connectionReset) { _ = try client.read(timeout: ioTimeout) }
            #expect(error?.description.contains("connection reset by peer (ECONNRESET)") == true)
        } else {
            let client = try UnixSeqPacket.connect(to: address, timeout: ioTimeout)
            server.close()
            expectError(.system, errno: .connectionReset) { _ = try client.receive(timeout: ioTimeout) }
        }
        #expect(!isSocketFile(dir.file("gone.sock")))
    }

    @Test("accept at EMFILE: a clear error, no spin, no crash; service resumes when descriptors free up")
    func acceptAtDescriptorLimit() async throws {
        await #expect(processExitsWith: .success) {
            try synchronously {  // blocking calls: the exit test body is async
                warmUpRuntime()
                let address = uniqueAbstract("emfile")
                let listener = try UnixStreamListener.bind(address, backlog: 256)
                var clients: [UnixStream] = []
                for index in 0..<100 {
                    let client = try UnixStream.connect(to: address, timeout: .seconds(60))
                    try client.write(all: [UInt8(index)], timeout: .seconds(60))
                    clients.append(client)
                }
                // Cap the table at what is open now, then fill any hole: no descriptor number is free.
                let highest = descriptorNumbers().max() ?? 1024
                let previous = setDescriptorLimit(UInt64(highest) + 1)
                let filler = exhaustDescriptors()
                for _ in 0..<3 {
                    do {
                        _ = try listener.accept(timeout: .seconds(60))
                        exitCheck(false, "accept succeeded with no descriptor free")
                    } catch let error as UnixSocketError {
                        // Thrown at once (not a timeout after spinning on poll, which would report ready forever).
                        exitCheck(error.errno == .tooManyOpenFiles, "\(error)")
                        exitCheck(error.description.contains("EMFILE"), error.description)
                        exitCheck(error.description.contains("too many open files"), error.description)
                    }
                }
                filler.forEach { close($0) }
                setDescriptorLimit(previous)
                var seen = Set<UInt8>()
                for _ in 0..<100 {
                    let connection = try listener.accept(timeout: .seconds(60))
                    seen.insert(try connection.read(exactly: 1, timeout: .seconds(60))[0])
                    connection.close()
                }
                exitCheck(seen.count == 100, "every queued client was served once: \(seen.count)")
                clients.forEach { $0.close() }
                listener.close()
            }
        }
    }

    @Test("EINTR on accept4 and connect is retried; EAGAIN then EINTR on poll waits and still delivers once")
    func interruptedAcceptAndConnect() throws {
        let address = uniqueAbstract("eintr")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        try SyscallMock.with([("connect", [.interrupted, .interrupted]), ("accept4", [.interrupted, .interrupted])]) {
            let client = try UnixStream.connect(to: address, timeout: ioTimeout)
            let connection = try listener.accept(timeout: ioTimeout)
            #expect(SyscallMock.remaining("connect") == 0)
            #expect(SyscallMock.remaining("accept4") == 0)
            try client.write(all: bytes("once"), timeout: ioTimeout)
            #expect(try connection.read(exactly: 4, timeout: ioTimeout) == bytes("once"))
        }
        // Exactly one connection was made.
        expectError(.timedOut) { _ = try listener.accept(timeout: .milliseconds(50)) }

        // An accept that has to wait: EAGAIN sends it to poll, poll is interrupted, the wait resumes.
        let client = try UnixStream.connect(to: address, timeout: ioTimeout)
        try SyscallMock.with([("accept4", [.resourceTemporarilyUnavailable]), ("poll", [.interrupted])]) {
            let connection = try listener.accept(timeout: ioTimeout)
            #expect(SyscallMock.remaining("accept4") == 0 && SyscallMock.remaining("poll") == 0)
            try client.write(all: bytes("x"), timeout: ioTimeout)
            #expect(try connection.read(exactly: 1, timeout: ioTimeout) == bytes("x"))
        }
    }

    @Test("other accept and connect errnos surface as errors naming the call")
    func injectedErrorsSurface() throws {
        let address = uniqueAbstract("errs")
        let listener = try UnixStreamListener.bind(address)
        defer { listener.close() }
        let client = try UnixStream.connect(to: address, timeout: ioTimeout)
        defer { client.close() }
        SyscallMock.with([("accept4", [.tooManyOpenFilesInSystem]), ("connect", [.noBufferSpace])]) {
            let accept = expectError(.system, errno: .tooManyOpenFilesInSystem) {
                _ = try listener.accept(timeout: ioTimeout)
            }
            #expect(accept?.operation == "accept")
            let connect = expectError(.system, errno: .noBufferSpace) {
                _ = try UnixStream.connect(to: address, timeout: ioTimeout)
            }
            #expect(connect?.address == address)
        }
        // The queued client is still there.
        _ = try listener.accept(timeout: ioTimeout)
    }
}
