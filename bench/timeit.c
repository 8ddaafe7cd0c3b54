/* timeit.c: runs a command RUNS times in a row and appends one line per run to OUT:
 * "WALL_US MAXRSS_KB". Wall time is CLOCK_MONOTONIC from just before fork to wait4's
 * return; MAXRSS is the child's ru_maxrss from wait4 (what `/usr/bin/time -f %M` prints).
 * The child's stdin is /dev/null; stdout and stderr are inherited. Timing in C, not in the
 * bash loop, keeps the shell's own fork and bookkeeping out of a few-millisecond number.
 *
 * usage: timeit RUNS OUT CMD [ARG...]   exits 1 if any run fails (status printed). */
#define _DEFAULT_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fputs("usage: timeit RUNS OUT CMD [ARG...]\n", stderr);
    return 2;
  }
  int runs = atoi(argv[1]);
  FILE *out = fopen(argv[2], "a");
  if (runs < 1 || !out) {
    fprintf(stderr, "timeit: bad RUNS or cannot open %s\n", argv[2]);
    return 2;
  }
  for (int i = 0; i < runs; i++) {
    double start = now_us();
    pid_t pid = fork();
    if (pid < 0) {
      perror("timeit: fork");
      return 1;
    }
    if (pid == 0) {
      int null = open("/dev/null", O_RDONLY);
      if (null >= 0) dup2(null, 0);
      execvp(argv[3], argv + 3);
      perror(argv[3]);
      _exit(127);
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
      perror("timeit: wait4");
      return 1;
    }
    double wall = now_us() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "timeit: %s failed (%s %d)\n", argv[3],
              WIFEXITED(status) ? "exit status" : "signal",
              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
      return 1;
    }
    fprintf(out, "%.0f %ld\n", wall, ru.ru_maxrss);
  }
  return fclose(out) == 0 ? 0 : 1;
}
