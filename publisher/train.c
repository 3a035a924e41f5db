/* `archnet-publisher train`: trains ArchNet as an identity map (the paper's
 * section 3: MSE or BCE, Adam, uniform initialisation, seeded) on the
 * owner's own machine and writes the secret key: the H-encoder and the
 * L-decoder as ONNX, and a manifest with the reconstruction quality on
 * held-out test images.
 *
 * Interrupt-safe: SIGINT or SIGTERM finishes the current step, saves a
 * checkpoint in the key folder and exits; the same command resumes from it
 * and ends with the same weights as a run that was never interrupted (the
 * data order of each epoch is a function of the seed and the epoch). */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/blob/dataset.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/nn/checkpoint.h"
#include "common/nn/engine.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"
#include "common/progress.h"
#include "common/small_file.h"
#include "publisher/commands.h"
#include "publisher/key.h"

#define CHECKPOINT "train.ckpt"
#define AN_SPEC_MAX (1 << 16)

typedef struct train_settings {
  char *preset, *spec, *data, *out, *loss, *precision;
  int64_t epochs, limit, batch, seed, eval_images, checkpoint_minutes, stop_after;
  double lr;
  bool force, progress;
} train_settings_t;

#define OPT(f) offsetof(train_settings_t, f)

static const an_option_t train_options[] = {
    {"preset", AN_OPT_STR, OPT(preset), "archnet-mnist", 0, 0, "NAME",
     "archnet-mnist (MNIST, Fashion-MNIST) or archnet-cifar10"},
    {"spec", AN_OPT_STR, OPT(spec), NULL, 0, 0, "FILE",
     "a model spec instead; its H-encoder ends at the layer labelled 'code'"},
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "DIR",
     "the raw dataset: idx files (plain or .gz), CIFAR-10 batches or .npy"},
    {"out", AN_OPT_STR, OPT(out), NULL, 0, 0, "KEYDIR", "where the key is written (created 0700)"},
    {"epochs", AN_OPT_INT, OPT(epochs), "1", 1, 100000, "N", "passes over the training images"},
    {"limit", AN_OPT_INT, OPT(limit), "0", 0, INT32_MAX, "N",
     "train on the first N images only (0 = all)"},
    {"batch", AN_OPT_INT, OPT(batch), "256", 1, 65536, "N", "images per step"},
    {"lr", AN_OPT_DOUBLE, OPT(lr), "1e-3", 1e-9, 10, "X",
     "Adam's learning rate (the paper's 1e-5 barely moves in one epoch)"},
    {"loss", AN_OPT_STR, OPT(loss), "mse", 0, 0, "mse|bce",
     "reconstruction loss: mean squared error, or binary cross-entropy on a sigmoid"},
    {"seed", AN_OPT_INT, OPT(seed), "1", 0, INT64_MAX, "N",
     "initialisation and data order; the same seed gives the same key"},
    {"precision", AN_OPT_STR, OPT(precision), "auto", 0, 0, "auto|f32|bf16",
     "matrix products in bfloat16 (2x faster with AMX, same PSNR) or float32;\n"
     "auto picks bf16 where the CPU has it"},
    {"eval-images", AN_OPT_INT, OPT(eval_images), "1000", 1, INT32_MAX, "N",
     "held-out test images the manifest's PSNR is measured on"},
    {"checkpoint-minutes", AN_OPT_INT, OPT(checkpoint_minutes), "10", 1, 1440, "M",
     "also save a checkpoint this often (and at every epoch's end)"},
    {"stop-after-steps", AN_OPT_INT, OPT(stop_after), "0", 0, INT64_MAX, "N",
     "stop as if interrupted after N steps of this run (0 = never): for scripts\n"
     "that train in slices, and for tests of resuming"},
    {"force", AN_OPT_BOOL, OPT(force), "false", 0, 0, NULL,
     "overwrite a finished key in KEYDIR"},
    {"progress", AN_OPT_BOOL, OPT(progress), "false", 0, 0, NULL,
     "draw the progress line even when stderr is not a terminal"},
};

static const an_command_spec_t train_spec = {
    .program = "archnet-publisher",
    .command = "train",
    .summary = "Train ArchNet as an identity map on your own images and write the secret key\n"
               "to KEYDIR: h_encoder.onnx, l_decoder.onnx and manifest.json (with the\n"
               "reconstruction PSNR on held-out test images). Ctrl-C saves a checkpoint;\n"
               "run the same command again to resume.",
    .options = train_options,
    .n_options = sizeof train_options / sizeof train_options[0],
};

/* Set by the signal handler, read between steps: the only state a handler
 * may touch. */
static volatile sig_atomic_t an_train_stop;

static void an_train_on_signal(int sig) { an_train_stop = sig; }

typedef struct trainer {
  const train_settings_t *s;
  an_dataset_t train, eval;
  an_model_t *model;
  an_optim_t *optim;
  int code_layer;     /* last layer of the H-encoder */
  int bce, bf16;
  size_t in_size;     /* floats per image */
  float *x;           /* one batch of images */
  uint32_t *order;    /* this epoch's data order */
  char ckpt[4096];
  char *config;       /* JSON: what a checkpoint must match to be resumed */
  char err[8192];
} trainer_t;

static void trainer_free(trainer_t *t) {
  an_dataset_free(&t->train);
  an_dataset_free(&t->eval);
  an_model_free(t->model);
  an_optim_free(t->optim);
  free(t->x);
  free(t->order);
  free(t->config);
}

/* The model from --preset or --spec, checked against the images' shape. */
static int build_model(trainer_t *t) {
  const train_settings_t *s = t->s;
  char why[512];
  int rc, chw[3];
  if (s->spec) {
    char *text = an_small_file_read(s->spec, 1 << 20);
    if (!text) {
      snprintf(t->err, sizeof t->err, "cannot read %s (missing, unreadable or over 1 MiB)",
               s->spec);
      return UV_ENOENT;
    }
    rc = an_model_parse(text, &t->model, why, sizeof why);
    free(text);
    if (rc) {
      snprintf(t->err, sizeof t->err, "%s: %s", s->spec, why);
      return rc;
    }
  } else if ((rc = an_model_preset(s->preset, NULL, 0, &t->model, why, sizeof why)) != 0) {
    snprintf(t->err, sizeof t->err, "%s", why);
    return rc;
  }
  an_model_input_shape(t->model, chw);
  if (chw[0] != t->train.c || chw[1] != t->train.h || chw[2] != t->train.w) {
    snprintf(t->err, sizeof t->err,
             "the model takes %dx%dx%d images but %s holds %dx%dx%d (archnet-mnist is for "
             "1x28x28, archnet-cifar10 for 3x32x32)",
             chw[0], chw[1], chw[2], s->data, t->train.c, t->train.h, t->train.w);
    return AN_EMODEL;
  }
  an_model_output_shape(t->model, chw);
  if (chw[0] != t->train.c || chw[1] != t->train.h || chw[2] != t->train.w) {
    snprintf(t->err, sizeof t->err, "the model's output (%dx%dx%d) is not an image of the "
                                    "input's shape",
             chw[0], chw[1], chw[2]);
    return AN_EMODEL;
  }
  if ((t->code_layer = an_model_find_label(t->model, "code")) < 0 ||
      t->code_layer == an_model_layer_count(t->model) - 1) {
    snprintf(t->err, sizeof t->err, "the model has no layer labelled 'code' ending the "
                                    "H-encoder, with an L-decoder after it");
    return AN_EMODEL;
  }
  an_model_set_precision(t->model, t->bf16 ? AN_PRECISION_BF16 : AN_PRECISION_F32);
  if ((rc = an_model_finalize(t->model, AN_INIT_UNIFORM, (uint64_t)s->seed, why, sizeof why)) ||
      (rc = an_model_plan(t->model, (int)s->batch, 1, why, sizeof why))) {
    snprintf(t->err, sizeof t->err, "%s", why);
    return rc;
  }
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = (float)s->lr};
  if ((rc = an_optim_new(&op, an_model_param_count(t->model), &t->optim)) != 0) {
    snprintf(t->err, sizeof t->err, "out of memory for the optimizer");
    return rc;
  }
  return 0;
}

/* Everything that decides the weights, so a checkpoint of another run is
 * never resumed by mistake. */
static int make_config(trainer_t *t) {
  char *spec = malloc(AN_SPEC_MAX);
  if (!spec)
    return UV_ENOMEM;
  if (an_model_to_spec(t->model, spec, AN_SPEC_MAX) != 0) {
    free(spec);
    return AN_ETOOBIG;
  }
  json_t *j = json_pack("{s:s, s:I, s:I, s:f, s:s, s:s, s:I, s:s}", "spec", spec, "seed",
                        (json_int_t)t->s->seed, "batch", (json_int_t)t->s->batch, "lr",
                        t->s->lr, "loss", t->s->loss, "precision", t->bf16 ? "bf16" : "f32",
                        "images", (json_int_t)t->train.n, "dataset", t->train.digest);
  free(spec);
  if (!j)
    return UV_ENOMEM;
  t->config = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(j);
  return t->config ? 0 : UV_ENOMEM;
}

static int save_checkpoint(trainer_t *t, int64_t epoch, int64_t step) {
  char meta[1 << 17];
  int n = snprintf(meta, sizeof meta, "{\"config\": %s, \"epoch\": %lld, \"step\": %lld}",
                   t->config, (long long)epoch, (long long)step);
  if (n < 0 || (size_t)n >= sizeof meta) {
    snprintf(t->err, sizeof t->err, "checkpoint metadata too long");
    return AN_ETOOBIG;
  }
  return an_checkpoint_save(t->ckpt, t->model, t->optim, meta, t->err, sizeof t->err);
}

/* Resumes from KEYDIR/train.ckpt when it belongs to this run. Returns 0
 * with the epoch and step to start from (0, 0 without one), or an error. */
static int maybe_resume(trainer_t *t, int64_t *epoch, int64_t *step) {
  char *meta = NULL;
  json_t *j = NULL, *cfg_now = NULL;
  int rc;
  *epoch = *step = 0;
  if (access(t->ckpt, F_OK) != 0)
    return 0;
  fprintf(stderr, "archnet-publisher train: checking the checkpoint %s\n", t->ckpt);
  if ((rc = an_checkpoint_meta(t->ckpt, &meta, t->err, sizeof t->err)) != 0)
    return rc;
  rc = AN_EFORMAT;
  j = json_loads(meta, 0, NULL);
  cfg_now = json_loads(t->config, 0, NULL);
  json_t *e = json_object_get(j, "epoch"), *st = json_object_get(j, "step");
  if (!j || !cfg_now || !json_is_integer(e) || !json_is_integer(st)) {
    snprintf(t->err, sizeof t->err, "%s: unreadable checkpoint metadata", t->ckpt);
    goto done;
  }
  if (!json_equal(json_object_get(j, "config"), cfg_now)) {
    snprintf(t->err, sizeof t->err,
             "%s was saved by a run with other settings (model, seed, batch, lr, loss, "
             "precision or data); rerun with those, or remove it to start over",
             t->ckpt);
    goto done;
  }
  if ((rc = an_checkpoint_load(t->ckpt, t->model, t->optim, t->err, sizeof t->err)) != 0)
    goto done;
  *epoch = json_integer_value(e);
  *step = json_integer_value(st);
  fprintf(stderr, "archnet-publisher train: resuming at epoch %lld, step %lld\n",
          (long long)*epoch + 1, (long long)*step);
  rc = 0;
done:
  json_decref(j);
  json_decref(cfg_now);
  free(meta);
  return rc;
}

/* The data order of one epoch: a function of (seed, epoch) only. */
static void epoch_order(trainer_t *t, int64_t epoch) {
  an_rng_t rng;
  an_rng_seed(&rng, (uint64_t)t->s->seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch + 1);
  for (size_t i = 0; i < t->train.n; i++)
    t->order[i] = (uint32_t)i;
  an_rng_shuffle(&rng, t->order, t->train.n);
}

static void to_unit(const uint8_t *px, size_t n, float *x) {
  for (size_t i = 0; i < n; i++)
    x[i] = px[i] * (1.0f / 255.0f);
}

/* Mean over the held-out images of per-image MSE and PSNR, on the output
 * as an image: clamped to [0, 1], through the sigmoid for BCE. */
static int evaluate(trainer_t *t, double *mse_out, double *psnr_out) {
  size_t batch = (size_t)t->s->batch, n = t->eval.n;
  double mse_sum = 0, psnr_sum = 0;
  const float *y;
  for (size_t i = 0; i < n; i += batch) {
    size_t b = n - i < batch ? n - i : batch;
    memset(t->x, 0, batch * t->in_size * sizeof(float));
    to_unit(t->eval.images + i * t->in_size, b * t->in_size, t->x);
    if (an_model_forward(t->model, t->x, 0, &y) != 0) {
      snprintf(t->err, sizeof t->err, "the forward pass failed");
      return AN_EMODEL;
    }
    for (size_t k = 0; k < b; k++) {
      double se = 0;
      for (size_t p = 0; p < t->in_size; p++) {
        float v = y[k * t->in_size + p];
        v = t->bce ? 1.0f / (1.0f + expf(-v)) : v < 0 ? 0 : v > 1 ? 1 : v;
        double d = (double)v - t->x[k * t->in_size + p];
        se += d * d;
      }
      double mse = se / (double)t->in_size;
      mse_sum += mse;
      psnr_sum += mse > 1e-10 ? 10 * log10(1.0 / mse) : 100.0;
    }
  }
  *mse_out = mse_sum / (double)n;
  *psnr_out = psnr_sum / (double)n;
  return 0;
}

/* The two halves as ONNX. With BCE the decoder's output gets the sigmoid
 * the loss applied, so both halves map images to images. */
static int export_key(trainer_t *t) {
  char path[4096], why[1024];
  an_model_t *dec = t->model;
  int rc;
  snprintf(path, sizeof path, "%s/%s", t->s->out, AN_KEY_ENCODER);
  an_onnx_export_opts_t eo = {.input_name = "image", .output_name = "code", .first = 0,
                              .last = t->code_layer};
  if ((rc = an_onnx_export(t->model, &eo, path, t->err, sizeof t->err)) != 0)
    return rc;
  chmod(path, 0600); /* the key is secret */
  if (t->bce) {
    char *spec = malloc(AN_SPEC_MAX + 16);
    if (!spec || an_model_to_spec(t->model, spec, AN_SPEC_MAX) != 0) {
      free(spec);
      snprintf(t->err, sizeof t->err, "cannot describe the model");
      return AN_ETOOBIG;
    }
    strcat(spec, "sigmoid\n");
    dec = NULL;
    rc = an_model_parse(spec, &dec, why, sizeof why);
    free(spec);
    if (rc || (rc = an_model_finalize(dec, AN_INIT_UNIFORM, 0, why, sizeof why)) != 0) {
      snprintf(t->err, sizeof t->err, "%s", why);
      an_model_free(dec);
      return rc;
    }
    memcpy(an_model_params(dec), an_model_params(t->model),
           an_model_param_count(t->model) * sizeof(float));
    memcpy(an_model_state(dec), an_model_state(t->model),
           an_model_state_count(t->model) * sizeof(float));
  }
  snprintf(path, sizeof path, "%s/%s", t->s->out, AN_KEY_DECODER);
  an_onnx_export_opts_t d = {.input_name = "code", .output_name = "image",
                             .first = t->code_layer + 1, .last = -1};
  rc = an_onnx_export(dec, &d, path, t->err, sizeof t->err);
  chmod(path, 0600);
  if (dec != t->model)
    an_model_free(dec);
  return rc;
}

static int make_key_dir(trainer_t *t) {
  char path[4096];
  if (mkdir(t->s->out, 0700) != 0 && errno != EEXIST) {
    snprintf(t->err, sizeof t->err, "cannot create %s: %s", t->s->out, strerror(errno));
    return -errno;
  }
  snprintf(path, sizeof path, "%s/%s", t->s->out, AN_KEY_MANIFEST);
  if (!t->s->force && access(path, F_OK) == 0 && access(t->ckpt, F_OK) != 0) {
    snprintf(t->err, sizeof t->err, "%s already holds a finished key; use --force to replace it",
             t->s->out);
    return UV_EEXIST;
  }
  return 0;
}

/* The training loop proper. Returns 0 when all epochs ran, 1 when a signal
 * stopped it (a checkpoint was saved), or an error. */
static int run_epochs(trainer_t *t, int64_t epoch0, int64_t step0) {
  const train_settings_t *s = t->s;
  size_t batch = (size_t)s->batch, steps = t->train.n / batch;
  an_progress_t prog;
  const float *y;
  double last_save = 0;
  int rc;
  uint64_t total = (uint64_t)((int64_t)steps * s->epochs) * batch;
  an_progress_init(&prog, total - (uint64_t)(epoch0 * (int64_t)steps + step0) * batch, "img",
                   s->progress);
  uint64_t done_here = 0;
  for (int64_t epoch = epoch0; epoch < s->epochs; epoch++) {
    double loss_sum = 0;
    size_t loss_n = 0;
    epoch_order(t, epoch);
    for (size_t step = epoch == epoch0 ? (size_t)step0 : 0; step < steps; step++) {
      for (size_t k = 0; k < batch; k++)
        to_unit(t->train.images + (size_t)t->order[step * batch + k] * t->in_size, t->in_size,
                t->x + k * t->in_size);
      if (an_model_forward(t->model, t->x, 1, &y) != 0) {
        snprintf(t->err, sizeof t->err, "the forward pass failed");
        return AN_EMODEL;
      }
      size_t nv = batch * t->in_size;
      double loss = t->bce ? an_loss_bce_logits(y, t->x, nv, an_model_output_grad(t->model))
                           : an_loss_mse(y, t->x, nv, an_model_output_grad(t->model));
      if (!isfinite(loss)) {
        snprintf(t->err, sizeof t->err, "the loss became %g at epoch %lld step %zu: try a lower "
                                        "--lr",
                 loss, (long long)epoch + 1, step);
        return AN_EMODEL;
      }
      if (an_model_backward(t->model, NULL) != 0) {
        snprintf(t->err, sizeof t->err, "the backward pass failed");
        return AN_EMODEL;
      }
      an_optim_step(t->optim, an_model_params(t->model), an_model_grads(t->model));
      if (s->stop_after && done_here / batch + 1 == (uint64_t)s->stop_after)
        raise(SIGINT); /* the same path as a Ctrl-C */
      loss_sum += loss;
      loss_n++;
      done_here += batch;
      char label[128];
      snprintf(label, sizeof label, "epoch %lld/%lld step %zu/%zu loss %.5f",
               (long long)epoch + 1, (long long)s->epochs, step + 1, steps, loss);
      an_progress_update(&prog, done_here, label, false);
      int last_step = step + 1 == steps;
      if (an_train_stop || (!last_step && an_progress_elapsed(&prog) - last_save >
                                               60.0 * (double)s->checkpoint_minutes)) {
        an_progress_done(&prog);
        if ((rc = save_checkpoint(t, epoch, (int64_t)step + 1)) != 0)
          return rc;
        last_save = an_progress_elapsed(&prog);
        if (an_train_stop) {
          fprintf(stderr, "archnet-publisher train: stopped at epoch %lld step %zu; checkpoint "
                          "saved to %s: run the same command to resume\n",
                  (long long)epoch + 1, step + 1, t->ckpt);
          return 1;
        }
      }
    }
    an_progress_done(&prog);
    fprintf(stderr, "archnet-publisher train: epoch %lld/%lld: mean loss %.5f, %.0f img/s\n",
            (long long)epoch + 1, (long long)s->epochs, loss_n ? loss_sum / (double)loss_n : 0,
            (double)done_here / an_progress_elapsed(&prog));
    if (epoch + 1 < s->epochs) {
      if ((rc = save_checkpoint(t, epoch + 1, 0)) != 0)
        return rc;
      last_save = an_progress_elapsed(&prog);
    }
  }
  return 0;
}

int an_publisher_train(int argc, char **argv) {
  train_settings_t s = {0};
  trainer_t t = {.s = &s};
  an_key_manifest_t man = {0};
  int first, status, rc;
  struct sigaction sa = {.sa_handler = an_train_on_signal}, old_int, old_term;

  if ((status = an_cli_parse(&train_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first) {
    fprintf(stderr, "archnet-publisher train: unexpected argument '%s'; see --help\n",
            argv[first]);
    goto done;
  }
  if (!s.data || !s.out) {
    fprintf(stderr, "archnet-publisher train: --data and --out are required; see --help\n");
    goto done;
  }
  if (strcmp(s.loss, "mse") != 0 && strcmp(s.loss, "bce") != 0) {
    fprintf(stderr, "archnet-publisher train: --loss must be mse or bce\n");
    goto done;
  }
  if (strcmp(s.precision, "auto") != 0 && strcmp(s.precision, "f32") != 0 &&
      strcmp(s.precision, "bf16") != 0) {
    fprintf(stderr, "archnet-publisher train: --precision must be auto, f32 or bf16\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  t.bce = strcmp(s.loss, "bce") == 0;
  t.bf16 = strcmp(s.precision, "bf16") == 0 ||
           (strcmp(s.precision, "auto") == 0 && an_engine_has_fast_bf16());
  snprintf(t.ckpt, sizeof t.ckpt, "%s/%s", s.out, CHECKPOINT);

  if ((rc = an_dataset_load(s.data, AN_DATASET_TRAIN, (size_t)s.limit, &t.train, t.err,
                            sizeof t.err)) != 0 ||
      (rc = an_dataset_load(s.data, AN_DATASET_TEST, (size_t)s.eval_images, &t.eval, t.err,
                            sizeof t.err)) != 0)
    goto fail;
  if ((size_t)s.batch > t.train.n)
    s.batch = (int64_t)t.train.n; /* a small --limit still trains */
  t.in_size = (size_t)t.train.c * (size_t)t.train.h * (size_t)t.train.w;
  if (!(t.x = calloc((size_t)s.batch * t.in_size, sizeof(float))) ||
      !(t.order = malloc(t.train.n * sizeof *t.order))) {
    snprintf(t.err, sizeof t.err, "out of memory");
    goto fail;
  }
  if ((rc = build_model(&t)) != 0 || (rc = make_config(&t)) != 0 || (rc = make_key_dir(&t)) != 0)
    goto fail;
  int64_t epoch0, step0;
  if ((rc = maybe_resume(&t, &epoch0, &step0)) != 0)
    goto fail;
  fprintf(stderr,
          "archnet-publisher train: %s on %zu %dx%dx%d images from %s, %lld epoch(s), batch "
          "%lld, Adam lr %g, %s loss, %s products, seed %lld\n",
          s.spec ? s.spec : s.preset, t.train.n, t.train.c, t.train.h, t.train.w, s.data,
          (long long)s.epochs, (long long)s.batch, s.lr, s.loss, t.bf16 ? "bf16" : "f32",
          (long long)s.seed);

  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  an_progress_t clock;
  an_progress_init(&clock, 0, NULL, false);
  rc = run_epochs(&t, epoch0, step0);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (rc == 1) {
    status = 128 + an_train_stop; /* as a shell reports a death by that signal */
    goto done;
  }
  if (rc != 0)
    goto fail;

  snprintf(man.preset, sizeof man.preset, "%s", s.spec ? "spec" : s.preset);
  snprintf(man.loss, sizeof man.loss, "%s", s.loss);
  snprintf(man.precision, sizeof man.precision, "%s", t.bf16 ? "bf16" : "f32");
  an_model_input_shape(t.model, man.input);
  an_layer_info_t code;
  an_model_layer_info(t.model, t.code_layer, &code);
  memcpy(man.code, code.outshape, sizeof man.code);
  man.seed = (uint64_t)s.seed;
  man.epochs = s.epochs;
  man.images = (int64_t)t.train.n;
  man.batch = s.batch;
  man.lr = s.lr;
  snprintf(man.dataset_format, sizeof man.dataset_format, "%s", t.train.format);
  memcpy(man.dataset_digest, t.train.digest, sizeof man.dataset_digest);
  man.eval_images = (int64_t)t.eval.n;
  man.train_seconds = an_progress_elapsed(&clock);
  if ((rc = evaluate(&t, &man.eval_mse, &man.eval_psnr)) != 0 || (rc = export_key(&t)) != 0 ||
      (rc = an_key_write_manifest(s.out, &man, t.err, sizeof t.err)) != 0)
    goto fail;
  unlink(t.ckpt);
  printf("key written to %s: %s -> %dx%dx%d code, reconstruction on %lld held-out images: "
         "PSNR %.2f dB (MSE %.5f)\n",
         s.out, man.preset, man.code[0], man.code[1], man.code[2], (long long)man.eval_images,
         man.eval_psnr, man.eval_mse);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher train: %s\n", t.err);
  status = AN_EXIT_FAIL;
done:
  trainer_free(&t);
  an_config_free(&train_spec, &s);
  return status;
}
