/* Conv through oneDNN's direct kernels (internal to common/nn/onnx). */
#ifndef AN_ONNX_CONV_DNNL_H
#define AN_ONNX_CONV_DNNL_H

#include <stdint.h>

#include "common/nn/onnx/graph.h"

typedef struct an_conv_args {
  int64_t n, c, h, w, m, oh, ow, kh, kw, group;
  int64_t sh, sw, dh, dw, ph0, pw0, ph1, pw1; /* padding end adjusted to the output size */
  const float *weights, *bias;                /* bias may be NULL */
  int weights_const;                          /* an initializer: reorder once */
} an_conv_args_t;

/* Runs the Conv node `n` on `in` (row-major or blocked) and allocates and
 * fills `out` (shape `dims`), in a blocked layout when the kernel writes
 * one, with the node's fused Relu applied. Returns 0; AN_EUNSUPPORTED when
 * oneDNN has no kernel for it (nothing allocated: use the fallback); or
 * another error with a message set. */
int an_conv_dnnl(an_oexec_t *x, an_onode_t *n, const an_conv_args_t *a, an_oval_t *in,
                 an_oval_t *out, const int64_t dims[4]);

#endif
