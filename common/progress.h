/* A progress line for long work (training, encoding, uploads): on a
 * terminal it rewrites one line on stderr at most a few times a second,
 * with the rate and the time left; in a pipe or a log it stays quiet, so
 * scripts see only results. */
#ifndef AN_PROGRESS_H
#define AN_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct an_progress {
  FILE *out;       /* stderr */
  bool tty;        /* draw only on a terminal */
  double start;    /* monotonic seconds */
  double last;     /* last draw */
  uint64_t total;  /* units of the whole job (0 = unknown) */
  const char *unit; /* "img", "B"... */
} an_progress_t;

/* Starts timing a job of `total` units. `force` draws even when stderr is
 * not a terminal (tests of the output). */
void an_progress_init(an_progress_t *p, uint64_t total, const char *unit, bool force);

/* Redraws "<label> done/total unit  rate unit/s  ETA 1m20s" when enough time
 * has passed since the last draw (or `now` is true). `label` is the
 * caller's (epoch, step, loss...). */
void an_progress_update(an_progress_t *p, uint64_t done, const char *label, bool now);

/* Ends the line (a newline on a terminal). */
void an_progress_done(an_progress_t *p);

/* Seconds since an_progress_init. */
double an_progress_elapsed(const an_progress_t *p);

#endif
