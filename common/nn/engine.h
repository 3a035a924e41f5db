/* The compute engine behind common/nn: oneDNN (Debian's libdnnl) on the CPU.
 *
 * One engine and stream per model. Primitives are created once per batch
 * size at plan time with user-managed scratchpads, so a training step makes
 * no allocation: every buffer a primitive touches was allocated at plan time.
 * Internal to common/nn. */
#ifndef AN_NN_ENGINE_H
#define AN_NN_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

typedef struct an_engine {
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  dnnl_primitive_attr_t attr; /* scratchpad mode "user" */
  size_t scratch_need;        /* largest scratchpad any primitive asked for */
  void *scratch;              /* shared by all primitives, run one at a time */
  dnnl_memory_t scratch_mem;
  size_t scratch_cap;
} an_engine_t;

int an_engine_init(an_engine_t *e, char *err, size_t errlen);
void an_engine_destroy(an_engine_t *e);

/* Activation layouts. The caller's tensors are NCHW; convolutions, pooling
 * and batch norm run several times faster on channels-last (NHWC) data, so
 * the model keeps their activations NHWC and converts at the edges. */
typedef enum an_layout { AN_NCHW = 0, AN_NHWC = 1, AN_LAYOUT_ANY = 2 } an_layout_t;

/* A plain (row-major, "abcd") f32 memory descriptor. */
void an_engine_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims);

/* A 4-D f32 activation descriptor (N, C, H, W) in the given layout. */
void an_engine_md4(dnnl_memory_desc_t *md, const int64_t dims[4], an_layout_t layout);

/* A reorder between two descriptors, with memory objects for both ends. */
typedef struct an_reorder {
  dnnl_primitive_t prim;
  dnnl_memory_t src, dst;
} an_reorder_t;
int an_reorder_init(an_engine_t *e, an_reorder_t *r, const dnnl_memory_desc_t *from,
                    const dnnl_memory_desc_t *to);
int an_reorder_run(an_engine_t *e, an_reorder_t *r, const void *from, void *to);
void an_reorder_destroy(an_reorder_t *r);

/* Creates a primitive from an op descriptor; records its scratchpad need.
 * `hint` is the forward primitive descriptor for backward ones. The primitive
 * descriptor is kept in *pd_out when non-NULL (caller destroys it). */
int an_engine_primitive(an_engine_t *e, const void *op_desc, const_dnnl_primitive_desc_t hint,
                        dnnl_primitive_t *prim, dnnl_primitive_desc_t *pd_out);

/* A memory object over a caller-owned buffer (may be NULL, set later). */
int an_engine_memory(an_engine_t *e, const dnnl_memory_desc_t *md, void *data,
                     dnnl_memory_t *out);

/* Allocates the shared scratchpad after all primitives exist. */
int an_engine_commit_scratch(an_engine_t *e);

/* Executes with the shared scratchpad appended to `args`. `args` must have
 * room for one more entry. */
int an_engine_exec(an_engine_t *e, dnnl_primitive_t prim, int nargs, dnnl_exec_arg_t *args);

/* Destroys the non-NULL primitives and memory objects of an op's state. */
void an_engine_release(dnnl_primitive_t *prims, size_t n_prims, dnnl_memory_t *mems,
                       size_t n_mems);

/* Converts float32 to bfloat16, rounding to nearest even (NaN stays NaN). */
void an_bf16_from_f32(uint16_t *dst, const float *src, size_t n);

/* Whether this CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX), so
 * that the bf16 precision options pay off rather than being emulated. */
int an_engine_has_fast_bf16(void);

/* Translates a oneDNN status for messages. */
const char *an_engine_status(dnnl_status_t st);

#endif
