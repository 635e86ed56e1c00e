// Process-wide calls for the `uds` executable (see Process/ProcessControl.swift), one `system_*` wrapper
// each, in the style of Syscalls.swift (errno is read in `valueOrErrno`). The library itself never calls
// these: it never changes process-wide state on its own.
package import SystemPackage

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency package import Musl
#endif

// getpid, getuid and getgid already have their wrappers in Syscalls.swift.

/// signal(2) with SIG_IGN.
package func system_ignoreSignal(_ number: CInt) { _ = signal(number, SIG_IGN) }
/// Whether the signal's disposition is SIG_IGN (sigaction, read only).
package func system_signalIsIgnored(_ number: CInt) -> Bool {
    var action = sigaction()
    guard sigaction(number, nil, &action) == 0 else { return false }
    return unsafeBitCast(action.__sigaction_handler.sa_handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
}

package func system_isatty(_ fd: CInt) -> Bool { isatty(fd) == 1 }
/// alarm(2): SIGALRM (which ends the process) after `seconds`; 0 cancels.
package func system_alarm(_ seconds: UInt32) { _ = alarm(seconds) }
/// Ends the process with `status` (exit(3): atexit handlers, stdio flushed).
package func system_exit(_ status: CInt) -> Never { exit(status) }

/// RLIMIT_NOFILE as (soft, hard).
package func system_getDescriptorLimit() -> Result<(UInt64, UInt64), Errno> {
    var limit = rlimit()
    return valueOrErrno("getrlimit") { getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
        .map { _ in (UInt64(limit.rlim_cur), UInt64(limit.rlim_max)) }
}

package func system_setDescriptorLimit(soft: UInt64, hard: UInt64) -> Result<Void, Errno> {
    var limit = rlimit(rlim_cur: rlim_t(soft), rlim_max: rlim_t(hard))
    return valueOrErrno("setrlimit") { setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }.map { _ in () }
}

package let system_SIGINT = SIGINT
package let system_SIGTERM = SIGTERM
package let system_SIGHUP = SIGHUP
package let system_SIGPIPE = SIGPIPE

// MARK: - Descriptors handed to the process (`uds recv-fd` copies what they hold)

// fstat(2) is `system_fstat` in Syscalls.swift; the file-type bits are read in Process/InheritedFile.swift.

/// Whether the open file behind `fd` may be read (its access mode is not O_WRONLY).
package func system_isReadable(_ fd: CInt) -> Bool {
    guard case .success(let flags) = valueOrErrno("fcntl", { fcntl(fd, F_GETFL) }) else { return false }
    return flags & O_ACCMODE != O_WRONLY
}

// poll(2) is `system_poll` in Syscalls.swift; the pollfd is made in Process/InheritedFile.swift (it sees
// the type through CUnixSockets).

/// One read(2), or for a socket one recv(2) with MSG_DONTWAIT; EAGAIN is an error here (errno).
package func system_readOnce(_ fd: CInt, into buffer: UnsafeMutableRawBufferPointer, socket: Bool) -> Result<Int, Errno>
{
    valueOrErrno("read") {
        socket
            ? recv(fd, buffer.baseAddress, buffer.count, CInt(MSG_DONTWAIT))
            : read(fd, buffer.baseAddress, buffer.count)
    }
}
