/* Model descriptions as text, and the named presets.
 *
 * A spec is one layer per line; '#' starts a comment:
 *
 *   input 1 28 28            # first line: the per-sample shape C H W
 *   conv 32 k=3 p=1          # conv OUT k= [s=1] [p=0] [bias=1]
 *   b1: relu                 # "LABEL:" names a layer's output
 *   maxpool k=2              # maxpool/avgpool k= [s=k] [p=0]; gap
 *   linear 10                # linear OUT [bias=1] (flattens its input)
 *
 * Other layers: convt OUT k= [s=] [p=], leakyrelu [alpha=0.01], sigmoid,
 * tanh, batchnorm [eps=1e-5] [momentum=0.1], dropout [p=0.5], flatten,
 * reshape C H W, add LABEL (residual sum). Any layer takes from=LABEL to
 * read an earlier output instead of the previous line's. */
#ifndef AN_NN_SPEC_H
#define AN_NN_SPEC_H

#include <stddef.h>

#include "common/nn/model.h"

/* Builds a model from spec text (not yet finalized). Errors name the line. */
int an_model_parse(const char *text, an_model_t **out, char *err, size_t errlen);

/* Writes a spec that rebuilds `m` (same layers, labels and inputs). */
int an_model_to_spec(const an_model_t *m, char *buf, size_t len);

/* The spec text of a preset, written into buf. `chw` and `classes` apply to
 * the classifier presets (0 = the preset's default); the ArchNet presets
 * have the paper's fixed shapes. Presets: archnet-mnist, archnet-cifar10,
 * cnn-small, cnn-small-bn, cnn-patch, cnn-patch-dropout, resnet18. */
int an_preset_spec(const char *name, const int chw[3], int classes, char *buf, size_t len,
                   char *err, size_t errlen);

/* The preset names, NULL-terminated. */
extern const char *const an_preset_names[];

/* Parses a preset into a model (not yet finalized). */
int an_model_preset(const char *name, const int chw[3], int classes, an_model_t **out,
                    char *err, size_t errlen);

#endif
