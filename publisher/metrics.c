#include "publisher/metrics.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define AN_METRICS_MSE_MIN 1e-10
#define AN_METRICS_SSIM_SIGMA 1.5
#define AN_METRICS_SSIM_C1 (0.01 * 0.01) /* (K1 L)^2 */
#define AN_METRICS_SSIM_C2 (0.03 * 0.03) /* (K2 L)^2 */
/* Reconstructions compared per distance-matrix block in re-identification. */
#define AN_METRICS_REID_BLOCK 256

static double an_metrics_clamp(float v) {
  if (!(v > 0.0f)) /* NaN too: a value the attacker could not show */
    return 0.0;
  return v >= 1.0f ? 1.0 : (double)v;
}

double an_metrics_psnr(const float *original, const float *recon, size_t n, size_t values) {
  double sum = 0.0;
  if (n == 0 || values == 0)
    return 0.0;
  for (size_t i = 0; i < n; i++) {
    const float *a = original + i * values, *b = recon + i * values;
    double se = 0.0, mse;
    for (size_t j = 0; j < values; j++) {
      double d = an_metrics_clamp(b[j]) - (double)a[j];
      se += d * d;
    }
    mse = se / (double)values;
    sum += mse < AN_METRICS_MSE_MIN ? AN_METRICS_PSNR_MAX : 10.0 * log10(1.0 / mse);
  }
  return sum / (double)n;
}

/* The five local statistics SSIM needs, each filtered with the window. */
enum { AN_SSIM_X, AN_SSIM_Y, AN_SSIM_XX, AN_SSIM_YY, AN_SSIM_XY, AN_SSIM_MAPS };

typedef struct an_ssim_work {
  int h, w, oh, ow;
  double g[AN_METRICS_SSIM_WINDOW]; /* normalised 1-D Gaussian; the 2-D window is g g^T */
  double *rows;                     /* AN_SSIM_MAPS x h x ow: filtered along rows */
  double *out;                      /* AN_SSIM_MAPS x oh x ow: then along columns */
} an_ssim_work_t;

/* SSIM of one channel: mean of the map over the valid positions. */
static double an_ssim_plane(an_ssim_work_t *s, const float *a, const float *b) {
  const int k = AN_METRICS_SSIM_WINDOW;
  size_t hrow = (size_t)s->h * (size_t)s->ow, orow = (size_t)s->oh * (size_t)s->ow;
  double sum = 0.0;

  /* The Gaussian is separable, so filter along rows, then along columns. */
  for (int y = 0; y < s->h; y++)
    for (int x = 0; x < s->ow; x++) {
      double acc[AN_SSIM_MAPS] = {0};
      for (int t = 0; t < k; t++) {
        size_t at = (size_t)y * (size_t)s->w + (size_t)(x + t);
        double va = a[at], vb = an_metrics_clamp(b[at]);
        acc[AN_SSIM_X] += s->g[t] * va;
        acc[AN_SSIM_Y] += s->g[t] * vb;
        acc[AN_SSIM_XX] += s->g[t] * va * va;
        acc[AN_SSIM_YY] += s->g[t] * vb * vb;
        acc[AN_SSIM_XY] += s->g[t] * va * vb;
      }
      for (int m = 0; m < AN_SSIM_MAPS; m++)
        s->rows[(size_t)m * hrow + (size_t)y * (size_t)s->ow + (size_t)x] = acc[m];
    }
  for (int y = 0; y < s->oh; y++)
    for (int x = 0; x < s->ow; x++)
      for (int m = 0; m < AN_SSIM_MAPS; m++) {
        double acc = 0.0;
        for (int t = 0; t < k; t++)
          acc += s->g[t] * s->rows[(size_t)m * hrow + (size_t)(y + t) * (size_t)s->ow + (size_t)x];
        s->out[(size_t)m * orow + (size_t)y * (size_t)s->ow + (size_t)x] = acc;
      }
  for (size_t i = 0; i < orow; i++) {
    double mx = s->out[AN_SSIM_X * orow + i], my = s->out[AN_SSIM_Y * orow + i];
    double vx = s->out[AN_SSIM_XX * orow + i] - mx * mx;
    double vy = s->out[AN_SSIM_YY * orow + i] - my * my;
    double cxy = s->out[AN_SSIM_XY * orow + i] - mx * my;
    sum += ((2.0 * mx * my + AN_METRICS_SSIM_C1) * (2.0 * cxy + AN_METRICS_SSIM_C2)) /
           ((mx * mx + my * my + AN_METRICS_SSIM_C1) * (vx + vy + AN_METRICS_SSIM_C2));
  }
  return sum / (double)orow;
}

int an_metrics_ssim(const float *original, const float *recon, size_t n, int c, int h, int w,
                    double *mean_ssim) {
  an_ssim_work_t s = {.h = h, .w = w};
  size_t plane = (size_t)h * (size_t)w;
  double gsum = 0.0, total = 0.0;
  int rc = UV_EINVAL;

  *mean_ssim = 0.0;
  if (n == 0 || c <= 0 || h < AN_METRICS_SSIM_WINDOW || w < AN_METRICS_SSIM_WINDOW)
    goto done;
  s.oh = h - AN_METRICS_SSIM_WINDOW + 1;
  s.ow = w - AN_METRICS_SSIM_WINDOW + 1;
  for (int t = 0; t < AN_METRICS_SSIM_WINDOW; t++) {
    double d = t - (AN_METRICS_SSIM_WINDOW - 1) / 2;
    s.g[t] = exp(-d * d / (2.0 * AN_METRICS_SSIM_SIGMA * AN_METRICS_SSIM_SIGMA));
    gsum += s.g[t];
  }
  for (int t = 0; t < AN_METRICS_SSIM_WINDOW; t++)
    s.g[t] /= gsum;
  rc = UV_ENOMEM;
  s.rows = malloc(sizeof *s.rows * AN_SSIM_MAPS * (size_t)h * (size_t)s.ow);
  s.out = malloc(sizeof *s.out * AN_SSIM_MAPS * (size_t)s.oh * (size_t)s.ow);
  if (!s.rows || !s.out)
    goto done;
  for (size_t i = 0; i < n; i++)
    for (int ch = 0; ch < c; ch++) {
      size_t at = (i * (size_t)c + (size_t)ch) * plane;
      total += an_ssim_plane(&s, original + at, recon + at);
    }
  *mean_ssim = total / ((double)n * c);
  rc = 0;
done:
  free(s.rows);
  free(s.out);
  return rc;
}

int an_metrics_reid(const float *original, const float *recon, size_t n, size_t values,
                    double *rate) {
  double *x = NULL, *r = NULL, *dots = NULL, *norms = NULL;
  size_t hits = 0;
  int rc = UV_EINVAL;

  *rate = 0.0;
  if (n == 0 || values == 0 || n > INT_MAX || values > INT_MAX) /* BLAS takes int sizes */
    goto done;
  rc = UV_ENOMEM;
  x = malloc(sizeof *x * n * values);
  r = malloc(sizeof *r * AN_METRICS_REID_BLOCK * values);
  dots = malloc(sizeof *dots * AN_METRICS_REID_BLOCK * n);
  norms = malloc(sizeof *norms * n);
  if (!x || !r || !dots || !norms)
    goto done;
  for (size_t j = 0; j < n; j++) {
    double s = 0.0;
    for (size_t p = 0; p < values; p++) {
      x[j * values + p] = original[j * values + p];
      s += x[j * values + p] * x[j * values + p];
    }
    norms[j] = s;
  }
  /* |r - x_j|^2 = |r|^2 - 2 r.x_j + |x_j|^2; |r|^2 is the same for every
   * candidate j, so the nearest original minimises |x_j|^2 - 2 r.x_j. */
  for (size_t i0 = 0; i0 < n; i0 += AN_METRICS_REID_BLOCK) {
    size_t b = n - i0 < AN_METRICS_REID_BLOCK ? n - i0 : AN_METRICS_REID_BLOCK;
    for (size_t q = 0; q < b * values; q++)
      r[q] = an_metrics_clamp(recon[i0 * values + q]);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)b, (int)n, (int)values, 1.0, r,
                (int)values, x, (int)values, 0.0, dots, (int)n);
    for (size_t i = 0; i < b; i++) {
      size_t best = 0;
      double best_d = INFINITY;
      for (size_t j = 0; j < n; j++) {
        double d = norms[j] - 2.0 * dots[i * n + j];
        if (d < best_d) {
          best_d = d;
          best = j;
        }
      }
      hits += best == i0 + i;
    }
  }
  *rate = (double)hits / (double)n;
  rc = 0;
done:
  free(x);
  free(r);
  free(dots);
  free(norms);
  return rc;
}
