/* publisher/image_grid: grids written with libpng are read back with libpng
 * and every pixel is checked against where the layout says it must be. */
#include <check.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "publisher/image_grid.h"
#include "tests/support/testutil.h"

/* Reads a PNG as 8-bit grey (c = 1) or RGB (c = 3); caller frees. */
static uint8_t *read_png(const char *path, int c, unsigned *width, unsigned *height) {
  png_image img;
  uint8_t *buf;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  ck_assert_msg(png_image_begin_read_from_file(&img, path), "%s: %s", path, img.message);
  ck_assert_uint_eq(img.format & PNG_FORMAT_FLAG_COLOR, c == 3 ? PNG_FORMAT_FLAG_COLOR : 0);
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  buf = malloc(PNG_IMAGE_SIZE(img));
  ck_assert_ptr_nonnull(buf);
  ck_assert_msg(png_image_finish_read(&img, NULL, buf, 0, NULL), "%s", img.message);
  *width = img.width;
  *height = img.height;
  return buf;
}

static char *tmp_path(char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

START_TEST(test_grey_layout) {
  /* Three 2x3 images in rows of 2: 2 tiles + 1 gap wide, 2 tiles + 1 gap
   * high, the fourth tile empty (white). Pixel j of image i holds
   * (10 i + j) / 255, so its byte is 10 i + j. */
  enum { N = 3, H = 2, W = 3, G = AN_IMAGE_GRID_GAP };
  float x[N * H * W];
  char *dir = an_test_tmpdir(), *path = tmp_path(dir, "grid.png"), err[512];
  for (int i = 0; i < N; i++)
    for (int j = 0; j < H * W; j++)
      x[i * H * W + j] = (float)(10 * i + j) / 255.0f;
  ck_assert_msg(an_image_grid_png(path, x, N, 1, H, W, 2, err, sizeof err) == 0, "%s", err);
  unsigned width, height;
  uint8_t *px = read_png(path, 1, &width, &height);
  ck_assert_uint_eq(width, 2 * W + G);
  ck_assert_uint_eq(height, 2 * H + G);
  for (unsigned y = 0; y < height; y++)
    for (unsigned xx = 0; xx < width; xx++) {
      unsigned tx = xx / (W + G), ty = y / (H + G), ox = xx % (W + G), oy = y % (H + G);
      unsigned tile = ty * 2 + tx;
      int want = 255; /* gap or the empty fourth tile */
      if (ox < W && oy < H && tile < N)
        want = (int)(10 * tile + oy * W + ox);
      ck_assert_msg(px[y * width + xx] == want, "pixel (%u, %u) is %d, want %d", xx, y,
                    px[y * width + xx], want);
    }
  free(px);
  char *tmp = tmp_path(dir, "grid.png.tmp");
  ck_assert_int_ne(access(tmp, F_OK), 0); /* renamed into place */
  free(tmp);
  free(path);
  an_test_rmtree(dir);
  free(dir);
}
END_TEST

START_TEST(test_rgb_planes_and_clamping) {
  /* Two 3x2x2 RGB images stacked in one column. Planes become interleaved
   * samples; out-of-range values clamp and NaN draws as 0. */
  enum { C = 3, H = 2, W = 2, G = AN_IMAGE_GRID_GAP };
  float x[2 * C * H * W];
  for (int i = 0; i < 2 * C * H * W; i++)
    x[i] = (float)i / 255.0f;
  x[0] = -0.5f;          /* image 0, R, (0,0) -> 0 */
  x[1] = 1.7f;           /* image 0, R, (1,0) -> 255 */
  x[C * H * W] = NAN;    /* image 1, R, (0,0) -> 0 */
  x[C * H * W + 5] = 0.5f; /* image 1, G, (1,0) -> 128 (127.5 to nearest even) */
  char *dir = an_test_tmpdir(), *path = tmp_path(dir, "rgb.png"), err[512];
  ck_assert_msg(an_image_grid_png(path, x, 2, C, H, W, 1, err, sizeof err) == 0, "%s", err);
  unsigned width, height;
  uint8_t *px = read_png(path, 3, &width, &height);
  ck_assert_uint_eq(width, W);
  ck_assert_uint_eq(height, 2 * H + G);
  for (int i = 0; i < 2; i++)
    for (int ch = 0; ch < C; ch++)
      for (int y = 0; y < H; y++)
        for (int xx = 0; xx < W; xx++) {
          int at = ((i * C + ch) * H + y) * W + xx;
          int want = at;
          if (at == 0 || at == C * H * W)
            want = 0;
          else if (at == 1)
            want = 255;
          else if (at == C * H * W + 5)
            want = (int)lrintf(0.5f * 255.0f);
          int row = i * (H + G) + y;
          ck_assert_int_eq(px[(row * W + xx) * C + ch], want);
        }
  for (int row = H; row < H + G; row++)
    for (int b = 0; b < W * C; b++)
      ck_assert_int_eq(px[row * W * C + b], 255);
  free(px);
  free(path);
  an_test_rmtree(dir);
  free(dir);
}
END_TEST

START_TEST(test_refusals) {
  float x[4] = {0};
  char *dir = an_test_tmpdir(), *path = tmp_path(dir, "bad.png"), err[512];
  ck_assert_int_eq(an_image_grid_png(path, x, 1, 2, 1, 2, 1, err, sizeof err), UV_EINVAL);
  ck_assert_int_eq(an_image_grid_png(path, x, 0, 1, 2, 2, 1, err, sizeof err), UV_EINVAL);
  ck_assert_int_eq(an_image_grid_png(path, x, 1, 1, 2, 2, 0, err, sizeof err), UV_EINVAL);
  /* 40,000 tiles of 1x1 in one row with gaps: 119,998 pixels wide. */
  float *many = calloc(40000, sizeof *many);
  ck_assert_int_eq(an_image_grid_png(path, many, 40000, 1, 1, 1, 40000, err, sizeof err),
                   UV_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "too big"));
  free(many);
  ck_assert_int_ne(access(path, F_OK), 0);
  char missing[] = "/nonexistent-dir/x.png";
  ck_assert_int_lt(an_image_grid_png(missing, x, 1, 1, 2, 2, 1, err, sizeof err), 0);
  ck_assert_ptr_nonnull(strstr(err, "/nonexistent-dir/x.png"));
  free(path);
  an_test_rmtree(dir);
  free(dir);
}
END_TEST

START_TEST(test_normalize) {
  float a[] = {2.0f, 4.0f, NAN, 6.0f, INFINITY};
  an_image_normalize(a, 5);
  ck_assert_float_eq(a[0], 0.0f);
  ck_assert_float_eq(a[1], 0.5f);
  ck_assert_float_eq(a[2], 0.0f);
  ck_assert_float_eq(a[3], 1.0f);
  ck_assert_float_eq(a[4], 0.0f);
  float b[] = {3.0f, 3.0f};
  an_image_normalize(b, 2);
  ck_assert_float_eq(b[0], 0.5f);
  ck_assert_float_eq(b[1], 0.5f);
}
END_TEST

static Suite *image_grid_suite(void) {
  Suite *s = suite_create("image-grid");
  TCase *tc = tcase_create("png");
  tcase_add_test(tc, test_grey_layout);
  tcase_add_test(tc, test_rgb_planes_and_clamping);
  tcase_add_test(tc, test_refusals);
  tcase_add_test(tc, test_normalize);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(image_grid_suite)
