/* Levelled logging: one line per event on stderr,
 *   2026-11-24T20:05:09.123Z INFO  broker: listening on 127.0.0.1:7443
 *
 * The level is process-wide (set once at start-up from the config); the check
 * happens before any formatting, so disabled debug lines cost one compare.
 * Never log secrets or payloads. */
#ifndef AN_LOG_H
#define AN_LOG_H

#include <stdarg.h>
#include <stdio.h>

typedef enum an_log_level {
  AN_LOG_DEBUG = 0,
  AN_LOG_INFO = 1,
  AN_LOG_WARN = 2,
  AN_LOG_ERROR = 3,
  AN_LOG_OFF = 4
} an_log_level_t;

/* Messages below `level` are dropped. Default: AN_LOG_INFO. */
void an_log_set_level(an_log_level_t level);
an_log_level_t an_log_get_level(void);

/* Where lines go (default stderr). The stream is not closed by the log. */
void an_log_set_stream(FILE *stream);

/* Parses "debug", "info", "warn", "error" or "off". Returns 0 or -1. */
int an_log_parse_level(const char *name, an_log_level_t *out);

int an_log_enabled(an_log_level_t level);

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void an_log_write(an_log_level_t level, const char *component, const char *fmt, ...);

/* `component` names the module or the object ("broker", "session 12"). */
#define AN_LOG(level, component, ...)                                       \
  do {                                                                      \
    if (an_log_enabled(level))                                              \
      an_log_write((level), (component), __VA_ARGS__);                      \
  } while (0)

#endif
