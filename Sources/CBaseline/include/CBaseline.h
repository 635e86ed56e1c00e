// CBaseline: the C side of `uds bench`.
//
// Plain, blocking C doing the same system calls a careful C programmer would, so the
// Swift library can be measured against it. Every scenario has a server (run in the
// peer process) and a client (run in the measuring process) talking over a socket
// file. The wire protocol of each scenario is written down below and is the contract
// for the Swift implementation: a Swift client must work against a C server and a C
// client against a Swift server.
//
// CONVENTIONS (all functions)
//   * Return 0 on success or -errno (negative) on failure. Besides the errors of the
//     system calls themselves:
//       -EINVAL        bad argument (unknown `type`, size 0, NULL pointer, negative count,
//                      scenario not defined for the socket type, ...)
//       -ENAMETOOLONG  a path does not fit in sockaddr_un.sun_path
//       -ECONNRESET    the peer closed the connection (EOF) before the protocol finished
//       -EPROTO        the peer broke the protocol (message of the wrong length, truncated
//                      message or control data, wrong number of descriptors, ...)
//       -EDESTADDRREQ  a dgram server got a datagram from an unbound sender (no reply path)
//   * `type` is SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM (from <sys/socket.h>; in Swift
//     on Glibc: `Int32(SOCK_STREAM.rawValue)`).
//   * `path` is the server's socket file. The server binds it (it unlinks nothing
//     beforehand: the caller guarantees the path does not exist) and removes it before
//     returning (also on failure, if it was bound). `client_path` is used by SOCK_DGRAM
//     clients only (ignored, may be NULL, for the other types): the client binds it so the
//     server can reply to it, and removes it before returning. Paths are file-system paths
//     (no abstract addresses).
//   * `ready_fd`: after bind (SOCK_DGRAM) or bind + listen (stream/seqpacket), the server
//     writes exactly one byte (value unspecified) to `ready_fd` (typically the write end
//     of a pipe inherited from the measuring process) and then serves. The server never
//     closes `ready_fd`. Pass -1 to skip the signal.
//   * All sockets are created with SOCK_CLOEXEC, accepted with accept4(SOCK_CLOEXEC),
//     received descriptors with MSG_CMSG_CLOEXEC; every send uses MSG_NOSIGNAL; all calls
//     are blocking and retried on EINTR; stream reads/writes loop over short counts.
//   * Stream/seqpacket servers listen with backlog CB_LISTEN_BACKLOG and (except in the
//     accept scenario) accept exactly one connection.
//   * SOCK_DGRAM clients: socket, bind(client_path), connect(path). Connected Unix
//     datagram sockets are reliable and flow-controlled on Linux (the sender blocks while
//     the receiver's queue is full), so no message is ever dropped. SOCK_DGRAM servers are
//     bound but not connected and reply with sendto() to the sender's address.
//   * Byte values of payloads and acks are unspecified; receivers check only lengths.
//   * Timings use clock_gettime(CLOCK_MONOTONIC), in nanoseconds. Connection setup is
//     never timed, except in the accept scenario where it is the thing measured.
//   * Servers block forever if no client shows up (there are no timeouts): the measuring
//     process should kill its peer if the client side fails.
//   * The scenarios themselves keep no global state and are thread-safe.
//
// The header includes only standard headers so it imports as a Clang module in Swift.
#ifndef C_BASELINE_H
#define C_BASELINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    /// listen() backlog of every server (part of the protocol so both sides behave alike).
    CB_LISTEN_BACKLOG = 128,
    /// Minimum read-buffer size of the stream throughput server (see cb_throughput_server).
    CB_STREAM_READ_BUFFER = 65536,
};

// ---------------------------------------------------------------------------------------
// 1. Round-trip latency ("pingpong")
//
// Wire protocol (n = warmup + iterations round trips, the same n on both sides):
//   SOCK_STREAM:    client connects. n times: client writes `size` bytes; server reads
//                   exactly `size` bytes and writes them back; client reads exactly `size`
//                   bytes. Then both close (the server after its n-th echo).
//   SOCK_SEQPACKET: client connects. n times: client sends one `size`-byte message; server
//                   receives it (must be exactly `size` bytes) and sends it back as one
//                   message; client receives one message of exactly `size` bytes.
//   SOCK_DGRAM:     client binds client_path and connects to path. n times: client sends
//                   one `size`-byte datagram; server recvfrom()s it (exactly `size` bytes)
//                   and sendto()s it back to the sender's address; client receives one
//                   datagram of exactly `size` bytes.
// size >= 1. Messages (seqpacket/dgram) are limited by SO_SNDBUF (about 200 KiB by default).

/// The socket type constant (SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM) for "stream", "seqpacket" or
/// "dgram"; -EINVAL for any other name. So callers need not import <sys/socket.h> themselves.
int cb_socket_type(const char *name);

/// Pingpong server: echoes `total_iterations` (= warmup + iterations of the client)
/// messages, then closes and unlinks `path`.
int cb_pingpong_server(const char *path, int type, size_t size, long total_iterations,
                       int ready_fd);

/// Pingpong client: `warmup` untimed round trips, then `iterations` timed ones; the duration
/// of round trip i (from just before the send to the complete reply) goes to samples[i],
/// in ns. `samples` has room for `iterations` values (may be NULL if iterations == 0).
int cb_pingpong_client(const char *path, const char *client_path, int type, size_t size,
                       long warmup, long iterations, uint64_t *samples);

// ---------------------------------------------------------------------------------------
// 2. One-way throughput
//
// Wire protocol:
//   SOCK_STREAM:    client connects and writes `total_bytes` bytes in writes of `size`
//                   bytes (the last one shorter if size does not divide total_bytes), each
//                   write looped until complete. The server reads into a buffer of
//                   max(size, CB_STREAM_READ_BUFFER) bytes, never asking for more than what
//                   is still missing, until it has read `total_bytes` bytes; then it writes
//                   a 1-byte ack. The client reads the 1-byte ack.
//   SOCK_SEQPACKET: client connects and sends total_bytes / size messages of exactly `size`
//                   bytes (total_bytes must be a multiple of size). The server receives
//                   that many messages (each must be exactly `size` bytes), then sends a
//                   1-byte ack message; the client receives it.
//   SOCK_DGRAM:     as SOCK_SEQPACKET, with the client bound to client_path and connected
//                   to path; the server sends the 1-byte ack datagram with sendto() to the
//                   sender's address (the C server takes it from the first datagram).
// total_bytes >= 1, size >= 1.
// `sockbuf` > 0: both sides set SO_SNDBUF and SO_RCVBUF to `sockbuf` (the kernel doubles
// it and caps it at net.core.wmem_max / rmem_max): the client on its socket before connect,
// the server on the accepted socket (stream/seqpacket) or on its bound socket (dgram).
// 0 leaves the defaults. Needed for messages bigger than about 200 KiB.

/// Throughput server: receives as above, acks, closes and unlinks `path`.
int cb_throughput_server(const char *path, int type, size_t size, uint64_t total_bytes,
                         int sockbuf, int ready_fd);

/// Throughput client: *elapsed_ns = time from just before the first send to the receipt
/// of the ack.
int cb_throughput_client(const char *path, const char *client_path, int type, size_t size,
                         uint64_t total_bytes, int sockbuf, uint64_t *elapsed_ns);

// ---------------------------------------------------------------------------------------
// 3. Descriptor passing rate
//
// Wire protocol (all three types; dgram client bound to client_path and connected):
//   The client opens one descriptor (open("/dev/null", O_RDONLY | O_CLOEXEC)) before
//   timing and sends `iterations` messages, each a sendmsg() of exactly 1 payload byte
//   with one SCM_RIGHTS control message carrying that one descriptor. The server
//   recvmsg()s each with MSG_CMSG_CLOEXEC and a 1-byte buffer (exactly 1 byte, exactly one
//   descriptor, no MSG_CTRUNC, else -EPROTO) and closes the received descriptor. After
//   `iterations` messages the server sends a 1-byte ack (dgram: sendto() the sender's
//   address, taken from the first message) and the client receives it.
// iterations >= 1.
// Note: with stream/seqpacket the client can run ahead of the server by a socket buffer's
// worth of messages (a few hundred with the default buffers). Without CAP_SYS_RESOURCE a
// user may have at most the sender's RLIMIT_NOFILE soft limit of descriptors in flight,
// else sendmsg fails with ETOOMANYREFS (seen with `ulimit -n 256`; 1024 is enough). The
// bench should raise the soft limit to the hard limit first.

/// Descriptor-passing server: receives and closes `iterations` descriptors, acks, closes
/// and unlinks `path`.
int cb_fdpass_server(const char *path, int type, long iterations, int ready_fd);

/// Descriptor-passing client: *elapsed_ns = from just before the first sendmsg to the
/// receipt of the ack.
int cb_fdpass_client(const char *path, const char *client_path, int type, long iterations,
                     uint64_t *elapsed_ns);

// ---------------------------------------------------------------------------------------
// 4. Accept rate (SOCK_STREAM and SOCK_SEQPACKET only; SOCK_DGRAM gives -EINVAL)
//
// Wire protocol:
//   The client does `iterations` times: socket(type | SOCK_CLOEXEC), connect(path),
//   close() (sending nothing). Then it makes one more connection and reads a 1-byte ack
//   on it (stream: read 1 byte; seqpacket: receive one 1-byte message).
//   The server accept4(SOCK_CLOEXEC)s `iterations` + 1 connections, in order. It closes
//   each of the first `iterations` at once; on the last one it writes the 1-byte ack
//   (seqpacket: one 1-byte message) and then closes it. The listen queue is FIFO and the
//   client connects sequentially, so the last accepted connection is the ack connection.
// iterations >= 0.

/// Accept server: accepts `iterations` + 1 connections as above, closes and unlinks `path`.
int cb_accept_server(const char *path, int type, long iterations, int ready_fd);

/// Accept client: *elapsed_ns = from just before the first socket() to the receipt of
/// the ack (so it includes the extra ack connection).
int cb_accept_client(const char *path, int type, long iterations, uint64_t *elapsed_ns);

// ---------------------------------------------------------------------------------------
// CPU placement (Linux; elsewhere cb_pin_to_cpu returns -ENOSYS and cb_cpu_count /
// cb_allowed_cpu describe the online CPUs 0..n-1).

/// Number of CPUs in the calling thread's affinity mask (the CPUs it may run on), >= 1,
/// or -errno.
int cb_cpu_count(void);

/// The CPU number of the index-th (0-based, ascending) CPU in the calling thread's
/// affinity mask, or -EINVAL if index is out of range (or -errno). Use it to turn
/// 0..cb_cpu_count()-1 into numbers for cb_pin_to_cpu (CPU numbers need not be dense,
/// e.g. in a container restricted to CPUs 4-7). Call it before pinning.
int cb_allowed_cpu(int index);

/// Pins the calling thread to CPU number `cpu` (sched_setaffinity(0, ...)). Threads and
/// processes created afterwards inherit the mask. -EINVAL if the CPU is not available.
int cb_pin_to_cpu(int cpu);

/// Pins every thread of the process (those that exist now, through /proc/self/task; threads created later
/// inherit their creator's mask) to `cpu`. For a process whose threads (an async runtime's pool) may
/// already run when it pins. 0 or -errno.
int cb_pin_process_to_cpu(int cpu);

#ifdef __cplusplus
}
#endif

#endif // C_BASELINE_H
