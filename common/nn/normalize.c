/* Input standardisation; see normalize.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/normalize.h"

int an_norm_init(an_norm_t *n, int c, size_t hw, int per_position) {
  memset(n, 0, sizeof *n);
  if (c < 1 || hw < 1)
    return AN_EFORMAT;
  size_t entries = per_position ? (size_t)c * hw : (size_t)c;
  n->c = c;
  n->hw = hw;
  n->per_position = per_position;
  n->sum = calloc(entries, sizeof *n->sum);
  n->sum_sq = calloc(entries, sizeof *n->sum_sq);
  n->mean = calloc(entries, sizeof *n->mean);
  n->scale = calloc((size_t)c, sizeof *n->scale);
  if (!n->sum || !n->sum_sq || !n->mean || !n->scale)
    return UV_ENOMEM;
  for (int k = 0; k < c; k++)
    n->scale[k] = 1.0f;
  return 0;
}

void an_norm_destroy(an_norm_t *n) {
  free(n->sum);
  free(n->sum_sq);
  free(n->mean);
  free(n->scale);
  memset(n, 0, sizeof *n);
}

void an_norm_accumulate(an_norm_t *n, const float *x) {
  if (n->per_position) {
    for (size_t i = 0; i < (size_t)n->c * n->hw; i++) {
      n->sum[i] += x[i];
      n->sum_sq[i] += (double)x[i] * x[i];
    }
  } else {
    for (int k = 0; k < n->c; k++) {
      /* Per-sample partial sums first: fewer large-magnitude additions. */
      double s = 0, s2 = 0;
      const float *p = x + (size_t)k * n->hw;
      for (size_t i = 0; i < n->hw; i++) {
        s += p[i];
        s2 += (double)p[i] * p[i];
      }
      n->sum[k] += s;
      n->sum_sq[k] += s2;
    }
  }
  n->samples++;
}

int an_norm_finish(an_norm_t *n) {
  if (n->samples == 0)
    return AN_EFORMAT;
  double count = (double)n->samples;
  size_t per_channel = n->per_position ? n->hw : 1;
  for (int k = 0; k < n->c; k++) {
    /* Channel k's variance around its mean(s): the mean over its entries of
     * E[x^2] - E[x]^2, each entry covering count * (hw / per_channel)
     * values. */
    double var = 0, values = count * (double)(n->hw / per_channel);
    for (size_t j = 0; j < per_channel; j++) {
      size_t e = (size_t)k * per_channel + j;
      double mean = n->sum[e] / values;
      n->mean[e] = (float)mean;
      var += n->sum_sq[e] / values - mean * mean;
    }
    var /= (double)per_channel;
    double sd = var > 0 ? sqrt(var) : 0;
    n->scale[k] = sd >= 1e-6 ? (float)(1.0 / sd) : 1.0f;
  }
  return 0;
}

void an_norm_apply(const an_norm_t *n, float *x) {
  for (int k = 0; k < n->c; k++) {
    float s = n->scale[k];
    float *p = x + (size_t)k * n->hw;
    if (n->per_position) {
      const float *m = n->mean + (size_t)k * n->hw;
      for (size_t i = 0; i < n->hw; i++)
        p[i] = (p[i] - m[i]) * s;
    } else {
      float m = n->mean[k];
      for (size_t i = 0; i < n->hw; i++)
        p[i] = (p[i] - m) * s;
    }
  }
}
