/* libFuzzer target for the ONNX loader and runtime: any bytes must load or
 * be refused with a message, and a model that loads must run once (or fail
 * with a message) without a crash, a leak or a hang. Limits are tight so
 * that a run stays fast and small; see tests/fuzz/README.md. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/nn/onnx/onnx.h"

#define FUZZ_MAX_INPUTS 16
#define FUZZ_MAX_FEED_ELEMS ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  an_onnx_limits_t lim;
  an_onnx_t *m = NULL;
  an_onnx_tensor_t in[FUZZ_MAX_INPUTS], *out = NULL;
  size_t n_in, n_out = 0;
  char err[512];

  an_onnx_default_limits(&lim);
  lim.max_file_bytes = (size_t)1 << 20;
  lim.max_nodes = 1000;
  lim.max_tensor_elems = (size_t)1 << 20;
  lim.max_memory_bytes = (uint64_t)64 << 20;
  lim.max_seconds = 2;
  memset(in, 0, sizeof in);
  err[0] = '\0';
  if (an_onnx_load(data, size, &lim, &m, err, sizeof err) != 0) {
    if (err[0] == '\0' || m != NULL)
      abort(); /* the contract: a refusal says why and leaves nothing */
    return 0;
  }
  n_in = an_onnx_input_count(m);
  n_out = an_onnx_output_count(m);
  if (n_in > FUZZ_MAX_INPUTS)
    goto done;
  for (size_t i = 0; i < n_in; i++) {
    int dtype = 0, ndim = 0;
    int64_t dims[AN_ONNX_MAX_DIMS];
    size_t count = 1;
    if (an_onnx_input_shape(m, i, &dtype, &ndim, dims) != 0 || dtype != AN_ONNX_FLOAT || ndim < 0 ||
        ndim > AN_ONNX_MAX_DIMS)
      goto done; /* only float inputs are fed; a model with others is not run */
    in[i].dtype = dtype;
    in[i].ndim = ndim;
    for (int d = 0; d < ndim; d++) {
      in[i].dims[d] = dims[d] < 0 ? 1 : dims[d]; /* symbolic dimensions = 1 */
      if (in[i].dims[d] && count > FUZZ_MAX_FEED_ELEMS / (size_t)in[i].dims[d])
        goto done;
      count *= (size_t)in[i].dims[d];
    }
    if (!(in[i].data = calloc(count ? count : 1, sizeof(float))))
      goto done;
  }
  if (!(out = calloc(n_out ? n_out : 1, sizeof *out)))
    goto done;
  err[0] = '\0';
  if (an_onnx_run(m, in, n_in, out, n_out, err, sizeof err) != 0) {
    if (err[0] == '\0')
      abort();
    for (size_t i = 0; i < n_out; i++)
      if (out[i].data)
        abort(); /* a failed run must leave the outputs empty */
  } else {
    for (size_t i = 0; i < n_out; i++)
      if (!out[i].data)
        abort(); /* a successful run gives every output */
  }
done:
  for (size_t i = 0; out && i < n_out; i++)
    an_onnx_tensor_free(&out[i]);
  free(out);
  for (size_t i = 0; i < FUZZ_MAX_INPUTS; i++)
    free(in[i].data);
  an_onnx_free(m);
  return 0;
}
