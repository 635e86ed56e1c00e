// The scenarios of `uds bench`, server and client, in C (CBaseline) and in Swift (UnixSockets).
//
// The Swift side speaks exactly the wire protocol written down in CBaseline.h, so a Swift client works
// against a C server and the other way round; the bench compares Swift server + Swift client against
// C server + C client. Differences of means, not of protocol: the Swift side uses the library's public
// API (blocking or async), the C side plain blocking syscalls.
import CBaseline
import SystemPackage
import UnixSockets

/// What a client measured.
enum BenchMeasurement: Sendable {
    /// Round-trip times in ns.
    case samples([UInt64])
    /// Elapsed time of the whole transfer in ns.
    case elapsed(UInt64)
}

private let ackByte: [UInt8] = [0x06]

private func protocolError(_ what: String) -> BenchError { BenchError("bench protocol: \(what)") }

private func signalReady(_ fd: Int32) {
    guard fd >= 0 else { return }
    _ = try? [UInt8(0x52)].withUnsafeBytes { try FileDescriptor(rawValue: fd).writeAll($0) }
}

enum BenchRunner {
    // MARK: Dispatch

    static func runServer(_ job: BenchJob) async throws {
        switch (job.impl, job.api) {
        case (.c, _): try await BenchSystem.onOwnThread { try cServer(job) }
        case (.swift, .blocking): try await BenchSystem.onOwnThread { try swiftServer(job) }
        case (.swift, .async): try await asyncServer(job)
        case (.swift, .asyncReactor):
            try await withTaskExecutorPreference(UnixReactor.shared) { try await asyncServer(job) }
        }
    }

    static func runClient(_ job: BenchJob) async throws -> BenchMeasurement {
        switch (job.impl, job.api) {
        case (.c, _): return try await BenchSystem.onOwnThread { try cClient(job) }
        case (.swift, .blocking): return try await BenchSystem.onOwnThread { try swiftClient(job) }
        case (.swift, .async): return try await asyncClient(job)
        case (.swift, .asyncReactor):
            return try await withTaskExecutorPreference(UnixReactor.shared) { try await asyncClient(job) }
        }
    }

    // MARK: C

    static func cServer(_ job: BenchJob) throws {
        let rc: Int32
        switch job.scenario {
        case .rtt:
            rc = cb_pingpong_server(job.path, job.socketType, job.size, job.warmup + job.iterations, job.readyFD)
        case .throughput:
            rc = cb_throughput_server(
                job.path,
                job.socketType,
                job.size,
                job.totalBytes,
                Int32(job.sockbuf),
                job.readyFD
            )
        case .fdpass: rc = cb_fdpass_server(job.path, job.socketType, job.iterations, job.readyFD)
        case .accept: rc = cb_accept_server(job.path, job.socketType, job.iterations, job.readyFD)
        case .many: throw BenchError("the many-clients scenario has no C counterpart")
        }
        if rc != 0 { throw BenchError.c("C \(job.scenario.rawValue) server", rc) }
    }

    static func cClient(_ job: BenchJob) throws -> BenchMeasurement {
        var elapsed: UInt64 = 0
        let rc: Int32
        switch job.scenario {
        case .rtt:
            var samples = [UInt64](repeating: 0, count: max(job.iterations, 1))
            rc = samples.withUnsafeMutableBufferPointer {
                cb_pingpong_client(
                    job.path,
                    job.clientPath,
                    job.socketType,
                    job.size,
                    job.warmup,
                    job.iterations,
                    $0.baseAddress
                )
            }
            if rc != 0 { throw BenchError.c("C rtt client", rc) }
            return .samples(Array(samples.prefix(job.iterations)))
        case .throughput:
            rc = cb_throughput_client(
                job.path,
                job.clientPath,
                job.socketType,
                job.size,
                job.totalBytes,
                Int32(job.sockbuf),
                &elapsed
            )
        case .fdpass: rc = cb_fdpass_client(job.path, job.clientPath, job.socketType, job.iterations, &elapsed)
        case .accept: rc = cb_accept_client(job.path, job.socketType, job.iterations, &elapsed)
        case .many: throw BenchError("the many-clients scenario has no C counterpart")
        }
        if rc != 0 { throw BenchError.c("C \(job.scenario.rawValue) client", rc) }
        return .elapsed(elapsed)
    }

    // MARK: Swift, blocking

    static func swiftServer(_ job: BenchJob) throws {
        let address = try UnixAddress.path(job.path)
        switch job.type {
        case .stream:
            let listener = try UnixStreamListener.bind(address, backlog: Int32(CB_LISTEN_BACKLOG))
            try acceptAndServe(listener, job, ack: { try $0.write(all: ackByte) }, serve: streamServe)
        case .seqPacket:
            let listener = try UnixSeqPacketListener.bind(address, backlog: Int32(CB_LISTEN_BACKLOG))
            try acceptAndServe(listener, job, ack: { try $0.send(ackByte) }, serve: seqpacketServe)
        case .datagram:
            let socket = try UnixDatagram.bind(address)
            defer { socket.close() }
            if job.sockbuf > 0 { try socket.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            signalReady(job.readyFD)
            try datagramServe(socket, job)
        }
    }

    /// The accept scenario (accepts `iterations` + 1 connections and acks the last), or one connection served
    /// by `serve`; the listener is closed either way.
    private static func acceptAndServe<Connection: UnixConnection>(
        _ listener: UnixListener<Connection>,
        _ job: BenchJob,
        ack: (Connection) throws -> Void,
        serve: (Connection, BenchJob) throws -> Void
    ) throws {
        defer { listener.close() }
        signalReady(job.readyFD)
        if job.scenario == .accept {
            for index in 0...job.iterations {
                let connection = try listener.accept()
                if index == job.iterations { try ack(connection) }
                connection.close()
            }
            return
        }
        let connection = try listener.accept()
        defer { connection.close() }
        listener.close()
        try serve(connection, job)
    }

    private static func streamServe(_ connection: UnixStream, _ job: BenchJob) throws {
        switch job.scenario {
        case .rtt:
            var buffer = [UInt8](repeating: 0, count: job.size)
            for _ in 0..<(job.warmup + job.iterations) {
                try buffer.withUnsafeMutableBytes { try connection.read(exactlyInto: $0) }
                try connection.write(all: buffer)
            }
        case .throughput:
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            let capacity = max(job.size, Int(CB_STREAM_READ_BUFFER))
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
            defer { buffer.deallocate() }
            var remaining = job.totalBytes
            while remaining > 0 {
                let want = Int(min(remaining, UInt64(capacity)))
                let count = try connection.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want]))
                if count == 0 { throw protocolError("EOF with \(remaining) bytes missing") }
                remaining -= UInt64(count)
            }
            try connection.write(all: ackByte)
        case .fdpass:
            for _ in 0..<job.iterations {
                let message = try connection.receive(maxBytes: 1, maxDescriptors: 1)
                try checkDescriptorMessage(message)
            }
            try connection.write(all: ackByte)
        case .accept, .many: throw protocolError("unexpected scenario")
        }
    }

    private static func seqpacketServe(_ connection: UnixSeqPacket, _ job: BenchJob) throws {
        switch job.scenario {
        case .rtt:
            var buffer = [UInt8](repeating: 0, count: job.size)
            for _ in 0..<(job.warmup + job.iterations) {
                let count = try buffer.withUnsafeMutableBytes { try connection.receive(into: $0) }
                if count != job.size { throw protocolError("message of \(count) bytes, expected \(job.size)") }
                try connection.send(buffer)
            }
        case .throughput:
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: job.size, alignment: 16)
            defer { buffer.deallocate() }
            for _ in 0..<(job.totalBytes / UInt64(job.size)) {
                let count = try connection.receive(into: buffer)
                if count != job.size { throw protocolError("message of \(count) bytes, expected \(job.size)") }
            }
            try connection.send(ackByte)
        case .fdpass:
            for _ in 0..<job.iterations {
                try checkDescriptorMessage(try connection.receive(maxBytes: 1, maxDescriptors: 1))
            }
            try connection.send(ackByte)
        case .accept, .many: throw protocolError("unexpected scenario")
        }
    }

    private static func datagramServe(_ socket: UnixDatagram, _ job: BenchJob) throws {
        switch job.scenario {
        case .rtt:
            for _ in 0..<(job.warmup + job.iterations) {
                let message = try socket.receive(maxBytes: job.size, maxDescriptors: 0)
                let sender = try checkedSender(message, size: job.size)
                try socket.send(message.bytes, to: sender)
            }
        case .throughput:
            let first = try socket.receive(maxBytes: job.size, maxDescriptors: 0)
            let sender = try checkedSender(first, size: job.size)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: job.size, alignment: 16)
            defer { buffer.deallocate() }
            for _ in 1..<(job.totalBytes / UInt64(job.size)) {
                let count = try socket.receive(into: buffer)
                if count != job.size { throw protocolError("datagram of \(count) bytes, expected \(job.size)") }
            }
            try socket.send(ackByte, to: sender)
        case .fdpass:
            var sender: UnixAddress?
            for index in 0..<job.iterations {
                let message = try socket.receive(maxBytes: 1, maxDescriptors: 1)
                try checkDescriptorMessage(message)
                if index == 0 { sender = try checkedSender(message, size: 1) }
            }
            guard let sender else { throw protocolError("no descriptor message to acknowledge") }
            try socket.send(ackByte, to: sender)
        case .accept, .many: throw protocolError("unexpected scenario")
        }
    }

    private static func checkedSender(_ message: UnixMessage, size: Int) throws -> UnixAddress {
        if message.bytes.count != size {
            throw protocolError("datagram of \(message.bytes.count) bytes, expected \(size)")
        }
        guard let sender = message.sender, !sender.isUnnamed else {
            throw BenchError("bench protocol: datagram from an unbound sender (no reply path)")
        }
        return sender
    }

    private static func checkDescriptorMessage(_ message: UnixMessage) throws {
        let descriptors = message.descriptors.count
        for descriptor in message.descriptors { descriptor.close() }
        if message.bytes.isEmpty && descriptors == 0 { throw protocolError("EOF before the last descriptor") }
        if message.bytes.count != 1 || descriptors != 1 {
            throw protocolError("\(message.bytes.count) bytes with \(descriptors) descriptors, expected 1 and 1")
        }
    }

    static func swiftClient(_ job: BenchJob) throws -> BenchMeasurement {
        let address = try UnixAddress.path(job.path)
        switch job.scenario {
        case .rtt: return try swiftRTTClient(job, address)
        case .throughput: return try swiftThroughputClient(job, address)
        case .fdpass: return try swiftDescriptorClient(job, address)
        case .accept:
            let start = BenchSystem.now()
            for index in 0...job.iterations {
                if job.type == .seqPacket {
                    let connection = try UnixSeqPacket.connect(to: address)
                    if index == job.iterations { try receiveAck(.seqPacket(connection)) }
                    connection.close()
                } else {
                    let connection = try UnixStream.connect(to: address)
                    if index == job.iterations { _ = try connection.read(exactly: 1) }
                    connection.close()
                }
            }
            return .elapsed(BenchSystem.now() - start)
        case .many: throw BenchError("the many-clients scenario is async only")
        }
    }

    /// A connected client of `job.type` for the message scenarios: seqpacket, or dgram bound to clientPath.
    private enum MessageClient {
        case seqPacket(UnixSeqPacket)
        case datagram(UnixDatagram)

        static func open(_ job: BenchJob, _ address: UnixAddress) throws -> MessageClient {
            if job.type == .seqPacket {
                let socket = try UnixSeqPacket.connect(to: address)
                if job.sockbuf > 0 { try socket.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
                return .seqPacket(socket)
            }
            let socket = try UnixDatagram.bind(try UnixAddress.path(job.clientPath))
            if job.sockbuf > 0 { try socket.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            try socket.connect(to: address)
            return .datagram(socket)
        }

        func send(_ bytes: [UInt8], descriptors: [FileDescriptor] = []) throws {
            switch self {
            case .seqPacket(let socket): try socket.send(bytes, descriptors: descriptors)
            case .datagram(let socket): try socket.send(bytes, descriptors: descriptors)
            }
        }

        func receive(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
            switch self {
            case .seqPacket(let socket): try socket.receive(into: buffer)
            case .datagram(let socket): try socket.receive(into: buffer)
            }
        }

        func close() {
            switch self {
            case .seqPacket(let socket): socket.close()
            case .datagram(let socket): socket.close()
            }
        }
    }

    private static func swiftRTTClient(_ job: BenchJob, _ address: UnixAddress) throws -> BenchMeasurement {
        var samples = [UInt64](repeating: 0, count: job.iterations)
        var buffer = [UInt8](repeating: 0x5a, count: job.size)
        let total = job.warmup + job.iterations
        if job.type == .stream {
            let connection = try UnixStream.connect(to: address)
            defer { connection.close() }
            for index in 0..<total {
                let start = BenchSystem.now()
                try connection.write(all: buffer)
                try buffer.withUnsafeMutableBytes { try connection.read(exactlyInto: $0) }
                let end = BenchSystem.now()
                if index >= job.warmup { samples[index - job.warmup] = end - start }
            }
        } else {
            let client = try MessageClient.open(job, address)
            defer { client.close() }
            for index in 0..<total {
                let start = BenchSystem.now()
                try client.send(buffer)
                let count = try buffer.withUnsafeMutableBytes { try client.receive(into: $0) }
                let end = BenchSystem.now()
                if count != job.size { throw protocolError("reply of \(count) bytes, expected \(job.size)") }
                if index >= job.warmup { samples[index - job.warmup] = end - start }
            }
        }
        return .samples(samples)
    }

    private static func swiftThroughputClient(_ job: BenchJob, _ address: UnixAddress) throws -> BenchMeasurement {
        let buffer = [UInt8](repeating: 0x5a, count: job.size)
        if job.type == .stream {
            let connection = try UnixStream.connect(to: address)
            defer { connection.close() }
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            let start = BenchSystem.now()
            var remaining = job.totalBytes
            while remaining > 0 {
                if remaining >= UInt64(job.size) {
                    try connection.write(all: buffer)
                    remaining -= UInt64(job.size)
                } else {
                    try connection.write(all: buffer[..<Int(remaining)])
                    remaining = 0
                }
            }
            try readAck(connection)
            return .elapsed(BenchSystem.now() - start)
        }
        let client = try MessageClient.open(job, address)
        defer { client.close() }
        let start = BenchSystem.now()
        for _ in 0..<(job.totalBytes / UInt64(job.size)) { try client.send(buffer) }
        try receiveAck(client)
        return .elapsed(BenchSystem.now() - start)
    }

    /// The server's one-byte ack on a stream.
    private static func readAck(_ connection: UnixStream) throws {
        var ack: UInt8 = 0
        try withUnsafeMutableBytes(of: &ack) { try connection.read(exactlyInto: $0) }
    }

    /// The server's one-byte ack message.
    private static func receiveAck(_ client: MessageClient) throws {
        var ack: [UInt8] = [0, 0]
        let count = try ack.withUnsafeMutableBytes { try client.receive(into: $0) }
        if count != 1 { throw protocolError("ack of \(count) bytes") }
    }

    private static func swiftDescriptorClient(_ job: BenchJob, _ address: UnixAddress) throws -> BenchMeasurement {
        let passed: FileDescriptor
        do {
            passed = try FileDescriptor.open("/dev/null", .readOnly, options: [.closeOnExec])
        } catch {
            throw BenchError("open /dev/null: \(error)")
        }
        defer { try? passed.close() }
        let descriptors = [passed]
        let payload: [UInt8] = [0x46]
        if job.type == .stream {
            let connection = try UnixStream.connect(to: address)
            defer { connection.close() }
            let start = BenchSystem.now()
            for _ in 0..<job.iterations { try connection.send(payload, descriptors: descriptors) }
            try readAck(connection)
            return .elapsed(BenchSystem.now() - start)
        }
        let client = try MessageClient.open(job, address)
        defer { client.close() }
        let start = BenchSystem.now()
        for _ in 0..<job.iterations { try client.send(payload, descriptors: descriptors) }
        try receiveAck(client)
        return .elapsed(BenchSystem.now() - start)
    }

    // MARK: Swift, async

    static func asyncServer(_ job: BenchJob) async throws {
        let address = try UnixAddress.path(job.path)
        switch job.type {
        case .stream:
            let backlog =
                job.scenario == .many ? Int32(max(job.clients, Int(CB_LISTEN_BACKLOG))) : Int32(CB_LISTEN_BACKLOG)
            let listener = try UnixStreamListener.bind(address, backlog: backlog)
            defer { listener.close() }
            signalReady(job.readyFD)
            if job.scenario == .many {
                try await manyServer(listener, job)
                return
            }
            let connection = try await listener.accept()
            defer { connection.close() }
            listener.close()
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            let capacity = job.scenario == .throughput ? max(job.size, Int(CB_STREAM_READ_BUFFER)) : job.size
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
            defer { buffer.deallocate() }
            switch job.scenario {
            case .rtt:
                for _ in 0..<(job.warmup + job.iterations) {
                    try await connection.read(exactlyInto: buffer)
                    try await connection.write(all: UnsafeRawBufferPointer(buffer))
                }
            case .throughput:
                var remaining = job.totalBytes
                while remaining > 0 {
                    let want = Int(min(remaining, UInt64(capacity)))
                    let count = try await connection.read(
                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<want])
                    )
                    if count == 0 { throw protocolError("EOF with \(remaining) bytes missing") }
                    remaining -= UInt64(count)
                }
                try await connection.write(all: ackByte)
            default: throw protocolError("the async API is measured for rtt and throughput only")
            }
        case .seqPacket:
            let listener = try UnixSeqPacketListener.bind(address, backlog: Int32(CB_LISTEN_BACKLOG))
            defer { listener.close() }
            signalReady(job.readyFD)
            let connection = try await listener.accept()
            defer { connection.close() }
            listener.close()
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: job.size, alignment: 16)
            defer { buffer.deallocate() }
            switch job.scenario {
            case .rtt:
                var echo = [UInt8](repeating: 0, count: job.size)
                for _ in 0..<(job.warmup + job.iterations) {
                    let count = try await connection.receive(into: buffer)
                    if count != job.size { throw protocolError("message of \(count) bytes") }
                    echo.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(buffer)) }
                    try await connection.send(echo)
                }
            case .throughput:
                for _ in 0..<(job.totalBytes / UInt64(job.size)) {
                    let count = try await connection.receive(into: buffer)
                    if count != job.size { throw protocolError("message of \(count) bytes") }
                }
                try await connection.send(ackByte)
            default: throw protocolError("the async API is measured for rtt and throughput only")
            }
        case .datagram:
            let socket = try UnixDatagram.bind(address)
            defer { socket.close() }
            if job.sockbuf > 0 { try socket.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            signalReady(job.readyFD)
            switch job.scenario {
            case .rtt:
                for _ in 0..<(job.warmup + job.iterations) {
                    let message = try await socket.receive(maxBytes: job.size, maxDescriptors: 0)
                    try await socket.send(message.bytes, to: try checkedSender(message, size: job.size))
                }
            case .throughput:
                let first = try await socket.receive(maxBytes: job.size, maxDescriptors: 0)
                let sender = try checkedSender(first, size: job.size)
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: job.size, alignment: 16)
                defer { buffer.deallocate() }
                for _ in 1..<(job.totalBytes / UInt64(job.size)) {
                    let count = try await socket.receive(into: buffer)
                    if count != job.size { throw protocolError("datagram of \(count) bytes") }
                }
                try await socket.send(ackByte, to: sender)
            default: throw protocolError("the async API is measured for rtt and throughput only")
            }
        }
    }

    static func asyncClient(_ job: BenchJob) async throws -> BenchMeasurement {
        let address = try UnixAddress.path(job.path)
        if job.scenario == .many { return try await manyClient(job, address) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: job.size, alignment: 16)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
        let bytes = [UInt8](repeating: 0x5a, count: job.size)
        let ack = UnsafeMutableRawBufferPointer.allocate(byteCount: 1, alignment: 16)
        defer { ack.deallocate() }
        let total = job.warmup + job.iterations
        var samples = [UInt64](repeating: 0, count: job.scenario == .rtt ? job.iterations : 0)
        switch job.type {
        case .stream:
            let connection = try await UnixStream.connect(to: address)
            defer { connection.close() }
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            if job.scenario == .rtt {
                for index in 0..<total {
                    let start = BenchSystem.now()
                    try await connection.write(all: UnsafeRawBufferPointer(buffer))
                    try await connection.read(exactlyInto: buffer)
                    let end = BenchSystem.now()
                    if index >= job.warmup { samples[index - job.warmup] = end - start }
                }
                return .samples(samples)
            }
            let start = BenchSystem.now()
            var remaining = job.totalBytes
            while remaining > 0 {
                let count = Int(min(remaining, UInt64(job.size)))
                try await connection.write(all: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
                remaining -= UInt64(count)
            }
            try await connection.read(exactlyInto: ack)
            return .elapsed(BenchSystem.now() - start)
        case .seqPacket:
            let connection = try await UnixSeqPacket.connect(to: address)
            defer { connection.close() }
            if job.sockbuf > 0 { try connection.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            return try await messageClient(connection, job, bytes: bytes, reply: buffer)
        case .datagram:
            let socket = try UnixDatagram.bind(try UnixAddress.path(job.clientPath))
            defer { socket.close() }
            if job.sockbuf > 0 { try socket.setBufferSizes(send: job.sockbuf, receive: job.sockbuf) }
            try socket.connect(to: address)
            return try await messageClient(socket, job, bytes: bytes, reply: buffer)
        }
    }

    /// The async client of a connected message socket (seqpacket, or datagram connected to the server):
    /// timed round trips, or one-way messages then the server's one-byte ack.
    private static func messageClient(
        _ socket: some UnixMessageSocket,
        _ job: BenchJob,
        bytes: [UInt8],
        reply buffer: UnsafeMutableRawBufferPointer
    ) async throws -> BenchMeasurement {
        if job.scenario == .rtt {
            var samples = [UInt64](repeating: 0, count: job.iterations)
            for index in 0..<(job.warmup + job.iterations) {
                let start = BenchSystem.now()
                try await socket.send(bytes)
                let count = try await socket.receive(into: buffer)
                let end = BenchSystem.now()
                if count != job.size { throw protocolError("reply of \(count) bytes") }
                if index >= job.warmup { samples[index - job.warmup] = end - start }
            }
            return .samples(samples)
        }
        let start = BenchSystem.now()
        for _ in 0..<(job.totalBytes / UInt64(job.size)) { try await socket.send(bytes) }
        let count = try await socket.receive(into: buffer)
        let end = BenchSystem.now()
        if count != 1 { throw protocolError("ack of \(count) bytes") }
        return .elapsed(end - start)
    }

    // MARK: Many clients (Swift async only)
    //
    // Protocol: the client opens `clients` stream connections (untimed), then on each of them at once
    // does `iterations` round trips of `size` bytes (write, read the echo). The server accepts `clients`
    // connections and echoes each in its own task. Measured: all round trips / elapsed time.

    private static func manyServer(_ listener: UnixStreamListener, _ job: BenchJob) async throws {
        let size = job.size
        let rounds = job.iterations
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<job.clients {
                let connection = try await listener.accept()
                group.addTask {
                    defer { connection.close() }
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
                    defer { buffer.deallocate() }
                    for _ in 0..<rounds {
                        try await connection.read(exactlyInto: buffer)
                        try await connection.write(all: UnsafeRawBufferPointer(buffer))
                    }
                }
            }
            listener.close()
            try await group.waitForAll()
        }
    }

    private static func manyClient(_ job: BenchJob, _ address: UnixAddress) async throws -> BenchMeasurement {
        var connections: [UnixStream] = []
        connections.reserveCapacity(job.clients)
        defer { for connection in connections { connection.close() } }
        for _ in 0..<job.clients { connections.append(try await UnixStream.connect(to: address)) }
        let size = job.size
        let rounds = job.iterations
        let start = BenchSystem.now()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask {
                    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: size, alignment: 16)
                    defer { buffer.deallocate() }
                    buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
                    for _ in 0..<rounds {
                        try await connection.write(all: UnsafeRawBufferPointer(buffer))
                        try await connection.read(exactlyInto: buffer)
                    }
                }
            }
            try await group.waitForAll()
        }
        return .elapsed(BenchSystem.now() - start)
    }
}
