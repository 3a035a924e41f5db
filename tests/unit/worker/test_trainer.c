/* The built-in trainer's recipe options on a small data set that NumPy
 * writes: samples whose every (channel, position) carries a large offset
 * of its own, like ArchNet codes, and a class signal much smaller than the
 * offsets. With --normalize image the exported model starts with the
 * standardisation, whose constants must be NumPy's mean image and
 * 1 / per-channel std; it must take the samples as stored and classify
 * them; with cnn-patch and a cosine schedule it must still train. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blob/npy.h"
#include "common/nn/onnx/onnx.h"
#include "proto/onnx.pb-c.h"
#include "tests/support/testutil.h"
#include "worker/trainer.h"

enum { N = 512, C = 2, H = 8, W = 8, HW = H * W, ITEM = C * HW, CLASSES = 2 };

/* Writes X.npy (float16, as the publisher stores codes) and Y.npy into
 * argv[1], and prints NumPy's mean image then 1 / per-channel std of the
 * centred values (computed on the float16 values as stored). */
static const char make_data[] =
    "import sys, numpy as np\n"
    "d = sys.argv[1]; rng = np.random.default_rng(5)\n"
    "n, c, h, w = 512, 2, 8, 8\n"
    "y = rng.integers(0, 2, n).astype(np.uint8)\n"
    "offset = rng.uniform(-40, 40, (c, h, w))\n"
    "x = offset + rng.normal(0, 1, (n, c, h, w)) * np.array([1.0, 3.0])[None, :, None, None]\n"
    "x[:, 0, 2:6, 2:6] += np.where(y == 1, 1.5, -1.5)[:, None, None]\n"
    "x = x.astype(np.float16)\n"
    "np.save(d + '/X.npy', x); np.save(d + '/Y.npy', y)\n"
    "xd = x.astype(np.float64); m = xd.mean(axis=0)\n"
    "s = np.sqrt(((xd - m) ** 2).mean(axis=(0, 2, 3)))\n"
    "print(' '.join(repr(float(v)) for v in np.concatenate([m.ravel(), 1 / s])))\n";

static void run_python(const char *script, const char *arg, float *out, size_t n) {
  char *text = an_test_python(script, arg);
  const char *p = text;
  for (size_t i = 0; i < n; i++) {
    char *end;
    out[i] = strtof(p, &end);
    ck_assert_msg(end != p, "python printed %zu numbers, expected %zu", i, n);
    p = end;
  }
  free(text);
}

/* The float values of initializer `name` in the ONNX file, or NULL. */
static float *initializer(Onnx__ModelProto *model, const char *name, size_t *count) {
  for (size_t i = 0; i < model->graph->n_initializer; i++) {
    Onnx__TensorProto *t = model->graph->initializer[i];
    if (strcmp(t->name, name) != 0)
      continue;
    *count = t->raw_data.len / sizeof(float);
    float *v = malloc(t->raw_data.len);
    ck_assert_ptr_nonnull(v);
    memcpy(v, t->raw_data.data, t->raw_data.len);
    return v;
  }
  return NULL;
}

static Onnx__ModelProto *read_model(const char *path) {
  FILE *f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  static uint8_t buf[1 << 22];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, len, buf);
  ck_assert_ptr_nonnull(m);
  return m;
}

/* Top-1 accuracy of the ONNX model on the samples as stored. */
static double onnx_accuracy(const char *onnx, const char *x_path, const char *y_path) {
  an_npy_t x = {0}, y = {0};
  char err[1024];
  ck_assert_int_eq(an_npy_map(x_path, &x, err, sizeof err), 0);
  ck_assert_int_eq(an_npy_map(y_path, &y, err, sizeof err), 0);
  float *in = malloc((size_t)N * ITEM * sizeof *in);
  ck_assert_ptr_nonnull(in);
  an_npy_to_f32(&x, 0, (size_t)N * ITEM, in);
  an_onnx_t *o = NULL;
  an_onnx_tensor_t t = {.dtype = AN_ONNX_FLOAT, .ndim = 4, .dims = {N, C, H, W}, .data = in};
  an_onnx_tensor_t out = {0};
  ck_assert_msg(an_onnx_load_file(onnx, NULL, &o, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_onnx_run(o, &t, 1, &out, 1, err, sizeof err) == 0, "%s", err);
  const float *logits = out.data;
  int correct = 0;
  for (int i = 0; i < N; i++)
    correct += (logits[2 * i + 1] > logits[2 * i]) == ((const uint8_t *)y.data)[i];
  an_onnx_tensor_free(&out);
  an_onnx_free(o);
  free(in);
  an_npy_free(&x);
  an_npy_free(&y);
  return (double)correct / N;
}

START_TEST(test_normalized_recipe) {
  float ref[ITEM + C];
  char err[1024], *x = an_test_scratch_path("X.npy"), *y = an_test_scratch_path("Y.npy"),
                  *onnx = an_test_scratch_path("m.onnx");
  run_python(make_data, an_test_scratch(), ref, ITEM + C);

  an_train_job_t job = {.x_path = x, .y_path = y, .c = C, .h = H, .w = W, .classes = CLASSES,
                        .out_path = onnx, .preset = "cnn-patch", .epochs = 4, .batch = 32,
                        .lr = 3e-3, .normalize = AN_TRAIN_NORM_IMAGE, .cosine = 1, .seed = 1};
  ck_assert_msg(an_trainer_builtin(&job, err, sizeof err) == 0, "%s", err);

  Onnx__ModelProto *model = read_model(onnx);
  size_t n_mean = 0, n_scale = 0;
  float *mean = initializer(model, "in_mean", &n_mean), *scale = initializer(model, "in_scale",
                                                                             &n_scale);
  ck_assert_msg(mean && scale, "the exported model has no standardisation");
  ck_assert_uint_eq(n_mean, ITEM);
  ck_assert_uint_eq(n_scale, C);
  for (int i = 0; i < ITEM; i++)
    ck_assert_msg(fabsf(mean[i] - ref[i]) <= 1e-4f * (1 + fabsf(ref[i])),
                  "mean[%d] %.7g vs numpy %.7g", i, mean[i], ref[i]);
  for (int c = 0; c < C; c++)
    ck_assert_msg(fabsf(scale[c] - ref[ITEM + c]) <= 1e-4f * ref[ITEM + c],
                  "scale[%d] %.7g vs numpy %.7g", c, scale[c], ref[ITEM + c]);
  ck_assert_str_eq(model->graph->node[0]->op_type, "Sub");
  ck_assert_str_eq(model->graph->node[1]->op_type, "Mul");
  free(mean);
  free(scale);
  onnx__model_proto__free_unpacked(model, NULL);

  /* The model takes the samples as stored and has learnt the signal. */
  double acc = onnx_accuracy(onnx, x, y);
  ck_assert_msg(acc >= 0.9, "training accuracy %.3f with standardised inputs", acc);

  /* Without the option, nothing is written in front of the model. */
  job.normalize = AN_TRAIN_NORM_NONE;
  job.epochs = 1;
  ck_assert_msg(an_trainer_builtin(&job, err, sizeof err) == 0, "%s", err);
  model = read_model(onnx);
  size_t n;
  ck_assert_ptr_null(initializer(model, "in_mean", &n));
  onnx__model_proto__free_unpacked(model, NULL);
  free(x);
  free(y);
  free(onnx);
}
END_TEST

static Suite *trainer_suite(void) {
  Suite *s = suite_create("trainer");
  TCase *tc = tcase_create("recipe");
  tcase_add_checked_fixture(tc, an_test_scratch_make, an_test_scratch_remove);
  tcase_add_test(tc, test_normalized_recipe);
  tcase_set_timeout(tc, 300);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(trainer_suite)
