/* Round trip: models trained by common/nn, exported as ONNX, loaded by the
 * checked reader and run, give the same outputs as common/nn (1e-4). The
 * exported files also pass the reader's checks, which are the ones applied
 * to workers' uploads. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/onnx/onnx.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

static char *tmp_file(const char *name) {
  char *dir = an_test_tmpdir(), *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  free(dir);
  return p;
}

static void fill(float *x, size_t n, uint64_t seed) {
  an_rng_t r;
  an_rng_seed(&r, seed);
  for (size_t i = 0; i < n; i++)
    x[i] = (float)(2 * an_rng_uniform(&r) - 1);
}

/* A few Adam steps on random data with an MSE pull toward zero, so that
 * weights and batch-norm statistics are no longer their initial values. */
static void train_a_little(an_model_t *m, int batch) {
  char err[256];
  int in[3], out[3];
  an_optim_t *opt = NULL;
  an_model_input_shape(m, in);
  an_model_output_shape(m, out);
  size_t nin = (size_t)batch * in[0] * in[1] * in[2], nout = (size_t)batch * out[0] * out[1] * out[2];
  float *x = malloc(nin * sizeof *x), *target = calloc(nout, sizeof *target);
  const float *y;
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = 1e-2f};
  ck_assert_int_eq(an_model_plan(m, batch, 1, err, sizeof err), 0);
  ck_assert_int_eq(an_optim_new(&op, an_model_param_count(m), &opt), 0);
  for (int step = 0; step < 3; step++) {
    fill(x, nin, 100 + (uint64_t)step);
    ck_assert_int_eq(an_model_forward(m, x, 1, &y), 0);
    an_loss_mse(y, target, nout, an_model_output_grad(m));
    ck_assert_int_eq(an_model_backward(m, NULL), 0);
    an_optim_step(opt, an_model_params(m), an_model_grads(m));
  }
  an_optim_free(opt);
  free(x);
  free(target);
}

/* common/nn's evaluation output for x, copied. */
static float *nn_eval(an_model_t *m, const float *x, int batch, size_t *n) {
  char err[256];
  int out[3];
  const float *y;
  ck_assert_int_eq(an_model_plan(m, batch, 0, err, sizeof err), 0);
  ck_assert_int_eq(an_model_forward(m, x, 0, &y), 0);
  an_model_output_shape(m, out);
  *n = (size_t)batch * out[0] * out[1] * out[2];
  float *copy = malloc(*n * sizeof *copy);
  memcpy(copy, y, *n * sizeof *copy);
  return copy;
}

static an_onnx_tensor_t onnx_eval(const char *path, const float *x, int batch, const int chw[3]) {
  an_onnx_t *o = NULL;
  char err[1024];
  an_onnx_tensor_t in = {.dtype = AN_ONNX_FLOAT, .ndim = 4,
                         .dims = {batch, chw[0], chw[1], chw[2]}, .data = (void *)x};
  an_onnx_tensor_t out = {0};
  ck_assert_msg(an_onnx_load_file(path, NULL, &o, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_onnx_run(o, &in, 1, &out, 1, err, sizeof err) == 0, "%s", err);
  an_onnx_free(o);
  return out;
}

static void expect_close(const float *a, const float *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    ck_assert_msg(fabsf(a[i] - b[i]) <= 1e-4f * (1 + fabsf(b[i])), "[%zu] onnx %.7g vs nn %.7g", i,
                  a[i], b[i]);
}

static void round_trip(const char *spec, int batch) {
  an_model_t *m = NULL;
  char err[512], *path = tmp_file("m.onnx");
  int in[3];
  size_t n;
  ck_assert_msg(an_model_parse(spec, &m, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 3, err, sizeof err), 0);
  train_a_little(m, 4);
  an_model_input_shape(m, in);
  size_t nin = (size_t)batch * in[0] * in[1] * in[2];
  float *x = malloc(nin * sizeof *x);
  fill(x, nin, 9);
  float *want = nn_eval(m, x, batch, &n);
  an_onnx_export_opts_t opts = {.output_name = "logits", .last = -1};
  ck_assert_msg(an_onnx_export(m, &opts, path, err, sizeof err) == 0, "%s", err);
  an_onnx_tensor_t got = onnx_eval(path, x, batch, in);
  size_t got_n = 1;
  for (int i = 0; i < got.ndim; i++)
    got_n *= (size_t)got.dims[i];
  ck_assert_uint_eq(got_n, n);
  ck_assert_int_eq(got.dims[0], batch);
  expect_close(got.data, want, n);
  an_onnx_tensor_free(&got);
  free(want);
  free(x);
  unlink(path);
  free(path);
  an_model_free(m);
}

START_TEST(test_small_cnn) {
  char spec[4096], err[256];
  ck_assert_int_eq(an_preset_spec("cnn-small", NULL, 10, spec, sizeof spec, err, sizeof err), 0);
  round_trip(spec, 5);
  round_trip(spec, 1); /* the same file at another batch size */
}
END_TEST

START_TEST(test_every_layer_kind) {
  round_trip("input 3 8 8\n"
             "a: conv 6 k=3 p=1\n"
             "batchnorm\n"
             "leakyrelu alpha=0.2\n"
             "conv 6 k=3 p=1 bias=0\n"
             "add a\n"
             "b: maxpool k=2\n"
             "convt 4 k=2 s=2\n"
             "sigmoid\n"
             "avgpool k=3 s=2 p=1\n"
             "tanh\n"
             "dropout p=0.3\n"
             "gap\n"
             "flatten\n"
             "linear 12\n"
             "reshape 3 2 2\n"
             "conv 5 k=2\n"
             "linear 7\n",
             3);
}
END_TEST

START_TEST(test_archnet_halves) {
  /* The publisher's key: H-encoder and L-decoder as two files whose
   * composition is the trained model. */
  an_model_t *m = NULL;
  char err[512], *enc = tmp_file("h_encoder.onnx"), *dec = tmp_file("l_decoder.onnx");
  int in[3] = {3, 32, 32}, code_shape[3];
  size_t n;
  ck_assert_int_eq(an_model_preset("archnet-cifar10", NULL, 0, &m, err, sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 5, err, sizeof err), 0);
  train_a_little(m, 2);
  int code = an_model_find_label(m, "code");
  ck_assert_int_ge(code, 0);
  an_layer_info_t li;
  an_model_layer_info(m, code, &li);
  memcpy(code_shape, li.outshape, sizeof code_shape);
  ck_assert_int_eq(code_shape[1], 64);
  an_onnx_export_opts_t e = {.output_name = "code", .first = 0, .last = code};
  an_onnx_export_opts_t d = {.input_name = "code", .output_name = "image", .first = code + 1,
                             .last = -1};
  ck_assert_msg(an_onnx_export(m, &e, enc, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_onnx_export(m, &d, dec, err, sizeof err) == 0, "%s", err);
  float x[2 * 3 * 32 * 32];
  fill(x, sizeof x / sizeof *x, 4);
  float *want = nn_eval(m, x, 2, &n);
  an_onnx_tensor_t h = onnx_eval(enc, x, 2, in);
  ck_assert_int_eq(h.dims[1], 10);
  ck_assert_int_eq(h.dims[2], 64);
  an_onnx_tensor_t img = onnx_eval(dec, h.data, 2, code_shape);
  expect_close(img.data, want, n);
  an_onnx_tensor_free(&h);
  an_onnx_tensor_free(&img);
  free(want);
  unlink(enc);
  unlink(dec);
  free(enc);
  free(dec);
  an_model_free(m);
}
END_TEST

START_TEST(test_range_errors) {
  an_model_t *m = NULL;
  char err[512], *path = tmp_file("x.onnx");
  ck_assert_int_eq(an_model_parse("input 2 4 4\na: conv 2 k=3 p=1\nrelu\nadd a\n", &m, err,
                                  sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 1, err, sizeof err), 0);
  an_onnx_export_opts_t cut = {.first = 1, .last = -1}; /* add reads layer 0 */
  ck_assert_int_ne(an_onnx_export(m, &cut, path, err, sizeof err), 0);
  ck_assert_ptr_nonnull(strstr(err, "outside the exported range"));
  an_onnx_export_opts_t bad = {.first = 2, .last = 1};
  ck_assert_int_ne(an_onnx_export(m, &bad, path, err, sizeof err), 0);
  ck_assert_int_ne(access(path, F_OK), 0); /* nothing half-written */
  free(path);
  an_model_free(m);
}
END_TEST

static Suite *export_suite(void) {
  Suite *s = suite_create("onnx-export");
  TCase *tc = tcase_create("round-trip");
  tcase_add_test(tc, test_small_cnn);
  tcase_add_test(tc, test_every_layer_kind);
  tcase_add_test(tc, test_archnet_halves);
  tcase_add_test(tc, test_range_errors);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(export_suite)
