/* `archnet-worker onnx-run`: top-1 labels for a PyTorch-exported model on
 * PyTorch's own test input must be the argmax of PyTorch's logits; refused
 * models and mismatched inputs exit with status 2 and a message. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/blob/npy.h"
#include "tests/support/testutil.h"

static const char *env(const char *name) {
  const char *v = getenv(name);
  ck_assert_msg(v != NULL, "%s is not set; run through meson", name);
  return v;
}

static float *read_raw(const char *name, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/torch-exports/%s", env("ARCHNET_CONFORMANCE_DIR"), name);
  FILE *f = fopen(path, "rb");
  float *p = malloc(n * sizeof *p);
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fread(p, sizeof *p, n, f), n);
  fclose(f);
  return p;
}

START_TEST(test_labels_match_pytorch) {
  char model[1024], npy[256], err[512], *out = NULL, *dir = an_test_tmpdir();
  float *x = read_raw("smallcnn_1x28_x64.raw", 64 * 784), *y = read_raw("smallcnn_1x28_y64.raw", 640);
  int64_t shape[4] = {64, 1, 28, 28};
  snprintf(npy, sizeof npy, "%s/x.npy", dir);
  snprintf(model, sizeof model, "%s/torch-exports/smallcnn_1x28_dyn.onnx",
           env("ARCHNET_CONFORMANCE_DIR"));
  ck_assert_msg(an_npy_write(npy, AN_NPY_F32, 4, shape, x, err, sizeof err) == 0, "%s", err);
  char *argv[] = {(char *)env("ARCHNET_WORKER"), "onnx-run", model, npy, NULL};
  ck_assert_int_eq(an_test_run(argv, &out, NULL), 0);
  ck_assert_msg(strncmp(out, "output 64x10\n", 13) == 0, "%s", out);
  char *line = out + 13;
  for (int b = 0; b < 64; b++) {
    int best = 0;
    for (int k = 1; k < 10; k++)
      if (y[b * 10 + k] > y[b * 10 + best])
        best = k;
    ck_assert_int_eq(atoi(line), best);
    line = strchr(line, '\n') + 1;
  }
  free(out);
  free(x);
  free(y);
  an_test_rmtree(dir);
  free(dir);
}
END_TEST

START_TEST(test_refusals) {
  char bad[256], npy[256], wrong[256], err[512], model[1024], *dir = an_test_tmpdir();
  float zeros[2 * 3 * 5 * 5] = {0};
  int64_t shape[4] = {2, 3, 5, 5};
  snprintf(bad, sizeof bad, "%s/bad.onnx", dir);
  snprintf(npy, sizeof npy, "%s/x.npy", dir);
  snprintf(wrong, sizeof wrong, "%s/w.npy", dir);
  snprintf(model, sizeof model, "%s/torch-exports/smallcnn_1x28_dyn.onnx",
           env("ARCHNET_CONFORMANCE_DIR"));
  FILE *f = fopen(bad, "wb");
  fputs("this is not a model", f);
  fclose(f);
  ck_assert_int_eq(an_npy_write(wrong, AN_NPY_F32, 4, shape, zeros, err, sizeof err), 0);
  char *refused[] = {(char *)env("ARCHNET_WORKER"), "onnx-run", bad, wrong, NULL};
  char *mismatch[] = {(char *)env("ARCHNET_WORKER"), "onnx-run", model, wrong, NULL};
  char *missing[] = {(char *)env("ARCHNET_WORKER"), "onnx-run", model, npy, NULL};
  char *noargs[] = {(char *)env("ARCHNET_WORKER"), "onnx-run", model, NULL};
  an_test_expect_run(refused, 2, NULL, "model refused");
  an_test_expect_run(mismatch, 2, NULL, "takes 1x28x28 inputs");
  an_test_expect_run(missing, 2, NULL, "x.npy");
  an_test_expect_run(noargs, 2, NULL, "needs MODEL.onnx and INPUT.npy");
  an_test_rmtree(dir);
  free(dir);
}
END_TEST

static Suite *onnx_run_suite(void) {
  Suite *s = suite_create("onnx-run");
  TCase *tc = tcase_create("cli");
  tcase_add_test(tc, test_labels_match_pytorch);
  tcase_add_test(tc, test_refusals);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(onnx_run_suite)
