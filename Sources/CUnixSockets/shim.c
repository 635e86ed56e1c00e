#define _GNU_SOURCE
#include "CUnixSockets.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/syscall.h>

_Static_assert(sizeof(struct ucred) == sizeof(uds_ucred), "uds_ucred mirrors struct ucred");
_Static_assert(offsetof(struct ucred, uid) == offsetof(uds_ucred, uid), "uds_ucred.uid");
_Static_assert(offsetof(struct ucred, gid) == offsetof(uds_ucred, gid), "uds_ucred.gid");

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif
#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

const int UDS_SO_PEERCRED = SO_PEERCRED;
const int UDS_SO_PASSCRED = SO_PASSCRED;
const int UDS_SO_PEERGROUPS = SO_PEERGROUPS;
const int UDS_SO_PEERPIDFD = SO_PEERPIDFD;
const int UDS_SCM_RIGHTS = SCM_RIGHTS;
const int UDS_SCM_CREDENTIALS = SCM_CREDENTIALS;
const int UDS_MSG_CMSG_CLOEXEC = MSG_CMSG_CLOEXEC;
const int UDS_MSG_NOSIGNAL = MSG_NOSIGNAL;
const int UDS_SOCK_CLOEXEC = SOCK_CLOEXEC;
const int UDS_SOCK_NONBLOCK = SOCK_NONBLOCK;
const int UDS_CLONE_FS = CLONE_FS;
const int UDS_SPLICE_F_MOVE = SPLICE_F_MOVE;
const int UDS_F_DUPFD_CLOEXEC = F_DUPFD_CLOEXEC;
const int UDS_O_PATH = O_PATH;

struct cmsghdr *uds_cmsg_firsthdr(const struct msghdr *msg) { return CMSG_FIRSTHDR(msg); }
struct cmsghdr *uds_cmsg_nxthdr(const struct msghdr *msg, const struct cmsghdr *cmsg) {
    return CMSG_NXTHDR((struct msghdr *)msg, (struct cmsghdr *)cmsg);
}
unsigned char *uds_cmsg_data(const struct cmsghdr *cmsg) { return (unsigned char *)CMSG_DATA(cmsg); }
size_t uds_cmsg_len(size_t length) { return CMSG_LEN(length); }
size_t uds_cmsg_space(size_t length) { return CMSG_SPACE(length); }

int uds_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) { return accept4(fd, addr, len, flags); }
int uds_unshare(int flags) { return unshare(flags); }
int uds_pipe2(int fds[2], int flags) { return pipe2(fds, flags); }
ssize_t uds_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}

// The child's side of uds_spawn: async-signal-safe calls only. Reports errno on `report` and exits 127.
static void uds_spawn_child(const char *path, char *const argv[], char *const envp[], char *pid_slot, const int *fds,
                            int nfds, int report) {
    int error = 0;
    // The report pipe and every source descriptor go above the target range first, so that moving one
    // descriptor to 3 + i never overwrites another one still to be moved.
    int floor = 3 + nfds;
    if (report < floor) {
        int moved = fcntl(report, F_DUPFD_CLOEXEC, floor);
        if (moved < 0) _exit(127);
        report = moved;
    }
    int high[nfds > 0 ? nfds : 1];
    for (int i = 0; i < nfds; i++) {
        high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, floor);
        if (high[i] < 0) { error = errno; goto fail; }
    }
    for (int i = 0; i < nfds; i++) {
        if (dup2(high[i], 3 + i) < 0) { error = errno; goto fail; }  // dup2 leaves the copy without CLOEXEC
        close(high[i]);
    }
    // Default dispositions (an ignored signal would stay ignored across exec) and an empty mask. The raw
    // rt_sigaction, because glibc's sigaction refuses the two real-time signals it keeps for itself (32 and
    // 33), and one of them arrives here ignored. The kernel's struct: handler, flags, restorer, mask.
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } fallback = {(void *)SIG_DFL, 0, NULL, 0};
    for (int signal = 1; signal <= 64; signal++) {
        if (signal != SIGKILL && signal != SIGSTOP) (void)syscall(SYS_rt_sigaction, signal, &fallback, NULL, 8);
    }
    if (pid_slot) {
        char digits[24];
        int count = 0;
        for (pid_t pid = getpid(); pid > 0 && count < 23; pid /= 10) digits[count++] = (char)('0' + pid % 10);
        for (int i = 0; i < count; i++) pid_slot[i] = digits[count - 1 - i];
        pid_slot[count] = 0;
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
    execve(path, argv, envp);
    error = errno;
fail:
    while (write(report, &error, sizeof error) < 0 && errno == EINTR) {}
    _exit(127);
}

pid_t uds_spawn(const char *path, char *const argv[], char *const envp[], char *pid_slot, const int *fds, int nfds,
                int *exec_failed) {
    *exec_failed = 0;
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0) return -1;
    // Every signal blocked across fork: no handler of this process may run in the child before the child
    // has put the default dispositions back.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        uds_spawn_child(path, argv, envp, pid_slot, fds, nfds, report[1]);
    }
    int forkError = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(report[1]);
    if (pid < 0) {
        close(report[0]);
        errno = forkError;
        return -1;
    }
    // execve succeeded when the pipe closes with nothing in it (CLOEXEC); else it holds the child's errno.
    int childError = 0;
    ssize_t got;
    do {
        got = read(report[0], &childError, sizeof childError);
    } while (got < 0 && errno == EINTR);
    close(report[0]);
    if (got == (ssize_t)sizeof childError) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
        *exec_failed = 1;
        errno = childError;
        return -1;
    }
    return pid;
}

char **uds_environ(void) { return environ; }

int uds_errno(void) { return errno; }
