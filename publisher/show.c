/* `archnet-publisher show`: originals next to their encoded channels, one
 * row per image (the paper's figures 6, 8 and 9): what a worker sees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blob/dataset.h"
#include "common/cli.h"
#include "common/error.h"
#include "publisher/commands.h"
#include "publisher/image_grid.h"
#include "publisher/key.h"

typedef struct show_settings {
  char *key, *data, *out;
  int64_t count;
} show_settings_t;

#define OPT(f) offsetof(show_settings_t, f)

static const an_option_t show_options[] = {
    {"key", AN_OPT_STR, OPT(key), NULL, 0, 0, "KEYDIR", "the key written by 'train'"},
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "DIR", "the raw dataset (its test images)"},
    {"out", AN_OPT_STR, OPT(out), "show.png", 0, 0, "FILE.png", "the picture to write"},
    {"count", AN_OPT_INT, OPT(count), "6", 1, 100, "N", "images, one row each"},
};

static const an_command_spec_t show_spec = {
    .program = "archnet-publisher",
    .command = "show",
    .summary = "Draw test images next to their encodings: each row is an original (grey,\n"
               "scaled to the code's size) followed by every channel of its code, each\n"
               "stretched to its own range.",
    .options = show_options,
    .n_options = sizeof show_options / sizeof show_options[0],
};

int an_publisher_show(int argc, char **argv) {
  show_settings_t s = {0};
  an_key_t key = {0};
  an_dataset_t d = {0};
  float *x = NULL, *code = NULL, *tiles = NULL;
  char err[8192];
  int first, status, rc;

  if ((status = an_cli_parse(&show_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first || !s.key || !s.data) {
    fprintf(stderr, "archnet-publisher show: needs --key and --data; see --help\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if ((rc = an_key_open(s.key, 0, &key, err, sizeof err)) != 0 ||
      (rc = an_dataset_load(s.data, AN_DATASET_TEST, (size_t)s.count, &d, err, sizeof err)) != 0)
    goto fail;
  const int *is = key.manifest.input, *cs = key.manifest.code;
  if (d.c != is[0] || d.h != is[1] || d.w != is[2]) {
    snprintf(err, sizeof err, "the key encodes %dx%dx%d images but %s holds %dx%dx%d", is[0],
             is[1], is[2], s.data, d.c, d.h, d.w);
    goto fail;
  }
  size_t n = d.n, in_size = an_key_in_size(&key), code_size = an_key_out_size(&key);
  size_t plane = (size_t)cs[1] * (size_t)cs[2], per_row = 1 + (size_t)cs[0];
  if (!(x = malloc(n * in_size * sizeof *x)) || !(code = malloc(n * code_size * sizeof *code)) ||
      !(tiles = malloc(n * per_row * plane * sizeof *tiles))) {
    snprintf(err, sizeof err, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n * in_size; i++)
    x[i] = d.images[i] / 255.0f;
  if ((rc = an_key_run(&key, x, n, n, code, err, sizeof err)) != 0)
    goto fail;
  for (size_t i = 0; i < n; i++) {
    float *row = tiles + i * per_row * plane;
    /* The original in grey, nearest-neighbour scaled to the code's size. */
    for (int yy = 0; yy < cs[1]; yy++)
      for (int xx = 0; xx < cs[2]; xx++) {
        int sy = yy * d.h / cs[1], sx = xx * d.w / cs[2];
        float v = 0;
        for (int c = 0; c < d.c; c++)
          v += x[i * in_size + ((size_t)c * d.h + sy) * d.w + sx];
        row[(size_t)yy * cs[2] + xx] = v / (float)d.c;
      }
    for (int c = 0; c < cs[0]; c++) {
      float *t = row + (size_t)(1 + c) * plane;
      memcpy(t, code + i * code_size + (size_t)c * plane, plane * sizeof *t);
      an_image_normalize(t, plane);
    }
  }
  if ((rc = an_image_grid_png(s.out, tiles, n * per_row, 1, cs[1], cs[2], (int)per_row, err,
                              sizeof err)) != 0)
    goto fail;
  printf("wrote %s: %zu images, each followed by its %d encoded channels (%dx%d)\n", s.out, n,
         cs[0], cs[1], cs[2]);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher show: %s\n", err);
  status = AN_EXIT_FAIL;
done:
  an_key_close(&key);
  an_dataset_free(&d);
  free(x);
  free(code);
  free(tiles);
  an_config_free(&show_spec, &s);
  return status;
}
