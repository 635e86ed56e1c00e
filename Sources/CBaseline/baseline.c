// CBaseline: plain, blocking C implementation of the `uds bench` scenarios.
// The wire protocol of every scenario is documented in include/CBaseline.h.
#define _GNU_SOURCE
#include "CBaseline.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifdef MSG_NOSIGNAL
#define CB_MSG_NOSIGNAL MSG_NOSIGNAL
#else
#define CB_MSG_NOSIGNAL 0 // SO_NOSIGPIPE is set on every socket instead (Darwin).
#endif

#ifdef MSG_CMSG_CLOEXEC
#define CB_MSG_CMSG_CLOEXEC MSG_CMSG_CLOEXEC
#else
#define CB_MSG_CMSG_CLOEXEC 0 // Received descriptors are closed right away anyway.
#endif

static const unsigned char ack_byte = 0x06;

// ---------------------------------------------------------------------------------------
// Small helpers. All return 0 or -errno.

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int neg_errno(void) {
    return errno > 0 ? -errno : -EIO;
}

static int valid_type(int type) {
    return type == SOCK_STREAM || type == SOCK_SEQPACKET || type == SOCK_DGRAM;
}

static int make_addr(const char *path, struct sockaddr_un *addr, socklen_t *len) {
    if (path == NULL || path[0] == '\0') return -EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof(addr->sun_path)) return -ENAMETOOLONG;
    memset(addr, 0, sizeof(*addr));
    addr->sun_family = AF_UNIX;
    memcpy(addr->sun_path, path, n + 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/* What a new descriptor needs where its creation flags could not say it: CLOEXEC without SOCK_CLOEXEC,
   SO_NOSIGPIPE without MSG_NOSIGNAL. Closes fd on failure. */
static int finish_fd(int fd, int *out) {
#ifndef SOCK_CLOEXEC
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int rc = neg_errno();
        close(fd);
        return rc;
    }
#endif
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one)) < 0) {
        int rc = neg_errno();
        close(fd);
        return rc;
    }
#endif
    *out = fd;
    return 0;
}

static int open_socket(int type, int *out) {
#ifdef SOCK_CLOEXEC
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
#else
    int fd = socket(AF_UNIX, type, 0);
#endif
    if (fd < 0) return neg_errno();
    return finish_fd(fd, out);
}

static int set_bufs(int fd, int bytes) {
    if (bytes <= 0) return 0;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes)) < 0) return neg_errno();
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes)) < 0) return neg_errno();
    return 0;
}

static int accept_conn(int lfd, int *out) {
    for (;;) {
#ifdef SOCK_CLOEXEC
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
#else
        int fd = accept(lfd, NULL, NULL);
#endif
        if (fd >= 0) return finish_fd(fd, out);
        if (errno != EINTR) return neg_errno();
    }
}

static int connect_addr(int fd, const struct sockaddr_un *addr, socklen_t len) {
    int interrupted = 0;
    for (;;) {
        if (connect(fd, (const struct sockaddr *)addr, len) == 0) return 0;
        if (errno == EINTR) {
            interrupted = 1;
            continue;
        }
        // A retried connect may find the first attempt completed after all.
        if (interrupted && errno == EISCONN) return 0;
        return neg_errno();
    }
}

static int signal_ready(int ready_fd) {
    if (ready_fd < 0) return 0;
    const char byte = 'R';
    for (;;) {
        ssize_t r = write(ready_fd, &byte, 1);
        if (r == 1) return 0;
        if (r < 0 && errno == EINTR) continue;
        return r < 0 ? neg_errno() : -EIO;
    }
}

/// Stream: read exactly len bytes.
static int recv_all(int fd, void *buf, size_t len) {
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t r = recv(fd, p, len, 0);
        if (r > 0) {
            p += r;
            len -= (size_t)r;
        } else if (r == 0) {
            return -ECONNRESET;
        } else if (errno != EINTR) {
            return neg_errno();
        }
    }
    return 0;
}

/// Stream: write exactly len bytes.
static int send_all(int fd, const void *buf, size_t len) {
    const unsigned char *p = buf;
    while (len > 0) {
        ssize_t r = send(fd, p, len, CB_MSG_NOSIGNAL);
        if (r >= 0) {
            p += r;
            len -= (size_t)r;
        } else if (errno != EINTR) {
            return neg_errno();
        }
    }
    return 0;
}

/// Seqpacket/dgram: send one message of len bytes (to `to` if not NULL).
static int send_msg(int fd, const void *buf, size_t len, const struct sockaddr_un *to,
                    socklen_t tolen) {
    for (;;) {
        ssize_t r = sendto(fd, buf, len, CB_MSG_NOSIGNAL, (const struct sockaddr *)to,
                           to ? tolen : 0);
        if (r >= 0) return (size_t)r == len ? 0 : -EPROTO;
        if (errno != EINTR) return neg_errno();
    }
}

/// Seqpacket/dgram: receive one message into buf (capacity cap > expect), which must be
/// exactly `expect` bytes. If `from` is not NULL, the sender's address is stored there and
/// must be a bound (named) address.
static int recv_msg(int fd, void *buf, size_t cap, size_t expect, struct sockaddr_un *from,
                    socklen_t *fromlen) {
    for (;;) {
        if (from) *fromlen = sizeof(*from);
        ssize_t r = recvfrom(fd, buf, cap, 0, (struct sockaddr *)from, from ? fromlen : NULL);
        if (r < 0) {
            if (errno == EINTR) continue;
            return neg_errno();
        }
        if ((size_t)r != expect) return r == 0 ? -ECONNRESET : -EPROTO;
        if (from && *fromlen <= (socklen_t)offsetof(struct sockaddr_un, sun_path))
            return -EDESTADDRREQ;
        return 0;
    }
}

/// The 1-byte ack: stream write, seqpacket message, dgram datagram to `to`.
static int send_ack(int fd, int type, const struct sockaddr_un *to, socklen_t tolen) {
    if (type == SOCK_STREAM) return send_all(fd, &ack_byte, 1);
    return send_msg(fd, &ack_byte, 1, type == SOCK_DGRAM ? to : NULL, tolen);
}

static int recv_ack(int fd, int type) {
    unsigned char buf[2];
    if (type == SOCK_STREAM) return recv_all(fd, buf, 1);
    return recv_msg(fd, buf, sizeof(buf), 1, NULL, NULL);
}

/* After a timed run (rc 0 so far): waits for the server's ack, then reports the time since t0. */
static int ack_and_time(int fd, int type, int rc, uint64_t t0, uint64_t *elapsed_ns) {
    if (rc == 0) rc = recv_ack(fd, type);
    uint64_t t1 = now_ns();
    if (rc == 0) *elapsed_ns = t1 - t0;
    return rc;
}

static size_t max_size(size_t a, size_t b) {
    return a > b ? a : b;
}

// ---------------------------------------------------------------------------------------
// Server and client setup.

struct server {
    const char *path;
    int lfd;    // listening socket (stream/seqpacket), -1 once closed
    int fd;     // accepted connection, or the bound socket for dgram
    int bound;  // path was created by bind and must be unlinked
};

/// socket, [sockbuf for dgram], bind, [listen], signal readiness.
static int server_start(struct server *s, const char *path, int type, int sockbuf,
                        int ready_fd) {
    s->path = path;
    s->lfd = -1;
    s->fd = -1;
    s->bound = 0;
    struct sockaddr_un addr;
    socklen_t len;
    int rc = make_addr(path, &addr, &len);
    if (rc) return rc;
    int fd;
    rc = open_socket(type, &fd);
    if (rc) return rc;
    if (type == SOCK_DGRAM) {
        s->fd = fd;
        rc = set_bufs(fd, sockbuf);
        if (rc) return rc;
    } else {
        s->lfd = fd;
    }
    if (bind(fd, (const struct sockaddr *)&addr, len) < 0) return neg_errno();
    s->bound = 1;
    if (type != SOCK_DGRAM && listen(fd, CB_LISTEN_BACKLOG) < 0) return neg_errno();
    return signal_ready(ready_fd);
}

/// Accept the one connection (stream/seqpacket), close the listener, [sockbuf].
static int server_accept(struct server *s, int sockbuf) {
    int rc = accept_conn(s->lfd, &s->fd);
    if (rc) return rc;
    close(s->lfd);
    s->lfd = -1;
    return set_bufs(s->fd, sockbuf);
}

/* A server that serves one peer: bound, and for stream/seqpacket with that peer accepted. */
static int server_open(struct server *s, const char *path, int type, int ready_fd) {
    int rc = server_start(s, path, type, 0, ready_fd);
    if (rc == 0 && type != SOCK_DGRAM) rc = server_accept(s, 0);
    return rc;
}

static int server_finish(struct server *s, int rc) {
    if (s->fd >= 0) close(s->fd);
    if (s->lfd >= 0) close(s->lfd);
    if (s->bound && unlink(s->path) < 0 && rc == 0) rc = neg_errno();
    return rc;
}

struct client {
    const char *client_path;
    int fd;
    int bound;  // client_path was created by bind and must be unlinked
};

/// socket, [sockbuf], [bind client_path for dgram], connect.
static int client_connect(struct client *c, const char *path, const char *client_path,
                          int type, int sockbuf) {
    c->client_path = client_path;
    c->fd = -1;
    c->bound = 0;
    struct sockaddr_un addr, caddr;
    socklen_t len, clen = 0;
    int rc = make_addr(path, &addr, &len);
    if (rc) return rc;
    if (type == SOCK_DGRAM) {
        rc = make_addr(client_path, &caddr, &clen);
        if (rc) return rc;
    }
    rc = open_socket(type, &c->fd);
    if (rc) return rc;
    rc = set_bufs(c->fd, sockbuf);
    if (rc) return rc;
    if (type == SOCK_DGRAM) {
        if (bind(c->fd, (const struct sockaddr *)&caddr, clen) < 0) return neg_errno();
        c->bound = 1;
    }
    return connect_addr(c->fd, &addr, len);
}

static int client_finish(struct client *c, int rc) {
    if (c->fd >= 0) close(c->fd);
    if (c->bound && unlink(c->client_path) < 0 && rc == 0) rc = neg_errno();
    return rc;
}

// ---------------------------------------------------------------------------------------
// 1. Pingpong

int cb_socket_type(const char *name) {
    if (name == NULL) return -EINVAL;
    if (strcmp(name, "stream") == 0) return SOCK_STREAM;
    if (strcmp(name, "seqpacket") == 0) return SOCK_SEQPACKET;
    if (strcmp(name, "dgram") == 0) return SOCK_DGRAM;
    return -EINVAL;
}

int cb_pingpong_server(const char *path, int type, size_t size, long total_iterations,
                       int ready_fd) {
    if (!valid_type(type) || size == 0 || size >= (size_t)SSIZE_MAX || total_iterations < 0)
        return -EINVAL;
    unsigned char *buf = malloc(size + 1);
    if (buf == NULL) return -ENOMEM;
    memset(buf, 0, size + 1);

    struct server s;
    int rc = server_open(&s, path, type, ready_fd);
    struct sockaddr_un from;
    socklen_t fromlen = 0;
    for (long i = 0; rc == 0 && i < total_iterations; i++) {
        switch (type) {
        case SOCK_STREAM:
            rc = recv_all(s.fd, buf, size);
            if (rc == 0) rc = send_all(s.fd, buf, size);
            break;
        case SOCK_SEQPACKET:
            rc = recv_msg(s.fd, buf, size + 1, size, NULL, NULL);
            if (rc == 0) rc = send_msg(s.fd, buf, size, NULL, 0);
            break;
        default: // SOCK_DGRAM
            rc = recv_msg(s.fd, buf, size + 1, size, &from, &fromlen);
            if (rc == 0) rc = send_msg(s.fd, buf, size, &from, fromlen);
            break;
        }
    }
    free(buf);
    return server_finish(&s, rc);
}

int cb_pingpong_client(const char *path, const char *client_path, int type, size_t size,
                       long warmup, long iterations, uint64_t *samples) {
    if (!valid_type(type) || size == 0 || size >= (size_t)SSIZE_MAX || warmup < 0 ||
        iterations < 0 || warmup > LONG_MAX - iterations || (iterations > 0 && !samples))
        return -EINVAL;
    unsigned char *buf = malloc(size + 1);
    if (buf == NULL) return -ENOMEM;
    memset(buf, 0x5a, size + 1);

    struct client c;
    int rc = client_connect(&c, path, client_path, type, 0);
    long total = warmup + iterations;
    for (long i = 0; rc == 0 && i < total; i++) {
        uint64_t t0 = now_ns();
        if (type == SOCK_STREAM) {
            rc = send_all(c.fd, buf, size);
            if (rc == 0) rc = recv_all(c.fd, buf, size);
        } else {
            rc = send_msg(c.fd, buf, size, NULL, 0);
            if (rc == 0) rc = recv_msg(c.fd, buf, size + 1, size, NULL, NULL);
        }
        uint64_t t1 = now_ns();
        if (rc == 0 && i >= warmup) samples[i - warmup] = t1 - t0;
    }
    free(buf);
    return client_finish(&c, rc);
}

// ---------------------------------------------------------------------------------------
// 2. Throughput

static int throughput_args(int type, size_t size, uint64_t total_bytes, int sockbuf) {
    if (!valid_type(type) || size == 0 || size >= (size_t)SSIZE_MAX || total_bytes == 0 ||
        sockbuf < 0)
        return -EINVAL;
    if (type != SOCK_STREAM && total_bytes % size != 0) return -EINVAL;
    return 0;
}

int cb_throughput_server(const char *path, int type, size_t size, uint64_t total_bytes,
                         int sockbuf, int ready_fd) {
    int rc = throughput_args(type, size, total_bytes, sockbuf);
    if (rc) return rc;
    size_t cap = type == SOCK_STREAM ? max_size(size, CB_STREAM_READ_BUFFER) : size + 1;
    unsigned char *buf = malloc(cap);
    if (buf == NULL) return -ENOMEM;
    memset(buf, 0, cap);

    struct server s;
    rc = server_start(&s, path, type, sockbuf, ready_fd);
    if (rc == 0 && type != SOCK_DGRAM) rc = server_accept(&s, sockbuf);
    struct sockaddr_un from;
    socklen_t fromlen = 0;
    if (rc == 0 && type == SOCK_STREAM) {
        uint64_t remaining = total_bytes;
        while (remaining > 0) {
            size_t want = remaining < cap ? (size_t)remaining : cap;
            ssize_t r = recv(s.fd, buf, want, 0);
            if (r > 0) {
                remaining -= (uint64_t)r;
            } else if (r == 0) {
                rc = -ECONNRESET;
                break;
            } else if (errno != EINTR) {
                rc = neg_errno();
                break;
            }
        }
    } else if (rc == 0) {
        uint64_t count = total_bytes / size;
        // dgram: the ack goes to the sender of the first datagram.
        if (type == SOCK_DGRAM) rc = recv_msg(s.fd, buf, cap, size, &from, &fromlen);
        else rc = recv_msg(s.fd, buf, cap, size, NULL, NULL);
        for (uint64_t i = 1; rc == 0 && i < count; i++)
            rc = recv_msg(s.fd, buf, cap, size, NULL, NULL);
    }
    if (rc == 0) rc = send_ack(s.fd, type, &from, fromlen);
    free(buf);
    return server_finish(&s, rc);
}

int cb_throughput_client(const char *path, const char *client_path, int type, size_t size,
                         uint64_t total_bytes, int sockbuf, uint64_t *elapsed_ns) {
    int rc = throughput_args(type, size, total_bytes, sockbuf);
    if (rc) return rc;
    if (elapsed_ns == NULL) return -EINVAL;
    unsigned char *buf = malloc(size);
    if (buf == NULL) return -ENOMEM;
    memset(buf, 0x5a, size);

    struct client c;
    rc = client_connect(&c, path, client_path, type, sockbuf);
    if (rc == 0) {
        uint64_t t0 = now_ns();
        if (type == SOCK_STREAM) {
            for (uint64_t remaining = total_bytes; rc == 0 && remaining > 0;) {
                size_t n = remaining < size ? (size_t)remaining : size;
                rc = send_all(c.fd, buf, n);
                remaining -= n;
            }
        } else {
            uint64_t count = total_bytes / size;
            for (uint64_t i = 0; rc == 0 && i < count; i++)
                rc = send_msg(c.fd, buf, size, NULL, 0);
        }
        rc = ack_and_time(c.fd, type, rc, t0, elapsed_ns);
    }
    free(buf);
    return client_finish(&c, rc);
}

// ---------------------------------------------------------------------------------------
// 3. Descriptor passing

/* A one-byte message with room for one descriptor (SCM_RIGHTS), as both sides of the scenario use it. */
struct fd_message {
    unsigned char byte;
    struct iovec iov;
    struct msghdr msg;
    union {
        struct cmsghdr align;
        unsigned char buf[CMSG_SPACE(sizeof(int))];
    } control; // last: CMSG_SPACE is no constant expression in ISO C (clang folds it, and warns unless last)
};

static void fd_message_init(struct fd_message *m, unsigned char byte) {
    memset(m, 0, sizeof(*m));
    m->byte = byte;
    m->iov.iov_base = &m->byte;
    m->iov.iov_len = 1;
    m->msg.msg_iov = &m->iov;
    m->msg.msg_iovlen = 1;
    m->msg.msg_control = m->control.buf;
    m->msg.msg_controllen = sizeof(m->control.buf);
}

int cb_fdpass_server(const char *path, int type, long iterations, int ready_fd) {
    if (!valid_type(type) || iterations < 1) return -EINVAL;
    struct server s;
    int rc = server_open(&s, path, type, ready_fd);

    struct sockaddr_un from;
    socklen_t fromlen = 0;
    for (long i = 0; rc == 0 && i < iterations; i++) {
        struct fd_message m;
        fd_message_init(&m, 0);
        struct msghdr msg = m.msg; // points into m, which outlives it
        if (type == SOCK_DGRAM && i == 0) { // the ack goes to the first sender
            msg.msg_name = &from;
            msg.msg_namelen = sizeof(from);
        }
        ssize_t r;
        do {
            r = recvmsg(s.fd, &msg, CB_MSG_CMSG_CLOEXEC);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            rc = neg_errno();
            break;
        }
        // Close every descriptor that arrived, whatever else is wrong with the message.
        long received = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
            size_t n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t k = 0; k < n; k++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
                close(fd);
            }
            received += (long)n;
        }
        if (r == 0 && received == 0 && type != SOCK_DGRAM) rc = -ECONNRESET;
        else if (r != 1 || received != 1 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
            rc = -EPROTO;
        else if (type == SOCK_DGRAM && i == 0) {
            fromlen = msg.msg_namelen;
            if (fromlen <= (socklen_t)offsetof(struct sockaddr_un, sun_path))
                rc = -EDESTADDRREQ;
        }
    }
    if (rc == 0) rc = send_ack(s.fd, type, &from, fromlen);
    return server_finish(&s, rc);
}

int cb_fdpass_client(const char *path, const char *client_path, int type, long iterations,
                     uint64_t *elapsed_ns) {
    if (!valid_type(type) || iterations < 1 || elapsed_ns == NULL) return -EINVAL;
    int passed = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (passed < 0) return neg_errno();

    struct client c;
    int rc = client_connect(&c, path, client_path, type, 0);
    if (rc == 0) {
        struct fd_message m;
        fd_message_init(&m, 'F');
        struct msghdr msg = m.msg; // points into m, which outlives it
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &passed, sizeof(int));

        uint64_t t0 = now_ns();
        for (long i = 0; rc == 0 && i < iterations; i++) {
            ssize_t r;
            do {
                r = sendmsg(c.fd, &msg, CB_MSG_NOSIGNAL);
            } while (r < 0 && errno == EINTR);
            if (r < 0) rc = neg_errno();
            else if (r != 1) rc = -EPROTO;
        }
        rc = ack_and_time(c.fd, type, rc, t0, elapsed_ns);
    }
    close(passed);
    return client_finish(&c, rc);
}

// ---------------------------------------------------------------------------------------
// 4. Accept rate

int cb_accept_server(const char *path, int type, long iterations, int ready_fd) {
    if ((type != SOCK_STREAM && type != SOCK_SEQPACKET) || iterations < 0 ||
        iterations == LONG_MAX)
        return -EINVAL;
    struct server s;
    int rc = server_start(&s, path, type, 0, ready_fd);
    for (long i = 0; rc == 0 && i <= iterations; i++) {
        int fd;
        rc = accept_conn(s.lfd, &fd);
        if (rc) break;
        if (i == iterations) rc = send_ack(fd, type, NULL, 0);
        close(fd);
    }
    return server_finish(&s, rc);
}

int cb_accept_client(const char *path, int type, long iterations, uint64_t *elapsed_ns) {
    if ((type != SOCK_STREAM && type != SOCK_SEQPACKET) || iterations < 0 ||
        iterations == LONG_MAX || elapsed_ns == NULL)
        return -EINVAL;
    struct sockaddr_un addr;
    socklen_t len;
    int rc = make_addr(path, &addr, &len);
    if (rc) return rc;

    uint64_t t0 = now_ns();
    for (long i = 0; rc == 0 && i <= iterations; i++) {
        int fd;
        rc = open_socket(type, &fd);
        if (rc) break;
        rc = connect_addr(fd, &addr, len);
        if (rc == 0 && i == iterations) rc = recv_ack(fd, type);
        close(fd);
    }
    uint64_t t1 = now_ns();
    if (rc == 0) *elapsed_ns = t1 - t0;
    return rc;
}
