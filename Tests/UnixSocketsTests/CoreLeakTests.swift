import Foundation
import SystemPackage
import Testing

@testable import UnixSockets
@testable import UnixSocketsAsync
@testable import UnixSocketsCore
@testable import UnixSocketsSystem

/// Descriptor accounting. Swift Testing runs tests in parallel in one process, so every count of
/// /proc/self/fd happens in an exit test (a child process of its own).
@Suite("Core: descriptor leaks")
struct CoreLeakTests {
    @Test("a representative workload of every socket type, errors included, leaves no descriptor and no file")
    func workloadLeavesNothing() async throws {
        await #expect(processExitsWith: .success) {
            try synchronously {  // blocking calls: the exit test body is async
                let baseline = trackedDescriptors()
                let dir = try TempDir()
                let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
                for type in allSocketTypes {
                    // Servers on paths and names, clients, exchanges, closes.
                    for address in [dir.address("\(type.rawValue).sock"), uniqueAbstract("leak"), UnixAddress.unnamed] {
                        let server = try AnyServer(
                            type,
                            address,
                            mode: address.isPath ? FilePermissions(rawValue: 0o600) : nil
                        )
                        let local = try server.local
                        for _ in 0..<3 { try server.exchange(via: local) }
                        server.close()
                    }
                    // Descriptors: received and dropped, taken and closed, truncated.
                    let pair = try AnyPair(type)
                    try pair.send(bytes("a"), descriptors: [file, file, file])
                    _ = try pair.receive(maxDescriptors: 3)  // dropped unclaimed: closed by their owner
                    try pair.send(bytes("b"), descriptors: [file])
                    if let taken = try pair.receive(maxDescriptors: 1).descriptors.first?.take() { try taken.close() }
                    for room in [0, 1] {
                        try pair.send(bytes("c"), descriptors: [file, file])
                        do {
                            _ = try pair.receive(maxDescriptors: room)
                            exitCheck(false, "\(type): no truncation with room \(room)")
                        } catch let error as UnixSocketError {
                            exitCheck(error.code == .controlTruncated, "\(error)")
                        }
                    }
                    if let messages = pair.messages {
                        // A message too long for the buffer, with descriptors: both discarded.
                        try messages.send(patternBytes(100), descriptors: [file, file])
                        // Peeks install nothing.
                        for _ in 0..<5 { exitCheck(try messages.nextMessageSize() == 100, "peek size") }
                        do {
                            _ = try messages.receive(maxBytes: 10, maxDescriptors: 4)
                            exitCheck(false, "no truncation")
                        } catch let error as UnixSocketError {
                            exitCheck(error.code == .messageTruncated, "\(error)")
                        }
                    }
                    // Errors on the way.
                    let missing = dir.address("missing.sock")
                    _ = try? UnixStream.connect(to: missing, timeout: .seconds(1))
                    _ = try? UnixSeqPacket.connect(to: uniqueAbstract("none"), timeout: .seconds(1))
                    try? UnixDatagram.unbound().send(bytes("x"), to: missing, timeout: .seconds(1))
                    let live = try AnyServer(type, dir.address("live.sock"))
                    _ = try? AnyServer(type, dir.address("live.sock"))
                    live.close()
                    try makeFile(dir, "regular", "x").close()
                    _ = try? AnyServer(type, dir.address("regular"))  // .notASocket
                    unlink(dir.file("regular"))
                }
                // A listener closed while a client is queued, a stream write to a closed peer, a timed-out accept.
                let listener = try UnixStreamListener.bind(dir.address("queue.sock"))
                let queued = try UnixStream.connect(to: dir.address("queue.sock"), timeout: .seconds(1))
                _ = try? listener.accept(timeout: .seconds(1))
                _ = try? listener.accept(timeout: .milliseconds(10))
                listener.close()
                queued.close()
                let (a, b) = try UnixStream.pair()
                b.close()
                try? a.write(all: bytes("x"), timeout: .seconds(1))
                a.close()
                try file.close()

                let left = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? ["?"]
                exitCheck(left.isEmpty, "socket files left behind: \(left)")
                dir.cleanup()
                exitCheckDescriptors(baseline, "after the workload")
            }
        }
    }

    @Test("control truncation and message truncation close every descriptor that arrived")
    func truncationClosesArrivals() async throws {
        await #expect(processExitsWith: .success) {
            let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
            for type in allSocketTypes {
                let pair = try AnyPair(type)
                for (sent, room) in [(2, 0), (2, 1), (3, 1), (8, 7)] {
                    try pair.send(bytes("t"), descriptors: Array(repeating: file, count: sent))
                    let before = trackedDescriptors()
                    do {
                        _ = try pair.receive(maxDescriptors: room)
                        exitCheck(false, "\(type): \(sent) into room for \(room) did not truncate")
                    } catch let error as UnixSocketError {
                        exitCheck(error.code == .controlTruncated, "\(error)")
                    }
                    exitCheckDescriptors(before, "\(type) \(sent)->\(room)")
                }
            }
            try file.close()
        }
    }

    @Test("a receiver near RLIMIT_NOFILE: the kernel installs what fits, flags MSG_CTRUNC; we close them and error")
    func receiverNearDescriptorLimit() async throws {
        await #expect(processExitsWith: .success) {
            warmUpRuntime()
            for type in allSocketTypes {
                let pair = try AnyPair(type)
                let file = try FileDescriptor.open("/dev/null", .readOnly, options: .closeOnExec)
                try pair.send(bytes("five"), descriptors: Array(repeating: file, count: 5))
                try pair.send(bytes("again"), descriptors: Array(repeating: file, count: 5))
                // Leave exactly two descriptor numbers free: cap the table two above the highest open one, fill
                // every free number (holes included), then free the last two taken.
                let highest = descriptorNumbers().max() ?? 1024
                var limit = UInt64(highest) + 3
                let previous = setDescriptorLimit(limit)
                var filler = exhaustDescriptors()
                for _ in 0..<16 where filler.count < 2 {  // a runtime thread took a number meanwhile
                    limit += 1
                    setDescriptorLimit(limit)
                    filler += exhaustDescriptors()
                }
                exitCheck(filler.count >= 2, "could not set two descriptor numbers aside")
                close(filler.removeLast())
                close(filler.removeLast())
                let before = trackedDescriptors()
                do {
                    _ = try pair.receive(maxDescriptors: 8)
                    exitCheck(false, "\(type): five descriptors into two free slots did not fail")
                } catch let error as UnixSocketError {
                    exitCheck(error.code == .controlTruncated, "\(type): \(error)")
                }
                exitCheckDescriptors(before, "\(type): the installed descriptors")
                filler.forEach { close($0) }
                setDescriptorLimit(previous)
                let message = try pair.receive(maxDescriptors: 8)
                exitCheck(message.bytes == bytes("again") && message.descriptors.count == 5, "\(type): next message")
                try file.close()
            }
        }
    }

    @Test("descriptor cycles (a socket sent over itself, then closed) are freed; nothing leaks")
    func descriptorCyclesFreed() async throws {
        await #expect(processExitsWith: .success) {
            try synchronously {  // blocking calls: the exit test body is async
                let baseline = trackedDescriptors()
                var inodes = Set<UInt64>()
                for type in allSocketTypes {
                    let pair = try AnyPair(type)
                    let (a, b): (CInt, CInt)
                    if let stream = pair.stream {
                        (a, b) = (
                            try stream.0.core.withDescriptor("t") { $0 }, try stream.1.core.withDescriptor("t") { $0 }
                        )
                    } else if let seq = pair.messages?.seqA {
                        (a, b) = (
                            try seq.core.withDescriptor("t") { $0 },
                            try pair.messages!.seqB!.core.withDescriptor("t") { $0 }
                        )
                    } else {
                        let messages = pair.messages!
                        (a, b) = (
                            try messages.dgramA!.core.withDescriptor("t") { $0 },
                            try messages.dgramB!.core.withDescriptor("t") { $0 }
                        )
                    }
                    inodes.formUnion([inode(of: a), inode(of: b)])
                    // Each end travels through its own socket: the in-flight references form a cycle.
                    try pair.send(
                        bytes("self"),
                        descriptors: [FileDescriptor(rawValue: a), FileDescriptor(rawValue: b)]
                    )
                    if let stream = pair.stream {
                        try stream.1.send(
                            bytes("back"),
                            descriptors: [FileDescriptor(rawValue: a), FileDescriptor(rawValue: b)],
                            timeout: .seconds(60)
                        )
                        stream.0.close()
                        stream.1.close()
                    } else if let messages = pair.messages {
                        if let seqB = messages.seqB {
                            try seqB.send(
                                bytes("back"),
                                descriptors: [FileDescriptor(rawValue: a)],
                                timeout: .seconds(60)
                            )
                        } else {
                            try messages.dgramB!.send(
                                bytes("back"),
                                descriptors: [FileDescriptor(rawValue: a)],
                                timeout: .seconds(60)
                            )
                        }
                        messages.seqA?.close()
                        messages.seqB?.close()
                        messages.dgramA?.close()
                        messages.dgramB?.close()
                    }
                }
                exitCheck(inodes.count == 6, "six sockets")
                exitCheckDescriptors(baseline, "our descriptors are closed")
                // The kernel's garbage collector frees the cycle; wait (bounded) until no socket is listed.
                var alive = inodes.intersection(unixSocketInodes())
                for _ in 0..<500 where !alive.isEmpty {
                    // A close of any Unix socket with descriptors in flight schedules the collector.
                    let (x, y) = try UnixStream.pair()
                    x.close()
                    y.close()
                    usleep(10_000)
                    alive = inodes.intersection(unixSocketInodes())
                }
                exitCheck(alive.isEmpty, "sockets still alive in the kernel: \(alive)")
            }
        }
    }
}
