/* publisher/metrics: PSNR against its closed form, SSIM against the
 * luminance-only closed form of constant images and against a direct
 * (non-separable) evaluation of Wang et al.'s definition window by window,
 * and the re-identification rate on constructed cases. */
#include <check.h>
#include <math.h>
#include <stdlib.h>

#include <uv.h>

#include "publisher/metrics.h"
#include "tests/support/testutil.h"

static void fill_random(float *x, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++)
    x[i] = (float)(an_test_rand(&seed) >> 40) / (float)(1 << 24);
}

static void fill(float *x, size_t n, float v) {
  for (size_t i = 0; i < n; i++)
    x[i] = v;
}

START_TEST(test_psnr_closed_form) {
  enum { P = 50 };
  float a[2 * P], b[2 * P];
  fill(a, 2 * P, 0.5f);
  ck_assert_double_eq(an_metrics_psnr(a, a, 2, P), AN_METRICS_PSNR_MAX);
  /* A constant error e gives mse = e^2: 10 log10(1/e^2) = -20 log10(e). */
  fill(b, P, 0.5f + 0.1f);
  fill(b + P, P, 0.5f - 0.01f);
  double want0 = 10 * log10(1.0 / pow((double)(0.5f + 0.1f) - 0.5, 2));
  double want1 = 10 * log10(1.0 / pow(0.5 - (double)(0.5f - 0.01f), 2));
  ck_assert_double_eq_tol(an_metrics_psnr(a, b, 1, P), want0, 1e-9);
  ck_assert_double_eq_tol(an_metrics_psnr(a, b, 2, P), (want0 + want1) / 2, 1e-9);
  ck_assert_double_eq_tol(want0, 20.0, 1e-5); /* 0.1 error: 20 dB */
  /* Reconstructions are clamped to [0, 1] before comparing. */
  fill(a, P, 1.0f);
  fill(b, P, 1.5f);
  ck_assert_double_eq(an_metrics_psnr(a, b, 1, P), AN_METRICS_PSNR_MAX);
  fill(b, P, -3.0f);
  ck_assert_double_eq_tol(an_metrics_psnr(a, b, 1, P), 0.0, 1e-12); /* mse 1 */
}
END_TEST

START_TEST(test_ssim_identical_and_constant) {
  enum { C = 3, H = 16, W = 20, N = 2 };
  float *a = malloc(sizeof *a * N * C * H * W), *b = malloc(sizeof *b * N * C * H * W);
  double s;
  fill_random(a, N * C * H * W, 3);
  ck_assert_int_eq(an_metrics_ssim(a, a, N, C, H, W, &s), 0);
  ck_assert_double_eq_tol(s, 1.0, 1e-12);
  /* Constant images have no variance: only the luminance term is left,
   * (2 a b + C1) / (a^2 + b^2 + C1), the same at every position. */
  fill(a, N * C * H * W, 0.5f);
  fill(b, N * C * H * W, 0.25f);
  ck_assert_int_eq(an_metrics_ssim(a, b, N, C, H, W, &s), 0);
  ck_assert_double_eq_tol(s, (2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4), 1e-12);
  /* Too small for the 11x11 window. */
  ck_assert_int_eq(an_metrics_ssim(a, b, 1, 1, 10, 20, &s), UV_EINVAL);
  free(a);
  free(b);
}
END_TEST

/* SSIM at one window position, straight from the definition with the 2-D
 * window exp(-(u^2 + v^2) / (2 * 1.5^2)) normalised to sum 1. */
static double ssim_direct(const float *x, const float *y, int w, int y0, int x0) {
  double wsum = 0, mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
  for (int u = 0; u < 11; u++)
    for (int v = 0; v < 11; v++)
      wsum += exp(-((u - 5) * (u - 5) + (v - 5) * (v - 5)) / (2 * 1.5 * 1.5));
  for (int u = 0; u < 11; u++)
    for (int v = 0; v < 11; v++) {
      double g = exp(-((u - 5) * (u - 5) + (v - 5) * (v - 5)) / (2 * 1.5 * 1.5)) / wsum;
      double a = x[(y0 + u) * w + x0 + v], b = y[(y0 + u) * w + x0 + v];
      mx += g * a;
      my += g * b;
      sxx += g * a * a;
      syy += g * b * b;
      sxy += g * a * b;
    }
  sxx -= mx * mx;
  syy -= my * my;
  sxy -= mx * my;
  return (2 * mx * my + 1e-4) * (2 * sxy + 9e-4) / ((mx * mx + my * my + 1e-4) * (sxx + syy + 9e-4));
}

START_TEST(test_ssim_against_definition) {
  /* 12 x 13 images: 2 x 3 window positions, the whole image used. */
  enum { H = 12, W = 13 };
  float x[2 * H * W], y[2 * H * W];
  double s, want = 0;
  fill_random(x, 2 * H * W, 5);
  fill_random(y, 2 * H * W, 6);
  for (int i = 0; i < H * W; i++) /* image 0: correlated, image 1: independent */
    y[i] = 0.7f * x[i] + 0.3f * y[i];
  for (int i = 0; i < 2; i++) {
    double one = 0;
    for (int y0 = 0; y0 < 2; y0++)
      for (int x0 = 0; x0 < 3; x0++)
        one += ssim_direct(x + i * H * W, y + i * H * W, W, y0, x0);
    want += one / 6;
  }
  ck_assert_int_eq(an_metrics_ssim(x, y, 2, 1, H, W, &s), 0);
  ck_assert_double_eq_tol(s, want / 2, 1e-9);
  ck_assert_double_lt(s, 0.99);
}
END_TEST

START_TEST(test_reid) {
  enum { N = 40, P = 30 };
  float x[N * P], r[N * P];
  double rate;
  fill_random(x, N * P, 9);
  uint64_t seed = 10;
  for (int i = 0; i < N * P; i++) /* small noise keeps every image nearest to itself */
    r[i] = x[i] + 0.01f * ((float)(an_test_rand(&seed) >> 40) / (float)(1 << 24) - 0.5f);
  ck_assert_int_eq(an_metrics_reid(x, r, N, P, &rate), 0);
  ck_assert_double_eq(rate, 1.0);
  /* Reconstructions of images 0..9 swapped in pairs: those ten are lost. */
  for (int i = 0; i < 10; i += 2)
    for (int j = 0; j < P; j++) {
      r[i * P + j] = x[(i + 1) * P + j];
      r[(i + 1) * P + j] = x[i * P + j];
    }
  ck_assert_int_eq(an_metrics_reid(x, r, N, P, &rate), 0);
  ck_assert_double_eq_tol(rate, 30.0 / 40.0, 1e-12);
  ck_assert_int_eq(an_metrics_reid(x, r, 0, P, &rate), UV_EINVAL);
}
END_TEST

static Suite *metrics_suite(void) {
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("closed-forms");
  tcase_add_test(tc, test_psnr_closed_form);
  tcase_add_test(tc, test_ssim_identical_and_constant);
  tcase_add_test(tc, test_ssim_against_definition);
  tcase_add_test(tc, test_reid);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(metrics_suite)
