#include "common/blob/npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "common/atomic_file.h"
#include "common/error.h"

/* Data is kept as it is on disk, so the host must share its byte order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host"
#endif

__extension__ typedef _Float16 an_half_t;

#define AN_NPY_MAGIC "\x93NUMPY"
#define AN_NPY_MAGIC_LEN 6
#define AN_NPY_MAX_HEADER ((uint32_t)64 << 10)
#define AN_NPY_DEFAULT_MAX ((uint64_t)4 << 30)
#define AN_NPY_ALIGN 64

static const struct {
  const char *descr; /* as NumPy writes it */
  size_t size;
} an_npy_types[] = {
    [AN_NPY_F32] = {"<f4", 4},
    [AN_NPY_F16] = {"<f2", 2},
    [AN_NPY_U8] = {"|u1", 1},
    [AN_NPY_F64] = {"<f8", 8},
    [AN_NPY_I64] = {"<i8", 8},
};
#define AN_NPY_NTYPES (sizeof an_npy_types / sizeof an_npy_types[0])

static int an_npy_dtype_ok(an_npy_dtype_t t) {
  return (unsigned)t < AN_NPY_NTYPES;
}

/* ---- reading ---------------------------------------------------------- */

/* Reads up to n bytes, stopping early only at end of file. Returns the count,
 * or a negated errno. */
static ssize_t an_npy_read_full(int fd, void *buf, size_t n) {
  uint8_t *p = buf;
  size_t got = 0;
  while (got < n) {
    size_t chunk = n - got > ((size_t)1 << 30) ? ((size_t)1 << 30) : n - got;
    ssize_t r = read(fd, p + got, chunk);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return -errno;
    if (r == 0)
      break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* A cursor over the header text, which is not NUL-terminated and may hold
 * any byte. */
typedef struct an_npy_cur {
  const char *p, *end;
} an_npy_cur_t;

static void an_npy_skip_ws(an_npy_cur_t *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r' ||
                           *c->p == '\f' || *c->p == '\v'))
    c->p++;
}

static int an_npy_eat(an_npy_cur_t *c, char ch) {
  an_npy_skip_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return 1;
  }
  return 0;
}

/* A quoted Python string of printable ASCII without escapes. */
static int an_npy_string(an_npy_cur_t *c, const char **s, size_t *len) {
  char q;
  an_npy_skip_ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
    return -1;
  q = *c->p++;
  *s = c->p;
  while (c->p < c->end && *c->p != q) {
    if (*c->p < 0x20 || *c->p > 0x7e || *c->p == '\\')
      return -1;
    c->p++;
  }
  if (c->p >= c->end)
    return -1;
  *len = (size_t)(c->p - *s);
  c->p++;
  return 0;
}

/* A bare identifier such as True or False. */
static int an_npy_word(an_npy_cur_t *c, const char *w) {
  size_t n = strlen(w);
  an_npy_skip_ws(c);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
    return 0;
  if ((size_t)(c->end - c->p) > n) {
    char next = c->p[n];
    if ((next >= 'a' && next <= 'z') || (next >= 'A' && next <= 'Z') ||
        (next >= '0' && next <= '9') || next == '_')
      return 0;
  }
  c->p += n;
  return 1;
}

static int an_npy_is_digit(char ch) {
  return ch >= '0' && ch <= '9';
}

/* Maps a descr string to our dtype; AN_EUNSUPPORTED with a reason if none. */
static int an_npy_parse_descr(const char *s, size_t len, an_npy_dtype_t *out, const char **why) {
  char order = '=';
  *why = "unsupported dtype";
  if (len > 0 && (s[0] == '<' || s[0] == '>' || s[0] == '=' || s[0] == '|')) {
    order = s[0];
    s++;
    len--;
  }
  for (unsigned t = 0; t < AN_NPY_NTYPES; t++) {
    const char *d = an_npy_types[t].descr + 1;
    if (len != strlen(d) || memcmp(s, d, len) != 0)
      continue;
    if (an_npy_types[t].size == 1 || order == '<' || order == '=') {
      *out = (an_npy_dtype_t)t;
      return 0;
    }
    *why = order == '>' ? "unsupported big-endian dtype" : "ambiguous byte order in dtype";
    return AN_EUNSUPPORTED;
  }
  return AN_EUNSUPPORTED;
}

/* The shape tuple: "()", "(5,)", "(2, 3)", "(2, 3,)"; Python 2 wrote "3L"
 * (NumPy still reads that in 1.0 and 2.0 headers). "(5)" is an int, not a
 * tuple, and NumPy refuses it too. */
static int an_npy_parse_shape(an_npy_cur_t *c, int version, an_npy_t *out, const char **why) {
  int n = 0, trailing_comma = 0;
  *why = "malformed shape";
  if (!an_npy_eat(c, '('))
    return AN_EFORMAT;
  for (;;) {
    uint64_t v = 0;
    an_npy_skip_ws(c);
    if (c->p < c->end && *c->p == ')')
      break;
    if (c->p < c->end && *c->p == '-') {
      *why = "negative dimension in shape";
      return AN_EFORMAT;
    }
    if (c->p >= c->end || !an_npy_is_digit(*c->p))
      return AN_EFORMAT;
    while (c->p < c->end && an_npy_is_digit(*c->p)) {
      unsigned d = (unsigned)(*c->p++ - '0');
      if (v > ((uint64_t)INT64_MAX - d) / 10) {
        *why = "absurd dimension in shape (over 2^63)";
        return AN_EFORMAT;
      }
      v = v * 10 + d;
    }
    if (version < 3 && c->p < c->end && (*c->p == 'L' || *c->p == 'l'))
      c->p++;
    if (n == AN_NPY_MAX_DIMS) {
      *why = "more than 8 dimensions";
      return AN_EUNSUPPORTED;
    }
    out->shape[n++] = (int64_t)v;
    trailing_comma = an_npy_eat(c, ',');
    if (!trailing_comma) {
      if (!an_npy_eat(c, ')'))
        return AN_EFORMAT;
      c->p--; /* leave ')' for the loop's exit */
    }
  }
  c->p++; /* the ')' */
  if (n == 1 && !trailing_comma) {
    *why = "shape is not a tuple (a 1-tuple needs a trailing comma)";
    return AN_EFORMAT;
  }
  out->ndim = n;
  return 0;
}

/* Parses the header dict into out->dtype, ndim and shape. Exactly the keys
 * 'descr', 'fortran_order' and 'shape', each once, in any order. */
static int an_npy_parse_header(const char *h, size_t len, int version, an_npy_t *out,
                               const char **why) {
  an_npy_cur_t c = {h, h + len};
  int seen_descr = 0, seen_order = 0, seen_shape = 0, rc;

  *why = "malformed header dict";
  if (!an_npy_eat(&c, '{'))
    return AN_EFORMAT;
  for (;;) {
    const char *key;
    size_t klen;
    if (an_npy_eat(&c, '}'))
      break;
    if (an_npy_string(&c, &key, &klen) != 0 || !an_npy_eat(&c, ':'))
      return AN_EFORMAT;
    if (klen == 5 && memcmp(key, "descr", 5) == 0 && !seen_descr) {
      const char *s;
      size_t slen;
      an_npy_skip_ws(&c);
      if (c.p < c.end && *c.p == '[') {
        *why = "unsupported dtype (structured array)";
        return AN_EUNSUPPORTED;
      }
      if (an_npy_string(&c, &s, &slen) != 0) {
        *why = "malformed descr in header";
        return AN_EFORMAT;
      }
      if ((rc = an_npy_parse_descr(s, slen, &out->dtype, why)) != 0)
        return rc;
      seen_descr = 1;
    } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0 && !seen_order) {
      if (an_npy_word(&c, "True")) {
        *why = "Fortran-order arrays are not supported";
        return AN_EUNSUPPORTED;
      }
      if (!an_npy_word(&c, "False")) {
        *why = "fortran_order is neither True nor False";
        return AN_EFORMAT;
      }
      seen_order = 1;
    } else if (klen == 5 && memcmp(key, "shape", 5) == 0 && !seen_shape) {
      if ((rc = an_npy_parse_shape(&c, version, out, why)) != 0)
        return rc;
      seen_shape = 1;
    } else {
      *why = "unknown or repeated key in header dict";
      return AN_EFORMAT;
    }
    *why = "malformed header dict"; /* the value's parser may have left its own */
    if (an_npy_eat(&c, ','))
      continue;
    if (!an_npy_eat(&c, '}'))
      return AN_EFORMAT;
    break;
  }
  an_npy_skip_ws(&c);
  if (c.p != c.end) {
    *why = "junk after the header dict";
    return AN_EFORMAT;
  }
  if (!seen_descr || !seen_order || !seen_shape) {
    *why = "header dict lacks descr, fortran_order or shape";
    return AN_EFORMAT;
  }
  return 0;
}

/* The shared reader: into memory, or (map) mapped read-only from the file. */
static int an_npy_load(const char *path, size_t max_bytes, int map, an_npy_t *out, char *err,
                       size_t errlen) {
  uint8_t pre[12], extra;
  uint64_t limit = max_bytes ? (uint64_t)max_bytes : AN_NPY_DEFAULT_MAX;
  uint64_t numel = 1, nonzero = 1, nbytes, offset;
  uint32_t hlen;
  char *header = NULL;
  const char *why;
  struct stat st;
  ssize_t got;
  int fd, rc = AN_EFORMAT, lenbytes, version;

  memset(out, 0, sizeof *out);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return rc;
  }
  if (fstat(fd, &st) != 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
    goto done;
  }
  if (S_ISDIR(st.st_mode)) {
    rc = UV_EISDIR;
    snprintf(err, errlen, "%s: is a directory", path);
    goto done;
  }
  if ((got = an_npy_read_full(fd, pre, 8)) < 0)
    goto read_error;
  if (got < 8 || memcmp(pre, AN_NPY_MAGIC, AN_NPY_MAGIC_LEN) != 0) {
    snprintf(err, errlen, "%s: not a .npy file (bad magic)", path);
    goto done;
  }
  if ((pre[6] != 1 && pre[6] != 2 && pre[6] != 3) || pre[7] != 0) {
    snprintf(err, errlen, "%s: unsupported .npy format version %u.%u", path, pre[6], pre[7]);
    rc = AN_EUNSUPPORTED;
    goto done;
  }
  version = pre[6];
  lenbytes = version == 1 ? 2 : 4;
  if ((got = an_npy_read_full(fd, pre + 8, (size_t)lenbytes)) < 0)
    goto read_error;
  if (got < lenbytes) {
    snprintf(err, errlen, "%s: truncated .npy header", path);
    goto done;
  }
  hlen = (uint32_t)pre[8] | (uint32_t)pre[9] << 8;
  if (version > 1)
    hlen |= (uint32_t)pre[10] << 16 | (uint32_t)pre[11] << 24;
  if (hlen > AN_NPY_MAX_HEADER) {
    snprintf(err, errlen, "%s: header of %u bytes is over the 64 KiB limit", path, hlen);
    rc = AN_ETOOBIG;
    goto done;
  }
  offset = 8 + (uint64_t)lenbytes + hlen;
  if (S_ISREG(st.st_mode) && (uint64_t)st.st_size < offset) {
    snprintf(err, errlen, "%s: truncated .npy header (%u bytes promised)", path, hlen);
    goto done;
  }
  if (!(header = malloc(hlen ? hlen : 1))) {
    snprintf(err, errlen, "%s: out of memory for the header", path);
    rc = UV_ENOMEM;
    goto done;
  }
  if ((got = an_npy_read_full(fd, header, hlen)) < 0)
    goto read_error;
  if ((size_t)got < hlen) {
    snprintf(err, errlen, "%s: truncated .npy header (%u bytes promised)", path, hlen);
    goto done;
  }
  if ((rc = an_npy_parse_header(header, hlen, version, out, &why)) != 0) {
    snprintf(err, errlen, "%s: %s", path, why);
    goto done;
  }
  rc = AN_EFORMAT;
  for (int i = 0; i < out->ndim; i++) {
    uint64_t d = (uint64_t)out->shape[i];
    if (d == 0) {
      numel = 0;
      continue;
    }
    /* Zeros are left out so that (0, 2^40, 2^40) is refused like (2^40, 2^40). */
    if (nonzero > UINT64_MAX / d) {
      snprintf(err, errlen, "%s: the shape's element count overflows", path);
      goto done;
    }
    nonzero *= d;
  }
  numel = numel ? nonzero : 0;
  if (numel > UINT64_MAX / an_npy_types[out->dtype].size) {
    snprintf(err, errlen, "%s: the shape's byte count overflows", path);
    goto done;
  }
  nbytes = numel * an_npy_types[out->dtype].size;
  if (nbytes > limit || nbytes > SIZE_MAX) {
    snprintf(err, errlen, "%s: %llu bytes of data are over the limit of %llu", path,
             (unsigned long long)nbytes, (unsigned long long)limit);
    rc = AN_ETOOBIG;
    goto done;
  }
  /* For a regular file its size settles both checks before any allocation;
   * the reads below still verify it for pipes or a file that changes. */
  if (S_ISREG(st.st_mode) && (uint64_t)st.st_size - offset != nbytes) {
    if ((uint64_t)st.st_size - offset < nbytes)
      snprintf(err, errlen, "%s: truncated: the shape promises %llu bytes of data, the file has %llu",
               path, (unsigned long long)nbytes, (unsigned long long)(st.st_size - offset));
    else
      snprintf(err, errlen, "%s: %llu trailing bytes after the data", path,
               (unsigned long long)((uint64_t)st.st_size - offset - nbytes));
    goto done;
  }
  if (map) {
    if (!S_ISREG(st.st_mode)) {
      snprintf(err, errlen, "%s: not a regular file", path);
      goto done;
    }
    /* Mapping the whole file keeps the data's page alignment simple. */
    out->map_len = (size_t)offset + (size_t)nbytes;
    out->map = mmap(NULL, out->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (out->map == MAP_FAILED) {
      out->map = NULL;
      rc = -errno;
      snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
      goto done;
    }
    out->data = (uint8_t *)out->map + offset;
    out->nbytes = (size_t)nbytes;
    rc = 0;
    goto done;
  }
  if (!(out->data = malloc(nbytes ? (size_t)nbytes : 1))) {
    snprintf(err, errlen, "%s: out of memory for %llu bytes", path, (unsigned long long)nbytes);
    rc = UV_ENOMEM;
    goto done;
  }
  out->nbytes = (size_t)nbytes;
  if ((got = an_npy_read_full(fd, out->data, out->nbytes)) < 0)
    goto read_error;
  if ((size_t)got < out->nbytes) {
    snprintf(err, errlen, "%s: truncated: the shape promises %llu bytes of data, the file has %zd",
             path, (unsigned long long)nbytes, got);
    goto done;
  }
  if ((got = an_npy_read_full(fd, &extra, 1)) < 0)
    goto read_error;
  if (got != 0) {
    snprintf(err, errlen, "%s: trailing bytes after the data", path);
    goto done;
  }
  rc = 0;
  goto done;
read_error:
  rc = (int)got;
  snprintf(err, errlen, "%s: read error: %s", path, strerror((int)-got));
done:
  close(fd);
  free(header);
  if (rc)
    an_npy_free(out);
  return rc;
}

int an_npy_read(const char *path, size_t max_bytes, an_npy_t *out, char *err, size_t errlen) {
  return an_npy_load(path, max_bytes, 0, out, err, errlen);
}

int an_npy_map(const char *path, an_npy_t *out, char *err, size_t errlen) {
  return an_npy_load(path, SIZE_MAX, 1, out, err, errlen);
}

size_t an_npy_numel(const an_npy_t *a) {
  size_t n = 1;
  for (int i = 0; i < a->ndim; i++)
    n *= (size_t)a->shape[i];
  return n;
}

int an_npy_to_f32(const an_npy_t *a, size_t first, size_t count, float *out) {
  const uint8_t *p;
  size_t numel;
  if (!an_npy_dtype_ok(a->dtype))
    return UV_EINVAL;
  numel = an_npy_numel(a);
  if (first > numel || count > numel - first)
    return UV_EINVAL;
  p = (const uint8_t *)a->data + first * an_npy_types[a->dtype].size;
  /* memcpy: the caller's buffer need not be aligned for the element type. */
  for (size_t i = 0; i < count; i++) {
    switch (a->dtype) {
    case AN_NPY_F32:
      memcpy(&out[i], p + 4 * i, 4);
      break;
    case AN_NPY_F16: {
      an_half_t h;
      memcpy(&h, p + 2 * i, 2);
      out[i] = (float)h;
      break;
    }
    case AN_NPY_U8:
      out[i] = (float)p[i];
      break;
    case AN_NPY_F64: {
      double d;
      memcpy(&d, p + 8 * i, 8);
      out[i] = (float)d; /* IEEE (Annex F): out of range gives +-inf */
      break;
    }
    case AN_NPY_I64: {
      int64_t v;
      memcpy(&v, p + 8 * i, 8);
      out[i] = (float)v;
      break;
    }
    }
  }
  return 0;
}

void an_npy_free(an_npy_t *a) {
  if (!a)
    return;
  if (a->map)
    munmap(a->map, a->map_len);
  else
    free(a->data);
  memset(a, 0, sizeof *a);
}

/* ---- writing ---------------------------------------------------------- */


int an_npy_writer_open(an_npy_writer_t *w, const char *path, an_npy_dtype_t dtype, int ndim,
                       const int64_t *shape, char *err, size_t errlen) {
  /* 8 dims of up to 19 digits fit easily; NumPy's 1.0 limit is 65535. */
  char head[512];
  size_t len, pad, numel = 1, nonzero = 1;
  int rc = UV_EINVAL;

  memset(w, 0, sizeof *w);
  w->file.fd = -1;
  if (!an_npy_dtype_ok(dtype) || ndim < 0 || ndim > AN_NPY_MAX_DIMS || (ndim > 0 && !shape)) {
    snprintf(err, errlen, "%s: bad dtype %d or number of dimensions %d", path, (int)dtype, ndim);
    goto done;
  }
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      snprintf(err, errlen, "%s: negative dimension %lld", path, (long long)shape[i]);
      goto done;
    }
    if (shape[i] == 0) {
      numel = 0;
      continue;
    }
    if ((uint64_t)shape[i] > SIZE_MAX || nonzero > SIZE_MAX / (size_t)shape[i]) {
      snprintf(err, errlen, "%s: the shape's element count overflows", path);
      goto done;
    }
    nonzero *= (size_t)shape[i];
  }
  numel = numel ? nonzero : 0;
  if (numel > SIZE_MAX / an_npy_types[dtype].size) {
    snprintf(err, errlen, "%s: the shape's byte count overflows", path);
    goto done;
  }
  w->expected = numel * an_npy_types[dtype].size;

  /* Magic, version 1.0 and the u16 length come first; the dict is written
   * the way NumPy writes it, so its own tools read it back unchanged. */
  len = 10;
  len += (size_t)snprintf(head + len, sizeof head - len,
                          "{'descr': '%s', 'fortran_order': False, 'shape': (",
                          an_npy_types[dtype].descr);
  for (int i = 0; i < ndim; i++)
    len += (size_t)snprintf(head + len, sizeof head - len, "%s%lld", i ? ", " : "",
                            (long long)shape[i]);
  len += (size_t)snprintf(head + len, sizeof head - len, "%s), }", ndim == 1 ? "," : "");
  pad = (AN_NPY_ALIGN - (len + 1) % AN_NPY_ALIGN) % AN_NPY_ALIGN;
  memset(head + len, ' ', pad);
  len += pad;
  head[len++] = '\n';
  memcpy(head, AN_NPY_MAGIC, AN_NPY_MAGIC_LEN);
  head[6] = 1;
  head[7] = 0;
  head[8] = (char)((len - 10) & 0xff);
  head[9] = (char)((len - 10) >> 8);

  if ((rc = an_atomic_file_open(&w->file, path, 0644, err, errlen)) != 0)
    goto done;
  if ((rc = an_atomic_file_write(&w->file, head, len, err, errlen)) != 0)
    an_npy_writer_abort(w);
done:
  return rc;
}

int an_npy_writer_append(an_npy_writer_t *w, const void *data, size_t nbytes, char *err,
                         size_t errlen) {
  if (nbytes > w->expected - w->written) {
    snprintf(err, errlen, "%s: more data than the shape holds", w->file.path);
    return UV_EINVAL;
  }
  int rc = an_atomic_file_write(&w->file, data, nbytes, err, errlen);
  if (rc == 0)
    w->written += nbytes;
  return rc;
}

int an_npy_writer_commit(an_npy_writer_t *w, char *err, size_t errlen) {
  if (w->written != w->expected) {
    snprintf(err, errlen, "%s: %zu bytes written of the %zu the shape holds", w->file.path,
             w->written, w->expected);
    an_npy_writer_abort(w);
    return UV_EINVAL;
  }
  return an_atomic_file_commit(&w->file, err, errlen);
}

void an_npy_writer_abort(an_npy_writer_t *w) { an_atomic_file_abort(&w->file); }

int an_npy_write(const char *path, an_npy_dtype_t dtype, int ndim, const int64_t *shape,
                 const void *data, char *err, size_t errlen) {
  an_npy_writer_t w;
  int rc = an_npy_writer_open(&w, path, dtype, ndim, shape, err, errlen);
  if (rc)
    return rc;
  if (w.expected > 0 && !data) {
    snprintf(err, errlen, "%s: no data for a non-empty array", path);
    an_npy_writer_abort(&w);
    return UV_EINVAL;
  }
  if ((rc = an_npy_writer_append(&w, data, w.expected, err, errlen)) != 0) {
    an_npy_writer_abort(&w);
    return rc;
  }
  return an_npy_writer_commit(&w, err, errlen);
}
