/* The built-in trainer: a common/nn classifier preset sized to the task's
 * input, Adam or SGD (optionally cosine-annealed), optional per-channel
 * standardisation and shift augmentation, seeded shuffling, batches read
 * straight from the mapped .npy files (an encoded MNIST training set is
 * 3.8 GB in float16: it is never loaded whole). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/blob/npy.h"
#include "common/error.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/normalize.h"
#include "common/nn/onnx/export.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"
#include "worker/trainer.h"

/* Labels as bytes, from uint8 or int64 .npy, each checked against K. */
static int load_labels(const an_npy_t *y, size_t n, int64_t classes, uint8_t *out) {
  for (size_t i = 0; i < n; i++) {
    int64_t v = y->dtype == AN_NPY_U8 ? ((const uint8_t *)y->data)[i]
                                      : ((const int64_t *)y->data)[i];
    if (v < 0 || v >= classes || v > 255)
      return -1;
    out[i] = (uint8_t)v;
  }
  return 0;
}

/* Augmentation: moves every channel of one sample by the same random
 * (dy, dx) in [-max, max], filling with zeros; `tmp` holds one channel. */
static void shift_sample(float *x, int64_t c, int64_t h, int64_t w, int max, an_rng_t *rng,
                         float *tmp) {
  int64_t dy = (int64_t)an_rng_below(rng, (uint64_t)(2 * max + 1)) - max;
  int64_t dx = (int64_t)an_rng_below(rng, (uint64_t)(2 * max + 1)) - max;
  if (!dy && !dx)
    return;
  for (int64_t ch = 0; ch < c; ch++) {
    float *p = x + ch * h * w;
    for (int64_t y = 0; y < h; y++)
      for (int64_t xx = 0; xx < w; xx++) {
        int64_t sy = y - dy, sx = xx - dx;
        tmp[y * w + xx] = sy >= 0 && sy < h && sx >= 0 && sx < w ? p[sy * w + sx] : 0.0f;
      }
    memcpy(p, tmp, (size_t)(h * w) * sizeof *p);
  }
}

int an_trainer_builtin(const an_train_job_t *job, char *err, size_t errlen) {
  an_npy_t x = {0}, y = {0};
  an_model_t *m = NULL;
  an_optim_t *opt = NULL;
  float *batch_x = NULL, *shifted = NULL;
  uint8_t *labels = NULL, *batch_y = NULL;
  uint32_t *order = NULL;
  an_norm_t norm = {0};
  char why[512];
  int rc;

  if ((rc = an_npy_map(job->x_path, &x, err, errlen)) != 0 ||
      (rc = an_npy_map(job->y_path, &y, err, errlen)) != 0)
    goto done;
  rc = AN_EFORMAT;
  size_t item = (size_t)(job->c * job->h * job->w);
  if (x.ndim != 4 || x.shape[1] != job->c || x.shape[2] != job->h || x.shape[3] != job->w ||
      (x.dtype != AN_NPY_F16 && x.dtype != AN_NPY_F32 && x.dtype != AN_NPY_U8)) {
    snprintf(err, errlen, "%s: expected N x %lld x %lld x %lld float16, float32 or uint8",
             job->x_path, (long long)job->c, (long long)job->h, (long long)job->w);
    goto done;
  }
  size_t n = (size_t)x.shape[0];
  if (y.ndim != 1 || (size_t)y.shape[0] != n || (y.dtype != AN_NPY_U8 && y.dtype != AN_NPY_I64)) {
    snprintf(err, errlen, "%s: expected %zu labels (uint8 or int64)", job->y_path, n);
    goto done;
  }
  int batch = job->batch > 0 ? job->batch : 64;
  if (n < (size_t)batch)
    batch = (int)n;
  if (batch == 0) {
    snprintf(err, errlen, "the training set is empty");
    goto done;
  }
  rc = UV_ENOMEM;
  if (!(labels = malloc(n)) || !(order = malloc(n * sizeof *order)) ||
      !(batch_x = malloc((size_t)batch * item * sizeof *batch_x)) ||
      !(batch_y = malloc((size_t)batch)) ||
      !(shifted = malloc((size_t)(job->h * job->w) * sizeof *shifted))) {
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  if (load_labels(&y, n, job->classes, labels) != 0) {
    rc = AN_EFORMAT;
    snprintf(err, errlen, "%s: a label outside 0..%lld", job->y_path,
             (long long)job->classes - 1);
    goto done;
  }
  int chw[3] = {(int)job->c, (int)job->h, (int)job->w};
  if ((rc = an_model_preset(job->preset ? job->preset : "cnn-small", chw, (int)job->classes, &m,
                            why, sizeof why)) != 0) {
    snprintf(err, errlen, "%s", why);
    goto done;
  }
  an_model_set_precision(m, job->bf16 ? AN_PRECISION_BF16 : AN_PRECISION_F32);
  an_model_set_seed(m, job->seed);
  if ((rc = an_model_finalize(m, AN_INIT_KAIMING, job->seed, why, sizeof why)) != 0 ||
      (rc = an_model_plan(m, batch, 1, why, sizeof why)) != 0) {
    snprintf(err, errlen, "%s", why);
    goto done;
  }
  an_optim_params_t op = {.kind = job->sgd ? AN_OPTIM_SGD : AN_OPTIM_ADAM,
                          .lr = (float)(job->lr > 0 ? job->lr : 1e-3),
                          .momentum = job->sgd ? 0.9f : 0.0f};
  if ((rc = an_optim_new(&op, an_model_param_count(m), &opt)) != 0) {
    snprintf(err, errlen, "out of memory for the optimizer");
    goto done;
  }
  if (job->normalize) {
    /* One pass over the training set for its statistics. */
    if ((rc = an_norm_init(&norm, (int)job->c, (size_t)(job->h * job->w),
                           job->normalize == AN_TRAIN_NORM_IMAGE)) != 0) {
      snprintf(err, errlen, "out of memory");
      goto done;
    }
    for (size_t i = 0; i < n; i++) {
      an_npy_to_f32(&x, i * item, item, batch_x);
      an_norm_accumulate(&norm, batch_x);
    }
    if ((rc = an_norm_finish(&norm)) != 0) {
      snprintf(err, errlen, "the training set is empty");
      goto done;
    }
  }
  an_rng_t rng;
  an_rng_seed(&rng, job->seed);
  for (size_t i = 0; i < n; i++)
    order[i] = (uint32_t)i;
  int epochs = job->epochs > 0 ? job->epochs : 3;
  size_t steps = n / (size_t)batch, total = steps * (size_t)epochs, done_steps = 0;
  const float *logits;
  for (int e = 0; e < epochs; e++) {
    an_rng_shuffle(&rng, order, n);
    for (size_t st = 0; st < steps; st++, done_steps++) {
      if (job->cosine)
        an_optim_set_lr(opt, an_lr_cosine(op.lr, done_steps, total));
      for (int k = 0; k < batch; k++) {
        size_t row = order[st * (size_t)batch + (size_t)k];
        an_npy_to_f32(&x, row * item, item, batch_x + (size_t)k * item);
        if (job->normalize)
          an_norm_apply(&norm, batch_x + (size_t)k * item);
        if (job->shift > 0)
          shift_sample(batch_x + (size_t)k * item, job->c, job->h, job->w, job->shift, &rng,
                       shifted);
        batch_y[k] = labels[row];
      }
      if (an_model_forward(m, batch_x, 1, &logits) != 0) {
        rc = AN_EMODEL;
        snprintf(err, errlen, "the forward pass failed");
        goto done;
      }
      an_loss_softmax_ce(logits, batch_y, batch, (int)job->classes, an_model_output_grad(m),
                         NULL);
      if (an_model_backward(m, NULL) != 0) {
        rc = AN_EMODEL;
        snprintf(err, errlen, "the backward pass failed");
        goto done;
      }
      an_optim_step(opt, an_model_params(m), an_model_grads(m));
      if (job->progress && job->progress((double)(done_steps + 1) / (double)total, job->arg)) {
        rc = 1;
        goto done;
      }
    }
  }
  an_onnx_export_opts_t eo = {.input_name = "x", .output_name = "logits", .first = 0,
                              .last = -1, .producer = "archnet-worker",
                              .in_norm = job->normalize ? &norm : NULL};
  rc = an_onnx_export(m, &eo, job->out_path, err, errlen);
done:
  an_npy_free(&x);
  an_npy_free(&y);
  an_model_free(m);
  an_optim_free(opt);
  an_norm_destroy(&norm);
  free(batch_x);
  free(shifted);
  free(batch_y);
  free(labels);
  free(order);
  return rc;
}
