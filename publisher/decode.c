/* `archnet-publisher decode`: codes back to images through the key's
 * L-decoder, as a PNG grid, to show the owner that the key works; with
 * --data, the originals go above their reconstructions and the PSNR is
 * measured. */
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/blob/dataset.h"
#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/error.h"
#include "publisher/commands.h"
#include "publisher/encoded.h"
#include "publisher/image_grid.h"
#include "publisher/key.h"

typedef struct decode_settings {
  char *key, *input, *out, *data;
  int64_t count, cols;
} decode_settings_t;

#define OPT(f) offsetof(decode_settings_t, f)

static const an_option_t decode_options[] = {
    {"key", AN_OPT_STR, OPT(key), NULL, 0, 0, "KEYDIR", "the key written by 'train'"},
    {"input", AN_OPT_STR, OPT(input), NULL, 0, 0, "X.npy",
     "codes written by 'encode' (its encoding.json must sit beside them)"},
    {"out", AN_OPT_STR, OPT(out), "decoded.png", 0, 0, "FILE.png", "the picture to write"},
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "DIR",
     "the raw dataset the codes came from: show originals and measure PSNR"},
    {"count", AN_OPT_INT, OPT(count), "32", 1, 100000, "N",
     "how many codes to decode (from the first)"},
    {"cols", AN_OPT_INT, OPT(cols), "16", 1, 256, "N", "images per row of the picture"},
};

static const an_command_spec_t decode_spec = {
    .program = "archnet-publisher",
    .command = "decode",
    .summary = "Decode codes written by 'encode' back to images with your key's L-decoder and\n"
               "write them as a PNG grid. With --data, each row of originals is followed by\n"
               "its reconstructions and the mean PSNR is printed.",
    .options = decode_options,
    .n_options = sizeof decode_options / sizeof decode_options[0],
};

/* Which part of `encode`'s output a file is, from its name. */
static const char *part_of(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  if (!strncmp(base, "train_x", 7))
    return "train";
  if (!strncmp(base, "val_x", 5))
    return "val";
  if (!strncmp(base, "test_x", 6))
    return "test";
  return NULL;
}

/* The originals of the first n codes of `part`: the same seeded split as
 * `encode` made. */
static int load_originals(const decode_settings_t *s, const an_encoded_info_t *info,
                          const char *part, size_t n, size_t in_size, float *orig, char *err,
                          size_t errlen) {
  an_dataset_t d = {0};
  uint32_t *order = NULL;
  size_t n_train;
  int test = !strcmp(part, "test"), rc;
  if ((rc = an_dataset_load(s->data, test ? AN_DATASET_TEST : AN_DATASET_TRAIN,
                            test ? n : (size_t)info->n_source, &d, err, errlen)) != 0)
    return rc;
  rc = AN_EFORMAT;
  if (strcmp(d.digest, test ? info->test_digest : info->dataset_digest) != 0) {
    snprintf(err, errlen, "%s is not the dataset these codes were made from (digest differs)",
             s->data);
    goto done;
  }
  if (!test) {
    if (d.n != (size_t)info->n_source || !(order = malloc(d.n * sizeof *order)) ||
        an_dataset_split(d.n, info->val_fraction, info->split_seed, order, &n_train) != 0) {
      snprintf(err, errlen, "cannot repeat the train/validation split of these codes");
      goto done;
    }
  }
  for (size_t i = 0; i < n; i++) {
    size_t src = test ? i : order[(!strcmp(part, "val") ? n_train : 0) + i];
    for (size_t p = 0; p < in_size; p++)
      orig[i * in_size + p] = d.images[src * in_size + p] / 255.0f;
  }
  rc = 0;
done:
  free(order);
  an_dataset_free(&d);
  return rc;
}

int an_publisher_decode(int argc, char **argv) {
  decode_settings_t s = {0};
  an_key_t key = {0};
  an_encoded_info_t info;
  an_npy_t x = {0};
  float *codes = NULL, *images = NULL, *orig = NULL, *grid = NULL;
  char err[8192], dir[4096];
  int first, status, rc;

  if ((status = an_cli_parse(&decode_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first || !s.key || !s.input) {
    fprintf(stderr, "archnet-publisher decode: needs --key and --input; see --help\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  snprintf(dir, sizeof dir, "%s", s.input);
  if ((rc = an_key_open(s.key, 1, &key, err, sizeof err)) != 0 ||
      (rc = an_encoded_read_info(dirname(dir), &info, err, sizeof err)) != 0 ||
      (rc = an_npy_map(s.input, &x, err, sizeof err)) != 0)
    goto fail;
  const int *cs = key.manifest.code;
  if (x.dtype != info.dtype || x.ndim != 4 || x.shape[1] != cs[0] || x.shape[2] != cs[1] ||
      x.shape[3] != cs[2] || memcmp(info.shape, cs, sizeof info.shape) != 0) {
    snprintf(err, sizeof err, "%s does not hold %s codes of shape N x %d x %d x %d for this key",
             s.input, an_encoded_dtype_name(info.dtype), cs[0], cs[1], cs[2]);
    goto fail;
  }
  size_t n = (size_t)x.shape[0] < (size_t)s.count ? (size_t)x.shape[0] : (size_t)s.count;
  size_t code_size = an_key_in_size(&key), in_size = an_key_out_size(&key);
  const int *is = key.manifest.input;
  if (n == 0) {
    snprintf(err, sizeof err, "%s holds no codes", s.input);
    goto fail;
  }
  if (!(codes = malloc(n * code_size * sizeof *codes)) ||
      !(images = malloc(n * in_size * sizeof *images)) ||
      !(orig = malloc(n * in_size * sizeof *orig)) ||
      !(grid = malloc((2 * n + (size_t)s.cols) * in_size * sizeof *grid))) {
    snprintf(err, sizeof err, "out of memory");
    goto fail;
  }
  an_encoded_code_values(&info, x.data, n, codes);
  if ((rc = an_key_run(&key, codes, n, n < 256 ? n : 256, images, err, sizeof err)) != 0)
    goto fail;
  for (size_t i = 0; i < n * in_size; i++) /* an image is in [0, 1] */
    images[i] = images[i] < 0 ? 0 : images[i] > 1 ? 1 : images[i];
  double psnr = NAN;
  size_t tiles = n;
  const float *picture = images;
  if (s.data) {
    const char *part = part_of(s.input);
    if (!part) {
      snprintf(err, sizeof err, "%s: cannot tell which part (train_x, val_x, test_x) it is",
               s.input);
      goto fail;
    }
    if ((rc = load_originals(&s, &info, part, n, in_size, orig, err, sizeof err)) != 0)
      goto fail;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
      double se = 0;
      for (size_t p = 0; p < in_size; p++) {
        double d = (double)images[i * in_size + p] - orig[i * in_size + p];
        se += d * d;
      }
      double mse = se / (double)in_size;
      sum += mse > 1e-10 ? 10 * log10(1 / mse) : 100;
    }
    psnr = sum / (double)n;
    /* Rows of originals, each followed by the same images decoded. */
    size_t cols = (size_t)s.cols, k = 0;
    for (size_t r = 0; r < n; r += cols) {
      size_t m = n - r < cols ? n - r : cols;
      memcpy(grid + k * in_size, orig + r * in_size, m * in_size * sizeof *grid);
      k += m;
      for (size_t blank = m; blank < cols; blank++, k++) /* a short row: pad it white */
        for (size_t p = 0; p < in_size; p++)
          grid[k * in_size + p] = 1.0f;
      memcpy(grid + k * in_size, images + r * in_size, m * in_size * sizeof *grid);
      k += m;
    }
    tiles = k;
    picture = grid;
  }
  if ((rc = an_image_grid_png(s.out, picture, tiles, is[0], is[1], is[2], (int)s.cols, err,
                              sizeof err)) != 0)
    goto fail;
  if (s.data)
    printf("decoded %zu images to %s (originals above reconstructions): mean PSNR %.2f dB\n", n,
           s.out, psnr);
  else
    printf("decoded %zu images to %s\n", n, s.out);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher decode: %s\n", err);
  status = AN_EXIT_FAIL;
done:
  an_key_close(&key);
  an_npy_free(&x);
  free(codes);
  free(images);
  free(orig);
  free(grid);
  an_config_free(&decode_spec, &s);
  return status;
}
