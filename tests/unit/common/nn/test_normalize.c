/* The training recipe's pieces outside the layers: input standardisation
 * (common/nn/normalize.h) checked against NumPy, its ONNX form checked by
 * running the exported model on raw inputs against common/nn on inputs that
 * NumPy standardised, and the cosine learning-rate schedule checked against
 * PyTorch's CosineAnnealingLR. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/nn/model.h"
#include "common/nn/normalize.h"
#include "common/nn/onnx/export.h"
#include "common/nn/onnx/onnx.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

enum { N = 9, C = 3, H = 4, W = 5, HW = H * W, ITEM = C * HW };

/* N samples like ArchNet codes: each (channel, position) has its own large
 * offset, each channel its own spread. */
static void make_samples(float *x) {
  an_rng_t r;
  an_rng_seed(&r, 7);
  float offset[ITEM];
  for (int i = 0; i < ITEM; i++)
    offset[i] = (float)(8 * an_rng_uniform(&r) - 4);
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < HW; i++)
        x[n * ITEM + c * HW + i] =
            offset[c * HW + i] + (float)((c + 1) * (2 * an_rng_uniform(&r) - 1));
}

static void write_raw(const char *path, const float *x, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(x, sizeof *x, n, f), n);
  ck_assert_int_eq(fclose(f), 0);
}

/* Reads whitespace-separated floats from text into out[n]. */
static void parse_floats(const char *text, float *out, size_t n) {
  const char *p = text;
  for (size_t i = 0; i < n; i++) {
    char *end;
    out[i] = strtof(p, &end);
    ck_assert_msg(end != p, "python printed %zu numbers, expected %zu", i, n);
    p = end;
  }
}

/* NumPy's statistics of x (N x C x H x W float32 in argv[1]): for `channel`
 * and `image` modes the mean(s) then the per-channel scales, then the
 * standardised samples of the image mode. */
static const char numpy_stats[] =
    "import sys, numpy as np\n"
    "x = np.fromfile(sys.argv[1], dtype=np.float32).reshape(9, 3, 4, 5).astype(np.float64)\n"
    "m = x.mean(axis=(0, 2, 3)); s = x.std(axis=(0, 2, 3))\n"
    "mi = x.mean(axis=0); si = np.sqrt(((x - mi) ** 2).mean(axis=(0, 2, 3)))\n"
    "z = (x - mi) / si[None, :, None, None]\n"
    "print(' '.join(repr(float(v)) for v in np.concatenate([m, 1 / s, mi.ravel(), 1 / si, "
    "z.ravel()])))\n";

START_TEST(test_statistics_match_numpy) {
  float x[N * ITEM], ref[C + C + ITEM + C + N * ITEM];
  char *path = an_test_scratch_path("x.f32");
  make_samples(x);
  write_raw(path, x, N * ITEM);
  char *out = an_test_python(numpy_stats, path);
  parse_floats(out, ref, sizeof ref / sizeof *ref);
  free(out);
  free(path);

  for (int mode = 0; mode < 2; mode++) {
    an_norm_t nm;
    ck_assert_int_eq(an_norm_init(&nm, C, HW, mode), 0);
    for (int n = 0; n < N; n++)
      an_norm_accumulate(&nm, x + n * ITEM);
    ck_assert_int_eq(an_norm_finish(&nm), 0);
    const float *mean_ref = mode ? ref + 2 * C : ref, *scale_ref = mode ? ref + 2 * C + ITEM : ref + C;
    for (int i = 0; i < (mode ? ITEM : C); i++)
      ck_assert_msg(fabsf(nm.mean[i] - mean_ref[i]) <= 1e-5f * (1 + fabsf(mean_ref[i])),
                    "mode %d mean[%d]: %.7g vs numpy %.7g", mode, i, nm.mean[i], mean_ref[i]);
    for (int c = 0; c < C; c++)
      ck_assert_msg(fabsf(nm.scale[c] - scale_ref[c]) <= 1e-5f * scale_ref[c],
                    "mode %d scale[%d]: %.7g vs numpy %.7g", mode, c, nm.scale[c], scale_ref[c]);
    if (mode == 1) {
      const float *z_ref = ref + 2 * C + ITEM + C;
      float z[ITEM];
      for (int n = 0; n < N; n++) {
        memcpy(z, x + n * ITEM, sizeof z);
        an_norm_apply(&nm, z);
        for (int i = 0; i < ITEM; i++)
          ck_assert_msg(fabsf(z[i] - z_ref[n * ITEM + i]) <= 1e-5f * (1 + fabsf(z_ref[n * ITEM + i])),
                        "sample %d [%d]: %.7g vs numpy %.7g", n, i, z[i], z_ref[n * ITEM + i]);
      }
    }
    an_norm_destroy(&nm);
  }
}
END_TEST

START_TEST(test_empty_statistics_are_an_error) {
  an_norm_t nm;
  ck_assert_int_eq(an_norm_init(&nm, C, HW, 1), 0);
  ck_assert_int_ne(an_norm_finish(&nm), 0);
  an_norm_destroy(&nm);
}
END_TEST

/* Runs the ONNX file at `path` on x (N samples); returns the N x 2 output. */
static void onnx_eval(const char *path, const float *x, float *y) {
  an_onnx_t *o = NULL;
  char err[1024];
  an_onnx_tensor_t in = {.dtype = AN_ONNX_FLOAT, .ndim = 4, .dims = {N, C, H, W},
                         .data = (void *)x};
  an_onnx_tensor_t out = {0};
  ck_assert_msg(an_onnx_load_file(path, NULL, &o, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_onnx_run(o, &in, 1, &out, 1, err, sizeof err) == 0, "%s", err);
  int64_t count = 1;
  for (int d = 0; d < out.ndim; d++)
    count *= out.dims[d];
  ck_assert_int_eq(out.dims[0], N);
  ck_assert_int_eq(count, N * 2);
  memcpy(y, out.data, N * 2 * sizeof *y);
  an_onnx_tensor_free(&out);
  an_onnx_free(o);
}

/* A model trained on standardised inputs, exported with the standardisation
 * in front, gives on raw inputs what common/nn gives on the inputs NumPy
 * standardised; exported without it, it does not. Both modes. */
START_TEST(test_export_takes_raw_inputs) {
  float x[N * ITEM], ref[C + C + ITEM + C + N * ITEM], y_onnx[N * 2], y_plain[N * 2];
  char err[512], *xpath = an_test_scratch_path("x.f32"), *onnx = an_test_scratch_path("m.onnx");
  make_samples(x);
  write_raw(xpath, x, N * ITEM);
  char *out = an_test_python(numpy_stats, xpath);
  parse_floats(out, ref, sizeof ref / sizeof *ref);
  free(out);

  /* Zero padding at the border: the standardisation cannot be folded into
   * this convolution exactly, which is why it is written as its own nodes. */
  an_model_t *m = NULL;
  ck_assert_int_eq(an_model_parse("input 3 4 5\nconv 4 k=3 p=1\nrelu\nlinear 2\n", &m, err,
                                  sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_KAIMING, 3, err, sizeof err), 0);
  ck_assert_int_eq(an_model_plan(m, N, 0, err, sizeof err), 0);

  /* The reference: common/nn on NumPy's image-mode standardised inputs. */
  const float *z_ref = ref + 2 * C + ITEM + C, *y;
  float y_ref[N * 2];
  ck_assert_int_eq(an_model_forward(m, z_ref, 0, &y), 0);
  memcpy(y_ref, y, sizeof y_ref);

  an_norm_t nm;
  ck_assert_int_eq(an_norm_init(&nm, C, HW, 1), 0);
  for (int n = 0; n < N; n++)
    an_norm_accumulate(&nm, x + n * ITEM);
  ck_assert_int_eq(an_norm_finish(&nm), 0);
  an_onnx_export_opts_t eo = {.last = -1, .in_norm = &nm};
  ck_assert_msg(an_onnx_export(m, &eo, onnx, err, sizeof err) == 0, "%s", err);
  onnx_eval(onnx, x, y_onnx);
  for (int i = 0; i < N * 2; i++)
    ck_assert_msg(fabsf(y_onnx[i] - y_ref[i]) <= 1e-4f * (1 + fabsf(y_ref[i])),
                  "[%d] onnx on raw inputs %.7g vs common/nn on numpy's %.7g", i, y_onnx[i],
                  y_ref[i]);

  /* Without the standardisation the same weights give something else. */
  an_onnx_export_opts_t plain = {.last = -1};
  ck_assert_msg(an_onnx_export(m, &plain, onnx, err, sizeof err) == 0, "%s", err);
  onnx_eval(onnx, x, y_plain);
  double diff = 0;
  for (int i = 0; i < N * 2; i++)
    diff += fabs(y_plain[i] - y_ref[i]);
  ck_assert_msg(diff > 1e-2, "the standardisation made no difference (%g)", diff);

  /* Channel mode: the exported means broadcast over positions. */
  an_norm_destroy(&nm);
  ck_assert_int_eq(an_norm_init(&nm, C, HW, 0), 0);
  for (int n = 0; n < N; n++)
    an_norm_accumulate(&nm, x + n * ITEM);
  ck_assert_int_eq(an_norm_finish(&nm), 0);
  float zc[N * ITEM];
  for (int n = 0; n < N; n++)
    for (int c = 0; c < C; c++)
      for (int i = 0; i < HW; i++) {
        int k = n * ITEM + c * HW + i;
        zc[k] = (float)((x[k] - (double)ref[c]) * ref[C + c]); /* numpy's mean and 1/std */
      }
  ck_assert_int_eq(an_model_forward(m, zc, 0, &y), 0);
  memcpy(y_ref, y, sizeof y_ref);
  ck_assert_msg(an_onnx_export(m, &eo, onnx, err, sizeof err) == 0, "%s", err);
  onnx_eval(onnx, x, y_onnx);
  for (int i = 0; i < N * 2; i++)
    ck_assert_msg(fabsf(y_onnx[i] - y_ref[i]) <= 1e-4f * (1 + fabsf(y_ref[i])),
                  "channel mode [%d]: onnx %.7g vs reference %.7g", i, y_onnx[i], y_ref[i]);

  /* Statistics for another input shape are refused. */
  an_norm_t wrong;
  ck_assert_int_eq(an_norm_init(&wrong, C, HW + 1, 1), 0);
  an_onnx_export_opts_t bad = {.last = -1, .in_norm = &wrong};
  ck_assert_int_ne(an_onnx_export(m, &bad, onnx, err, sizeof err), 0);
  ck_assert_ptr_nonnull(strstr(err, "standardisation"));
  an_norm_destroy(&wrong);

  an_norm_destroy(&nm);
  an_model_free(m);
  free(xpath);
  free(onnx);
}
END_TEST

/* PyTorch's CosineAnnealingLR (eta_min 0), stepped once per optimizer step:
 * the rate used at steps 0..T-1 and the one after the last. */
static const char torch_cosine[] =
    "import sys, torch\n"
    "T = int(sys.argv[1])\n"
    "p = torch.nn.Parameter(torch.zeros(1))\n"
    "opt = torch.optim.SGD([p], lr=0.003)\n"
    "sch = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T)\n"
    "lrs = []\n"
    "for _ in range(T + 1):\n"
    "    lrs.append(opt.param_groups[0]['lr']); opt.step(); sch.step()\n"
    "print(' '.join(repr(v) for v in lrs))\n";

START_TEST(test_cosine_matches_torch) {
  enum { T = 37 };
  float ref[T + 1];
  char *out = an_test_python(torch_cosine, "37");
  parse_floats(out, ref, T + 1);
  free(out);
  for (int t = 0; t <= T; t++) {
    float lr = an_lr_cosine(0.003f, (uint64_t)t, T);
    ck_assert_msg(fabsf(lr - ref[t]) <= 1e-6f * 0.003f + 1e-12f, "step %d: %.9g vs torch %.9g", t,
                  lr, ref[t]);
  }
  ck_assert_float_eq(an_lr_cosine(0.003f, T + 5, T), 0.0f);
}
END_TEST

static Suite *normalize_suite(void) {
  Suite *s = suite_create("normalize");
  TCase *tc = tcase_create("recipe");
  tcase_add_checked_fixture(tc, an_test_scratch_make, an_test_scratch_remove);
  tcase_add_test(tc, test_statistics_match_numpy);
  tcase_add_test(tc, test_empty_statistics_are_an_error);
  tcase_add_test(tc, test_export_takes_raw_inputs);
  tcase_add_test(tc, test_cosine_matches_torch);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(normalize_suite)
