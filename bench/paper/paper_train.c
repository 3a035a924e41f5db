/* The classifier half of the paper's Table 1: trains common/nn's cnn-small
 * (conv32-pool-conv64-pool-fc128-fc, Adam, batch 64, as the worker's
 * built-in trainer does) on one training set and scores it on the matching
 * test set after every epoch, so one program gives AO (original images),
 * AE (ArchNet codes) and the RC4 row, and the convergence curves.
 *
 *   paper_train --data DIR --epochs E --curve OUT.csv
 *       DIR holds train_x/train_y/test_x/test_y.npy as written by
 *       `archnet-publisher encode --with-test` or `baseline rc4`: the values
 *       are used as stored.
 *   paper_train --raw DIR --epochs E --curve OUT.csv
 *       DIR is the raw dataset (idx files or CIFAR-10 batches); the training
 *       images are those `encode` keeps after its train/validation split
 *       (same --val-fraction and --split-seed), as pixel / 255.
 *
 * Prints one line per epoch and writes the curve as CSV, starting with the
 * untrained model as epoch 0 (its loss and training accuracy are nan):
 *   epoch,train_loss,train_accuracy,test_accuracy,seconds */
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blob/dataset.h"
#include "common/blob/npy.h"
#include "common/config.h"
#include "common/error.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/normalize.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"

typedef struct settings {
  char *data, *raw, *curve, *preset, *precision, *schedule, *normalize;
  int64_t epochs, batch, seed, split_seed, limit;
  double lr, val_fraction;
} settings_t;

#define OPT(f) offsetof(settings_t, f)

static const an_option_t options[] = {
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "DIR",
     "train_x/train_y/test_x/test_y.npy (encode --with-test or baseline rc4)"},
    {"raw", AN_OPT_STR, OPT(raw), NULL, 0, 0, "DIR",
     "a raw dataset instead: its training images after encode's split, as pixel / 255"},
    {"val-fraction", AN_OPT_DOUBLE, OPT(val_fraction), "0.1", 0, 0.9, "F",
     "with --raw: the validation share encode held back"},
    {"split-seed", AN_OPT_INT, OPT(split_seed), "1", 0, INT64_MAX, "N",
     "with --raw: the seed of encode's train/validation split"},
    {"limit", AN_OPT_INT, OPT(limit), "0", 0, INT32_MAX, "N",
     "train on the first N training images only (0 = all); with --raw, as encode --limit"},
    {"preset", AN_OPT_STR, OPT(preset), "cnn-small", 0, 0, "NAME", "classifier preset"},
    {"epochs", AN_OPT_INT, OPT(epochs), "3", 1, 1000, "N", "passes over the training set"},
    {"batch", AN_OPT_INT, OPT(batch), "64", 1, 4096, "N", "images per step"},
    {"lr", AN_OPT_DOUBLE, OPT(lr), "1e-3", 1e-9, 10, "X", "Adam's learning rate"},
    {"schedule", AN_OPT_STR, OPT(schedule), "constant", 0, 0, "constant|cosine",
     "learning rate over the run: constant, or cosine annealing to 0 at the last step"},
    {"normalize", AN_OPT_STR, OPT(normalize), "none", 0, 0, "none|channel|image",
     "standardise the inputs with the training set's statistics: subtract each\n"
     "channel's mean (channel) or the mean image (image), divide by each channel's std"},
    {"seed", AN_OPT_INT, OPT(seed), "1", 0, INT64_MAX, "N", "initialisation and data order"},
    {"precision", AN_OPT_STR, OPT(precision), "f32", 0, 0, "f32|bf16",
     "arithmetic of the linear layers' products"},
    {"curve", AN_OPT_STR, OPT(curve), NULL, 0, 0, "FILE", "where the per-epoch CSV goes"},
};

static const an_command_spec_t spec = {
    .program = "paper_train",
    .summary = "Train the paper's small CNN on one training set and score it on the\n"
               "matching test set after every epoch (bench/paper/run.sh runs it).",
    .options = options,
    .n_options = sizeof options / sizeof options[0],
};

/* One split of a dataset, read an image at a time as float32: either mapped
 * .npy values used as stored, or raw bytes (a subset of rows) over 255. */
typedef struct source {
  an_npy_t x;        /* .npy images (mapped), or zeroed */
  an_dataset_t raw;  /* raw images, or zeroed */
  uint32_t *rows;    /* raw: the dataset rows this split uses; NULL = all */
  uint8_t *labels;   /* n labels, each < classes */
  size_t n, item;
  int chw[3];
  const an_norm_t *norm; /* standardisation applied after reading, or NULL */
} source_t;

static void source_free(source_t *s) {
  an_npy_free(&s->x);
  an_dataset_free(&s->raw);
  free(s->rows);
  free(s->labels);
  memset(s, 0, sizeof *s);
}

static void source_get(const source_t *s, size_t i, float *out) {
  if (s->x.data) {
    an_npy_to_f32(&s->x, i * s->item, s->item, out);
  } else {
    const uint8_t *px = s->raw.images + (size_t)(s->rows ? s->rows[i] : i) * s->item;
    for (size_t k = 0; k < s->item; k++)
      out[k] = (float)px[k] / 255.0f;
  }
  if (s->norm)
    an_norm_apply(s->norm, out);
}

/* Opens DIR/NAME_x.npy and DIR/NAME_y.npy. */
static int source_open_npy(source_t *s, const char *dir, const char *name, char *err,
                           size_t errlen) {
  char path[512];
  an_npy_t y = {0};
  int rc;

  if ((size_t)snprintf(path, sizeof path, "%s/%s_y.npy", dir, name) >= sizeof path) {
    snprintf(err, errlen, "the folder name is too long");
    return AN_ETOOBIG;
  }
  snprintf(path, sizeof path, "%s/%s_x.npy", dir, name);
  if ((rc = an_npy_map(path, &s->x, err, errlen)) != 0)
    return rc;
  if (s->x.ndim != 4 || s->x.shape[0] < 1 ||
      (s->x.dtype != AN_NPY_F16 && s->x.dtype != AN_NPY_F32 && s->x.dtype != AN_NPY_U8)) {
    snprintf(err, errlen, "%s: expected N x C x H x W float16, float32 or uint8", path);
    return AN_EFORMAT;
  }
  s->n = (size_t)s->x.shape[0];
  for (int d = 0; d < 3; d++)
    s->chw[d] = (int)s->x.shape[d + 1];
  s->item = (size_t)s->chw[0] * (size_t)s->chw[1] * (size_t)s->chw[2];

  snprintf(path, sizeof path, "%s/%s_y.npy", dir, name);
  if ((rc = an_npy_read(path, 0, &y, err, errlen)) != 0)
    return rc;
  rc = AN_EFORMAT;
  if (y.ndim != 1 || (size_t)y.shape[0] != s->n || (y.dtype != AN_NPY_U8 && y.dtype != AN_NPY_I64)) {
    snprintf(err, errlen, "%s: expected %zu labels, uint8 or int64", path, s->n);
    goto done;
  }
  if (!(s->labels = malloc(s->n))) {
    rc = AN_ETOOBIG;
    snprintf(err, errlen, "out of memory for %zu labels", s->n);
    goto done;
  }
  for (size_t i = 0; i < s->n; i++) {
    int64_t v = y.dtype == AN_NPY_U8 ? ((const uint8_t *)y.data)[i] : ((const int64_t *)y.data)[i];
    if (v < 0 || v > 255) {
      snprintf(err, errlen, "%s: label %lld at %zu is not a class index", path, (long long)v, i);
      goto done;
    }
    s->labels[i] = (uint8_t)v;
  }
  rc = 0;
done:
  an_npy_free(&y);
  return rc;
}

/* Opens one split of a raw dataset; for the training split, keeps the rows
 * encode trains on. */
static int source_open_raw(source_t *s, const settings_t *st, an_dataset_split_t split,
                           char *err, size_t errlen) {
  int rc;
  size_t limit = split == AN_DATASET_TRAIN ? (size_t)st->limit : 0;
  if ((rc = an_dataset_load(st->raw, split, limit, &s->raw, err, errlen)) != 0)
    return rc;
  s->chw[0] = s->raw.c;
  s->chw[1] = s->raw.h;
  s->chw[2] = s->raw.w;
  s->item = (size_t)s->raw.c * (size_t)s->raw.h * (size_t)s->raw.w;
  s->n = s->raw.n;
  if (!(s->labels = malloc(s->n))) {
    snprintf(err, errlen, "out of memory for %zu labels", s->n);
    return AN_ETOOBIG;
  }
  if (split == AN_DATASET_TEST) {
    memcpy(s->labels, s->raw.labels, s->n);
    return 0;
  }
  if (!(s->rows = malloc(s->n * sizeof *s->rows))) {
    snprintf(err, errlen, "out of memory for %zu rows", s->n);
    return AN_ETOOBIG;
  }
  if ((rc = an_dataset_split(s->raw.n, st->val_fraction, (uint64_t)st->split_seed, s->rows,
                             &s->n)) != 0) {
    snprintf(err, errlen, "cannot split %zu images", s->raw.n);
    return rc;
  }
  for (size_t i = 0; i < s->n; i++)
    s->labels[i] = s->raw.labels[s->rows[i]];
  return 0;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Buffers for one batch. */
typedef struct batch_buf {
  int size;
  float *x;
  uint8_t *y;
} batch_buf_t;

/* Loads rows order[first..first+count) (or first..first+count when order is
 * NULL) into b; the rest of the batch, if any, is zero images of class 0. */
static void batch_fill(batch_buf_t *b, const source_t *s, const uint32_t *order, size_t first,
                       int count) {
  for (int k = 0; k < b->size; k++) {
    float *dst = b->x + (size_t)k * s->item;
    if (k < count) {
      size_t row = order ? order[first + (size_t)k] : first + (size_t)k;
      source_get(s, row, dst);
      b->y[k] = s->labels[row];
    } else {
      memset(dst, 0, s->item * sizeof *dst);
      b->y[k] = 0;
    }
  }
}

/* Top-1 accuracy (percent) over the whole source, in inference mode. */
static int evaluate(an_model_t *m, const source_t *test, batch_buf_t *b, int classes,
                    double *accuracy) {
  size_t correct = 0;
  const float *logits;
  for (size_t first = 0; first < test->n; first += (size_t)b->size) {
    int count = test->n - first < (size_t)b->size ? (int)(test->n - first) : b->size;
    batch_fill(b, test, NULL, first, count);
    if (an_model_forward(m, b->x, 0, &logits) != 0)
      return AN_EMODEL;
    for (int k = 0; k < count; k++) {
      const float *row = logits + (size_t)k * (size_t)classes;
      int best = 0;
      for (int c = 1; c < classes; c++)
        if (row[c] > row[best])
          best = c;
      correct += best == b->y[k];
    }
  }
  *accuracy = 100.0 * (double)correct / (double)test->n;
  return 0;
}

static int max_label(const source_t *s) {
  int top = 0;
  for (size_t i = 0; i < s->n; i++)
    if (s->labels[i] > top)
      top = s->labels[i];
  return top;
}

static int run(const settings_t *st, char *err, size_t errlen) {
  source_t train = {0}, test = {0};
  an_model_t *m = NULL;
  an_optim_t *opt = NULL;
  batch_buf_t b = {0};
  uint32_t *order = NULL;
  FILE *curve = NULL;
  an_norm_t norm = {0};
  char why[512];
  int rc;

  if (st->data) {
    if ((rc = source_open_npy(&train, st->data, "train", err, errlen)) != 0 ||
        (rc = source_open_npy(&test, st->data, "test", err, errlen)) != 0)
      goto done;
    if (st->limit > 0 && (size_t)st->limit < train.n)
      train.n = (size_t)st->limit;
  } else if ((rc = source_open_raw(&train, st, AN_DATASET_TRAIN, err, errlen)) != 0 ||
             (rc = source_open_raw(&test, st, AN_DATASET_TEST, err, errlen)) != 0) {
    goto done;
  }
  rc = AN_EFORMAT;
  if (memcmp(train.chw, test.chw, sizeof train.chw) != 0) {
    snprintf(err, errlen, "the training and test images differ in shape");
    goto done;
  }
  int classes = (max_label(&train) > max_label(&test) ? max_label(&train) : max_label(&test)) + 1;
  if (classes < 2) {
    snprintf(err, errlen, "the labels name fewer than two classes");
    goto done;
  }

  if ((rc = an_model_preset(st->preset, train.chw, classes, &m, why, sizeof why)) != 0) {
    snprintf(err, errlen, "%s", why);
    goto done;
  }
  an_model_set_precision(m, strcmp(st->precision, "bf16") == 0 ? AN_PRECISION_BF16
                                                                : AN_PRECISION_F32);
  an_model_set_seed(m, (uint64_t)st->seed);
  b.size = (size_t)st->batch < train.n ? (int)st->batch : (int)train.n;
  if ((rc = an_model_finalize(m, AN_INIT_KAIMING, (uint64_t)st->seed, why, sizeof why)) != 0 ||
      (rc = an_model_plan(m, b.size, 1, why, sizeof why)) != 0) {
    snprintf(err, errlen, "%s", why);
    goto done;
  }
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = (float)st->lr};
  if ((rc = an_optim_new(&op, an_model_param_count(m), &opt)) != 0) {
    snprintf(err, errlen, "out of memory for the optimizer");
    goto done;
  }
  rc = AN_ETOOBIG;
  if (!(b.x = malloc((size_t)b.size * train.item * sizeof *b.x)) ||
      !(b.y = malloc((size_t)b.size)) || !(order = malloc(train.n * sizeof *order))) {
    snprintf(err, errlen, "out of memory for a batch");
    goto done;
  }
  if (strcmp(st->normalize, "none") != 0) {
    /* The training set's own statistics, applied to training and test. */
    size_t hw = (size_t)train.chw[1] * (size_t)train.chw[2];
    if ((rc = an_norm_init(&norm, train.chw[0], hw, strcmp(st->normalize, "image") == 0)) != 0) {
      snprintf(err, errlen, "out of memory for the statistics");
      goto done;
    }
    for (size_t i = 0; i < train.n; i++) {
      source_get(&train, i, b.x);
      an_norm_accumulate(&norm, b.x);
    }
    if ((rc = an_norm_finish(&norm)) != 0) {
      snprintf(err, errlen, "no training values to standardise with");
      goto done;
    }
    train.norm = test.norm = &norm;
    printf("paper_train: standardising %d channel(s) (%s); channel 0: std %.4g\n", norm.c,
           st->normalize, 1.0 / norm.scale[0]);
  }
  rc = AN_ETOOBIG;
  if (!(curve = fopen(st->curve, "w"))) {
    rc = AN_EFORMAT;
    snprintf(err, errlen, "cannot write %s", st->curve);
    goto done;
  }
  fprintf(curve, "epoch,train_loss,train_accuracy,test_accuracy,seconds\n");
  printf("paper_train: %s on %zu %dx%dx%d images from %s, %zu test images, %lld epoch(s), "
         "batch %d, Adam lr %g (%s), %s%s\n",
         st->preset, train.n, train.chw[0], train.chw[1], train.chw[2],
         st->data ? st->data : st->raw, test.n, (long long)st->epochs, b.size, st->lr,
         st->schedule, st->precision,
         strcmp(st->normalize, "none") ? ", standardised inputs" : "");
  fflush(stdout);

  an_rng_t rng;
  an_rng_seed(&rng, (uint64_t)st->seed);
  for (size_t i = 0; i < train.n; i++)
    order[i] = (uint32_t)i;
  size_t steps = train.n / (size_t)b.size;
  int cosine = strcmp(st->schedule, "cosine") == 0;
  double t0 = now_seconds(), accuracy;
  const float *logits;
  /* Epoch 0: the untrained model, where every curve starts. */
  if ((rc = evaluate(m, &test, &b, classes, &accuracy)) != 0) {
    snprintf(err, errlen, "the forward pass failed while scoring");
    goto done;
  }
  printf("epoch 0: test accuracy %.2f%%\n", accuracy);
  fprintf(curve, "0,nan,nan,%.4f,0\n", accuracy);
  for (int e = 1; e <= st->epochs; e++) {
    double loss_sum = 0;
    size_t hits = 0;
    an_rng_shuffle(&rng, order, train.n);
    for (size_t step = 0; step < steps; step++) {
      int correct = 0;
      if (cosine)
        an_optim_set_lr(opt, an_lr_cosine((float)st->lr, (uint64_t)(e - 1) * steps + step,
                                          (uint64_t)st->epochs * steps));
      batch_fill(&b, &train, order, step * (size_t)b.size, b.size);
      rc = AN_EMODEL;
      if (an_model_forward(m, b.x, 1, &logits) != 0) {
        snprintf(err, errlen, "the forward pass failed");
        goto done;
      }
      loss_sum += an_loss_softmax_ce(logits, b.y, b.size, classes, an_model_output_grad(m),
                                     &correct);
      hits += (size_t)correct;
      if (an_model_backward(m, NULL) != 0) {
        snprintf(err, errlen, "the backward pass failed");
        goto done;
      }
      an_optim_step(opt, an_model_params(m), an_model_grads(m));
    }
    if ((rc = evaluate(m, &test, &b, classes, &accuracy)) != 0) {
      snprintf(err, errlen, "the forward pass failed while scoring");
      goto done;
    }
    double loss = loss_sum / (double)steps;
    double train_acc = 100.0 * (double)hits / (double)(steps * (size_t)b.size);
    double seconds = now_seconds() - t0;
    printf("epoch %d: train loss %.4f, train accuracy %.2f%%, test accuracy %.2f%% (%.0f s)\n",
           e, loss, train_acc, accuracy, seconds);
    fflush(stdout);
    fprintf(curve, "%d,%.6f,%.4f,%.4f,%.1f\n", e, loss, train_acc, accuracy, seconds);
  }
  rc = 0;
done:
  if (curve && fclose(curve) != 0 && rc == 0) {
    rc = AN_EFORMAT;
    snprintf(err, errlen, "cannot write %s", st->curve);
  }
  source_free(&train);
  source_free(&test);
  an_norm_destroy(&norm);
  an_model_free(m);
  an_optim_free(opt);
  free(b.x);
  free(b.y);
  free(order);
  return rc;
}

int main(int argc, char **argv) {
  settings_t st = {0};
  char err[2048] = "";
  int first_arg, rc;

  rc = an_config_parse(&spec, &st, argc, argv, &first_arg, stdout, err, sizeof err);
  if (rc == AN_CONFIG_HELP) {
    an_config_free(&spec, &st);
    return 0;
  }
  if (rc == 0 && first_arg < argc) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "unexpected argument '%s'", argv[first_arg]);
  }
  if (rc == 0 && (!st.data) == (!st.raw)) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "give exactly one of --data and --raw");
  }
  if (rc == 0 && !st.curve) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "--curve is required");
  }
  if (rc == 0 && strcmp(st.precision, "f32") != 0 && strcmp(st.precision, "bf16") != 0) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "--precision is f32 or bf16");
  }
  if (rc == 0 && strcmp(st.schedule, "constant") != 0 && strcmp(st.schedule, "cosine") != 0) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "--schedule is constant or cosine");
  }
  if (rc == 0 && strcmp(st.normalize, "none") != 0 && strcmp(st.normalize, "channel") != 0 &&
      strcmp(st.normalize, "image") != 0) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "--normalize is none, channel or image");
  }
  if (rc == 0)
    rc = run(&st, err, sizeof err);
  if (rc != 0)
    fprintf(stderr, "paper_train: %s\n", err[0] ? err : an_strerror(rc));
  an_config_free(&spec, &st);
  return rc == 0 ? 0 : 1;
}
