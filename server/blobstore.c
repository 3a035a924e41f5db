/* The content-addressed blob directory (see blobstore.h for the contract).
 *
 * Invariants of an upload in progress: the upload's running SHA-256 has
 * consumed exactly the verified bytes [0, end); the partial file holds
 * [0, written_end) of them, of which [0, synced_end) are durable, and only
 * chunks inside [0, synced_end) have been reported kept. Every chunk is
 * checked before it is written; an upload whose file may hold anything
 * else (a failed write or sync) ends, and its file is cut back to
 * synced_end before its slot is freed.
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

#include "common/digest.h"
#include "common/error.h"

#define AN_DIGEST_HEX 64

/* How many uploads keep their hash state and descriptor in memory. Past
 * this, the least recently used one is evicted: its partial file stays on
 * disk and its next begin() re-hashes it, so the bound costs time, never
 * data. 256 is far above the concurrent uploads one broker sees. */
#define AN_BLOBSTORE_MAX_UPLOADS 256

/* Reading a resumed partial file back to rebuild its hash. */
#define AN_REHASH_BUFFER (1u << 20)

typedef struct an_put_job an_put_job_t;

typedef struct an_job_list {
  an_put_job_t *head, *tail;
} an_job_list_t;

/* A chunk passes three stages, each its own job on libuv's thread pool
 * (or in the caller without a loop): its digests are checked against the
 * running hash (one chunk of an upload at a time, in order), its bytes are
 * written (one at a time, in order, while the next chunk is being
 * hashed), and an fdatasync covers it (sync jobs run beside both, and the
 * chunks written meanwhile share the next). Only then is it reported; the
 * seal job renames a whole, synced blob into place. Who touches what while
 * jobs run: the hashing job reads the hash (`sha`), `size` and `digest`;
 * the writing job the descriptors (it may close `direct_fd`) and unlinks a
 * dropped file; sync and seal jobs `fd` and the directories, and their own
 * result fields. The loop's thread touches everything else, and these
 * only when no job that uses them runs (it replaces `sha` between hashes,
 * and cuts back or frees a file only when the upload is idle). */
typedef struct an_upload {
  char digest[AN_DIGEST_HEX + 1]; /* "" = free slot */
  uint64_t size;                  /* declared by begin() */
  uint64_t end;                   /* verified (hashed) bytes */
  uint64_t written_end;           /* of those, written */
  uint64_t synced_end;            /* of those, durable (fdatasync'ed) */
  uint64_t queued_end;            /* end once every queued chunk is in: where the next goes */
  EVP_MD_CTX *sha;                /* has consumed exactly [0, end) */
  int fd;                         /* the partial file, read-write */
  int direct_fd;                  /* the same, O_DIRECT for whole pages; -1 = not offered */
  uint64_t last_use;              /* for LRU eviction */
  an_job_list_t queue;            /* checked, waiting to be hashed */
  an_put_job_t *hashing;          /* on a thread now */
  an_job_list_t to_write;         /* hashed, waiting to be written */
  an_put_job_t *writing;          /* on a thread now */
  an_job_list_t unsynced;         /* written, waiting for an fdatasync to cover them */
  uv_work_t sync_work;
  uv_work_t seal_work;  /* the rename into place, once a sync covered the whole blob */
  int sealing;          /* seal_work is on a thread */
  int seal_rc;          /* set by the thread */
  char seal_err[256];   /* set by the thread */
  int syncing;          /* sync_work is on a thread, covering [0, sync_target) */
  int sync_rc;          /* set by the thread */
  uint64_t sync_target;
  int retired;          /* complete, dropped or broken: forgotten once nothing runs */
  int broken;           /* the file may hold bytes past synced_end nobody vouches for */
  int complete;         /* retired because the blob is in place */
  an_blobstore_t *b;    /* its store, for the sync and seal completions */
} an_upload_t;

struct an_put_job {
  uv_work_t work;
  an_blobstore_t *b;
  an_upload_t *u;
  an_put_job_t *next;
  const uint8_t *data; /* borrowed from the caller until cb */
  size_t len;
  uint64_t offset;
  uint8_t chunk_sha[32], prefix_sha[32];
  int has_chunk, has_prefix;
  int probe; /* not a chunk to write: an out-of-place one, answered where to
              * continue once the chunks ahead of it are hashed */
  an_blob_put_cb cb;
  void *arg;
  /* Set by the threads. */
  EVP_MD_CTX *ahead; /* hashing: the upload's hash advanced over this chunk */
  int mismatch;      /* hashing: it ends the blob, and the whole digest does not match */
  int direct;        /* writing: written with O_DIRECT */
  int dropped;       /* writing: the partial file was removed (mismatch) */
  an_blob_put_result_t result;
};

struct an_blobstore {
  char *dir;
  int dir_fd, partial_fd; /* for openat/renameat and for fsyncing the entries */
  an_blobstore_limits_t lim;
  EVP_MD *sha256;         /* fetched once instead of on every digest */
  uint64_t bytes;         /* complete + partial, kept current by put */
  uint64_t direct_bytes;  /* of the bytes put, those written with O_DIRECT */
  uint64_t clock;         /* use counter for last_use */
  uv_loop_t *loop;        /* borrowed: put's jobs run on its thread pool; NULL = inline */
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
  if (u->direct_fd >= 0)
    close(u->direct_fd);
  memset(u, 0, sizeof *u);
  u->fd = u->direct_fd = -1;
}

/* O_DIRECT wants the buffer, offset and length on the device's logical
 * block; a page is a multiple of every block size in use. */
#define AN_DIRECT_ALIGN 4096u

/* Writes a chunk at `offset`. Whole pages from a page-aligned buffer (an
 * upload's chunks, as the arena unpacks them) go around the page cache:
 * copying into the cache, a fresh page for every 4 KiB, is most of what a
 * buffered write costs, and the bytes are not read again soon. The rest (a
 * blob's last chunk, small ones) takes the page cache; both are made
 * durable by the same fdatasync. Runs on the upload's job thread. */
static int an_upload_write(an_upload_t *u, const void *data, size_t len, uint64_t offset,
                           int *direct) {
  *direct = 0;
  if (u->direct_fd >= 0 && ((uintptr_t)data % AN_DIRECT_ALIGN | offset % AN_DIRECT_ALIGN |
                            len % AN_DIRECT_ALIGN) == 0) {
    int rc = an_write_all(u->direct_fd, data, len, offset);
    *direct = rc == 0;
    if (rc != UV_EINVAL)
      return rc;
    /* The file system wants another alignment: buffered from now on. */
    close(u->direct_fd);
    u->direct_fd = -1;
  }
  return an_write_all(u->fd, data, len, offset);
}

static an_upload_t *an_upload_find(an_blobstore_t *b, const char *digest) {
  for (size_t i = 0; i < AN_BLOBSTORE_MAX_UPLOADS; i++)
    if (memcmp(b->uploads[i].digest, digest, AN_DIGEST_HEX + 1) == 0)
      return &b->uploads[i];
  return NULL;
}

/* An upload with anything in flight, or ending, cannot be evicted. */
static int an_upload_busy(const an_upload_t *u) {
  return u->queue.head || u->hashing || u->to_write.head || u->writing || u->unsynced.head ||
         u->syncing || u->sealing || u->retired;
}

/* A free slot, or the least recently used idle one emptied (see
 * AN_BLOBSTORE_MAX_UPLOADS for why evicting loses nothing); NULL if every
 * slot is busy. */
static an_upload_t *an_upload_slot(an_blobstore_t *b) {
  an_upload_t *victim = NULL;
  for (size_t i = 0; i < AN_BLOBSTORE_MAX_UPLOADS; i++) {
    an_upload_t *u = &b->uploads[i];
    if (u->digest[0] == '\0')
      return u;
    if (!an_upload_busy(u) && (!victim || u->last_use < victim->last_use))
      victim = u;
  }
  if (victim) /* else every slot has chunks in flight: the caller refuses */
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
    b->uploads[i].fd = b->uploads[i].direct_fd = -1;
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

/* Whether the bytes `run` (a running SHA-256, left running) has consumed
 * hash to the upload's name: 0, or AN_EFORMAT (UV_EIO if hashing fails). */
static int an_upload_check_whole(const an_upload_t *u, const EVP_MD_CTX *run, char *err,
                                 size_t errlen) {
  uint8_t raw[32];
  char hex[65];
  if (an_digest_peek(run, raw) != 0) {
    an_set_err(err, errlen, "SHA-256 failed finishing blob %s", u->digest);
    return UV_EIO;
  }
  an_digest_hex(raw, sizeof raw, hex);
  if (memcmp(hex, u->digest, AN_DIGEST_HEX) != 0) {
    an_set_err(err, errlen, "the uploaded bytes hash to %s, not %s: upload dropped", hex,
               u->digest);
    return AN_EFORMAT;
  }
  return 0;
}

/* Removes the partial file of a blob whose bytes can never become it. */
static void an_upload_drop(an_blobstore_t *b, const an_upload_t *u, int *dropped) {
  *dropped = 0;
  if (unlinkat(b->partial_fd, u->digest, 0) == 0) {
    *dropped = 1;
    fsync(b->partial_fd); /* best effort: a leftover would be dropped again */
  }
}

/* Makes the whole, verified file durable and moves it into place. Touches
 * only the upload's file and the directories, so it may run on a job's
 * thread. */
static int an_upload_place(an_blobstore_t *b, an_upload_t *u, char *err, size_t errlen) {
  int e;
  /* Covers every chunk not synced yet, and the file's size. */
  if (fsync(u->fd) != 0) {
    e = errno;
    an_set_err(err, errlen, "cannot sync blob %s: %s", u->digest, strerror(e));
    return -e;
  }
  if (renameat(b->partial_fd, u->digest, b->dir_fd, u->digest) != 0) {
    e = errno;
    an_set_err(err, errlen, "cannot move blob %s into place: %s", u->digest, strerror(e));
    return -e;
  }
  /* The new name first (it is what has() trusts), then the old one's removal. */
  if (fsync(b->dir_fd) != 0 || fsync(b->partial_fd) != 0) {
    e = errno;
    an_set_err(err, errlen, "cannot sync the blob directory %s: %s", b->dir, strerror(e));
    return -e;
  }
  /* Read-only from now on, against accidents; a guard, not a durability
   * matter, so a failure here is not the upload's. */
  (void)fchmod(u->fd, 0444);
  return 0;
}

/* A whole partial file found at begin() (an empty blob, or a crash
 * between the last chunk and the rename): checked against its name and
 * moved into place, or removed on a mismatch. The slot is released
 * whatever happens. */
static int an_upload_finish(an_blobstore_t *b, an_upload_t *u, char *err, size_t errlen) {
  int dropped = 0, rc = an_upload_check_whole(u, u->sha, err, errlen);
  if (rc == AN_EFORMAT)
    an_upload_drop(b, u, &dropped);
  else if (rc == 0)
    rc = an_upload_place(b, u, err, errlen);
  if (dropped)
    b->bytes -= u->end;
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

  if (!u) {
    an_set_err(err, errlen, "%d uploads have chunks in flight; try again shortly",
               AN_BLOBSTORE_MAX_UPLOADS);
    return UV_EBUSY;
  }
  memcpy(u->digest, digest, AN_DIGEST_HEX + 1);
  u->b = b;
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
  /* Not every file system offers O_DIRECT; without it all writes are buffered. */
  u->direct_fd = openat(b->partial_fd, digest, O_WRONLY | O_DIRECT | O_CLOEXEC | O_NOFOLLOW);
  u->end = u->written_end = u->synced_end = u->queued_end = (uint64_t)st.st_size;
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
  /* Being sealed (renamed into place, not yet durable there) or ending
   * after a failure: neither "complete" nor a place to resume, yet. */
  if ((u = an_upload_find(b, digest)) != NULL && (u->sealing || u->retired)) {
    an_set_err(err, errlen, "blob %s is %s; begin it again in a moment", digest,
               u->sealing ? "being put in place" : "being closed after a failed chunk");
    rc = UV_EBUSY;
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
  if (u) {
    if (u->size != size) {
      an_set_err(err, errlen, "blob %s is being uploaded with %llu bytes, not %llu", digest,
                 (unsigned long long)u->size, (unsigned long long)size);
      rc = AN_ESTATE;
      goto done;
    }
    u->last_use = ++b->clock;
    /* Durable bytes only: chunks still in flight may yet be refused. */
    *offset = u->synced_end;
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

void an_blobstore_use_loop(an_blobstore_t *b, uv_loop_t *loop) { b->loop = loop; }

/* ---- put: checked on the loop, worked on a thread, applied on the loop ---- */

/* Everything that needs the upload table, before any byte is looked at:
 * returns 0 with *u to queue a job on, 1 when answered already (a blob
 * that is complete), or an error with *next where the upload continues. */
static int an_put_check(an_blobstore_t *b, const char *digest, uint64_t offset, size_t len,
                        int has_digest, an_upload_t **u_out, uint64_t *next, int *complete,
                        char *err, size_t errlen) {
  an_upload_t *u;
  *next = 0;
  *complete = 0;
  if (!has_digest) {
    an_set_err(err, errlen, "a chunk needs its digest or the blob's digest up to its end");
    return UV_EINVAL;
  }
  if (!an_digest_ok(digest))
    return an_bad_digest(err, errlen);
  if (!(u = an_upload_find(b, digest)) || u->retired) {
    uint64_t size = 0;
    if (an_blobstore_has(b, digest, &size)) {
      /* Another connection finished the same blob first (two publishers
       * with one dataset, or a retry racing its original): whatever this
       * chunk holds, the verified blob is in place. */
      *next = size;
      *complete = 1;
      return 1;
    }
    an_set_err(err, errlen, "no upload of blob %s is in progress; begin it (again)", digest);
    return AN_ENOTFOUND;
  }
  u->last_use = ++b->clock;
  *u_out = u;
  /* Where the next chunk goes: after the ones already queued, which are
   * still to be verified (if one fails, those behind it are refused and
   * told where to resume). */
  *next = u->queued_end;
  if (offset != u->queued_end) {
    an_set_err(err, errlen, "chunk at offset %llu, but blob %s continues at %llu",
               (unsigned long long)offset, digest, (unsigned long long)u->queued_end);
    return AN_ESTATE;
  }
  if (len == 0) {
    an_set_err(err, errlen, "an empty chunk of blob %s", digest);
    return UV_EINVAL;
  }
  if (len > b->lim.max_chunk_bytes || len > u->size - u->queued_end) {
    an_set_err(err, errlen, "a chunk of %zu bytes is over %s", len,
               len > b->lim.max_chunk_bytes ? "the chunk size limit" : "the blob's declared size");
    return AN_ETOOBIG;
  }
  return 0;
}

/* Hashing, on a thread: the chunk's digests checked against the running
 * hash, and for the last chunk the whole blob's against its name. Reads
 * only the job and the upload's hash, size and digest, which nothing else
 * touches meanwhile. */
static void an_put_hash(an_put_job_t *j) {
  an_blobstore_t *b = j->b;
  an_upload_t *u = j->u;
  an_blob_put_result_t *r = &j->result;
  uint8_t raw[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  int rc = 0;

  if (j->has_chunk) {
    if (EVP_Digest(j->data, j->len, raw, &n, b->sha256, NULL) != 1 || n != 32) {
      an_set_err(r->err, sizeof r->err, "SHA-256 failed on a chunk of blob %s", u->digest);
      rc = UV_EIO;
      goto done;
    }
    if (CRYPTO_memcmp(raw, j->chunk_sha, 32) != 0) {
      an_set_err(r->err, sizeof r->err, "chunk at offset %llu of blob %s does not match its digest",
                 (unsigned long long)j->offset, u->digest);
      rc = AN_EFORMAT;
      goto done;
    }
  }
  /* The running hash advanced over this chunk, on a copy: it replaces the
   * upload's only if the chunk is kept. */
  if (!(j->ahead = EVP_MD_CTX_new()) || EVP_MD_CTX_copy_ex(j->ahead, u->sha) != 1 ||
      EVP_DigestUpdate(j->ahead, j->data, j->len) != 1) {
    an_set_err(r->err, sizeof r->err, "SHA-256 failed on blob %s", u->digest);
    rc = UV_EIO;
    goto done;
  }
  if (j->has_prefix) {
    if (an_digest_peek(j->ahead, raw) != 0) {
      an_set_err(r->err, sizeof r->err, "SHA-256 failed on blob %s", u->digest);
      rc = UV_EIO;
      goto done;
    }
    if (CRYPTO_memcmp(raw, j->prefix_sha, 32) != 0) {
      an_set_err(r->err, sizeof r->err,
                 "blob %s up to byte %llu does not match the digest sent with that chunk",
                 u->digest, (unsigned long long)(j->offset + j->len));
      rc = AN_EFORMAT;
      goto done;
    }
  }
  if (j->offset + j->len == u->size) {
    /* Every chunk passed; the whole may still not be what the name says
     * (chunks with their own digests only). The partial file is then
     * dropped in turn, after the writes ahead of it. */
    int whole = an_upload_check_whole(u, j->ahead, r->err, sizeof r->err);
    if (whole == AN_EFORMAT)
      j->mismatch = 1;
    else
      rc = whole;
  }
done:
  r->rc = rc;
  r->next = rc == 0 ? j->offset + j->len : j->offset;
}

/* Writing, on a thread: the bytes at their offset (every chunk before it
 * is written); for a last chunk whose blob failed its whole digest, the
 * partial file dropped instead. */
static void an_put_write(an_put_job_t *j) {
  an_blobstore_t *b = j->b;
  an_upload_t *u = j->u;
  an_blob_put_result_t *r = &j->result;
  int rc;

  if (j->mismatch) {
    an_upload_drop(b, u, &j->dropped);
    r->rc = AN_EFORMAT; /* r->err says why, from the hashing */
    r->next = 0;
    return;
  }
  if ((rc = an_check_floor(b, j->len, r->err, sizeof r->err)) == 0 &&
      (rc = an_upload_write(u, j->data, j->len, j->offset, &j->direct)) != 0)
    an_set_err(r->err, sizeof r->err, "cannot write blob %s: %s", u->digest, uv_strerror(rc));
  r->rc = rc;
  if (rc != 0)
    r->next = j->offset;
}

static void an_put_pump(an_blobstore_t *b, an_upload_t *u);

/* Reports one job and frees it. */
static void an_put_report(an_put_job_t *j) {
  EVP_MD_CTX_free(j->ahead);
  j->cb(&j->result, j->arg);
  free(j);
}

/* Pops every job off `list` and reports it: with the result its own run
 * left (why == NULL), or with rc, next, complete and why instead. */
static void an_put_report_all(an_job_list_t *list, int rc, uint64_t next, int complete,
                              const char *why) {
  an_put_job_t *j;
  while ((j = list->head) != NULL) {
    list->head = j->next;
    if (why) {
      j->result.rc = rc;
      j->result.next = next;
      j->result.complete = complete;
      snprintf(j->result.err, sizeof j->result.err, "%s", why);
    }
    an_put_report(j);
  }
  list->tail = NULL;
}

static void an_job_append(an_job_list_t *list, an_put_job_t *j) {
  j->next = NULL;
  if (list->tail)
    list->tail->next = j;
  else
    list->head = j;
  list->tail = j;
}

static an_put_job_t *an_job_pop(an_job_list_t *list) {
  an_put_job_t *j = list->head;
  if (j && !(list->head = j->next))
    list->tail = NULL;
  if (j)
    j->next = NULL;
  return j;
}

/* Frees the slot of a retired upload once no job of it runs. A broken
 * one's file is cut back to what was durable first, so that its next
 * begin() re-reads only bytes a sync vouched for. */
static void an_upload_release_idle(an_blobstore_t *b, an_upload_t *u) {
  if (!u->retired || u->hashing || u->writing || u->syncing || u->sealing)
    return;
  if (u->broken) {
    if (ftruncate(u->fd, (off_t)u->synced_end) == 0) {
      if (u->written_end > u->synced_end)
        b->bytes -= u->written_end - u->synced_end;
    } else if (unlinkat(b->partial_fd, u->digest, 0) == 0) {
      /* Cannot cut it back: start the upload over rather than trust bytes
       * past what a sync vouched for. */
      b->bytes -= u->written_end;
      fsync(b->partial_fd); /* best effort: a leftover is re-read, then checked whole */
    }
  }
  an_upload_release(u);
}

/* The upload ends, complete or not: every chunk not reported yet is
 * answered (those still to be hashed or written: complete, or "begin
 * again"), and the slot goes once nothing of it runs. */
static void an_upload_retire(an_blobstore_t *b, an_upload_t *u, int complete, int rc,
                             const char *why_not) {
  char why[512];
  an_set_err(why, sizeof why, "blob %s is %s", u->digest,
             complete ? "complete" : "no longer being uploaded; begin it again");
  if (complete) {
    an_put_report_all(&u->unsynced, 0, 0, 0, NULL); /* a sync covered them */
    u->complete = 1;
  } else {
    an_put_report_all(&u->unsynced, rc, u->synced_end, 0, why_not ? why_not : why);
    u->broken = 1;
  }
  an_put_report_all(&u->to_write, complete ? 0 : AN_ENOTFOUND, complete ? u->size : 0, complete,
                    why);
  an_put_report_all(&u->queue, complete ? 0 : AN_ENOTFOUND, complete ? u->size : 0, complete,
                    why);
  u->queued_end = u->end;
  u->retired = 1;
  an_upload_release_idle(b, u);
}

static void an_sync_start(an_blobstore_t *b, an_upload_t *u);

/* The seal, on a thread: the whole blob is written, verified and durable
 * (a successful sync covered all of it, and none failed, or the upload
 * would have ended): only the rename into place is left. */
static void an_seal_on_work(uv_work_t *w) {
  an_upload_t *u = w->data;
  u->seal_rc = an_upload_place(u->b, u, u->seal_err, sizeof u->seal_err);
}

/* After the seal: the last chunk is answered "complete" (and anything
 * still waiting behind it), or, if the rename failed, the upload ends and
 * its next begin() finds the file whole and tries again. */
static void an_seal_on_done(uv_work_t *w, int status) {
  an_upload_t *u = w->data;
  an_blobstore_t *b = u->b;
  (void)status; /* never cancelled */
  u->sealing = 0;
  if (u->seal_rc != 0) {
    an_upload_retire(b, u, 0, u->seal_rc, u->seal_err);
    return;
  }
  if (u->unsynced.tail)
    u->unsynced.tail->result.complete = u->unsynced.tail->result.completed_here = 1;
  an_upload_retire(b, u, 1, 0, NULL);
}

static void an_seal_start(an_blobstore_t *b, an_upload_t *u) {
  u->sealing = 1;
  u->seal_work.data = u;
  if (b->loop && uv_queue_work(b->loop, &u->seal_work, an_seal_on_work, an_seal_on_done) == 0)
    return;
  an_seal_on_work(&u->seal_work);
  an_seal_on_done(&u->seal_work, 0);
}

static void an_sync_on_work(uv_work_t *w) {
  an_upload_t *u = w->data;
  u->sync_rc = fdatasync(u->fd) == 0 ? 0 : -errno;
}

/* After an fdatasync: the chunks it covered are reported kept. If it
 * failed, none of the unsynced ones is and the upload ends: its next
 * begin() re-reads the file as far as it was durable. */
static void an_sync_done(an_blobstore_t *b, an_upload_t *u) {
  u->syncing = 0;
  if (u->retired) {
    an_upload_release_idle(b, u);
    return;
  }
  if (u->sync_rc != 0) {
    char why[512];
    an_set_err(why, sizeof why, "cannot sync blob %s: %s; begin it again", u->digest,
               uv_strerror(u->sync_rc));
    an_upload_retire(b, u, 0, UV_EIO, why);
    return;
  }
  u->synced_end = u->sync_target;
  /* Covered chunks are kept; the last one waits for the seal. */
  while (u->unsynced.head && u->unsynced.head->offset + u->unsynced.head->len <= u->synced_end &&
         u->unsynced.head->offset + u->unsynced.head->len < u->size)
    an_put_report(an_job_pop(&u->unsynced));
  if (u->synced_end == u->size)
    an_seal_start(b, u);
  else if (u->written_end > u->synced_end) /* written while it ran */
    an_sync_start(b, u);
}

static void an_sync_on_done(uv_work_t *w, int status) {
  an_upload_t *u = w->data;
  (void)status; /* never cancelled */
  an_sync_done(u->b, u);
}

/* Makes what is written durable: a sync job now, or, if one runs, once it
 * is done (an_sync_done starts the next for what was written meanwhile). */
static void an_sync_start(an_blobstore_t *b, an_upload_t *u) {
  if (u->syncing || u->written_end == u->synced_end)
    return;
  u->syncing = 1;
  u->sync_target = u->written_end;
  u->sync_work.data = u;
  if (b->loop && uv_queue_work(b->loop, &u->sync_work, an_sync_on_work, an_sync_on_done) == 0)
    return;
  an_sync_on_work(&u->sync_work); /* no loop: here and now */
  an_sync_done(b, u);
}

/* The answer for a chunk of an upload that ended while the chunk ran. */
static void an_put_retired_result(const an_upload_t *u, an_blob_put_result_t *r) {
  r->complete = u->complete;
  r->rc = u->complete ? 0 : AN_ENOTFOUND;
  r->next = u->complete ? u->size : 0;
  an_set_err(r->err, sizeof r->err, "blob %s is %s", u->digest,
             u->complete ? "complete" : "no longer being uploaded; begin it again");
}

/* After hashing: a kept chunk moves the verified end and goes on to be
 * written; a refused one is answered now, with the chunks queued behind
 * it (they assumed it would be kept). */
static void an_put_hashed(an_put_job_t *j) {
  an_blobstore_t *b = j->b;
  an_upload_t *u = j->u;
  u->hashing = NULL;
  if (u->retired) { /* the upload ended meanwhile */
    an_put_retired_result(u, &j->result);
    an_put_report(j);
    an_upload_release_idle(b, u);
    return;
  }
  if (j->result.rc == 0) {
    EVP_MD_CTX_free(u->sha);
    u->sha = j->ahead;
    j->ahead = NULL;
    u->end += j->len;
    an_job_append(&u->to_write, j);
  } else {
    char why[512];
    u->queued_end = u->end;
    an_set_err(why, sizeof why, "an earlier chunk of blob %s was refused; continue at %llu",
               u->digest, (unsigned long long)u->end);
    an_put_report_all(&u->queue, AN_ESTATE, u->end, 0, why);
    an_put_report(j);
  }
  an_put_pump(b, u);
}

/* After writing: the chunk waits for the sync that covers it, or ends the
 * upload (sealed, dropped, or a write that failed). */
static void an_put_written(an_put_job_t *j) {
  an_blobstore_t *b = j->b;
  an_upload_t *u = j->u;
  an_blob_put_result_t *r = &j->result;
  u->writing = NULL;
  if (u->retired) { /* the upload ended meanwhile */
    if (j->dropped) { /* ... and this chunk removed its file: that is the answer */
      b->bytes -= u->written_end;
      u->written_end = u->synced_end = 0;
    } else {
      an_put_retired_result(u, r);
    }
    an_put_report(j);
    an_upload_release_idle(b, u);
    return;
  }
  if (r->rc == 0) {
    u->written_end = j->offset + j->len;
    b->bytes += j->len;
    if (j->direct)
      b->direct_bytes += j->len;
  }
  if (j->mismatch || r->rc != 0) {
    /* Dropped (the whole digest failed), or a write failed and the file
     * may now end anywhere past the verified bytes: the upload ends, and
     * nothing behind or unsynced before this chunk can be kept. */
    char why[sizeof r->err];
    if (j->dropped) {
      b->bytes -= u->written_end;
      u->written_end = u->synced_end = 0; /* the file is gone: nothing to cut back to */
    }
    snprintf(why, sizeof why, "%s", r->err);
    an_upload_retire(b, u, 0, j->mismatch || r->rc == AN_ENOSPACE ? r->rc : UV_EIO, why);
    an_put_report(j); /* after: retiring may free the slot, never the job */
  } else {
    an_job_append(&u->unsynced, j);
    an_sync_start(b, u);
    an_put_pump(b, u);
  }
}

static void an_put_on_hash(uv_work_t *w) { an_put_hash(w->data); }
static void an_put_on_hashed(uv_work_t *w, int status) {
  (void)status; /* never cancelled */
  an_put_hashed(w->data);
}
static void an_put_on_write(uv_work_t *w) { an_put_write(w->data); }
static void an_put_on_written(uv_work_t *w, int status) {
  (void)status;
  an_put_written(w->data);
}

/* Starts what can start: the next chunk's hashing and the next hashed
 * chunk's writing, each if none of its kind runs. Probes at the head of
 * the queue are answered on the way (every chunk ahead of them is
 * hashed), except once the whole blob is: they learn at its end whether
 * it is complete. */
static void an_put_pump(an_blobstore_t *b, an_upload_t *u) {
  an_put_job_t *j;
  while (!u->hashing && u->queue.head && u->queue.head->probe && u->end < u->size) {
    j = an_job_pop(&u->queue);
    j->result.rc = AN_ESTATE;
    j->result.next = u->end;
    an_set_err(j->result.err, sizeof j->result.err, "blob %s continues at %llu", u->digest,
               (unsigned long long)u->end);
    an_put_report(j);
  }
  if (!u->writing && u->to_write.head) {
    j = u->writing = an_job_pop(&u->to_write);
    j->work.data = j;
    if (!b->loop || uv_queue_work(b->loop, &j->work, an_put_on_write, an_put_on_written) != 0) {
      an_put_write(j); /* no loop: here and now */
      an_put_written(j);
      return; /* that pumped again, or ended the upload */
    }
  }
  if (!u->hashing && u->queue.head && !u->queue.head->probe && !u->retired) {
    j = u->hashing = an_job_pop(&u->queue);
    j->work.data = j;
    if (!b->loop || uv_queue_work(b->loop, &j->work, an_put_on_hash, an_put_on_hashed) != 0) {
      an_put_hash(j);
      an_put_hashed(j);
    }
  }
}

int an_blobstore_put_async(an_blobstore_t *b, const char *digest, uint64_t offset,
                           const void *data, size_t len, const uint8_t *chunk_sha256,
                           const uint8_t *prefix_sha256, an_blob_put_cb cb, void *arg,
                           uint64_t *next, int *complete, char *err, size_t errlen) {
  an_upload_t *u = NULL;
  an_put_job_t *j;
  int rc = an_put_check(b, digest, offset, len, chunk_sha256 || prefix_sha256, &u, next,
                        complete, err, errlen);
  /* Out of place while chunks are in flight (another connection uploads
   * the same blob): the answer waits for them, so that it tells a verified
   * end, or that the blob is complete, never the end of unverified chunks. */
  int probe = rc == AN_ESTATE && u && an_upload_busy(u);
  if (rc != 0 && !probe)
    return rc == 1 ? 0 : rc;
  if (!(j = calloc(1, sizeof *j))) {
    an_set_err(err, errlen, "out of memory queueing a chunk of blob %s", digest);
    return UV_ENOMEM;
  }
  if (probe) {
    j->probe = 1;
    j->b = b;
    j->u = u;
    j->cb = cb;
    j->arg = arg;
    an_job_append(&u->queue, j);
    an_put_pump(b, u);
    return 1;
  }
  j->b = b;
  j->u = u;
  j->data = data;
  j->len = len;
  j->offset = offset;
  if ((j->has_chunk = chunk_sha256 != NULL))
    memcpy(j->chunk_sha, chunk_sha256, 32);
  if ((j->has_prefix = prefix_sha256 != NULL))
    memcpy(j->prefix_sha, prefix_sha256, 32);
  j->cb = cb;
  j->arg = arg;
  u->queued_end += len;
  an_job_append(&u->queue, j);
  an_put_pump(b, u);
  return 1;
}

/* an_blobstore_put's callback: the result into the caller's frame. */
static void an_put_sync_done(const an_blob_put_result_t *r, void *arg) {
  *(an_blob_put_result_t *)arg = *r;
}

int an_blobstore_put(an_blobstore_t *b, const char *digest, uint64_t offset, const void *data,
                     size_t len, const uint8_t *chunk_sha256, const uint8_t *prefix_sha256,
                     uint64_t *next, int *complete, char *err, size_t errlen) {
  an_blob_put_result_t r = {.rc = UV_EIO};
  if (b->loop) {
    an_set_err(err, errlen, "put without a callback on a blob store with a loop");
    return UV_EINVAL;
  }
  /* Without a loop the job runs and reports before put_async returns. */
  int rc = an_blobstore_put_async(b, digest, offset, data, len, chunk_sha256, prefix_sha256,
                                  an_put_sync_done, &r, next, complete, err, errlen);
  if (rc != 1)
    return rc;
  *next = r.next;
  *complete = r.complete;
  if (r.rc)
    an_set_err(err, errlen, "%s", r.err);
  return r.rc;
}

int an_blobstore_has(an_blobstore_t *b, const char *digest, uint64_t *size) {
  struct stat st;
  an_upload_t *u;
  if (!an_digest_ok(digest))
    return 0;
  /* Renamed into place but the directory not yet synced (the seal runs on
   * a thread), or a seal that failed: nothing may rely on it yet. */
  if ((u = an_upload_find(b, digest)) != NULL && (u->sealing || (u->retired && !u->complete)))
    return 0;
  if (fstatat(b->dir_fd, digest, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
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

uint64_t an_blobstore_direct_bytes(an_blobstore_t *b) { return b->direct_bytes; }

uint64_t an_blobstore_bytes(an_blobstore_t *b) {
  return b->bytes;
}
