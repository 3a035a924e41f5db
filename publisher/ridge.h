/* Ridge regression from few, wide samples: a linear map with bias,
 * y = W^T (x - mean_x) + mean_y, fitted on k pairs (x in R^d, y in R^p)
 * where k is much smaller than d (the audit's attacker: k <= 1000 known
 * (encoding, image) pairs, d = 31,360 values per MNIST encoding).
 *
 * With X and Y the centred pairs (k x d, k x p) and G = X X^T (k x k), the
 * ridge solution W = (X^T X + lambda I)^-1 X^T Y equals the dual form
 * X^T (G + lambda I)^-1 Y, so only k x k systems are solved: a prediction
 * is mean_y + (x - mean_x)^T X^T A with A = (G + lambda I)^-1 Y.
 *
 * lambda is chosen by leave-one-out error over a grid: lambda = alpha *
 * trace(G) / k for alpha in {1e-6, 1e-5, ..., 1e2}. From the
 * eigendecomposition G = V diag(s) V^T (LAPACKE dsyevd), the hat matrix is
 * H = 11^T/k + V diag(s / (s + lambda)) V^T (the bias is the mean, not
 * penalised) and the leave-one-out residual of pair i is exactly
 * (y_i - yhat_i) / (1 - H_ii), so the grid costs one k x k x p product per
 * alpha instead of k refits. Everything after the
 * inputs is double precision. */
#ifndef AN_PUBLISHER_RIDGE_H
#define AN_PUBLISHER_RIDGE_H

#include <stddef.h>

typedef struct an_ridge an_ridge_t;

/* Fits the map on k pairs: x (k x d) and y (k x p) float32, row-major,
 * borrowed for the call (the model keeps its own centred copy of x).
 * k >= 2; every size must fit a BLAS int. Returns 0 with *out owned by the
 * caller (an_ridge_free); UV_EINVAL for bad sizes or non-finite inputs;
 * UV_ENOMEM; AN_EFORMAT if LAPACK fails. `err` says why. */
int an_ridge_fit(const float *x, const float *y, size_t k, size_t d, size_t p,
                 an_ridge_t **out, char *err, size_t errlen);

/* Predicts y for n rows of x (n x d), writing n x p float32 to `y`.
 * Returns 0 or UV_ENOMEM. */
int an_ridge_predict(const an_ridge_t *r, const float *x, size_t n, float *y);

/* The chosen lambda and its alpha (lambda / (trace(G) / k)), and the mean
 * squared leave-one-out error per output value at that lambda. */
double an_ridge_lambda(const an_ridge_t *r);
double an_ridge_alpha(const an_ridge_t *r);
double an_ridge_loo_mse(const an_ridge_t *r);

void an_ridge_free(an_ridge_t *r);

#endif
