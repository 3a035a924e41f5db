/* The publisher's secret key: a folder holding
 *
 *   h_encoder.onnx   image (float32 N x C x H x W, pixels / 255) -> code
 *   l_decoder.onnx   code -> image (same scale; clamp to [0, 1] to show)
 *   manifest.json    how it was made and how well it reconstructs
 *
 * Whoever holds the folder can encode and decode: it stays with the data
 * owner (mode 0700), and only encoded data leaves the machine. */
#ifndef AN_PUBLISHER_KEY_H
#define AN_PUBLISHER_KEY_H

#include <stddef.h>
#include <stdint.h>

#include "common/nn/onnx/onnx.h"

#define AN_KEY_ENCODER "h_encoder.onnx"
#define AN_KEY_DECODER "l_decoder.onnx"
#define AN_KEY_MANIFEST "manifest.json"
#define AN_KEY_FORMAT "archnet-key/1"

typedef struct an_key_manifest {
  char preset[64];       /* preset name, or "spec" */
  char loss[8];          /* "mse" or "bce" */
  char precision[8];     /* "f32" or "bf16" (matrix products while training) */
  int input[3];          /* C, H, W of the images */
  int code[3];           /* C, H, W of the encoding */
  uint64_t seed;
  int64_t epochs, images, batch;
  double lr;
  char dataset_format[16];
  char dataset_digest[65];
  int64_t eval_images;   /* held-out test images the figures below come from */
  double eval_mse, eval_psnr; /* mean over images of the per-image MSE / PSNR (dB) */
  double train_seconds;
} an_key_manifest_t;

/* Writes DIR/manifest.json atomically. */
int an_key_write_manifest(const char *dir, const an_key_manifest_t *k, char *err, size_t errlen);
/* Reads and checks DIR/manifest.json (an untrusted file: every field is
 * type- and range-checked, errors name the file and the field). */
int an_key_read_manifest(const char *dir, an_key_manifest_t *k, char *err, size_t errlen);

/* A key opened for use: the manifest and the runtime model of one half. */
typedef struct an_key {
  an_key_manifest_t manifest;
  an_onnx_t *model; /* owned */
  int decoder;      /* which half is open */
} an_key_t;

/* Opens DIR's encoder (decoder = 0) or decoder (decoder = 1) and checks it
 * against the manifest's shapes. Release with an_key_close. */
int an_key_open(const char *dir, int decoder, an_key_t *k, char *err, size_t errlen);
void an_key_close(an_key_t *k);

/* Runs the opened half on n inputs (n x in_size floats) into out
 * (n x out_size floats), `batch` at a time; a short batch is padded to
 * `batch` rows (so pass batch <= n for a one-off small call). */
int an_key_run(an_key_t *k, const float *in, size_t n, size_t batch, float *out, char *err,
               size_t errlen);

/* Elements per item on each side of the opened half. */
size_t an_key_in_size(const an_key_t *k);
size_t an_key_out_size(const an_key_t *k);

#endif
