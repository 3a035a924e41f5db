#include "common/log.h"

#include <string.h>
#include <time.h>

/* Process-wide by nature: a daemon has one log. Set at start-up, read after. */
static an_log_level_t an_log_level = AN_LOG_INFO;
static FILE *an_log_stream;

static const char *const an_level_names[] = {"DEBUG", "INFO", "WARN", "ERROR", "OFF"};

void an_log_set_level(an_log_level_t level) { an_log_level = level; }
an_log_level_t an_log_get_level(void) { return an_log_level; }
void an_log_set_stream(FILE *stream) { an_log_stream = stream; }

int an_log_enabled(an_log_level_t level) {
  return level >= an_log_level && level < AN_LOG_OFF;
}

int an_log_parse_level(const char *name, an_log_level_t *out) {
  static const char *const lower[] = {"debug", "info", "warn", "error", "off"};
  for (int i = 0; i <= AN_LOG_OFF; i++) {
    if (strcmp(name, lower[i]) == 0) {
      *out = (an_log_level_t)i;
      return 0;
    }
  }
  return -1;
}

void an_log_write(an_log_level_t level, const char *component, const char *fmt, ...) {
  char line[1024];
  struct timespec ts;
  struct tm tm;
  size_t n;
  va_list ap;
  int w;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
  w = snprintf(line + n, sizeof line - n, ".%03ldZ %-5s %s: ", ts.tv_nsec / 1000000L,
               an_level_names[level], component ? component : "-");
  if (w > 0)
    n += (size_t)w < sizeof line - n ? (size_t)w : sizeof line - n - 1;
  va_start(ap, fmt);
  w = vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  if (w > 0)
    n += (size_t)w < sizeof line - n ? (size_t)w : sizeof line - n - 1;
  /* One fputs per line so concurrent writers (threads, child processes
   * sharing stderr) do not interleave mid-line. */
  if (n < sizeof line - 1) {
    line[n++] = '\n';
    line[n] = '\0';
  } else {
    line[sizeof line - 2] = '\n';
  }
  fputs(line, an_log_stream ? an_log_stream : stderr);
}
