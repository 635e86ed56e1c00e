package import SystemPackage
package import UnixSocketsCore

/// The relay engine between a connection and inherited descriptors (stdin and stdout of `uds listen` and
/// `uds connect`): one reused buffer per direction, no allocation per chunk, and splice(2) where the
/// descriptor is a pipe (the bytes never enter user space). The descriptors stay as the process inherited
/// them: blocking, never switched to O_NONBLOCK (that flag belongs to an open file shared with other
/// processes); if someone else made one non-blocking, EAGAIN waits for readiness. These loops block their
/// thread (stdin and stdout cannot be waited on by the reactor without changing their flags).
///
/// Nothing here ends the process: the ends are returns and errors, for the caller to map.
package enum StdioRelay {
    /// An error of the inherited side (not of the socket).
    package enum Failure: Error, CustomStringConvertible {
        /// The output's reader went away (EPIPE): a normal end for a command (as with `| head`).
        case outputClosed
        /// A read or write of the inherited descriptor failed: `operation` is e.g. "write stdout".
        case io(operation: String, Errno)

        package var description: String {
            switch self {
            case .outputClosed: "the output's reader went away"
            case .io(let operation, let errno): "\(operation): \(errno)"
            }
        }
    }

    /// Bytes per read or splice for streams.
    package static let streamChunk = 1 << 20
    /// Bytes per input read that becomes one message (seqpacket, dgram) without `lines`.
    package static let messageChunk = 1 << 16

    package static func allocate(_ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    }

    /// Writes all of `buffer` to `output` (named `name` in errors).
    package static func write(
        _ buffer: UnsafeRawBufferPointer,
        to output: FileDescriptor,
        name: String = "stdout"
    ) throws(Failure) {
        var offset = 0
        while offset < buffer.count {
            do {
                offset += try output.write(UnsafeRawBufferPointer(rebasing: buffer[offset...]))
            } catch let errno as Errno where errno == .brokenPipe {
                throw .outputClosed
            } catch let errno as Errno where errno == .resourceTemporarilyUnavailable {
                InheritedFile.waitWritable(output)  // someone else made the shared file non-blocking
            } catch let errno as Errno where errno == .interrupted {
                continue
            } catch {
                throw .io(operation: "write \(name)", (error as? Errno) ?? .ioError)
            }
        }
    }

    /// Reads what `input` has (blocking); 0 at end of file.
    package static func read(
        from input: FileDescriptor,
        into buffer: UnsafeMutableRawBufferPointer,
        name: String = "stdin"
    ) throws(Failure) -> Int {
        while true {
            do {
                return try input.read(into: buffer)
            } catch let errno as Errno where errno == .resourceTemporarilyUnavailable {
                InheritedFile.waitReadable(input)
            } catch let errno as Errno where errno == .interrupted {
                continue
            } catch {
                throw .io(operation: "read \(name)", (error as? Errno) ?? .ioError)
            }
        }
    }

    /// Whether splice(2) can serve `fd`: a pipe that is not in non-blocking mode.
    package static func canSplice(_ fd: FileDescriptor) -> Bool {
        guard case .success(let kind) = InheritedFile.kind(of: fd) else { return false }
        return InheritedFile.isPipe(kind) && !InheritedFile.isNonBlocking(fd)
    }

    /// Runs `splice` until it moves 0 bytes (EOF): true when done. False when the very first call was refused
    /// with EINVAL (a pipe end that does not splice): the caller copies through user space instead.
    private static func spliceAll(_ splice: () throws(UnixSocketError) -> Int) throws(UnixSocketError) -> Bool {
        var moved = false
        do {
            while try splice() > 0 { moved = true }
            return true
        } catch  where error.errno == .invalidArgument && !moved {
            return false
        }
    }

    /// socket -> `output` until the peer's EOF.
    /// - Throws: ``UnixSocketError`` from the socket, ``Failure`` from `output`.
    package static func streamToOutput(_ stream: UnixStream, output: FileDescriptor) throws {
        if canSplice(output) {
            let spliced: Bool
            do {
                spliced = try spliceAll { () throws(UnixSocketError) in
                    try stream.splice(into: output, maxBytes: streamChunk)
                }
            } catch {
                throw error.errno == .brokenPipe ? Failure.outputClosed : error
            }
            if spliced { return }
        }
        let buffer = allocate(streamChunk)
        defer { buffer.deallocate() }
        while true {
            let count = try stream.read(into: buffer)
            if count == 0 { return }
            try write(UnsafeRawBufferPointer(rebasing: buffer[..<count]), to: output)
        }
    }

    /// `input` -> socket until the input's EOF, then shuts down the write side (the peer reads EOF).
    /// `progressed` is called after each chunk sent.
    package static func inputToStream(
        _ input: FileDescriptor,
        stream: UnixStream,
        progressed: () -> Void
    ) throws {
        defer { try? stream.shutdown(.write) }
        if canSplice(input),
            try spliceAll({ () throws(UnixSocketError) in
                let count = try stream.splice(from: input, maxBytes: streamChunk)
                if count > 0 { progressed() }
                return count
            })
        {
            return
        }
        let buffer = allocate(streamChunk)
        defer { buffer.deallocate() }
        while true {
            let count = try read(from: input, into: buffer)
            if count == 0 { return }
            try stream.write(all: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            progressed()
        }
    }

    /// `input` -> messages: each line (`lines`, newline stripped) or each read chunk is one message.
    /// Empty lines are skipped when `skipEmpty` (seqpacket: an empty message reads like EOF).
    package static func inputToMessages(
        _ input: FileDescriptor,
        lines: Bool,
        skipEmpty: Bool,
        _ send: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let buffer = allocate(messageChunk)
        defer { buffer.deallocate() }
        func emit(_ bytes: UnsafeRawBufferPointer) throws {
            if bytes.isEmpty && skipEmpty { return }
            try send(bytes)
        }
        guard lines else {
            while true {
                let count = try read(from: input, into: buffer)
                if count == 0 { return }
                try emit(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
        }
        var pending: [UInt8] = []
        while true {
            let count = try read(from: input, into: buffer)
            if count == 0 {
                if !pending.isEmpty { try pending.withUnsafeBytes { try emit($0) } }
                return
            }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<count])
            var start = 0
            while let newline = chunk[start...].firstIndex(of: UInt8(ascii: "\n")) {
                if pending.isEmpty {
                    try emit(UnsafeRawBufferPointer(rebasing: chunk[start..<newline]))
                } else {
                    pending.append(contentsOf: chunk[start..<newline])
                    try pending.withUnsafeBytes { try emit($0) }
                    pending.removeAll(keepingCapacity: true)
                }
                start = newline + 1
            }
            pending.append(contentsOf: chunk[start...])
        }
    }

    /// Messages -> `output`: `receive` returns one message, or nil at EOF. Each message is written raw, or
    /// followed by a newline with `lines`. A receive error for which `skip` returns true (it reported it)
    /// loses only that message.
    package static func messagesToOutput(
        _ output: FileDescriptor,
        lines: Bool,
        skip: (UnixSocketError) -> Bool,
        _ receive: () throws(UnixSocketError) -> [UInt8]?
    ) throws {
        while true {
            let message: [UInt8]?
            do throws(UnixSocketError) {
                message = try receive()
            } catch {
                guard skip(error) else { throw error }
                continue
            }
            guard let message else { return }
            try writeMessage(message, lines: lines, to: output)
        }
    }

    /// Writes one message (raw, or with a newline when `lines`).
    package static func writeMessage(_ bytes: [UInt8], lines: Bool, to output: FileDescriptor) throws(Failure) {
        let line = lines ? bytes + [UInt8(ascii: "\n")] : bytes
        try line.withUnsafeBytes { raw in Result { () throws(Failure) in try write(raw, to: output) } }.get()
    }
}
