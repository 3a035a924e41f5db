/* The broker's blob store: chunked, verified, resumable uploads into a
 * content-addressed directory. Blob names come from the `sha256sum`
 * program, and completed files are hashed by it again, so the store's own
 * SHA-256 is checked against an independent implementation. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/sha.h>
#include <uv.h>

#include "common/error.h"
#include "server/blobstore.h"
#include "tests/support/testutil.h"

#define SHA256SUM "/usr/bin/sha256sum"

typedef struct fixture {
  char *dir;       /* the test's scratch directory */
  char store[512]; /* the blob store inside it */
} fixture_t;

static void fixture_init(fixture_t *f) {
  f->dir = an_test_tmpdir();
  ck_assert_ptr_nonnull(f->dir);
  snprintf(f->store, sizeof f->store, "%s/blobs", f->dir);
}

static void fixture_done(fixture_t *f) {
  an_test_rmtree(f->dir);
  free(f->dir);
}

static uint8_t *random_bytes(size_t len, uint64_t seed) {
  uint8_t *p = malloc(len ? len : 1);
  ck_assert_ptr_nonnull(p);
  for (size_t i = 0; i < len; i++)
    p[i] = (uint8_t)an_test_rand(&seed);
  return p;
}

static void write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, len, f), len);
  ck_assert_int_eq(fclose(f), 0);
}

/* The SHA-256 of a file, in hex, as the coreutils program computes it. */
static void sha256sum_file(const char *path, char hex[65]) {
  char *argv[] = {SHA256SUM, (char *)path, NULL};
  char *out = NULL;
  ck_assert_int_eq(an_test_run(argv, &out, NULL), 0);
  ck_assert_ptr_nonnull(out);
  ck_assert_msg(strlen(out) > 64 && out[64] == ' ', "unexpected sha256sum output: %s", out);
  memcpy(hex, out, 64);
  hex[64] = '\0';
  free(out);
}

/* The name a blob of these bytes must have, from sha256sum. */
static void sha256sum_bytes(const fixture_t *f, const void *data, size_t len, char hex[65]) {
  char path[600];
  snprintf(path, sizeof path, "%s/bytes", f->dir);
  write_file(path, data, len);
  sha256sum_file(path, hex);
  unlink(path);
}

static void chunk_digest(const void *data, size_t len, uint8_t out[32]) {
  ck_assert_ptr_nonnull(SHA256(data, len, out));
}

static an_blobstore_t *open_store(const fixture_t *f, const an_blobstore_limits_t *lim) {
  an_blobstore_t *b = NULL;
  char err[512] = "";
  int rc = an_blobstore_open(f->store, lim, &b, err, sizeof err);
  ck_assert_msg(rc == 0, "open: %s (%s)", err, an_err_name(rc));
  ck_assert_ptr_nonnull(b);
  return b;
}

/* Puts one chunk that must be accepted; returns *complete. */
static int put_ok(an_blobstore_t *b, const char *digest, uint64_t offset, const uint8_t *data,
                  size_t len) {
  uint8_t sha[32];
  uint64_t next = 0;
  int complete = -1, rc;
  char err[512] = "";
  chunk_digest(data, len, sha);
  rc = an_blobstore_put(b, digest, offset, data, len, sha, NULL, &next, &complete, err, sizeof err);
  ck_assert_msg(rc == 0, "put at %llu: %s (%s)", (unsigned long long)offset, err,
                an_err_name(rc));
  ck_assert_uint_eq(next, offset + len);
  return complete;
}

/* Uploads data[from, to) in chunks of `chunk` bytes; only a chunk ending at
 * the blob's size `len` may complete it. */
static void put_range(an_blobstore_t *b, const char *digest, const uint8_t *data, size_t from,
                      size_t to, size_t chunk, size_t len) {
  for (size_t at = from; at < to; at += chunk) {
    size_t n = to - at < chunk ? to - at : chunk;
    int complete = put_ok(b, digest, at, data + at, n);
    ck_assert_int_eq(complete, at + n == len);
  }
}

static off_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? st.st_size : -1;
}

static void partial_path(const fixture_t *f, const char *digest, char *buf, size_t len) {
  snprintf(buf, len, "%s/partial/%s", f->store, digest);
}

/* The blob is in place, read-only, byte for byte the data, and sha256sum
 * agrees with its name; its partial file is gone. */
static void expect_complete(const fixture_t *f, an_blobstore_t *b, const char *digest,
                            const uint8_t *data, size_t len) {
  char path[600], hex[65];
  uint64_t size = 0;
  struct stat st;
  FILE *fp;
  uint8_t *back = malloc(len + 1);
  ck_assert_ptr_nonnull(back);
  ck_assert_int_eq(an_blobstore_has(b, digest, &size), 1);
  ck_assert_uint_eq(size, len);
  ck_assert_int_eq(an_blobstore_path(b, digest, path, sizeof path), 0);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_msg((st.st_mode & 0222) == 0, "a complete blob is writable (mode %o)",
                (unsigned)st.st_mode & 0777);
  fp = fopen(path, "rb");
  ck_assert_ptr_nonnull(fp);
  ck_assert_uint_eq(fread(back, 1, len + 1, fp), len);
  fclose(fp);
  ck_assert(len == 0 || memcmp(back, data, len) == 0);
  sha256sum_file(path, hex);
  ck_assert_str_eq(hex, digest);
  partial_path(f, digest, path, sizeof path);
  ck_assert_int_eq(file_size(path), -1);
  free(back);
}

START_TEST(test_one_chunk) {
  fixture_t f;
  size_t len = 100000;
  uint8_t *data = random_bytes(len, 1);
  char digest[65];
  uint64_t offset = 99;
  char err[512];
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_has(b, digest, NULL), 0);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 0);
  ck_assert_int_eq(put_ok(b, digest, 0, data, len), 1);
  expect_complete(&f, b, digest, data, len);
  ck_assert_uint_eq(an_blobstore_bytes(b), len);
  /* Beginning it again: nothing to send. */
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, len);
  /* The same name with another size is someone's mistake. */
  ck_assert_int_eq(an_blobstore_begin(b, digest, len + 1, &offset, err, sizeof err), AN_ESTATE);
  an_blobstore_close(b);
  /* The byte count comes back from the directory after a restart. */
  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_uint_eq(an_blobstore_bytes(b), len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

START_TEST(test_many_chunks) {
  fixture_t f;
  size_t len = (1u << 20) + 17, chunk = 7919; /* a prime: no chunk lines up with anything */
  uint8_t *data = random_bytes(len, 2);
  char digest[65], err[512];
  uint64_t offset = 1;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  an_blobstore_t *b = open_store(
      &f, &(an_blobstore_limits_t){.min_free_bytes = 1, .max_chunk_bytes = (uint32_t)chunk});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 0);
  put_range(b, digest, data, 0, len, chunk, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

/* Two uploads of one new blob, interleaved: the one behind is told where
 * the verified end is, and once the other completes the blob, its late
 * chunks are answered "complete" (it must not be told the upload is gone). */
START_TEST(test_two_uploads_of_one_blob) {
  fixture_t f;
  size_t len = 300000, chunk = 100000;
  uint8_t *data = random_bytes(len, 9);
  char digest[65], err[512];
  uint64_t offset = 1, next = 0;
  int complete = 0;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  uint8_t d0[32];
  chunk_digest(data, chunk, d0);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0); /* A */
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0); /* B */
  ck_assert_uint_eq(offset, 0);
  ck_assert_int_eq(put_ok(b, digest, 0, data, chunk), 0); /* A's first chunk */
  /* B's first chunk, now behind: resume at A's end. */
  ck_assert_int_eq(an_blobstore_put(b, digest, 0, data, chunk, d0, NULL, &next, &complete, err,
                                    sizeof err),
                   AN_ESTATE);
  ck_assert_uint_eq(next, chunk);
  put_range(b, digest, data, chunk, len, chunk, len); /* A finishes */
  expect_complete(&f, b, digest, data, len);
  /* B's next chunk arrives after the blob is in place. */
  uint8_t d1[32];
  chunk_digest(data + chunk, chunk, d1);
  ck_assert_int_eq(an_blobstore_put(b, digest, chunk, data + chunk, chunk, d1, NULL, &next, &complete,
                                    err, sizeof err),
                   0);
  ck_assert_int_eq(complete, 1);
  ck_assert_uint_eq(next, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

/* The digest of the blob's first `end` bytes, raw, from sha256sum. */
static void prefix_digest(const fixture_t *f, const uint8_t *data, size_t end, uint8_t out[32]) {
  char hex[65];
  sha256sum_bytes(f, data, end, hex);
  for (int i = 0; i < 32; i++) {
    unsigned v = 0;
    ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
}

/* Chunks checked by the running hash (the digest of everything up to their
 * end) instead of their own digest, alone or with it; a wrong one of
 * either is refused before anything is written; one is needed. */
START_TEST(test_prefix_digests) {
  fixture_t f;
  size_t len = 250000, chunk = 60000;
  uint8_t *data = random_bytes(len, 11), pre[32], own[32];
  char digest[65], err[512], path[600];
  uint64_t offset = 1, next = 0;
  int complete = 0;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  partial_path(&f, digest, path, sizeof path);
  /* Neither digest. */
  ck_assert_int_eq(an_blobstore_put(b, digest, 0, data, chunk, NULL, NULL, &next, &complete, err,
                                    sizeof err),
                   UV_EINVAL);
  /* A prefix digest of other bytes: the first chunk's own digest. */
  chunk_digest(data, chunk / 2, pre);
  ck_assert_int_eq(an_blobstore_put(b, digest, 0, data, chunk, NULL, pre, &next, &complete, err,
                                    sizeof err),
                   AN_EFORMAT);
  ck_assert_int_eq(file_size(path), 0);
  /* Right prefix, wrong own digest: still refused. */
  prefix_digest(&f, data, chunk, pre);
  chunk_digest(data + 1, chunk, own);
  ck_assert_int_eq(an_blobstore_put(b, digest, 0, data, chunk, own, pre, &next, &complete, err,
                                    sizeof err),
                   AN_EFORMAT);
  ck_assert_int_eq(file_size(path), 0);
  /* Both right, then prefix only, then own only, then prefix only. */
  chunk_digest(data, chunk, own);
  ck_assert_int_eq(an_blobstore_put(b, digest, 0, data, chunk, own, pre, &next, &complete, err,
                                    sizeof err),
                   0);
  prefix_digest(&f, data, 2 * chunk, pre);
  ck_assert_int_eq(an_blobstore_put(b, digest, chunk, data + chunk, chunk, NULL, pre, &next,
                                    &complete, err, sizeof err),
                   0);
  ck_assert_uint_eq(next, 2 * chunk);
  ck_assert_int_eq(put_ok(b, digest, 2 * chunk, data + 2 * chunk, chunk), 0);
  an_blobstore_close(b);
  /* After a restart the running hash is rebuilt from the file. */
  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 3 * chunk);
  prefix_digest(&f, data, len, pre);
  ck_assert_int_eq(an_blobstore_put(b, digest, 3 * chunk, data + 3 * chunk, len - 3 * chunk, NULL,
                                    pre, &next, &complete, err, sizeof err),
                   0);
  ck_assert_int_eq(complete, 1);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

START_TEST(test_empty_blob) {
  fixture_t f;
  char digest[65], err[512];
  uint64_t offset = 1;
  fixture_init(&f);
  sha256sum_bytes(&f, "", 0, digest);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  /* Nothing to send: begin completes it. */
  ck_assert_int_eq(an_blobstore_begin(b, digest, 0, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 0);
  expect_complete(&f, b, digest, NULL, 0);
  an_blobstore_close(b);
  fixture_done(&f);
}
END_TEST

START_TEST(test_resume_after_reopen) {
  fixture_t f;
  size_t len = 300000, chunk = 4096, half = 37 * 4096;
  uint8_t *data = random_bytes(len, 3);
  char digest[65], err[512], partial[600];
  uint64_t offset = 1;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  partial_path(&f, digest, partial, sizeof partial);

  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  put_range(b, digest, data, 0, half, chunk, len);
  /* Asking again in the same process gives the same verified end. */
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, half);
  ck_assert_uint_eq(an_blobstore_bytes(b), half);
  an_blobstore_close(b); /* the broker stops mid-upload */

  ck_assert_int_eq(file_size(partial), (off_t)half);
  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_uint_eq(an_blobstore_bytes(b), half);
  /* Before begin, the new process knows nothing of the upload. */
  {
    uint8_t sha[32];
    uint64_t next = 7;
    int complete = 7;
    chunk_digest(data + half, chunk, sha);
    ck_assert_int_eq(an_blobstore_put(b, digest, half, data + half, chunk, sha, NULL, &next,
                                      &complete, err, sizeof err),
                     AN_ENOTFOUND);
    ck_assert_int_eq(complete, 0);
  }
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, half);
  /* A second interruption, at an offset that is not a multiple of the chunk. */
  put_range(b, digest, data, half, half + 3 * chunk + 5, chunk, len);
  an_blobstore_close(b);

  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, half + 3 * chunk + 5);
  /* The resumed hash must cover the bytes from before the restarts, or the
   * whole-file check at the end fails. */
  put_range(b, digest, data, (size_t)offset, len, chunk, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

/* A crash after the last chunk was written but before the rename: the
 * partial file is whole, and begin must finish it, not report it done. */
START_TEST(test_whole_partial_after_crash) {
  fixture_t f;
  size_t len = 5000;
  uint8_t *data = random_bytes(len, 4);
  char digest[65], err[512], partial[600];
  uint64_t offset = 1;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  an_blobstore_close(b); /* creates the directories */
  partial_path(&f, digest, partial, sizeof partial);
  write_file(partial, data, len);
  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_has(b, digest, NULL), 0);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

START_TEST(test_wrong_chunk_digest) {
  fixture_t f;
  size_t len = 20000, chunk = 5000;
  uint8_t *data = random_bytes(len, 5);
  char digest[65], err[512] = "", partial[600];
  uint8_t sha[32];
  uint64_t offset = 1, next = 0;
  int complete = -1;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  partial_path(&f, digest, partial, sizeof partial);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  put_ok(b, digest, 0, data, chunk);

  /* The digest of other bytes, then of the right bytes with one bit flipped. */
  chunk_digest(data + 2 * chunk, chunk, sha);
  ck_assert_int_eq(an_blobstore_put(b, digest, chunk, data + chunk, chunk, sha, NULL, &next,
                                    &complete, err, sizeof err),
                   AN_EFORMAT);
  ck_assert_msg(strstr(err, "digest") != NULL, "no reason given: %s", err);
  ck_assert_uint_eq(next, chunk);
  ck_assert_int_eq(complete, 0);
  chunk_digest(data + chunk, chunk, sha);
  sha[31] ^= 1;
  ck_assert_int_eq(an_blobstore_put(b, digest, chunk, data + chunk, chunk, sha, NULL, &next,
                                    &complete, err, sizeof err),
                   AN_EFORMAT);
  /* Nothing was written, and the upload goes on from where it was. */
  ck_assert_int_eq(file_size(partial), (off_t)chunk);
  ck_assert_uint_eq(an_blobstore_bytes(b), chunk);
  put_range(b, digest, data, chunk, len, chunk, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

START_TEST(test_out_of_order) {
  fixture_t f;
  size_t len = 40000, chunk = 10000;
  uint8_t *data = random_bytes(len, 6);
  char digest[65], err[512] = "", partial[600];
  uint8_t sha[32];
  uint64_t offset = 1, next = 0;
  int complete = -1;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  partial_path(&f, digest, partial, sizeof partial);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  put_range(b, digest, data, 0, 2 * chunk, chunk, len);

  /* Ahead of the end (a lost chunk), behind it (a duplicate), and at 0. */
  uint64_t wrong[] = {3 * chunk, chunk, 0, 2 * chunk + 1};
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    chunk_digest(data + wrong[i], chunk, sha);
    next = 12345;
    ck_assert_int_eq(an_blobstore_put(b, digest, wrong[i], data + wrong[i], chunk, sha, NULL, &next,
                                      &complete, err, sizeof err),
                     AN_ESTATE);
    ck_assert_uint_eq(next, 2 * chunk); /* where to resume */
    ck_assert_int_eq(complete, 0);
    ck_assert_int_eq(file_size(partial), (off_t)(2 * chunk));
  }
  put_range(b, digest, data, (size_t)next, len, chunk, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

START_TEST(test_wrong_whole_digest) {
  fixture_t f;
  size_t len = 30000, chunk = 10000;
  uint8_t *data = random_bytes(len, 7), *other = random_bytes(len, 8);
  char digest[65], err[512] = "", partial[600];
  uint8_t sha[32];
  uint64_t offset = 1, next = 0;
  int complete = -1;
  fixture_init(&f);
  /* Named after `other`, but the chunks (each correct) are `data`. */
  sha256sum_bytes(&f, other, len, digest);
  partial_path(&f, digest, partial, sizeof partial);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  put_range(b, digest, data, 0, 2 * chunk, chunk, len);
  chunk_digest(data + 2 * chunk, chunk, sha);
  ck_assert_int_eq(an_blobstore_put(b, digest, 2 * chunk, data + 2 * chunk, chunk, sha, NULL, &next,
                                    &complete, err, sizeof err),
                   AN_EFORMAT);
  ck_assert_int_eq(complete, 0);
  ck_assert_msg(strstr(err, digest) != NULL, "the reason names the blob: %s", err);
  /* Dropped: no blob, no partial file, and a new begin starts from zero. */
  ck_assert_int_eq(an_blobstore_has(b, digest, NULL), 0);
  ck_assert_int_eq(file_size(partial), -1);
  ck_assert_uint_eq(an_blobstore_bytes(b), 0);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 0);
  /* The right bytes under that name do complete. */
  put_range(b, digest, other, 0, len, chunk, len);
  expect_complete(&f, b, digest, other, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
  free(other);
}
END_TEST

START_TEST(test_bad_digest_strings) {
  fixture_t f;
  char good[65], upper[65], path[600], err[512];
  uint8_t sha[32];
  uint64_t offset = 0, next = 0;
  int complete = 0;
  fixture_init(&f);
  sha256sum_bytes(&f, "x", 1, good);
  for (int i = 0; i < 65; i++)
    upper[i] = (char)(good[i] >= 'a' && good[i] <= 'f' ? good[i] - 32 : good[i]);
  char dotdot[65], slash[65], nul[66];
  /* 64 characters that climb out of the directory. */
  memset(dotdot, 0, sizeof dotdot);
  for (int i = 0; i < 64; i += 3)
    memcpy(dotdot + i, i + 3 <= 64 ? "../" : "..", i + 3 <= 64 ? 3 : (size_t)(64 - i));
  memcpy(slash, good, 65);
  slash[10] = '/';
  /* The right name, but longer: the store must not read it as 64 chars. */
  memcpy(nul, good, 64);
  nul[64] = 'a';
  nul[65] = '\0';
  const char *bad[] = {"../..",         "",    good + 1, upper, dotdot, slash, nul,
                       "../../../../etc/passwd", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g"};
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  chunk_digest("x", 1, sha);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err[0] = '\0';
    ck_assert_msg(an_blobstore_begin(b, bad[i], 1, &offset, err, sizeof err) == UV_EINVAL,
                  "begin accepted '%s'", bad[i]);
    ck_assert_msg(err[0] != '\0', "no reason for '%s'", bad[i]);
    ck_assert_int_eq(an_blobstore_put(b, bad[i], 0, "x", 1, sha, NULL, &next, &complete, err,
                                      sizeof err),
                     UV_EINVAL);
    ck_assert_int_eq(an_blobstore_has(b, bad[i], NULL), 0);
    ck_assert_int_eq(an_blobstore_path(b, bad[i], path, sizeof path), AN_ENOTFOUND);
  }
  /* Nothing was created anywhere: the scratch directory holds only the store,
   * and the store only its (empty) partial directory. */
  {
    char *argv[] = {"/usr/bin/find", f.dir, "-mindepth", "1", NULL};
    char *out = NULL, line[1024];
    size_t lines = 0;
    ck_assert_int_eq(an_test_run(argv, &out, NULL), 0);
    ck_assert_ptr_nonnull(out);
    for (const char *p = out; (p = strchr(p, '\n')) != NULL; p++)
      lines++;
    snprintf(line, sizeof line, "%s/blobs\n", f.dir);
    ck_assert_msg(lines == 2 && strstr(out, line), "unexpected files:\n%s", out);
    snprintf(line, sizeof line, "%s/blobs/partial\n", f.dir);
    ck_assert_msg(strstr(out, line), "unexpected files:\n%s", out);
    free(out);
  }
  /* The canonical spelling works. */
  ck_assert_int_eq(an_blobstore_begin(b, good, 1, &offset, err, sizeof err), 0);
  ck_assert_int_eq(put_ok(b, good, 0, (const uint8_t *)"x", 1), 1);
  ck_assert_int_eq(an_blobstore_has(b, upper, NULL), 0);
  an_blobstore_close(b);
  fixture_done(&f);
}
END_TEST

START_TEST(test_size_limits) {
  fixture_t f;
  size_t len = 1000;
  uint8_t *data = random_bytes(len + 1, 9);
  char digest[65], big[65], err[512] = "", partial[600];
  uint8_t sha[32];
  uint64_t offset = 1, next = 0;
  int complete = -1;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  sha256sum_bytes(&f, data, len + 1, big);
  partial_path(&f, digest, partial, sizeof partial);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){
                                         .min_free_bytes = 1,
                                         .max_blob_bytes = len,
                                         .max_chunk_bytes = 400,
                                     });
  /* One byte over the maximum blob size: refused before anything exists. */
  ck_assert_int_eq(an_blobstore_begin(b, big, len + 1, &offset, err, sizeof err), AN_ETOOBIG);
  ck_assert_int_eq(an_blobstore_put(b, big, 0, data, 400, sha, NULL, &next, &complete, err,
                                    sizeof err),
                   AN_ENOTFOUND);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  /* A chunk over the chunk limit, whatever its digest. */
  chunk_digest(data, 401, sha);
  ck_assert_int_eq(an_blobstore_put(b, digest, 0, data, 401, sha, NULL, &next, &complete, err,
                                    sizeof err),
                   AN_ETOOBIG);
  ck_assert_int_eq(file_size(partial), 0);
  put_range(b, digest, data, 0, 800, 400, len);
  /* A chunk that runs past the declared size. */
  chunk_digest(data + 800, 201, sha);
  ck_assert_int_eq(an_blobstore_put(b, digest, 800, data + 800, 201, sha, NULL, &next, &complete,
                                    err, sizeof err),
                   AN_ETOOBIG);
  ck_assert_uint_eq(next, 800);
  ck_assert_int_eq(file_size(partial), 800);
  put_range(b, digest, data, 800, len, 400, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

START_TEST(test_free_disk_floor) {
  fixture_t f;
  size_t len = 10000, chunk = 2500;
  uint8_t *data = random_bytes(len, 10);
  char digest[65], other[65], err[512] = "", partial[600];
  uint8_t sha[32];
  uint64_t offset = 1, next = 0;
  int complete = -1;
  struct statvfs vfs;
  fixture_init(&f);
  sha256sum_bytes(&f, data, len, digest);
  sha256sum_bytes(&f, data, chunk, other);
  partial_path(&f, digest, partial, sizeof partial);
  ck_assert_int_eq(statvfs(f.dir, &vfs), 0);
  /* A floor far above the disk's free space (and its size). */
  uint64_t total = (uint64_t)vfs.f_blocks * vfs.f_frsize;
  an_blobstore_limits_t full = {.min_free_bytes = total * 2};

  an_blobstore_t *b = open_store(&f, &full);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), AN_ENOSPACE);
  ck_assert_msg(strstr(err, "full") != NULL, "no reason given: %s", err);
  ck_assert_int_eq(file_size(partial), -1); /* nothing created */
  an_blobstore_close(b);

  /* Room enough: part of the upload goes through. */
  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  put_range(b, digest, data, 0, 2 * chunk, chunk, len);
  an_blobstore_close(b);

  /* The disk "fills": the resumed upload may begin (its bytes are there),
   * but no new byte is written, and a new upload cannot start. */
  b = open_store(&f, &full);
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 2 * chunk);
  chunk_digest(data + 2 * chunk, chunk, sha);
  ck_assert_int_eq(an_blobstore_put(b, digest, 2 * chunk, data + 2 * chunk, chunk, sha, NULL, &next,
                                    &complete, err, sizeof err),
                   AN_ENOSPACE);
  ck_assert_uint_eq(next, 2 * chunk);
  ck_assert_int_eq(file_size(partial), (off_t)(2 * chunk));
  ck_assert_int_eq(an_blobstore_begin(b, other, chunk, &offset, err, sizeof err), AN_ENOSPACE);
  an_blobstore_close(b);

  /* Space again: the upload finishes where it stopped. */
  b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(an_blobstore_begin(b, digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 2 * chunk);
  put_range(b, digest, data, 2 * chunk, len, chunk, len);
  expect_complete(&f, b, digest, data, len);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
}
END_TEST

/* More uploads in flight than the store keeps in memory: the oldest are
 * evicted, and each comes back at its verified end when begun again. */
START_TEST(test_many_uploads_evicted) {
  enum { UPLOADS = 300, LEN = 64, HALF = 24 };
  fixture_t f;
  char (*digests)[65] = calloc(UPLOADS, 65), err[512];
  uint8_t *data = random_bytes((size_t)UPLOADS * LEN, 11);
  uint64_t offset;
  fixture_init(&f);
  ck_assert_ptr_nonnull(digests);
  for (int i = 0; i < UPLOADS; i++)
    sha256sum_bytes(&f, data + (size_t)i * LEN, LEN, digests[i]);
  an_blobstore_t *b = open_store(&f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  for (int i = 0; i < UPLOADS; i++) {
    ck_assert_int_eq(an_blobstore_begin(b, digests[i], LEN, &offset, err, sizeof err), 0);
    ck_assert_uint_eq(offset, 0);
    put_ok(b, digests[i], 0, data + (size_t)i * LEN, HALF);
  }
  int evicted = 0;
  for (int i = 0; i < UPLOADS; i++) {
    const uint8_t *d = data + (size_t)i * LEN;
    uint8_t sha[32];
    uint64_t next = 0;
    int complete = 0;
    chunk_digest(d + HALF, LEN - HALF, sha);
    int rc = an_blobstore_put(b, digests[i], HALF, d + HALF, LEN - HALF, sha, NULL, &next, &complete,
                              err, sizeof err);
    if (rc == AN_ENOTFOUND) {
      evicted++;
      ck_assert_int_eq(an_blobstore_begin(b, digests[i], LEN, &offset, err, sizeof err), 0);
      ck_assert_uint_eq(offset, HALF);
      complete = put_ok(b, digests[i], HALF, d + HALF, LEN - HALF);
    } else {
      ck_assert_msg(rc == 0, "put %d: %s", i, err);
    }
    ck_assert_int_eq(complete, 1);
  }
  ck_assert_msg(evicted > 0, "no upload was evicted: the table is not bounded");
  for (int i = 0; i < UPLOADS; i += 37)
    expect_complete(&f, b, digests[i], data + (size_t)i * LEN, LEN);
  ck_assert_uint_eq(an_blobstore_bytes(b), (uint64_t)UPLOADS * LEN);
  an_blobstore_close(b);
  fixture_done(&f);
  free(data);
  free(digests);
}
END_TEST

/* ---- pipelined chunks: put_async with a loop (jobs on its thread pool) ---- */

#define PIPE_MAX 64

typedef struct seen {
  int n;
  int order[PIPE_MAX];               /* the chunks in the order they were reported */
  an_blob_put_result_t r[PIPE_MAX];  /* by chunk */
} seen_t;

typedef struct put_arg {
  seen_t *seen;
  int index;
} put_arg_t;

/* A blob store with a loop, and one upload begun on it. */
typedef struct piped {
  fixture_t f;
  uv_loop_t loop;
  an_blobstore_t *b;
  char digest[65]; /* the upload's name */
  size_t len;      /* its size */
  seen_t seen;     /* what was reported */
  put_arg_t args[PIPE_MAX];
} piped_t;

static void on_put(const an_blob_put_result_t *r, void *arg) {
  put_arg_t *a = arg;
  ck_assert_int_lt(a->seen->n, PIPE_MAX);
  a->seen->r[a->index] = *r;
  a->seen->order[a->seen->n++] = a->index;
}

/* Opens the store with a loop and begins an upload of `len` bytes named
 * after `named` (the bytes it should hold, or others to make it wrong). */
static void piped_open(piped_t *p, const uint8_t *named, size_t len) {
  char err[512];
  uint64_t offset = 1;
  memset(p, 0, sizeof *p);
  fixture_init(&p->f);
  sha256sum_bytes(&p->f, named, len, p->digest);
  p->len = len;
  p->b = open_store(&p->f, &(an_blobstore_limits_t){.min_free_bytes = 1});
  ck_assert_int_eq(uv_loop_init(&p->loop), 0);
  an_blobstore_use_loop(p->b, &p->loop);
  ck_assert_int_eq(an_blobstore_begin(p->b, p->digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 0);
}

/* Runs the loop until every job has reported. */
static void piped_run(piped_t *p) { ck_assert_int_eq(uv_run(&p->loop, UV_RUN_DEFAULT), 0); }

static void piped_close(piped_t *p) {
  piped_run(p);
  ck_assert_int_eq(uv_loop_close(&p->loop), 0);
  an_blobstore_close(p->b);
  fixture_done(&p->f);
}

/* Queues chunk i ([i*chunk, ...) of data) and expects it queued (1);
 * `wrong` sends a digest of other bytes. */
static void queue_chunk(piped_t *p, const uint8_t *data, size_t chunk, int i, int wrong) {
  size_t at = (size_t)i * chunk, n = p->len - at < chunk ? p->len - at : chunk;
  uint8_t sha[32];
  uint64_t next = 0;
  int complete = 0;
  char err[512] = "";
  chunk_digest(data + at, n, sha);
  if (wrong)
    sha[0] ^= 1;
  p->args[i] = (put_arg_t){&p->seen, i};
  int rc = an_blobstore_put_async(p->b, p->digest, at, data + at, n, sha, NULL, on_put,
                                  &p->args[i], &next, &complete, err, sizeof err);
  ck_assert_msg(rc == 1, "chunk %d: %d %s", i, rc, err);
}

/* Whether the scratch directory's file system takes O_DIRECT opens. */
static int direct_supported(const fixture_t *f) {
  char path[600];
  snprintf(path, sizeof path, "%s/direct-probe", f->dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_DIRECT, 0600);
  if (fd >= 0)
    close(fd);
  unlink(path);
  return fd >= 0;
}

/* All chunks of a blob queued at once: each is reported, in order, as kept
 * at its end; the last one completes the blob, byte for byte. Twice: with
 * chunks the page cache takes, and with whole pages from a page-aligned
 * buffer, which the store writes with O_DIRECT (the last one excepted). */
START_TEST(test_pipelined_chunks) {
  piped_t p;
  size_t chunk = _i == 0 ? 10000 : 65536, len = 30 * chunk + 123;
  int n = (int)((len + chunk - 1) / chunk);
  uint8_t *data = NULL;
  if (_i == 0) {
    data = random_bytes(len, 21);
  } else {
    uint8_t *random = random_bytes(len, 21);
    ck_assert_int_eq(posix_memalign((void **)&data, 4096, len), 0);
    memcpy(data, random, len);
    free(random);
  }
  piped_open(&p, data, len);
  for (int i = 0; i < n; i++)
    queue_chunk(&p, data, chunk, i, 0);
  piped_run(&p);
  ck_assert_int_eq(p.seen.n, n);
  for (int i = 0; i < n; i++) {
    ck_assert_int_eq(p.seen.order[i], i);
    ck_assert_msg(p.seen.r[i].rc == 0, "chunk %d: %s", i, p.seen.r[i].err);
    uint64_t end = (uint64_t)(i + 1) * chunk < len ? (uint64_t)(i + 1) * chunk : len;
    ck_assert_uint_eq(p.seen.r[i].next, end);
    ck_assert_int_eq(p.seen.r[i].complete, i == n - 1);
  }
  expect_complete(&p.f, p.b, p.digest, data, len);
  /* Whole pages from an aligned buffer went around the page cache (where
   * the file system offers O_DIRECT at all); the rest did not. */
  uint64_t direct = an_blobstore_direct_bytes(p.b);
  if (_i == 0 || !direct_supported(&p.f))
    ck_assert_uint_eq(direct, 0);
  else
    ck_assert_uint_eq(direct, (uint64_t)(n - 1) * chunk);
  piped_close(&p);
  free(data);
}
END_TEST

/* A wrong chunk in the middle of a queue: the ones before it are kept (and
 * on disk), it is refused for its digest, the ones behind it are told to
 * continue at its offset; sending them again from there completes the
 * blob. */
START_TEST(test_pipelined_failure) {
  piped_t p;
  size_t len = 10 * 20000, chunk = 20000;
  uint8_t *data = random_bytes(len, 22);
  char err[512], partial[600];
  uint64_t offset = 1;
  piped_open(&p, data, len);
  for (int i = 0; i < 10; i++)
    queue_chunk(&p, data, chunk, i, i == 4);
  piped_run(&p);
  ck_assert_int_eq(p.seen.n, 10);
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(p.seen.r[i].rc, 0);
    ck_assert_uint_eq(p.seen.r[i].next, (uint64_t)(i + 1) * chunk);
  }
  ck_assert_int_eq(p.seen.r[4].rc, AN_EFORMAT);
  ck_assert_msg(strstr(p.seen.r[4].err, "does not match its digest"), "%s", p.seen.r[4].err);
  for (int i = 5; i < 10; i++) {
    ck_assert_int_eq(p.seen.r[i].rc, AN_ESTATE);
    ck_assert_uint_eq(p.seen.r[i].next, 4 * chunk);
  }
  partial_path(&p.f, p.digest, partial, sizeof partial);
  ck_assert_int_eq(file_size(partial), (off_t)(4 * chunk));
  ck_assert_int_eq(an_blobstore_begin(p.b, p.digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 4 * chunk);
  memset(&p.seen, 0, sizeof p.seen);
  for (int i = 4; i < 10; i++)
    queue_chunk(&p, data, chunk, i, 0);
  piped_run(&p);
  ck_assert_int_eq(p.seen.n, 6);
  ck_assert_int_eq(p.seen.r[9].rc, 0);
  ck_assert_int_eq(p.seen.r[9].complete, 1);
  expect_complete(&p.f, p.b, p.digest, data, len);
  piped_close(&p);
  free(data);
}
END_TEST

/* A second uploader's chunk out of place while the first one's are in
 * flight waits for them: it is told the verified end they reach, or, if
 * they complete the blob, that it is complete. */
START_TEST(test_pipelined_second_uploader) {
  piped_t p;
  size_t len = 5 * 30000, chunk = 30000;
  uint8_t *data = random_bytes(len, 23);
  char err[512];
  uint64_t next = 0;
  int complete = 0;
  uint8_t sha0[32], sha1[32];
  chunk_digest(data, chunk, sha0);
  chunk_digest(data + chunk, chunk, sha1);
  piped_open(&p, data, len);
  for (int i = 0; i < 3; i++) /* A: chunks 0..2 */
    queue_chunk(&p, data, chunk, i, 0);
  p.args[10] = (put_arg_t){&p.seen, 10}; /* B: chunk 0 again */
  ck_assert_int_eq(an_blobstore_put_async(p.b, p.digest, 0, data, chunk, sha0, NULL, on_put,
                                          &p.args[10], &next, &complete, err, sizeof err),
                   1);
  piped_run(&p);
  ck_assert_int_eq(p.seen.n, 4);
  ck_assert_int_eq(p.seen.r[10].rc, AN_ESTATE);
  ck_assert_uint_eq(p.seen.r[10].next, 3 * chunk);
  for (int i = 3; i < 5; i++) /* A: the rest */
    queue_chunk(&p, data, chunk, i, 0);
  p.args[11] = (put_arg_t){&p.seen, 11}; /* B: its chunk 1, behind A's last */
  ck_assert_int_eq(an_blobstore_put_async(p.b, p.digest, chunk, data + chunk, chunk, sha1, NULL,
                                          on_put, &p.args[11], &next, &complete, err, sizeof err),
                   1);
  piped_run(&p);
  ck_assert_int_eq(p.seen.n, 7);
  ck_assert_int_eq(p.seen.r[4].complete, 1);
  ck_assert_int_eq(p.seen.r[4].completed_here, 1);
  ck_assert_int_eq(p.seen.r[11].rc, 0);
  ck_assert_int_eq(p.seen.r[11].complete, 1);
  ck_assert_int_eq(p.seen.r[11].completed_here, 0); /* counted once, for A's last chunk */
  ck_assert_uint_eq(p.seen.r[11].next, len);
  expect_complete(&p.f, p.b, p.digest, data, len);
  piped_close(&p);
  free(data);
}
END_TEST

/* Chunks that each match their own digest, of a blob whose whole digest
 * is not its name: the last one is refused, the partial file is dropped,
 * no chunk is reported complete, and the upload starts over from nothing. */
START_TEST(test_pipelined_whole_mismatch) {
  piped_t p;
  size_t len = 8 * 20000, chunk = 20000;
  uint8_t *data = random_bytes(len, 24), *other = random_bytes(len, 25);
  char err[512], partial[600];
  uint64_t offset = 1;
  piped_open(&p, other, len); /* named after other bytes */
  for (int i = 0; i < 8; i++)
    queue_chunk(&p, data, chunk, i, 0);
  piped_run(&p);
  ck_assert_int_eq(p.seen.n, 8);
  ck_assert_int_eq(p.seen.r[7].rc, AN_EFORMAT);
  ck_assert_msg(strstr(p.seen.r[7].err, "upload dropped"), "%s", p.seen.r[7].err);
  for (int i = 0; i < 8; i++)
    ck_assert_int_eq(p.seen.r[i].complete, 0);
  partial_path(&p.f, p.digest, partial, sizeof partial);
  ck_assert_int_eq(file_size(partial), -1);
  ck_assert_int_eq(an_blobstore_has(p.b, p.digest, NULL), 0);
  ck_assert_int_eq(an_blobstore_begin(p.b, p.digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, 0);
  piped_close(&p);
  free(data);
  free(other);
}
END_TEST

/* A write that fails mid-queue (the file-size limit): that chunk and all
 * behind it are refused, every chunk is reported once, the ones reported
 * kept are exactly what the partial file holds (cut back to what a sync
 * covered), and a new begin() resumes there and completes the blob. */
START_TEST(test_pipelined_write_failure) {
  piped_t p;
  size_t len = 6 * 20000, chunk = 20000;
  uint8_t *data = random_bytes(len, 26);
  char err[512], partial[600];
  uint64_t offset = 1, kept = 0;
  int first_bad = -1;
  struct rlimit lim = {.rlim_cur = 2 * 20000 + 5000, .rlim_max = RLIM_INFINITY};
  piped_open(&p, data, len);
  signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  for (int i = 0; i < 6; i++)
    queue_chunk(&p, data, chunk, i, 0);
  piped_run(&p);
  lim.rlim_cur = RLIM_INFINITY;
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
  ck_assert_int_eq(p.seen.n, 6);
  for (int i = 0; i < 6; i++) {
    if (p.seen.r[i].rc == 0) {
      ck_assert_msg(first_bad < 0, "chunk %d kept after chunk %d failed", i, first_bad);
      kept = p.seen.r[i].next;
    } else if (first_bad < 0) {
      first_bad = i;
    }
  }
  ck_assert_int_ge(first_bad, 0);
  ck_assert_int_le(first_bad, 2); /* the third chunk cannot fit */
  partial_path(&p.f, p.digest, partial, sizeof partial);
  ck_assert_int_eq(file_size(partial), (off_t)kept);
  ck_assert_int_eq(an_blobstore_begin(p.b, p.digest, len, &offset, err, sizeof err), 0);
  ck_assert_uint_eq(offset, kept);
  memset(&p.seen, 0, sizeof p.seen);
  for (int i = (int)(kept / chunk); i < 6; i++)
    queue_chunk(&p, data, chunk, i, 0);
  piped_run(&p);
  ck_assert_int_eq(p.seen.r[5].rc, 0);
  ck_assert_int_eq(p.seen.r[5].complete, 1);
  expect_complete(&p.f, p.b, p.digest, data, len);
  piped_close(&p);
  free(data);
}
END_TEST

/* With a loop, the blocking put is refused rather than mixed in. */
START_TEST(test_blocking_put_needs_no_loop) {
  piped_t p;
  uint8_t data[100] = {1}, sha[32];
  char err[512] = "";
  uint64_t next = 0;
  int complete = 0;
  chunk_digest(data, sizeof data, sha);
  piped_open(&p, data, sizeof data);
  ck_assert_int_eq(an_blobstore_put(p.b, p.digest, 0, data, sizeof data, sha, NULL, &next,
                                    &complete, err, sizeof err),
                   UV_EINVAL);
  piped_close(&p);
}
END_TEST

static Suite *blobstore_suite(void) {
  Suite *s = suite_create("blobstore");
  TCase *tc = tcase_create("uploads");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_one_chunk);
  tcase_add_test(tc, test_many_chunks);
  tcase_add_test(tc, test_two_uploads_of_one_blob);
  tcase_add_test(tc, test_prefix_digests);
  tcase_add_test(tc, test_empty_blob);
  tcase_add_test(tc, test_resume_after_reopen);
  tcase_add_test(tc, test_whole_partial_after_crash);
  tcase_add_test(tc, test_wrong_chunk_digest);
  tcase_add_test(tc, test_out_of_order);
  tcase_add_test(tc, test_wrong_whole_digest);
  tcase_add_test(tc, test_bad_digest_strings);
  tcase_add_test(tc, test_size_limits);
  tcase_add_test(tc, test_free_disk_floor);
  tcase_add_test(tc, test_many_uploads_evicted);
  suite_add_tcase(s, tc);
  TCase *piped = tcase_create("pipelined");
  tcase_set_timeout(piped, 60);
  tcase_add_loop_test(piped, test_pipelined_chunks, 0, 2);
  tcase_add_test(piped, test_pipelined_failure);
  tcase_add_test(piped, test_pipelined_second_uploader);
  tcase_add_test(piped, test_pipelined_whole_mismatch);
  tcase_add_test(piped, test_pipelined_write_failure);
  tcase_add_test(piped, test_blocking_put_needs_no_loop);
  suite_add_tcase(s, piped);
  return s;
}

AN_TEST_MAIN(blobstore_suite)
