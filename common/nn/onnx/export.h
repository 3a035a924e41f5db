/* Writing common/nn models as ONNX, for any ONNX runtime (and ours):
 * opset 13, float32, a symbolic batch dimension named "N", weights as
 * initializers. Layers map to Conv, ConvTranspose, Flatten + Gemm, Relu,
 * LeakyRelu, Sigmoid, Tanh, MaxPool, AveragePool, GlobalAveragePool,
 * BatchNormalization (running statistics), Identity (dropout at inference),
 * Reshape and Add. A range of layers can be written on its own, which is how
 * the publisher stores ArchNet's H-encoder and L-decoder as two files. */
#ifndef AN_ONNX_EXPORT_H
#define AN_ONNX_EXPORT_H

#include <stddef.h>

#include "common/nn/model.h"
#include "common/nn/normalize.h"

typedef struct an_onnx_export_opts {
  const char *input_name;  /* default "input" */
  const char *output_name; /* default "output" */
  int first, last;         /* layers to write, inclusive; last < 0 = the last layer */
  const char *producer;    /* producer_name; default "archnet" */
  /* Optional input standardisation (common/nn/normalize.h): the graph
   * starts with Sub(mean) then Mul(scale), the float32 operations of
   * an_norm_apply in its order, so a model trained on standardised inputs
   * takes them as stored. */
  const an_norm_t *in_norm;
} an_onnx_export_opts_t;

/* Writes layers [first, last] of `m` to `path` atomically. A layer reading
 * an output from outside the range is an error. */
int an_onnx_export(const an_model_t *m, const an_onnx_export_opts_t *opts, const char *path,
                   char *err, size_t errlen);

/* Index of the layer labelled `label`, or -1. */
int an_model_find_label(const an_model_t *m, const char *label);

#endif
