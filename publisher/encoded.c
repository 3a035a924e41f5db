/* Stored representations of codes and encoding.json (see encoded.h). */
#include "publisher/encoded.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "common/error.h"
#include "common/small_file.h"
#include "common/nn/tensor.h"

const char *an_encoded_dtype_name(an_npy_dtype_t t) {
  return t == AN_NPY_F16 ? "f16" : t == AN_NPY_F32 ? "f32" : t == AN_NPY_U8 ? "u8" : "?";
}

size_t an_encoded_elem_size(const an_encoded_info_t *e) {
  return e->dtype == AN_NPY_F32 ? 4 : e->dtype == AN_NPY_F16 ? 2 : 1;
}

static size_t an_plane(const an_encoded_info_t *e) {
  return (size_t)e->shape[1] * (size_t)e->shape[2];
}

void an_encoded_store(const an_encoded_info_t *e, const float *code, size_t n, void *dst) {
  size_t per = (size_t)e->shape[0] * an_plane(e), total = n * per;
  if (e->dtype == AN_NPY_F32) {
    memcpy(dst, code, total * sizeof(float));
  } else if (e->dtype == AN_NPY_F16) {
    an_f16_from_f32_n(dst, code, total);
  } else {
    uint8_t *q = dst;
    for (size_t i = 0; i < total; i++) {
      int c = (int)(i % per / an_plane(e));
      float span = e->hi[c] - e->lo[c], v = (code[i] - e->lo[c]) / (span > 0 ? span : 1) * 255;
      q[i] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : lrintf(v));
    }
  }
}

void an_encoded_model_input(const an_encoded_info_t *e, const void *src, size_t n, float *out) {
  size_t total = n * (size_t)e->shape[0] * an_plane(e);
  if (e->dtype == AN_NPY_F32) {
    memcpy(out, src, total * sizeof(float));
  } else if (e->dtype == AN_NPY_F16) {
    an_f32_from_f16_n(out, src, total);
  } else {
    for (size_t i = 0; i < total; i++)
      out[i] = ((const uint8_t *)src)[i];
  }
}

void an_encoded_code_values(const an_encoded_info_t *e, const void *src, size_t n, float *out) {
  size_t per = (size_t)e->shape[0] * an_plane(e), total = n * per;
  an_encoded_model_input(e, src, n, out);
  if (e->dtype != AN_NPY_U8)
    return;
  for (size_t i = 0; i < total; i++) {
    int c = (int)(i % per / an_plane(e));
    out[i] = e->lo[c] + out[i] / 255.0f * (e->hi[c] - e->lo[c]);
  }
}

int an_encoded_write_info(const char *dir, const an_encoded_info_t *e, char *err, size_t errlen) {
  char path[4096];
  int rc = UV_ENOMEM;
  json_t *j = json_pack("{s:s, s:s, s:[i,i,i], s:{s:I, s:f, s:I, s:I, s:I, s:I}, s:s}", "format",
                        AN_ENCODED_FORMAT, "dtype", an_encoded_dtype_name(e->dtype), "shape",
                        e->shape[0], e->shape[1], e->shape[2], "split", "seed",
                        (json_int_t)e->split_seed, "val_fraction", e->val_fraction, "source",
                        (json_int_t)e->n_source, "train", (json_int_t)e->n_train, "val",
                        (json_int_t)e->n_val, "test", (json_int_t)e->n_test, "dataset_digest",
                        e->dataset_digest);
  if (j && e->n_test > 0 && json_object_set_new(j, "test_digest", json_string(e->test_digest)))
    goto done;
  if (j && e->dtype == AN_NPY_U8) {
    json_t *scale = json_array();
    for (int c = 0; scale && c < e->shape[0]; c++)
      json_array_append_new(scale, json_pack("[f,f]", e->lo[c], e->hi[c]));
    if (!scale || json_object_set_new(j, "u8_range", scale) != 0)
      goto done;
  }
  if (!j) {
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  snprintf(path, sizeof path, "%s/%s", dir, AN_ENCODED_INFO);
  rc = an_json_write_file(path, j, 0644, err, errlen);
done:
  json_decref(j);
  return rc;
}

int an_encoded_read_info(const char *dir, an_encoded_info_t *e, char *err, size_t errlen) {
  char path[4096];
  json_error_t jerr;
  json_t *j;
  const char *bad = NULL;
  memset(e, 0, sizeof *e);
  snprintf(path, sizeof path, "%s/%s", dir, AN_ENCODED_INFO);
  if (!(j = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr))) {
    snprintf(err, errlen, "%s: %s", path, jerr.text);
    return jerr.line < 0 ? UV_ENOENT : AN_EFORMAT;
  }
  const char *fmt = json_string_value(json_object_get(j, "format"));
  const char *dt = json_string_value(json_object_get(j, "dtype"));
  json_t *shape = json_object_get(j, "shape"), *split = json_object_get(j, "split");
  json_t *range = json_object_get(j, "u8_range");
  const char *digest = json_string_value(json_object_get(j, "dataset_digest"));
  if (!fmt || strcmp(fmt, AN_ENCODED_FORMAT) != 0)
    bad = "format";
  else if (!dt || (strcmp(dt, "f16") && strcmp(dt, "f32") && strcmp(dt, "u8")))
    bad = "dtype";
  else if (!json_is_array(shape) || json_array_size(shape) != 3 || !json_is_object(split))
    bad = "shape or split";
  else if (!digest || strlen(digest) != 64)
    bad = "dataset_digest";
  if (!bad) {
    e->dtype = !strcmp(dt, "f16") ? AN_NPY_F16 : !strcmp(dt, "f32") ? AN_NPY_F32 : AN_NPY_U8;
    for (int i = 0; i < 3 && !bad; i++) {
      json_int_t v = json_integer_value(json_array_get(shape, (size_t)i));
      if (v < 1 || v > 65536 || (i == 0 && v > AN_ENCODED_MAX_C))
        bad = "shape";
      e->shape[i] = (int)v;
    }
    memcpy(e->dataset_digest, digest, 65);
    const char *td = json_string_value(json_object_get(j, "test_digest"));
    if (td && strlen(td) == 64)
      memcpy(e->test_digest, td, 65);
    e->split_seed = (uint64_t)json_integer_value(json_object_get(split, "seed"));
    e->val_fraction = json_number_value(json_object_get(split, "val_fraction"));
    e->n_source = json_integer_value(json_object_get(split, "source"));
    e->n_train = json_integer_value(json_object_get(split, "train"));
    e->n_val = json_integer_value(json_object_get(split, "val"));
    e->n_test = json_integer_value(json_object_get(split, "test"));
    if (e->val_fraction < 0 || e->val_fraction >= 1 || e->n_train < 0 || e->n_val < 0 ||
        e->n_test < 0 || e->n_train + e->n_val != e->n_source)
      bad = "split";
  }
  if (!bad && e->dtype == AN_NPY_U8) {
    if (!json_is_array(range) || json_array_size(range) != (size_t)e->shape[0])
      bad = "u8_range";
    for (int c = 0; !bad && c < e->shape[0]; c++) {
      json_t *p = json_array_get(range, (size_t)c);
      e->lo[c] = (float)json_number_value(json_array_get(p, 0));
      e->hi[c] = (float)json_number_value(json_array_get(p, 1));
      if (!json_is_array(p) || !isfinite(e->lo[c]) || !isfinite(e->hi[c]) || e->hi[c] < e->lo[c])
        bad = "u8_range";
    }
  }
  json_decref(j);
  if (bad) {
    snprintf(err, errlen, "%s: missing or invalid '%s'", path, bad);
    return AN_EFORMAT;
  }
  return 0;
}
