/* Image grids as PNG files: a batch of N x C x H x W float images laid out
 * as tiles, `cols` to a row, with a white gap between tiles. Used by
 * `audit` (originals above each attacker's reconstructions) and by the
 * commands that show decoded images or encoded channels. */
#ifndef AN_PUBLISHER_IMAGE_GRID_H
#define AN_PUBLISHER_IMAGE_GRID_H

#include <stddef.h>

/* Pixels of white between neighbouring tiles (none around the edge). */
#define AN_IMAGE_GRID_GAP 2

/* Writes `n` images (`images`: n x c x h x w float32, borrowed) to `path`
 * as an 8-bit PNG, atomically (PATH.tmp, fsync, rename). c is 1 (grey) or
 * 3 (RGB planes). Values are clamped to [0, 1] and scaled to 0..255,
 * rounding to nearest; NaN is drawn as 0. Tiles fill rows of `cols` left to
 * right; a short last row is padded with white.
 *
 * The picture is ceil(n/cols) * h + gaps pixels high and
 * min(n, cols) * w + gaps wide; either side over 65,535 pixels is refused.
 * Returns 0; UV_EINVAL for bad arguments (n or cols 0, c not 1 or 3, sizes
 * out of range); UV_ENOMEM; AN_EFORMAT if libpng fails; or a negated errno
 * from the file system. `err` says why. */
int an_image_grid_png(const char *path, const float *images, size_t n, int c, int h, int w,
                      int cols, char *err, size_t errlen);

/* Rescales `x[0..n)` in place so its minimum becomes 0 and its maximum 1,
 * for showing one encoded channel as a grey image. A constant (or empty)
 * array becomes 0.5 everywhere; non-finite values are ignored when finding
 * the range and become 0. */
void an_image_normalize(float *x, size_t n);

#endif
