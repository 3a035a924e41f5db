/* Training checkpoints: everything needed to continue a run exactly where
 * it stopped, so an interrupted training resumes to the same final weights
 * as an uninterrupted one.
 *
 *   "ANCK" | u32 version=1 | u64 params | u64 state | u32 moments |
 *   u64 optimizer steps | u32 meta bytes | meta | params | state |
 *   moment buffers | sha256 of everything before it
 *
 * `meta` is the caller's text (the trainer keeps its configuration and
 * position there, as JSON). The model itself is rebuilt by the caller from
 * its own description; the checkpoint only has to agree with it in size.
 * Written atomically; verified in full on load. */
#ifndef AN_NN_CHECKPOINT_H
#define AN_NN_CHECKPOINT_H

#include <stddef.h>

#include "common/nn/model.h"
#include "common/nn/optim.h"

/* Saves parameters, state and optimizer of a finalized model. */
int an_checkpoint_save(const char *path, an_model_t *m, an_optim_t *o, const char *meta,
                       char *err, size_t errlen);

/* Reads only the meta text (malloc'ed, caller frees), after verifying the
 * whole file's checksum: the caller decides from it whether the checkpoint
 * belongs to this run before loading the numbers. */
int an_checkpoint_meta(const char *path, char **meta, char *err, size_t errlen);

/* Loads the numbers into `m` (finalized, same sizes) and `o` (same kind).
 * On failure `m` and `o` may be partly overwritten: start over. */
int an_checkpoint_load(const char *path, an_model_t *m, an_optim_t *o, char *err,
                       size_t errlen);

#endif
