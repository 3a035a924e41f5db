#include "publisher/ridge.h"

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/error.h"

/* Rows predicted per block: bounds the double copy of the inputs. */
#define AN_RIDGE_BLOCK 256

static const double an_ridge_alphas[] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 1e1, 1e2};
#define AN_RIDGE_N_ALPHAS (sizeof an_ridge_alphas / sizeof an_ridge_alphas[0])

struct an_ridge {
  size_t k, d, p;
  double *mean_x, *mean_y; /* d, p */
  double *xc;              /* k x d: the centred training inputs */
  double *a;               /* k x p: (G + lambda I)^-1 Y */
  double lambda, alpha, loo_mse;
};

void an_ridge_free(an_ridge_t *r) {
  if (!r)
    return;
  free(r->mean_x);
  free(r->mean_y);
  free(r->xc);
  free(r->a);
  free(r);
}

static int an_ridge_finite(const float *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i]))
      return 0;
  return 1;
}

/* Column means of a k x m float matrix, then its centred double copy. */
static void an_ridge_centre(const float *v, size_t k, size_t m, double *mean, double *out) {
  for (size_t j = 0; j < m; j++)
    mean[j] = 0.0;
  for (size_t i = 0; i < k; i++)
    for (size_t j = 0; j < m; j++)
      mean[j] += v[i * m + j];
  for (size_t j = 0; j < m; j++)
    mean[j] /= (double)k;
  for (size_t i = 0; i < k; i++)
    for (size_t j = 0; j < m; j++)
      out[i * m + j] = v[i * m + j] - mean[j];
}

/* vf = V diag(f) for the k x k eigenvector matrix V (columns). */
static void an_ridge_scale_columns(const double *v, const double *f, size_t k, double *vf) {
  for (size_t i = 0; i < k; i++)
    for (size_t j = 0; j < k; j++)
      vf[i * k + j] = v[i * k + j] * f[j];
}

/* Mean squared leave-one-out error at `lambda`, with `b` = V^T Y. */
static double an_ridge_loo(const double *v, const double *s, const double *b, const double *yc,
                           size_t k, size_t p, double lambda, double *f, double *vf,
                           double *yhat) {
  double se = 0.0;
  for (size_t j = 0; j < k; j++)
    f[j] = s[j] / (s[j] + lambda);
  an_ridge_scale_columns(v, f, k, vf);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)p, (int)k, 1.0, vf, (int)k,
              b, (int)p, 0.0, yhat, (int)p);
  for (size_t i = 0; i < k; i++) {
    /* 1 - H_ii with H = 11^T/k + V diag(f) V^T (the intercept is the mean
     * and unpenalised), written as sum_j V_ij^2 lambda/(s_j + lambda) - 1/k
     * so that interpolating fits (tiny lambda, k <= d) keep their digits. */
    double lev = -1.0 / (double)k;
    for (size_t j = 0; j < k; j++)
      lev += v[i * k + j] * v[i * k + j] * (lambda / (s[j] + lambda));
    if (lev < 1e-14) /* lost to rounding: this lambda cannot be judged */
      return INFINITY;
    for (size_t q = 0; q < p; q++) {
      double e = (yc[i * p + q] - yhat[i * p + q]) / lev;
      se += e * e;
    }
  }
  return se / ((double)k * (double)p);
}

int an_ridge_fit(const float *x, const float *y, size_t k, size_t d, size_t p,
                 an_ridge_t **out, char *err, size_t errlen) {
  an_ridge_t *r = NULL;
  double *g = NULL, *s = NULL, *yc = NULL, *b = NULL, *f = NULL, *vf = NULL, *yhat = NULL;
  double scale = 0.0, best = INFINITY;
  lapack_int info;
  int rc = UV_EINVAL;

  *out = NULL;
  if (k < 2 || d == 0 || p == 0 || k > INT_MAX || d > INT_MAX || p > INT_MAX ||
      k > SIZE_MAX / sizeof(double) / d || k > SIZE_MAX / sizeof(double) / p ||
      k > SIZE_MAX / sizeof(double) / k) {
    snprintf(err, errlen, "ridge: cannot fit %zu pairs of %zu -> %zu values", k, d, p);
    goto done;
  }
  if (!an_ridge_finite(x, k * d) || !an_ridge_finite(y, k * p)) {
    snprintf(err, errlen, "ridge: the pairs hold non-finite values");
    goto done;
  }
  rc = UV_ENOMEM;
  if (!(r = calloc(1, sizeof *r)))
    goto oom;
  r->k = k;
  r->d = d;
  r->p = p;
  r->mean_x = malloc(sizeof(double) * d);
  r->mean_y = malloc(sizeof(double) * p);
  r->xc = malloc(sizeof(double) * k * d);
  r->a = malloc(sizeof(double) * k * p);
  g = malloc(sizeof(double) * k * k);
  vf = malloc(sizeof(double) * k * k);
  s = malloc(sizeof(double) * k);
  f = malloc(sizeof(double) * k);
  yc = malloc(sizeof(double) * k * p);
  b = malloc(sizeof(double) * k * p);
  yhat = malloc(sizeof(double) * k * p);
  if (!r->mean_x || !r->mean_y || !r->xc || !r->a || !g || !vf || !s || !f || !yc || !b || !yhat)
    goto oom;
  an_ridge_centre(x, k, d, r->mean_x, r->xc);
  an_ridge_centre(y, k, p, r->mean_y, yc);

  /* G = X X^T (upper triangle is all dsyevd reads), then G = V diag(s) V^T
   * with V overwriting G. */
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (int)k, (int)d, 1.0, r->xc, (int)d, 0.0, g,
              (int)k);
  info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)k, g, (lapack_int)k, s);
  if (info != 0) {
    rc = AN_EFORMAT;
    snprintf(err, errlen, "ridge: the eigendecomposition failed (LAPACK dsyevd info %d)",
             (int)info);
    goto done;
  }
  for (size_t j = 0; j < k; j++) {
    s[j] = s[j] > 0.0 ? s[j] : 0.0; /* G is positive semi-definite; drop rounding */
    scale += s[j];
  }
  /* lambda is relative to the mean eigenvalue, so the grid fits any scale
   * of encodings; identical inputs (trace 0) fall back to absolute values. */
  scale = scale > 0.0 ? scale / (double)k : 1.0;
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)p, (int)k, 1.0, g, (int)k, yc,
              (int)p, 0.0, b, (int)p);
  /* Should rounding spoil every alpha, the strongest shrinkage is safest. */
  r->alpha = an_ridge_alphas[AN_RIDGE_N_ALPHAS - 1];
  r->lambda = r->alpha * scale;
  for (size_t i = 0; i < AN_RIDGE_N_ALPHAS; i++) {
    double lambda = an_ridge_alphas[i] * scale;
    double loo = an_ridge_loo(g, s, b, yc, k, p, lambda, f, vf, yhat);
    if (loo < best) {
      best = loo;
      r->alpha = an_ridge_alphas[i];
      r->lambda = lambda;
    }
  }
  r->loo_mse = best;
  for (size_t j = 0; j < k; j++)
    f[j] = 1.0 / (s[j] + r->lambda);
  an_ridge_scale_columns(g, f, k, vf);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)k, (int)p, (int)k, 1.0, vf, (int)k,
              b, (int)p, 0.0, r->a, (int)p);
  *out = r;
  r = NULL;
  rc = 0;
  goto done;
oom:
  snprintf(err, errlen, "ridge: out of memory for %zu pairs of %zu -> %zu values", k, d, p);
done:
  an_ridge_free(r);
  free(g);
  free(vf);
  free(s);
  free(f);
  free(yc);
  free(b);
  free(yhat);
  return rc;
}

int an_ridge_predict(const an_ridge_t *r, const float *x, size_t n, float *y) {
  size_t block = n < AN_RIDGE_BLOCK ? n : AN_RIDGE_BLOCK;
  double *xb = NULL, *kt = NULL, *yb = NULL;
  int rc = UV_ENOMEM;

  if (n == 0)
    return 0;
  xb = malloc(sizeof(double) * block * r->d);
  kt = malloc(sizeof(double) * block * r->k);
  yb = malloc(sizeof(double) * block * r->p);
  if (!xb || !kt || !yb)
    goto done;
  for (size_t i0 = 0; i0 < n; i0 += block) {
    size_t b = n - i0 < block ? n - i0 : block;
    for (size_t i = 0; i < b; i++)
      for (size_t j = 0; j < r->d; j++)
        xb[i * r->d + j] = x[(i0 + i) * r->d + j] - r->mean_x[j];
    /* k(x) = X (x - mean_x): the new rows against every training row. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)r->k, (int)r->d, 1.0, xb,
                (int)r->d, r->xc, (int)r->d, 0.0, kt, (int)r->k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)b, (int)r->p, (int)r->k, 1.0, kt,
                (int)r->k, r->a, (int)r->p, 0.0, yb, (int)r->p);
    for (size_t i = 0; i < b; i++)
      for (size_t q = 0; q < r->p; q++)
        y[(i0 + i) * r->p + q] = (float)(yb[i * r->p + q] + r->mean_y[q]);
  }
  rc = 0;
done:
  free(xb);
  free(kt);
  free(yb);
  return rc;
}

double an_ridge_lambda(const an_ridge_t *r) { return r->lambda; }
double an_ridge_alpha(const an_ridge_t *r) { return r->alpha; }
double an_ridge_loo_mse(const an_ridge_t *r) { return r->loo_mse; }
