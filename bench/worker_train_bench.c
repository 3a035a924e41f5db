/* One training run of the worker's trainers on an encoded dataset, timed
 * from outside: the built-in trainer (worker/trainer.c, common/nn) or an
 * external command through the same an_trainer_exec the daemon uses.
 * Paired with PyTorch by bench/worker_train.sh.
 *
 *   worker_train_bench builtin f32|bf16 X.npy Y.npy OUT.onnx EPOCHS
 *   worker_train_bench command CMD      X.npy Y.npy OUT.onnx EPOCHS
 *
 * Both get batch 64, Adam at 1e-3 and seed 1 (the command through
 * ARCHNET_EPOCHS, ARCHNET_BATCH, ARCHNET_LR and ARCHNET_SEED) and 10
 * classes. Prints one line:
 *
 *   steps=S batch=B train_seconds=T wall_seconds=W cpu_seconds=C
 *
 * W is the whole trainer call (for the command: interpreter start, imports,
 * loading, training and export) and C the CPU time (user + system, all
 * threads) it took: this process's for the built-in trainer, the waited-for
 * child's for the command. On a machine shared with other work C moves
 * less than W. For the built-in trainer T runs from the call to the last
 * step's progress callback (mapping the files and building the model,
 * milliseconds, are in it; the ONNX export is not) and S counts those
 * callbacks. The command's steps and training time are not visible
 * from here: S and T are 0, and its own log on stderr has them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/blob/npy.h"
#include "common/error.h"
#include "worker/trainer.h"

enum { BENCH_BATCH = 64, BENCH_CLASSES = 10, BENCH_SEED = 1 };
#define BENCH_LR 1e-3

typedef struct bench_clock {
  double start, last_step;
  size_t steps;
} bench_clock_t;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* User + system CPU seconds of this process (RUSAGE_SELF) or of its
 * waited-for children (RUSAGE_CHILDREN). */
static double cpu_seconds(int who) {
  struct rusage ru;
  if (getrusage(who, &ru) != 0)
    return 0;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* The built-in trainer calls this after every step; the external one every
 * few seconds while the command runs (those calls are not steps, and the
 * caller ignores the count then). Never stops training. */
static int on_progress(double fraction, void *arg) {
  bench_clock_t *clock = arg;
  clock->last_step = now();
  clock->steps++;
  return 0;
}

/* Reads the N x C x H x W shape from the header of X; the data stays
 * unread (the file is only mapped). */
static int input_shape(const char *x_path, int64_t chw[3], char *err, size_t errlen) {
  an_npy_t x = {0};
  int rc = an_npy_map(x_path, &x, err, errlen);
  if (rc == 0 && x.ndim != 4) {
    snprintf(err, errlen, "%s: expected N x C x H x W, not %d dimensions", x_path, x.ndim);
    rc = AN_EFORMAT;
  }
  if (rc == 0)
    memcpy(chw, x.shape + 1, 3 * sizeof *chw);
  an_npy_free(&x);
  return rc;
}

static int set_command_env(int epochs) {
  char text[32];
  snprintf(text, sizeof text, "%d", epochs);
  if (setenv("ARCHNET_EPOCHS", text, 1) != 0)
    return -1;
  snprintf(text, sizeof text, "%d", BENCH_BATCH);
  if (setenv("ARCHNET_BATCH", text, 1) != 0)
    return -1;
  snprintf(text, sizeof text, "%g", BENCH_LR);
  if (setenv("ARCHNET_LR", text, 1) != 0)
    return -1;
  snprintf(text, sizeof text, "%d", BENCH_SEED);
  return setenv("ARCHNET_SEED", text, 1);
}

int main(int argc, char **argv) {
  char err[1024];
  int64_t chw[3];
  bench_clock_t clock = {0};
  int builtin = argc == 7 && strcmp(argv[1], "builtin") == 0;
  int command = argc == 7 && strcmp(argv[1], "command") == 0;
  int epochs = argc == 7 ? atoi(argv[6]) : 0;
  if ((!builtin && !command) || epochs <= 0 ||
      (builtin && strcmp(argv[2], "f32") != 0 && strcmp(argv[2], "bf16") != 0)) {
    fprintf(stderr, "usage: worker_train_bench builtin f32|bf16 X.npy Y.npy OUT.onnx EPOCHS\n"
                    "       worker_train_bench command CMD X.npy Y.npy OUT.onnx EPOCHS\n");
    return 2;
  }
  if (input_shape(argv[3], chw, err, sizeof err) != 0) {
    fprintf(stderr, "worker_train_bench: %s\n", err);
    return 1;
  }
  if (command && set_command_env(epochs) != 0) {
    perror("worker_train_bench: setenv");
    return 1;
  }
  an_train_job_t job = {
      .x_path = argv[3], .y_path = argv[4], .out_path = argv[5],
      .c = chw[0], .h = chw[1], .w = chw[2], .classes = BENCH_CLASSES,
      .preset = "cnn-small", .epochs = epochs, .batch = BENCH_BATCH, .lr = BENCH_LR,
      .seed = BENCH_SEED, .bf16 = builtin && strcmp(argv[2], "bf16") == 0,
      .command = command ? argv[2] : NULL, .progress = on_progress, .arg = &clock};
  int who = builtin ? RUSAGE_SELF : RUSAGE_CHILDREN;
  double cpu_start = cpu_seconds(who);
  clock.start = now();
  int rc = builtin ? an_trainer_builtin(&job, err, sizeof err)
                   : an_trainer_exec(&job, err, sizeof err);
  double end = now(), cpu = cpu_seconds(who) - cpu_start;
  if (rc != 0) {
    fprintf(stderr, "worker_train_bench: %s\n", rc == 1 ? "stopped" : err);
    return 1;
  }
  printf("steps=%zu batch=%d train_seconds=%.3f wall_seconds=%.3f cpu_seconds=%.3f\n",
         builtin ? clock.steps : 0, BENCH_BATCH, builtin ? clock.last_step - clock.start : 0.0,
         end - clock.start, cpu);
  return 0;
}
