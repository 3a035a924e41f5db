/* Neural-network models for training and inference on the CPU.
 *
 * A model is a chain of layers in NCHW float32, where a layer may take its
 * input from any earlier labelled layer (so residual nets fit). Build one
 * with the C builder (an_model_new + an_model_add) or from a text spec
 * (an_model_parse, common/nn/spec.c), or by preset name (presets.c).
 *
 * Memory: parameters, their gradients and the non-trained state (batch-norm
 * running statistics) each live in one flat buffer, so an optimizer is one
 * pass over contiguous memory. Activations are allocated by an_model_plan
 * for one batch size; forward and backward then allocate nothing.
 *
 * Shapes are per sample (C, H, W); a Linear layer's output is (OUT, 1, 1). */
#ifndef AN_NN_MODEL_H
#define AN_NN_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct an_model an_model_t;

typedef enum an_op_kind {
  AN_OP_CONV,       /* out, k, s, p, bias */
  AN_OP_CONVT,      /* transposed conv: out, k, s, p, bias */
  AN_OP_LINEAR,     /* out, bias; flattens its input */
  AN_OP_RELU,
  AN_OP_LEAKY_RELU, /* alpha (negative slope) */
  AN_OP_SIGMOID,
  AN_OP_TANH,
  AN_OP_MAXPOOL,    /* k, s (0 = k), p */
  AN_OP_AVGPOOL,    /* k, s (0 = k), p; padding counted, as PyTorch's default */
  AN_OP_GAP,        /* global average pool to (C, 1, 1) */
  AN_OP_BATCHNORM,  /* eps (alpha field), momentum */
  AN_OP_DROPOUT,    /* alpha = drop probability */
  AN_OP_FLATTEN,    /* (C*H*W, 1, 1) */
  AN_OP_RESHAPE,    /* shape[3] */
  AN_OP_ADD,        /* input + the layer labelled `with` (same shape) */
  AN_OP_COUNT
} an_op_kind_t;

typedef struct an_layer_desc {
  an_op_kind_t kind;
  int out;             /* output channels or features */
  int k, s, p;         /* kernel, stride, padding (square) */
  int no_bias;         /* conv, convt, linear: omit the bias */
  float alpha;         /* leaky slope, dropout probability, or batch-norm eps */
  float momentum;      /* batch-norm running-average momentum (PyTorch's meaning) */
  int shape[3];        /* reshape target (C, H, W) */
  const char *label;   /* names this layer's output for `from`/`with`; may be NULL */
  const char *from;    /* input: this label's output (default: the previous layer) */
  const char *with;    /* add: the second operand's label */
} an_layer_desc_t;

typedef enum an_init_kind {
  AN_INIT_UNIFORM, /* PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
  AN_INIT_KAIMING  /* N(0, 2/fan_in) weights, zero biases */
} an_init_kind_t;

/* A model taking inputs of shape (c, h, w). */
int an_model_new(int c, int h, int w, an_model_t **out);
void an_model_free(an_model_t *m);

/* Appends a layer, inferring its output shape. Errors (bad sizes, unknown
 * labels, shapes that do not fit) come back as AN_EMODEL with a sentence. */
int an_model_add(an_model_t *m, const an_layer_desc_t *d, char *err, size_t errlen);

/* Allocates parameters (initialised with `init`, seeded) after the last
 * an_model_add. Must be called once before plan. */
int an_model_finalize(an_model_t *m, an_init_kind_t init, uint64_t seed, char *err,
                      size_t errlen);

/* Prepares to run batches of `batch` samples; with_grad also prepares
 * backward. Re-planning for another batch size is allowed. */
int an_model_plan(an_model_t *m, int batch, int with_grad, char *err, size_t errlen);

/* Forward pass over `x` (batch x C x H x W, borrowed for the call and, in
 * training, until backward). Returns the output, owned by the model, valid
 * until the next forward. `train` selects batch statistics and dropout. */
int an_model_forward(an_model_t *m, const float *x, int train, const float **y);

/* The buffer a loss writes d(loss)/d(output) into before an_model_backward. */
float *an_model_output_grad(an_model_t *m);

/* Backward pass after a training forward: fills the parameter gradients
 * (overwriting, so no zeroing between steps). If dx is non-NULL it receives
 * d(loss)/d(input). */
int an_model_backward(an_model_t *m, float *dx);

/* Flat parameter and gradient buffers (owned by the model). */
float *an_model_params(an_model_t *m);
float *an_model_grads(an_model_t *m);
size_t an_model_param_count(const an_model_t *m);
/* Non-trained state (batch-norm running mean and variance). */
float *an_model_state(an_model_t *m);
size_t an_model_state_count(const an_model_t *m);

/* Shapes. */
void an_model_input_shape(const an_model_t *m, int chw[3]);
void an_model_output_shape(const an_model_t *m, int chw[3]);
int an_model_layer_count(const an_model_t *m);

/* Prints one line per layer (kind, output shape, parameters) and ends with
 * "params: N". */
void an_model_describe(const an_model_t *m, FILE *out);

/* The name used in specs ("conv", "linear", ...). */
const char *an_op_name(an_op_kind_t kind);

/* Arithmetic of the big matrix products (linear layers). F32 is exact to
 * float32; BF16 rounds the products' inputs to bfloat16 and accumulates in
 * float32 (master weights, gradients and optimizer stay float32), which is
 * several times faster on CPUs with AMX or AVX512-BF16. Set before plan. */
typedef enum an_precision { AN_PRECISION_F32 = 0, AN_PRECISION_BF16 = 1 } an_precision_t;
void an_model_set_precision(an_model_t *m, an_precision_t p);

/* Seed for dropout masks (reproducible runs). */
void an_model_set_seed(an_model_t *m, uint64_t seed);

/* Access to a layer's parameter views, for tests and exporters: weights and
 * bias offsets into an_model_params (count 0 when absent). */
typedef struct an_layer_info {
  an_layer_desc_t desc;
  int in[3], outshape[3];
  int input, input2;   /* node indices; -1 is the model input */
  size_t w_off, w_count, b_off, b_count, state_off, state_count;
} an_layer_info_t;
int an_model_layer_info(const an_model_t *m, int i, an_layer_info_t *info);

#endif
