// open_storm N PATH: N × open(PATH, O_RDONLY) + close in one process; prints the time
// per open. With STORM_WAIT set it reads one line from stdin before the timed loop: the
// bench releases it once the monitor has classified the process (the candidate storm is
// this program under a name mcpwatch's launch heuristics match, so its opens are those
// of a process in an MCP server's tree).
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
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
    long n = argc > 1 ? atol(argv[1]) : 200000;
    const char *path = argc > 2 ? argv[2] : "/etc/hostname";
    if (wait_go()) { fprintf(stderr, "no go line on stdin\n"); return 1; }
    double t0 = now();
    for (long i = 0; i < n; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) { perror("open"); return 1; }
        close(fd);
    }
    double t = now() - t0;
    printf("open_storm n=%ld total_s=%.4f ns_per_op=%.1f\n", n, t, t / n * 1e9);
    return 0;
}
