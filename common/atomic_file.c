#include "common/atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

static void an_atomic_file_release(an_atomic_file_t *f) {
  free(f->tmp);
  free(f->path);
  f->tmp = f->path = NULL;
  f->fd = -1;
}

int an_atomic_file_open(an_atomic_file_t *f, const char *path, mode_t mode, char *err,
                        size_t errlen) {
  size_t n = strlen(path);
  f->fd = -1;
  f->path = strdup(path);
  f->tmp = malloc(n + 5);
  if (!f->path || !f->tmp) {
    snprintf(err, errlen, "%s: out of memory", path);
    an_atomic_file_release(f);
    return UV_ENOMEM;
  }
  memcpy(f->tmp, path, n);
  memcpy(f->tmp + n, ".tmp", 5);
  unlink(f->tmp);
  /* O_EXCL with the final mode: a secret key is never readable by others. */
  f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (f->fd < 0) {
    int e = errno;
    snprintf(err, errlen, "cannot create %s: %s", f->tmp, strerror(e));
    an_atomic_file_release(f);
    return -e;
  }
  return 0;
}

int an_atomic_file_write(an_atomic_file_t *f, const void *data, size_t len, char *err,
                         size_t errlen) {
  const char *p = data;
  while (len > 0) {
    ssize_t w = write(f->fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int e = w < 0 ? errno : EIO;
      snprintf(err, errlen, "cannot write %s: %s", f->tmp, strerror(e));
      return -e;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int an_atomic_file_commit(an_atomic_file_t *f, char *err, size_t errlen) {
  int e = 0;
  if (fsync(f->fd) != 0)
    e = errno;
  if (close(f->fd) != 0 && !e)
    e = errno;
  f->fd = -1;
  if (!e && rename(f->tmp, f->path) != 0)
    e = errno;
  if (e) {
    snprintf(err, errlen, "cannot save %s: %s", f->path, strerror(e));
    unlink(f->tmp);
  }
  an_atomic_file_release(f);
  return e ? -e : 0;
}

void an_atomic_file_abort(an_atomic_file_t *f) {
  if (f->fd >= 0)
    close(f->fd);
  if (f->tmp)
    unlink(f->tmp);
  an_atomic_file_release(f);
}
