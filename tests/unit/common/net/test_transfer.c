/* The digests an upload sends (an_blob_digests_of): the blob's SHA-256 and
 * the SHA-256 of each prefix ending on a chunk boundary, checked against
 * coreutils' sha256sum of the same bytes (`head -c END FILE | sha256sum`),
 * for sizes around the chunk grid. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/net/transfer.h"
#include "tests/support/testutil.h"

/* sha256sum of the first `len` bytes of `path`, as 64 hex characters. */
static void sha256sum_prefix(const char *path, uint64_t len, char hex[65]) {
  char cmd[2048], *out = NULL;
  snprintf(cmd, sizeof cmd, "head -c %llu '%s' | sha256sum", (unsigned long long)len, path);
  char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  ck_assert_int_eq(an_test_run(argv, &out, NULL), 0);
  ck_assert_msg(out && strlen(out) >= 64, "sha256sum printed: %s", out ? out : "");
  memcpy(hex, out, 64);
  hex[64] = '\0';
  free(out);
}

static void hex32(const uint8_t d[32], char hex[65]) {
  for (int i = 0; i < 32; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static char *write_file(uint64_t size, uint64_t seed) {
  char *path = an_test_scratch_path("blob.bin");
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  for (uint64_t i = 0; i < size; i++)
    fputc((int)(an_test_rand(&seed) & 0xff), f);
  ck_assert_int_eq(fclose(f), 0);
  return path;
}

static const uint64_t sizes[] = {0, 1, 4095, 4096, 4097, 3 * 4096 + 2048, 8 * 4096};

START_TEST(test_prefixes_match_sha256sum) {
  uint64_t size = sizes[_i];
  char *path = write_file(size, 7 + size);
  char err[512], want[65], got[65];
  an_blob_digests_t d;
  ck_assert_msg(an_blob_digests_of(path, 4096, &d, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(d.size, size);
  ck_assert_uint_eq(d.chunk_bytes, 4096);
  ck_assert_uint_eq(d.n_chunks, (size + 4095) / 4096);
  sha256sum_prefix(path, size, want);
  ck_assert_str_eq(d.sha256, want);
  for (size_t k = 0; k < d.n_chunks; k++) {
    uint64_t end = (k + 1) * 4096 < size ? (k + 1) * 4096 : size;
    sha256sum_prefix(path, end, want);
    hex32(d.prefix[k], got);
    ck_assert_msg(strcmp(got, want) == 0, "size %llu, prefix to %llu: %s, sha256sum %s",
                  (unsigned long long)size, (unsigned long long)end, got, want);
  }
  /* The whole-file digest alone agrees too. */
  uint64_t n = 0;
  ck_assert(an_file_sha256(path, got, &n, err, sizeof err) == 0);
  ck_assert_str_eq(got, d.sha256);
  ck_assert_uint_eq(n, size);
  an_blob_digests_free(&d);
  free(path);
}
END_TEST

START_TEST(test_default_chunk_and_errors) {
  char *path = write_file(5000, 3);
  char err[512];
  an_blob_digests_t d;
  ck_assert(an_blob_digests_of(path, 0, &d, err, sizeof err) == 0);
  ck_assert_uint_eq(d.chunk_bytes, 1u << 20);
  ck_assert_uint_eq(d.n_chunks, 1);
  an_blob_digests_free(&d);
  an_blob_digests_free(&d); /* twice is harmless */
  free(path);

  char *missing = an_test_scratch_path("no-such-file");
  int rc = an_blob_digests_of(missing, 4096, &d, err, sizeof err);
  ck_assert_int_ne(rc, 0);
  ck_assert_msg(strstr(err, "no-such-file") && strstr(err, "cannot open"), "%s", err);
  ck_assert_ptr_null(d.prefix);
  free(missing);
}
END_TEST

static Suite *transfer_suite(void) {
  Suite *s = suite_create("transfer");
  TCase *tc = tcase_create("digests");
  tcase_add_checked_fixture(tc, an_test_scratch_make, an_test_scratch_remove);
  tcase_add_loop_test(tc, test_prefixes_match_sha256sum, 0, sizeof sizes / sizeof sizes[0]);
  tcase_add_test(tc, test_default_chunk_and_errors);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(transfer_suite)
