import Foundation
import UnixSockets

/// Makes sure a bound socket is closed and its socket file removed when the process ends, on every path.
///
/// The library removes the file when the socket is closed, but while another thread is blocked in that
/// socket (accept, receive) the close, and with it the removal, completes only when that thread wakes; the
/// process may exit first. So the file's identity (device, inode) is noted right after bind, and after the
/// close the file is removed here too if it is still that same socket file (never someone else's).
func closeOnExit(_ address: UnixAddress, close: @escaping @Sendable () -> Void) {
    var identity: (path: String, device: UInt64, inode: UInt64)?
    if let bytes = address.pathBytes, let path = String(bytes: bytes, encoding: .utf8),
        let now = socketFileIdentity(path)
    {
        identity = (path, now.device, now.inode)
    }
    let noted = identity
    Lifecycle.onExit {
        close()
        if let noted, let now = socketFileIdentity(noted.path), now.device == noted.device, now.inode == noted.inode {
            try? FileManager.default.removeItem(atPath: noted.path)
        }
    }
}

/// (device, inode) of a socket file at `path` (not following a final symlink), or nil.
func socketFileIdentity(_ path: String) -> (device: UInt64, inode: UInt64)? {
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
        attributes[.type] as? FileAttributeType == .typeSocket,
        let device = (attributes[.systemNumber] as? NSNumber)?.uint64Value,
        let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value
    else { return nil }
    return (device, inode)
}
