/* Inference throughput of common/nn/onnx on a model file, random input at
 * a fixed batch size. Paired with PyTorch by bench/onnx.sh.
 *
 *   onnx_bench MODEL.onnx [BATCH] [ITERS] [bf16]
 *
 * Prints images/second. With `bf16`, convolutions run in bfloat16 and the
 * line goes on with the largest difference from the float32 outputs for
 * the same input and how often both give the same top-1 class. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/nn/onnx/onnx.h"
#include "common/nn/rng.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  an_onnx_t *m = NULL;
  char err[1024];
  int dtype, ndim, batch = argc > 2 ? atoi(argv[2]) : 64, iters = argc > 3 ? atoi(argv[3]) : 20;
  int bf16 = argc > 4 && strcmp(argv[4], "bf16") == 0;
  an_onnx_tensor_t ref = {0};
  int64_t dims[AN_ONNX_MAX_DIMS];
  an_rng_t rng;
  if (argc < 2 || batch <= 0 || iters <= 0) {
    fprintf(stderr, "usage: onnx_bench MODEL.onnx [BATCH] [ITERS] [bf16]\n");
    return 2;
  }
  if (an_onnx_load_file(argv[1], NULL, &m, err, sizeof err) != 0) {
    fprintf(stderr, "onnx_bench: %s\n", err);
    return 1;
  }
  an_onnx_input_shape(m, 0, &dtype, &ndim, dims);
  dims[0] = batch;
  size_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= (size_t)(dims[i] < 0 ? 1 : dims[i]);
  float *x = malloc(n * sizeof *x);
  an_rng_seed(&rng, 1);
  for (size_t i = 0; i < n; i++)
    x[i] = (float)an_rng_uniform(&rng);
  an_onnx_tensor_t in = {.dtype = AN_ONNX_FLOAT, .ndim = ndim, .data = x}, out;
  memcpy(in.dims, dims, sizeof in.dims);
  if (bf16) {
    if (an_onnx_run(m, &in, 1, &ref, 1, err, sizeof err) != 0) {
      fprintf(stderr, "onnx_bench: %s\n", err);
      return 1;
    }
    an_onnx_set_bf16(m, 1);
  }
  double t0 = 0;
  for (int it = -2; it < iters; it++) {
    if (it == 0)
      t0 = now();
    if (an_onnx_run(m, &in, 1, &out, 1, err, sizeof err) != 0) {
      fprintf(stderr, "onnx_bench: %s\n", err);
      return 1;
    }
    if (it < iters - 1)
      an_onnx_tensor_free(&out);
  }
  printf("%.1f", (double)iters * batch / (now() - t0));
  if (bf16) {
    /* Logits N x K: the largest deviation and top-1 agreement. */
    int64_t k = out.ndim == 2 ? out.dims[1] : 1;
    size_t total = (size_t)out.dims[0] * (size_t)k, agree = 0;
    double worst = 0;
    const float *a = ref.data, *b = out.data;
    for (size_t i = 0; i < total; i++)
      worst = fabs(a[i] - b[i]) > worst ? fabs(a[i] - b[i]) : worst;
    for (int64_t r = 0; r < out.dims[0]; r++) {
      int64_t ia = 0, ib = 0;
      for (int64_t j = 1; j < k; j++) {
        ia = a[r * k + j] > a[r * k + ia] ? j : ia;
        ib = b[r * k + j] > b[r * k + ib] ? j : ib;
      }
      agree += ia == ib;
    }
    printf(" max_abs_diff=%.2e top1_agree=%.1f%%", worst, 100.0 * agree / out.dims[0]);
    an_onnx_tensor_free(&ref);
  }
  printf("\n");
  an_onnx_tensor_free(&out);
  an_onnx_free(m);
  free(x);
  return 0;
}
