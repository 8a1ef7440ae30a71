// udp_storm N [SIZE]: sendto() N datagrams of SIZE bytes (default 64) to a loopback
// UDP socket of its own that never reads (the kernel drops what does not fit; every
// sendto still succeeds). Prints the time per datagram.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
    int rx = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(rx, (void *)&a, sizeof a)) {
        perror("bind");
        return 1;
    }
    socklen_t l = sizeof a;
    getsockname(rx, (void *)&a, &l);
    int tx = socket(AF_INET, SOCK_DGRAM, 0);
    char *buf = calloc(1, size ? size : 1);
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (sendto(tx, buf, size, 0, (void *)&a, sizeof a) < 0) {
            perror("sendto");
            return 1;
        }
    }
    double t = now() - t0;
    printf("udp_storm n=%ld total_s=%.4f ns_per_op=%.0f\n", n, t, t / n * 1e9);
    return 0;
}
