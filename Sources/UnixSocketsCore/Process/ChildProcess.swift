package import SystemPackage
import UnixSocketsSystem

/// A child process started with sockets as its descriptors 3, 4, ..., the way a service manager starts a
/// socket-activated service (`uds activate`). `package` only: the library never starts processes.
package struct ChildProcess: Sendable {
    package let pid: Int32

    /// How a child ended.
    package enum Termination: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)

        /// The status a shell reports for it: the exit status, or 128 + the signal number.
        package var shellStatus: Int32 {
            switch self {
            case .exited(let status): status
            case .signaled(let signal): 128 + signal
            }
        }
    }

    /// Why a command could not be started.
    package struct StartFailure: Error, Sendable, CustomStringConvertible {
        package let command: [UInt8]
        package let errno: Errno
        /// True when the child's execve failed (the command is at fault), false when fork did (we are).
        package let inExec: Bool

        package var description: String {
            let operation = "\(inExec ? "execve" : "fork") \(String(decoding: command, as: UTF8.self))"
            return UnixSocketError.system(operation, errno, detail: errno.description.lowercased()).description
        }
    }

    /// The executable `command` names: itself when it holds a `/`, else the first executable regular file
    /// `command` in the directories of `searchPath` (PATH's syntax; an empty entry is the current directory).
    package static func resolve(_ command: [UInt8], searchPath: [UInt8]?) -> [UInt8]? {
        if command.isEmpty { return nil }
        if command.contains(UInt8(ascii: "/")) { return command }
        let directories = (searchPath ?? Array("/usr/local/bin:/usr/bin:/bin".utf8))
            .split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        for directory in directories {
            let candidate = (directory.isEmpty ? [UInt8(ascii: ".")] : Array(directory)) + [UInt8(ascii: "/")] + command
            if system_isExecutableFile(candidate) { return candidate }
        }
        return nil
    }

    /// This process's environment, `NAME=VALUE` entries byte for byte.
    package static var environment: [[UInt8]] { system_environment() }

    /// Starts `executable` with `arguments` (argv[0] first) and `environment` (`NAME=VALUE` entries), the
    /// sockets' descriptors as 3, 4, ... in order, default signal dispositions and an empty signal mask.
    /// `listenPIDVariable` (`LISTEN_PID`) is added as the child's own pid, written between fork and exec.
    /// - Throws: ``StartFailure`` when fork or execve fails (an execve failure is seen here, not as the
    ///   child's exit status); `.closed` when a socket is closed.
    package static func start(
        _ executable: [UInt8],
        arguments: [[UInt8]],
        environment: [[UInt8]],
        listenPIDVariable: String?,
        sockets: [SocketCore]
    ) throws -> ChildProcess {
        var descriptors: [CInt] = []
        var joined: [SocketCore] = []
        defer { for core in joined { core.endUse() } }
        for core in sockets {
            descriptors.append(try core.beginUse("spawn"))
            joined.append(core)
        }
        switch system_spawn(
            path: executable,
            arguments: arguments,
            environment: environment,
            listenPIDVariable: listenPIDVariable,
            descriptors: descriptors
        ) {
        case .success(let pid): return ChildProcess(pid: pid)
        case .failure(let failure):
            throw StartFailure(command: executable, errno: failure.errno, inExec: failure.inExec)
        }
    }

    /// Waits (blocking the calling thread) until the child ends, and reaps it.
    package func wait() -> Termination {
        switch system_waitChild(pid) {
        case .success(.exited(let status)): .exited(status)
        case .success(.signaled(let signal)): .signaled(signal)
        case .failure: .exited(127)  // ECHILD: reaped already; nothing else is possible for our own child
        }
    }

    /// Sends `signal` to the child (nothing when it has ended and is not yet reaped: ESRCH is ignored).
    package func send(_ signal: ProcessControl.ProcessSignal) {
        _ = system_kill(pid, signal: signal.number)
    }
}
