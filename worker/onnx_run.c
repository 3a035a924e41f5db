/* `archnet-worker onnx-run MODEL.onnx INPUT.npy`: runs a model on a float32
 * N x C x H x W array and prints the output shape, then one top-1 label per
 * line. For people debugging models; a model the checks refuse gives a
 * clear message and exit status 2, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/nn/onnx/onnx.h"
#include "worker/commands.h"

typedef struct run_settings {
  int64_t max_seconds;
  uint64_t max_memory;
  bool bf16;
} run_settings_t;

static const an_option_t run_options[] = {
    {"max-seconds", AN_OPT_INT, offsetof(run_settings_t, max_seconds), "60", 1, 86400, "S",
     "give up on a run after this long"},
    {"max-memory", AN_OPT_SIZE, offsetof(run_settings_t, max_memory), "4G", 1 << 20,
     1099511627776.0, "BYTES", "refuse runs that would need more memory"},
    {"bf16", AN_OPT_BOOL, offsetof(run_settings_t, bf16), "false", 0, 0, NULL,
     "convolutions in bfloat16 (faster with AMX; ~3 digits)"},
};

static const an_command_spec_t run_spec = {
    .program = "archnet-worker",
    .command = "onnx-run",
    .args = "MODEL.onnx INPUT.npy",
    .summary = "Run an ONNX model on a NumPy float32 array (N x C x H x W) with the same\n"
               "checks and limits the broker applies to uploaded models. Prints the output\n"
               "shape, then one top-1 label per line. Exit status 2 if the model or the\n"
               "input is refused.",
    .options = run_options,
    .n_options = sizeof run_options / sizeof run_options[0],
};

int an_worker_onnx_run(int argc, char **argv) {
  run_settings_t s = {0};
  an_onnx_limits_t lim;
  an_onnx_t *m = NULL;
  an_npy_t x = {0};
  an_onnx_tensor_t in = {0}, out = {0};
  char err[1024];
  int first, status, dtype, ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];
  float *xf = NULL;

  if ((status = an_cli_parse(&run_spec, &s, argc, argv, &first)) >= 0)
    return status;
  status = AN_EXIT_USAGE;
  if (argc - first != 2) {
    fprintf(stderr, "archnet-worker onnx-run: needs MODEL.onnx and INPUT.npy; see --help\n");
    goto done;
  }
  an_onnx_default_limits(&lim);
  lim.max_seconds = (double)s.max_seconds;
  lim.max_memory_bytes = s.max_memory;
  if (an_onnx_load_file(argv[first], &lim, &m, err, sizeof err) != 0) {
    fprintf(stderr, "archnet-worker onnx-run: model refused: %s\n", err);
    goto done;
  }
  an_onnx_set_bf16(m, s.bf16);
  if (an_onnx_input_count(m) != 1 || an_onnx_input_shape(m, 0, &dtype, &ndim, dims) != 0 ||
      dtype != AN_ONNX_FLOAT || ndim != 4) {
    fprintf(stderr, "archnet-worker onnx-run: %s: the model must take one float32 N x C x H x W "
                    "input\n",
            argv[first]);
    goto done;
  }
  if (an_npy_read(argv[first + 1], 0, &x, err, sizeof err) != 0) {
    fprintf(stderr, "archnet-worker onnx-run: %s\n", err);
    goto done;
  }
  if (x.ndim != 4) {
    fprintf(stderr, "archnet-worker onnx-run: %s: expected an N x C x H x W array, got %d "
                    "dimensions\n",
            argv[first + 1], x.ndim);
    goto done;
  }
  for (int i = 1; i < 4; i++)
    if (dims[i] >= 0 && dims[i] != x.shape[i]) {
      fprintf(stderr, "archnet-worker onnx-run: the model takes %lldx%lldx%lld inputs, %s holds "
                      "%lldx%lldx%lld\n",
              (long long)dims[1], (long long)dims[2], (long long)dims[3], argv[first + 1],
              (long long)x.shape[1], (long long)x.shape[2], (long long)x.shape[3]);
      goto done;
    }
  size_t n = an_npy_numel(&x);
  if (!(xf = malloc(n * sizeof *xf + 1)) || an_npy_to_f32(&x, 0, n, xf) != 0) {
    fprintf(stderr, "archnet-worker onnx-run: cannot convert %s to float32\n", argv[first + 1]);
    status = AN_EXIT_FAIL;
    goto done;
  }
  in.dtype = AN_ONNX_FLOAT;
  in.ndim = 4;
  memcpy(in.dims, x.shape, 4 * sizeof *in.dims);
  in.data = xf;
  if (an_onnx_run(m, &in, 1, &out, 1, err, sizeof err) != 0) {
    fprintf(stderr, "archnet-worker onnx-run: %s\n", err);
    goto done;
  }
  if (out.dtype != AN_ONNX_FLOAT || out.ndim < 1 || out.dims[0] != x.shape[0]) {
    fprintf(stderr, "archnet-worker onnx-run: the model's output is not float32 N x K\n");
    goto done;
  }
  size_t k = 1;
  printf("output");
  for (int i = 0; i < out.ndim; i++) {
    printf("%s%lld", i ? "x" : " ", (long long)out.dims[i]);
    if (i)
      k *= (size_t)out.dims[i];
  }
  printf("\n");
  for (int64_t b = 0; b < out.dims[0]; b++) {
    const float *row = (const float *)out.data + (size_t)b * k;
    size_t best = 0;
    for (size_t j = 1; j < k; j++)
      if (row[j] > row[best])
        best = j;
    printf("%zu\n", best);
  }
  status = AN_EXIT_OK;
done:
  an_onnx_tensor_free(&out);
  free(xf);
  an_npy_free(&x);
  an_onnx_free(m);
  an_config_free(&run_spec, &s);
  return status;
}
