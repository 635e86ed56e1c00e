import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// Issue 8: descriptors given to the right frame and never held past it, serialized framed sends, close
/// that does not shut down a shared socket, timeouts that saturate, sizes validated at the API boundary.
@Suite("Hardening: frames, close, timeouts, sizes")
struct HardeningTests {
    // MARK: Descriptors and frames

    private func header(_ length: Int) -> [UInt8] {
        withUnsafeBytes(of: UInt32(length).bigEndian) { Array($0) }
    }

    private func inode(ofDescriptor fd: CInt) -> UInt64 {
        var info = stat()
        return fstat(fd, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    @Test("a header that arrives in several descriptor-carrying messages: every descriptor reaches its frame")
    func headerSplitAcrossDescriptorMessages() throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let receiver = FramedStream(b)
        let null = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? null.close() }
        let frames = 50
        let sender = Background { () -> Void in
            for index in 0..<frames {
                for byte in self.header(3) { try a.send([byte], descriptors: [null], timeout: ioTimeout) }
                try a.write(all: [UInt8(index), 1, 2], timeout: ioTimeout)
            }
        }
        for index in 0..<frames {
            let frame = try #require(try receiver.receive(timeout: ioTimeout))
            #expect(frame.bytes == [UInt8(index), 1, 2])
            #expect(frame.descriptors.count == 4, "frame \(index) got \(frame.descriptors.count) of its 4 descriptors")
        }
        try sender.value()
    }

    @Test("descriptors sent with a frame's payload (after its header) belong to that frame, not the next")
    func descriptorsWithThePayloadBelongToTheirFrame() throws {
        let dir = try TempDir()
        defer { dir.cleanup() }
        let first = try makeFile(dir, "first", "1")
        let second = try makeFile(dir, "second", "2")
        defer {
            try? first.close()
            try? second.close()
        }
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let receiver = FramedStream(b)
        for (file, tag) in [(first, UInt8(1)), (second, UInt8(2))] {
            try a.write(all: header(2), timeout: ioTimeout)
            // The receiver reads the header alone (then gives up waiting for the rest), as a slow peer makes it.
            #expect(throws: UnixSocketError.self) { _ = try receiver.receive(timeout: .milliseconds(50)) }
            try a.send([tag, tag], descriptors: [file], timeout: ioTimeout)
            let frame = try #require(try receiver.receive(timeout: ioTimeout))
            #expect(frame.bytes == [tag, tag])
            #expect(frame.descriptors.count == 1)
            let got = frame.descriptors.first?.rawValue.map { inode(ofDescriptor: $0) }
            #expect(got == inode(ofDescriptor: file.rawValue), "frame \(tag) got another frame's file")
        }
    }

    @Test("a peer cannot make a frame hold more descriptors than the limit: all are closed, the error is clear")
    func pendingDescriptorsAreBounded() throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let receiver = try FramedStream(b, maxDescriptorsPerRead: 4, maxDescriptorsPerFrame: 8)
        let dir = try TempDir()
        defer { dir.cleanup() }
        let null = try makeFile(dir, "marker", "m")
        defer { try? null.close() }
        let before = Set(descriptorNumbers())
        let sender = Background { () -> Void in
            try a.write(all: self.header(100), timeout: ioTimeout)
            for _ in 0..<20 { try a.send([7], descriptors: [null], timeout: ioTimeout) }
        }
        let error = expectError(.tooLarge) { _ = try receiver.receive(timeout: ioTimeout) }
        #expect(
            error?.description.contains("over the limit of 8; all were closed") == true,
            "\(String(describing: error))"
        )
        try sender.value()
        // Whatever arrived after the error is still in the socket; drop it with the stream.
        b.close()
        let leaked = Set(descriptorNumbers()).subtracting(before).filter { fd in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) == dir.file("marker")
        }
        #expect(leaked.isEmpty, "descriptors held after the error: \(leaked)")
    }

    @Test("two tasks sending 64 KiB frames concurrently on one framed stream never interleave them", .onReactor)
    func concurrentSendersAreSerialized() async throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let sender = FramedStream(a)
        let receiver = FramedStream(b)
        let perSender = 24
        let reading = Background { () -> [UInt8: Int] in
            var counts: [UInt8: Int] = [:]
            for _ in 0..<(2 * perSender) {
                guard let frame = try receiver.receive(timeout: ioTimeout) else { break }
                let tag = frame.bytes.first ?? 0
                if frame.bytes.count == 65536 && frame.bytes.allSatisfy({ $0 == tag }) { counts[tag, default: 0] += 1 }
            }
            return counts
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for tag in [UInt8(0xA1), 0xB2] {
                group.addTask {
                    let payload = [UInt8](repeating: tag, count: 65536)
                    for _ in 0..<perSender { try await sender.send(payload, timeout: ioTimeout) }
                }
            }
            // A blocking sender joins the same stream too.
            try await group.waitForAll()
        }
        let counts = try reading.value()
        #expect(counts == [0xA1: perSender, 0xB2: perSender], "intact frames per sender: \(counts)")
    }

    @Test("blocking senders on two threads are serialized too")
    func concurrentBlockingSenders() throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let sender = FramedStream(a)
        let receiver = FramedStream(b)
        let perSender = 24
        let senders = [UInt8(0xC3), 0xD4].map { tag in
            Background { () -> Void in
                let payload = [UInt8](repeating: tag, count: 65536)
                for _ in 0..<perSender { try sender.send(payload, timeout: ioTimeout) }
            }
        }
        var counts: [UInt8: Int] = [:]
        for _ in 0..<(2 * perSender) {
            let frame = try #require(try receiver.receive(timeout: ioTimeout))
            let tag = frame.bytes.first ?? 0
            if frame.bytes.count == 65536 && frame.bytes.allSatisfy({ $0 == tag }) { counts[tag, default: 0] += 1 }
        }
        for sender in senders { try sender.value() }
        #expect(counts == [0xC3: perSender, 0xD4: perSender], "intact frames per sender: \(counts)")
    }

    // MARK: close() does not shut down a shared socket

    @Test("close() while another thread is blocked wakes it, and the peer of a dup'ed stream sees no EOF")
    func closeWakesWithoutShutdown() throws {
        let (x, y) = try UnixStream.pair()
        defer { y.close() }
        let copy = try x.core.withDescriptor("dup") { fd in dup(fd) }
        #expect(copy >= 0)
        defer { close(copy) }
        let blocked = Background { () -> String in
            do {
                _ = try x.read(maxBytes: 16, timeout: ioTimeout)
                return "read returned"
            } catch let error as UnixSocketError {
                return "\(error.code)"
            } catch {
                return "\(error)"
            }
        }
        // Give the reader time to block; either way it must end with .closed.
        usleep(100_000)
        x.close()
        #expect(try blocked.value() == "closed")
        // The open socket is still alive through the copy, both ways.
        try y.write(all: bytes("still here"), timeout: ioTimeout)
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { recv(copy, $0.baseAddress, $0.count, 0) }
        #expect(count == 10, "the copy read \(count) bytes: a shutdown reached it")
        #expect(send(copy, "back", 4, CInt(MSG_NOSIGNAL)) == 4)
        #expect(try y.read(exactly: 4, timeout: ioTimeout) == bytes("back"))
    }

    @Test("closing an adopted listener while accept is blocked leaves the shared listener accepting")
    func closeListenerLeavesSharedListenerAccepting() throws {
        let address = uniqueAbstract("shared")
        let listener = try UnixStreamListener.bind(address)
        let copy = try listener.core.withDescriptor("dup") { fd in dup(fd) }
        #expect(copy >= 0)
        defer { close(copy) }
        let blocked = Background { () -> String in
            do {
                _ = try listener.accept(timeout: ioTimeout)
                return "accepted"
            } catch let error as UnixSocketError {
                return "\(error.code)"
            } catch {
                return "\(error)"
            }
        }
        usleep(100_000)
        listener.close()
        #expect(try blocked.value() == "closed")
        let client = try UnixStream.connect(to: address, timeout: ioTimeout)
        defer { client.close() }
        var entry = pollfd(fd: copy, events: Int16(POLLIN), revents: 0)
        #expect(poll(&entry, 1, 10_000) == 1)
        let accepted = accept(copy, nil, nil)
        #expect(accepted >= 0, "the shared listener was shut down: errno \(errno)")
        if accepted >= 0 { close(accepted) }
    }

    // MARK: Timeouts saturate

    @Test(
        "a timeout too large to represent waits (it does not fire at once)",
        .onReactor,
        arguments: [Duration.seconds(Int64(1) << 62), .seconds(18_446_744_074), .seconds(Int64.max)]
    )
    func hugeTimeoutsSaturate(timeout: Duration) async throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        let blocking = Background { () -> [UInt8] in try b.read(maxBytes: 16, timeout: timeout) }
        let asyncRead = Task(executorPreference: UnixReactor.shared) { () -> [UInt8] in
            try await a.read(maxBytes: 16, timeout: timeout)
        }
        usleep(300_000)  // before the fix both had failed with .timedOut by now
        try await a.write(all: bytes("late"), timeout: ioTimeout)
        try await b.write(all: bytes("late"), timeout: ioTimeout)
        #expect(try blocking.value() == bytes("late"))
        #expect(try await asyncRead.value == bytes("late"))

        let (c, d) = try UnixStream.pair()
        defer {
            c.close()
            d.close()
        }
        let framed = FramedStream(d)
        let frame = Background { () -> [UInt8]? in try framed.receive(idleTimeout: timeout)?.bytes }
        usleep(300_000)
        try await FramedStream(c).send(bytes("idle"), timeout: ioTimeout)
        #expect(try frame.value() == bytes("idle"))
    }

    // MARK: Sizes validated at the boundary

    @Test("negative and absurd sizes throw .invalidArgument, blocking and async, and never trap", .onReactor)
    func badSizesThrow() async throws {
        let (a, b) = try UnixStream.pair()
        defer {
            a.close()
            b.close()
        }
        expectError(.invalidArgument) { _ = try a.read(maxBytes: -1) }
        expectError(.invalidArgument) { _ = try a.read(exactly: -1) }
        expectError(.invalidArgument) { _ = try a.read(exactly: Int.max) }
        expectError(.invalidArgument) { _ = try a.readToEnd(maxBytes: -1) }
        expectError(.invalidArgument) { _ = try a.receive(maxBytes: -1) }
        for call in [
            { _ = try await a.read(maxBytes: -1) }, { _ = try await a.read(exactly: -1) },
            { _ = try await a.read(exactly: Int.max) }, { _ = try await a.receive(maxBytes: -1) },
        ] as [@Sendable () async throws -> Void] {
            do {
                try await call()
                Issue.record("a bad size was accepted")
            } catch let error as UnixSocketError {
                #expect(error.code == .invalidArgument)
            }
        }
        for bad in [-1, 254, 1000] {
            expectError(.invalidArgument) { _ = try FramedStream(b, maxDescriptorsPerRead: bad) }
        }
        expectError(.invalidArgument) { _ = try FramedStream(b, maximumFrameLength: -1) }
        expectError(.invalidArgument) { _ = try FramedStream(b, maxDescriptorsPerFrame: -1) }
        // A huge maxBytes is fine: the buffer is sized to what a read can return.
        try await b.write(all: bytes("ok"), timeout: ioTimeout)
        #expect(try await a.read(maxBytes: Int.max, timeout: ioTimeout) == bytes("ok"))
    }

    // MARK: Error texts

    @Test(
        "an address with control characters is escaped in errors; a cut control message says what became of the descriptors"
    )
    func errorTextsAreSafeAndTrue() throws {
        let address = try UnixAddress.path(bytes: Array("/nonexistent-uds/a\nforged line\u{1b}[2J".utf8))
        let error = expectError(.system) { _ = try UnixStream.connect(to: address, timeout: ioTimeout) }
        let text = error?.description ?? ""
        #expect(!text.contains("\n") && !text.contains("\u{1b}"), "\(text)")
        #expect(text.contains("a\\x0aforged line\\x1b[2J"), "\(text)")

        let (a, b) = try UnixSeqPacket.pair()
        defer {
            a.close()
            b.close()
        }
        let null = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
        defer { try? null.close() }
        try a.send(bytes("x"), descriptors: [null, null], timeout: ioTimeout)
        let cut = expectError(.controlTruncated) {
            _ = try b.receive(maxBytes: 16, maxDescriptors: 0, timeout: ioTimeout)
        }
        #expect(
            cut?.description.contains("the kernel discarded the descriptors that did not fit") == true,
            "\(String(describing: cut))"
        )
        #expect(cut?.description.contains("the 0 that arrived") == false)
    }
}
