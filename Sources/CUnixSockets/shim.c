#define _GNU_SOURCE
#include "CUnixSockets.h"
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

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

int uds_errno(void) { return errno; }
