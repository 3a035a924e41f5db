#include "common/nn/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

struct an_optim {
  an_optim_params_t p;
  size_t n;
  uint64_t t;    /* steps taken */
  float *m, *v;  /* Adam moments, or SGD momentum in m */
};

int an_optim_new(const an_optim_params_t *p, size_t n, an_optim_t **out) {
  an_optim_t *o = calloc(1, sizeof *o);
  *out = NULL;
  if (!o)
    return UV_ENOMEM;
  o->p = *p;
  o->n = n;
  if (o->p.kind == AN_OPTIM_ADAM) {
    if (o->p.beta1 == 0)
      o->p.beta1 = 0.9f;
    if (o->p.beta2 == 0)
      o->p.beta2 = 0.999f;
    if (o->p.eps == 0)
      o->p.eps = 1e-8f;
  }
  o->m = an_nn_alloc(n);
  o->v = o->p.kind == AN_OPTIM_ADAM ? an_nn_alloc(n) : NULL;
  if (!o->m || (o->p.kind == AN_OPTIM_ADAM && !o->v)) {
    an_optim_free(o);
    return UV_ENOMEM;
  }
  memset(o->m, 0, n * sizeof(float));
  if (o->v)
    memset(o->v, 0, n * sizeof(float));
  *out = o;
  return 0;
}

void an_optim_free(an_optim_t *o) {
  if (!o)
    return;
  free(o->m);
  free(o->v);
  free(o);
}

void an_optim_set_lr(an_optim_t *o, float lr) { o->p.lr = lr; }

float an_lr_cosine(float base, uint64_t step, uint64_t total) {
  if (total == 0 || step >= total)
    return 0.0f;
  return (float)(base * 0.5 * (1.0 + cos(3.14159265358979323846 * (double)step / (double)total)));
}
uint64_t an_optim_steps(const an_optim_t *o) { return o->t; }
void an_optim_set_steps(an_optim_t *o, uint64_t t) { o->t = t; }

int an_optim_moment_count(const an_optim_t *o) { return o->v ? 2 : 1; }

float *an_optim_moment(an_optim_t *o, int i) { return i == 0 ? o->m : i == 1 ? o->v : NULL; }

AN_HOT_LOOP static void an_adam_step(an_optim_t *o, float *w, const float *g) {
  const float b1 = o->p.beta1, b2 = o->p.beta2, eps = o->p.eps, wd = o->p.weight_decay;
  float *m = o->m, *v = o->v;
  size_t n = o->n;
  o->t++;
  /* torch.optim.Adam: step = lr / bc1; denom = sqrt(v) / sqrt(bc2) + eps. */
  const double bc1 = 1.0 - pow(b1, (double)o->t), bc2 = 1.0 - pow(b2, (double)o->t);
  const float step = (float)(o->p.lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] + wd * w[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w[i] -= step * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
  }
}

AN_HOT_LOOP static void an_sgd_step(an_optim_t *o, float *w, const float *g) {
  const float lr = o->p.lr, mom = o->p.momentum, wd = o->p.weight_decay;
  float *buf = o->m;
  size_t n = o->n;
  int first = o->t == 0;
  o->t++;
  /* torch.optim.SGD: the first step's buffer is the gradient itself. */
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] + wd * w[i];
    if (mom != 0.0f) {
      buf[i] = first ? gi : mom * buf[i] + gi;
      gi = buf[i];
    }
    w[i] -= lr * gi;
  }
}

void an_optim_step(an_optim_t *o, float *params, const float *grads) {
  if (o->p.kind == AN_OPTIM_ADAM)
    an_adam_step(o, params, grads);
  else
    an_sgd_step(o, params, grads);
}
