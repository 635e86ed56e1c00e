// many-connections client: opens N stream connections to PATH, checks that each is served (one byte, or one
// 5-byte frame with `framed`, echoed back), then keeps them all open and idle until its stdin closes.
// Prints "served S of N" once every connection has been checked. Exit 0 if all were served.
//
//     client PATH N [framed]
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int read_all(int fd, char *buffer, int length) {
    int got = 0;
    while (got < length) {
        ssize_t n = read(fd, buffer + got, (size_t)(length - got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return got;
        got += (int)n;
    }
    return got;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: client PATH N [framed]\n");
        return 64;
    }
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
    int count = atoi(argv[2]);
    int framed = argc > 3 && strcmp(argv[3], "framed") == 0;
    int *fds = calloc((size_t)count, sizeof(int));
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (!fds || strlen(argv[1]) >= sizeof address.sun_path) return 64;
    strcpy(address.sun_path, argv[1]);
    const char frame[5] = {0, 0, 0, 1, 'x'};
    const char *message = framed ? frame : frame + 4;
    int length = framed ? 5 : 1, served = 0;
    for (int i = 0; i < count; i++) {
        fds[i] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0) {
            perror("socket");
            return 1;
        }
        // The backlog can be full while the server catches up: retry for up to about 10 s.
        for (int attempt = 0; connect(fds[i], (struct sockaddr *)&address, sizeof address) != 0; attempt++) {
            if ((errno != EAGAIN && errno != ECONNREFUSED && errno != EINTR) || attempt > 10000) {
                fprintf(stderr, "connect %d: %s\n", i, strerror(errno));
                return 1;
            }
            usleep(1000);
        }
        if (write(fds[i], message, (size_t)length) != length) {
            perror("write");
            return 1;
        }
        // Check the echoes in batches of 100, so the server always has work queued.
        if (i % 100 == 99 || i == count - 1) {
            for (int j = i - (i % 100); j <= i; j++) {
                char reply[5];
                if (read_all(fds[j], reply, length) == length && reply[length - 1] == 'x') served++;
            }
        }
    }
    printf("served %d of %d\n", served, count);
    fflush(stdout);
    char byte;
    while (read(0, &byte, 1) > 0) {}
    return served == count ? 0 : 2;
}
