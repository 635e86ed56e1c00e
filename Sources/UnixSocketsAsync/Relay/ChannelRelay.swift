import UnixSocketsCore

/// The relay engine between two connected channels (`uds bridge`, `uds listen -k`, later `uds proxy`): both
/// directions at once, in the calling task and one child task, on the async API. No thread per connection:
/// a waiting direction holds only the reactor's registration.
package enum ChannelRelay {
    /// Bytes per read, per direction.
    package static let chunk = 1 << 16

    /// Relays `a` <-> `b` until both directions ended: EOF on one side shuts down the other's write side
    /// (half-close); an error on either side ends both (both are closed, which wakes the other direction).
    /// Neither channel is closed on a clean end: the caller owns them.
    package static func relay(_ a: any RelayChannel, _ b: any RelayChannel) async {
        await withDiscardingTaskGroup { group in
            group.addTask { await pump(from: b, to: a) }
            await pump(from: a, to: b)
        }
    }

    /// Copies `source` -> `destination` until EOF, then shuts down `destination`'s write side. Returns false
    /// (after closing both) when either side failed.
    @discardableResult
    package static func pump(from source: any RelayChannel, to destination: any RelayChannel) async -> Bool {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        do {
            while true {
                let count = try await source.relayRead(into: buffer)
                if count == 0 { break }
                try await destination.relayWrite(all: UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
            destination.relayShutdownWrite()
            return true
        } catch {
            source.relayClose()
            destination.relayClose()
            return false
        }
    }

    /// Copies everything `source` sends to `sink` (each read whole, so concurrent sources do not interleave
    /// mid-chunk when `sink` serializes) until EOF or an error; with `echo`, back to `source` instead.
    /// Returns the error that ended it, if any (the caller decides what a failed sink means).
    package static func drain(
        _ source: any RelayChannel,
        sink: (UnsafeRawBufferPointer) throws -> Void
    ) async -> (any Error)? {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        do {
            while true {
                let count = try await source.relayRead(into: buffer)
                if count == 0 { return nil }
                try sink(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            }
        } catch {
            return error
        }
    }

    /// Sends back everything `channel` sends until its EOF, then shuts down its write side (on a failure,
    /// which ends only this client, it is closed).
    package static func echo(_ channel: any RelayChannel) async {
        await pump(from: channel, to: channel)
    }
}
