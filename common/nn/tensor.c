#include "common/nn/tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"

/* IEEE binary16, a GCC/Clang extension on x86-64 (not ISO C). */
__extension__ typedef _Float16 an_half_t;

#define AN_TENSOR_MAX_BYTES ((size_t)64 << 30) /* 64 GiB: beyond any dataset here */

size_t an_dtype_size(an_dtype_t dtype) {
  return dtype == AN_DTYPE_F32 ? 4 : dtype == AN_DTYPE_F16 ? 2 : 1;
}

const char *an_dtype_name(an_dtype_t dtype) {
  return dtype == AN_DTYPE_F32 ? "float32" : dtype == AN_DTYPE_F16 ? "float16" : "uint8";
}

size_t an_tensor_numel(const an_tensor_t *t) {
  size_t n = 1;
  for (int i = 0; i < t->ndim; i++)
    n *= (size_t)t->shape[i];
  return n;
}

size_t an_tensor_item_size(const an_tensor_t *t) {
  return t->ndim ? an_tensor_numel(t) / (size_t)t->shape[0] : 1;
}

static int64_t an_tensor_channels(const an_tensor_t *t) { return t->ndim >= 2 ? t->shape[1] : 1; }

int an_tensor_init(an_tensor_t *t, an_dtype_t dtype, int ndim, const int64_t *shape) {
  size_t n = 1, bytes;
  memset(t, 0, sizeof *t);
  if (ndim < 1 || ndim > AN_TENSOR_MAX_DIMS || dtype < AN_DTYPE_F32 || dtype > AN_DTYPE_U8)
    return AN_EFORMAT;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] <= 0 || (uint64_t)shape[i] > AN_TENSOR_MAX_BYTES)
      return AN_EFORMAT;
    n *= (size_t)shape[i];
    if (n > AN_TENSOR_MAX_BYTES)
      return AN_ETOOBIG;
  }
  bytes = n * an_dtype_size(dtype);
  if (bytes > AN_TENSOR_MAX_BYTES)
    return AN_ETOOBIG;
  t->dtype = dtype;
  t->ndim = ndim;
  memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
  t->nbytes = bytes;
  t->data = aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!t->data)
    return UV_ENOMEM;
  memset(t->data, 0, bytes);
  if (dtype == AN_DTYPE_U8) {
    int64_t c = an_tensor_channels(t);
    t->scale = malloc((size_t)c * sizeof *t->scale);
    t->offset = malloc((size_t)c * sizeof *t->offset);
    if (!t->scale || !t->offset) {
      an_tensor_destroy(t);
      return UV_ENOMEM;
    }
    for (int64_t i = 0; i < c; i++) {
      t->scale[i] = 1.0f;
      t->offset[i] = 0.0f;
    }
  }
  return 0;
}

void an_tensor_destroy(an_tensor_t *t) {
  free(t->data);
  free(t->scale);
  free(t->offset);
  memset(t, 0, sizeof *t);
}

/* The compiler's _Float16 does the IEEE conversion (F16C where the CPU has it). */
uint16_t an_f16_from_f32(float f) {
  an_half_t v = (an_half_t)f;
  uint16_t h;
  memcpy(&h, &v, sizeof h);
  return h;
}

float an_f32_from_f16(uint16_t h) {
  an_half_t v;
  memcpy(&v, &h, sizeof v);
  return (float)v;
}

/* Whole arrays: with F16C (every x86-64 CPU since 2012) the conversions are
 * single instructions over 8 or 16 values instead of libgcc's soft-float
 * calls; the default clone keeps baseline x86-64 working. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define AN_F16_LOOP __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define AN_F16_LOOP
#endif

AN_F16_LOOP void an_f16_from_f32_n(uint16_t *dst, const float *src, size_t n) {
  an_half_t *d = (an_half_t *)(void *)dst;
  for (size_t i = 0; i < n; i++)
    d[i] = (an_half_t)src[i];
}

AN_F16_LOOP void an_f32_from_f16_n(float *dst, const uint16_t *src, size_t n) {
  const an_half_t *s = (const an_half_t *)(const void *)src;
  for (size_t i = 0; i < n; i++)
    dst[i] = (float)s[i];
}

static int an_tensor_range(const an_tensor_t *t, size_t first, size_t count) {
  size_t n = t->ndim ? (size_t)t->shape[0] : 0;
  return first <= n && count <= n - first ? 0 : AN_EFORMAT;
}

int an_tensor_read_f32(const an_tensor_t *t, size_t first, size_t count, float *out) {
  size_t item = an_tensor_item_size(t), n = count * item, base = first * item;
  size_t per_channel = item / (size_t)an_tensor_channels(t);
  if (an_tensor_range(t, first, count))
    return AN_EFORMAT;
  switch (t->dtype) {
  case AN_DTYPE_F32:
    memcpy(out, (const float *)t->data + base, n * sizeof *out);
    break;
  case AN_DTYPE_F16: {
    const an_half_t *src = (const an_half_t *)t->data + base;
    for (size_t i = 0; i < n; i++)
      out[i] = (float)src[i];
    break;
  }
  case AN_DTYPE_U8: {
    const uint8_t *src = (const uint8_t *)t->data + base;
    for (size_t i = 0; i < n; i++) {
      size_t c = (i % item) / per_channel;
      out[i] = src[i] * t->scale[c] + t->offset[c];
    }
    break;
  }
  }
  return 0;
}

int an_tensor_write_f32(an_tensor_t *t, size_t first, size_t count, const float *in) {
  size_t item = an_tensor_item_size(t), n = count * item, base = first * item;
  size_t per_channel = item / (size_t)an_tensor_channels(t);
  if (an_tensor_range(t, first, count))
    return AN_EFORMAT;
  switch (t->dtype) {
  case AN_DTYPE_F32:
    memcpy((float *)t->data + base, in, n * sizeof *in);
    break;
  case AN_DTYPE_F16: {
    an_half_t *dst = (an_half_t *)t->data + base;
    for (size_t i = 0; i < n; i++)
      dst[i] = (an_half_t)in[i];
    break;
  }
  case AN_DTYPE_U8: {
    uint8_t *dst = (uint8_t *)t->data + base;
    for (size_t i = 0; i < n; i++) {
      size_t c = (i % item) / per_channel;
      float q = (in[i] - t->offset[c]) / t->scale[c];
      q = isnan(q) ? 0.0f : q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q;
      dst[i] = (uint8_t)nearbyintf(q);
    }
    break;
  }
  }
  return 0;
}
