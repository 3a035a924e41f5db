/* Progress lines on a terminal (see progress.h). */
#include "common/progress.h"

#include <time.h>
#include <unistd.h>

static double an_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void an_progress_init(an_progress_t *p, uint64_t total, const char *unit, bool force) {
  p->out = stderr;
  p->tty = force || isatty(STDERR_FILENO);
  p->start = p->last = an_mono();
  p->total = total;
  p->unit = unit ? unit : "";
}

double an_progress_elapsed(const an_progress_t *p) { return an_mono() - p->start; }

static void an_format_duration(double s, char *buf, size_t len) {
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(buf, len, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    snprintf(buf, len, "%ldm%02lds", t / 60, t % 60);
  else
    snprintf(buf, len, "%lds", t);
}

void an_progress_update(an_progress_t *p, uint64_t done, const char *label, bool now) {
  double t = an_mono();
  if (!p->tty || (!now && t - p->last < 0.25))
    return;
  p->last = t;
  double elapsed = t - p->start, rate = elapsed > 0 ? (double)done / elapsed : 0;
  char eta[32] = "?";
  if (p->total && rate > 0 && done <= p->total)
    an_format_duration((double)(p->total - done) / rate, eta, sizeof eta);
  /* \r + erase to the end of the line: the new text may be shorter. */
  if (p->total)
    fprintf(p->out, "\r\033[K%s  %llu/%llu %s  %.0f %s/s  ETA %s", label ? label : "",
            (unsigned long long)done, (unsigned long long)p->total, p->unit, rate, p->unit, eta);
  else
    fprintf(p->out, "\r\033[K%s  %llu %s  %.0f %s/s", label ? label : "",
            (unsigned long long)done, p->unit, rate, p->unit);
  fflush(p->out);
}

void an_progress_done(an_progress_t *p) {
  if (p->tty) {
    fputc('\n', p->out);
    fflush(p->out);
  }
}
