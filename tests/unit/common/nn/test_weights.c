/* Saving and loading trained models: an exact round trip (parameters,
 * state, spec and outputs), and every kind of damaged file refused with a
 * message. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/nn/model.h"
#include "common/nn/spec.h"
#include "common/nn/weights.h"
#include "tests/support/testutil.h"

static const char spec[] = "input 2 6 6\n"
                           "a: conv 4 k=3 p=1 bias=0\n"
                           "batchnorm eps=0.001 momentum=0.2\n"
                           "leakyrelu alpha=0.125\n"
                           "conv 4 k=3 p=1 from=a\n"
                           "add a\n"
                           "maxpool k=2 s=2 p=0\n"
                           "dropout p=0.25\n"
                           "flatten\n"
                           "linear 5\n";

static char *tmp_path(void) {
  char *dir = an_test_tmpdir(), *p = malloc(strlen(dir) + 16);
  sprintf(p, "%s/m.anw", dir);
  free(dir);
  return p;
}

static an_model_t *trained(void) {
  an_model_t *m = NULL;
  char err[256];
  ck_assert_int_eq(an_model_parse(spec, &m, err, sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_KAIMING, 5, err, sizeof err), 0);
  /* Non-default state, as after training. */
  for (size_t i = 0; i < an_model_state_count(m); i++)
    an_model_state(m)[i] = 0.5f + (float)i;
  return m;
}

START_TEST(test_round_trip) {
  an_model_t *a = trained(), *b = NULL;
  char err[512], sa[4096], sb[4096], *path = tmp_path();
  float x[2 * 72];
  const float *ya, *yb;
  float keep[10];
  ck_assert_msg(an_weights_save(a, path, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_weights_load(path, &b, err, sizeof err) == 0, "%s", err);
  ck_assert_uint_eq(an_model_param_count(a), an_model_param_count(b));
  ck_assert_mem_eq(an_model_params(a), an_model_params(b),
                   an_model_param_count(a) * sizeof(float));
  ck_assert_mem_eq(an_model_state(a), an_model_state(b), an_model_state_count(a) * sizeof(float));
  ck_assert_int_eq(an_model_to_spec(a, sa, sizeof sa), 0);
  ck_assert_int_eq(an_model_to_spec(b, sb, sizeof sb), 0);
  ck_assert_str_eq(sa, sb);
  for (int i = 0; i < 2 * 72; i++)
    x[i] = (float)((i * 37) % 11) / 11.0f;
  ck_assert_int_eq(an_model_plan(a, 2, 0, err, sizeof err), 0);
  ck_assert_int_eq(an_model_plan(b, 2, 0, err, sizeof err), 0);
  ck_assert_int_eq(an_model_forward(a, x, 0, &ya), 0);
  memcpy(keep, ya, sizeof keep);
  ck_assert_int_eq(an_model_forward(b, x, 0, &yb), 0);
  ck_assert_mem_eq(keep, yb, sizeof keep);
  an_model_free(a);
  an_model_free(b);
  unlink(path);
  free(path);
}
END_TEST

/* Rewrites the saved file through `damage` and expects a refusal. */
static void expect_refused(void (*damage)(uint8_t *buf, size_t *len), const char *needle) {
  an_model_t *a = trained(), *b = NULL;
  char err[512], *path = tmp_path();
  FILE *f;
  long len;
  uint8_t *buf;
  ck_assert_int_eq(an_weights_save(a, path, err, sizeof err), 0);
  f = fopen(path, "rb");
  fseek(f, 0, SEEK_END);
  len = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)len + 16);
  ck_assert_int_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  size_t n = (size_t)len;
  damage(buf, &n);
  f = fopen(path, "wb");
  fwrite(buf, 1, n, f);
  fclose(f);
  ck_assert_int_ne(an_weights_load(path, &b, err, sizeof err), 0);
  ck_assert_ptr_null(b);
  ck_assert_msg(strstr(err, needle) != NULL, "message '%s' lacks '%s'", err, needle);
  free(buf);
  an_model_free(a);
  unlink(path);
  free(path);
}

static void flip_param(uint8_t *b, size_t *n) { b[*n - 40] ^= 0x01; }
static void truncate_end(uint8_t *b, size_t *n) { (void)b; *n -= 50; }
static void truncate_head(uint8_t *b, size_t *n) { (void)b; *n = 10; }
static void bad_magic(uint8_t *b, size_t *n) { (void)n; b[0] = 'X'; }
static void bad_version(uint8_t *b, size_t *n) { (void)n; b[4] = 9; }
static void huge_spec(uint8_t *b, size_t *n) { (void)n; b[27] = 0x7f; }
static void wrong_count(uint8_t *b, size_t *n) { (void)n; b[8] ^= 0x04; }
static void bad_spec(uint8_t *b, size_t *n) { (void)n; memcpy(b + 28, "inpux", 5); }
static void trailing(uint8_t *b, size_t *n) { b[(*n)++] = 0; }

START_TEST(test_damage_refused) {
  expect_refused(flip_param, "checksum");
  expect_refused(truncate_end, "truncated");
  expect_refused(truncate_head, "magic");
  expect_refused(bad_magic, "magic");
  expect_refused(bad_version, "version");
  expect_refused(huge_spec, "absurd");
  expect_refused(wrong_count, "header says");
  expect_refused(bad_spec, "spec is invalid");
  expect_refused(trailing, "after the checksum");
}
END_TEST

START_TEST(test_many_labelled_layers) {
  /* More layers than the first node allocation: labels must survive the
   * node array moving (found in review; ASan checks the reads). */
  char spec_text[4096], out[4096], err[256];
  size_t used = (size_t)snprintf(spec_text, sizeof spec_text, "input 2 4 4\n");
  for (int i = 0; i < 40; i++)
    used += (size_t)snprintf(spec_text + used, sizeof spec_text - used, "l%d: relu\n", i);
  used += (size_t)snprintf(spec_text + used, sizeof spec_text - used, "add l3\n");
  an_model_t *m = NULL, *again = NULL;
  ck_assert_msg(an_model_parse(spec_text, &m, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(an_model_to_spec(m, out, sizeof out), 0);
  ck_assert_ptr_nonnull(strstr(out, "l39: relu"));
  ck_assert_ptr_nonnull(strstr(out, "add l3"));
  ck_assert_int_eq(an_model_parse(out, &again, err, sizeof err), 0);
  ck_assert_int_eq(an_model_layer_count(again), 41);
  an_model_free(again);
  an_model_free(m);
}
END_TEST

START_TEST(test_missing_file) {
  an_model_t *m = NULL;
  char err[512];
  ck_assert_int_ne(an_weights_load("/nonexistent/m.anw", &m, err, sizeof err), 0);
  ck_assert_ptr_nonnull(strstr(err, "/nonexistent/m.anw"));
}
END_TEST

static Suite *weights_suite(void) {
  Suite *s = suite_create("weights");
  TCase *tc = tcase_create("weights");
  tcase_add_test(tc, test_round_trip);
  tcase_add_test(tc, test_damage_refused);
  tcase_add_test(tc, test_missing_file);
  tcase_add_test(tc, test_many_labelled_layers);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(weights_suite)
