// pin_to_last_cpu(): storms whose two ends talk to each other (pipe, connect, HTTP) run
// both ends on one CPU. Spread over two CPUs, the wake-up ping-pong between the ends
// made the time per operation of identical unmonitored runs vary up to sevenfold,
// which buried any monitor's cost. The monitor keeps the other CPU.
#ifndef PIN_H
#define PIN_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdio.h>
#include <unistd.h>

static int pin_to_last_cpu(void) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sysconf(_SC_NPROCESSORS_ONLN) - 1, &one);
    if (sched_setaffinity(0, sizeof one, &one)) { perror("sched_setaffinity"); return -1; }
    return 0;
}
#endif
