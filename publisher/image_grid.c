#include "publisher/image_grid.h"

#include <math.h>
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/atomic_file.h"
#include "common/error.h"

/* Keeps a picture well inside what viewers and libpng's default limits take. */
#define AN_IMAGE_GRID_MAX_SIDE 65535

static uint8_t an_image_to_byte(float v) {
  if (!(v > 0.0f)) /* also NaN */
    return 0;
  if (v >= 1.0f)
    return 255;
  return (uint8_t)lrintf(v * 255.0f);
}

/* Copies image `i` (planar C x H x W) into its tile of the interleaved
 * 8-bit picture. */
static void an_image_draw_tile(uint8_t *pic, size_t stride, const float *img, int c, int h,
                               int w, size_t x0, size_t y0) {
  size_t plane = (size_t)h * (size_t)w;
  for (int y = 0; y < h; y++) {
    uint8_t *row = pic + (y0 + (size_t)y) * stride + x0 * (size_t)c;
    for (int x = 0; x < w; x++)
      for (int ch = 0; ch < c; ch++)
        row[(size_t)x * (size_t)c + (size_t)ch] =
            an_image_to_byte(img[(size_t)ch * plane + (size_t)y * (size_t)w + (size_t)x]);
  }
}

int an_image_grid_png(const char *path, const float *images, size_t n, int c, int h, int w,
                      int cols, char *err, size_t errlen) {
  uint8_t *pic = NULL, *png = NULL;
  png_alloc_size_t png_len = 0;
  png_image info;
  an_atomic_file_t f = {.fd = -1};
  size_t rows, width, height, stride;
  int rc = UV_EINVAL;

  memset(&info, 0, sizeof info);
  if (!images || n == 0 || cols <= 0 || (c != 1 && c != 3) || h <= 0 || w <= 0 ||
      h > AN_IMAGE_GRID_MAX_SIDE || w > AN_IMAGE_GRID_MAX_SIDE) {
    snprintf(err, errlen, "%s: cannot draw %zu images of %dx%dx%d in rows of %d", path, n, c, h,
             w, cols);
    goto done;
  }
  if ((size_t)cols > n)
    cols = (int)n;
  rows = (n + (size_t)cols - 1) / (size_t)cols;
  width = (size_t)cols * (size_t)w + (size_t)(cols - 1) * AN_IMAGE_GRID_GAP;
  height = rows > AN_IMAGE_GRID_MAX_SIDE ? SIZE_MAX
                                         : rows * (size_t)h + (rows - 1) * AN_IMAGE_GRID_GAP;
  if (width > AN_IMAGE_GRID_MAX_SIDE || height > AN_IMAGE_GRID_MAX_SIDE) {
    snprintf(err, errlen, "%s: a grid of %zu images of %dx%d in rows of %d is too big for one "
                          "picture (over %d pixels a side)",
             path, n, h, w, cols, AN_IMAGE_GRID_MAX_SIDE);
    goto done;
  }
  stride = width * (size_t)c;
  rc = UV_ENOMEM;
  if (!(pic = malloc(stride * height))) {
    snprintf(err, errlen, "%s: out of memory for a %zux%zu picture", path, width, height);
    goto done;
  }
  memset(pic, 255, stride * height);
  for (size_t i = 0; i < n; i++)
    an_image_draw_tile(pic, stride, images + i * (size_t)c * (size_t)h * (size_t)w, c, h, w,
                       (i % (size_t)cols) * ((size_t)w + AN_IMAGE_GRID_GAP),
                       (i / (size_t)cols) * ((size_t)h + AN_IMAGE_GRID_GAP));

  /* libpng's simplified API encodes to memory without setjmp; the bytes
   * then go through the atomic file like every other artefact. */
  info.version = PNG_IMAGE_VERSION;
  info.width = (png_uint_32)width;
  info.height = (png_uint_32)height;
  info.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  rc = AN_EFORMAT;
  if (!png_image_write_get_memory_size(info, png_len, 0, pic, 0, NULL)) {
    snprintf(err, errlen, "%s: libpng: %s", path, info.message);
    goto done;
  }
  rc = UV_ENOMEM;
  if (!(png = malloc(png_len))) {
    snprintf(err, errlen, "%s: out of memory for %zu bytes of PNG", path, (size_t)png_len);
    goto done;
  }
  rc = AN_EFORMAT;
  if (!png_image_write_to_memory(&info, png, &png_len, 0, pic, 0, NULL)) {
    snprintf(err, errlen, "%s: libpng: %s", path, info.message);
    goto done;
  }
  if ((rc = an_atomic_file_open(&f, path, 0644, err, errlen)) != 0)
    goto done;
  if ((rc = an_atomic_file_write(&f, png, png_len, err, errlen)) != 0) {
    an_atomic_file_abort(&f);
    goto done;
  }
  rc = an_atomic_file_commit(&f, err, errlen);
done:
  png_image_free(&info); /* nothing held after a finished write; harmless */
  free(png);
  free(pic);
  return rc;
}

void an_image_normalize(float *x, size_t n) {
  float lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; i++)
    if (isfinite(x[i])) {
      lo = x[i] < lo ? x[i] : lo;
      hi = x[i] > hi ? x[i] : hi;
    }
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(x[i]))
      x[i] = 0.0f;
    else if (hi > lo)
      x[i] = (x[i] - lo) / (hi - lo);
    else
      x[i] = 0.5f;
  }
}
