/* Files that appear whole or not at all: written to PATH.tmp, fsynced, and
 * renamed over PATH. A crash at any moment leaves either the old file or the
 * new one, never half of one. Used for identities, weights, models, arrays
 * and ready files alike. */
#ifndef AN_ATOMIC_FILE_H
#define AN_ATOMIC_FILE_H

#include <stddef.h>
#include <sys/types.h>

typedef struct an_atomic_file {
  int fd;           /* -1 when not open */
  char *tmp, *path; /* owned copies */
} an_atomic_file_t;

/* Creates PATH.tmp with `mode` (a stale temporary from an interrupted run
 * is removed first). Returns 0 or a negative errno / UV_ENOMEM, with `err`
 * naming the file. */
int an_atomic_file_open(an_atomic_file_t *f, const char *path, mode_t mode, char *err,
                        size_t errlen);

/* Writes all of `data`. On failure the file stays open: call abort. */
int an_atomic_file_write(an_atomic_file_t *f, const void *data, size_t len, char *err,
                         size_t errlen);

/* fsync, close and rename over PATH. On failure the temporary is removed.
 * Either way the struct is released. */
int an_atomic_file_commit(an_atomic_file_t *f, char *err, size_t errlen);

/* Closes and removes the temporary. Safe after commit and when never opened
 * (a zeroed struct with fd -1). */
void an_atomic_file_abort(an_atomic_file_t *f);

#endif
