/* The soak benchmark's workload: at a steady rate, each tick forks and execs
 * CHILD (fork, exec, exit), opens, writes, reads and closes a file, makes a
 * TCP connection to its own listener and closes it with a reset (both sockets
 * close in this process), and sends a UDP datagram. It stops itself (SIGSTOP)
 * before the first tick, so the benchmark can set its filter, and does no
 * other I/O: everything it makes the kernel report is accounted for.
 * Exits 0 once all SECONDS * RATE ticks are done.
 *   soak_workload SECONDS RATE CHILD FILE TCP_PORT UDP_PORT
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in local(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s SECONDS RATE CHILD FILE TCP_PORT UDP_PORT\n", argv[0]);
        return 1;
    }
    double seconds = atof(argv[1]), rate = atof(argv[2]);
    const char *child_exe = argv[3], *file = argv[4];
    struct sockaddr_in tcp = local(atoi(argv[5])), udp = local(atoi(argv[6]));

    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&tcp, sizeof tcp) || listen(listener, 16)) die("tcp listen");
    int sink = socket(AF_INET, SOCK_DGRAM, 0);
    if (bind(sink, (struct sockaddr *)&udp, sizeof udp)) die("udp bind");
    int sender = socket(AF_INET, SOCK_DGRAM, 0);

    char buf[1];
    raise(SIGSTOP);
    struct timespec start, due;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long ticks = (long)(seconds * rate);
    for (long i = 0; i < ticks; i++) {
        pid_t child = fork();
        if (child == 0) {
            execl(child_exe, "soak_child", (char *)NULL);
            _exit(127);
        }
        if (child < 0 || waitpid(child, NULL, 0) != child) die("fork");

        int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || write(fd, "x", 1) != 1 || lseek(fd, 0, SEEK_SET) != 0 || read(fd, buf, 1) != 1) die("file");
        close(fd);

        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct linger rst = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s, SOL_SOCKET, SO_LINGER, &rst, sizeof rst);
        if (connect(s, (struct sockaddr *)&tcp, sizeof tcp)) die("connect");
        int a = accept(listener, NULL, NULL);
        if (a < 0) die("accept");
        close(s);
        close(a);

        if (sendto(sender, "x", 1, 0, (struct sockaddr *)&udp, sizeof udp) != 1) die("sendto");
        if (recv(sink, buf, 1, 0) != 1) die("recv");

        double t = (i + 1) / rate;
        due.tv_sec = start.tv_sec + (time_t)t;
        due.tv_nsec = start.tv_nsec + (long)((t - (time_t)t) * 1e9);
        if (due.tv_nsec >= 1000000000) {
            due.tv_sec++;
            due.tv_nsec -= 1000000000;
        }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
    }
    return 0;
}
