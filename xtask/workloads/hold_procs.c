// hold_procs N TAG: starts N long-lived processes (`sleep 3600` named TAG-i in
// argv[0]: each with its own command line, as on a busy host), prints "held N" once all run, then waits for
// its stdin to close and kills them. For the bench's capacity figures (agent memory
// with N processes in its table).
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10000;
    const char *tag = argc > 2 ? argv[2] : "hold";
    pid_t *pids = calloc(n, sizeof *pids);
    if (!pids) {
        perror("calloc");
        return 1;
    }
    long started = 0;
    for (long i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            break;
        }
        if (pid == 0) {
            char arg[128];
            snprintf(arg, sizeof arg, "%s-%ld", tag, i);
            execl("/bin/sleep", arg, "3600", (char *)NULL);
            _exit(127);
        }
        pids[started++] = pid;
    }
    printf("held %ld\n", started);
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    for (long i = 0; i < started; i++) {
        kill(pids[i], SIGKILL);
    }
    for (long i = 0; i < started; i++) {
        waitpid(pids[i], NULL, 0);
    }
    return started == n ? 0 : 1;
}
