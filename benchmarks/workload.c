/* A syscall-heavy workload for the benchmarks: write(2) of 1 byte to /dev/null,
 * N times as fast as it can (or, with a rate, paced to it). Prints
 * "<pid> <calls> <seconds>" when done. Waits for a line on stdin before it
 * starts, so the benchmark can set filters for its pid first.
 *   workload N [rate_per_sec]
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    double rate = argc > 2 ? atof(argv[2]) : 0;
    int fd = open("/dev/null", O_WRONLY);
    char line[16];
    if (fd < 0 || !fgets(line, sizeof line, stdin)) return 1;
    double start = now();
    for (long i = 0; i < n; i++) {
        if (write(fd, "x", 1) != 1) return 2;
        if (rate > 0) {
            double due = start + (i + 1) / rate;
            while (now() < due) {}
        }
    }
    printf("%d %ld %.6f\n", getpid(), n, now() - start);
    return 0;
}
