/* Conv through oneDNN's direct kernels (internal to common/nn/onnx). */
#ifndef AN_ONNX_CONV_DNNL_H
#define AN_ONNX_CONV_DNNL_H

#include <stdint.h>

#include "common/nn/onnx/graph.h"

typedef struct an_conv_args {
  int64_t n, c, h, w, m, oh, ow, kh, kw, group;
  int64_t sh, sw, dh, dw, ph0, pw0, ph1, pw1; /* padding end adjusted to the output size */
  const float *input, *weights, *bias;        /* bias may be NULL */
  int weights_const;                          /* an initializer: reorder once */
  float *output;
} an_conv_args_t;

/* 0, AN_EUNSUPPORTED when oneDNN has no kernel for it (use the fallback),
 * or another error with a message set. */
int an_conv_dnnl(an_oexec_t *x, an_onode_t *n, const an_conv_args_t *a);

#endif
