/* Standardisation of C x H x W inputs with statistics measured on a
 * training set: x' = (x - mean) * scale[c], where mean is per channel, or
 * per channel and position (the training set's mean image), and scale[c]
 * is 1 / the standard deviation of channel c's centred values.
 *
 * A worker has its encoded training set, so it may standardise the codes
 * with their own statistics. The mean image matters for ArchNet codes: each
 * position has its own large offset (the H-encoder's fixed pattern), which a
 * convolution, sharing weights across positions, cannot remove. The ONNX
 * exporter writes the same step in front of the model
 * (an_onnx_export_opts_t.in_norm) so the exported model takes the codes as
 * stored. */
#ifndef AN_NN_NORMALIZE_H
#define AN_NN_NORMALIZE_H

#include <stddef.h>
#include <stdint.h>

typedef struct an_norm {
  int c;
  size_t hw;            /* values per channel in one sample */
  int per_position;     /* mean per (channel, position) instead of per channel */
  double *sum, *sum_sq; /* running sums per mean entry, in double */
  uint64_t samples;     /* samples accumulated */
  float *mean;          /* c * hw values if per_position, else c; set by finish */
  float *scale;         /* c values; set by finish */
} an_norm_t;

/* Prepares statistics for samples of c x hw values. Returns 0 or
 * UV_ENOMEM; destroy with an_norm_destroy either way. */
int an_norm_init(an_norm_t *n, int c, size_t hw, int per_position);
void an_norm_destroy(an_norm_t *n);

/* Adds one sample (c x hw values) to the statistics. */
void an_norm_accumulate(an_norm_t *n, const float *x);

/* Turns the sums into mean and scale = 1 / std: the population standard
 * deviation (numpy's ddof=0) of channel c's values minus their mean; a
 * channel whose std is below 1e-6 keeps scale 1. Returns 0, or AN_EFORMAT
 * if nothing was accumulated. */
int an_norm_finish(an_norm_t *n);

/* Standardises one sample (c x hw values) in place. */
void an_norm_apply(const an_norm_t *n, float *x);

#endif
