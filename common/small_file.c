/* Small whole files (see small_file.h). */
#include "common/small_file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/atomic_file.h"

char *an_small_file_read(const char *path, size_t limit) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  if (!f)
    return NULL;
  if ((buf = malloc(limit + 1)) != NULL) {
    size_t n = fread(buf, 1, limit + 1, f);
    if (n > limit || ferror(f)) {
      free(buf);
      buf = NULL;
      errno = n > limit ? EFBIG : EIO;
    } else {
      buf[n] = '\0';
    }
  }
  fclose(f);
  return buf;
}

int an_json_write_file(const char *path, const json_t *j, mode_t mode, char *err, size_t errlen) {
  an_atomic_file_t f = {.fd = -1};
  char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  int rc;
  if (!text) {
    snprintf(err, errlen, "%s: out of memory building the JSON", path);
    return UV_ENOMEM;
  }
  if ((rc = an_atomic_file_open(&f, path, mode, err, errlen)) != 0 ||
      (rc = an_atomic_file_write(&f, text, strlen(text), err, errlen)) != 0 ||
      (rc = an_atomic_file_write(&f, "\n", 1, err, errlen)) != 0)
    goto done;
  rc = an_atomic_file_commit(&f, err, errlen);
done:
  an_atomic_file_abort(&f);
  free(text);
  return rc;
}
