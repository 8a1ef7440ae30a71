// exec_storm N [PATH [ARG]]: posix_spawn PATH (default /bin/true) N times, waiting for
// each; prints the time per spawn. ARG lets the bench find these execs among the host's.
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 2000;
    const char *path = argc > 2 ? argv[2] : "/bin/true";
    char *av[] = {(char *)path, argc > 3 ? argv[3] : NULL, NULL};
    double t0 = now();
    for (long i = 0; i < n; i++) {
        pid_t pid;
        if (posix_spawn(&pid, path, NULL, NULL, av, environ)) {
            perror("posix_spawn");
            return 1;
        }
        int status;
        if (waitpid(pid, &status, 0) < 0) {
            perror("waitpid");
            return 1;
        }
    }
    double t = now() - t0;
    printf("exec_storm n=%ld total_s=%.4f ns_per_op=%.0f\n", n, t, t / n * 1e9);
    return 0;
}
