/* Inside an ONNX model: values, nodes and the operator table. Internal to
 * common/nn/onnx. */
#ifndef AN_ONNX_GRAPH_H
#define AN_ONNX_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

#include "common/nn/onnx/onnx.h"
#include "proto/onnx.pb-c.h"

/* A float tensor kept in one of oneDNN's blocked layouts (nChw16c and the
 * like) between operators that understand it, so a chain of convolutions and
 * pools pays no reorder per operator. Owned by the kernel cache of the node
 * that produces it, so it outlives every run's values. */
typedef struct an_olayout {
  dnnl_memory_desc_t md;    /* the blocked layout */
  size_t bytes;             /* its size, padding included */
  dnnl_primitive_t to_plain; /* reorder to row-major NCHW */
  dnnl_memory_t from_mem, to_mem;
} an_olayout_t;

/* A tensor value during shape probing or a run. */
typedef struct an_oval {
  int dtype;
  int ndim;
  int64_t dims[AN_ONNX_MAX_DIMS];
  void *data;   /* NULL while only the shape is known */
  size_t bytes; /* size of data as allocated (a blocked layout pads) */
  const an_olayout_t *layout; /* NULL: row-major; else data is in this layout */
  int borrowed; /* data belongs to someone else (initializer, caller) */
  int present;  /* the value exists in this pass */
} an_oval_t;

size_t an_oval_numel(const an_oval_t *v);
size_t an_onnx_dtype_size(int dtype);

typedef struct an_onode an_onode_t;
typedef struct an_oexec an_oexec_t;

/* An operator: computes output shapes always, and data unless probing
 * (int64 outputs are computed while probing too: shapes flow through them).
 * Returns 0, AN_EMODEL (bad model or input) or AN_EUNSUPPORTED, with a
 * sentence in the context's error buffer. */
typedef int (*an_op_fn)(an_oexec_t *x, const an_onode_t *n, an_oval_t **in, an_oval_t **out);

typedef struct an_oop {
  const char *name;
  int min_inputs, max_inputs, min_outputs, max_outputs;
  an_op_fn run;
  int blocked_ok; /* accepts inputs in a blocked layout; others get row-major */
} an_oop_t;

struct an_onode {
  const Onnx__NodeProto *proto; /* attributes live here */
  const an_oop_t *op;
  int n_in, n_out;
  int *in, *out; /* value indices; -1 for an omitted optional input */
  void *cache;   /* the op's per-shape state (oneDNN primitives) */
  void (*cache_free)(void *);
  /* Set at load by an_onnx_fuse: a Conv that applies the Relu which
   * followed it (that Relu node is then dropped: n_in = n_out = 0). */
  int fused_relu;
};

struct an_onnx {
  an_onnx_limits_t lim;
  uint8_t *bytes;          /* copy of the file; the protobuf points into an arena */
  void *arena;             /* an_arena_t holding the unpacked ModelProto */
  Onnx__ModelProto *proto;
  int64_t opset;
  size_t n_values;
  char **value_names;      /* borrowed from the proto */
  an_oval_t *consts;       /* initializers and Constant outputs (data owned here) */
  int *is_const;
  int *consumers;          /* how many nodes read each value */
  an_onode_t *nodes;       /* in topological order */
  size_t n_nodes;
  size_t n_inputs, n_outputs;
  int *inputs, *outputs;   /* value indices */
  an_oval_t *in_info, *out_info; /* inferred shapes, -1 = batch-dependent */
  dnnl_engine_t eng;       /* created on first use by a kernel that needs it */
  int bf16;                /* convolutions read bfloat16 (an_onnx_set_bf16) */
  uint64_t cache_bytes;    /* kernels' cached buffers, counted in every run's limit */
  /* Tensor buffers freed by earlier runs, reused by size: the same model at
   * the same batch size allocates the same sizes every run, and fresh large
   * allocations cost page faults each time. */
  void *pool[64];
  size_t pool_size[64];
  int n_pool;
  uint64_t pool_bytes;
  dnnl_stream_t stream;
};

/* The context of one pass (probe or run). */
struct an_oexec {
  an_onnx_t *m;
  an_oval_t *vals;
  int probe;
  uint64_t live_bytes;  /* tensors and operator scratch, against max_memory_bytes */
  int *left;            /* readers still to come, per value */
  double deadline;      /* monotonic seconds; 0 = none */
  char *err;
  size_t errlen;
};

/* Probe-only outcome: a shape depends on an input's values, so static
 * inference stops there (not an error in the model). */
#define AN_EUNKNOWN_SHAPE 1

/* Helpers for operators. */
int an_oexec_alloc(an_oexec_t *x, an_oval_t *v, int dtype, int ndim, const int64_t *dims);
int an_oexec_fail(an_oexec_t *x, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a float tensor in a blocked layout (v->layout = l). */
int an_oexec_alloc_blocked(an_oexec_t *x, an_oval_t *v, int ndim, const int64_t *dims,
                           const an_olayout_t *l);
/* Moves the input's buffer to the output when this node is its last reader
 * (and it is the run's own), so element-wise operators work in place.
 * Returns 1 if it did (out then has in's shape, layout and data). */
int an_oexec_steal(an_oexec_t *x, const an_onode_t *n, int k, an_oval_t *in, an_oval_t *out);
/* Converts a blocked value to row-major in a new buffer; no-op if plain. */
int an_oval_make_plain(an_oexec_t *x, an_oval_t *v);
/* Blocked layouts, built by the kernels that produce them. */
int an_olayout_init(an_onnx_t *m, an_olayout_t *l, const dnnl_memory_desc_t *md);
void an_olayout_destroy(an_olayout_t *l);
/* The model's oneDNN engine and stream, created on first use. */
int an_onnx_engine(an_onnx_t *m);
/* Folds each Relu into the Conv before it where that Conv's output has no
 * other reader and is not a graph output. Called once at load. */
void an_onnx_fuse(an_onnx_t *m);

/* Scratch memory for an operator, counted against the memory limit. */
void *an_oexec_scratch(an_oexec_t *x, size_t bytes);
void an_oexec_scratch_free(an_oexec_t *x, void *p, size_t bytes);
/* Operators with long inner loops call this now and then: UV_ETIMEDOUT once
 * the run is past its deadline, else 0. */
int an_oexec_check_time(an_oexec_t *x);
/* The same test without setting an error: safe from worker threads. */
int an_oexec_deadline_passed(const an_oexec_t *x);

/* Attributes of a node, with defaults. */
const Onnx__AttributeProto *an_oattr(const an_onode_t *n, const char *name);
int64_t an_oattr_int(const an_onode_t *n, const char *name, int64_t def);
float an_oattr_float(const an_onode_t *n, const char *name, float def);
/* Copies up to `max` ints; returns how many (or `def_count` defaults). */
int an_oattr_ints(const an_onode_t *n, const char *name, int64_t *out, int max);

const an_oop_t *an_onnx_find_op(const char *name);

/* Decodes a TensorProto (checked against max_elems); v owns the data. */
int an_oval_from_proto(const Onnx__TensorProto *t, size_t max_elems, an_oval_t *v, char *err,
                       size_t errlen);

/* Frees the pooled tensor buffers. */
void an_pool_flush(an_onnx_t *m);

/* Shape inference at a given batch size (load time). */
int an_onnx_probe(an_onnx_t *m, int64_t batch, an_oval_t *outs, char *err, size_t errlen);

#endif
