/* publisher/ridge: the dual-form fit recovers an exactly linear map (with
 * bias), both with more pairs than inputs and with inputs on a subspace
 * (the audit's case, k << d); it agrees with the primal normal equations
 * solved independently here; leave-one-out picks a large lambda for noise. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "publisher/ridge.h"
#include "tests/support/testutil.h"

static double urand(uint64_t *s) { return (double)(an_test_rand(s) >> 11) / 9007199254740992.0 - 0.5; }

/* y = W x + b for rows of x (n x d), W p x d. */
static void apply(const double *w, const double *b, const float *x, size_t n, size_t d, size_t p,
                  float *y) {
  for (size_t i = 0; i < n; i++)
    for (size_t q = 0; q < p; q++) {
      double s = b[q];
      for (size_t j = 0; j < d; j++)
        s += w[q * d + j] * x[i * d + j];
      y[i * p + q] = (float)s;
    }
}

/* Fits on k pairs of an exact linear map and checks predictions on `n`
 * fresh inputs drawn the same way. Inputs are U z with z in R^rank. */
static void check_recovers(size_t k, size_t d, size_t p, size_t rank, uint64_t seed) {
  size_t n = 25;
  double *u = malloc(sizeof *u * d * rank), *w = malloc(sizeof *w * p * d),
         *b = malloc(sizeof *b * p);
  float *x = malloc(sizeof *x * (k + n) * d), *y = malloc(sizeof *y * (k + n) * p),
        *yhat = malloc(sizeof *yhat * n * p);
  an_ridge_t *r = NULL;
  char err[256];
  for (size_t i = 0; i < d * rank; i++)
    u[i] = urand(&seed);
  for (size_t i = 0; i < p * d; i++)
    w[i] = urand(&seed);
  for (size_t q = 0; q < p; q++)
    b[q] = 3 * urand(&seed);
  for (size_t i = 0; i < k + n; i++) {
    double z[32];
    for (size_t t = 0; t < rank; t++)
      z[t] = 2 * urand(&seed);
    for (size_t j = 0; j < d; j++) {
      double s = 0.7; /* an offset the centring must remove */
      for (size_t t = 0; t < rank; t++)
        s += u[j * rank + t] * z[t];
      x[i * d + j] = (float)s;
    }
  }
  apply(w, b, x, k + n, d, p, y);
  ck_assert_msg(an_ridge_fit(x, y, k, d, p, &r, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(an_ridge_predict(r, x + k * d, n, yhat), 0);
  double worst = 0;
  for (size_t i = 0; i < n * p; i++)
    worst = fmax(worst, fabs(yhat[i] - y[k * p + i]));
  ck_assert_msg(worst < 1e-3, "k=%zu d=%zu rank=%zu: worst error %g (alpha %g)", k, d, rank,
                worst, an_ridge_alpha(r));
  ck_assert_double_le(an_ridge_alpha(r), 1e-3); /* noise-free: little shrinkage wins */
  an_ridge_free(r);
  free(u);
  free(w);
  free(b);
  free(x);
  free(y);
  free(yhat);
}

START_TEST(test_recovers_linear_map) {
  check_recovers(120, 20, 4, 20, 1); /* more pairs than inputs, full rank */
  check_recovers(40, 500, 6, 8, 2);  /* k << d, inputs on an 8-dimensional subspace */
}
END_TEST

/* Solves the d x d system a x = b (b has p columns) by Gaussian
 * elimination with partial pivoting; a and b are overwritten. */
static void solve(double *a, double *b, size_t d, size_t p) {
  for (size_t c = 0; c < d; c++) {
    size_t piv = c;
    for (size_t i = c + 1; i < d; i++)
      if (fabs(a[i * d + c]) > fabs(a[piv * d + c]))
        piv = i;
    for (size_t j = 0; j < d; j++) {
      double t = a[c * d + j];
      a[c * d + j] = a[piv * d + j];
      a[piv * d + j] = t;
    }
    for (size_t q = 0; q < p; q++) {
      double t = b[c * p + q];
      b[c * p + q] = b[piv * p + q];
      b[piv * p + q] = t;
    }
    for (size_t i = 0; i < d; i++) {
      if (i == c)
        continue;
      double f = a[i * d + c] / a[c * d + c];
      for (size_t j = 0; j < d; j++)
        a[i * d + j] -= f * a[c * d + j];
      for (size_t q = 0; q < p; q++)
        b[i * p + q] -= f * b[c * p + q];
    }
  }
  for (size_t c = 0; c < d; c++)
    for (size_t q = 0; q < p; q++)
      b[c * p + q] /= a[c * d + c];
}

START_TEST(test_matches_primal_form) {
  /* Noisy targets, so lambda matters: the prediction must equal the primal
   * ridge solution W = (Xc^T Xc + lambda I)^-1 Xc^T Yc at the chosen lambda. */
  enum { K = 30, D = 12, P = 3, N = 5 };
  float x[(K + N) * D], y[K * P], yhat[N * P];
  double mx[D] = {0}, my[P] = {0}, a[D * D], w[D * P];
  uint64_t seed = 7;
  an_ridge_t *r = NULL;
  char err[256];
  for (size_t i = 0; i < (K + N) * D; i++)
    x[i] = (float)urand(&seed);
  for (size_t i = 0; i < K * P; i++)
    y[i] = (float)(x[(i / P) * D + i % P] + 0.5 * urand(&seed));
  ck_assert_msg(an_ridge_fit(x, y, K, D, P, &r, err, sizeof err) == 0, "%s", err);
  double lambda = an_ridge_lambda(r);
  ck_assert_double_gt(lambda, 0);
  for (size_t i = 0; i < K; i++) {
    for (size_t j = 0; j < D; j++)
      mx[j] += x[i * D + j] / (double)K;
    for (size_t q = 0; q < P; q++)
      my[q] += y[i * P + q] / (double)K;
  }
  memset(w, 0, sizeof w);
  for (size_t j = 0; j < D; j++)
    for (size_t l = 0; l < D; l++) {
      double s = j == l ? lambda : 0;
      for (size_t i = 0; i < K; i++)
        s += (x[i * D + j] - mx[j]) * (x[i * D + l] - mx[l]);
      a[j * D + l] = s;
    }
  for (size_t j = 0; j < D; j++)
    for (size_t q = 0; q < P; q++)
      for (size_t i = 0; i < K; i++)
        w[j * P + q] += (x[i * D + j] - mx[j]) * (y[i * P + q] - my[q]);
  solve(a, w, D, P);
  ck_assert_int_eq(an_ridge_predict(r, x + K * D, N, yhat), 0);
  for (size_t i = 0; i < N; i++)
    for (size_t q = 0; q < P; q++) {
      double want = my[q];
      for (size_t j = 0; j < D; j++)
        want += (x[(K + i) * D + j] - mx[j]) * w[j * P + q];
      ck_assert_double_eq_tol(yhat[i * P + q], want, 1e-5);
    }
  an_ridge_free(r);
}
END_TEST

START_TEST(test_noise_gets_shrunk) {
  /* Targets unrelated to inputs: the best leave-one-out predictor is the
   * mean, i.e. the largest lambda on the grid. */
  enum { K = 200, D = 20, P = 4 };
  float *x = malloc(sizeof *x * K * D), y[K * P];
  uint64_t seed = 11;
  an_ridge_t *r = NULL;
  char err[256];
  for (size_t i = 0; i < K * D; i++)
    x[i] = (float)urand(&seed);
  for (size_t i = 0; i < K * P; i++)
    y[i] = (float)urand(&seed);
  ck_assert_msg(an_ridge_fit(x, y, K, D, P, &r, err, sizeof err) == 0, "%s", err);
  ck_assert_double_ge(an_ridge_alpha(r), 1.0);
  an_ridge_free(r);
  free(x);
}
END_TEST

START_TEST(test_refusals) {
  float x[4] = {1, 2, 3, NAN}, y[2] = {0, 1};
  an_ridge_t *r = (an_ridge_t *)1;
  char err[256];
  ck_assert_int_eq(an_ridge_fit(x, y, 1, 2, 1, &r, err, sizeof err), UV_EINVAL);
  ck_assert_ptr_null(r);
  ck_assert_int_eq(an_ridge_fit(x, y, 2, 2, 1, &r, err, sizeof err), UV_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "non-finite"));
  ck_assert_ptr_null(r);
}
END_TEST

static Suite *ridge_suite(void) {
  Suite *s = suite_create("ridge");
  TCase *tc = tcase_create("fit");
  tcase_add_test(tc, test_recovers_linear_map);
  tcase_add_test(tc, test_matches_primal_form);
  tcase_add_test(tc, test_noise_gets_shrunk);
  tcase_add_test(tc, test_refusals);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(ridge_suite)
