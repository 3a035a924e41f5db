/* Gemm with a constant B (a fully connected layer) on oneDNN's matmul
 * (internal to common/nn/onnx). */
#ifndef AN_ONNX_GEMM_DNNL_H
#define AN_ONNX_GEMM_DNNL_H

#include <stdint.h>

#include "common/nn/onnx/graph.h"

typedef struct an_gemm_args {
  int64_t m, k, n;     /* A is m x k (row-major), Y is m x n */
  int trans_b;         /* B is stored n x k (PyTorch's Linear) rather than k x n */
  const float *a, *b;  /* b is an initializer: packed once and cached */
  const float *bias;   /* n values added to every row, or NULL */
  float *y;
} an_gemm_args_t;

/* Y = A B (+ bias). Returns 0; AN_EUNSUPPORTED when oneDNN has no kernel
 * (use the fallback); or another error with a message set. */
int an_gemm_dnnl(an_oexec_t *x, an_onode_t *n, const an_gemm_args_t *a);

#endif
