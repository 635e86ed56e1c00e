import UnixSockets

/// Receiving messages in commands that do not expect descriptors (`recv`, `listen`, `connect` on seqpacket
/// and dgram). A peer may attach descriptors to any message anyway; a receive without room for them fails
/// with MSG_CTRUNC and loses the message. So these receives always leave room for the most one message can
/// carry, close whatever arrives at once, and go on; with `-v` they say how many were closed.
///
/// Each receive first learns the size of the message that is there (MSG_PEEK | MSG_TRUNC, which installs no
/// descriptor), then allocates that much: nothing is held while waiting, and an idle client costs no buffer.
enum MessageReceiver {
    /// Room for descriptors: the kernel's limit per message (SCM_MAX_FD).
    static let descriptorRoom = 253

    /// Closes the descriptors that came with `message`; with `verbose` says how many.
    static func closeDescriptors(of message: UnixMessage, verbose: Bool) {
        guard !message.descriptors.isEmpty else { return }
        for descriptor in message.descriptors { descriptor.close() }
        if verbose {
            let count = message.descriptors.count
            Lifecycle.diagnostic(
                "closed \(count) descriptor\(count == 1 ? "" : "s") that came with a message (none expected here)"
            )
        }
    }

    /// Whether a receive error loses only that one message, so the command should say so and go on:
    /// control data cut (out of descriptors: the kernel dropped some and flagged MSG_CTRUNC) or a message
    /// larger than ``Relay/messageCapacity``.
    static func isRecoverable(_ error: UnixSocketError) -> Bool {
        error.code == .controlTruncated || error.code == .messageTruncated
    }

    static func capacity(for size: Int) -> Int { min(size, Relay.messageCapacity) }
}

extension UnixSeqPacket {
    /// One message, its descriptors closed; nil at EOF (or an empty message, which reads the same).
    func receiveIgnoringDescriptors(verbose: Bool) throws(UnixSocketError) -> [UInt8]? {
        let size = try nextMessageSize()
        let message = try receive(
            maxBytes: MessageReceiver.capacity(for: size),
            maxDescriptors: MessageReceiver.descriptorRoom
        )
        MessageReceiver.closeDescriptors(of: message, verbose: verbose)
        return message.bytes.isEmpty ? nil : message.bytes
    }

    /// The same without blocking a thread: nothing is allocated until a message is there.
    func receiveIgnoringDescriptors(verbose: Bool) async throws -> [UInt8]? {
        let size = try await nextMessageSize()
        let message = try await receive(
            maxBytes: MessageReceiver.capacity(for: size),
            maxDescriptors: MessageReceiver.descriptorRoom
        )
        MessageReceiver.closeDescriptors(of: message, verbose: verbose)
        return message.bytes.isEmpty ? nil : message.bytes
    }
}

extension UnixDatagram {
    /// One datagram with its sender and credentials, its descriptors closed.
    func receiveIgnoringDescriptors(verbose: Bool, timeout: Duration? = nil) throws(UnixSocketError) -> UnixMessage {
        let size = try nextMessageSize(timeout: timeout)
        let message = try receive(
            maxBytes: MessageReceiver.capacity(for: size),
            maxDescriptors: MessageReceiver.descriptorRoom
        )
        MessageReceiver.closeDescriptors(of: message, verbose: verbose)
        return message
    }
}
