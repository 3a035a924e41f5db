/* `archnet-publisher predict`: the owner's use of the returned model. Raw
 * images go through the key's H-encoder, are stored the way the training
 * set was (encoding.json), and are classified by the model the workers
 * trained; with labels in the dataset the accuracy is printed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/blob/dataset.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/nn/onnx/onnx.h"
#include "common/progress.h"
#include "publisher/commands.h"
#include "publisher/encoded.h"
#include "publisher/key.h"

typedef struct predict_settings {
  char *key, *model, *data, *encoding, *split, *out;
  int64_t limit, batch;
  bool bf16;
} predict_settings_t;

#define OPT(f) offsetof(predict_settings_t, f)

static const an_option_t predict_options[] = {
    {"key", AN_OPT_STR, OPT(key), NULL, 0, 0, "KEYDIR", "the key written by 'train'"},
    {"model", AN_OPT_STR, OPT(model), NULL, 0, 0, "FILE.onnx",
     "the classifier trained on your encoded data"},
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "DIR", "raw images to classify (a dataset folder)"},
    {"encoding", AN_OPT_STR, OPT(encoding), NULL, 0, 0, "DIR",
     "the folder 'encode' wrote (its encoding.json says how the model's inputs were\n"
     "stored; without it codes are given as float16 values)"},
    {"split", AN_OPT_STR, OPT(split), "test", 0, 0, "test|train", "which part of the dataset"},
    {"limit", AN_OPT_INT, OPT(limit), "0", 0, INT32_MAX, "N", "the first N images only"},
    {"batch", AN_OPT_INT, OPT(batch), "256", 1, 4096, "N", "images per run"},
    {"out", AN_OPT_STR, OPT(out), NULL, 0, 0, "FILE", "write one predicted label per line"},
    {"bf16", AN_OPT_BOOL, OPT(bf16), "false", 0, 0, NULL,
     "run the classifier's convolutions in bfloat16 (faster with AMX)"},
};

static const an_command_spec_t predict_spec = {
    .program = "archnet-publisher",
    .command = "predict",
    .summary = "Classify raw images with the model the workers trained: each image goes\n"
               "through your H-encoder, then the model. Prints the accuracy against the\n"
               "dataset's labels; --out writes the predicted labels.",
    .options = predict_options,
    .n_options = sizeof predict_options / sizeof predict_options[0],
};

int an_publisher_predict(int argc, char **argv) {
  predict_settings_t s = {0};
  an_key_t key = {0};
  an_encoded_info_t info = {.dtype = AN_NPY_F16};
  an_dataset_t d = {0};
  an_onnx_t *model = NULL;
  float *x = NULL, *code = NULL;
  void *stored = NULL;
  FILE *out = NULL;
  char err[8192];
  int first, status, rc, dtype, ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];

  if ((status = an_cli_parse(&predict_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first || !s.key || !s.model || !s.data) {
    fprintf(stderr, "archnet-publisher predict: needs --key, --model and --data; see --help\n");
    goto done;
  }
  if (strcmp(s.split, "test") != 0 && strcmp(s.split, "train") != 0) {
    fprintf(stderr, "archnet-publisher predict: --split must be test or train\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if ((rc = an_key_open(s.key, 0, &key, err, sizeof err)) != 0 ||
      (s.encoding && (rc = an_encoded_read_info(s.encoding, &info, err, sizeof err)) != 0) ||
      (rc = an_dataset_load(s.data, strcmp(s.split, "test") ? AN_DATASET_TRAIN : AN_DATASET_TEST,
                            (size_t)s.limit, &d, err, sizeof err)) != 0)
    goto fail;
  memcpy(info.shape, key.manifest.code, sizeof info.shape);
  char why[4096];
  if ((rc = an_onnx_load_file(s.model, NULL, &model, why, sizeof why)) != 0) {
    snprintf(err, sizeof err, "%s: %s", s.model, why);
    goto fail;
  }
  an_onnx_set_bf16(model, s.bf16);
  const int *cs = key.manifest.code, *is = key.manifest.input;
  if (an_onnx_input_count(model) != 1 ||
      an_onnx_input_shape(model, 0, &dtype, &ndim, dims) != 0 || ndim != 4 ||
      dims[1] != cs[0] || dims[2] != cs[1] || dims[3] != cs[2] ||
      an_onnx_output_shape(model, 0, &dtype, &ndim, dims) != 0 || ndim != 2) {
    snprintf(err, sizeof err, "%s does not map N x %d x %d x %d codes to N x K scores", s.model,
             cs[0], cs[1], cs[2]);
    goto fail;
  }
  if (d.c != is[0] || d.h != is[1] || d.w != is[2]) {
    snprintf(err, sizeof err, "the key encodes %dx%dx%d images but %s holds %dx%dx%d", is[0],
             is[1], is[2], s.data, d.c, d.h, d.w);
    goto fail;
  }
  size_t batch = (size_t)s.batch, in_size = an_key_in_size(&key), code_size = an_key_out_size(&key);
  if (!(x = malloc(batch * in_size * sizeof *x)) ||
      !(code = malloc(batch * code_size * sizeof *code)) ||
      !(stored = malloc(batch * code_size * sizeof(float)))) {
    snprintf(err, sizeof err, "out of memory");
    goto fail;
  }
  if (s.out && !(out = fopen(s.out, "w"))) {
    snprintf(err, sizeof err, "cannot write %s", s.out);
    goto fail;
  }
  size_t correct = 0;
  an_progress_t prog;
  an_progress_init(&prog, d.n, "img", false);
  for (size_t i = 0; i < d.n; i += batch) {
    size_t b = d.n - i < batch ? d.n - i : batch;
    for (size_t p = 0; p < b * in_size; p++)
      x[p] = d.images[i * in_size + p] / 255.0f;
    if ((rc = an_key_run(&key, x, b, batch, code, err, sizeof err)) != 0)
      goto fail;
    /* Exactly what the model was trained on: codes stored, then read back. */
    an_encoded_store(&info, code, b, stored);
    an_encoded_model_input(&info, stored, b, code);
    an_onnx_tensor_t in = {.dtype = AN_ONNX_FLOAT, .ndim = 4,
                           .dims = {(int64_t)b, cs[0], cs[1], cs[2]}, .data = code};
    an_onnx_tensor_t y = {0};
    if ((rc = an_onnx_run(model, &in, 1, &y, 1, why, sizeof why)) != 0) {
      snprintf(err, sizeof err, "%s: %s", s.model, why);
      goto fail;
    }
    int64_t k = y.dims[1];
    for (size_t r = 0; r < b; r++) {
      const float *row = (const float *)y.data + r * (size_t)k;
      int64_t best = 0;
      for (int64_t j = 1; j < k; j++)
        best = row[j] > row[best] ? j : best;
      correct += best == d.labels[i + r];
      if (out)
        fprintf(out, "%lld\n", (long long)best);
    }
    an_onnx_tensor_free(&y);
    an_progress_update(&prog, i + b, "predicting", false);
  }
  an_progress_done(&prog);
  if (out && fclose(out) != 0) {
    out = NULL;
    snprintf(err, sizeof err, "cannot write %s", s.out);
    goto fail;
  }
  out = NULL;
  printf("accuracy %.2f%% (%zu of %zu %s images of %s), H-encoder + %s\n",
         100.0 * (double)correct / (double)d.n, correct, d.n, s.split, s.data, s.model);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher predict: %s\n", err);
  status = AN_EXIT_FAIL;
done:
  if (out)
    fclose(out);
  an_key_close(&key);
  an_onnx_free(model);
  an_dataset_free(&d);
  free(x);
  free(code);
  free(stored);
  an_config_free(&predict_spec, &s);
  return status;
}
