/* The ONNX operators. Each computes its output shapes from its inputs and
 * attributes (checking every number a file supplies), allocates, and then,
 * unless probing, computes the data. Matrix products go to oneDNN's sgemm;
 * convolutions are im2col + sgemm per group. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <uv.h>

#include "common/error.h"
#include "common/nn/onnx/conv_dnnl.h"
#include "common/nn/onnx/gemm_dnnl.h"
#include "common/nn/onnx/graph.h"
#include "common/nn/onnx/pool_dnnl.h"

#define AN_MAX_KERNEL 1024

/* ---- attributes ---- */

const Onnx__AttributeProto *an_oattr(const an_onode_t *n, const char *name) {
  for (size_t i = 0; i < n->proto->n_attribute; i++)
    if (n->proto->attribute[i]->name && strcmp(n->proto->attribute[i]->name, name) == 0)
      return n->proto->attribute[i];
  return NULL;
}

int64_t an_oattr_int(const an_onode_t *n, const char *name, int64_t def) {
  const Onnx__AttributeProto *a = an_oattr(n, name);
  return a && a->has_i ? a->i : def;
}

float an_oattr_float(const an_onode_t *n, const char *name, float def) {
  const Onnx__AttributeProto *a = an_oattr(n, name);
  return a && a->has_f ? a->f : def;
}

int an_oattr_ints(const an_onode_t *n, const char *name, int64_t *out, int max) {
  const Onnx__AttributeProto *a = an_oattr(n, name);
  if (!a)
    return 0;
  if (a->n_ints > (size_t)max)
    return -1;
  if (a->n_ints) /* an empty list may come with a NULL array */
    memcpy(out, a->ints, a->n_ints * sizeof *out);
  return (int)a->n_ints;
}

static int an_oattr_str_is(const an_onode_t *n, const char *name, const char *value) {
  const Onnx__AttributeProto *a = an_oattr(n, name);
  size_t len = strlen(value);
  return a && a->has_s && a->s.len == len && memcmp(a->s.data, value, len) == 0;
}

/* ---- small helpers ---- */

static int64_t an_opset(const an_oexec_t *x) { return x->m->opset; }

static int an_need_float(an_oexec_t *x, const an_oval_t *v, const char *what) {
  if (!v || v->dtype != AN_ONNX_FLOAT)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "%s must be float32", what);
  return 0;
}

static int an_axis(an_oexec_t *x, int64_t axis, int rank, int *out) {
  if (axis < -rank || axis >= rank)
    return an_oexec_fail(x, AN_EMODEL, "axis %lld is out of range for rank %d", (long long)axis,
                         rank);
  *out = (int)(axis < 0 ? axis + rank : axis);
  return 0;
}

/* The int64 contents of a small 1-D (or scalar) input, such as axes or a
 * shape. The data must be known (a constant, or computed from shapes). */
static int an_ints_of(an_oexec_t *x, const an_oval_t *v, int64_t *out, int max, int *n) {
  size_t count;
  if (!v || v->dtype != AN_ONNX_INT64 || v->ndim > 1)
    return an_oexec_fail(x, AN_EMODEL, "expected an int64 vector");
  if (!v->data) /* probing, and the values come from an input */
    return an_oexec_fail(x, AN_EUNKNOWN_SHAPE, "shape depends on input values");
  count = an_oval_numel(v);
  if (count > (size_t)max)
    return an_oexec_fail(x, AN_EMODEL, "an int64 vector of %zu values is too long", count);
  memcpy(out, v->data, count * sizeof *out);
  *n = (int)count;
  return 0;
}

static int an_copy_op(an_oexec_t *x, an_oval_t *in, an_oval_t *out, int ndim,
                      const int64_t *dims) {
  int rc = an_oexec_alloc(x, out, in->dtype, ndim, dims);
  if (rc || !out->data || !in->data)
    return rc;
  memcpy(out->data, in->data, an_oval_numel(in) * an_onnx_dtype_size(in->dtype));
  return 0;
}

/* ---- element-wise ---- */

static int op_identity(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  (void)n;
  return an_copy_op(x, in[0], out[0], in[0]->ndim, in[0]->dims);
}

/* Dropout is inference-only here. A training_mode baked into the model as
 * a constant is run as the identity, as ONNX Runtime's inference does (an
 * exporter's leftover must not make scoring random); a training_mode fed at
 * run time asks for training, which this runtime does not do. */
static int op_dropout(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int rc;
  if (n->n_in > 2 && n->in[2] >= 0 && !x->m->is_const[n->in[2]])
    return an_oexec_fail(x, AN_EUNSUPPORTED, "Dropout with a run-time training_mode");
  if ((rc = an_copy_op(x, in[0], out[0], in[0]->ndim, in[0]->dims)) != 0)
    return rc;
  if (n->n_out > 1 && out[1]) { /* the mask: all kept */
    if ((rc = an_oexec_alloc(x, out[1], AN_ONNX_BOOL, in[0]->ndim, in[0]->dims)) == 0 &&
        out[1]->data)
      memset(out[1]->data, 1, an_oval_numel(out[1]));
  }
  return rc;
}

typedef enum { UN_RELU, UN_LEAKY, UN_SIGMOID, UN_TANH, UN_CLIP } an_unary_t;

static int an_unary(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out,
                    an_unary_t kind) {
  float alpha = an_oattr_float(n, "alpha", 0.01f), lo = -INFINITY, hi = INFINITY;
  int rc;
  if ((rc = an_need_float(x, in[0], "the input")) != 0)
    return rc;
  if (kind == UN_CLIP) {
    if (an_opset(x) < 11) {
      lo = an_oattr_float(n, "min", -INFINITY);
      hi = an_oattr_float(n, "max", INFINITY);
    } else {
      for (int k = 1; k <= 2; k++) {
        if (n->n_in <= k || !in[k])
          continue;
        if (in[k]->dtype != AN_ONNX_FLOAT || an_oval_numel(in[k]) != 1)
          return an_oexec_fail(x, AN_EMODEL, "Clip bounds must be float scalars");
        if (!in[k]->data)
          continue; /* probing: only the shape matters */
        (k == 1 ? &lo : &hi)[0] = *(float *)in[k]->data;
      }
    }
  }
  /* Functions with f(0) = 0 keep a blocked layout's zero padding zero, so
   * they run on blocked tensors as they are; the others get row-major. */
  int keeps_zero = kind == UN_RELU || kind == UN_LEAKY || kind == UN_TANH ||
                   (kind == UN_CLIP && lo <= 0 && hi >= 0);
  if (in[0]->layout && !keeps_zero && (rc = an_oval_make_plain(x, in[0])) != 0)
    return rc;
  /* In place when this node is the input's last reader. */
  if (!an_oexec_steal(x, n, 0, in[0], out[0]) &&
      ((rc = in[0]->layout ? an_oexec_alloc_blocked(x, out[0], in[0]->ndim, in[0]->dims,
                                                    in[0]->layout)
                           : an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, in[0]->ndim,
                                            in[0]->dims)) ||
       !out[0]->data))
    return rc;
  const float *a = in[0]->data ? in[0]->data : out[0]->data;
  float *y = out[0]->data;
  size_t count = out[0]->layout ? out[0]->bytes / sizeof(float) : an_oval_numel(out[0]);
  /* One loop per kind, so each vectorises. */
  switch (kind) {
  case UN_RELU:
#pragma omp parallel for simd schedule(static) if (parallel : count > 65536)
    for (size_t i = 0; i < count; i++)
      y[i] = a[i] <= 0 ? 0 : a[i]; /* NaN stays NaN, as in numpy and PyTorch */
    break;
  case UN_LEAKY:
#pragma omp parallel for simd schedule(static) if (parallel : count > 65536)
    for (size_t i = 0; i < count; i++)
      y[i] = a[i] >= 0 ? a[i] : alpha * a[i];
    break;
  case UN_SIGMOID:
#pragma omp parallel for schedule(static) if (count > 65536)
    for (size_t i = 0; i < count; i++)
      y[i] = 1.0f / (1.0f + expf(-a[i]));
    break;
  case UN_TANH:
#pragma omp parallel for schedule(static) if (count > 65536)
    for (size_t i = 0; i < count; i++)
      y[i] = tanhf(a[i]);
    break;
  case UN_CLIP:
#pragma omp parallel for simd schedule(static) if (parallel : count > 65536)
    for (size_t i = 0; i < count; i++)
      y[i] = a[i] < lo ? lo : a[i] > hi ? hi : a[i];
    break;
  }
  return 0;
}

static int op_relu(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_unary(x, n, in, out, UN_RELU);
}
static int op_leaky(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_unary(x, n, in, out, UN_LEAKY);
}
static int op_sigmoid(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_unary(x, n, in, out, UN_SIGMOID);
}
static int op_tanh(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_unary(x, n, in, out, UN_TANH);
}
static int op_clip(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_unary(x, n, in, out, UN_CLIP);
}

/* Numpy broadcasting of two shapes. */
static int an_broadcast(an_oexec_t *x, const an_oval_t *a, const an_oval_t *b, int *ndim,
                        int64_t *dims) {
  int r = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < r; i++) {
    int64_t da = i < r - a->ndim ? 1 : a->dims[i - (r - a->ndim)];
    int64_t db = i < r - b->ndim ? 1 : b->dims[i - (r - b->ndim)];
    if (da != db && da != 1 && db != 1)
      return an_oexec_fail(x, AN_EMODEL, "shapes do not broadcast (%lld vs %lld)", (long long)da,
                           (long long)db);
    dims[i] = da == 1 ? db : da;
  }
  *ndim = r;
  return 0;
}

/* Offset into v of the broadcast output position `idx` (row-major over dims). */
static size_t an_bcast_offset(const an_oval_t *v, int r, const int64_t *dims, size_t idx) {
  size_t off = 0, stride = 1;
  for (int i = r - 1; i >= 0; i--) {
    int64_t pos = (int64_t)(idx % (size_t)dims[i]);
    idx /= (size_t)dims[i];
    int vi = i - (r - v->ndim);
    if (vi >= 0) {
      if (v->dims[vi] != 1)
        off += (size_t)pos * stride;
      stride *= (size_t)v->dims[vi];
    }
  }
  return off;
}

typedef enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV } an_binary_t;

static int an_binary(an_oexec_t *x, an_oval_t **in, an_oval_t **out, an_binary_t kind) {
  int64_t dims[AN_ONNX_MAX_DIMS];
  int r = 0, rc, same;
  if (in[0]->dtype != in[1]->dtype ||
      (in[0]->dtype != AN_ONNX_FLOAT && in[0]->dtype != AN_ONNX_INT64))
    return an_oexec_fail(x, AN_EUNSUPPORTED, "arithmetic on these types");
  if ((rc = an_broadcast(x, in[0], in[1], &r, dims)) != 0 ||
      (rc = an_oexec_alloc(x, out[0], in[0]->dtype, r, dims)) != 0 || !out[0]->data)
    return rc;
  size_t count = an_oval_numel(out[0]);
  same = in[0]->ndim == r && in[1]->ndim == r && an_oval_numel(in[0]) == count &&
         an_oval_numel(in[1]) == count;
  if (in[0]->dtype == AN_ONNX_FLOAT) {
    const float *a = in[0]->data, *b = in[1]->data;
    float *y = out[0]->data;
#pragma omp parallel for schedule(static) if (count > 65536)
    for (size_t i = 0; i < count; i++) {
      float u = a[same ? i : an_bcast_offset(in[0], r, dims, i)];
      float v = b[same ? i : an_bcast_offset(in[1], r, dims, i)];
      y[i] = kind == BIN_ADD ? u + v : kind == BIN_SUB ? u - v : kind == BIN_MUL ? u * v : u / v;
    }
  } else {
    const int64_t *a = in[0]->data, *b = in[1]->data;
    int64_t *y = out[0]->data;
    for (size_t i = 0; i < count; i++) {
      int64_t u = a[same ? i : an_bcast_offset(in[0], r, dims, i)];
      int64_t v = b[same ? i : an_bcast_offset(in[1], r, dims, i)];
      if (kind == BIN_DIV && (v == 0 || (u == INT64_MIN && v == -1)))
        return an_oexec_fail(x, AN_EMODEL, "integer division by zero or overflow");
      /* Wrapping arithmetic, done unsigned so overflow is defined. */
      y[i] = kind == BIN_ADD   ? (int64_t)((uint64_t)u + (uint64_t)v)
             : kind == BIN_SUB ? (int64_t)((uint64_t)u - (uint64_t)v)
             : kind == BIN_MUL ? (int64_t)((uint64_t)u * (uint64_t)v)
                               : u / v;
    }
  }
  return 0;
}

/* Add of two tensors in the same blocked layout (a residual connection
 * between convolutions): element by element over the padded buffers, whose
 * padding is zero in both, in place in an operand this node reads last. */
static int an_add_blocked(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int rc;
  if (!an_oexec_steal(x, n, 0, in[0], out[0]) && !an_oexec_steal(x, n, 1, in[1], out[0]) &&
      (rc = an_oexec_alloc_blocked(x, out[0], in[0]->ndim, in[0]->dims, in[0]->layout)) != 0)
    return rc;
  const float *a = in[0]->data ? in[0]->data : out[0]->data;
  const float *b = in[1]->data ? in[1]->data : out[0]->data;
  float *y = out[0]->data;
  size_t count = out[0]->bytes / sizeof(float);
#pragma omp parallel for simd schedule(static) if (parallel : count > 65536)
  for (size_t i = 0; i < count; i++)
    y[i] = a[i] + b[i];
  return 0;
}

static int op_add(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int rc;
  if (in[0]->layout || in[1]->layout) {
    if (in[0]->layout && in[1]->layout && in[0]->ndim == in[1]->ndim &&
        memcmp(in[0]->dims, in[1]->dims, sizeof in[0]->dims) == 0 &&
        dnnl_memory_desc_equal(&in[0]->layout->md, &in[1]->layout->md))
      return an_add_blocked(x, n, in, out);
    if ((rc = an_oval_make_plain(x, in[0])) != 0 || (rc = an_oval_make_plain(x, in[1])) != 0)
      return rc;
  }
  return an_binary(x, in, out, BIN_ADD);
}
static int op_sub(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  (void)n;
  return an_binary(x, in, out, BIN_SUB);
}
static int op_mul(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  (void)n;
  return an_binary(x, in, out, BIN_MUL);
}
static int op_div(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  (void)n;
  return an_binary(x, in, out, BIN_DIV);
}

/* ---- shape manipulation ---- */

static int op_reshape(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t shape[AN_ONNX_MAX_DIMS];
  int k = 0, rc, infer = -1, allowzero = (int)an_oattr_int(n, "allowzero", 0);
  size_t known = 1, total = an_oval_numel(in[0]);
  if (an_opset(x) < 5)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "Reshape before opset 5");
  if ((rc = an_ints_of(x, in[1], shape, AN_ONNX_MAX_DIMS, &k)) != 0)
    return rc;
  for (int i = 0; i < k; i++) {
    if (shape[i] == 0 && !allowzero) {
      if (i >= in[0]->ndim)
        return an_oexec_fail(x, AN_EMODEL, "Reshape copies dimension %d, which is missing", i);
      shape[i] = in[0]->dims[i];
    }
    if (shape[i] == -1) {
      if (infer >= 0)
        return an_oexec_fail(x, AN_EMODEL, "Reshape with two -1 dimensions");
      infer = i;
      continue;
    }
    if (shape[i] < 0)
      return an_oexec_fail(x, AN_EMODEL, "Reshape to a negative dimension");
    known *= (size_t)shape[i];
  }
  if (infer >= 0) {
    if (known == 0 || total % known)
      return an_oexec_fail(x, AN_EMODEL, "Reshape cannot infer a dimension");
    shape[infer] = (int64_t)(total / known);
  } else if (known != total) {
    return an_oexec_fail(x, AN_EMODEL, "Reshape from %zu to %zu values", total, known);
  }
  return an_copy_op(x, in[0], out[0], k, shape);
}

static int op_flatten(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t axis = an_oattr_int(n, "axis", 1), dims[2] = {1, 1};
  int r = in[0]->ndim;
  if (axis < -r || axis > r)
    return an_oexec_fail(x, AN_EMODEL, "Flatten axis %lld out of range", (long long)axis);
  if (axis < 0)
    axis += r;
  for (int i = 0; i < r; i++)
    dims[i < axis ? 0 : 1] *= in[0]->dims[i];
  return an_copy_op(x, in[0], out[0], 2, dims);
}

static int op_shape(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int r = in[0]->ndim, rc;
  int64_t start = an_oattr_int(n, "start", 0), end = an_oattr_int(n, "end", r), len;
  start = start < 0 ? start + r : start;
  end = end < 0 ? end + r : end;
  start = start < 0 ? 0 : start > r ? r : start;
  end = end < 0 ? 0 : end > r ? r : end;
  len = end > start ? end - start : 0;
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_INT64, 1, &len)) != 0)
    return rc;
  memcpy(out[0]->data, in[0]->dims + start, (size_t)len * sizeof(int64_t));
  return 0;
}

static int op_gather(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int axis = 0, rc, r = in[0]->ndim, q = in[1]->ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];
  if (in[1]->dtype != AN_ONNX_INT64)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "Gather indices must be int64");
  if ((rc = an_axis(x, an_oattr_int(n, "axis", 0), r, &axis)) != 0)
    return rc;
  if (r + q - 1 > AN_ONNX_MAX_DIMS)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "Gather result rank too high");
  int o = 0;
  for (int i = 0; i < axis; i++)
    dims[o++] = in[0]->dims[i];
  for (int i = 0; i < q; i++)
    dims[o++] = in[1]->dims[i];
  for (int i = axis + 1; i < r; i++)
    dims[o++] = in[0]->dims[i];
  if ((rc = an_oexec_alloc(x, out[0], in[0]->dtype, o, dims)) != 0 || !out[0]->data)
    return rc;
  size_t outer = 1, inner = 1, esz = an_onnx_dtype_size(in[0]->dtype);
  size_t nidx = an_oval_numel(in[1]);
  int64_t len = in[0]->dims[axis];
  const int64_t *idx = in[1]->data;
  for (int i = 0; i < axis; i++)
    outer *= (size_t)in[0]->dims[i];
  for (int i = axis + 1; i < r; i++)
    inner *= (size_t)in[0]->dims[i];
  for (size_t j = 0; j < nidx; j++)
    if (idx[j] < -len || idx[j] >= len)
      return an_oexec_fail(x, AN_EMODEL, "Gather index %lld out of range", (long long)idx[j]);
  for (size_t a = 0; a < outer; a++)
    for (size_t j = 0; j < nidx; j++) {
      int64_t k = idx[j] < 0 ? idx[j] + len : idx[j];
      memcpy((char *)out[0]->data + ((a * nidx + j) * inner) * esz,
             (char *)in[0]->data + ((a * (size_t)len + (size_t)k) * inner) * esz, inner * esz);
    }
  return 0;
}

/* Axes for Squeeze/Unsqueeze: an attribute before opset 13, an input after. */
static int an_axes(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, int64_t *axes, int *k) {
  if (an_opset(x) < 13) {
    *k = an_oattr_ints(n, "axes", axes, AN_ONNX_MAX_DIMS);
    return *k < 0 ? an_oexec_fail(x, AN_EMODEL, "too many axes") : 0;
  }
  *k = 0;
  return n->n_in > 1 && in[1] ? an_ints_of(x, in[1], axes, AN_ONNX_MAX_DIMS, k) : 0;
}

static int op_unsqueeze(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t axes[AN_ONNX_MAX_DIMS], dims[AN_ONNX_MAX_DIMS];
  int k = 0, rc, r;
  unsigned char is_new[AN_ONNX_MAX_DIMS] = {0};
  if ((rc = an_axes(x, n, in, axes, &k)) != 0)
    return rc;
  r = in[0]->ndim + k;
  if (k == 0 || r > AN_ONNX_MAX_DIMS)
    return an_oexec_fail(x, AN_EMODEL, "Unsqueeze needs 1 to %d axes", AN_ONNX_MAX_DIMS);
  for (int i = 0; i < k; i++) {
    int a = 0;
    if ((rc = an_axis(x, axes[i], r, &a)) != 0)
      return rc;
    if (is_new[a])
      return an_oexec_fail(x, AN_EMODEL, "Unsqueeze axis repeated");
    is_new[a] = 1;
  }
  for (int i = 0, j = 0; i < r; i++)
    dims[i] = is_new[i] ? 1 : in[0]->dims[j++];
  return an_copy_op(x, in[0], out[0], r, dims);
}

static int op_squeeze(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t axes[AN_ONNX_MAX_DIMS], dims[AN_ONNX_MAX_DIMS];
  int k = 0, rc, r = in[0]->ndim, o = 0;
  unsigned char drop[AN_ONNX_MAX_DIMS] = {0};
  if ((rc = an_axes(x, n, in, axes, &k)) != 0)
    return rc;
  for (int i = 0; i < k; i++) {
    int a = 0;
    if ((rc = an_axis(x, axes[i], r, &a)) != 0)
      return rc;
    if (in[0]->dims[a] != 1)
      return an_oexec_fail(x, AN_EMODEL, "Squeeze of a dimension that is not 1");
    drop[a] = 1;
  }
  for (int i = 0; i < r; i++)
    if (!(k ? drop[i] : in[0]->dims[i] == 1))
      dims[o++] = in[0]->dims[i];
  return an_copy_op(x, in[0], out[0], o, dims);
}

static int op_concat(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int axis = 0, rc, r = in[0]->ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];
  if ((rc = an_axis(x, an_oattr_int(n, "axis", 0), r, &axis)) != 0)
    return rc;
  memcpy(dims, in[0]->dims, sizeof dims);
  dims[axis] = 0;
  for (int k = 0; k < n->n_in; k++) {
    if (!in[k] || in[k]->ndim != r || in[k]->dtype != in[0]->dtype)
      return an_oexec_fail(x, AN_EMODEL, "Concat inputs differ in rank or type");
    for (int i = 0; i < r; i++)
      if (i != axis && in[k]->dims[i] != in[0]->dims[i])
        return an_oexec_fail(x, AN_EMODEL, "Concat inputs differ in shape");
    dims[axis] += in[k]->dims[axis];
  }
  if ((rc = an_oexec_alloc(x, out[0], in[0]->dtype, r, dims)) != 0 || !out[0]->data)
    return rc;
  size_t outer = 1, inner = 1, esz = an_onnx_dtype_size(in[0]->dtype), off = 0;
  for (int i = 0; i < axis; i++)
    outer *= (size_t)dims[i];
  for (int i = axis + 1; i < r; i++)
    inner *= (size_t)dims[i];
  for (int k = 0; k < n->n_in; k++) {
    size_t chunk = (size_t)in[k]->dims[axis] * inner * esz;
    for (size_t a = 0; a < outer; a++)
      memcpy((char *)out[0]->data + a * (size_t)dims[axis] * inner * esz + off,
             (char *)in[k]->data + a * chunk, chunk);
    off += chunk;
  }
  return 0;
}

static int op_transpose(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t perm[AN_ONNX_MAX_DIMS], dims[AN_ONNX_MAX_DIMS];
  int r = in[0]->ndim, k = an_oattr_ints(n, "perm", perm, AN_ONNX_MAX_DIMS), rc;
  unsigned char seen[AN_ONNX_MAX_DIMS] = {0};
  if (k == 0) {
    k = r;
    for (int i = 0; i < r; i++)
      perm[i] = r - 1 - i;
  }
  if (k != r)
    return an_oexec_fail(x, AN_EMODEL, "Transpose perm does not match the rank");
  for (int i = 0; i < r; i++) {
    if (perm[i] < 0 || perm[i] >= r || seen[perm[i]]++)
      return an_oexec_fail(x, AN_EMODEL, "Transpose perm is not a permutation");
    dims[i] = in[0]->dims[perm[i]];
  }
  if ((rc = an_oexec_alloc(x, out[0], in[0]->dtype, r, dims)) != 0 || !out[0]->data)
    return rc;
  size_t count = an_oval_numel(in[0]), esz = an_onnx_dtype_size(in[0]->dtype);
  size_t in_stride[AN_ONNX_MAX_DIMS];
  size_t stride = 1;
  for (int i = r - 1; i >= 0; i--) {
    in_stride[i] = stride;
    stride *= (size_t)in[0]->dims[i];
  }
  for (size_t idx = 0; idx < count; idx++) {
    size_t rem = idx, src = 0;
    for (int i = r - 1; i >= 0; i--) {
      src += (rem % (size_t)dims[i]) * in_stride[perm[i]];
      rem /= (size_t)dims[i];
    }
    memcpy((char *)out[0]->data + idx * esz, (char *)in[0]->data + src * esz, esz);
  }
  return 0;
}

/* ---- normalisation and reductions ---- */

static int an_softmax(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out,
                      int log_form) {
  int r = in[0]->ndim, axis = 0, rc;
  int64_t def = an_opset(x) < 13 ? 1 : -1;
  if ((rc = an_need_float(x, in[0], "Softmax input")) != 0 ||
      (rc = an_axis(x, an_oattr_int(n, "axis", def), r ? r : 1, &axis)) != 0 ||
      (rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, r, in[0]->dims)) != 0 || !out[0]->data)
    return rc;
  size_t outer = 1, len = 1, inner = 1;
  if (an_opset(x) < 13) { /* coerced to 2-D at the axis */
    for (int i = 0; i < r; i++)
      *(i < axis ? &outer : &len) *= (size_t)in[0]->dims[i];
  } else {
    for (int i = 0; i < r; i++)
      *(i < axis ? &outer : i == axis ? &len : &inner) *= (size_t)in[0]->dims[i];
  }
  const float *a = in[0]->data;
  float *y = out[0]->data;
  for (size_t o = 0; o < outer; o++)
    for (size_t k = 0; k < inner; k++) {
      const float *src = a + o * len * inner + k;
      float *dst = y + o * len * inner + k;
      float mx = -INFINITY;
      double sum = 0;
      for (size_t i = 0; i < len; i++)
        mx = src[i * inner] > mx ? src[i * inner] : mx;
      for (size_t i = 0; i < len; i++)
        sum += exp((double)src[i * inner] - mx);
      for (size_t i = 0; i < len; i++)
        dst[i * inner] = log_form ? (float)(src[i * inner] - mx - log(sum))
                                  : (float)(exp((double)src[i * inner] - mx) / sum);
    }
  return 0;
}

static int op_softmax(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_softmax(x, n, in, out, 0);
}
static int op_logsoftmax(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_softmax(x, n, in, out, 1);
}

static int op_reducemean(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t axes[AN_ONNX_MAX_DIMS], dims[AN_ONNX_MAX_DIMS];
  int k = an_oattr_ints(n, "axes", axes, AN_ONNX_MAX_DIMS), r = in[0]->ndim, rc, o = 0;
  int keep = (int)an_oattr_int(n, "keepdims", 1);
  unsigned char red[AN_ONNX_MAX_DIMS] = {0};
  if ((rc = an_need_float(x, in[0], "ReduceMean input")) != 0)
    return rc;
  if (k < 0)
    return an_oexec_fail(x, AN_EMODEL, "too many axes");
  for (int i = 0; i < k; i++) {
    int a = 0;
    if ((rc = an_axis(x, axes[i], r, &a)) != 0)
      return rc;
    red[a] = 1;
  }
  for (int i = 0; i < r; i++) {
    if (k == 0)
      red[i] = 1;
    if (!red[i])
      dims[o++] = in[0]->dims[i];
    else if (keep)
      dims[o++] = 1;
  }
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, o, dims)) != 0 || !out[0]->data)
    return rc;
  size_t count = an_oval_numel(in[0]), outn = an_oval_numel(out[0]), per = outn ? count / outn : 0;
  double *acc = calloc(outn + 1, sizeof *acc);
  if (!acc)
    return an_oexec_fail(x, UV_ENOMEM, "out of memory");
  const float *a = in[0]->data;
  for (size_t idx = 0; idx < count; idx++) {
    size_t rem = idx, dst = 0, mul = 1;
    for (int i = r - 1; i >= 0; i--) {
      size_t pos = rem % (size_t)in[0]->dims[i];
      rem /= (size_t)in[0]->dims[i];
      if (!red[i]) {
        dst += pos * mul;
        mul *= (size_t)in[0]->dims[i];
      }
    }
    acc[dst] += a[idx];
  }
  for (size_t i = 0; i < outn; i++)
    ((float *)out[0]->data)[i] = per ? (float)(acc[i] / (double)per) : NAN;
  free(acc);
  return 0;
}

/* Inference uses the running statistics. A model exported in training mode
 * (training_mode=1, opset 14+) normalises with the batch's own statistics,
 * as ONNX specifies and ONNX Runtime does; the running-statistics outputs, if
 * asked for, are updated with the given momentum. */
static int op_batchnorm(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  float eps = an_oattr_float(n, "epsilon", 1e-5f), mom = an_oattr_float(n, "momentum", 0.9f);
  int train = (int)an_oattr_int(n, "training_mode", 0), rc;
  if (an_opset(x) < 14 && n->n_out > 1)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "BatchNormalization training outputs before opset 14");
  if (n->n_out > 3)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "BatchNormalization saved statistics outputs");
  if (n->n_out > 1 && !train)
    return an_oexec_fail(x, AN_EMODEL, "BatchNormalization statistics outputs need training_mode");
  if (an_opset(x) < 9 && an_oattr_int(n, "spatial", 1) != 1)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "BatchNormalization with spatial=0");
  for (int k = 0; k < 5; k++)
    if ((rc = an_need_float(x, in[k], "BatchNormalization inputs")) != 0)
      return rc;
  if (in[0]->ndim < 2)
    return an_oexec_fail(x, AN_EMODEL, "BatchNormalization needs N x C x ...");
  int64_t c = in[0]->dims[1];
  for (int k = 1; k < 5; k++)
    if (in[k]->ndim != 1 || in[k]->dims[0] != c)
      return an_oexec_fail(x, AN_EMODEL, "BatchNormalization parameters must have C values");
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, in[0]->ndim, in[0]->dims)) != 0)
    return rc;
  for (int k = 1; k < n->n_out; k++)
    if (out[k] && (rc = an_oexec_alloc(x, out[k], AN_ONNX_FLOAT, 1, &c)) != 0)
      return rc;
  if (!out[0]->data)
    return 0;
  size_t hw = 1, nb = (size_t)in[0]->dims[0];
  for (int i = 2; i < in[0]->ndim; i++)
    hw *= (size_t)in[0]->dims[i];
  const float *a = in[0]->data, *scale = in[1]->data, *bias = in[2]->data;
  const float *rmean = in[3]->data, *rvar = in[4]->data;
  float *y = out[0]->data;
#pragma omp parallel for schedule(static) if (c > 1 && (size_t)c * nb * hw > 65536)
  for (int64_t ch = 0; ch < c; ch++) {
    double mean = rmean[ch], var = rvar[ch];
    if (train) { /* batch statistics, biased variance */
      double sum = 0, sq = 0, cnt = (double)nb * (double)hw;
      for (size_t b = 0; b < nb; b++)
        for (size_t i = 0; i < hw; i++) {
          double v = a[(b * (size_t)c + (size_t)ch) * hw + i];
          sum += v;
          sq += v * v;
        }
      mean = cnt > 0 ? sum / cnt : 0;
      var = cnt > 0 ? sq / cnt - mean * mean : 0;
      var = var < 0 ? 0 : var;
      if (n->n_out > 1 && out[1])
        ((float *)out[1]->data)[ch] = (float)(rmean[ch] * mom + mean * (1 - mom));
      if (n->n_out > 2 && out[2])
        ((float *)out[2]->data)[ch] = (float)(rvar[ch] * mom + var * (1 - mom));
    }
    float s = (float)(scale[ch] / sqrt(var + eps)), t = (float)(bias[ch] - mean * s);
    for (size_t b = 0; b < nb; b++) {
      size_t base = (b * (size_t)c + (size_t)ch) * hw;
      for (size_t i = 0; i < hw; i++)
        y[base + i] = a[base + i] * s + t;
    }
  }
  return 0;
}

/* ---- matrix products ---- */

static int an_sgemm(an_oexec_t *x, char ta, char tb, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                    float *c, int64_t ldc) {
  if (m == 0 || n == 0)
    return 0;
  if (k == 0) { /* an empty sum */
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++)
        c[i * ldc + j] *= beta;
    return 0;
  }
  if (dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) != dnnl_success)
    return an_oexec_fail(x, AN_EMODEL, "matrix product failed");
  return 0;
}

static int op_gemm(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int ta = (int)an_oattr_int(n, "transA", 0), tb = (int)an_oattr_int(n, "transB", 0), rc;
  float alpha = an_oattr_float(n, "alpha", 1.0f), beta = an_oattr_float(n, "beta", 1.0f);
  if ((rc = an_need_float(x, in[0], "Gemm A")) || (rc = an_need_float(x, in[1], "Gemm B")))
    return rc;
  if (in[0]->ndim != 2 || in[1]->ndim != 2)
    return an_oexec_fail(x, AN_EMODEL, "Gemm needs 2-D A and B");
  int64_t M = in[0]->dims[ta ? 1 : 0], K = in[0]->dims[ta ? 0 : 1];
  int64_t K2 = in[1]->dims[tb ? 1 : 0], N = in[1]->dims[tb ? 0 : 1], dims[2] = {M, N};
  if (K != K2)
    return an_oexec_fail(x, AN_EMODEL, "Gemm inner sizes %lld and %lld differ", (long long)K,
                         (long long)K2);
  const an_oval_t *c = n->n_in > 2 ? in[2] : NULL;
  if (c) {
    an_oval_t target = {.dtype = AN_ONNX_FLOAT, .ndim = 2, .dims = {M, N}};
    int rr = 0;
    int64_t bd[AN_ONNX_MAX_DIMS];
    if ((rc = an_need_float(x, c, "Gemm C")) || (rc = an_broadcast(x, &target, c, &rr, bd)))
      return rc;
    if (rr != 2 || bd[0] != M || bd[1] != N)
      return an_oexec_fail(x, AN_EMODEL, "Gemm C does not broadcast to M x N");
  }
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, 2, dims)) != 0 || !out[0]->data)
    return rc;
  float *y = out[0]->data;
  /* A fully connected layer (constant B, a bias row or none, no scaling):
   * oneDNN's matmul with B packed once. */
  int b_const = n->in[1] >= 0 && x->m->is_const[n->in[1]];
  int bias_row = !c || (c->ndim == 1 && c->dims[0] == N && beta == 1.0f);
  if (b_const && bias_row && !ta && alpha == 1.0f) {
    an_gemm_args_t ga = {.m = M, .k = K, .n = N, .trans_b = tb, .a = in[0]->data,
                         .b = in[1]->data, .bias = c ? c->data : NULL, .y = y};
    if ((rc = an_gemm_dnnl(x, (an_onode_t *)n, &ga)) != AN_EUNSUPPORTED)
      return rc;
  }
  for (int64_t i = 0; i < M * N; i++)
    y[i] = c ? ((const float *)c->data)[an_bcast_offset(c, 2, dims, (size_t)i)] : 0.0f;
  return an_sgemm(x, ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, in[0]->data,
                  in[0]->dims[1], in[1]->data, in[1]->dims[1], c ? beta : 0.0f, y, N);
}

static int op_matmul(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  an_oval_t a = *in[0], b = *in[1], ba, bb;
  int64_t dims[AN_ONNX_MAX_DIMS];
  int rc, r = 0;
  (void)n;
  if ((rc = an_need_float(x, in[0], "MatMul A")) || (rc = an_need_float(x, in[1], "MatMul B")))
    return rc;
  if (a.ndim == 0 || b.ndim == 0)
    return an_oexec_fail(x, AN_EMODEL, "MatMul of a scalar");
  int a1 = a.ndim == 1, b1 = b.ndim == 1;
  if (a1) { /* numpy: a vector is a 1 x K matrix, the 1 dropped afterwards */
    a.ndim = 2, a.dims[1] = a.dims[0], a.dims[0] = 1;
  }
  if (b1)
    b.ndim = 2, b.dims[1] = 1;
  int64_t M = a.dims[a.ndim - 2], K = a.dims[a.ndim - 1], N = b.dims[b.ndim - 1];
  if (b.dims[b.ndim - 2] != K)
    return an_oexec_fail(x, AN_EMODEL, "MatMul inner sizes differ");
  ba = a, bb = b;
  ba.ndim -= 2, bb.ndim -= 2;
  if ((rc = an_broadcast(x, &ba, &bb, &r, dims)) != 0)
    return rc;
  if (r + 2 > AN_ONNX_MAX_DIMS)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "MatMul rank too high");
  size_t batches = 1;
  for (int i = 0; i < r; i++)
    batches *= (size_t)dims[i];
  int o = r;
  if (!a1)
    dims[o++] = M;
  if (!b1)
    dims[o++] = N;
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, o, dims)) != 0 || !out[0]->data)
    return rc;
  for (size_t i = 0; i < batches; i++) {
    if ((rc = an_oexec_check_time(x)) != 0)
      return rc;
    size_t oa = ba.ndim ? an_bcast_offset(&ba, r, dims, i) : 0;
    size_t ob = bb.ndim ? an_bcast_offset(&bb, r, dims, i) : 0;
    if ((rc = an_sgemm(x, 'N', 'N', M, N, K, 1.0f, (const float *)a.data + oa * (size_t)(M * K),
                       K, (const float *)b.data + ob * (size_t)(K * N), N, 0.0f,
                       (float *)out[0]->data + i * (size_t)(M * N), N)) != 0)
      return rc;
  }
  return 0;
}

/* ---- convolution and pooling (2-D, NCHW) ---- */

typedef struct an_window {
  int64_t k[2], s[2], d[2], pb[2], pe[2]; /* kernel, stride, dilation, pad begin/end */
  int64_t out[2];
} an_window_t;

/* Reads kernel/stride/dilation/pads/auto_pad and computes output sizes.
 * `transposed` computes ConvTranspose's sizes. */
static int an_window_init(an_oexec_t *x, const an_onode_t *n, const int64_t in_hw[2],
                          const int64_t *kernel, int ceil_mode, int transposed, an_window_t *w) {
  int64_t v[4];
  int k;
  for (int i = 0; i < 2; i++) {
    w->k[i] = kernel[i];
    w->s[i] = w->d[i] = 1;
    w->pb[i] = w->pe[i] = 0;
  }
  if ((k = an_oattr_ints(n, "strides", v, 4)) != 0) {
    if (k != 2)
      return an_oexec_fail(x, AN_EUNSUPPORTED, "only 2-D windows are supported");
    w->s[0] = v[0], w->s[1] = v[1];
  }
  if ((k = an_oattr_ints(n, "dilations", v, 4)) != 0) {
    if (k != 2)
      return an_oexec_fail(x, AN_EUNSUPPORTED, "only 2-D windows are supported");
    w->d[0] = v[0], w->d[1] = v[1];
  }
  if ((k = an_oattr_ints(n, "pads", v, 4)) != 0) {
    if (k != 4)
      return an_oexec_fail(x, AN_EMODEL, "pads needs 4 values for 2-D");
    w->pb[0] = v[0], w->pb[1] = v[1], w->pe[0] = v[2], w->pe[1] = v[3];
  }
  for (int i = 0; i < 2; i++)
    if (w->k[i] < 1 || w->k[i] > AN_MAX_KERNEL || w->s[i] < 1 || w->s[i] > AN_MAX_KERNEL ||
        w->d[i] < 1 || w->d[i] > AN_MAX_KERNEL || w->pb[i] < 0 || w->pe[i] < 0 ||
        w->pb[i] > AN_MAX_KERNEL || w->pe[i] > AN_MAX_KERNEL)
      return an_oexec_fail(x, AN_EMODEL, "absurd kernel, stride, dilation or padding");
  int same = an_oattr_str_is(n, "auto_pad", "SAME_UPPER") || an_oattr_str_is(n, "auto_pad", "SAME_LOWER");
  if (!same && !an_oattr_str_is(n, "auto_pad", "VALID") && an_oattr(n, "auto_pad") &&
      !an_oattr_str_is(n, "auto_pad", "NOTSET"))
    return an_oexec_fail(x, AN_EMODEL, "unknown auto_pad value");
  for (int i = 0; i < 2; i++) {
    int64_t ek = (w->k[i] - 1) * w->d[i] + 1;
    if (transposed) {
      if (an_oattr(n, "auto_pad") && !an_oattr_str_is(n, "auto_pad", "NOTSET"))
        return an_oexec_fail(x, AN_EUNSUPPORTED, "ConvTranspose with auto_pad");
      continue;
    }
    if (same) {
      int64_t o = (in_hw[i] + w->s[i] - 1) / w->s[i];
      int64_t total = (o - 1) * w->s[i] + ek - in_hw[i];
      total = total < 0 ? 0 : total;
      int lower = an_oattr_str_is(n, "auto_pad", "SAME_LOWER");
      w->pb[i] = lower ? (total + 1) / 2 : total / 2;
      w->pe[i] = total - w->pb[i];
    } else if (an_oattr_str_is(n, "auto_pad", "VALID")) {
      w->pb[i] = w->pe[i] = 0;
    }
    int64_t span = in_hw[i] + w->pb[i] + w->pe[i] - ek;
    if (span < 0)
      return an_oexec_fail(x, AN_EMODEL, "the window is larger than the padded input");
    w->out[i] = (ceil_mode ? (span + w->s[i] - 1) / w->s[i] : span / w->s[i]) + 1;
    /* ceil_mode: the last window must start inside the input or left padding */
    if (ceil_mode && (w->out[i] - 1) * w->s[i] >= in_hw[i] + w->pb[i])
      w->out[i]--;
  }
  return 0;
}

/* im2col for one image and one group: rows (c, ky, kx), columns (oy, ox). */
static void an_im2col(const float *img, int64_t c0, int64_t cg, int64_t h, int64_t wd,
                      const an_window_t *w, float *col) {
  int64_t oh = w->out[0], ow = w->out[1];
  for (int64_t c = 0; c < cg; c++)
    for (int64_t ky = 0; ky < w->k[0]; ky++)
      for (int64_t kx = 0; kx < w->k[1]; kx++) {
        float *row = col + ((c * w->k[0] + ky) * w->k[1] + kx) * oh * ow;
        const float *src = img + (c0 + c) * h * wd;
        for (int64_t oy = 0; oy < oh; oy++) {
          int64_t iy = oy * w->s[0] - w->pb[0] + ky * w->d[0];
          for (int64_t ox = 0; ox < ow; ox++) {
            int64_t ix = ox * w->s[1] - w->pb[1] + kx * w->d[1];
            row[oy * ow + ox] = iy >= 0 && iy < h && ix >= 0 && ix < wd ? src[iy * wd + ix] : 0;
          }
        }
      }
}

static int op_conv(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t group = an_oattr_int(n, "group", 1), ks[4];
  an_window_t w;
  int rc;
  if ((rc = an_need_float(x, in[0], "Conv input")) || (rc = an_need_float(x, in[1], "Conv weight")))
    return rc;
  if (in[0]->ndim != 4 || in[1]->ndim != 4)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "only 2-D convolutions are supported");
  int64_t N = in[0]->dims[0], C = in[0]->dims[1], H = in[0]->dims[2], W = in[0]->dims[3];
  int64_t M = in[1]->dims[0], CG = in[1]->dims[1];
  if (group < 1 || group > (C > 0 ? C : 1) || C % group || M % group || C / group != CG)
    return an_oexec_fail(x, AN_EMODEL, "Conv weight and group do not match the input channels");
  int nk = an_oattr_ints(n, "kernel_shape", ks, 4);
  if (nk && (nk != 2 || ks[0] != in[1]->dims[2] || ks[1] != in[1]->dims[3]))
    return an_oexec_fail(x, AN_EMODEL, "kernel_shape does not match the weight");
  int64_t hw[2] = {H, W}, kk[2] = {in[1]->dims[2], in[1]->dims[3]};
  if ((rc = an_window_init(x, n, hw, kk, 0, 0, &w)) != 0)
    return rc;
  const an_oval_t *b = n->n_in > 2 ? in[2] : NULL;
  if (b && (b->dtype != AN_ONNX_FLOAT || b->ndim != 1 || b->dims[0] != M))
    return an_oexec_fail(x, AN_EMODEL, "Conv bias must have M values");
  int64_t dims[4] = {N, M, w.out[0], w.out[1]};
  if (x->probe)
    return an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, 4, dims);
  /* oneDNN's direct kernels first; im2col + sgemm where they have none. */
  an_conv_args_t ca = {
      .n = N, .c = C, .h = H, .w = W, .m = M, .oh = w.out[0], .ow = w.out[1], .kh = kk[0],
      .kw = kk[1], .group = group, .sh = w.s[0], .sw = w.s[1], .dh = w.d[0], .dw = w.d[1],
      .ph0 = w.pb[0], .pw0 = w.pb[1],
      .ph1 = (w.out[0] - 1) * w.s[0] + (kk[0] - 1) * w.d[0] + 1 - H - w.pb[0],
      .pw1 = (w.out[1] - 1) * w.s[1] + (kk[1] - 1) * w.d[1] + 1 - W - w.pb[1],
      .weights = in[1]->data, .bias = b ? b->data : NULL,
      .weights_const = n->in[1] >= 0 && x->m->is_const[n->in[1]]};
  if ((rc = an_conv_dnnl(x, (an_onode_t *)n, &ca, in[0], out[0], dims)) != AN_EUNSUPPORTED)
    return rc;
  if ((rc = an_oval_make_plain(x, in[0])) != 0 ||
      (rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, 4, dims)) != 0)
    return rc;
  rc = 0;
  int64_t rows = CG * kk[0] * kk[1], cols = w.out[0] * w.out[1], MG = M / group;
  size_t col_bytes = (size_t)rows * (size_t)cols * sizeof(float);
  if (rows && (size_t)cols > SIZE_MAX / sizeof(float) / (size_t)rows)
    return an_oexec_fail(x, AN_ETOOBIG, "the convolution's scratch does not fit in memory");
  float *col = an_oexec_scratch(x, col_bytes);
  if (!col)
    return AN_ETOOBIG;
  const float *img = in[0]->data, *wt = in[1]->data;
  float *y = out[0]->data;
  for (int64_t i = 0; i < N && !rc; i++)
    for (int64_t g = 0; g < group && !rc && !(rc = an_oexec_check_time(x)); g++) {
      float *dst = y + (i * M + g * MG) * cols;
      an_im2col(img + i * C * H * W, g * CG, CG, H, W, &w, col);
      for (int64_t m = 0; m < MG; m++)
        for (int64_t p = 0; p < cols; p++)
          dst[m * cols + p] = b ? ((const float *)b->data)[g * MG + m] : 0.0f;
      rc = an_sgemm(x, 'N', 'N', MG, cols, rows, 1.0f, wt + g * MG * rows, rows, col, cols, 1.0f,
                    dst, cols);
    }
  an_oexec_scratch_free(x, col, col_bytes);
  if (n->fused_relu) {
    size_t count = an_oval_numel(out[0]);
    for (size_t i = 0; i < count; i++)
      y[i] = y[i] > 0 ? y[i] : 0;
  }
  return rc;
}

static int op_convtranspose(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t group = an_oattr_int(n, "group", 1), op[4] = {0, 0}, ks[4];
  an_window_t w;
  int rc;
  if ((rc = an_need_float(x, in[0], "ConvTranspose input")) ||
      (rc = an_need_float(x, in[1], "ConvTranspose weight")))
    return rc;
  if (in[0]->ndim != 4 || in[1]->ndim != 4)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "only 2-D transposed convolutions are supported");
  if (an_oattr(n, "output_shape"))
    return an_oexec_fail(x, AN_EUNSUPPORTED, "ConvTranspose with output_shape");
  int64_t N = in[0]->dims[0], C = in[0]->dims[1], H = in[0]->dims[2], W = in[0]->dims[3];
  int64_t MG = in[1]->dims[1];
  if (group < 1 || group > (C > 0 ? C : 1) || C % group || in[1]->dims[0] != C)
    return an_oexec_fail(x, AN_EMODEL, "ConvTranspose weight does not match the input");
  int nk = an_oattr_ints(n, "kernel_shape", ks, 4);
  int64_t hw[2] = {H, W}, kk[2] = {in[1]->dims[2], in[1]->dims[3]};
  if (nk && (nk != 2 || ks[0] != kk[0] || ks[1] != kk[1]))
    return an_oexec_fail(x, AN_EMODEL, "kernel_shape does not match the weight");
  if ((rc = an_window_init(x, n, hw, kk, 0, 1, &w)) != 0)
    return rc;
  int nop = an_oattr_ints(n, "output_padding", op, 4);
  if (nop != 0 && nop != 2)
    return an_oexec_fail(x, AN_EMODEL, "output_padding needs 2 values");
  for (int i = 0; i < 2; i++) {
    if (op[i] < 0 || op[i] >= w.s[i])
      return an_oexec_fail(x, AN_EMODEL, "output_padding must be below the stride");
    w.out[i] = w.s[i] * (hw[i] - 1) + op[i] + (kk[i] - 1) * w.d[i] + 1 - w.pb[i] - w.pe[i];
    if (w.out[i] < 1)
      return an_oexec_fail(x, AN_EMODEL, "ConvTranspose output would be empty");
  }
  int64_t M;
  if (__builtin_mul_overflow(MG, group, &M) || M > (int64_t)x->m->lim.max_tensor_elems)
    return an_oexec_fail(x, AN_EMODEL, "ConvTranspose output channels overflow");
  const an_oval_t *b = n->n_in > 2 ? in[2] : NULL;
  if (b && (b->dtype != AN_ONNX_FLOAT || b->ndim != 1 || b->dims[0] != M))
    return an_oexec_fail(x, AN_EMODEL, "ConvTranspose bias must have M values");
  int64_t dims[4] = {N, M, w.out[0], w.out[1]};
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, 4, dims)) != 0 || !out[0]->data)
    return rc;
  int64_t CG = C / group, rows = MG * kk[0] * kk[1], cols = H * W, OH = w.out[0], OW = w.out[1];
  if (rows && (size_t)cols > SIZE_MAX / sizeof(float) / (size_t)rows)
    return an_oexec_fail(x, AN_ETOOBIG, "the transposed convolution's scratch does not fit");
  size_t col_bytes = (size_t)rows * (size_t)cols * sizeof(float);
  float *col = an_oexec_scratch(x, col_bytes);
  if (!col)
    return AN_ETOOBIG;
  const float *img = in[0]->data, *wt = in[1]->data;
  float *y = out[0]->data;
  for (int64_t i = 0; i < N && !rc; i++) {
    for (int64_t m = 0; m < M; m++)
      for (int64_t p = 0; p < OH * OW; p++)
        y[(i * M + m) * OH * OW + p] = b ? ((const float *)b->data)[m] : 0.0f;
    for (int64_t g = 0; g < group && !rc && !(rc = an_oexec_check_time(x)); g++) {
      /* col = W_g^T x_g: rows (m, ky, kx), one column per input pixel. */
      rc = an_sgemm(x, 'T', 'N', rows, cols, CG, 1.0f, wt + g * CG * rows, rows,
                    img + (i * C + g * CG) * cols, cols, 0.0f, col, cols);
      for (int64_t m = 0; m < MG && !rc; m++)
        for (int64_t ky = 0; ky < kk[0]; ky++)
          for (int64_t kx = 0; kx < kk[1]; kx++) {
            const float *src = col + ((m * kk[0] + ky) * kk[1] + kx) * cols;
            float *dst = y + (i * M + g * MG + m) * OH * OW;
            for (int64_t iy = 0; iy < H; iy++) {
              int64_t oy = iy * w.s[0] - w.pb[0] + ky * w.d[0];
              if (oy < 0 || oy >= OH)
                continue;
              for (int64_t ix = 0; ix < W; ix++) {
                int64_t ox = ix * w.s[1] - w.pb[1] + kx * w.d[1];
                if (ox >= 0 && ox < OW)
                  dst[oy * OW + ox] += src[iy * W + ix];
              }
            }
          }
    }
  }
  an_oexec_scratch_free(x, col, col_bytes);
  return rc;
}

static int an_pool(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out, int max) {
  int64_t ks[4];
  an_window_t w;
  int rc, nk = an_oattr_ints(n, "kernel_shape", ks, 4);
  int ceil_mode = (int)an_oattr_int(n, "ceil_mode", 0);
  int include_pad = (int)an_oattr_int(n, "count_include_pad", 0);
  if ((rc = an_need_float(x, in[0], "pooling input")) != 0)
    return rc;
  if (n->n_out > 1)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "MaxPool indices output");
  if (in[0]->ndim != 4 || nk != 2)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "only 2-D pooling is supported");
  if (!max && an_oattr(n, "dilations"))
    return an_oexec_fail(x, AN_EUNSUPPORTED, "AveragePool with dilations");
  int64_t N = in[0]->dims[0], C = in[0]->dims[1], H = in[0]->dims[2], W = in[0]->dims[3];
  int64_t hw[2] = {H, W};
  if ((rc = an_window_init(x, n, hw, ks, ceil_mode, 0, &w)) != 0)
    return rc;
  for (int i = 0; i < 2; i++) /* a window made only of padding has no value */
    if (w.pb[i] >= (w.k[i] - 1) * w.d[i] + 1 || w.pe[i] >= (w.k[i] - 1) * w.d[i] + 1)
      return an_oexec_fail(x, AN_EMODEL, "pooling padding must be smaller than the window");
  int64_t dims[4] = {N, C, w.out[0], w.out[1]};
  if (!x->probe) {
    /* oneDNN's kernel, in the input's layout. Its end padding is what the
     * output size implies (floor mode may leave input rows unread: 0). */
    int64_t end[2];
    for (int i = 0; i < 2; i++) {
      end[i] = (w.out[i] - 1) * w.s[i] + (w.k[i] - 1) * w.d[i] + 1 - hw[i] - w.pb[i];
      end[i] = end[i] < 0 ? 0 : end[i];
    }
    /* count_include_pad counts explicit padding but not ceil-mode overhang,
     * which oneDNN cannot tell apart: that case stays on the loop below. */
    int overhang = end[0] != w.pe[0] || end[1] != w.pe[1];
    /* A oneDNN call cannot be interrupted; windows over 32 x 32 (rare, and
     * their cost grows with the window's area) stay on the loop below,
     * which watches the deadline. */
    int small = w.k[0] * w.k[1] <= 32 * 32;
    if (small && (max || !include_pad || !overhang)) {
      an_pool_args_t pa = {
          .n = N, .c = C, .h = H, .w = W, .oh = w.out[0], .ow = w.out[1], .kh = w.k[0],
          .kw = w.k[1], .sh = w.s[0], .sw = w.s[1], .dh = w.d[0], .dw = w.d[1],
          .ph0 = w.pb[0], .pw0 = w.pb[1], .ph1 = end[0], .pw1 = end[1],
          .alg = max ? dnnl_pooling_max
                     : include_pad ? dnnl_pooling_avg_include_padding
                                   : dnnl_pooling_avg_exclude_padding};
      if ((rc = an_pool_dnnl(x, (an_onode_t *)n, &pa, in[0], out[0], dims)) != AN_EUNSUPPORTED)
        return rc;
    }
    if ((rc = an_oval_make_plain(x, in[0])) != 0)
      return rc;
  }
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, 4, dims)) != 0 || !out[0]->data)
    return rc;
  const float *a = in[0]->data;
  float *y = out[0]->data;
  int timed_out = 0;
  /* Planes are independent: split them over the cores. The deadline is
   * checked per output row; a thread that sees it passed stops its work. */
#pragma omp parallel for schedule(static) if (N * C > 1)
  for (int64_t p = 0; p < N * C; p++)
    for (int64_t oy = 0; oy < w.out[0]; oy++) {
      int stop;
#pragma omp atomic read
      stop = timed_out;
      if (stop)
        break;
      if (x->deadline && an_oexec_deadline_passed(x)) { /* per row: a vDSO call */
#pragma omp atomic write
        timed_out = 1;
        break;
      }
      for (int64_t ox = 0; ox < w.out[1]; ox++) {
        double acc = max ? -INFINITY : 0;
        int64_t count = 0;
        for (int64_t ky = 0; ky < w.k[0]; ky++)
          for (int64_t kx = 0; kx < w.k[1]; kx++) {
            int64_t iy = oy * w.s[0] - w.pb[0] + ky * w.d[0];
            int64_t ix = ox * w.s[1] - w.pb[1] + kx * w.d[1];
            int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
            /* count_include_pad counts the explicit padding, not ceil overhang */
            if (!inside) {
              if (include_pad && iy < H + w.pe[0] && ix < W + w.pe[1])
                count++;
              continue;
            }
            float v = a[(p * H + iy) * W + ix];
            acc = max ? (v > acc ? v : acc) : acc + v;
            count++;
          }
        y[(p * w.out[0] + oy) * w.out[1] + ox] = max ? (float)acc : (float)(acc / count);
      }
    }
  return timed_out ? an_oexec_check_time(x) : 0;
}

static int op_maxpool(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  if (an_oattr_int(n, "storage_order", 0) != 0)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "MaxPool storage_order");
  return an_pool(x, n, in, out, 1);
}
static int op_avgpool(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  return an_pool(x, n, in, out, 0);
}

static int op_gap(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t dims[AN_ONNX_MAX_DIMS];
  int rc, r = in[0]->ndim;
  if ((rc = an_need_float(x, in[0], "GlobalAveragePool input")) != 0)
    return rc;
  if (r < 3)
    return an_oexec_fail(x, AN_EMODEL, "GlobalAveragePool needs N x C x spatial");
  memcpy(dims, in[0]->dims, sizeof dims);
  size_t sp = 1;
  for (int i = 2; i < r; i++) {
    sp *= (size_t)dims[i];
    dims[i] = 1;
  }
  if (!x->probe && r == 4 && sp > 0) {
    int64_t h = in[0]->dims[2], w = in[0]->dims[3];
    an_pool_args_t pa = {.n = dims[0], .c = dims[1], .h = h, .w = w, .oh = 1, .ow = 1, .kh = h,
                         .kw = w, .sh = 1, .sw = 1, .dh = 1, .dw = 1,
                         .alg = dnnl_pooling_avg_exclude_padding};
    if ((rc = an_pool_dnnl(x, (an_onode_t *)n, &pa, in[0], out[0], dims)) != AN_EUNSUPPORTED)
      return rc;
  }
  if ((rc = an_oval_make_plain(x, in[0])) != 0 ||
      (rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, r, dims)) != 0 || !out[0]->data)
    return rc;
  size_t planes = (size_t)(dims[0] * dims[1]);
  for (size_t p = 0; p < planes; p++) {
    double acc = 0;
    for (size_t i = 0; i < sp; i++)
      acc += ((const float *)in[0]->data)[p * sp + i];
    ((float *)out[0]->data)[p] = sp ? (float)(acc / (double)sp) : NAN;
  }
  return 0;
}

static int op_pad(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  int64_t pads[2 * AN_ONNX_MAX_DIMS], dims[AN_ONNX_MAX_DIMS];
  int r = in[0]->ndim, k = 0, rc;
  float value = 0;
  int mode = 0; /* 0 constant, 1 reflect, 2 edge */
  if (an_oattr_str_is(n, "mode", "reflect"))
    mode = 1;
  else if (an_oattr_str_is(n, "mode", "edge"))
    mode = 2;
  else if (an_oattr(n, "mode") && !an_oattr_str_is(n, "mode", "constant"))
    return an_oexec_fail(x, AN_EUNSUPPORTED, "Pad mode");
  if (in[0]->dtype != AN_ONNX_FLOAT)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "Pad of a non-float tensor");
  if (an_opset(x) < 11) {
    k = an_oattr_ints(n, "pads", pads, 2 * AN_ONNX_MAX_DIMS);
    value = an_oattr_float(n, "value", 0.0f);
  } else {
    if ((rc = an_ints_of(x, in[1], pads, 2 * AN_ONNX_MAX_DIMS, &k)) != 0)
      return rc;
    if (n->n_in > 2 && in[2]) {
      if (in[2]->dtype != AN_ONNX_FLOAT || an_oval_numel(in[2]) != 1)
        return an_oexec_fail(x, AN_EMODEL, "Pad value must be a float scalar");
      if (in[2]->data)
        value = *(float *)in[2]->data;
    }
    if (n->n_in > 3 && in[3])
      return an_oexec_fail(x, AN_EUNSUPPORTED, "Pad with axes");
  }
  if (k != 2 * r)
    return an_oexec_fail(x, AN_EMODEL, "Pad needs 2 values per dimension");
  for (int i = 0; i < r; i++) {
    if (pads[i] < -in[0]->dims[i] || pads[r + i] < -in[0]->dims[i] ||
        pads[i] > (int64_t)x->m->lim.max_tensor_elems || pads[r + i] > (int64_t)x->m->lim.max_tensor_elems)
      return an_oexec_fail(x, AN_EMODEL, "absurd padding");
    dims[i] = in[0]->dims[i] + pads[i] + pads[r + i];
    if (dims[i] < 0)
      return an_oexec_fail(x, AN_EMODEL, "Pad makes a negative dimension");
    if (mode == 1 && (pads[i] >= in[0]->dims[i] || pads[r + i] >= in[0]->dims[i]) &&
        (pads[i] > 0 || pads[r + i] > 0))
      return an_oexec_fail(x, AN_EMODEL, "reflect padding larger than the input");
    if (mode == 2 && in[0]->dims[i] == 0 && dims[i] > 0)
      return an_oexec_fail(x, AN_EMODEL, "edge padding of an empty dimension");
  }
  if ((rc = an_oexec_alloc(x, out[0], AN_ONNX_FLOAT, r, dims)) != 0 || !out[0]->data)
    return rc;
  size_t count = an_oval_numel(out[0]);
  const float *a = in[0]->data;
  for (size_t idx = 0; idx < count; idx++) {
    size_t rem = idx, src = 0, stride = 1;
    int outside = 0;
    for (int i = r - 1; i >= 0; i--) {
      int64_t pos = (int64_t)(rem % (size_t)dims[i]) - pads[i], len = in[0]->dims[i];
      rem /= (size_t)dims[i];
      if (pos < 0 || pos >= len) {
        if (mode == 0) {
          outside = 1;
          break;
        }
        if (mode == 1) /* reflect without repeating the edge */
          pos = pos < 0 ? -pos : 2 * (len - 1) - pos;
        else
          pos = pos < 0 ? 0 : len - 1;
      }
      src += (size_t)pos * stride;
      stride *= (size_t)len;
    }
    ((float *)out[0]->data)[idx] = outside ? value : a[src];
  }
  return 0;
}

static int op_constant(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out) {
  (void)x, (void)n, (void)in, (void)out;
  return 0; /* evaluated at load; never reached */
}

static const an_oop_t an_oops[] = {
    {"Add", 2, 2, 1, 1, op_add, 1},
    {"AveragePool", 1, 1, 1, 1, op_avgpool, 1},
    {"BatchNormalization", 5, 5, 1, 5, op_batchnorm},
    {"Clip", 1, 3, 1, 1, op_clip, 1},
    {"Concat", 1, 64, 1, 1, op_concat},
    {"Constant", 0, 0, 1, 1, op_constant},
    {"Conv", 2, 3, 1, 1, op_conv, 1},
    {"ConvTranspose", 2, 3, 1, 1, op_convtranspose},
    {"Div", 2, 2, 1, 1, op_div},
    {"Dropout", 1, 3, 1, 2, op_dropout},
    {"Flatten", 1, 1, 1, 1, op_flatten},
    {"Gather", 2, 2, 1, 1, op_gather},
    {"Gemm", 2, 3, 1, 1, op_gemm},
    {"GlobalAveragePool", 1, 1, 1, 1, op_gap, 1},
    {"Identity", 1, 1, 1, 1, op_identity},
    {"LeakyRelu", 1, 1, 1, 1, op_leaky, 1},
    {"LogSoftmax", 1, 1, 1, 1, op_logsoftmax},
    {"MatMul", 2, 2, 1, 1, op_matmul},
    {"MaxPool", 1, 1, 1, 2, op_maxpool, 1},
    {"Mul", 2, 2, 1, 1, op_mul},
    {"Pad", 1, 4, 1, 1, op_pad},
    {"ReduceMean", 1, 1, 1, 1, op_reducemean},
    {"Relu", 1, 1, 1, 1, op_relu, 1},
    {"Reshape", 2, 2, 1, 1, op_reshape},
    {"Shape", 1, 1, 1, 1, op_shape},
    {"Sigmoid", 1, 1, 1, 1, op_sigmoid},
    {"Softmax", 1, 1, 1, 1, op_softmax},
    {"Squeeze", 1, 2, 1, 1, op_squeeze},
    {"Sub", 2, 2, 1, 1, op_sub},
    {"Tanh", 1, 1, 1, 1, op_tanh, 1},
    {"Transpose", 1, 1, 1, 1, op_transpose},
    {"Unsqueeze", 1, 2, 1, 1, op_unsqueeze},
};

const an_oop_t *an_onnx_find_op(const char *name) {
  for (size_t i = 0; i < sizeof an_oops / sizeof an_oops[0]; i++)
    if (strcmp(an_oops[i].name, name) == 0)
      return &an_oops[i];
  return NULL;
}
