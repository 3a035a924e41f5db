/* An encoded dataset as `encode` writes it:
 *
 *   train_x.npy  N x C x H x W codes (float16 by default, float32, or uint8)
 *   train_y.npy  N labels, uint8
 *   val_x.npy, val_y.npy   the validation part (the broker keeps it)
 *   test_x.npy, test_y.npy with --with-test (the owner's own evaluation)
 *   encoding.json how the codes are stored, and where they came from
 *
 * A model trained on X sees the stored numbers converted to float32 as
 * they are (uint8 as 0..255): this module turns codes into that
 * representation and back, so `predict` feeds models exactly what they
 * were trained on. */
#ifndef AN_PUBLISHER_ENCODED_H
#define AN_PUBLISHER_ENCODED_H

#include <stddef.h>
#include <stdint.h>

#include "common/blob/npy.h"

#define AN_ENCODED_INFO "encoding.json"
#define AN_ENCODED_FORMAT "archnet-encoded/1"
#define AN_ENCODED_MAX_C 256

typedef struct an_encoded_info {
  an_npy_dtype_t dtype;    /* AN_NPY_F16, AN_NPY_F32 or AN_NPY_U8 */
  int shape[3];            /* C, H, W of one code */
  /* uint8 only: code value v is stored as round((v - lo) / (hi - lo) * 255),
   * clamped, with lo/hi per channel measured on a sample of the training set. */
  float lo[AN_ENCODED_MAX_C], hi[AN_ENCODED_MAX_C];
  uint64_t split_seed;
  double val_fraction;
  int64_t n_source;        /* training-split images the split was made from */
  int64_t n_train, n_val, n_test;
  char dataset_digest[65]; /* of the training split's files */
  char test_digest[65];    /* of the test split's, when n_test > 0 */
} an_encoded_info_t;

const char *an_encoded_dtype_name(an_npy_dtype_t t);

int an_encoded_write_info(const char *dir, const an_encoded_info_t *e, char *err, size_t errlen);
/* Reads and checks DIR/encoding.json (untrusted: fields checked). */
int an_encoded_read_info(const char *dir, an_encoded_info_t *e, char *err, size_t errlen);

/* Codes (n x C x H x W floats) to the stored element type, into dst. */
void an_encoded_store(const an_encoded_info_t *e, const float *code, size_t n, void *dst);
/* Stored elements back to floats as a model sees them (uint8 as 0..255). */
void an_encoded_model_input(const an_encoded_info_t *e, const void *src, size_t n, float *out);
/* Stored elements back to code values (uint8 dequantised), for the decoder. */
void an_encoded_code_values(const an_encoded_info_t *e, const void *src, size_t n, float *out);

/* Bytes of one stored element. */
size_t an_encoded_elem_size(const an_encoded_info_t *e);

#endif
