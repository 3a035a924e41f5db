/* ONNX models: load, check and run, for models from untrusted sources.
 *
 * The broker scores workers' uploaded ONNX files, so everything a file says
 * is checked before anything runs: size limits, opset range, the default
 * domain only, no external data, every value defined once, a topological
 * order (sorted if needed), every operator and type supported, and shapes
 * inferred for a symbolic batch dimension. Any failure is an error with a
 * sentence, never a crash. Running is bounded in memory and time.
 *
 * Operators: Conv, ConvTranspose, Relu, LeakyRelu, Sigmoid, Tanh, Clip,
 * MaxPool, AveragePool, GlobalAveragePool, Pad, Gemm, MatMul, Add, Sub, Mul,
 * Div, Reshape, Flatten, Shape, Gather, Unsqueeze, Squeeze, Concat,
 * Constant, Identity, Transpose, BatchNormalization, Dropout (inference),
 * Softmax, LogSoftmax, ReduceMean, at opsets 7 to 17. Tensors: float32 and
 * int64 (and bool where an operator needs it). */
#ifndef AN_ONNX_H
#define AN_ONNX_H

#include <stddef.h>
#include <stdint.h>

#define AN_ONNX_MAX_DIMS 8

/* ONNX TensorProto element types this runtime handles. */
enum { AN_ONNX_FLOAT = 1, AN_ONNX_INT64 = 7, AN_ONNX_BOOL = 9 };

typedef struct an_onnx an_onnx_t;

typedef struct an_onnx_limits {
  size_t max_file_bytes;     /* the serialized model */
  size_t max_nodes;
  size_t max_tensor_elems;   /* any one tensor, initializer or computed */
  uint64_t max_memory_bytes; /* live tensors during a run */
  double max_seconds;        /* wall time of one run; 0 = unlimited */
} an_onnx_limits_t;

/* 256 MiB files, 10,000 nodes, 2^28 elements per tensor, 4 GiB, 60 s. */
void an_onnx_default_limits(an_onnx_limits_t *lim);

/* A tensor handed in or out. Outputs of an_onnx_run are allocated by it;
 * release them with an_onnx_tensor_free. */
typedef struct an_onnx_tensor {
  int dtype;
  int ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];
  void *data;
} an_onnx_tensor_t;
void an_onnx_tensor_free(an_onnx_tensor_t *t);

/* Loads and checks a model. Returns 0; AN_EUNSUPPORTED if it is valid ONNX
 * but uses an operator, attribute or type this runtime lacks; AN_EMODEL
 * for anything malformed or over a limit. `err` says which and where. */
int an_onnx_load(const void *bytes, size_t len, const an_onnx_limits_t *lim, an_onnx_t **out,
                 char *err, size_t errlen);
int an_onnx_load_file(const char *path, const an_onnx_limits_t *lim, an_onnx_t **out, char *err,
                      size_t errlen);
void an_onnx_free(an_onnx_t *m);

/* The graph's real inputs (initializers excluded) and its outputs, with
 * their inferred shapes: -1 marks a dimension that follows the batch size
 * (or is otherwise unknown); an output's ndim is -1 when its shape depends
 * on the values of an int64 input and is known only at run time. */
size_t an_onnx_input_count(const an_onnx_t *m);
size_t an_onnx_output_count(const an_onnx_t *m);
const char *an_onnx_input_name(const an_onnx_t *m, size_t i);
const char *an_onnx_output_name(const an_onnx_t *m, size_t i);
int an_onnx_input_shape(const an_onnx_t *m, size_t i, int *dtype, int *ndim, int64_t *dims);
int an_onnx_output_shape(const an_onnx_t *m, size_t i, int *dtype, int *ndim, int64_t *dims);

/* Lets convolutions and fully connected Gemms (constant B) read their
 * activations and weights as bfloat16 and accumulate in float32 (Intel AMX / AVX-512 BF16 through oneDNN): several
 * times faster on CPUs that have it, at about three significant digits
 * (outputs typically within 1e-2 of float32). Off by default; results in
 * float32 mode match PyTorch to 1e-5. */
void an_onnx_set_bf16(an_onnx_t *m, int on);

/* Runs the model (one run at a time per model: kernels and buffers are
 * cached on it). inputs[i] matches input i (shape checked against the
 * declared one); outputs receives n_out tensors. On failure the outputs are
 * left empty and `err` says why. */
int an_onnx_run(an_onnx_t *m, const an_onnx_tensor_t *inputs, size_t n_in,
                an_onnx_tensor_t *outputs, size_t n_out, char *err, size_t errlen);

#endif
