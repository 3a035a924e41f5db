/* `archnet-publisher audit`: how much of the data an attacker recovers from
 * H-encoded images once it holds k known (image, encoding) pairs.
 *
 * The pairs come from the dataset's training split, the images to recover
 * from its test split, both drawn with --seed. For each k two attackers are
 * fitted on the k pairs alone (publisher/ridge.h, publisher/learned_decoder.h)
 * and decode the held-out encodings; publisher/metrics.h scores them, and the
 * owner's own L-decoder is scored the same way as a reference. The command
 * prints a table and what it means, and writes OUT/audit.png and
 * OUT/audit.json. It runs on the calling thread: it is a batch job, not part
 * of any event loop. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "common/blob/dataset.h"
#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/nn/rng.h"
#include "common/progress.h"
#include "common/small_file.h"
#include "publisher/commands.h"
#include "publisher/image_grid.h"
#include "publisher/key.h"
#include "publisher/learned_decoder.h"
#include "publisher/metrics.h"
#include "publisher/ridge.h"

#define AUDIT_MAX_KS 8
/* The ridge attacker solves k x k systems: past a few thousand pairs the
 * O(k^3) eigendecomposition, not the attack, would be what is measured. */
#define AUDIT_MAX_K 5000
#define AUDIT_KEY_BATCH 64
#define AUDIT_GRID_COLS 10
#define AUDIT_MAX_RESULTS (1 + 2 * AUDIT_MAX_KS)

typedef struct audit_settings {
  char *key, *data, *pairs, *out, *dump;
  int64_t held_out, seed, decoder_epochs;
} audit_settings_t;

#define AUDIT_OPT(f) offsetof(audit_settings_t, f)

static int audit_check_pairs(const char *value, char *err, size_t errlen);

static const an_option_t audit_options[] = {
    {"key", AN_OPT_STR, AUDIT_OPT(key), NULL, 0, 0, "KEYDIR",
     "the key folder holding h_encoder.onnx and l_decoder.onnx (required)"},
    {"data", AN_OPT_STR, AUDIT_OPT(data), NULL, 0, 0, "DIR",
     "the dataset: idx (MNIST, Fashion-MNIST), CIFAR-10 batches or .npy (required)"},
    {"pairs", AN_OPT_STR, AUDIT_OPT(pairs), "10,100,1000", 0, 0, "K,K,...",
     "numbers of known (image, encoding) pairs to try, 2 to 5000 each",
     audit_check_pairs},
    {"held-out", AN_OPT_INT, AUDIT_OPT(held_out), "1000", 2, 10000, "N",
     "test images the attacker tries to recover"},
    {"seed", AN_OPT_INT, AUDIT_OPT(seed), "1", 0, 9007199254740992.0, "N",
     "draws the pairs and held-out images, and seeds the learned decoder"},
    {"out", AN_OPT_STR, AUDIT_OPT(out), ".", 0, 0, "DIR",
     "where audit.png and audit.json are written (created if missing)"},
    {"decoder-epochs", AN_OPT_INT, AUDIT_OPT(decoder_epochs), "40", 0, 100000, "N",
     "learned decoder: passes over its k pairs (each at least 500 samples); 0 = none"},
    {"dump", AN_OPT_STR, AUDIT_OPT(dump), NULL, 0, 0, "DIR",
     "also write the ridge attacker's inputs and outputs as .npy files to DIR"},
};

static const an_command_spec_t audit_spec = {
    .program = "archnet-publisher",
    .command = "audit",
    .summary =
        "Measure what an attacker recovers from H-encoded images. The attacker holds k known\n"
        "(image, encoding) pairs, drawn from the dataset's training split, and decodes\n"
        "held-out test images from their encodings alone, with a ridge regression and with\n"
        "a decoder it trains itself. Prints PSNR, SSIM and the re-identification rate for\n"
        "each k, next to the owner's own L-decoder, and says what they mean; writes\n"
        "OUT/audit.png (originals, then each decoder's reconstructions) and OUT/audit.json.",
    .options = audit_options,
    .n_options = sizeof audit_options / sizeof audit_options[0],
};

/* Parses "10,100,1000" into ascending distinct values. Returns the count, or
 * -1 with `err` set. */
static int audit_parse_pairs(const char *text, size_t *ks, char *err, size_t errlen) {
  int n = 0;
  const char *p = text;
  while (*p) {
    char *end;
    long v;
    errno = 0;
    v = strtol(p, &end, 10);
    if (end == p || errno || v < 2 || v > AUDIT_MAX_K || (*end && *end != ',')) {
      snprintf(err, errlen, "'%s' is not a list of pair counts from 2 to %d (e.g. 10,100,1000)",
               text, AUDIT_MAX_K);
      return -1;
    }
    if (n == AUDIT_MAX_KS) {
      snprintf(err, errlen, "'%s': at most %d pair counts", text, AUDIT_MAX_KS);
      return -1;
    }
    int at = n;
    while (at > 0 && ks[at - 1] > (size_t)v) /* insertion keeps the list sorted */
      at--;
    if (at > 0 && ks[at - 1] == (size_t)v) {
      snprintf(err, errlen, "'%s': %ld appears twice", text, v);
      return -1;
    }
    memmove(ks + at + 1, ks + at, sizeof *ks * (size_t)(n - at));
    ks[at] = (size_t)v;
    n++;
    p = *end ? end + 1 : end;
  }
  if (n == 0)
    snprintf(err, errlen, "no pair counts given");
  return n > 0 ? n : -1;
}

static int audit_check_pairs(const char *value, char *err, size_t errlen) {
  size_t ks[AUDIT_MAX_KS];
  return audit_parse_pairs(value, ks, err, errlen) < 0 ? AN_ECONFIG : 0;
}

/* One line of the table. */
typedef struct audit_result {
  size_t k; /* 0 for the owner's L-decoder */
  const char *attacker;
  double psnr, ssim, reid, seconds; /* ssim is NAN when the image is too small */
  double lambda, alpha, loo_mse;    /* ridge */
  int epochs;                       /* learned decoder */
  double train_loss;
} audit_result_t;

typedef struct audit {
  const audit_settings_t *s;
  bool tty; /* progress lines on stderr */
  size_t ks[AUDIT_MAX_KS], n_ks;
  int image_chw[3], code_chw[3];
  size_t image_len, code_len, n_train_split;
  size_t n_pairs, n_held; /* n_pairs = the largest k; smaller k use a prefix */
  float *pair_images, *pair_codes, *held_images, *held_codes;
  float *recon;       /* n_held x image_len scratch */
  float *grid;        /* AUDIT_MAX_RESULTS + 1 rows of grid_cols images */
  size_t grid_cols, grid_rows;
  const char *grid_labels[AUDIT_MAX_RESULTS + 1];
  char grid_label_buf[AUDIT_MAX_RESULTS + 1][48];
  audit_result_t results[AUDIT_MAX_RESULTS];
  size_t n_results;
  const char *learned_skipped; /* why there is no learned decoder, or NULL */
  char learned_why[5120];
  char err[5120]; /* a path of up to 4 KiB and a sentence */
} audit_t;

static double audit_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A progress line that overwrites itself; only on a terminal. */
static void audit_progress(const audit_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void audit_progress(const audit_t *a, const char *fmt, ...) {
  va_list ap;
  if (!a->tty)
    return;
  fputs("\r\033[K", stderr);
  if (fmt) {
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
  }
  fflush(stderr);
}

static int audit_mkdir(const char *dir, char *err, size_t errlen) {
  if (mkdir(dir, 0755) == 0 || errno == EEXIST)
    return 0;
  snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
  return -errno;
}

/* Runs one half of the key over n inputs into *out (allocated here,
 * owned by the caller) and checks every value: a key is a file like any
 * other, and NaN would poison every figure after it. */
static int audit_run_key(audit_t *a, an_key_t *half, const char *what, const float *in, size_t n,
                         float **out) {
  size_t len = an_key_out_size(half);
  char why[768];
  int rc;

  audit_progress(a, "%s (%zu images)", what, n);
  if (!(*out = malloc(sizeof **out * n * len))) {
    snprintf(a->err, sizeof a->err, "%s: out of memory for %zu outputs of %zu values", what, n,
             len);
    rc = UV_ENOMEM;
    goto done;
  }
  if ((rc = an_key_run(half, in, n, AUDIT_KEY_BATCH, *out, why, sizeof why)) != 0) {
    snprintf(a->err, sizeof a->err, "%s: %s", what, why);
    goto done;
  }
  for (size_t j = 0; j < n * len; j++)
    if (!isfinite((*out)[j])) {
      snprintf(a->err, sizeof a->err, "%s: the key produced non-finite values", what);
      rc = AN_EMODEL;
      goto done;
    }
done:
  audit_progress(a, NULL);
  if (rc) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

/* Copies `count` images picked by `order` out of a dataset, as [0, 1] floats. */
static float *audit_pick(const an_dataset_t *d, const uint32_t *order, size_t count) {
  size_t len = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  float *x = malloc(sizeof *x * count * len);
  if (!x)
    return NULL;
  for (size_t i = 0; i < count; i++)
    for (size_t j = 0; j < len; j++)
      x[i * len + j] = d->images[(size_t)order[i] * len + j] / 255.0f;
  return x;
}

/* Loads one split and draws `count` of its images at random with `rng`. */
static int audit_draw(audit_t *a, an_dataset_split_t split, size_t count, an_rng_t *rng,
                      float **out) {
  an_dataset_t d = {0};
  uint32_t *order = NULL;
  const char *name = split == AN_DATASET_TRAIN ? "training" : "test";
  char why[768];
  int rc;

  *out = NULL;
  if ((rc = an_dataset_load(a->s->data, split, 0, &d, why, sizeof why)) != 0) {
    snprintf(a->err, sizeof a->err, "%s", why);
    goto done;
  }
  rc = UV_EINVAL;
  if (d.c != a->image_chw[0] || d.h != a->image_chw[1] || d.w != a->image_chw[2]) {
    snprintf(a->err, sizeof a->err,
             "%s: the %s images are %dx%dx%d but the H-encoder takes %dx%dx%d", a->s->data, name,
             d.c, d.h, d.w, a->image_chw[0], a->image_chw[1], a->image_chw[2]);
    goto done;
  }
  if (d.n < count || d.n > UINT32_MAX) {
    snprintf(a->err, sizeof a->err, "%s: %zu %s images, %zu needed", a->s->data, d.n, name,
             count);
    goto done;
  }
  if (split == AN_DATASET_TRAIN)
    a->n_train_split = d.n;
  rc = UV_ENOMEM;
  if (!(order = malloc(sizeof *order * d.n)))
    goto oom;
  for (size_t i = 0; i < d.n; i++)
    order[i] = (uint32_t)i;
  an_rng_shuffle(rng, order, d.n);
  if (!(*out = audit_pick(&d, order, count)))
    goto oom;
  rc = 0;
  goto done;
oom:
  snprintf(a->err, sizeof a->err, "out of memory for %zu %s images", count, name);
done:
  free(order);
  an_dataset_free(&d);
  return rc;
}

/* Scores a reconstruction of the held-out images and adds a table line
 * and a grid row. */
static int audit_score(audit_t *a, size_t k, const char *attacker, const float *recon,
                       audit_result_t **out) {
  audit_result_t *r = &a->results[a->n_results++];
  int rc;
  memset(r, 0, sizeof *r);
  r->k = k;
  r->attacker = attacker;
  audit_progress(a, "k=%zu %s: scoring", k, attacker);
  r->psnr = an_metrics_psnr(a->held_images, recon, a->n_held, a->image_len);
  rc = an_metrics_ssim(a->held_images, recon, a->n_held, a->image_chw[0], a->image_chw[1],
                       a->image_chw[2], &r->ssim);
  if (rc == UV_EINVAL) { /* images smaller than SSIM's window */
    r->ssim = NAN;
    rc = 0;
  }
  if (!rc)
    rc = an_metrics_reid(a->held_images, recon, a->n_held, a->image_len, &r->reid);
  audit_progress(a, NULL);
  if (rc) {
    snprintf(a->err, sizeof a->err, "scoring %s: %s", attacker, an_strerror(rc));
    return rc;
  }
  memcpy(a->grid + a->grid_rows * a->grid_cols * a->image_len, recon,
         sizeof *a->grid * a->grid_cols * a->image_len);
  if (k)
    snprintf(a->grid_label_buf[a->grid_rows], sizeof a->grid_label_buf[0], "k=%zu %s", k,
             attacker);
  else
    snprintf(a->grid_label_buf[a->grid_rows], sizeof a->grid_label_buf[0], "%s", attacker);
  a->grid_labels[a->grid_rows] = a->grid_label_buf[a->grid_rows];
  a->grid_rows++;
  *out = r;
  return 0;
}

static int audit_write_npy(audit_t *a, const char *name, const float *data, size_t n,
                           const int chw[3]) {
  char path[4096], why[768];
  int64_t shape[4] = {(int64_t)n, chw[0], chw[1], chw[2]};
  int rc;
  snprintf(path, sizeof path, "%s/%s", a->s->dump, name);
  if ((rc = an_npy_write(path, AN_NPY_F32, 4, shape, data, why, sizeof why)) != 0)
    snprintf(a->err, sizeof a->err, "%s", why);
  return rc;
}

static int audit_owner(audit_t *a, an_key_t *l_decoder) {
  float *recon = NULL;
  audit_result_t *r;
  double t0 = audit_now();
  int rc = audit_run_key(a, l_decoder, "decoding with the owner's L-decoder", a->held_codes,
                         a->n_held, &recon);
  if (!rc && (rc = audit_score(a, 0, "owner L-decoder", recon, &r)) == 0)
    r->seconds = audit_now() - t0;
  free(recon);
  return rc;
}

static int audit_ridge(audit_t *a, size_t k) {
  an_ridge_t *ridge = NULL;
  audit_result_t *r;
  char why[768], name[64];
  double t0 = audit_now();
  int rc;

  audit_progress(a, "k=%zu ridge: fitting", k);
  rc = an_ridge_fit(a->pair_codes, a->pair_images, k, a->code_len, a->image_len, &ridge, why,
                    sizeof why);
  if (!rc) {
    audit_progress(a, "k=%zu ridge: decoding %zu images", k, a->n_held);
    if ((rc = an_ridge_predict(ridge, a->held_codes, a->n_held, a->recon)) != 0)
      snprintf(why, sizeof why, "ridge: %s", an_strerror(rc));
  }
  audit_progress(a, NULL);
  if (rc) {
    snprintf(a->err, sizeof a->err, "k=%zu: %s", k, why);
    goto done;
  }
  if ((rc = audit_score(a, k, "ridge", a->recon, &r)) != 0)
    goto done;
  r->seconds = audit_now() - t0;
  r->lambda = an_ridge_lambda(ridge);
  r->alpha = an_ridge_alpha(ridge);
  r->loo_mse = an_ridge_loo_mse(ridge);
  if (a->s->dump) {
    snprintf(name, sizeof name, "ridge_k%zu.npy", k);
    rc = audit_write_npy(a, name, a->recon, a->n_held, a->image_chw);
  }
done:
  an_ridge_free(ridge);
  return rc;
}

typedef struct audit_epoch_ctx {
  an_progress_t bar;
  size_t k;
} audit_epoch_ctx_t;

static void audit_epoch(void *ctx, int epoch, int epochs, double loss) {
  audit_epoch_ctx_t *c = ctx;
  char label[96];
  snprintf(label, sizeof label, "k=%zu learned decoder, loss %.5f", c->k, loss);
  an_progress_update(&c->bar, (uint64_t)epoch, label, epoch == epochs);
}

static int audit_learned(audit_t *a, size_t k) {
  an_learned_decoder_t *ld = NULL;
  audit_result_t *r;
  audit_epoch_ctx_t ctx = {.k = k};
  double t0 = audit_now();
  an_learned_decoder_params_t p = {.epochs = (int)a->s->decoder_epochs,
                                   .seed = (uint64_t)a->s->seed + k,
                                   .progress = audit_epoch,
                                   .progress_ctx = &ctx};
  char why[768];
  int rc;
  an_progress_init(&ctx.bar, (uint64_t)p.epochs, "epochs", false);
  rc = an_learned_decoder_train(a->pair_codes, a->pair_images, k, a->code_chw, a->image_chw,
                                    &p, &ld, why, sizeof why);
  if (!rc) {
    audit_progress(a, "k=%zu learned decoder: decoding %zu images", k, a->n_held);
    rc = an_learned_decoder_run(ld, a->held_codes, a->n_held, a->recon, why, sizeof why);
  }
  audit_progress(a, NULL);
  if (rc) {
    snprintf(a->err, sizeof a->err, "k=%zu: %s", k, why);
    goto done;
  }
  if ((rc = audit_score(a, k, "learned decoder", a->recon, &r)) != 0)
    goto done;
  r->seconds = audit_now() - t0;
  r->epochs = p.epochs;
  r->train_loss = an_learned_decoder_loss(ld);
done:
  an_learned_decoder_free(ld);
  return rc;
}

/* Encodes the pairs and the held-out images with the owner's H-encoder. */
static int audit_encode(audit_t *a, an_key_t *h_encoder) {
  int rc = audit_run_key(a, h_encoder, "encoding the known pairs", a->pair_images, a->n_pairs,
                         &a->pair_codes);
  if (!rc)
    rc = audit_run_key(a, h_encoder, "encoding the held-out images", a->held_images, a->n_held,
                       &a->held_codes);
  return rc;
}

static const audit_result_t *audit_find(const audit_t *a, size_t k, const char *attacker) {
  for (size_t i = 0; i < a->n_results; i++)
    if (a->results[i].k == k && strcmp(a->results[i].attacker, attacker) == 0)
      return &a->results[i];
  return NULL;
}

static void audit_print_table(const audit_t *a) {
  const audit_result_t *owner = &a->results[0];
  printf("ArchNet audit: what an attacker recovers from H-encoded images\n"
         "key:  %s (H-encoder %dx%dx%d -> %dx%dx%d, %zu values per image)\n"
         "data: %s (known pairs drawn from %zu training images, %zu held-out test images, "
         "seed %lld)\n\n",
         a->s->key, a->image_chw[0], a->image_chw[1], a->image_chw[2], a->code_chw[0],
         a->code_chw[1], a->code_chw[2], a->code_len, a->s->data, a->n_train_split, a->n_held,
         (long long)a->s->seed);
  printf("%6s  %-16s %9s %7s %7s\n", "k", "attacker", "PSNR dB", "SSIM", "re-id");
  for (size_t i = 0; i < a->n_results; i++) {
    const audit_result_t *r = &a->results[i];
    char k[24], ssim[16];
    snprintf(k, sizeof k, r->k ? "%zu" : "-", r->k);
    snprintf(ssim, sizeof ssim, isnan(r->ssim) ? "n/a" : "%.3f", r->ssim);
    printf("%6s  %-16s %9.2f %7s %6.1f%%\n", k, r->attacker, r->psnr, ssim, 100 * r->reid);
  }
  printf("\nk: known (image, encoding) pairs; owner L-decoder: the key's own decoder, for "
         "reference.\nPSNR and SSIM: mean over the held-out images (higher is closer to the "
         "original).\nre-id: share of reconstructions whose nearest held-out original is their "
         "own (chance %.2f%%).\n",
         100.0 / (double)a->n_held);
  if (a->learned_skipped)
    printf("No learned decoder: %s\n", a->learned_skipped);

  /* What it means, from the numbers themselves. */
  static const char *const attackers[] = {"ridge", "learned decoder"};
  const audit_result_t *first = NULL, *best = NULL;
  double best_reid = 0.0;
  for (size_t i = 1; i < a->n_results; i++) {
    const audit_result_t *r = &a->results[i];
    if (!best || r->psnr > best->psnr)
      best = r;
    if (r->reid >= 0.9 && (!first || r->k < first->k))
      first = r;
    best_reid = r->reid > best_reid ? r->reid : best_reid;
  }
  printf("\nWhat this means:\n");
  if (first)
    printf("- With only %zu known pairs, the %s re-identifies %.1f%% of %zu held-out images "
           "from their encodings alone.\n",
           first->k, first->attacker, 100 * first->reid, a->n_held);
  else
    printf("- The best attacker here re-identifies %.1f%% of %zu held-out images (chance "
           "%.2f%%).\n",
           100 * best_reid, a->n_held, 100.0 / (double)a->n_held);
  for (size_t j = 0; j < sizeof attackers / sizeof attackers[0]; j++)
    for (size_t i = 0; i < a->n_ks; i++) {
      const audit_result_t *r = audit_find(a, a->ks[i], attackers[j]);
      if (r && r->reid >= 0.9) {
        if (r != first)
          printf("- The %s re-identifies over 90%% from %zu pairs on.\n", r->attacker, r->k);
        break;
      }
    }
  if (best)
    printf("- With %zu pairs, the %s reconstructs held-out images at %.1f dB PSNR; the owner's "
           "own L-decoder reaches %.1f dB.\n",
           best->k, best->attacker, best->psnr, owner->psnr);
  if (best_reid >= 0.5 || (best && best->psnr >= owner->psnr - 3.0))
    printf("- ArchNet hides data from casual view; it is not encryption. Whoever holds a few "
           "(image, encoding) pairs can read encoded images: keep encodings and any known "
           "pairs as confidential as the images.\n");
  else
    printf("- These attackers recover little at these sizes, which proves nothing about "
           "stronger ones. ArchNet hides data from casual view; it is not encryption.\n");
}

static int audit_write_json(audit_t *a, const char *path) {
  json_t *root = NULL, *rows, *attacks, *grid;
  int rc = UV_ENOMEM;

  root = json_pack("{s:s, s:s, s:I, s:I, s:I, s:[i,i,i], s:[i,i,i], s:f}", "key", a->s->key,
                   "data", a->s->data, "seed", (json_int_t)a->s->seed, "held_out",
                   (json_int_t)a->n_held, "training_images", (json_int_t)a->n_train_split,
                   "image_shape", a->image_chw[0], a->image_chw[1], a->image_chw[2],
                   "code_shape", a->code_chw[0], a->code_chw[1], a->code_chw[2], "chance_reid",
                   1.0 / (double)a->n_held);
  attacks = json_array();
  rows = json_array();
  if (!root || !attacks || !rows) {
    json_decref(attacks);
    json_decref(rows);
    goto done;
  }
  json_object_set_new(root, "attacks", attacks);
  for (size_t i = 0; i < a->n_results; i++) {
    const audit_result_t *r = &a->results[i];
    json_t *o = json_pack("{s:s, s:f, s:o, s:f, s:f}", "attacker", r->attacker, "psnr_db",
                          r->psnr, "ssim", isnan(r->ssim) ? json_null() : json_real(r->ssim),
                          "reid", r->reid, "seconds", r->seconds);
    if (!o || json_array_append_new(attacks, o) != 0) {
      json_decref(rows);
      goto done;
    }
    json_object_set_new(o, "k", r->k ? json_integer((json_int_t)r->k) : json_null());
    if (strcmp(r->attacker, "ridge") == 0) {
      json_object_set_new(o, "lambda", json_real(r->lambda));
      json_object_set_new(o, "alpha", json_real(r->alpha));
      json_object_set_new(o, "loo_mse", isfinite(r->loo_mse) ? json_real(r->loo_mse) : json_null());
    } else if (r->k) {
      json_object_set_new(o, "epochs", json_integer(r->epochs));
      json_object_set_new(o, "train_loss", json_real(r->train_loss));
    }
  }
  for (size_t i = 0; i < a->grid_rows; i++)
    json_array_append_new(rows, json_string(a->grid_labels[i]));
  grid = json_pack("{s:s, s:I, s:o}", "file", "audit.png", "columns", (json_int_t)a->grid_cols,
                   "rows", rows);
  if (!grid)
    goto done;
  json_object_set_new(root, "grid", grid);
  json_object_set_new(root, "learned_skipped",
                      a->learned_skipped ? json_string(a->learned_skipped) : json_null());
  json_object_set_new(root, "dump", a->s->dump ? json_string(a->s->dump) : json_null());
  rc = an_json_write_file(path, root, 0644, a->err, sizeof a->err);
done:
  if (rc == UV_ENOMEM)
    snprintf(a->err, sizeof a->err, "%s: out of memory building the JSON", path);
  json_decref(root);
  return rc;
}

static int audit_run(audit_t *a) {
  const audit_settings_t *s = a->s;
  an_key_t h_encoder = {0}, l_decoder = {0};
  an_rng_t rng;
  char path[4096];
  int rc;

  if ((rc = an_key_open(s->key, 0, &h_encoder, a->err, sizeof a->err)) ||
      (rc = an_key_open(s->key, 1, &l_decoder, a->err, sizeof a->err)))
    goto done;
  memcpy(a->image_chw, h_encoder.manifest.input, sizeof a->image_chw);
  memcpy(a->code_chw, h_encoder.manifest.code, sizeof a->code_chw);
  a->image_len = an_key_in_size(&h_encoder);
  a->code_len = an_key_out_size(&h_encoder);
  if (a->image_chw[0] != 1 && a->image_chw[0] != 3) {
    snprintf(a->err, sizeof a->err, "%s: images of %d channels (the audit draws grey or RGB)",
             s->key, a->image_chw[0]);
    rc = UV_EINVAL;
    goto done;
  }
  a->n_pairs = a->ks[a->n_ks - 1];
  a->n_held = (size_t)s->held_out;
  /* Pairs and held-out images come from different splits, so no held-out
   * image is ever one of the attacker's pairs. */
  an_rng_seed(&rng, (uint64_t)s->seed);
  audit_progress(a, "loading %s", s->data);
  if ((rc = audit_draw(a, AN_DATASET_TRAIN, a->n_pairs, &rng, &a->pair_images)) ||
      (rc = audit_draw(a, AN_DATASET_TEST, a->n_held, &rng, &a->held_images)) ||
      (rc = audit_encode(a, &h_encoder)))
    goto done;
  an_key_close(&h_encoder);

  rc = UV_ENOMEM;
  a->grid_cols = a->n_held < AUDIT_GRID_COLS ? a->n_held : AUDIT_GRID_COLS;
  a->recon = malloc(sizeof *a->recon * a->n_held * a->image_len);
  a->grid = malloc(sizeof *a->grid * (AUDIT_MAX_RESULTS + 1) * a->grid_cols * a->image_len);
  if (!a->recon || !a->grid) {
    snprintf(a->err, sizeof a->err, "out of memory for %zu reconstructions", a->n_held);
    goto done;
  }
  memcpy(a->grid, a->held_images, sizeof *a->grid * a->grid_cols * a->image_len);
  a->grid_labels[0] = "originals";
  a->grid_rows = 1;

  if (s->dump &&
      ((rc = audit_mkdir(s->dump, a->err, sizeof a->err)) ||
       (rc = audit_write_npy(a, "pairs_images.npy", a->pair_images, a->n_pairs, a->image_chw)) ||
       (rc = audit_write_npy(a, "pairs_codes.npy", a->pair_codes, a->n_pairs, a->code_chw)) ||
       (rc = audit_write_npy(a, "heldout_images.npy", a->held_images, a->n_held,
                             a->image_chw)) ||
       (rc = audit_write_npy(a, "heldout_codes.npy", a->held_codes, a->n_held, a->code_chw))))
    goto done;

  if ((rc = audit_owner(a, &l_decoder)))
    goto done;
  an_key_close(&l_decoder);

  if (s->decoder_epochs == 0)
    a->learned_skipped = "--decoder-epochs 0";
  for (size_t i = 0; i < a->n_ks; i++) {
    if ((rc = audit_ridge(a, a->ks[i])))
      goto done;
    if (a->learned_skipped)
      continue;
    if ((rc = audit_learned(a, a->ks[i])) == AN_EMODEL && i == 0 &&
        strstr(a->err, "no learned decoder")) {
      /* A code shape the L-decoder layout cannot invert: say so, go on. */
      snprintf(a->learned_why, sizeof a->learned_why, "%s", a->err);
      a->learned_skipped = a->learned_why;
      rc = 0;
    }
    if (rc)
      goto done;
  }

  if ((rc = audit_mkdir(s->out, a->err, sizeof a->err)))
    goto done;
  snprintf(path, sizeof path, "%s/audit.png", s->out);
  if ((rc = an_image_grid_png(path, a->grid, a->grid_rows * a->grid_cols, a->image_chw[0],
                              a->image_chw[1], a->image_chw[2], (int)a->grid_cols, a->err,
                              sizeof a->err)))
    goto done;
  snprintf(path, sizeof path, "%s/audit.json", s->out);
  if ((rc = audit_write_json(a, path)))
    goto done;
  audit_print_table(a);
  printf("\nWrote %s/audit.png (rows: originals, the owner's L-decoder, then each k's "
         "attackers, as listed in audit.json) and %s/audit.json.\n",
         s->out, s->out);
done:
  an_key_close(&h_encoder);
  an_key_close(&l_decoder);
  return rc;
}

int an_publisher_audit(int argc, char **argv) {
  audit_settings_t s = {0};
  audit_t *a = NULL;
  int first, status;

  if ((status = an_cli_parse(&audit_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (!s.key || !s.data) {
    fprintf(stderr, "archnet-publisher audit: --key and --data are required; see --help\n");
    goto done;
  }
  if (first < argc) {
    fprintf(stderr, "archnet-publisher audit: unexpected argument '%s'\n", argv[first]);
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (!(a = calloc(1, sizeof *a))) {
    fprintf(stderr, "archnet-publisher audit: out of memory\n");
    goto done;
  }
  a->s = &s;
  a->tty = isatty(STDERR_FILENO);
  /* The option's check already accepted the list. */
  a->n_ks = (size_t)audit_parse_pairs(s.pairs, a->ks, a->err, sizeof a->err);
  if (audit_run(a) != 0) {
    fprintf(stderr, "archnet-publisher audit: %s\n", a->err);
    goto done;
  }
  status = AN_EXIT_OK;
done:
  if (a) {
    free(a->pair_images);
    free(a->pair_codes);
    free(a->held_images);
    free(a->held_codes);
    free(a->recon);
    free(a->grid);
    free(a);
  }
  an_config_free(&audit_spec, &s);
  return status;
}
