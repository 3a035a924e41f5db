/* `archnet-publisher encode`: streams a dataset through the key's H-encoder
 * into .npy files a worker in any framework can numpy.load, split into a
 * training part (for the workers) and a validation part (for the broker).
 * Memory stays bounded by one batch of codes whatever the dataset's size:
 * the arrays are written as they are computed. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "common/blob/dataset.h"
#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/progress.h"
#include "publisher/commands.h"
#include "publisher/encoded.h"
#include "publisher/key.h"

typedef struct encode_settings {
  char *key, *data, *out, *dtype;
  double val_fraction;
  int64_t limit, seed, batch;
  bool with_test, progress;
} encode_settings_t;

#define OPT(f) offsetof(encode_settings_t, f)

static const an_option_t encode_options[] = {
    {"key", AN_OPT_STR, OPT(key), NULL, 0, 0, "KEYDIR", "the key written by 'train'"},
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "DIR", "the raw dataset (as for 'train')"},
    {"out", AN_OPT_STR, OPT(out), NULL, 0, 0, "DIR", "where the .npy files go (created)"},
    {"dtype", AN_OPT_STR, OPT(dtype), "f16", 0, 0, "f16|f32|u8",
     "how codes are stored: float16, float32, or uint8 with a per-channel range"},
    {"val-fraction", AN_OPT_DOUBLE, OPT(val_fraction), "0.1", 0, 0.9, "F",
     "part of the training images held back for the broker's validation"},
    {"limit", AN_OPT_INT, OPT(limit), "0", 0, INT32_MAX, "N",
     "encode only the first N training images (0 = all)"},
    {"seed", AN_OPT_INT, OPT(seed), "1", 0, INT64_MAX, "N", "seed of the train/validation split"},
    {"batch", AN_OPT_INT, OPT(batch), "256", 1, 4096, "N", "images encoded at a time"},
    {"with-test", AN_OPT_BOOL, OPT(with_test), "false", 0, 0, NULL,
     "also encode the test split (test_x.npy, test_y.npy) for your own evaluation"},
    {"progress", AN_OPT_BOOL, OPT(progress), "false", 0, 0, NULL,
     "draw the progress line even when stderr is not a terminal"},
};

static const an_command_spec_t encode_spec = {
    .program = "archnet-publisher",
    .command = "encode",
    .summary = "Encode a dataset with your key's H-encoder into NumPy files: train_x.npy and\n"
               "train_y.npy for the workers, val_x.npy and val_y.npy for the broker's\n"
               "validation, and encoding.json describing them. Only these leave your machine.",
    .options = encode_options,
    .n_options = sizeof encode_options / sizeof encode_options[0],
};

typedef struct encoder {
  const encode_settings_t *s;
  an_key_t key;
  an_encoded_info_t info;
  size_t in_size, code_size;
  float *x, *code; /* one batch */
  void *stored;    /* one batch in the stored type */
  an_progress_t prog;
  uint64_t done;
  char err[8192];
} encoder_t;

/* uint8 storage: the per-channel range of the codes of (up to) the first
 * 1,024 training images, so the quantisation is fixed before writing. */
static int calibrate_u8(encoder_t *e, const an_dataset_t *d, const uint32_t *order,
                        size_t n_train) {
  size_t n = n_train < 1024 ? n_train : 1024, batch = (size_t)e->s->batch;
  size_t plane = (size_t)e->info.shape[1] * (size_t)e->info.shape[2];
  for (int c = 0; c < e->info.shape[0]; c++) {
    e->info.lo[c] = INFINITY;
    e->info.hi[c] = -INFINITY;
  }
  for (size_t i = 0; i < n; i += batch) {
    size_t b = n - i < batch ? n - i : batch;
    for (size_t k = 0; k < b; k++)
      for (size_t p = 0; p < e->in_size; p++)
        e->x[k * e->in_size + p] = d->images[(size_t)order[i + k] * e->in_size + p] / 255.0f;
    int rc = an_key_run(&e->key, e->x, b, batch, e->code, e->err, sizeof e->err);
    if (rc)
      return rc;
    for (size_t j = 0; j < b * e->code_size; j++) {
      int c = (int)(j % e->code_size / plane);
      float v = e->code[j];
      e->info.lo[c] = v < e->info.lo[c] ? v : e->info.lo[c];
      e->info.hi[c] = v > e->info.hi[c] ? v : e->info.hi[c];
    }
  }
  return 0;
}

/* Encodes images idx[0..n) (NULL = 0..n) of `d` into PREFIX_x.npy and
 * PREFIX_y.npy under --out. */
static int write_part(encoder_t *e, const an_dataset_t *d, const uint32_t *idx, size_t n,
                      const char *prefix) {
  char path[4096];
  an_npy_writer_t w;
  size_t batch = (size_t)e->s->batch, esize = an_encoded_elem_size(&e->info);
  int64_t shape[4] = {(int64_t)n, e->info.shape[0], e->info.shape[1], e->info.shape[2]};
  uint8_t *labels = malloc(n ? n : 1);
  int rc;
  if (!labels) {
    snprintf(e->err, sizeof e->err, "out of memory");
    return UV_ENOMEM;
  }
  snprintf(path, sizeof path, "%s/%s_x.npy", e->s->out, prefix);
  if ((rc = an_npy_writer_open(&w, path, e->info.dtype, 4, shape, e->err, sizeof e->err)) != 0) {
    free(labels);
    return rc;
  }
  for (size_t i = 0; i < n; i += batch) {
    size_t b = n - i < batch ? n - i : batch;
    for (size_t k = 0; k < b; k++) {
      size_t src = idx ? idx[i + k] : i + k;
      labels[i + k] = d->labels[src];
      for (size_t p = 0; p < e->in_size; p++)
        e->x[k * e->in_size + p] = d->images[src * e->in_size + p] / 255.0f;
    }
    if ((rc = an_key_run(&e->key, e->x, b, batch, e->code, e->err, sizeof e->err)) != 0)
      goto fail;
    an_encoded_store(&e->info, e->code, b, e->stored);
    if ((rc = an_npy_writer_append(&w, e->stored, b * e->code_size * esize, e->err,
                                   sizeof e->err)) != 0)
      goto fail;
    e->done += b;
    char label[64];
    snprintf(label, sizeof label, "encoding %s", prefix);
    an_progress_update(&e->prog, e->done, label, false);
  }
  if ((rc = an_npy_writer_commit(&w, e->err, sizeof e->err)) != 0)
    goto out;
  snprintf(path, sizeof path, "%s/%s_y.npy", e->s->out, prefix);
  int64_t yshape[1] = {(int64_t)n};
  rc = an_npy_write(path, AN_NPY_U8, 1, yshape, labels, e->err, sizeof e->err);
  goto out;
fail:
  an_npy_writer_abort(&w);
out:
  free(labels);
  return rc;
}

int an_publisher_encode(int argc, char **argv) {
  encode_settings_t s = {0};
  encoder_t e = {.s = &s};
  an_dataset_t train = {0}, test = {0};
  uint32_t *order = NULL;
  size_t n_train = 0;
  int first, status, rc;

  if ((status = an_cli_parse(&encode_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first || !s.key || !s.data || !s.out) {
    fprintf(stderr, "archnet-publisher encode: needs --key, --data and --out; see --help\n");
    goto done;
  }
  if (!strcmp(s.dtype, "f16"))
    e.info.dtype = AN_NPY_F16;
  else if (!strcmp(s.dtype, "f32"))
    e.info.dtype = AN_NPY_F32;
  else if (!strcmp(s.dtype, "u8"))
    e.info.dtype = AN_NPY_U8;
  else {
    fprintf(stderr, "archnet-publisher encode: --dtype must be f16, f32 or u8\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if ((rc = an_key_open(s.key, 0, &e.key, e.err, sizeof e.err)) != 0 ||
      (rc = an_dataset_load(s.data, AN_DATASET_TRAIN, (size_t)s.limit, &train, e.err,
                            sizeof e.err)) != 0 ||
      (s.with_test &&
       (rc = an_dataset_load(s.data, AN_DATASET_TEST, 0, &test, e.err, sizeof e.err)) != 0))
    goto fail;
  const int *in = e.key.manifest.input;
  if (train.c != in[0] || train.h != in[1] || train.w != in[2]) {
    snprintf(e.err, sizeof e.err, "the key encodes %dx%dx%d images but %s holds %dx%dx%d", in[0],
             in[1], in[2], s.data, train.c, train.h, train.w);
    goto fail;
  }
  memcpy(e.info.shape, e.key.manifest.code, sizeof e.info.shape);
  e.in_size = an_key_in_size(&e.key);
  e.code_size = an_key_out_size(&e.key);
  if (e.info.shape[0] > AN_ENCODED_MAX_C) {
    snprintf(e.err, sizeof e.err, "codes with over %d channels", AN_ENCODED_MAX_C);
    goto fail;
  }
  if (!(order = malloc(train.n * sizeof *order)) ||
      !(e.x = malloc((size_t)s.batch * e.in_size * sizeof(float))) ||
      !(e.code = malloc((size_t)s.batch * e.code_size * sizeof(float))) ||
      !(e.stored = malloc((size_t)s.batch * e.code_size * sizeof(float)))) {
    snprintf(e.err, sizeof e.err, "out of memory");
    goto fail;
  }
  if ((rc = an_dataset_split(train.n, s.val_fraction, (uint64_t)s.seed, order, &n_train)) != 0) {
    snprintf(e.err, sizeof e.err, "cannot split %zu images", train.n);
    goto fail;
  }
  if (mkdir(s.out, 0755) != 0 && errno != EEXIST) {
    snprintf(e.err, sizeof e.err, "cannot create %s: %s", s.out, strerror(errno));
    goto fail;
  }
  if (e.info.dtype == AN_NPY_U8 && (rc = calibrate_u8(&e, &train, order, n_train)) != 0)
    goto fail;
  e.info.split_seed = (uint64_t)s.seed;
  e.info.val_fraction = s.val_fraction;
  e.info.n_source = (int64_t)train.n;
  e.info.n_train = (int64_t)n_train;
  e.info.n_val = (int64_t)(train.n - n_train);
  e.info.n_test = (int64_t)test.n;
  memcpy(e.info.dataset_digest, train.digest, sizeof e.info.dataset_digest);
  memcpy(e.info.test_digest, test.digest, sizeof e.info.test_digest);

  an_progress_init(&e.prog, train.n + test.n, "img", s.progress);
  if ((rc = write_part(&e, &train, order, n_train, "train")) != 0 ||
      (rc = write_part(&e, &train, order + n_train, train.n - n_train, "val")) != 0 ||
      (s.with_test && (rc = write_part(&e, &test, NULL, test.n, "test")) != 0) ||
      (rc = an_encoded_write_info(s.out, &e.info, e.err, sizeof e.err)) != 0) {
    an_progress_done(&e.prog);
    goto fail;
  }
  an_progress_done(&e.prog);
  size_t per = e.code_size * an_encoded_elem_size(&e.info);
  double total = (double)per * (double)(train.n + test.n);
  printf("encoded %zu images (%zu train, %zu validation, %zu test) to %s: %dx%dx%d %s, %zu bytes "
         "per image (raw: %zu), %.1f MB in all, %.0f img/s\n",
         train.n + test.n, n_train, train.n - n_train, test.n, s.out,
         e.info.shape[0], e.info.shape[1], e.info.shape[2], s.dtype, per, e.in_size, total / 1e6,
         (double)(train.n + test.n) / an_progress_elapsed(&e.prog));
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher encode: %s\n", e.err);
  status = AN_EXIT_FAIL;
done:
  an_key_close(&e.key);
  an_dataset_free(&train);
  an_dataset_free(&test);
  free(order);
  free(e.x);
  free(e.code);
  free(e.stored);
  an_config_free(&encode_spec, &s);
  return status;
}
