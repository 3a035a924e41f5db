#include "common/blob/idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include <uv.h>

#include "common/error.h"

#define AN_IDX_MAX_BYTES ((size_t)1 << 31) /* 2 GiB: far above any real idx file */

static uint32_t an_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Reads exactly n bytes; gzread also reads plain files transparently. */
static int an_read_exact(gzFile f, void *buf, size_t n) {
  uint8_t *p = buf;
  while (n > 0) {
    unsigned chunk = n > (1u << 30) ? (1u << 30) : (unsigned)n;
    int got = gzread(f, p, chunk);
    if (got <= 0)
      return -1;
    p += got;
    n -= (size_t)got;
  }
  return 0;
}

int an_idx_read(const char *path, uint32_t max_items, an_idx_t *out, char *err, size_t errlen) {
  uint8_t head[16];
  gzFile f;
  size_t size;
  int rc = AN_EFORMAT;

  memset(out, 0, sizeof *out);
  f = gzopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno ? errno : ENOENT));
    return errno ? -errno : UV_ENOENT;
  }
  if (an_read_exact(f, head, 4) != 0) {
    snprintf(err, errlen, "%s: too short for an idx header", path);
    goto done;
  }
  if (head[0] != 0 || head[1] != 0 || head[2] != 0x08 || (head[3] != 1 && head[3] != 3)) {
    snprintf(err, errlen,
             "%s: not an unsigned-byte idx file of images or labels (magic %02x%02x%02x%02x)",
             path, head[0], head[1], head[2], head[3]);
    goto done;
  }
  out->ndim = head[3];
  if (an_read_exact(f, head + 4, 4u * (unsigned)out->ndim) != 0) {
    snprintf(err, errlen, "%s: truncated header", path);
    goto done;
  }
  size = 1;
  for (int i = 0; i < out->ndim; i++) {
    out->dims[i] = an_be32(head + 4 + 4 * i);
    if (out->dims[i] == 0 || (i > 0 && out->dims[i] > 65536)) {
      snprintf(err, errlen, "%s: absurd dimension %u", path, out->dims[i]);
      goto done;
    }
    size *= out->dims[i];
    if (size > AN_IDX_MAX_BYTES) {
      snprintf(err, errlen, "%s: header claims more than 2 GiB of data", path);
      goto done;
    }
  }
  if (max_items && out->dims[0] > max_items) {
    /* Read only what was asked for; the rest of the file is not needed. */
    size = size / out->dims[0] * max_items;
    out->dims[0] = max_items;
  }
  out->data = malloc(size ? size : 1);
  if (!out->data) {
    snprintf(err, errlen, "%s: out of memory for %zu bytes", path, size);
    rc = UV_ENOMEM;
    goto done;
  }
  out->size = size;
  if (an_read_exact(f, out->data, size) != 0) {
    snprintf(err, errlen, "%s: truncated: the header promises %zu bytes of data", path, size);
    goto done;
  }
  rc = 0;
done:
  gzclose(f);
  if (rc)
    an_idx_free(out);
  return rc;
}

void an_idx_free(an_idx_t *idx) {
  free(idx->data);
  memset(idx, 0, sizeof *idx);
}
