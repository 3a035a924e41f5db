/* NumPy .npy files holding one plain array: float32, float16, uint8, float64
 * or int64, little-endian, C order, 0 to 8 dimensions.
 *
 *   "\x93NUMPY" | u8 major | u8 minor | header length (u16 for 1.0, u32 for
 *   2.0 and 3.0) | header: a Python dict literal, space-padded, '\n' | data
 *
 * Files are untrusted on read: the header is capped before it is allocated,
 * parsed by hand without evaluating anything, the shape is checked for
 * overflow against a size limit, and the data must fill the rest of the file
 * exactly. Errors name the file and the problem. */
#ifndef AN_NPY_H
#define AN_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "common/atomic_file.h"

typedef enum an_npy_dtype { AN_NPY_F32, AN_NPY_F16, AN_NPY_U8, AN_NPY_F64, AN_NPY_I64 } an_npy_dtype_t;

#define AN_NPY_MAX_DIMS 8

typedef struct an_npy {
  an_npy_dtype_t dtype;
  int ndim;                        /* 0 (a scalar) to AN_NPY_MAX_DIMS */
  int64_t shape[AN_NPY_MAX_DIMS];  /* each >= 0; unused entries are 0 */
  void *data;                      /* owned, little-endian, C order; freed by an_npy_free */
  size_t nbytes;                   /* an_npy_numel() * element size; may be 0 */
  void *map;                       /* set by an_npy_map: the whole file, read-only */
  size_t map_len;
} an_npy_t;

/* Reads a whole .npy file (format versions 1.0, 2.0 and 3.0) into `out`,
 * which the caller releases with an_npy_free (also safe after a failure).
 *
 * Accepts descr '<f4', '<f2', '<f8', '<i8' (or '=' / no mark: native is
 * little-endian), '|u1' (any mark), fortran_order False, and a shape of 0..8
 * non-negative dimensions. `max_bytes` caps the data size (0 = 4 GiB);
 * nothing larger is allocated.
 *
 * Returns 0; AN_EFORMAT for a malformed file (bad magic, broken header dict,
 * negative or overflowing shape, data shorter than the shape promises, or
 * trailing bytes); AN_EUNSUPPORTED for a valid file we cannot hold (another
 * version, dtype or byte order, Fortran order, more than 8 dimensions);
 * AN_ETOOBIG for a header over 64 KiB or data over `max_bytes`; UV_ENOMEM;
 * or a negated errno when the file cannot be opened or read. On failure
 * `err` says which file and what is wrong. */
int an_npy_read(const char *path, size_t max_bytes, an_npy_t *out, char *err, size_t errlen);

/* The same checks, but the data stays in the file: mapped read-only, so
 * arrays larger than memory (encoded datasets) can be read in slices. The
 * file must be a regular file that nobody truncates while it is mapped.
 * an_npy_free unmaps. */
int an_npy_map(const char *path, an_npy_t *out, char *err, size_t errlen);

/* Converts elements [first, first + count) of `a` (in C order) to float32:
 * float16 and float64 round to nearest, int64 to the nearest float. Returns 0,
 * or UV_EINVAL if the range is outside the array or the dtype is unknown
 * (nothing is written then). */
int an_npy_to_f32(const an_npy_t *a, size_t first, size_t count, float *out);

/* Frees the data and zeroes `a`. NULL and zeroed arrays are fine. */
void an_npy_free(an_npy_t *a);

/* Writes `data` (numel * element size bytes, little-endian, C order) as a
 * format 1.0 .npy file, atomically: PATH.tmp is written, fsync'ed and renamed
 * over `path`. The header is padded so the data starts on a 64-byte boundary,
 * as NumPy does. `data` may be NULL only if the array is empty.
 *
 * Returns 0; UV_EINVAL for a bad dtype, ndim, negative or overflowing shape;
 * UV_ENOMEM; or a negated errno from the file system (nothing is left at
 * `path` or PATH.tmp then). */
int an_npy_write(const char *path, an_npy_dtype_t dtype, int ndim, const int64_t *shape,
                 const void *data, char *err, size_t errlen);

/* The same, streamed: open with the final shape, append the data in any
 * number of pieces (C order), commit. Commit checks that exactly the
 * shape's bytes arrived; abort (or a failed append) leaves nothing behind.
 * Arrays larger than memory are written this way. */
typedef struct an_npy_writer {
  an_atomic_file_t file;
  size_t expected, written; /* data bytes */
} an_npy_writer_t;
int an_npy_writer_open(an_npy_writer_t *w, const char *path, an_npy_dtype_t dtype, int ndim,
                       const int64_t *shape, char *err, size_t errlen);
int an_npy_writer_append(an_npy_writer_t *w, const void *data, size_t nbytes, char *err,
                         size_t errlen);
int an_npy_writer_commit(an_npy_writer_t *w, char *err, size_t errlen);
void an_npy_writer_abort(an_npy_writer_t *w);

/* Number of elements: the product of the shape, 1 for a scalar. `a` must be
 * an array from an_npy_read (whose shape is known not to overflow). */
size_t an_npy_numel(const an_npy_t *a);

#endif
