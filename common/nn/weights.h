/* Trained models on disk, until ONNX export arrives: one file holding the
 * model's spec, its parameters and its state (batch-norm statistics) as
 * little-endian float32, and a SHA-256 of everything before it.
 *
 *   "ANWT" | u32 version=1 | u64 params | u64 state | u32 spec bytes | spec |
 *   params | state | sha256
 *
 * Files are untrusted on load: sizes are checked against the spec, the
 * digest is verified, and any mismatch is an error naming the problem. */
#ifndef AN_NN_WEIGHTS_H
#define AN_NN_WEIGHTS_H

#include <stddef.h>

#include "common/nn/model.h"

/* Writes `m` to `path` atomically (temporary file, fsync, rename). */
int an_weights_save(const an_model_t *m, const char *path, char *err, size_t errlen);

/* Rebuilds the model stored in `path` (finalized, not planned). */
int an_weights_load(const char *path, an_model_t **out, char *err, size_t errlen);

#endif
