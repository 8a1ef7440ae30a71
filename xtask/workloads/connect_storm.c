// connect_storm N: a loopback TCP server thread accepts and closes; the client does
// socket+connect+close N times (SO_LINGER 0: reset on close, no TIME_WAIT pile-up).
// Prints the time per connect. Both threads run on one CPU (pin.h). From the
// performance reference, Appendix A.
#include "pin.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int ls;
static long n;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *srv(void *a) {
    (void)a;
    for (long i = 0; i < n; i++) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) {
            perror("accept");
            exit(1);
        }
        close(c);
    }
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 20000;
    ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4096)) {
        perror("bind/listen");
        return 1;
    }
    socklen_t l = sizeof a;
    getsockname(ls, (void *)&a, &l);
    pthread_t th;
    if (pin_to_last_cpu()) return 1;
    pthread_create(&th, NULL, srv, NULL);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct linger lg = {1, 0};
        setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        if (connect(s, (void *)&a, sizeof a)) {
            perror("connect");
            return 1;
        }
        close(s);
    }
    pthread_join(th, NULL);
    double t = now() - t0;
    printf("connect_storm n=%ld total_s=%.4f ns_per_op=%.0f\n", n, t, t / n * 1e9);
    return 0;
}
