/* MaxPool, AveragePool and GlobalAveragePool through oneDNN's pooling
 * kernels (internal to common/nn/onnx). */
#ifndef AN_ONNX_POOL_DNNL_H
#define AN_ONNX_POOL_DNNL_H

#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

#include "common/nn/onnx/graph.h"

typedef struct an_pool_args {
  int64_t n, c, h, w, oh, ow, kh, kw, sh, sw, dh, dw; /* dilation 1 = none */
  int64_t ph0, pw0, ph1, pw1; /* padding end adjusted to the output size */
  dnnl_alg_kind_t alg;        /* max, avg_include_padding or avg_exclude_padding */
} an_pool_args_t;

/* Pools `in` (row-major or blocked) into a new `out` of shape `dims`, in
 * the input's layout. Returns 0; AN_EUNSUPPORTED when oneDNN has no kernel
 * for it (nothing allocated: use the fallback); or another error with a
 * message set. */
int an_pool_dnnl(an_oexec_t *x, an_onode_t *n, const an_pool_args_t *a, an_oval_t *in,
                 an_oval_t *out, const int64_t dims[4]);

#endif
