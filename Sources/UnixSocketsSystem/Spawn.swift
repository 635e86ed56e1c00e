// Child processes for `uds activate`: fork+exec (in the C shim: only async-signal-safe calls may run
// between the two), waitpid and kill. The library itself never starts processes.
import CUnixSockets
package import SystemPackage

/// Why a spawn failed: before anything started (fork, pipe2: `started` false) or in the child's execve.
package struct SpawnFailure: Error, Sendable {
    package let errno: Errno
    package let inExec: Bool
}

/// Starts `path` with `arguments` (argv[0] included) and `environment` (`NAME=VALUE` entries), the
/// descriptors `descriptors` as 3, 4, ..., default signal dispositions and an empty mask. When
/// `listenPIDVariable` is given, the entry `NAME=<the child's own pid>` is added, written in the child
/// between fork and exec. Returns the child's pid.
package func system_spawn(
    path: [UInt8],
    arguments: [[UInt8]],
    environment: [[UInt8]],
    listenPIDVariable: String?,
    descriptors: [CInt]
) -> Result<CInt, SpawnFailure> {
    // Every string is copied into C memory the child can use as is (nothing is allocated after fork).
    var owned: [UnsafeMutablePointer<CChar>] = []
    defer { for pointer in owned { free(pointer) } }
    var outOfMemory = false
    func copy(_ bytes: [UInt8]) -> UnsafeMutablePointer<CChar>? {
        guard let pointer = malloc(bytes.count + 1)?.assumingMemoryBound(to: CChar.self) else {
            outOfMemory = true
            return nil
        }
        bytes.withUnsafeBytes { source in
            UnsafeMutableRawPointer(pointer).copyMemory(from: source.baseAddress!, byteCount: bytes.count)
        }
        pointer[bytes.count] = 0
        owned.append(pointer)
        return pointer
    }
    let executable = copy(path)
    var argv = arguments.map(copy) + [nil]
    var envp = environment.map(copy)
    var slot: UnsafeMutablePointer<CChar>?
    if let listenPIDVariable {
        // NAME= followed by room for the digits of any pid and the NUL.
        if let pointer = copy(Array((listenPIDVariable + "=" + String(repeating: "0", count: 23)).utf8)) {
            envp.append(pointer)
            slot = pointer + listenPIDVariable.utf8.count + 1
        }
    }
    envp.append(nil)
    if outOfMemory { return .failure(SpawnFailure(errno: .noMemory, inExec: false)) }
    var execFailed: CInt = 0
    let result = valueOrErrno("fork", retryOnInterrupt: false) {
        descriptors.withUnsafeBufferPointer { fds in
            argv.withUnsafeMutableBufferPointer { argv in
                envp.withUnsafeMutableBufferPointer { envp in
                    uds_spawn(
                        executable,
                        argv.baseAddress,
                        envp.baseAddress,
                        slot,
                        fds.baseAddress,
                        CInt(fds.count),
                        &execFailed
                    )
                }
            }
        }
    }
    return result.mapError { SpawnFailure(errno: $0, inExec: execFailed != 0) }
}

/// The process environment as `NAME=VALUE` entries, in order, byte for byte.
package func system_environment() -> [[UInt8]] {
    var entries: [[UInt8]] = []
    guard var cursor = uds_environ() else { return [] }
    while let entry = cursor.pointee {
        entries.append(
            Array(
                UnsafeBufferPointer(
                    start: UnsafeRawPointer(entry).assumingMemoryBound(to: UInt8.self),
                    count: strlen(entry)
                )
            )
        )
        cursor += 1
    }
    return entries
}

/// How a child ended: its exit status, or the signal that killed it.
package enum ChildTermination: Sendable, Equatable {
    case exited(CInt)
    case signaled(CInt)
}

/// waitpid(2) for `pid`, blocking; EINTR retried.
package func system_waitChild(_ pid: CInt) -> Result<ChildTermination, Errno> {
    var status: CInt = 0
    return valueOrErrno("waitpid") { waitpid(pid, &status, 0) }.map { _ in
        // WIFEXITED / WEXITSTATUS / WTERMSIG, spelled out (the macros do not reach Swift).
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }
}

/// kill(2).
package func system_kill(_ pid: CInt, signal: CInt) -> Result<Void, Errno> {
    valueOrErrno("kill") { kill(pid, signal) }.map { _ in () }
}

/// Whether `path` names a file this process may execute (access(2) X_OK, and not a directory).
package func system_isExecutableFile(_ path: [UInt8]) -> Bool {
    let path = path + [0]
    return path.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CChar.self) { isExecutable($0.baseAddress!) }
    }
}

private func isExecutable(_ path: UnsafePointer<CChar>) -> Bool {
    var status = stat()
    guard stat(path, &status) == 0, status.st_mode & UInt32(S_IFMT) != UInt32(S_IFDIR) else { return false }
    return access(path, X_OK) == 0
}
