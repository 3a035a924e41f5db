/* The key folder: manifest in JSON (jansson), the two ONNX halves run by
 * common/nn/onnx. */
#include "publisher/key.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "common/error.h"
#include "common/small_file.h"

int an_key_write_manifest(const char *dir, const an_key_manifest_t *k, char *err,
                          size_t errlen) {
  char path[4096];
  int rc = UV_ENOMEM;
  json_t *j = json_pack(
      "{s:s, s:s, s:s, s:s, s:[i,i,i], s:[i,i,i], s:I, s:I, s:I, s:I, s:f, "
      "s:{s:s, s:s}, s:{s:I, s:f, s:f}, s:f, s:s, s:s}",
      "format", AN_KEY_FORMAT, "preset", k->preset, "loss", k->loss, "precision", k->precision,
      "input", k->input[0], k->input[1], k->input[2], "code", k->code[0], k->code[1], k->code[2],
      "seed", (json_int_t)k->seed, "epochs", (json_int_t)k->epochs, "images",
      (json_int_t)k->images, "batch", (json_int_t)k->batch, "lr", k->lr, "dataset", "format",
      k->dataset_format, "digest", k->dataset_digest, "reconstruction", "images",
      (json_int_t)k->eval_images, "mse", k->eval_mse, "psnr_db", k->eval_psnr, "train_seconds",
      k->train_seconds, "h_encoder", AN_KEY_ENCODER, "l_decoder", AN_KEY_DECODER);
  snprintf(path, sizeof path, "%s/%s", dir, AN_KEY_MANIFEST);
  if (!j)
    snprintf(err, errlen, "out of memory writing the manifest");
  else
    rc = an_json_write_file(path, j, 0600, err, errlen);
  json_decref(j);
  return rc;
}

static int an_key_copy_str(const json_t *o, const char *field, char *dst, size_t cap) {
  const char *v = json_string_value(json_object_get(o, field));
  if (!v || strlen(v) >= cap)
    return -1;
  memcpy(dst, v, strlen(v) + 1);
  return 0;
}

int an_key_read_manifest(const char *dir, an_key_manifest_t *k, char *err, size_t errlen) {
  char path[4096];
  json_error_t jerr;
  json_t *j = NULL, *in, *code, *ds, *rec;
  const char *bad = NULL;
  int rc = AN_EFORMAT;

  memset(k, 0, sizeof *k);
  snprintf(path, sizeof path, "%s/%s", dir, AN_KEY_MANIFEST);
  if (!(j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr))) {
    if (jerr.line < 0) { /* could not read the file at all */
      snprintf(err, errlen, "%s: cannot read: %s (is %s a key folder made by 'train'?)", path,
               jerr.text, dir);
      rc = UV_ENOENT;
    } else {
      snprintf(err, errlen, "%s: line %d: %s", path, jerr.line, jerr.text);
    }
    goto done;
  }
  const char *fmt = json_string_value(json_object_get(j, "format"));
  if (!fmt || strcmp(fmt, AN_KEY_FORMAT) != 0) {
    snprintf(err, errlen, "%s: not an ArchNet key manifest (format '%s', expected '%s')", path,
             fmt ? fmt : "?", AN_KEY_FORMAT);
    goto done;
  }
  in = json_object_get(j, "input");
  code = json_object_get(j, "code");
  ds = json_object_get(j, "dataset");
  rec = json_object_get(j, "reconstruction");
  if (an_key_copy_str(j, "preset", k->preset, sizeof k->preset))
    bad = "preset";
  else if (an_key_copy_str(j, "loss", k->loss, sizeof k->loss) ||
           (strcmp(k->loss, "mse") != 0 && strcmp(k->loss, "bce") != 0))
    bad = "loss";
  else if (an_key_copy_str(j, "precision", k->precision, sizeof k->precision))
    bad = "precision";
  else if (!json_is_array(in) || json_array_size(in) != 3 || !json_is_array(code) ||
           json_array_size(code) != 3)
    bad = "input/code shapes";
  else if (!json_is_object(ds) ||
           an_key_copy_str(ds, "format", k->dataset_format, sizeof k->dataset_format) ||
           an_key_copy_str(ds, "digest", k->dataset_digest, sizeof k->dataset_digest))
    bad = "dataset";
  if (!bad)
    for (int i = 0; i < 3 && !bad; i++) {
      json_int_t a = json_integer_value(json_array_get(in, (size_t)i));
      json_int_t b = json_integer_value(json_array_get(code, (size_t)i));
      if (a < 1 || a > 65536 || b < 1 || b > 65536)
        bad = "input/code shapes";
      k->input[i] = (int)a;
      k->code[i] = (int)b;
    }
  if (bad) {
    snprintf(err, errlen, "%s: missing or invalid '%s'", path, bad);
    goto done;
  }
  k->seed = (uint64_t)json_integer_value(json_object_get(j, "seed"));
  k->epochs = json_integer_value(json_object_get(j, "epochs"));
  k->images = json_integer_value(json_object_get(j, "images"));
  k->batch = json_integer_value(json_object_get(j, "batch"));
  k->lr = json_number_value(json_object_get(j, "lr"));
  k->train_seconds = json_number_value(json_object_get(j, "train_seconds"));
  if (json_is_object(rec)) {
    k->eval_images = json_integer_value(json_object_get(rec, "images"));
    k->eval_mse = json_number_value(json_object_get(rec, "mse"));
    k->eval_psnr = json_number_value(json_object_get(rec, "psnr_db"));
  }
  rc = 0;
done:
  json_decref(j);
  return rc;
}

static size_t an_key_numel(const int chw[3]) {
  return (size_t)chw[0] * (size_t)chw[1] * (size_t)chw[2];
}

size_t an_key_in_size(const an_key_t *k) {
  return an_key_numel(k->decoder ? k->manifest.code : k->manifest.input);
}

size_t an_key_out_size(const an_key_t *k) {
  return an_key_numel(k->decoder ? k->manifest.input : k->manifest.code);
}

int an_key_open(const char *dir, int decoder, an_key_t *k, char *err, size_t errlen) {
  char path[4096], why[1024];
  int rc, dtype, ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];

  memset(k, 0, sizeof *k);
  k->decoder = decoder;
  if ((rc = an_key_read_manifest(dir, &k->manifest, err, errlen)) != 0)
    return rc;
  snprintf(path, sizeof path, "%s/%s", dir, decoder ? AN_KEY_DECODER : AN_KEY_ENCODER);
  if ((rc = an_onnx_load_file(path, NULL, &k->model, why, sizeof why)) != 0) {
    snprintf(err, errlen, "%s: %s", path, why);
    return rc;
  }
  /* A key trained with bf16 products runs in bf16 too: same arithmetic as
   * in training, and twice as fast on the CPUs that chose it. */
  an_onnx_set_bf16(k->model, strcmp(k->manifest.precision, "bf16") == 0);
  const int *want_in = decoder ? k->manifest.code : k->manifest.input;
  const int *want_out = decoder ? k->manifest.input : k->manifest.code;
  int ok = an_onnx_input_count(k->model) == 1 && an_onnx_output_count(k->model) >= 1 &&
           an_onnx_input_shape(k->model, 0, &dtype, &ndim, dims) == 0 && ndim == 4 &&
           dims[1] == want_in[0] && dims[2] == want_in[1] && dims[3] == want_in[2] &&
           an_onnx_output_shape(k->model, 0, &dtype, &ndim, dims) == 0 && ndim == 4 &&
           dims[1] == want_out[0] && dims[2] == want_out[1] && dims[3] == want_out[2];
  if (!ok) {
    snprintf(err, errlen, "%s does not map %dx%dx%d to %dx%dx%d as the manifest says", path,
             want_in[0], want_in[1], want_in[2], want_out[0], want_out[1], want_out[2]);
    an_key_close(k);
    return AN_EFORMAT;
  }
  return 0;
}

void an_key_close(an_key_t *k) {
  an_onnx_free(k->model);
  k->model = NULL;
}

int an_key_run(an_key_t *k, const float *in, size_t n, size_t batch, float *out, char *err,
               size_t errlen) {
  const int *shape = k->decoder ? k->manifest.code : k->manifest.input;
  size_t in_size = an_key_in_size(k), out_size = an_key_out_size(k);
  float *pad = NULL;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i += batch) {
    size_t b = n - i < batch ? n - i : batch;
    const float *src = in + i * in_size;
    /* A short batch is padded to the full size: kernels (and the packed
     * weights of big layers) are built per batch size, and a second size
     * would build them all again. */
    if (b < batch) {
      if (!pad && !(pad = calloc(batch * in_size, sizeof *pad))) {
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
      }
      memcpy(pad, src, b * in_size * sizeof *pad);
      src = pad;
    }
    size_t rows = src == pad ? batch : b;
    an_onnx_tensor_t x = {.dtype = AN_ONNX_FLOAT, .ndim = 4,
                          .dims = {(int64_t)rows, shape[0], shape[1], shape[2]},
                          .data = (void *)src};
    an_onnx_tensor_t y = {0};
    if ((rc = an_onnx_run(k->model, &x, 1, &y, 1, err, errlen)) == 0)
      memcpy(out + i * out_size, y.data, b * out_size * sizeof(float));
    an_onnx_tensor_free(&y);
  }
  free(pad);
  return rc;
}
