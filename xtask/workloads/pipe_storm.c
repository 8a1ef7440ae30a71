// pipe_storm N [SZ]: a child writes N x SZ bytes (default 64) into a pipe, the
// parent reads SZ at a time; prints the time per write.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 500000;
    int sz = argc > 2 ? atoi(argv[2]) : 64;
    static char buf[65536];
    memset(buf, 'x', sizeof buf);
    int p[2];
    if (pipe(p)) { perror("pipe"); return 1; }
    double t0 = now();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        for (long i = 0; i < n; i++)
            if (write(p[1], buf, sz) != sz) { perror("write"); _exit(1); }
        _exit(0);
    }
    close(p[1]);
    long total = 0;
    ssize_t r;
    while ((r = read(p[0], buf, sz)) > 0) total += r;
    int st;
    waitpid(pid, &st, 0);
    double t = now() - t0;
    if (total != n * (long)sz) { fprintf(stderr, "short read %ld\n", total); return 1; }
    printf("pipe_storm n=%ld sz=%d total_s=%.4f ns_per_op=%.1f\n", n, sz, t, t / n * 1e9);
    return 0;
}
