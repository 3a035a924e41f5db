/* Layers against PyTorch: inputs, parameters, outputs and gradients that
 * PyTorch 1.13 computed (tests/golden/make_golden.py wrote them; the data
 * is committed, so this test needs no PyTorch). Tolerance 1e-4. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/nn/model.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

static const char *const cases[] = {
    "conv3x3_p1",     "conv2x2_s2",     "convT2x2_s2", "linear",          "convT3x3_s2_p1",
    "conv5x5_s2_p2",  "maxpool3_s2_p1", "avgpool3_s2_p1", "gap",          "batchnorm_train",
    "leakyrelu",      "sigmoid",        "tanh",
};

/* Reads NAME_TAG into a new buffer; *n gets the float count. NULL if absent. */
static float *load(const char *name, const char *tag, size_t *n) {
  char path[1024];
  FILE *f;
  long bytes;
  float *buf;
  snprintf(path, sizeof path, "%s/%s_%s.raw", getenv("ARCHNET_GOLDEN_DIR"), name, tag);
  if (!(f = fopen(path, "rb")))
    return NULL;
  fseek(f, 0, SEEK_END);
  bytes = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)bytes + 4);
  ck_assert_ptr_nonnull(buf);
  ck_assert_int_eq(fread(buf, 1, (size_t)bytes, f), (size_t)bytes);
  fclose(f);
  *n = (size_t)bytes / 4;
  return buf;
}

static char *load_spec(const char *name) {
  char path[1024], *text = calloc(1, 4096);
  FILE *f;
  snprintf(path, sizeof path, "%s/%s.spec", getenv("ARCHNET_GOLDEN_DIR"), name);
  f = fopen(path, "r");
  ck_assert_msg(f != NULL, "missing %s", path);
  ck_assert_int_gt(fread(text, 1, 4095, f), 0);
  fclose(f);
  return text;
}

static void expect_close(const char *what, const char *name, const float *got, const float *want,
                         size_t n) {
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-4f * (1 + fabsf(want[i])),
                  "%s %s[%zu]: %.7g, PyTorch %.7g", name, what, i, got[i], want[i]);
}

START_TEST(test_against_torch) {
  const char *name = cases[_i];
  char err[512], *spec = load_spec(name);
  an_model_t *m = NULL;
  an_layer_info_t li;
  size_t nx, ny, ngy, ngx, nw = 0, nb = 0, ngw = 0, ngb = 0;
  float *x = load(name, "x", &nx), *y = load(name, "y", &ny), *gy = load(name, "gy", &ngy);
  float *gx = load(name, "gx", &ngx), *w = load(name, "w", &nw), *b = load(name, "b", &nb);
  float *gw = load(name, "gw", &ngw), *gb = load(name, "gb", &ngb);
  int in[3];
  const float *out;

  ck_assert_msg(x && y && gy && gx, "%s: golden files missing", name);
  ck_assert_msg(an_model_parse(spec, &m, err, sizeof err) == 0, "%s: %s", name, err);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 1, err, sizeof err), 0);
  an_model_input_shape(m, in);
  int batch = (int)(nx / ((size_t)in[0] * in[1] * in[2]));
  ck_assert_int_eq(an_model_plan(m, batch, 1, err, sizeof err), 0);
  ck_assert_int_eq(an_model_layer_info(m, 0, &li), 0);
  ck_assert_uint_eq(li.w_count, nw);
  ck_assert_uint_eq(li.b_count, nb);
  if (nw)
    memcpy(an_model_params(m) + li.w_off, w, nw * sizeof(float));
  if (nb)
    memcpy(an_model_params(m) + li.b_off, b, nb * sizeof(float));

  ck_assert_int_eq(an_model_forward(m, x, 1, &out), 0);
  expect_close("output", name, out, y, ny);
  memcpy(an_model_output_grad(m), gy, ngy * sizeof(float));
  float *dx = malloc(nx * sizeof(float));
  ck_assert_int_eq(an_model_backward(m, dx), 0);
  expect_close("input gradient", name, dx, gx, ngx);
  if (nw)
    expect_close("weight gradient", name, an_model_grads(m) + li.w_off, gw, ngw);
  if (nb)
    expect_close("bias gradient", name, an_model_grads(m) + li.b_off, gb, ngb);

  free(dx);
  free(spec);
  free(x), free(y), free(gy), free(gx), free(w), free(b), free(gw), free(gb);
  an_model_free(m);
}
END_TEST

static Suite *golden_suite(void) {
  Suite *s = suite_create("torch-golden");
  TCase *tc = tcase_create("layers");
  tcase_add_loop_test(tc, test_against_torch, 0, (int)(sizeof cases / sizeof cases[0]));
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(golden_suite)
