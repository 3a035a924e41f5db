/* Every layer and loss against an independent double-precision reference:
 * the forward pass is recomputed here with naive loops in double, and every
 * gradient (input and parameters) is compared with central finite
 * differences of that reference. Nothing here uses oneDNN. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

#define BATCH 2

typedef struct ref {
  an_model_t *m;
  int n;                /* layers */
  an_layer_info_t *li;
  double **act;         /* per layer output, batch x numel */
} ref_t;

static size_t numel(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

/* Forward of one layer in double. p = the model's parameters, as doubles. */
static void ref_layer(const an_layer_info_t *L, const double *x, const double *x2,
                      const double *p, double *y) {
  const an_layer_desc_t *d = &L->desc;
  const int *in = L->in, *out = L->outshape;
  size_t inn = numel(in), outn = numel(out);
  for (int b = 0; b < BATCH; b++) {
    const double *xb = x + b * inn;
    double *yb = y + b * outn;
    switch (d->kind) {
    case AN_OP_CONV:
      for (int o = 0; o < out[0]; o++)
        for (int oy = 0; oy < out[1]; oy++)
          for (int ox = 0; ox < out[2]; ox++) {
            double s = L->b_count ? p[L->b_off + o] : 0;
            for (int c = 0; c < in[0]; c++)
              for (int ky = 0; ky < d->k; ky++)
                for (int kx = 0; kx < d->k; kx++) {
                  int iy = oy * d->s - d->p + ky, ix = ox * d->s - d->p + kx;
                  if (iy < 0 || iy >= in[1] || ix < 0 || ix >= in[2])
                    continue;
                  s += p[L->w_off + (((size_t)o * in[0] + c) * d->k + ky) * d->k + kx] *
                       xb[((size_t)c * in[1] + iy) * in[2] + ix];
                }
            yb[((size_t)o * out[1] + oy) * out[2] + ox] = s;
          }
      break;
    case AN_OP_CONVT: /* weight [IC, OC, K, K]; scatter each input pixel */
      for (size_t i = 0; i < outn; i++)
        yb[i] = L->b_count ? p[L->b_off + i / ((size_t)out[1] * out[2])] : 0;
      for (int c = 0; c < in[0]; c++)
        for (int iy = 0; iy < in[1]; iy++)
          for (int ix = 0; ix < in[2]; ix++)
            for (int o = 0; o < out[0]; o++)
              for (int ky = 0; ky < d->k; ky++)
                for (int kx = 0; kx < d->k; kx++) {
                  int oy = iy * d->s - d->p + ky, ox = ix * d->s - d->p + kx;
                  if (oy < 0 || oy >= out[1] || ox < 0 || ox >= out[2])
                    continue;
                  yb[((size_t)o * out[1] + oy) * out[2] + ox] +=
                      p[L->w_off + (((size_t)c * out[0] + o) * d->k + ky) * d->k + kx] *
                      xb[((size_t)c * in[1] + iy) * in[2] + ix];
                }
      break;
    case AN_OP_LINEAR:
      for (int o = 0; o < out[0]; o++) {
        double s = L->b_count ? p[L->b_off + o] : 0;
        for (size_t i = 0; i < inn; i++)
          s += p[L->w_off + (size_t)o * inn + i] * xb[i];
        yb[o] = s;
      }
      break;
    case AN_OP_RELU:
      for (size_t i = 0; i < inn; i++)
        yb[i] = xb[i] > 0 ? xb[i] : 0;
      break;
    case AN_OP_LEAKY_RELU:
      for (size_t i = 0; i < inn; i++)
        yb[i] = xb[i] > 0 ? xb[i] : d->alpha * xb[i];
      break;
    case AN_OP_SIGMOID:
      for (size_t i = 0; i < inn; i++)
        yb[i] = 1 / (1 + exp(-xb[i]));
      break;
    case AN_OP_TANH:
      for (size_t i = 0; i < inn; i++)
        yb[i] = tanh(xb[i]);
      break;
    case AN_OP_MAXPOOL:
    case AN_OP_AVGPOOL:
    case AN_OP_GAP: {
      int gap = d->kind == AN_OP_GAP;
      int kh = gap ? in[1] : d->k, kw = gap ? in[2] : d->k;
      int s = gap ? 1 : (d->s ? d->s : d->k), pad = gap ? 0 : d->p;
      for (int c = 0; c < out[0]; c++)
        for (int oy = 0; oy < out[1]; oy++)
          for (int ox = 0; ox < out[2]; ox++) {
            double acc = d->kind == AN_OP_MAXPOOL ? -INFINITY : 0;
            for (int ky = 0; ky < kh; ky++)
              for (int kx = 0; kx < kw; kx++) {
                int iy = oy * s - pad + ky, ix = ox * s - pad + kx;
                if (iy < 0 || iy >= in[1] || ix < 0 || ix >= in[2])
                  continue; /* padding: -inf for max, 0 (but counted) for avg */
                double v = xb[((size_t)c * in[1] + iy) * in[2] + ix];
                acc = d->kind == AN_OP_MAXPOOL ? (v > acc ? v : acc) : acc + v;
              }
            yb[((size_t)c * out[1] + oy) * out[2] + ox] =
                d->kind == AN_OP_MAXPOOL ? acc : acc / (kh * kw);
          }
      break;
    }
    case AN_OP_FLATTEN:
    case AN_OP_RESHAPE:
    case AN_OP_DROPOUT: /* tested with p = 0 here; masks are checked separately */
      memcpy(yb, xb, inn * sizeof *yb);
      break;
    case AN_OP_ADD:
      for (size_t i = 0; i < inn; i++)
        yb[i] = xb[i] + x2[b * inn + i];
      break;
    case AN_OP_BATCHNORM:
      break; /* across the batch: below */
    default:
      ck_abort_msg("no reference for %s", an_op_name(d->kind));
    }
  }
  if (d->kind == AN_OP_BATCHNORM) { /* training mode: batch statistics, biased variance */
    size_t hw = (size_t)in[1] * in[2];
    for (int c = 0; c < in[0]; c++) {
      double mean = 0, var = 0, cnt = (double)BATCH * hw;
      for (int b = 0; b < BATCH; b++)
        for (size_t i = 0; i < hw; i++)
          mean += x[b * inn + c * hw + i];
      mean /= cnt;
      for (int b = 0; b < BATCH; b++)
        for (size_t i = 0; i < hw; i++) {
          double t = x[b * inn + c * hw + i] - mean;
          var += t * t;
        }
      var /= cnt;
      for (int b = 0; b < BATCH; b++)
        for (size_t i = 0; i < hw; i++)
          y[b * inn + c * hw + i] = (x[b * inn + c * hw + i] - mean) / sqrt(var + d->alpha) *
                                        p[L->w_off + c] + p[L->b_off + c];
    }
  }
}

/* The whole graph in double; returns the output (ref->act[n-1]). */
static const double *ref_forward(ref_t *r, const double *x, const double *p) {
  for (int i = 0; i < r->n; i++) {
    const an_layer_info_t *L = &r->li[i];
    const double *in = L->input < 0 ? x : r->act[L->input];
    const double *in2 = L->input2 == -1 ? x : (L->input2 >= 0 ? r->act[L->input2] : NULL);
    ref_layer(L, in, in2, p, r->act[i]);
  }
  return r->act[r->n - 1];
}

static double ref_objective(ref_t *r, const double *x, const double *p, const double *g,
                            size_t outn) {
  const double *y = ref_forward(r, x, p);
  double s = 0;
  for (size_t i = 0; i < outn; i++)
    s += y[i] * g[i];
  return s;
}

static double rel_err(double a, double b) { return fabs(a - b) / fmax(1e-3, fabs(a) + fabs(b)); }

/* Builds `spec`, checks forward and all gradients against the reference. */
static void check_spec(const char *spec, uint64_t seed) {
  an_model_t *m = NULL;
  char err[512];
  an_rng_t rng;
  int in[3], out[3];
  ref_t r = {0};

  ck_assert_msg(an_model_parse(spec, &m, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_model_finalize(m, AN_INIT_UNIFORM, seed, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_model_plan(m, BATCH, 1, err, sizeof err) == 0, "%s", err);
  an_model_input_shape(m, in);
  an_model_output_shape(m, out);
  size_t inn = BATCH * numel(in), outn = BATCH * numel(out), np = an_model_param_count(m);

  r.m = m;
  r.n = an_model_layer_count(m);
  r.li = calloc((size_t)r.n, sizeof *r.li);
  r.act = calloc((size_t)r.n, sizeof *r.act);
  for (int i = 0; i < r.n; i++) {
    ck_assert_int_eq(an_model_layer_info(m, i, &r.li[i]), 0);
    r.act[i] = calloc(BATCH * numel(r.li[i].outshape), sizeof(double));
  }

  float *x = malloc(inn * sizeof *x), *dx = malloc(inn * sizeof *dx);
  double *xd = malloc(inn * sizeof *xd), *pd = malloc((np + 1) * sizeof *pd);
  double *g = malloc(outn * sizeof *g);
  const float *y;
  float *params = an_model_params(m);
  an_rng_seed(&rng, seed + 1);
  for (size_t i = 0; i < inn; i++)
    xd[i] = x[i] = (float)(2 * an_rng_uniform(&rng) - 1);
  for (size_t i = 0; i < np; i++) {
    /* Batch-norm scales start at 1 and shifts at 0; perturb them so the
     * test sees their gradients act. */
    params[i] += (float)(0.1 * (2 * an_rng_uniform(&rng) - 1));
    pd[i] = params[i];
  }

  ck_assert_int_eq(an_model_forward(m, x, 1, &y), 0);
  const double *yref = ref_forward(&r, xd, pd);
  for (size_t i = 0; i < outn; i++)
    ck_assert_msg(fabs(y[i] - yref[i]) <= 1e-4 * (1 + fabs(yref[i])),
                  "forward[%zu]: %.7g vs reference %.7g\n%s", i, y[i], yref[i], spec);

  float *dy = an_model_output_grad(m);
  for (size_t i = 0; i < outn; i++)
    dy[i] = (float)(g[i] = 2 * an_rng_uniform(&rng) - 1);
  ck_assert_int_eq(an_model_backward(m, dx), 0);
  const float *grads = an_model_grads(m);

  const double h = 1e-5;
  for (size_t i = 0; i < inn; i++) {
    double keep = xd[i];
    xd[i] = keep + h;
    double up = ref_objective(&r, xd, pd, g, outn);
    xd[i] = keep - h;
    double down = ref_objective(&r, xd, pd, g, outn);
    xd[i] = keep;
    double fd = (up - down) / (2 * h);
    ck_assert_msg(rel_err(dx[i], fd) < 2e-3, "d/dx[%zu]: %.7g vs finite difference %.7g\n%s",
                  i, dx[i], fd, spec);
  }
  for (size_t i = 0; i < np; i++) {
    double keep = pd[i];
    pd[i] = keep + h;
    double up = ref_objective(&r, xd, pd, g, outn);
    pd[i] = keep - h;
    double down = ref_objective(&r, xd, pd, g, outn);
    pd[i] = keep;
    double fd = (up - down) / (2 * h);
    ck_assert_msg(rel_err(grads[i], fd) < 2e-3,
                  "d/dparam[%zu]: %.7g vs finite difference %.7g\n%s", i, grads[i], fd, spec);
  }

  for (int i = 0; i < r.n; i++)
    free(r.act[i]);
  free(r.act);
  free(r.li);
  free(x);
  free(dx);
  free(xd);
  free(pd);
  free(g);
  an_model_free(m);
}

static const char *const layer_specs[] = {
    "input 2 5 5\nconv 3 k=3 p=1\n",
    "input 2 7 6\nconv 3 k=3 s=2 p=1\n",
    "input 3 8 8\nconv 2 k=2 s=2\n",
    "input 2 7 7\nconv 4 k=1 s=2 bias=0\n", /* stride skips the last row and column */
    "input 1 6 5\nconv 2 k=5 p=2\n",
    "input 3 4 4\nconvt 2 k=2 s=2\n",
    "input 2 3 4\nconvt 3 k=3 s=2 p=1\n",
    "input 2 3 3\nconvt 2 k=3 s=1 p=0 bias=0\n",
    "input 3 2 2\nlinear 5\n",
    "input 7 1 1\nlinear 3 bias=0\n",
    "input 2 3 3\nrelu\n",
    "input 2 3 3\nleakyrelu alpha=0.2\n",
    "input 2 3 3\nsigmoid\n",
    "input 2 3 3\ntanh\n",
    "input 2 6 6\nmaxpool k=2\n",
    "input 2 7 7\nmaxpool k=3 s=2 p=1\n",
    "input 2 6 6\navgpool k=2\n",
    "input 2 5 5\navgpool k=3 s=2 p=1\n",
    "input 3 4 5\ngap\n",
    "input 3 4 4\nbatchnorm\n",
    "input 2 3 3\ndropout p=0\n",
    "input 2 3 3\nflatten\nlinear 4\n",
    "input 12 1 1\nreshape 3 2 2\nconv 2 k=2\n",
};

START_TEST(test_layer) { check_spec(layer_specs[_i], 100 + (uint64_t)_i); }
END_TEST

START_TEST(test_residual_graph) {
  /* Two consumers of one tensor, a projection shortcut and an add: the
   * gradient routing of the model itself. */
  check_spec("input 2 6 6\n"
             "a: conv 3 k=3 p=1\n"
             "relu\n"
             "b: conv 3 k=3 p=1\n"
             "add a\n"
             "c: relu\n"
             "conv 4 k=3 s=2 p=1 from=c\n"
             "m: batchnorm\n"
             "conv 4 k=1 s=2 from=a\n"
             "add m\n"
             "gap\n"
             "linear 3\n",
             7);
}
END_TEST

START_TEST(test_unused_branch_gets_zero_gradient) {
  an_model_t *m = NULL;
  char err[256];
  const float *y;
  float x[2 * 4] = {1, 2, 3, 4, 5, 6, 7, 8};
  ck_assert_int_eq(an_model_parse("input 1 2 2\na: linear 3\nlinear 2 from=a\n"
                                  "dead: linear 5 from=a\nlinear 1\n", &m, err, sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 1, err, sizeof err), 0);
  ck_assert_int_eq(an_model_plan(m, 2, 1, err, sizeof err), 0);
  ck_assert_int_eq(an_model_forward(m, x, 1, &y), 0);
  an_model_output_grad(m)[0] = an_model_output_grad(m)[1] = 1;
  memset(an_model_grads(m), 0x7f, an_model_param_count(m) * sizeof(float)); /* garbage */
  ck_assert_int_eq(an_model_backward(m, NULL), 0);
  an_layer_info_t li;
  an_model_layer_info(m, 1, &li); /* "linear 2": its output feeds nothing */
  for (size_t i = 0; i < li.w_count + li.b_count; i++)
    ck_assert_float_eq(an_model_grads(m)[li.w_off + i], 0.0f);
  an_model_free(m);
}
END_TEST

START_TEST(test_dropout_mask) {
  an_model_t *m = NULL;
  char err[256];
  const float *y;
  enum { N = 4000 };
  float *x = malloc(N * sizeof *x), *dx = malloc(N * sizeof *dx);
  ck_assert_int_eq(an_model_parse("input 1000 1 1\ndropout p=0.25\n", &m, err, sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 1, err, sizeof err), 0);
  ck_assert_int_eq(an_model_plan(m, 4, 1, err, sizeof err), 0);
  for (int i = 0; i < N; i++)
    x[i] = 1.0f + (float)i / N;
  ck_assert_int_eq(an_model_forward(m, x, 1, &y), 0);
  int dropped = 0;
  float *dy = an_model_output_grad(m);
  for (int i = 0; i < N; i++) {
    ck_assert(y[i] == 0.0f || fabsf(y[i] - x[i] / 0.75f) < 1e-5f);
    dropped += y[i] == 0.0f;
    dy[i] = 1.0f;
  }
  /* Binomial(4000, 0.25): mean 1000, sd 27; six sd either way. */
  ck_assert_int_gt(dropped, 838);
  ck_assert_int_lt(dropped, 1162);
  ck_assert_int_eq(an_model_backward(m, dx), 0);
  for (int i = 0; i < N; i++) /* the same mask scales the gradient */
    ck_assert(fabsf(dx[i] - y[i] / x[i]) < 1e-5f);
  ck_assert_int_eq(an_model_forward(m, x, 0, &y), 0); /* evaluation: identity */
  for (int i = 0; i < N; i++)
    ck_assert_float_eq(y[i], x[i]);
  free(x);
  free(dx);
  an_model_free(m);
}
END_TEST

/* Losses: value against a direct double formula, gradient against finite
 * differences of that formula. */
static double mse_ref(const double *p, const double *t, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++)
    s += (p[i] - t[i]) * (p[i] - t[i]);
  return s / n;
}

static double bce_ref(const double *z, const double *t, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) { /* equation 4 on sigmoid outputs */
    double q = 1 / (1 + exp(-z[i]));
    s += -(t[i] * log(q) + (1 - t[i]) * log(1 - q));
  }
  return s / n;
}

static double ce_ref(const double *z, const uint8_t *lab, int batch, int k) {
  double s = 0;
  for (int b = 0; b < batch; b++) {
    double denom = 0;
    for (int j = 0; j < k; j++)
      denom += exp(z[b * k + j]);
    s += -log(exp(z[b * k + lab[b]]) / denom);
  }
  return s / batch;
}

START_TEST(test_losses) {
  enum { B = 3, K = 5, N = B * K };
  an_rng_t rng;
  float pf[N], tf[N], grad[N];
  double p[N], t[N];
  uint8_t lab[B] = {4, 0, 2};
  an_rng_seed(&rng, 5);
  for (int i = 0; i < N; i++) {
    p[i] = pf[i] = (float)(4 * an_rng_uniform(&rng) - 2);
    t[i] = tf[i] = (float)an_rng_uniform(&rng);
  }
  const double h = 1e-6;
  for (int which = 0; which < 3; which++) {
    double v = which == 0   ? an_loss_mse(pf, tf, N, grad)
               : which == 1 ? an_loss_bce_logits(pf, tf, N, grad)
                            : an_loss_softmax_ce(pf, lab, B, K, grad, NULL);
    double r = which == 0 ? mse_ref(p, t, N) : which == 1 ? bce_ref(p, t, N) : ce_ref(p, lab, B, K);
    ck_assert_msg(fabs(v - r) < 1e-5 * (1 + fabs(r)), "loss %d: %g vs %g", which, v, r);
    for (int i = 0; i < N; i++) {
      double keep = p[i], up, down;
      p[i] = keep + h;
      up = which == 0 ? mse_ref(p, t, N) : which == 1 ? bce_ref(p, t, N) : ce_ref(p, lab, B, K);
      p[i] = keep - h;
      down = which == 0 ? mse_ref(p, t, N) : which == 1 ? bce_ref(p, t, N) : ce_ref(p, lab, B, K);
      p[i] = keep;
      ck_assert_msg(rel_err(grad[i], (up - down) / (2 * h)) < 1e-3, "loss %d grad[%d]", which, i);
    }
  }
  /* Extreme logits stay finite (the stable formulation). */
  float big[2] = {1000.0f, -1000.0f}, tgt[2] = {0.0f, 1.0f};
  ck_assert(isfinite(an_loss_bce_logits(big, tgt, 2, grad)));
  uint8_t bad[1] = {9};
  ck_assert(isnan(an_loss_softmax_ce(pf, bad, 1, K, grad, NULL))); /* label out of range */
}
END_TEST

START_TEST(test_bf16_linear_close_to_f32) {
  /* bfloat16 keeps 8 significant bits: products of 64 terms agree with
   * float32 to about 1%. This checks the bf16 path computes the same thing
   * (layouts, transposes), not that it is exact. */
  static const char spec[] = "input 64 1 1\nlinear 48\n";
  an_model_t *a = NULL, *b = NULL;
  char err[256];
  float x[8 * 64], dxa[8 * 64], dxb[8 * 64];
  const float *ya, *yb;
  an_rng_t rng;
  an_rng_seed(&rng, 3);
  for (int i = 0; i < 8 * 64; i++)
    x[i] = (float)(2 * an_rng_uniform(&rng) - 1);
  ck_assert_int_eq(an_model_parse(spec, &a, err, sizeof err), 0);
  ck_assert_int_eq(an_model_parse(spec, &b, err, sizeof err), 0);
  an_model_set_precision(b, AN_PRECISION_BF16);
  ck_assert_int_eq(an_model_finalize(a, AN_INIT_UNIFORM, 9, err, sizeof err), 0);
  ck_assert_int_eq(an_model_finalize(b, AN_INIT_UNIFORM, 9, err, sizeof err), 0);
  ck_assert_int_eq(an_model_plan(a, 8, 1, err, sizeof err), 0);
  ck_assert_msg(an_model_plan(b, 8, 1, err, sizeof err) == 0, "bf16 plan: %s", err);
  ck_assert_int_eq(an_model_forward(a, x, 1, &ya), 0);
  ck_assert_int_eq(an_model_forward(b, x, 1, &yb), 0);
  for (int i = 0; i < 8 * 48; i++) {
    ck_assert_msg(fabsf(ya[i] - yb[i]) < 0.02f * (1 + fabsf(ya[i])), "y[%d] %g vs %g", i, ya[i],
                  yb[i]);
    an_model_output_grad(a)[i] = an_model_output_grad(b)[i] = (float)(an_rng_uniform(&rng) - 0.5);
  }
  ck_assert_int_eq(an_model_backward(a, dxa), 0);
  ck_assert_int_eq(an_model_backward(b, dxb), 0);
  for (int i = 0; i < 8 * 64; i++)
    ck_assert_msg(fabsf(dxa[i] - dxb[i]) < 0.02f * (1 + fabsf(dxa[i])), "dx[%d]", i);
  for (size_t i = 0; i < an_model_param_count(a); i++)
    ck_assert_msg(fabsf(an_model_grads(a)[i] - an_model_grads(b)[i]) <
                      0.02f * (1 + fabsf(an_model_grads(a)[i])),
                  "grad[%zu] %g vs %g", i, an_model_grads(a)[i], an_model_grads(b)[i]);
  an_model_free(a);
  an_model_free(b);
}
END_TEST

static Suite *gradients_suite(void) {
  Suite *s = suite_create("gradients");
  TCase *tc = tcase_create("layers");
  tcase_add_loop_test(tc, test_layer, 0, (int)(sizeof layer_specs / sizeof layer_specs[0]));
  tcase_add_test(tc, test_residual_graph);
  tcase_add_test(tc, test_unused_branch_gets_zero_gradient);
  tcase_add_test(tc, test_dropout_mask);
  tcase_add_test(tc, test_losses);
  tcase_add_test(tc, test_bf16_linear_close_to_f32);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(gradients_suite)
