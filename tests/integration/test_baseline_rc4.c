/* `archnet-publisher baseline rc4` run as a real process on a few hundred
 * MNIST images, its .npy files checked by tests/integration/rc4_check.py:
 * RC4 written in Python from its definition (and checked there against
 * published vectors), MNIST read with Python's gzip, arrays read with Debian's
 * numpy. Then bad input: each mistake gets a sentence and the documented
 * exit status (2 for usage, 1 for a failure at run time). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/blob/npy.h"
#include "tests/support/testutil.h"

#define PYTHON "/usr/bin/python3"
#define LIMIT "300"

static char *env(const char *name) {
  char *v = getenv(name);
  ck_assert_msg(v != NULL, "%s is not set; run through meson", name);
  return v;
}

static char *out_dir(const char *name) {
  static char path[1024];
  ck_assert_int_lt(snprintf(path, sizeof path, "%s/%s", an_test_scratch(), name), (int)sizeof path);
  return path;
}

/* Runs the command, checks its report, then has Python check the files. */
static void run_and_check(const char *mode, const char *dtype, const char *key,
                          const char *val_fraction, const char *seed, const char *summary,
                          const char *per_image) {
  char out[1024], script[1024], *so = NULL, *se = NULL;
  snprintf(out, sizeof out, "%s", out_dir(mode));
  char *argv[] = {env("ARCHNET_PUBLISHER"), "baseline", "rc4", "--data",
                  env("ARCHNET_MNIST_DIR"), "--out", out, "--key", (char *)key, "--mode",
                  (char *)mode, "--dtype", (char *)dtype, "--limit", LIMIT, "--val-fraction",
                  (char *)val_fraction, "--seed", (char *)seed, NULL};
  int status = an_test_run(argv, &so, &se);
  ck_assert_msg(status == 0, "exit %d: %s", status, se ? se : "");
  ck_assert_msg(strstr(so, summary) != NULL, "report lacks '%s': %s", summary, so);
  ck_assert_msg(strstr(so, per_image) != NULL, "report lacks '%s': %s", per_image, so);
  ck_assert_msg(strstr(so, "total: ") != NULL, "no total in: %s", so);
  free(so);
  free(se);

  snprintf(script, sizeof script, "%s/tests/integration/rc4_check.py",
           env("ARCHNET_SOURCE_ROOT"));
  char *check[] = {PYTHON, script, out, env("ARCHNET_MNIST_DIR"), (char *)mode, (char *)key,
                   LIMIT, (char *)val_fraction, (char *)dtype, NULL};
  so = se = NULL;
  status = an_test_run(check, &so, &se);
  if (status != 0 && se && strstr(se, "No module named 'numpy'"))
    ck_abort_msg("python3-numpy is missing: it is a declared test dependency");
  ck_assert_msg(status == 0 && so && strcmp(so, "ok\n") == 0, "rc4_check.py (%s, %s): %s%s",
                mode, dtype, so ? so : "", se ? se : "");
  free(so);
  free(se);
}

START_TEST(test_stream_f16) {
  run_and_check("stream", "f16", "0102030405", "0.1", "1",
                "rc4 stream: 270 train, 30 validation, 300 test images of 1x28x28",
                "bytes per image: 1568 (f16)");
}
END_TEST

START_TEST(test_per_image_u8_long_key) {
  char key[513];
  for (int i = 0; i < 256; i++) /* the longest key RC4 takes */
    snprintf(key + 2 * i, 3, "%02x", (unsigned)(255 - i) ^ 0x5a);
  run_and_check("per-image", "u8", key, "0.25", "7",
                "rc4 per-image: 225 train, 75 validation, 300 test images of 1x28x28",
                "bytes per image: 784 (u8)");
}
END_TEST

START_TEST(test_per_image_f32) {
  run_and_check("per-image", "f32", "00112233445566778899AABBCCDDEEFF", "0", "3",
                "rc4 per-image: 300 train, 0 validation, 300 test images of 1x28x28",
                "bytes per image: 3136 (f32)");
}
END_TEST

/* Same arguments, same files: the split is seeded and RC4 is deterministic. */
START_TEST(test_repeatable) {
  char a[1024], b[1024], cmd[2300], *so = NULL;
  for (int r = 0; r < 2; r++) {
    char *out = r ? b : a;
    snprintf(out, 1024, "%s", out_dir(r ? "b" : "a"));
    char *argv[] = {env("ARCHNET_PUBLISHER"), "baseline", "rc4", "--data",
                    env("ARCHNET_MNIST_DIR"), "--out", out, "--key", "0a0b0c0d0e", "--limit",
                    "50", NULL};
    an_test_expect_run(argv, 0, "45 train, 5 validation, 50 test", NULL);
  }
  snprintf(cmd, sizeof cmd, "for f in train_x train_y val_x val_y test_x test_y; do "
                            "cmp \"$1/$f.npy\" \"$2/$f.npy\" || exit 1; done; echo same");
  char *argv[] = {"/bin/sh", "-c", cmd, "sh", a, b, NULL};
  ck_assert_int_eq(an_test_run(argv, &so, NULL), 0);
  ck_assert_str_eq(so, "same\n");
  free(so);
}
END_TEST

/* A folder of training files only: the test split is skipped, with a note. */
START_TEST(test_train_only_npy) {
  static const int64_t xs[] = {4, 3, 2, 2}, ys[] = {4};
  uint8_t x[4 * 12], y[4] = {0, 1, 2, 1};
  char data[1024], path[1100], err[512];
  struct stat st;
  snprintf(data, sizeof data, "%s", out_dir("data"));
  ck_assert_int_eq(mkdir(data, 0755), 0);
  for (int i = 0; i < 48; i++)
    x[i] = (uint8_t)i;
  snprintf(path, sizeof path, "%s/train_x.npy", data);
  ck_assert_int_eq(an_npy_write(path, AN_NPY_U8, 4, xs, x, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/train_y.npy", data);
  ck_assert_int_eq(an_npy_write(path, AN_NPY_U8, 1, ys, y, err, sizeof err), 0);
  char *argv[] = {env("ARCHNET_PUBLISHER"), "baseline", "rc4", "--data", data, "--out",
                  out_dir("out"), "--key", "0102030405", "--dtype", "u8", NULL};
  an_test_expect_run(argv, 0, "3 train, 1 validation, 0 test images of 3x2x2",
                     "no test split");
  an_test_expect_run(argv, 0, "bytes per image: 12 (u8)", NULL);
  snprintf(path, sizeof path, "%s/val_y.npy", out_dir("out"));
  ck_assert_int_eq(stat(path, &st), 0);
  snprintf(path, sizeof path, "%s/test_x.npy", out_dir("out"));
  ck_assert_int_ne(stat(path, &st), 0);
}
END_TEST

START_TEST(test_bad_input) {
  char *pub = env("ARCHNET_PUBLISHER"), *mnist = env("ARCHNET_MNIST_DIR"), *out = out_dir("o");
  char absent[1100];
  snprintf(absent, sizeof absent, "%s/absent", an_test_scratch());
#define RC4(...) (char *[]){pub, "baseline", "rc4", __VA_ARGS__, NULL}
  an_test_expect_run(RC4("--data", mnist, "--out", out), 2, NULL, "give --key HEX");
  an_test_expect_run(RC4("--key", "0102030405", "--out", out), 2, NULL, "give --data DIR");
  an_test_expect_run(RC4("--key", "0102030405", "--data", mnist), 2, NULL, "give --out DIR");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "01020304zz"), 2, NULL,
                     "--key: 'z' at position 9 is not a hex digit");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "010203040"), 2, NULL,
                     "--key: the key must be 5 to 256 bytes");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "01020304"), 2, NULL,
                     "5 to 256 bytes");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "0102030405", "--mode", "ecb"),
                     2, NULL, "--mode: unknown mode 'ecb' (expected stream or per-image)");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "0102030405", "--dtype", "f64"),
                     2, NULL, "--dtype: unknown dtype 'f64'");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "0102030405",
                         "--val-fraction", "1"),
                     2, NULL, "--val-fraction");
  an_test_expect_run(RC4("--data", mnist, "--out", out, "--key", "0102030405", "extra"), 2, NULL,
                     "unexpected argument 'extra'");
  an_test_expect_run(RC4("--data", absent, "--out", out, "--key", "0102030405"), 1, NULL,
                     "absent: cannot open the dataset folder: No such file or directory");
  an_test_expect_run(RC4("--data", (char *)an_test_scratch(), "--out", out, "--key", "0102030405"),
                     1, NULL, "no dataset found; looked for MNIST idx files");
  an_test_expect_run((char *[]){pub, "baseline", NULL}, 2, NULL, "baseline rc4");
  an_test_expect_run((char *[]){pub, "baseline", "des", NULL}, 2, NULL, "unknown baseline 'des'");
  an_test_expect_run((char *[]){pub, "baseline", "--help", NULL}, 0, "rc4", NULL);
  an_test_expect_run(RC4("--help"), 0, "--mode=MODE", NULL);
#undef RC4
}
END_TEST

/* Without the legacy provider RC4 cannot run, and the message says why. */
START_TEST(test_no_legacy_provider) {
  char modules[1100];
  snprintf(modules, sizeof modules, "%s/no-modules-here", an_test_scratch());
  ck_assert_int_eq(setenv("OPENSSL_MODULES", modules, 1), 0);
  char *argv[] = {env("ARCHNET_PUBLISHER"), "baseline", "rc4", "--data", env("ARCHNET_MNIST_DIR"),
                  "--out", out_dir("o"), "--key", "0102030405", NULL};
  an_test_expect_run(argv, 1, NULL, "RC4 is unavailable: OpenSSL's legacy provider");
}
END_TEST

static Suite *baseline_rc4_suite(void) {
  Suite *s = suite_create("baseline-rc4");
  TCase *tc = tcase_create("cli");
  tcase_add_checked_fixture(tc, an_test_scratch_make, an_test_scratch_remove);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_stream_f16);
  tcase_add_test(tc, test_per_image_u8_long_key);
  tcase_add_test(tc, test_per_image_f32);
  tcase_add_test(tc, test_repeatable);
  tcase_add_test(tc, test_train_only_npy);
  tcase_add_test(tc, test_bad_input);
  tcase_add_test(tc, test_no_legacy_provider);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(baseline_rc4_suite)
