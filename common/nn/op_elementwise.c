/* Cheap per-element layers, written as plain loops (memory-bound; the
 * compiler vectorises them, OpenMP splits the big ones): ReLU, LeakyReLU,
 * Sigmoid, Tanh, Dropout, and the shape-only Flatten, Reshape and Add. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

#define AN_PAR_MIN 65536 /* below this, threads cost more than they save */

static size_t an_count(const an_model_t *m, const an_node_t *n) {
  return (size_t)m->batch * an_numel3(n->out);
}

static int same_shape(an_node_t *n, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  memcpy(n->out, n->in, sizeof n->out);
  return 0;
}

AN_HOT_LOOP static int relu_forward(an_model_t *m, an_node_t *n, int train) {
  size_t count = an_count(m, n);
  const float *restrict x = n->x;
  float *restrict y = n->y;
  (void)train;
  /* Bit masking as in backward; NaN passes through, as in PyTorch. */
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++) {
    uint32_t v;
    memcpy(&v, &x[i], sizeof v);
    v &= -(uint32_t)!(x[i] <= 0.0f);
    memcpy(&y[i], &v, sizeof v);
  }
  return 0;
}

AN_HOT_LOOP static int relu_backward(an_model_t *m, an_node_t *n, float *dx_out) {
  size_t count = an_count(m, n);
  const float *restrict x = n->x, *restrict dy = n->dy;
  float *restrict dx = dx_out;
  if (!dx)
    return 0;
  /* Branch-free: a select on random signs mispredicts half the time, and
   * GCC keeps the ternary scalar. Masking the bits is exact (no 0 * inf). */
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++) {
    uint32_t g;
    memcpy(&g, &dy[i], sizeof g);
    g &= -(uint32_t)(x[i] > 0.0f);
    memcpy(&dx[i], &g, sizeof g);
  }
  return 0;
}

static int leaky_infer(an_node_t *n, char *err, size_t errlen) {
  if (n->d.alpha == 0)
    n->d.alpha = 0.01f; /* PyTorch's default negative slope */
  if (!isfinite(n->d.alpha)) {
    snprintf(err, errlen, "leakyrelu: alpha must be finite");
    return AN_EMODEL;
  }
  return same_shape(n, err, errlen);
}

AN_HOT_LOOP static int leaky_forward(an_model_t *m, an_node_t *n, int train) {
  size_t count = an_count(m, n);
  const float *x = n->x;
  float *y = n->y, a = n->d.alpha;
  (void)train;
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    y[i] = x[i] > 0 ? x[i] : a * x[i];
  return 0;
}

AN_HOT_LOOP static int leaky_backward(an_model_t *m, an_node_t *n, float *dx) {
  size_t count = an_count(m, n);
  const float *x = n->x, *dy = n->dy;
  float a = n->d.alpha;
  if (!dx)
    return 0;
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    dx[i] = x[i] > 0 ? dy[i] : a * dy[i];
  return 0;
}

static int sigmoid_forward(an_model_t *m, an_node_t *n, int train) {
  size_t count = an_count(m, n);
  const float *x = n->x;
  float *y = n->y;
  (void)train;
#pragma omp parallel for if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    y[i] = 1.0f / (1.0f + expf(-x[i]));
  return 0;
}

AN_HOT_LOOP static int sigmoid_backward(an_model_t *m, an_node_t *n, float *dx) {
  size_t count = an_count(m, n);
  const float *y = n->y, *dy = n->dy;
  if (!dx)
    return 0;
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    dx[i] = dy[i] * y[i] * (1.0f - y[i]);
  return 0;
}

static int tanh_forward(an_model_t *m, an_node_t *n, int train) {
  size_t count = an_count(m, n);
  const float *x = n->x;
  float *y = n->y;
  (void)train;
#pragma omp parallel for if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    y[i] = tanhf(x[i]);
  return 0;
}

AN_HOT_LOOP static int tanh_backward(an_model_t *m, an_node_t *n, float *dx) {
  size_t count = an_count(m, n);
  const float *y = n->y, *dy = n->dy;
  if (!dx)
    return 0;
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    dx[i] = dy[i] * (1.0f - y[i] * y[i]);
  return 0;
}

/* Dropout keeps its mask (0 or 1/(1-p) per element) from forward to
 * backward. The mask buffer is planned with the activations. */
static int dropout_infer(an_node_t *n, char *err, size_t errlen) {
  if (!(n->d.alpha >= 0 && n->d.alpha < 1)) {
    snprintf(err, errlen, "dropout: p must be in [0, 1)");
    return AN_EMODEL;
  }
  return same_shape(n, err, errlen);
}

static int dropout_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  (void)with_grad;
  n->impl = an_nn_alloc((size_t)batch * an_numel3(n->out));
  (void)m;
  return n->impl ? 0 : UV_ENOMEM;
}

static void dropout_unplan(an_node_t *n) {
  free(n->impl);
  n->impl = NULL;
}

static int dropout_forward(an_model_t *m, an_node_t *n, int train) {
  size_t count = an_count(m, n);
  float *mask = n->impl, scale = 1.0f / (1.0f - n->d.alpha);
  double keep = (1.0 - n->d.alpha) * 18446744073709551616.0;
  uint64_t keep_below = keep >= 18446744073709549568.0 ? UINT64_MAX : (uint64_t)keep;
  if (!train || n->d.alpha == 0) {
    memcpy(n->y, n->x, count * sizeof(float));
    for (size_t i = 0; train && i < count; i++)
      mask[i] = 1.0f;
    return 0;
  }
  /* Sequential on purpose: one seeded stream gives reproducible masks. */
  for (size_t i = 0; i < count; i++) {
    mask[i] = an_rng_next(&m->rng) < keep_below ? scale : 0.0f;
    n->y[i] = n->x[i] * mask[i];
  }
  return 0;
}

AN_HOT_LOOP static int dropout_backward(an_model_t *m, an_node_t *n, float *dx) {
  size_t count = an_count(m, n);
  const float *mask = n->impl, *dy = n->dy;
  if (!dx)
    return 0;
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    dx[i] = dy[i] * mask[i];
  return 0;
}

/* Flatten and reshape: the output is the input buffer (alias); backward
 * hands the gradient through. */
static int flatten_infer(an_node_t *n, char *err, size_t errlen) {
  (void)err;
  (void)errlen;
  n->out[0] = (int)an_numel3(n->in);
  n->out[1] = n->out[2] = 1;
  return 0;
}

static int reshape_infer(an_node_t *n, char *err, size_t errlen) {
  const int *s = n->d.shape;
  if (s[0] <= 0 || s[1] <= 0 || s[2] <= 0 ||
      (size_t)s[0] * (size_t)s[1] * (size_t)s[2] != an_numel3(n->in)) {
    snprintf(err, errlen, "reshape: %dx%dx%d does not hold the %zu values of %dx%dx%d", s[0],
             s[1], s[2], an_numel3(n->in), n->in[0], n->in[1], n->in[2]);
    return AN_EMODEL;
  }
  memcpy(n->out, s, sizeof n->out);
  return 0;
}

static int alias_forward(an_model_t *m, an_node_t *n, int train) {
  (void)m;
  (void)n;
  (void)train;
  return 0; /* the model pointed y at x */
}

static int pass_backward(an_model_t *m, an_node_t *n, float *dx) {
  if (dx)
    memcpy(dx, n->dy, an_count(m, n) * sizeof(float));
  return 0;
}

AN_HOT_LOOP static int add_forward(an_model_t *m, an_node_t *n, int train) {
  size_t count = an_count(m, n);
  const float *a = n->x, *b = n->x2;
  float *y = n->y;
  (void)train;
#pragma omp parallel for simd if (parallel : count > AN_PAR_MIN)
  for (size_t i = 0; i < count; i++)
    y[i] = a[i] + b[i];
  return 0;
}

const an_op_t an_op_relu = {.name = "relu", .infer = same_shape, .forward = relu_forward,
                            .backward = relu_backward, .layout = AN_LAYOUT_ANY};
const an_op_t an_op_leaky_relu = {.name = "leakyrelu", .infer = leaky_infer,
                                  .forward = leaky_forward, .backward = leaky_backward,
                                  .layout = AN_LAYOUT_ANY};
const an_op_t an_op_sigmoid = {.name = "sigmoid", .infer = same_shape,
                               .forward = sigmoid_forward, .backward = sigmoid_backward,
                               .layout = AN_LAYOUT_ANY};
const an_op_t an_op_tanh = {.name = "tanh", .infer = same_shape, .forward = tanh_forward,
                            .backward = tanh_backward, .layout = AN_LAYOUT_ANY};
const an_op_t an_op_dropout = {.name = "dropout", .infer = dropout_infer, .plan = dropout_plan,
                               .unplan = dropout_unplan, .forward = dropout_forward,
                               .backward = dropout_backward, .layout = AN_LAYOUT_ANY};
const an_op_t an_op_flatten = {.name = "flatten", .infer = flatten_infer,
                               .forward = alias_forward, .backward = pass_backward, .alias = 1,
                               .layout = AN_NCHW};
const an_op_t an_op_reshape = {.name = "reshape", .infer = reshape_infer,
                               .forward = alias_forward, .backward = pass_backward, .alias = 1,
                               .layout = AN_NCHW};
/* add's backward is routed by the model (the gradient goes to both inputs). */
const an_op_t an_op_add = {.name = "add", .infer = same_shape, .forward = add_forward,
                           .backward = pass_backward, .layout = AN_LAYOUT_ANY};
