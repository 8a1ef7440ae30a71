// http_storm N: N HTTP/1.1 requests over one loopback keep-alive connection to a
// server thread in the same (non-MCP) process, both on one CPU (pin.h); prints the
// time per request.
#include "pin.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int ls;
static long n;
static const char REQ[] = "GET /items?id=42 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n";
static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"id\":42}\r\n";

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int read_full(int fd, char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r <= 0) return -1;
        got += r;
    }
    return 0;
}

static void *server(void *arg) {
    (void)arg;
    int c = accept(ls, NULL, NULL);
    char buf[256];
    for (long i = 0; i < n; i++) {
        if (read_full(c, buf, sizeof REQ - 1)) { perror("server read"); exit(1); }
        if (write(c, RESP, sizeof RESP - 1) != sizeof RESP - 1) { perror("server write"); exit(1); }
    }
    close(c);
    return NULL;
}

int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 50000;
    ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1)) { perror("bind/listen"); return 1; }
    socklen_t l = sizeof a;
    getsockname(ls, (void *)&a, &l);
    pthread_t th;
    if (pin_to_last_cpu()) return 1;
    pthread_create(&th, NULL, server, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); return 1; }
    char buf[256];
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (write(s, REQ, sizeof REQ - 1) != sizeof REQ - 1) { perror("write"); return 1; }
        if (read_full(s, buf, sizeof RESP - 1)) { perror("read"); return 1; }
    }
    double t = now() - t0;
    pthread_join(th, NULL);
    printf("http_storm n=%ld total_s=%.4f ns_per_op=%.0f\n", n, t, t / n * 1e9);
    return 0;
}
