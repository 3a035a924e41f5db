#include "common/blob/cifar.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/error.h"

/* The size check shared by both entry points, on an open file. */
static int an_cifar_count_open(FILE *f, const char *path, size_t *n, char *err, size_t errlen) {
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    int e = errno;
    snprintf(err, errlen, "%s: cannot examine: %s", path, strerror(e));
    return -e;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    return AN_EFORMAT;
  }
  if (st.st_size <= 0 || st.st_size % AN_CIFAR_RECORD_BYTES != 0) {
    snprintf(err, errlen,
             "%s: %lld bytes is not a whole number of CIFAR-10 records (%d bytes each: a label "
             "byte and a 3x32x32 image); truncated or not a CIFAR-10 batch",
             path, (long long)st.st_size, AN_CIFAR_RECORD_BYTES);
    return AN_EFORMAT;
  }
  *n = (size_t)(st.st_size / AN_CIFAR_RECORD_BYTES);
  return 0;
}

static FILE *an_cifar_open(const char *path, int *rc, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
    *rc = -e;
  }
  return f;
}

int an_cifar_count(const char *path, size_t *n, char *err, size_t errlen) {
  int rc = 0;
  FILE *f = an_cifar_open(path, &rc, err, errlen);
  if (!f)
    return rc;
  rc = an_cifar_count_open(f, path, n, err, errlen);
  fclose(f);
  return rc;
}

int an_cifar_read(const char *path, size_t n, uint8_t *images, uint8_t *labels, char *err,
                  size_t errlen) {
  uint8_t record[AN_CIFAR_RECORD_BYTES];
  size_t have = 0;
  int rc = 0;
  FILE *f = an_cifar_open(path, &rc, err, errlen);

  if (!f)
    return rc;
  if ((rc = an_cifar_count_open(f, path, &have, err, errlen)) != 0)
    goto done;
  rc = AN_EFORMAT;
  if (have < n) {
    snprintf(err, errlen, "%s: holds %zu records, %zu wanted", path, have, n);
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    if (fread(record, 1, sizeof record, f) != sizeof record) {
      int e = ferror(f) ? errno : 0;
      snprintf(err, errlen, "%s: record %zu: %s", path, i,
               e ? strerror(e) : "file ended early (it shrank while being read)");
      rc = e ? -e : AN_EFORMAT;
      goto done;
    }
    if (record[0] >= AN_CIFAR_CLASSES) {
      snprintf(err, errlen, "%s: record %zu: label %u is out of range (CIFAR-10 has %d classes)",
               path, i, record[0], AN_CIFAR_CLASSES);
      goto done;
    }
    labels[i] = record[0];
    memcpy(images + i * AN_CIFAR_IMAGE_BYTES, record + 1, AN_CIFAR_IMAGE_BYTES);
  }
  rc = 0;
done:
  fclose(f);
  return rc;
}
