/* Dense NCHW tensors for datasets: float32, float16, or uint8 with a
 * per-channel scale and offset (value = q * scale[c] + offset[c]). Encoded
 * datasets are stored compactly and converted to float32 a batch at a time
 * for training and inference. */
#ifndef AN_NN_TENSOR_H
#define AN_NN_TENSOR_H

#include <stddef.h>
#include <stdint.h>

typedef enum an_dtype { AN_DTYPE_F32 = 0, AN_DTYPE_F16 = 1, AN_DTYPE_U8 = 2 } an_dtype_t;

#define AN_TENSOR_MAX_DIMS 4

typedef struct an_tensor {
  an_dtype_t dtype;
  int ndim;
  int64_t shape[AN_TENSOR_MAX_DIMS]; /* N first; C is shape[1] when ndim >= 2 */
  void *data;                        /* owned; 64-byte aligned */
  size_t nbytes;
  float *scale, *offset;             /* uint8 only: one per channel; owned */
} an_tensor_t;

/* Allocates a zeroed tensor. Shapes must be positive and the total size
 * sane (AN_ETOOBIG otherwise). uint8 tensors start with scale 1, offset 0. */
int an_tensor_init(an_tensor_t *t, an_dtype_t dtype, int ndim, const int64_t *shape);
void an_tensor_destroy(an_tensor_t *t);

size_t an_tensor_numel(const an_tensor_t *t);
/* Values per item along dim 0 (C*H*W for NCHW). */
size_t an_tensor_item_size(const an_tensor_t *t);
size_t an_dtype_size(an_dtype_t dtype);
const char *an_dtype_name(an_dtype_t dtype);

/* Items [first, first + count) as float32 into out (count x item_size). */
int an_tensor_read_f32(const an_tensor_t *t, size_t first, size_t count, float *out);
/* Stores float32 items; float16 rounds to nearest even, uint8 quantises with
 * the tensor's scale and offset, saturating at 0 and 255. */
int an_tensor_write_f32(an_tensor_t *t, size_t first, size_t count, const float *in);

/* IEEE 754 binary16 conversions, round to nearest even. */
uint16_t an_f16_from_f32(float f);
float an_f32_from_f16(uint16_t h);
/* The same over arrays, vectorised where the CPU has F16C. */
void an_f16_from_f32_n(uint16_t *dst, const float *src, size_t n);
void an_f32_from_f16_n(float *dst, const uint16_t *src, size_t n);

#endif
