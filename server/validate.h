/* Scoring a worker's model, which is untrusted input, away from the broker:
 * the broker re-executes itself as `archnet-broker score MODEL X Y ...` in a
 * child process with resource limits (address space, CPU seconds, no core
 * dumps, no new files) and a wall-clock timeout, and reads one line of
 * result from its stdout. A crash, a hang, an allocation bomb, a wrong
 * output shape or a non-finite output is a rejection with the reason; the
 * broker itself is never at risk.
 *
 * The validation set (X, Y: the publisher's val_x.npy and val_y.npy) stays
 * on the broker; only accepted/rejected and a coarse accuracy leave it. */
#ifndef AN_SERVER_VALIDATE_H
#define AN_SERVER_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct an_validate_params {
  const char *exe;          /* the broker's own binary (re-executed) */
  const char *model_path, *x_path, *y_path;
  int64_t input_c, input_h, input_w, classes; /* what the model must take and give */
  uint64_t max_memory_bytes; /* RLIMIT_AS of the child; 0 = 4 GiB */
  double max_cpu_seconds;    /* RLIMIT_CPU; 0 = 600 */
  double max_wall_seconds;   /* killed after this; 0 = 900 */
} an_validate_params_t;

typedef struct an_validate_result {
  int ok;              /* the model ran and gave N x classes finite scores */
  double accuracy;     /* top-1 on the validation set, when ok */
  int64_t images;
  char reason[256];    /* why not ok: "timed out after 900 s", "killed by signal 11", ... */
} an_validate_result_t;

typedef void (*an_validate_cb)(const an_validate_result_t *r, void *arg);

/* Starts a scoring child on `loop`; `cb` runs on the loop when it is done.
 * The params' strings are copied. Returns 0 or a libuv error (then cb is
 * never called). */
int an_validate_start(uv_loop_t *loop, const an_validate_params_t *p, an_validate_cb cb,
                      void *arg);

/* The child's side: `archnet-broker score --max-memory BYTES --max-cpu S --
 * MODEL X Y C H W K` applies the limits to itself first (uv_spawn has no
 * hook to do it between fork and exec; RLIMIT_AS is left out in
 * AddressSanitizer builds, whose shadow memory cannot start under it),
 * scores, and prints one line: "ok ACCURACY IMAGES" or "rejected REASON".
 * Exit status 0 either way; anything else is a crash the parent reports. */
int an_validate_score_main(int argc, char **argv);

#endif
