#include "publisher/learned_decoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"

#define AN_LD_BATCH 32
#define AN_LD_LR 1e-3f
/* Samples in one epoch at least: with a handful of pairs, one pass is a
 * handful of updates, and the attacker would be judged untrained. */
#define AN_LD_MIN_EPOCH 500
/* Codes decoded per forward pass at inference. */
#define AN_LD_RUN_BATCH 64

struct an_learned_decoder {
  an_model_t *model;
  int code_chw[3], image_chw[3];
  size_t code_len, image_len; /* values per sample */
  float *mean, *inv_std;      /* per code channel */
  double loss;
  int planned_batch;          /* batch the model is planned for; 0 = none */
  int planned_grad;
};

void an_learned_decoder_free(an_learned_decoder_t *ld) {
  if (!ld)
    return;
  an_model_free(ld->model);
  free(ld->mean);
  free(ld->inv_std);
  free(ld);
}

double an_learned_decoder_loss(const an_learned_decoder_t *ld) { return ld->loss; }

/* The L-decoder's layout for these shapes, as spec text. */
static int an_ld_spec(const int code[3], const int image[3], char *buf, size_t len, char *err,
                      size_t errlen) {
  int f = code[1] / image[1], n;
  if (code[1] % image[1] != 0 || code[2] % image[2] != 0 || code[2] / image[2] != f || f < 1 ||
      f > 8) {
    snprintf(err, errlen, "no learned decoder from %dx%dx%d codes to %dx%dx%d images: the "
                          "code's sides must be the image's times one whole factor up to 8",
             code[0], code[1], code[2], image[0], image[1], image[2]);
    return AN_EMODEL;
  }
  /* The first layer brings the code to the image's size: a strided
   * convolution as in ArchNet (k=2 s=2 for MNIST), or a 3x3 one when the
   * sizes already agree. */
  char first[32];
  if (f == 1)
    snprintf(first, sizeof first, "conv 10 k=3 p=1");
  else
    snprintf(first, sizeof first, "conv 10 k=%d s=%d", f, f);
  n = snprintf(buf, len,
               "input %d %d %d\n"
               "%s\n"
               "conv 30 k=3 p=1\n"
               "conv 10 k=3 p=1\n"
               "conv 10 k=3 p=1\n"
               "conv 10 k=3 p=1\n"
               "relu\n"
               "conv 5 k=3 p=1\n"
               "conv 3 k=3 p=1\n"
               "relu\n"
               "conv %d k=3 p=1\n",
               code[0], code[1], code[2], first, image[0]);
  if (n < 0 || (size_t)n >= len) {
    snprintf(err, errlen, "learned decoder spec does not fit its buffer");
    return AN_EMODEL;
  }
  return 0;
}

static int an_ld_plan(an_learned_decoder_t *ld, int batch, int grad, char *err, size_t errlen) {
  int rc;
  if (ld->planned_batch == batch && ld->planned_grad == grad)
    return 0;
  if ((rc = an_model_plan(ld->model, batch, grad, err, errlen)) != 0)
    return rc;
  ld->planned_batch = batch;
  ld->planned_grad = grad;
  return 0;
}

/* Copies `count` codes into `dst`, standardised per channel. */
static void an_ld_standardise(const an_learned_decoder_t *ld, const float *src, size_t count,
                              float *dst) {
  size_t plane = (size_t)ld->code_chw[1] * (size_t)ld->code_chw[2];
  for (size_t i = 0; i < count; i++)
    for (int c = 0; c < ld->code_chw[0]; c++) {
      size_t at = i * ld->code_len + (size_t)c * plane;
      for (size_t j = 0; j < plane; j++)
        dst[at + j] = (src[at + j] - ld->mean[c]) * ld->inv_std[c];
    }
}

static void an_ld_channel_stats(an_learned_decoder_t *ld, const float *codes, size_t k) {
  size_t plane = (size_t)ld->code_chw[1] * (size_t)ld->code_chw[2];
  for (int c = 0; c < ld->code_chw[0]; c++) {
    double s = 0.0, ss = 0.0, cnt = (double)k * (double)plane, var;
    for (size_t i = 0; i < k; i++) {
      const float *v = codes + i * ld->code_len + (size_t)c * plane;
      for (size_t j = 0; j < plane; j++) {
        s += v[j];
        ss += (double)v[j] * v[j];
      }
    }
    ld->mean[c] = (float)(s / cnt);
    var = ss / cnt - (s / cnt) * (s / cnt);
    /* A constant channel carries nothing; leave it at zero after centring. */
    ld->inv_std[c] = var > 1e-12 ? (float)(1.0 / sqrt(var)) : 1.0f;
  }
}

int an_learned_decoder_train(const float *codes, const float *images, size_t k,
                             const int code_chw[3], const int image_chw[3],
                             const an_learned_decoder_params_t *params,
                             an_learned_decoder_t **out, char *err, size_t errlen) {
  an_learned_decoder_t *ld = NULL;
  an_optim_t *opt = NULL;
  float *xb = NULL, *yb = NULL;
  uint32_t *order = NULL;
  an_rng_t rng;
  char spec[1024];
  int batch = params->batch > 0 ? params->batch : AN_LD_BATCH, rc = UV_ENOMEM;
  size_t steps_per_epoch, next = 0;

  *out = NULL;
  if (k == 0 || k > UINT32_MAX || params->epochs < 1) {
    snprintf(err, errlen, "learned decoder: needs at least one pair and one epoch");
    rc = UV_EINVAL;
    goto done;
  }
  steps_per_epoch = (k > AN_LD_MIN_EPOCH ? k : AN_LD_MIN_EPOCH) / (size_t)batch;
  if (!(ld = calloc(1, sizeof *ld)))
    goto oom;
  memcpy(ld->code_chw, code_chw, sizeof ld->code_chw);
  memcpy(ld->image_chw, image_chw, sizeof ld->image_chw);
  ld->code_len = (size_t)code_chw[0] * (size_t)code_chw[1] * (size_t)code_chw[2];
  ld->image_len = (size_t)image_chw[0] * (size_t)image_chw[1] * (size_t)image_chw[2];
  if ((rc = an_ld_spec(code_chw, image_chw, spec, sizeof spec, err, errlen)) != 0 ||
      (rc = an_model_parse(spec, &ld->model, err, errlen)) != 0 ||
      (rc = an_model_finalize(ld->model, AN_INIT_UNIFORM, params->seed, err, errlen)) != 0 ||
      (rc = an_ld_plan(ld, batch, 1, err, errlen)) != 0)
    goto done;
  rc = UV_ENOMEM;
  ld->mean = malloc(sizeof *ld->mean * (size_t)code_chw[0]);
  ld->inv_std = malloc(sizeof *ld->inv_std * (size_t)code_chw[0]);
  xb = malloc(sizeof *xb * (size_t)batch * ld->code_len);
  yb = malloc(sizeof *yb * (size_t)batch * ld->image_len);
  order = malloc(sizeof *order * k);
  if (!ld->mean || !ld->inv_std || !xb || !yb || !order)
    goto oom;
  an_ld_channel_stats(ld, codes, k);
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = params->lr > 0 ? params->lr : AN_LD_LR};
  if ((rc = an_optim_new(&op, an_model_param_count(ld->model), &opt)) != 0)
    goto oom;

  an_rng_seed(&rng, params->seed ^ 0x9e3779b97f4a7c15ull); /* not the init's stream */
  for (uint32_t i = 0; i < k; i++)
    order[i] = i;
  for (int epoch = 1; epoch <= params->epochs; epoch++) {
    double sum = 0.0;
    for (size_t s = 0; s < steps_per_epoch; s++) {
      const float *pred;
      double loss;
      for (int i = 0; i < batch; i++) {
        size_t src;
        if (next % k == 0) /* a new pass over the pairs, in a new order */
          an_rng_shuffle(&rng, order, k);
        src = order[next++ % k];
        an_ld_standardise(ld, codes + src * ld->code_len, 1, xb + (size_t)i * ld->code_len);
        memcpy(yb + (size_t)i * ld->image_len, images + src * ld->image_len,
               sizeof *yb * ld->image_len);
      }
      if ((rc = an_model_forward(ld->model, xb, 1, &pred)) != 0) {
        snprintf(err, errlen, "learned decoder: forward pass failed: %s", an_strerror(rc));
        goto done;
      }
      loss = an_loss_mse(pred, yb, (size_t)batch * ld->image_len, an_model_output_grad(ld->model));
      if (!isfinite(loss)) {
        rc = AN_EMODEL;
        snprintf(err, errlen, "learned decoder: the training loss diverged in epoch %d", epoch);
        goto done;
      }
      if ((rc = an_model_backward(ld->model, NULL)) != 0) {
        snprintf(err, errlen, "learned decoder: backward pass failed: %s", an_strerror(rc));
        goto done;
      }
      an_optim_step(opt, an_model_params(ld->model), an_model_grads(ld->model));
      sum += loss;
    }
    ld->loss = sum / (double)steps_per_epoch;
    if (params->progress)
      params->progress(params->progress_ctx, epoch, params->epochs, ld->loss);
  }
  *out = ld;
  ld = NULL;
  rc = 0;
  goto done;
oom:
  snprintf(err, errlen, "learned decoder: out of memory");
done:
  an_learned_decoder_free(ld);
  an_optim_free(opt);
  free(xb);
  free(yb);
  free(order);
  return rc;
}

int an_learned_decoder_run(an_learned_decoder_t *ld, const float *codes, size_t n, float *images,
                           char *err, size_t errlen) {
  int batch = n < AN_LD_RUN_BATCH ? (int)n : AN_LD_RUN_BATCH, rc = UV_ENOMEM;
  float *xb = NULL;

  if (n == 0)
    return 0;
  if (!(xb = calloc((size_t)batch * ld->code_len, sizeof *xb))) {
    snprintf(err, errlen, "learned decoder: out of memory");
    goto done;
  }
  if ((rc = an_ld_plan(ld, batch, 0, err, errlen)) != 0)
    goto done;
  for (size_t i0 = 0; i0 < n; i0 += (size_t)batch) {
    size_t b = n - i0 < (size_t)batch ? n - i0 : (size_t)batch;
    const float *pred;
    /* A short last batch runs padded with the previous codes; only b
     * outputs are kept. */
    an_ld_standardise(ld, codes + i0 * ld->code_len, b, xb);
    if ((rc = an_model_forward(ld->model, xb, 0, &pred)) != 0) {
      snprintf(err, errlen, "learned decoder: forward pass failed: %s", an_strerror(rc));
      goto done;
    }
    memcpy(images + i0 * ld->image_len, pred, sizeof *images * b * ld->image_len);
  }
  rc = 0;
done:
  free(xb);
  return rc;
}
