#include "common/nn/loss.h"

#include <math.h>

double an_loss_mse(const float *pred, const float *target, size_t n, float *grad) {
  double sum = 0;
  float scale = 2.0f / (float)n;
  for (size_t i = 0; i < n; i++) {
    float d = pred[i] - target[i];
    sum += (double)d * d;
    if (grad)
      grad[i] = scale * d;
  }
  return sum / (double)n;
}

double an_loss_bce_logits(const float *logits, const float *target, size_t n, float *grad) {
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    double z = logits[i], t = target[i];
    /* log(1 + e^-|z|) + max(z, 0) - z t: no overflow for any z. */
    sum += (z > 0 ? z : 0) - z * t + log1p(exp(-fabs(z)));
    if (grad)
      grad[i] = (float)((1.0 / (1.0 + exp(-z)) - t) / (double)n);
  }
  return sum / (double)n;
}

double an_loss_softmax_ce(const float *logits, const uint8_t *labels, int batch, int classes,
                          float *grad, int *correct) {
  double sum = 0;
  int hits = 0;
  for (int b = 0; b < batch; b++) {
    const float *z = logits + (size_t)b * classes;
    float *g = grad ? grad + (size_t)b * classes : NULL;
    int best = 0;
    double mx = z[0], denom = 0;
    if (labels[b] >= classes)
      return NAN;
    for (int k = 1; k < classes; k++)
      if (z[k] > mx) {
        mx = z[k];
        best = k;
      }
    for (int k = 0; k < classes; k++)
      denom += exp(z[k] - mx);
    sum += log(denom) - (z[labels[b]] - mx);
    hits += best == labels[b];
    if (g)
      for (int k = 0; k < classes; k++)
        g[k] = (float)((exp(z[k] - mx) / denom - (k == labels[b])) / batch);
  }
  if (correct)
    *correct = hits;
  return sum / batch;
}
