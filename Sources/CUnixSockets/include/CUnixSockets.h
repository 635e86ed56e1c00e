// C shim for UnixSockets, imported by the syscall layer alone: what Swift cannot reach directly, and the
// libc headers that layer calls (so its files import this module, not Glibc or Musl).
// CMSG_* macros as functions, `struct ucred` and the calls and constants glibc hides behind
// _GNU_SOURCE. Nothing here keeps state; every function is a thin pass-through.
#ifndef C_UNIX_SOCKETS_H
#define C_UNIX_SOCKETS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <fcntl.h>
// The rest of libc the syscall layer calls: it imports this module, not Glibc or Musl (one spelling on both).
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>
#include <sys/wait.h>

#ifdef __linux__
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#endif

/// Mirror of Linux `struct ucred` (hidden behind _GNU_SOURCE); checked by _Static_assert in shim.c.
typedef struct uds_ucred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} uds_ucred;

// Constants that need _GNU_SOURCE or are Linux-only (values fixed by the kernel ABI; asserted in shim.c).
extern const int UDS_SO_PEERCRED;
extern const int UDS_SO_PASSCRED;
extern const int UDS_SO_PEERGROUPS;
extern const int UDS_SO_PEERPIDFD;
extern const int UDS_SCM_RIGHTS;
extern const int UDS_SCM_CREDENTIALS;
extern const int UDS_MSG_CMSG_CLOEXEC;
extern const int UDS_MSG_NOSIGNAL;
extern const int UDS_SOCK_CLOEXEC;
extern const int UDS_SOCK_NONBLOCK;
extern const int UDS_CLONE_FS;
extern const int UDS_SPLICE_F_MOVE;
extern const int UDS_F_DUPFD_CLOEXEC;
extern const int UDS_O_PATH;

// CMSG_* as functions.
struct cmsghdr *uds_cmsg_firsthdr(const struct msghdr *msg);
struct cmsghdr *uds_cmsg_nxthdr(const struct msghdr *msg, const struct cmsghdr *cmsg);
unsigned char *uds_cmsg_data(const struct cmsghdr *cmsg);
size_t uds_cmsg_len(size_t length);
size_t uds_cmsg_space(size_t length);

// Calls glibc declares only under _GNU_SOURCE. Thin pass-throughs; errno is left as the call set it.
int uds_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int uds_unshare(int flags);
int uds_pipe2(int fds[2], int flags);
ssize_t uds_splice(int fd_in, int fd_out, size_t len, unsigned int flags);

/// fork + execve for `uds activate`, written in C because nothing but async-signal-safe calls may run
/// between fork and exec in a multithreaded process. The child: every signal back to its default
/// disposition and an empty signal mask; descriptors `fds[i]` moved to 3 + i (CLOEXEC cleared there, every
/// other descriptor as it was); the decimal pid of the child written at `pid_slot` (a buffer of at least 21
/// bytes inside one of `envp`'s strings: `LISTEN_PID=` is the child's own pid); then execve(path, argv, envp).
/// Returns the child's pid. On failure returns -1 with errno set: `*exec_failed` is 0 when fork or pipe2
/// failed (nothing started), 1 when execve failed in the child (which has been reaped).
pid_t uds_spawn(const char *path, char *const argv[], char *const envp[], char *pid_slot, const int *fds, int nfds,
                int *exec_failed);

/// The process environment (`environ`, declared by unistd.h only under _GNU_SOURCE).
char **uds_environ(void);

/// errno of the calling thread (read in exactly one Swift helper).
int uds_errno(void);

#endif
