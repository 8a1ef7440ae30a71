// pipe_storm N [SZ [DATA]]: this process writes N x SZ bytes (default 64) into a pipe, a
// child reads SZ at a time; prints the time per write. DATA is `x` (default: bytes no
// payload filter keeps) or `jsonrpc` (every write a JSON-RPC notification line, what an
// MCP server's stdout carries). The writer is the exec'd process itself, so that under
// a name mcpwatch's launch heuristics match it is the captured candidate. With
// STORM_WAIT set it reads one line from stdin before the timed loop (see write_storm.c).
// Both ends run on one CPU (pin.h).
#include "pin.h"
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

static int wait_go(void) {
    char b[16];
    return getenv("STORM_WAIT") && read(0, b, sizeof b) <= 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 500000;
    int sz = argc > 2 ? atoi(argv[2]) : 64;
    int json = argc > 3 && strcmp(argv[3], "jsonrpc") == 0;
    static char buf[65536];
    if (sz < 2 || sz > (int)sizeof buf) { fprintf(stderr, "bad size %d\n", sz); return 1; }
    memset(buf, 'x', sizeof buf);
    if (json) {
        static const char line[] = "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}";
        memset(buf, ' ', sz);
        memcpy(buf, line, (size_t)sz - 1 < sizeof line - 1 ? (size_t)sz - 1 : sizeof line - 1);
        buf[sz - 1] = '\n';
    }
    if (pin_to_last_cpu()) return 1;
    int p[2];
    if (pipe(p)) { perror("pipe"); return 1; }
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 1; }
    if (pid == 0) {
        static char in[65536];
        close(p[1]);
        long total = 0;
        ssize_t r;
        while ((r = read(p[0], in, sz)) > 0) total += r;
        _exit(total == n * (long)sz ? 0 : 2);
    }
    close(p[0]);
    if (wait_go()) { fprintf(stderr, "no go line on stdin\n"); return 1; }
    double t0 = now();
    for (long i = 0; i < n; i++)
        if (write(p[1], buf, sz) != sz) { perror("write"); return 1; }
    close(p[1]);
    int st;
    waitpid(pid, &st, 0);
    double t = now() - t0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) { fprintf(stderr, "reader saw a short stream\n"); return 1; }
    printf("pipe_storm n=%ld sz=%d total_s=%.4f ns_per_op=%.1f\n", n, sz, t, t / n * 1e9);
    return 0;
}
