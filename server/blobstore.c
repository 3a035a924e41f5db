/* The content-addressed blob directory (see blobstore.h for the contract).
 *
 * Invariant of an upload in progress: the partial file holds exactly the
 * verified bytes [0, end), on disk, and the upload's running SHA-256 has
 * consumed exactly those bytes. put() keeps it by checking everything
 * before writing and truncating back to `end` if a write fails half-way.
 *
 * After a crash the partial file's length is trusted as its verified end:
 * every byte ever written there passed its chunk digest first, and the
 * journaling file systems a broker runs on (ext4 data=ordered, XFS) make a
 * file's size durable only after its data. On a file system without that
 * ordering the worst case is a whole-file digest mismatch at the end, which
 * drops the partial file: the upload restarts, nothing wrong is accepted. */
#include "server/blobstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <dirent.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <uv.h>

#include "common/error.h"

#define AN_DIGEST_HEX 64

/* How many uploads keep their hash state and descriptor in memory. Past
 * this, the least recently used one is evicted: its partial file stays on
 * disk and its next begin() re-hashes it, so the bound costs time, never
 * data. 256 is far above the concurrent uploads one broker sees. */
#define AN_BLOBSTORE_MAX_UPLOADS 256

/* Reading a resumed partial file back to rebuild its hash. */
#define AN_REHASH_BUFFER (1u << 20)

typedef struct an_upload {
  char digest[AN_DIGEST_HEX + 1]; /* "" = free slot */
  uint64_t size;                  /* declared by begin() */
  uint64_t end;                   /* verified bytes on disk */
  EVP_MD_CTX *sha;                /* has consumed exactly [0, end) */
  int fd;                         /* the partial file, read-write */
  uint64_t last_use;              /* for LRU eviction */
} an_upload_t;

struct an_blobstore {
  char *dir;
  int dir_fd, partial_fd; /* for openat/renameat and for fsyncing the entries */
  an_blobstore_limits_t lim;
  EVP_MD *sha256;         /* fetched once instead of on every digest */
  uint64_t bytes;         /* complete + partial, kept current by put */
  uint64_t clock;         /* use counter for last_use */
  an_upload_t uploads[AN_BLOBSTORE_MAX_UPLOADS];
};

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static void an_set_err(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || errlen == 0)
    return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* Digests become file names, so only the canonical spelling passes:
 * exactly 64 lowercase hex characters, which also rules out "..", "/" and
 * two names for one blob. */
static int an_digest_ok(const char *digest) {
  if (!digest || strnlen(digest, AN_DIGEST_HEX + 1) != AN_DIGEST_HEX)
    return 0;
  for (size_t i = 0; i < AN_DIGEST_HEX; i++) {
    char c = digest[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return 0;
  }
  return 1;
}

static int an_bad_digest(char *err, size_t errlen) {
  an_set_err(err, errlen, "a blob digest must be 64 lowercase hexadecimal characters");
  return UV_EINVAL;
}

static void an_hex(const uint8_t *raw, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[raw[i] >> 4];
    out[2 * i + 1] = digits[raw[i] & 15];
  }
  out[2 * n] = '\0';
}

/* Free bytes an unprivileged writer may still use on the store's disk. */
static int an_free_bytes(const an_blobstore_t *b, uint64_t *avail) {
  struct statvfs vfs;
  if (fstatvfs(b->dir_fd, &vfs) != 0)
    return -errno;
  *avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
  return 0;
}

/* AN_ENOSPACE if writing `need` more bytes would leave less than the floor. */
static int an_check_floor(const an_blobstore_t *b, uint64_t need, char *err, size_t errlen) {
  uint64_t avail = 0;
  int rc = an_free_bytes(b, &avail);
  if (rc != 0) {
    an_set_err(err, errlen, "cannot read the free space of %s: %s", b->dir, uv_strerror(rc));
    return rc;
  }
  if (avail < b->lim.min_free_bytes || avail - b->lim.min_free_bytes < need) {
    an_set_err(err, errlen,
               "the blob store's disk is too full: %llu bytes free, %llu needed above the "
               "floor of %llu",
               (unsigned long long)avail, (unsigned long long)need,
               (unsigned long long)b->lim.min_free_bytes);
    return AN_ENOSPACE;
  }
  return 0;
}

static int an_write_all(int fd, const void *data, size_t len, uint64_t offset) {
  const uint8_t *p = data;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)offset);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    if (n == 0)
      return UV_EIO;
    p += n;
    len -= (size_t)n;
    offset += (uint64_t)n;
  }
  return 0;
}

static void an_upload_release(an_upload_t *u) {
  EVP_MD_CTX_free(u->sha);
  if (u->fd >= 0)
    close(u->fd);
  memset(u, 0, sizeof *u);
  u->fd = -1;
}

static an_upload_t *an_upload_find(an_blobstore_t *b, const char *digest) {
  for (size_t i = 0; i < AN_BLOBSTORE_MAX_UPLOADS; i++)
    if (memcmp(b->uploads[i].digest, digest, AN_DIGEST_HEX + 1) == 0)
      return &b->uploads[i];
  return NULL;
}

/* A free slot, or the least recently used one emptied (see
 * AN_BLOBSTORE_MAX_UPLOADS for why evicting loses nothing). */
static an_upload_t *an_upload_slot(an_blobstore_t *b) {
  an_upload_t *victim = &b->uploads[0];
  for (size_t i = 0; i < AN_BLOBSTORE_MAX_UPLOADS; i++) {
    an_upload_t *u = &b->uploads[i];
    if (u->digest[0] == '\0')
      return u;
    if (u->last_use < victim->last_use)
      victim = u;
  }
  an_upload_release(victim);
  return victim;
}

/* Adds up the sizes of the regular files in a directory, for the byte count
 * kept from then on. */
static int an_dir_bytes(int dir_fd, uint64_t *total) {
  DIR *d = NULL;
  struct dirent *e;
  struct stat st;
  int fd = -1, rc = 0;
  if ((fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    rc = -errno;
    goto done;
  }
  if (!(d = fdopendir(fd))) {
    rc = -errno;
    goto done;
  }
  fd = -1; /* owned by d now */
  while ((e = readdir(d)) != NULL) {
    if (an_digest_ok(e->d_name) && fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISREG(st.st_mode))
      *total += (uint64_t)st.st_size;
  }
done:
  if (d)
    closedir(d);
  if (fd >= 0)
    close(fd);
  return rc;
}

int an_blobstore_open(const char *dir, const an_blobstore_limits_t *lim, an_blobstore_t **out,
                      char *err, size_t errlen) {
  an_blobstore_t *b = NULL;
  int rc = 0;

  *out = NULL;
  if (!(b = calloc(1, sizeof *b)) || !(b->dir = strdup(dir))) {
    an_set_err(err, errlen, "out of memory opening the blob store");
    rc = UV_ENOMEM;
    goto fail;
  }
  b->dir_fd = b->partial_fd = -1;
  for (size_t i = 0; i < AN_BLOBSTORE_MAX_UPLOADS; i++)
    b->uploads[i].fd = -1;
  if (lim)
    b->lim = *lim;
  if (b->lim.max_blob_bytes == 0)
    b->lim.max_blob_bytes = (uint64_t)64 << 30;
  if (b->lim.min_free_bytes == 0)
    b->lim.min_free_bytes = (uint64_t)1 << 30;
  if (b->lim.max_chunk_bytes == 0)
    b->lim.max_chunk_bytes = (uint32_t)4 << 20;

  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    an_set_err(err, errlen, "cannot create the blob directory %s: %s", dir, strerror(errno));
    goto fail;
  }
  if ((b->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot open the blob directory %s: %s", dir, strerror(errno));
    goto fail;
  }
  if (mkdirat(b->dir_fd, "partial", 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    an_set_err(err, errlen, "cannot create %s/partial: %s", dir, strerror(errno));
    goto fail;
  }
  if ((b->partial_fd = openat(b->dir_fd, "partial", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot open %s/partial: %s", dir, strerror(errno));
    goto fail;
  }
  /* A new "partial" entry must survive a crash before any upload relies on it. */
  if (fsync(b->dir_fd) != 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot sync %s: %s", dir, strerror(errno));
    goto fail;
  }
  if (!(b->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL))) {
    rc = UV_ENOSYS;
    an_set_err(err, errlen, "OpenSSL offers no SHA-256");
    goto fail;
  }
  if ((rc = an_dir_bytes(b->dir_fd, &b->bytes)) != 0 ||
      (rc = an_dir_bytes(b->partial_fd, &b->bytes)) != 0) {
    an_set_err(err, errlen, "cannot list the blob directory %s: %s", dir, uv_strerror(rc));
    goto fail;
  }
  *out = b;
  return 0;
fail:
  an_blobstore_close(b);
  return rc;
}

void an_blobstore_close(an_blobstore_t *b) {
  if (!b)
    return;
  for (size_t i = 0; i < AN_BLOBSTORE_MAX_UPLOADS; i++)
    an_upload_release(&b->uploads[i]);
  if (b->partial_fd >= 0)
    close(b->partial_fd);
  if (b->dir_fd >= 0)
    close(b->dir_fd);
  EVP_MD_free(b->sha256);
  free(b->dir);
  free(b);
}

/* Rebuilds the running hash of an existing partial file (after a restart or
 * an eviction) from the bytes it holds. */
static int an_upload_rehash(an_blobstore_t *b, an_upload_t *u, char *err, size_t errlen) {
  uint8_t *buf = NULL;
  uint64_t at = 0;
  int rc = 0;
  if (!(buf = malloc(AN_REHASH_BUFFER))) {
    rc = UV_ENOMEM;
    an_set_err(err, errlen, "out of memory resuming blob %s", u->digest);
    goto done;
  }
  while (at < u->end) {
    size_t want = u->end - at < AN_REHASH_BUFFER ? (size_t)(u->end - at) : AN_REHASH_BUFFER;
    ssize_t n = pread(u->fd, buf, want, (off_t)at);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : UV_EIO;
      an_set_err(err, errlen, "cannot read back the partial blob %s: %s", u->digest,
                 uv_strerror(rc));
      goto done;
    }
    if (EVP_DigestUpdate(u->sha, buf, (size_t)n) != 1) {
      rc = UV_EIO;
      an_set_err(err, errlen, "SHA-256 failed resuming blob %s", u->digest);
      goto done;
    }
    at += (uint64_t)n;
  }
done:
  free(buf);
  return rc;
}

/* Checks the finished file against its name and moves it into place. The
 * upload's slot is released whatever happens; on a digest mismatch the
 * partial file is removed too, as its bytes can never become this blob. */
static int an_upload_finish(an_blobstore_t *b, an_upload_t *u, char *err, size_t errlen) {
  uint8_t raw[EVP_MAX_MD_SIZE];
  char hex[2 * EVP_MAX_MD_SIZE + 1];
  unsigned int n = 0;
  int rc = 0;

  if (EVP_DigestFinal_ex(u->sha, raw, &n) != 1 || n != AN_DIGEST_HEX / 2) {
    rc = UV_EIO;
    an_set_err(err, errlen, "SHA-256 failed finishing blob %s", u->digest);
    goto done;
  }
  an_hex(raw, n, hex);
  if (memcmp(hex, u->digest, AN_DIGEST_HEX) != 0) {
    an_set_err(err, errlen, "the uploaded bytes hash to %s, not %s: upload dropped", hex,
               u->digest);
    rc = AN_EFORMAT;
    if (unlinkat(b->partial_fd, u->digest, 0) == 0) {
      b->bytes -= u->end;
      fsync(b->partial_fd); /* best effort: a leftover would be dropped again */
    }
    goto done;
  }
  /* The data was synced chunk by chunk; this covers the file's size. */
  if (fsync(u->fd) != 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot sync blob %s: %s", u->digest, strerror(errno));
    goto done;
  }
  if (renameat(b->partial_fd, u->digest, b->dir_fd, u->digest) != 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot move blob %s into place: %s", u->digest, strerror(errno));
    goto done;
  }
  /* The new name first (it is what has() trusts), then the old one's removal. */
  if (fsync(b->dir_fd) != 0 || fsync(b->partial_fd) != 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot sync the blob directory %s: %s", b->dir, strerror(errno));
    goto done;
  }
  /* Read-only from now on, against accidents; a guard, not a durability
   * matter, so a failure here is not the upload's. */
  (void)fchmod(u->fd, 0444);
done:
  an_upload_release(u);
  return rc;
}

/* Opens (or creates) the partial file of `digest` in a free table slot and
 * rebuilds its hash from the bytes it holds. */
static int an_upload_open(an_blobstore_t *b, const char *digest, uint64_t size, an_upload_t **out,
                          char *err, size_t errlen) {
  an_upload_t *u = an_upload_slot(b);
  struct stat st;
  int rc = 0, created = 0;

  memcpy(u->digest, digest, AN_DIGEST_HEX + 1);
  u->size = size;
  u->last_use = ++b->clock;
  u->fd = openat(b->partial_fd, digest, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (u->fd < 0 && errno == ENOENT) {
    /* A new upload must fit above the floor as a whole; a resumed one is
     * checked chunk by chunk in put (its bytes are already there). */
    if ((rc = an_check_floor(b, size, err, errlen)) != 0)
      goto fail;
    u->fd = openat(b->partial_fd, digest, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                   0600);
    created = u->fd >= 0;
  }
  if (u->fd < 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot open the partial blob %s: %s", digest, strerror(errno));
    goto fail;
  }
  if (fstat(u->fd, &st) != 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot stat the partial blob %s: %s", digest, strerror(errno));
    goto fail;
  }
  u->end = (uint64_t)st.st_size;
  if (u->end > size) {
    /* Only after a restart or an eviction: in the table, sizes must match. */
    an_set_err(err, errlen, "blob %s is being uploaded with more than %llu bytes", digest,
               (unsigned long long)size);
    rc = AN_ESTATE;
    goto fail;
  }
  if (!(u->sha = EVP_MD_CTX_new()) || EVP_DigestInit_ex(u->sha, b->sha256, NULL) != 1) {
    rc = UV_ENOMEM;
    an_set_err(err, errlen, "cannot start a SHA-256 for blob %s", digest);
    goto fail;
  }
  if ((rc = an_upload_rehash(b, u, err, errlen)) != 0)
    goto fail;
  /* The new file's name must be durable before its first chunk is acknowledged. */
  if (created && fsync(b->partial_fd) != 0) {
    rc = -errno;
    an_set_err(err, errlen, "cannot sync %s/partial: %s", b->dir, strerror(errno));
    goto fail;
  }
  *out = u;
  return 0;
fail:
  if (created)
    unlinkat(b->partial_fd, digest, 0);
  an_upload_release(u);
  return rc;
}

int an_blobstore_begin(an_blobstore_t *b, const char *digest, uint64_t size, uint64_t *offset,
                       char *err, size_t errlen) {
  an_upload_t *u = NULL;
  struct stat st;
  int rc = 0;

  *offset = 0;
  if (!an_digest_ok(digest)) {
    rc = an_bad_digest(err, errlen);
    goto done;
  }
  if (size > b->lim.max_blob_bytes) {
    an_set_err(err, errlen, "a blob of %llu bytes is over the limit of %llu",
               (unsigned long long)size, (unsigned long long)b->lim.max_blob_bytes);
    rc = AN_ETOOBIG;
    goto done;
  }
  /* Already complete: nothing to send (unless the client means other content). */
  if (fstatat(b->dir_fd, digest, &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != size) {
      an_set_err(err, errlen, "blob %s exists with %llu bytes, not %llu", digest,
                 (unsigned long long)st.st_size, (unsigned long long)size);
      rc = AN_ESTATE;
      goto done;
    }
    *offset = size;
    goto done;
  }
  if ((u = an_upload_find(b, digest)) != NULL) {
    if (u->size != size) {
      an_set_err(err, errlen, "blob %s is being uploaded with %llu bytes, not %llu", digest,
                 (unsigned long long)u->size, (unsigned long long)size);
      rc = AN_ESTATE;
      goto done;
    }
    u->last_use = ++b->clock;
    *offset = u->end;
    goto done;
  }
  if ((rc = an_upload_open(b, digest, size, &u, err, errlen)) != 0)
    goto done;
  if (u->end < size) {
    *offset = u->end;
    goto done;
  }
  /* Whole already: an empty blob, or a crash between the last chunk and the
   * rename. Finish now, so that offset == size always means "in place". A
   * mismatch drops the file and the upload starts over from nothing. */
  if ((rc = an_upload_finish(b, u, err, errlen)) == 0)
    *offset = size;
  else if (rc == AN_EFORMAT && size > 0)
    rc = an_upload_open(b, digest, size, &u, err, errlen);
done:
  return rc;
}

int an_blobstore_put(an_blobstore_t *b, const char *digest, uint64_t offset, const void *data,
                     size_t len, const uint8_t *chunk_sha256, const uint8_t *prefix_sha256,
                     uint64_t *next, int *complete, char *err, size_t errlen) {
  uint8_t raw[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  an_upload_t *u = NULL;
  EVP_MD_CTX *ahead = NULL; /* the running hash with this chunk, until it is kept */
  int rc = 0;

  *next = 0;
  *complete = 0;
  if (!chunk_sha256 && !prefix_sha256) {
    an_set_err(err, errlen, "a chunk needs its digest or the blob's digest up to its end");
    rc = UV_EINVAL;
    goto done;
  }
  if (!an_digest_ok(digest)) {
    rc = an_bad_digest(err, errlen);
    goto done;
  }
  if (!(u = an_upload_find(b, digest))) {
    uint64_t size = 0;
    if (an_blobstore_has(b, digest, &size)) {
      /* Another connection finished the same blob first (two publishers
       * with one dataset, or a retry racing its original): whatever this
       * chunk holds, the verified blob is in place. */
      *next = size;
      *complete = 1;
      goto done;
    }
    an_set_err(err, errlen, "no upload of blob %s is in progress; begin it (again)", digest);
    rc = AN_ENOTFOUND;
    goto done;
  }
  u->last_use = ++b->clock;
  *next = u->end;
  /* Everything is checked before the first byte is written. */
  if (offset != u->end) {
    an_set_err(err, errlen, "chunk at offset %llu, but blob %s continues at %llu",
               (unsigned long long)offset, digest, (unsigned long long)u->end);
    rc = AN_ESTATE;
    goto done;
  }
  if (len > b->lim.max_chunk_bytes || len > u->size - u->end) {
    an_set_err(err, errlen, "a chunk of %zu bytes is over %s", len,
               len > b->lim.max_chunk_bytes ? "the chunk size limit" : "the blob's declared size");
    rc = AN_ETOOBIG;
    goto done;
  }
  if (chunk_sha256) {
    if (EVP_Digest(data, len, raw, &n, b->sha256, NULL) != 1 || n != 32) {
      an_set_err(err, errlen, "SHA-256 failed on a chunk of blob %s", digest);
      rc = UV_EIO;
      goto done;
    }
    if (CRYPTO_memcmp(raw, chunk_sha256, 32) != 0) {
      an_set_err(err, errlen, "chunk at offset %llu of blob %s does not match its digest",
                 (unsigned long long)offset, digest);
      rc = AN_EFORMAT;
      goto done;
    }
  }
  /* The running hash advanced over this chunk, on a copy: it replaces the
   * upload's only once the chunk is on disk. */
  if (!(ahead = EVP_MD_CTX_new()) || EVP_MD_CTX_copy_ex(ahead, u->sha) != 1 ||
      EVP_DigestUpdate(ahead, data, len) != 1) {
    an_set_err(err, errlen, "SHA-256 failed on blob %s", digest);
    rc = UV_EIO;
    goto done;
  }
  if (prefix_sha256) {
    EVP_MD_CTX *peek = EVP_MD_CTX_new();
    int ok = peek && EVP_MD_CTX_copy_ex(peek, ahead) == 1 &&
             EVP_DigestFinal_ex(peek, raw, &n) == 1 && n == 32;
    EVP_MD_CTX_free(peek);
    if (!ok) {
      an_set_err(err, errlen, "SHA-256 failed on blob %s", digest);
      rc = UV_EIO;
      goto done;
    }
    if (CRYPTO_memcmp(raw, prefix_sha256, 32) != 0) {
      an_set_err(err, errlen,
                 "blob %s up to byte %llu does not match the digest sent with that chunk", digest,
                 (unsigned long long)(offset + len));
      rc = AN_EFORMAT;
      goto done;
    }
  }
  if ((rc = an_check_floor(b, len, err, errlen)) != 0)
    goto done;

  if ((rc = an_write_all(u->fd, data, len, u->end)) == 0 && fdatasync(u->fd) != 0)
    rc = -errno;
  if (rc != 0) {
    an_set_err(err, errlen, "cannot write blob %s: %s", digest, uv_strerror(rc));
    /* Back to the verified end, so that the file and the hash agree; if even
     * that fails, the next begin() re-reads whatever is there. */
    if (ftruncate(u->fd, (off_t)u->end) != 0)
      an_upload_release(u);
    goto done;
  }
  EVP_MD_CTX_free(u->sha);
  u->sha = ahead;
  ahead = NULL;
  u->end += len;
  b->bytes += len;
  *next = u->end;
  if (u->end == u->size) {
    rc = an_upload_finish(b, u, err, errlen);
    *complete = rc == 0;
  }
done:
  EVP_MD_CTX_free(ahead);
  return rc;
}

int an_blobstore_has(an_blobstore_t *b, const char *digest, uint64_t *size) {
  struct stat st;
  if (!an_digest_ok(digest) || fstatat(b->dir_fd, digest, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
      !S_ISREG(st.st_mode))
    return 0;
  if (size)
    *size = (uint64_t)st.st_size;
  return 1;
}

int an_blobstore_path(an_blobstore_t *b, const char *digest, char *buf, size_t len) {
  int n;
  if (!an_blobstore_has(b, digest, NULL))
    return AN_ENOTFOUND;
  n = snprintf(buf, len, "%s/%s", b->dir, digest);
  return n < 0 || (size_t)n >= len ? AN_ETOOBIG : 0;
}

uint64_t an_blobstore_bytes(an_blobstore_t *b) {
  return b->bytes;
}
