#include "common/nn/onnx/export.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/arena.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "proto/onnx.pb-c.h"

#define AN_EXPORT_OPSET 13

/* The graph under construction; everything lives in the arena. */
typedef struct an_export {
  an_arena_t arena;
  Onnx__NodeProto **nodes;
  size_t n_nodes, cap_nodes;
  Onnx__TensorProto **inits;
  size_t n_inits, cap_inits;
  int oom;
} an_export_t;

static void *ex_alloc(an_export_t *ex, size_t n) {
  void *p = an_arena_alloc(&ex->arena, n);
  if (!p)
    ex->oom = 1;
  else
    memset(p, 0, n);
  return p;
}

static char *ex_name(an_export_t *ex, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ex_name(an_export_t *ex, const char *fmt, ...) {
  char buf[128];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char *s = an_arena_strdup(&ex->arena, buf);
  if (!s)
    ex->oom = 1;
  return s ? s : "";
}

/* Grows an arena-backed pointer array (old blocks stay until the end). */
static int ex_push(an_export_t *ex, void ***arr, size_t *n, size_t *cap, void *item) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 32;
    void **grown = ex_alloc(ex, nc * sizeof *grown);
    if (!grown)
      return -1;
    if (*n)
      memcpy(grown, *arr, *n * sizeof *grown);
    *arr = grown;
    *cap = nc;
  }
  (*arr)[(*n)++] = item;
  return 0;
}

static Onnx__NodeProto *ex_node(an_export_t *ex, const char *op, int n_in, char **in,
                                char *out) {
  Onnx__NodeProto *n = ex_alloc(ex, sizeof *n);
  char **ins = ex_alloc(ex, (size_t)(n_in ? n_in : 1) * sizeof *ins);
  char **outs = ex_alloc(ex, sizeof *outs);
  if (!n || !ins || !outs)
    return NULL;
  onnx__node_proto__init(n);
  memcpy(ins, in, (size_t)n_in * sizeof *ins);
  outs[0] = out;
  n->op_type = (char *)op;
  n->name = ex_name(ex, "%s_%zu", op, ex->n_nodes);
  n->n_input = (size_t)n_in;
  n->input = ins;
  n->n_output = 1;
  n->output = outs;
  if (ex_push(ex, (void ***)&ex->nodes, &ex->n_nodes, &ex->cap_nodes, n) != 0)
    return NULL;
  return n;
}

static Onnx__AttributeProto *ex_attr(an_export_t *ex, Onnx__NodeProto *n, const char *name) {
  Onnx__AttributeProto *a = ex_alloc(ex, sizeof *a);
  Onnx__AttributeProto **arr = ex_alloc(ex, (n->n_attribute + 1) * sizeof *arr);
  if (!a || !arr)
    return NULL;
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  if (n->n_attribute)
    memcpy(arr, n->attribute, n->n_attribute * sizeof *arr);
  arr[n->n_attribute++] = a;
  n->attribute = arr;
  return a;
}

static void ex_attr_ints(an_export_t *ex, Onnx__NodeProto *n, const char *name, int count,
                         int64_t v0, int64_t v1) {
  Onnx__AttributeProto *a = n ? ex_attr(ex, n, name) : NULL;
  int64_t *vals = ex_alloc(ex, 4 * sizeof *vals);
  if (!a || !vals)
    return;
  for (int i = 0; i < count; i++)
    vals[i] = i % 2 ? v1 : v0; /* count 2: (v0, v1); count 4: pads (v0, v1, v0, v1) */
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  a->has_type = 1;
  a->n_ints = (size_t)count;
  a->ints = vals;
}

static void ex_attr_int(an_export_t *ex, Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = n ? ex_attr(ex, n, name) : NULL;
  if (!a)
    return;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  a->has_type = a->has_i = 1;
  a->i = v;
}

static void ex_attr_float(an_export_t *ex, Onnx__NodeProto *n, const char *name, float v) {
  Onnx__AttributeProto *a = n ? ex_attr(ex, n, name) : NULL;
  if (!a)
    return;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  a->has_type = a->has_f = 1;
  a->f = v;
}

/* An initializer. Float data is referenced, not copied (the model outlives
 * the packing); int64 data is copied into the arena. */
static char *ex_init(an_export_t *ex, const char *name, int dtype, int ndim, const int64_t *dims,
                     const void *data) {
  Onnx__TensorProto *t = ex_alloc(ex, sizeof *t);
  int64_t *d = ex_alloc(ex, (size_t)(ndim ? ndim : 1) * sizeof *d);
  size_t n = 1, esize = dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? 4 : 8;
  char *nm = ex_name(ex, "%s", name);
  if (!t || !d)
    return "";
  onnx__tensor_proto__init(t);
  for (int i = 0; i < ndim; i++) {
    d[i] = dims[i];
    n *= (size_t)dims[i];
  }
  t->name = nm;
  t->n_dims = (size_t)ndim;
  t->dims = d;
  t->has_data_type = 1;
  t->data_type = dtype;
  t->has_raw_data = 1;
  t->raw_data.len = n * esize;
  if (esize == 8) {
    void *copy = ex_alloc(ex, n * esize);
    if (copy)
      memcpy(copy, data, n * esize);
    t->raw_data.data = copy;
  } else {
    t->raw_data.data = (uint8_t *)data;
  }
  ex_push(ex, (void ***)&ex->inits, &ex->n_inits, &ex->cap_inits, t);
  return nm;
}

static Onnx__ValueInfoProto *ex_value_info(an_export_t *ex, const char *name, int ndim,
                                           const int *chw) {
  Onnx__ValueInfoProto *vi = ex_alloc(ex, sizeof *vi);
  Onnx__TypeProto *tp = ex_alloc(ex, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = ex_alloc(ex, sizeof *tt);
  Onnx__TensorShapeProto *sp = ex_alloc(ex, sizeof *sp);
  Onnx__TensorShapeProto__Dimension **dims = ex_alloc(ex, 4 * sizeof *dims);
  if (!vi || !tp || !tt || !sp || !dims)
    return NULL;
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sp);
  for (int i = 0; i < ndim; i++) {
    Onnx__TensorShapeProto__Dimension *d = ex_alloc(ex, sizeof *d);
    if (!d)
      return NULL;
    onnx__tensor_shape_proto__dimension__init(d);
    if (i == 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = "N";
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = chw[i - 1];
    }
    dims[i] = d;
  }
  sp->n_dim = (size_t)ndim;
  sp->dim = dims;
  tt->has_elem_type = 1;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sp;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->name = an_arena_strdup(&ex->arena, name);
  vi->type = tp;
  return vi;
}

int an_model_find_label(const an_model_t *m, const char *label) {
  for (int i = 0; i < an_model_layer_count(m); i++) {
    an_layer_info_t li;
    an_model_layer_info(m, i, &li);
    if (li.desc.label && strcmp(li.desc.label, label) == 0)
      return i;
  }
  return -1;
}

/* A value of the exported graph: its name and rank (2: N x F, 4: NCHW). */
typedef struct ex_value {
  char *name;
  int rank;
  int chw[3];
} ex_value_t;

/* A Reshape of `name` to N x C x H x W (N copied from the input). */
static void ex_reshape4(an_export_t *ex, char *name, const int chw[3], char *out) {
  int64_t shape[4] = {0, chw[0], chw[1], chw[2]}, sd[1] = {4};
  char *s = ex_init(ex, ex_name(ex, "%s_shape", out), ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, sd,
                    shape);
  char *in[2] = {name, s};
  ex_node(ex, "Reshape", 2, in, out);
}

/* The NCHW form of a value for a layer that needs it: rank-2 values (a
 * Gemm's N x F) become N x F x 1 x 1. Returns the name to read. */
static char *ex_as4d(an_export_t *ex, const ex_value_t *v, int idx) {
  if (v->rank == 4)
    return v->name;
  char *out = ex_name(ex, "%s_4d_%d", v->name, idx);
  ex_reshape4(ex, v->name, v->chw, out);
  return out;
}

int an_onnx_export(const an_model_t *cm, const an_onnx_export_opts_t *opts, const char *path,
                   char *err, size_t errlen) {
  an_model_t *m = (an_model_t *)cm; /* read-only use of non-const accessors */
  an_onnx_export_opts_t o = {0};
  an_export_t ex;
  ex_value_t *vals = NULL;
  uint8_t *buf = NULL;
  int rc = AN_EMODEL, n_layers = an_model_layer_count(m);
  const float *params = an_model_params(m), *state = an_model_state(m);

  if (opts)
    o = *opts;
  if (!o.input_name)
    o.input_name = "input";
  if (!o.output_name)
    o.output_name = "output";
  if (!o.producer)
    o.producer = "archnet";
  if (o.last < 0)
    o.last = n_layers - 1;
  if (o.first < 0 || o.first > o.last || o.last >= n_layers) {
    snprintf(err, errlen, "layer range %d..%d is outside the model's %d layers", o.first,
             o.last, n_layers);
    return AN_EMODEL;
  }
  memset(&ex, 0, sizeof ex);
  an_arena_init(&ex.arena, 1 << 16, 0);
  vals = calloc((size_t)n_layers + 1, sizeof *vals);
  if (!vals) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }

  an_layer_info_t first_li;
  an_model_layer_info(m, o.first, &first_li);
  ex_value_t input = {.name = (char *)o.input_name, .rank = 4};
  memcpy(input.chw, first_li.in, sizeof input.chw);
  if (o.in_norm) {
    /* Standardisation in front: the same two float32 operations, in the
     * same order, as an_norm_apply, so the result is identical. */
    const an_norm_t *nm = o.in_norm;
    if (nm->c != input.chw[0] || nm->hw != (size_t)input.chw[1] * (size_t)input.chw[2]) {
      snprintf(err, errlen, "the standardisation is for %d x %zu values, the model takes %d x %d",
               nm->c, nm->hw, input.chw[0], input.chw[1] * input.chw[2]);
      goto done;
    }
    int64_t md[4] = {1, input.chw[0], nm->per_position ? input.chw[1] : 1,
                     nm->per_position ? input.chw[2] : 1};
    int64_t sd[4] = {1, input.chw[0], 1, 1};
    char *centred = ex_name(&ex, "in_centred"), *standardised = ex_name(&ex, "in_standardised");
    char *in[2] = {input.name,
                   ex_init(&ex, "in_mean", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, md, nm->mean)};
    ex_node(&ex, "Sub", 2, in, centred);
    in[0] = centred;
    in[1] = ex_init(&ex, "in_scale", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, sd, nm->scale);
    ex_node(&ex, "Mul", 2, in, standardised);
    input.name = standardised;
  }

  for (int i = o.first; i <= o.last && !ex.oom; i++) {
    an_layer_info_t li;
    an_model_layer_info(m, i, &li);
    const an_layer_desc_t *d = &li.desc;
    int src = li.input;
    /* The range's input is what its first layer reads; nothing else may
     * reach outside the range. */
    int outside = (src < o.first && !(i == o.first && src == o.first - 1)) ||
                  (li.input2 == -1 && o.first != 0) || (li.input2 >= 0 && li.input2 < o.first);
    if (outside) {
      snprintf(err, errlen, "layer %d reads a value from outside the exported range", i + 1);
      goto done;
    }
    const ex_value_t *x = src < o.first ? &input : &vals[src];
    ex_value_t *y = &vals[i];
    char *out = i == o.last ? ex_name(&ex, "%s", o.output_name) : ex_name(&ex, "t%d", i);
    char *in[5];
    Onnx__NodeProto *n = NULL;
    int64_t wd[4], bd[1];
    y->name = out;
    memcpy(y->chw, li.outshape, sizeof y->chw);
    y->rank = 4;
    switch (d->kind) {
    case AN_OP_CONV:
    case AN_OP_CONVT: {
      int t = d->kind == AN_OP_CONVT;
      wd[0] = t ? li.in[0] : d->out;
      wd[1] = t ? d->out : li.in[0];
      wd[2] = wd[3] = d->k;
      in[0] = ex_as4d(&ex, x, 2 * i);
      in[1] = ex_init(&ex, ex_name(&ex, "w%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, wd,
                      params + li.w_off);
      bd[0] = d->out;
      if (li.b_count)
        in[2] = ex_init(&ex, ex_name(&ex, "b%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, bd,
                        params + li.b_off);
      n = ex_node(&ex, t ? "ConvTranspose" : "Conv", li.b_count ? 3 : 2, in, out);
      ex_attr_ints(&ex, n, "kernel_shape", 2, d->k, d->k);
      ex_attr_ints(&ex, n, "strides", 2, d->s, d->s);
      ex_attr_ints(&ex, n, "pads", 4, d->p, d->p);
      ex_attr_ints(&ex, n, "dilations", 2, 1, 1);
      ex_attr_int(&ex, n, "group", 1);
      break;
    }
    case AN_OP_LINEAR: {
      char *flat = x->rank == 2 ? x->name : ex_name(&ex, "t%d_flat", i);
      if (x->rank != 2) {
        in[0] = x->name;
        ex_attr_int(&ex, ex_node(&ex, "Flatten", 1, in, flat), "axis", 1);
      }
      wd[0] = d->out;
      wd[1] = (int64_t)li.w_count / d->out;
      in[0] = flat;
      in[1] = ex_init(&ex, ex_name(&ex, "w%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, wd,
                      params + li.w_off);
      bd[0] = d->out;
      if (li.b_count)
        in[2] = ex_init(&ex, ex_name(&ex, "b%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, bd,
                        params + li.b_off);
      n = ex_node(&ex, "Gemm", li.b_count ? 3 : 2, in, out);
      ex_attr_int(&ex, n, "transB", 1);
      y->rank = 2;
      break;
    }
    case AN_OP_RELU:
    case AN_OP_LEAKY_RELU:
    case AN_OP_SIGMOID:
    case AN_OP_TANH:
    case AN_OP_DROPOUT: {
      static const char *const names[] = {[AN_OP_RELU] = "Relu", [AN_OP_LEAKY_RELU] = "LeakyRelu",
                                          [AN_OP_SIGMOID] = "Sigmoid", [AN_OP_TANH] = "Tanh",
                                          [AN_OP_DROPOUT] = "Identity"};
      in[0] = x->name;
      n = ex_node(&ex, names[d->kind], 1, in, out);
      if (d->kind == AN_OP_LEAKY_RELU)
        ex_attr_float(&ex, n, "alpha", d->alpha);
      y->rank = x->rank;
      break;
    }
    case AN_OP_MAXPOOL:
    case AN_OP_AVGPOOL:
      in[0] = ex_as4d(&ex, x, 2 * i);
      n = ex_node(&ex, d->kind == AN_OP_MAXPOOL ? "MaxPool" : "AveragePool", 1, in, out);
      ex_attr_ints(&ex, n, "kernel_shape", 2, d->k, d->k);
      ex_attr_ints(&ex, n, "strides", 2, d->s ? d->s : d->k, d->s ? d->s : d->k);
      ex_attr_ints(&ex, n, "pads", 4, d->p, d->p);
      if (d->kind == AN_OP_AVGPOOL)
        ex_attr_int(&ex, n, "count_include_pad", 1);
      break;
    case AN_OP_GAP:
      in[0] = ex_as4d(&ex, x, 2 * i);
      ex_node(&ex, "GlobalAveragePool", 1, in, out);
      break;
    case AN_OP_BATCHNORM:
      bd[0] = li.in[0];
      in[0] = ex_as4d(&ex, x, 2 * i);
      in[1] = ex_init(&ex, ex_name(&ex, "scale%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
                      bd, params + li.w_off);
      in[2] = ex_init(&ex, ex_name(&ex, "shift%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
                      bd, params + li.b_off);
      in[3] = ex_init(&ex, ex_name(&ex, "mean%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1,
                      bd, state + li.state_off);
      in[4] = ex_init(&ex, ex_name(&ex, "var%d", i), ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, bd,
                      state + li.state_off + li.in[0]);
      n = ex_node(&ex, "BatchNormalization", 5, in, out);
      ex_attr_float(&ex, n, "epsilon", d->alpha);
      ex_attr_float(&ex, n, "momentum", 1.0f - d->momentum); /* ONNX weights the old value */
      break;
    case AN_OP_FLATTEN:
      in[0] = x->name;
      ex_attr_int(&ex, ex_node(&ex, "Flatten", 1, in, out), "axis", 1);
      y->rank = 2;
      break;
    case AN_OP_RESHAPE:
      ex_reshape4(&ex, x->name, li.outshape, out);
      break;
    case AN_OP_ADD: {
      const ex_value_t *x2 = li.input2 < 0 ? &input : &vals[li.input2];
      if (x->rank == x2->rank) {
        in[0] = x->name;
        in[1] = x2->name;
        y->rank = x->rank;
      } else {
        in[0] = ex_as4d(&ex, x, 2 * i);
        in[1] = ex_as4d(&ex, x2, 2 * i + 1);
      }
      ex_node(&ex, "Add", 2, in, out);
      break;
    }
    default:
      snprintf(err, errlen, "layer %d (%s) has no ONNX form", i + 1, an_op_name(d->kind));
      goto done;
    }
  }
  if (ex.oom) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory building the graph");
    goto done;
  }

  /* Assemble and write. */
  {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1] = {&opset};
    const ex_value_t *last = &vals[o.last];
    Onnx__ValueInfoProto *gin = ex_value_info(&ex, o.input_name, 4, input.chw);
    Onnx__ValueInfoProto *gout = ex_value_info(&ex, o.output_name, last->rank, last->chw);
    Onnx__ValueInfoProto *gins[1] = {gin}, *gouts[1] = {gout};
    size_t len;
    if (!gin || !gout || ex.oom) {
      rc = UV_ENOMEM;
      snprintf(err, errlen, "out of memory building the graph");
      goto done;
    }
    onnx__model_proto__init(&model);
    onnx__graph_proto__init(&graph);
    onnx__operator_set_id_proto__init(&opset);
    opset.domain = "";
    opset.has_version = 1;
    opset.version = AN_EXPORT_OPSET;
    graph.name = "archnet";
    graph.n_node = ex.n_nodes;
    graph.node = ex.nodes;
    graph.n_initializer = ex.n_inits;
    graph.initializer = ex.inits;
    graph.n_input = 1;
    graph.input = gins;
    graph.n_output = 1;
    graph.output = gouts;
    model.has_ir_version = 1;
    model.ir_version = 7; /* the IR version that goes with opset 13 */
    model.producer_name = (char *)o.producer;
    model.producer_version = "0.1";
    model.n_opset_import = 1;
    model.opset_import = opsets;
    model.graph = &graph;
    len = onnx__model_proto__get_packed_size(&model);
    if (!(buf = malloc(len ? len : 1))) {
      rc = UV_ENOMEM;
      snprintf(err, errlen, "out of memory for %zu bytes", len);
      goto done;
    }
    onnx__model_proto__pack(&model, buf);
    an_atomic_file_t f;
    if ((rc = an_atomic_file_open(&f, path, 0644, err, errlen)) != 0)
      goto done;
    if ((rc = an_atomic_file_write(&f, buf, len, err, errlen)) != 0) {
      an_atomic_file_abort(&f);
      goto done;
    }
    rc = an_atomic_file_commit(&f, err, errlen);
  }
done:
  free(buf);
  free(vals);
  an_arena_destroy(&ex.arena);
  return rc;
}
