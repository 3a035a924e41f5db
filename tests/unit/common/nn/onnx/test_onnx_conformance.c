/* The ONNX runtime against data it did not compute: the official ONNX
 * backend node tests (../shared/conformance/onnx-node, ONNX 1.12) and
 * PyTorch-exported classifiers with PyTorch's and ONNX Runtime's outputs
 * (../shared/conformance/torch-exports). Cases using an operator or type the
 * runtime does not support are reported as skipped, never as passed; every
 * other case must pass. */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "common/error.h"
#include "common/nn/onnx/graph.h"
#include "common/nn/onnx/onnx.h"
#include "tests/support/testutil.h"

static const char *conformance_dir(void) {
  const char *d = getenv("ARCHNET_CONFORMANCE_DIR");
  ck_assert_msg(d != NULL, "ARCHNET_CONFORMANCE_DIR is not set; run through meson");
  return d;
}

static uint8_t *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf;
  long n;
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* A TensorProto file as a tensor; AN_EUNSUPPORTED for types we lack. */
static int read_pb(const char *path, an_oval_t *v, char *err, size_t errlen) {
  size_t len;
  uint8_t *bytes = slurp(path, &len);
  an_arena_t arena;
  int rc;
  if (!bytes)
    return snprintf(err, errlen, "cannot read %s", path), AN_EFORMAT;
  an_arena_init(&arena, 0, 0);
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(an_arena_protobuf_allocator(&arena), len, bytes);
  rc = t ? an_oval_from_proto(t, (size_t)1 << 28, v, err, errlen) : AN_EFORMAT;
  an_arena_destroy(&arena);
  free(bytes);
  return rc;
}

typedef enum { CASE_PASS, CASE_FAIL, CASE_SKIP } outcome_t;

static outcome_t run_node_case(const char *dir, char *why, size_t whylen) {
  char path[4096], err[1024];
  an_onnx_t *m = NULL;
  an_oval_t ins[16] = {0}, want[8] = {0};
  an_onnx_tensor_t in_t[16] = {0}, got[8] = {0};
  size_t n_in = 0, n_out = 0;
  outcome_t result = CASE_FAIL;
  int rc;

  snprintf(path, sizeof path, "%s/model.onnx", dir);
  rc = an_onnx_load_file(path, NULL, &m, err, sizeof err);
  if (rc == AN_EUNSUPPORTED) {
    snprintf(why, whylen, "%s", err);
    return CASE_SKIP;
  }
  if (rc) {
    snprintf(why, whylen, "load: %s", err);
    return CASE_FAIL;
  }
  for (;; n_in++) {
    snprintf(path, sizeof path, "%s/test_data_set_0/input_%zu.pb", dir, n_in);
    FILE *f = fopen(path, "rb");
    if (!f || n_in == 16)
      break;
    fclose(f);
    rc = read_pb(path, &ins[n_in], err, sizeof err);
    if (rc) {
      snprintf(why, whylen, "input %zu: %s", n_in, err);
      result = rc == AN_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
      goto done;
    }
    in_t[n_in].dtype = ins[n_in].dtype;
    in_t[n_in].ndim = ins[n_in].ndim;
    memcpy(in_t[n_in].dims, ins[n_in].dims, sizeof in_t[n_in].dims);
    in_t[n_in].data = ins[n_in].data;
  }
  for (;; n_out++) {
    snprintf(path, sizeof path, "%s/test_data_set_0/output_%zu.pb", dir, n_out);
    FILE *f = fopen(path, "rb");
    if (!f || n_out == 8)
      break;
    fclose(f);
    rc = read_pb(path, &want[n_out], err, sizeof err);
    if (rc) {
      snprintf(why, whylen, "output %zu: %s", n_out, err);
      result = rc == AN_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
      goto done;
    }
  }
  rc = an_onnx_run(m, in_t, n_in, got, n_out, err, sizeof err);
  if (rc) {
    snprintf(why, whylen, "run: %s", err);
    result = rc == AN_EUNSUPPORTED ? CASE_SKIP : CASE_FAIL;
    goto done;
  }
  for (size_t o = 0; o < n_out; o++) {
    if (got[o].dtype != want[o].dtype || got[o].ndim != want[o].ndim ||
        memcmp(got[o].dims, want[o].dims, (size_t)want[o].ndim * sizeof(int64_t)) != 0) {
      snprintf(why, whylen, "output %zu: type or shape differs", o);
      goto done;
    }
    size_t count = an_oval_numel(&want[o]);
    for (size_t i = 0; i < count; i++) {
      int ok;
      if (want[o].dtype == AN_ONNX_FLOAT) {
        float a = ((float *)got[o].data)[i], b = ((float *)want[o].data)[i];
        /* numpy.testing.assert_allclose(rtol=1e-3, atol=1e-7), as ONNX's runner */
        ok = (isnan(a) && isnan(b)) || a == b || fabsf(a - b) <= 1e-7f + 1e-3f * fabsf(b);
      } else {
        ok = memcmp((char *)got[o].data + i * an_onnx_dtype_size(want[o].dtype),
                    (char *)want[o].data + i * an_onnx_dtype_size(want[o].dtype),
                    an_onnx_dtype_size(want[o].dtype)) == 0;
      }
      if (!ok) {
        snprintf(why, whylen, "output %zu differs at element %zu", o, i);
        goto done;
      }
    }
  }
  result = CASE_PASS;
done:
  for (size_t i = 0; i < 16; i++)
    free(ins[i].data);
  for (size_t i = 0; i < 8; i++) {
    free(want[i].data);
    an_onnx_tensor_free(&got[i]);
  }
  an_onnx_free(m);
  return result;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

START_TEST(test_onnx_node_suite) {
  char dir[1024], why[1200];
  int passed = 0, failed = 0, skipped = 0;
  char **names = NULL;
  size_t n = 0, cap = 0;
  snprintf(dir, sizeof dir, "%s/onnx-node/node", conformance_dir());
  DIR *d = opendir(dir);
  ck_assert_msg(d != NULL, "cannot open %s", dir);
  for (struct dirent *e; (e = readdir(d));) {
    if (e->d_name[0] == '.')
      continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 1024;
      names = realloc(names, cap * sizeof *names);
    }
    names[n++] = strdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp_str);
  FILE *report = fopen("onnx-node-report.txt", "w");
  for (size_t i = 0; i < n; i++) {
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    why[0] = '\0';
    outcome_t r = run_node_case(path, why, sizeof why);
    passed += r == CASE_PASS;
    failed += r == CASE_FAIL;
    skipped += r == CASE_SKIP;
    if (r == CASE_FAIL)
      printf("FAILED %s: %s\n", names[i], why);
    if (report)
      fprintf(report, "%s %s %s\n", r == CASE_PASS ? "pass" : r == CASE_FAIL ? "FAIL" : "skip",
              names[i], why);
    free(names[i]);
  }
  free(names);
  if (report)
    fclose(report);
  printf("onnx-node: %d passed, %d failed, %d skipped (of %zu cases)\n", passed, failed, skipped,
         n);
  ck_assert_int_gt(passed, 0);
  ck_assert_msg(failed == 0, "%d supported cases failed", failed);
}
END_TEST

/* ---- PyTorch exports ---- */

static float *read_raw(const char *name, size_t *n) {
  char path[1024];
  size_t len;
  snprintf(path, sizeof path, "%s/torch-exports/%s", conformance_dir(), name);
  float *p = (float *)slurp(path, &len);
  ck_assert_msg(p != NULL, "cannot read %s", path);
  *n = len / sizeof(float);
  return p;
}

/* Runs `model` on x (batch rows of `item` floats), `per_call` rows at a
 * time, and compares with PyTorch's y: max abs error <= 1e-4 in float32;
 * in bf16 mode (8-bit mantissas into float32 sums) within 2% of y's range,
 * with the same top-1 class for at least 95% of the rows. */
static void check_export_mode(const char *model, const char *xname, const char *yname,
                              int batch, const int64_t chw[3], int per_call, int bf16) {
  char path[1024], err[1024];
  an_onnx_t *m = NULL;
  size_t nx, ny;
  float *x = read_raw(xname, &nx), *y = read_raw(yname, &ny);
  size_t item = (size_t)(chw[0] * chw[1] * chw[2]), classes = ny / (size_t)batch;
  double worst = 0, range = 0;
  size_t agree = 0;
  snprintf(path, sizeof path, "%s/torch-exports/%s", conformance_dir(), model);
  ck_assert_msg(an_onnx_load_file(path, NULL, &m, err, sizeof err) == 0, "%s", err);
  an_onnx_set_bf16(m, bf16);
  ck_assert_uint_eq(nx, (size_t)batch * item);
  for (int b = 0; b < batch; b += per_call) {
    an_onnx_tensor_t in = {.dtype = AN_ONNX_FLOAT, .ndim = 4,
                           .dims = {per_call, chw[0], chw[1], chw[2]},
                           .data = x + (size_t)b * item};
    an_onnx_tensor_t out = {0};
    ck_assert_msg(an_onnx_run(m, &in, 1, &out, 1, err, sizeof err) == 0, "%s: %s", model, err);
    ck_assert_int_eq(out.ndim, 2);
    ck_assert_int_eq(out.dims[0], per_call);
    ck_assert_uint_eq((size_t)out.dims[1], classes);
    const float *got = out.data, *want = y + (size_t)b * classes;
    for (size_t i = 0; i < (size_t)per_call * classes; i++) {
      double e = fabs((double)got[i] - want[i]);
      worst = e > worst ? e : worst;
      range = fabs(want[i]) > range ? fabs(want[i]) : range;
    }
    for (int r = 0; r < per_call; r++) {
      size_t ig = 0, iw = 0;
      for (size_t j = 1; j < classes; j++) {
        ig = got[r * classes + j] > got[r * classes + ig] ? j : ig;
        iw = want[r * classes + j] > want[r * classes + iw] ? j : iw;
      }
      agree += ig == iw;
    }
    an_onnx_tensor_free(&out);
  }
  printf("%-40s %s batch %d (%d per run): max abs error %.2e, top-1 agreement %zu/%d\n",
         model, bf16 ? "bf16" : "f32 ", batch, per_call, worst, agree, batch);
  if (bf16) {
    ck_assert_msg(worst <= 0.02 * range, "%s: max abs error %g of %g", model, worst, range);
    ck_assert_msg(agree * 100 >= (size_t)batch * 95, "%s: top-1 agreement %zu/%d", model,
                  agree, batch);
  } else {
    ck_assert_msg(worst <= 1e-4, "%s: max abs error %g", model, worst);
  }
  an_onnx_free(m);
  free(x);
  free(y);
}

static void check_export(const char *model, const char *xname, const char *yname, int batch,
                         const int64_t chw[3], int per_call) {
  check_export_mode(model, xname, yname, batch, chw, per_call, 0);
}

/* The bf16 option against the same PyTorch outputs, on the CNNs. */
START_TEST(test_torch_exports_bf16) {
  static const int64_t s1x28[3] = {1, 28, 28}, s3x32[3] = {3, 32, 32}, s10x56[3] = {10, 56, 56};
  check_export_mode("smallcnn_1x28_dyn.onnx", "smallcnn_1x28_x64.raw", "smallcnn_1x28_y64.raw",
                    64, s1x28, 64, 1);
  check_export_mode("smallcnn_3x32_dyn.onnx", "smallcnn_3x32_x64.raw", "smallcnn_3x32_y64.raw",
                    64, s3x32, 64, 1);
  check_export_mode("smallcnn_10x56_dyn.onnx", "smallcnn_10x56_x64.raw",
                    "smallcnn_10x56_y64.raw", 64, s10x56, 64, 1);
}
END_TEST

START_TEST(test_torch_exports) {
  static const int64_t s1x28[3] = {1, 28, 28}, s3x32[3] = {3, 32, 32}, s10x56[3] = {10, 56, 56};
  check_export("smallcnn_1x28_dyn.onnx", "smallcnn_1x28_x64.raw", "smallcnn_1x28_y64.raw", 64,
               s1x28, 64);
  check_export("smallcnn_1x28_b1.onnx", "smallcnn_1x28_x64.raw", "smallcnn_1x28_y64.raw", 64,
               s1x28, 1);
  check_export("smallcnn_3x32_dyn.onnx", "smallcnn_3x32_x64.raw", "smallcnn_3x32_y64.raw", 64,
               s3x32, 64);
  check_export("smallcnn_3x32_dyn_opset9.onnx", "smallcnn_3x32_x64.raw", "smallcnn_3x32_y64.raw",
               64, s3x32, 64);
  check_export("smallcnn_10x56_dyn.onnx", "smallcnn_10x56_x64.raw", "smallcnn_10x56_y64.raw", 64,
               s10x56, 64);
  static const char *const heads[] = {"head_avgpool_softmax_dyn",
                                      "head_maxpool_reshape_logsoftmax_dyn",
                                      "head_sigmoid_leaky_hardtanh_dyn"};
  for (size_t i = 0; i < 3; i++) {
    char model[128], y[128];
    snprintf(model, sizeof model, "%s.onnx", heads[i]);
    snprintf(y, sizeof y, "%s_y.raw", heads[i]);
    check_export(model, "heads_x1.raw", y, 1, s3x32, 1);
  }
  static const char *const idioms[] = {"idiom_normalize_in_model_eval", "idiom_plain_preserve",
                                       "idiom_relu6_mean_eval"};
  for (size_t i = 0; i < 3; i++) {
    char model[128], y[128];
    snprintf(model, sizeof model, "%s.onnx", idioms[i]);
    snprintf(y, sizeof y, "%s_y.raw", idioms[i]);
    check_export(model, "idiom_x2.raw", y, 2, s3x32, 2);
  }
}
END_TEST

START_TEST(test_dynamic_batch_shape_inference) {
  char path[1024], err[1024];
  an_onnx_t *m = NULL;
  int dtype, ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];
  snprintf(path, sizeof path, "%s/torch-exports/smallcnn_10x56_dyn.onnx", conformance_dir());
  ck_assert_msg(an_onnx_load_file(path, NULL, &m, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(an_onnx_input_shape(m, 0, &dtype, &ndim, dims), 0);
  ck_assert_int_eq(ndim, 4);
  ck_assert_int_eq(dims[0], -1); /* the batch, named N */
  ck_assert_int_eq(dims[1], 10);
  ck_assert_int_eq(an_onnx_output_shape(m, 0, &dtype, &ndim, dims), 0);
  ck_assert_int_eq(dtype, AN_ONNX_FLOAT);
  ck_assert_int_eq(ndim, 2);
  ck_assert_int_eq(dims[0], -1);
  ck_assert_int_eq(dims[1], 10);
  an_onnx_free(m);
}
END_TEST

static Suite *conformance_suite(void) {
  Suite *s = suite_create("onnx-conformance");
  TCase *tc = tcase_create("conformance");
  tcase_add_test(tc, test_torch_exports);
  tcase_add_test(tc, test_torch_exports_bf16);
  tcase_add_test(tc, test_dynamic_batch_shape_inference);
  tcase_add_test(tc, test_onnx_node_suite);
  tcase_set_timeout(tc, 600);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(conformance_suite)
