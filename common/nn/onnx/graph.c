/* Loading an ONNX model: parse, check everything, sort, infer shapes. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/arena.h"
#include "common/error.h"
#include "common/nn/onnx/graph.h"

#define AN_ONNX_MIN_OPSET 7
#define AN_ONNX_MAX_OPSET 17

void an_onnx_default_limits(an_onnx_limits_t *lim) {
  lim->max_file_bytes = (size_t)1 << 30; /* the paper's H-encoder alone is 490 MB */
  lim->max_nodes = 10000;
  lim->max_tensor_elems = (size_t)1 << 28;
  lim->max_memory_bytes = (uint64_t)4 << 30;
  lim->max_seconds = 60;
}

size_t an_onnx_dtype_size(int dtype) {
  return dtype == AN_ONNX_FLOAT ? 4 : dtype == AN_ONNX_INT64 ? 8 : dtype == AN_ONNX_BOOL ? 1 : 0;
}

size_t an_oval_numel(const an_oval_t *v) {
  size_t n = 1;
  for (int i = 0; i < v->ndim; i++)
    n *= (size_t)v->dims[i];
  return n;
}

static int an_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int an_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}

static const char *an_dtype_label(int t) {
  static const char *const names[] = {"undefined", "float32", "uint8",  "int8",   "uint16",
                                      "int16",     "int32",   "int64",  "string", "bool",
                                      "float16",   "double",  "uint32", "uint64", "complex64",
                                      "complex128", "bfloat16"};
  return t >= 0 && t <= 16 ? names[t] : "unknown";
}

/* Decodes a TensorProto (initializer, Constant, test data) into v, which
 * then owns its data. Checks dims, type and that the data matches. */
int an_oval_from_proto(const Onnx__TensorProto *t, size_t max_elems, an_oval_t *v, char *err,
                       size_t errlen) {
  size_t n = 1, esize;
  memset(v, 0, sizeof *v);
  if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return an_fail(err, errlen, AN_EMODEL, "tensor '%s' uses external data, which is refused",
                   t->name ? t->name : "");
  if (t->n_external_data || t->segment)
    return an_fail(err, errlen, AN_EMODEL, "tensor '%s' is segmented or external",
                   t->name ? t->name : "");
  if (t->n_dims > AN_ONNX_MAX_DIMS)
    return an_fail(err, errlen, AN_EUNSUPPORTED, "tensor '%s' has %zu dimensions (at most %d)",
                   t->name ? t->name : "", t->n_dims, AN_ONNX_MAX_DIMS);
  if (t->data_type != AN_ONNX_FLOAT && t->data_type != AN_ONNX_INT64 &&
      t->data_type != AN_ONNX_BOOL)
    return an_fail(err, errlen, AN_EUNSUPPORTED, "tensor '%s' has type %s",
                   t->name ? t->name : "", an_dtype_label(t->data_type));
  v->dtype = t->data_type;
  v->ndim = (int)t->n_dims;
  for (size_t i = 0; i < t->n_dims; i++) {
    if (t->dims[i] < 0 || (uint64_t)t->dims[i] > max_elems)
      return an_fail(err, errlen, AN_EMODEL, "tensor '%s' has dimension %lld",
                     t->name ? t->name : "", (long long)t->dims[i]);
    v->dims[i] = t->dims[i];
    if (t->dims[i] && n > max_elems / (size_t)t->dims[i])
      return an_fail(err, errlen, AN_EMODEL, "tensor '%s' is over the %zu-element limit",
                     t->name ? t->name : "", max_elems);
    n *= (size_t)t->dims[i];
    if (n > max_elems)
      return an_fail(err, errlen, AN_EMODEL, "tensor '%s' is over the %zu-element limit",
                     t->name ? t->name : "", max_elems);
  }
  esize = an_onnx_dtype_size(v->dtype);
  v->data = malloc(n * esize + 1);
  if (!v->data)
    return an_fail(err, errlen, UV_ENOMEM, "out of memory for tensor '%s'", t->name ? t->name : "");
  v->present = 1;
  if (t->has_raw_data) {
    if (t->raw_data.len != n * esize)
      goto mismatch;
    if (n)
      memcpy(v->data, t->raw_data.data, n * esize); /* little-endian, as x86-64 */
  } else if (v->dtype == AN_ONNX_FLOAT) {
    if (t->n_float_data != n)
      goto mismatch;
    if (n)
      memcpy(v->data, t->float_data, n * esize);
  } else if (v->dtype == AN_ONNX_INT64) {
    if (t->n_int64_data != n)
      goto mismatch;
    if (n)
      memcpy(v->data, t->int64_data, n * esize);
  } else { /* bool travels in int32_data */
    if (t->n_int32_data != n)
      goto mismatch;
    for (size_t i = 0; i < n; i++)
      ((uint8_t *)v->data)[i] = t->int32_data[i] != 0;
  }
  return 0;
mismatch:
  free(v->data);
  v->data = NULL;
  return an_fail(err, errlen, AN_EMODEL, "tensor '%s': data does not match its %zu elements",
                 t->name ? t->name : "", n);
}

/* ---- name table: open addressing over FNV-1a ---- */

typedef struct an_names {
  const char **keys;
  int *idx;
  size_t cap;
} an_names_t;

static uint64_t an_fnv(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

static int an_names_init(an_names_t *t, size_t expect) {
  t->cap = 16;
  while (t->cap < expect * 2)
    t->cap *= 2;
  t->keys = calloc(t->cap, sizeof *t->keys);
  t->idx = calloc(t->cap, sizeof *t->idx);
  return t->keys && t->idx ? 0 : UV_ENOMEM;
}

static void an_names_free(an_names_t *t) {
  free(t->keys);
  free(t->idx);
}

/* Returns the index for name, or -1; with insert, adds it as `value`. */
static int an_names_get(an_names_t *t, const char *name, int insert, int value) {
  size_t i = an_fnv(name) & (t->cap - 1);
  while (t->keys[i]) {
    if (strcmp(t->keys[i], name) == 0)
      return t->idx[i];
    i = (i + 1) & (t->cap - 1);
  }
  if (!insert)
    return -1;
  t->keys[i] = name;
  t->idx[i] = value;
  return value;
}

/* ---- loading ---- */

static int an_value_info_shape(const Onnx__ValueInfoProto *vi, an_oval_t *v, char *err,
                               size_t errlen) {
  const Onnx__TypeProto__Tensor *tt;
  memset(v, 0, sizeof *v);
  if (!vi->type || vi->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
      !(tt = vi->type->tensor_type))
    return an_fail(err, errlen, AN_EUNSUPPORTED, "input '%s' is not a tensor", vi->name);
  if (tt->elem_type != AN_ONNX_FLOAT && tt->elem_type != AN_ONNX_INT64 &&
      tt->elem_type != AN_ONNX_BOOL)
    return an_fail(err, errlen, AN_EUNSUPPORTED, "input '%s' has type %s", vi->name,
                   an_dtype_label(tt->elem_type));
  v->dtype = tt->elem_type;
  if (!tt->shape)
    return an_fail(err, errlen, AN_EUNSUPPORTED, "input '%s' has no declared shape", vi->name);
  if (tt->shape->n_dim > AN_ONNX_MAX_DIMS)
    return an_fail(err, errlen, AN_EUNSUPPORTED, "input '%s' has %zu dimensions", vi->name,
                   tt->shape->n_dim);
  v->ndim = (int)tt->shape->n_dim;
  for (int i = 0; i < v->ndim; i++) {
    const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (d->dim_value < 0 || d->dim_value > (int64_t)1 << 40)
        return an_fail(err, errlen, AN_EMODEL, "input '%s' has dimension %lld", vi->name,
                       (long long)d->dim_value);
      v->dims[i] = d->dim_value;
    } else {
      v->dims[i] = -1; /* symbolic: the batch, or some other free size */
    }
  }
  return 0;
}

static int an_constant_value(an_onnx_t *m, const Onnx__NodeProto *np, an_oval_t *v, char *err,
                             size_t errlen) {
  if (np->n_attribute != 1)
    return an_fail(err, errlen, AN_EMODEL, "Constant '%s' needs exactly one attribute",
                   np->name ? np->name : "");
  const Onnx__AttributeProto *a = np->attribute[0];
  memset(v, 0, sizeof *v);
  if (!a->name)
    return an_fail(err, errlen, AN_EMODEL, "Constant attribute without a name");
  if (strcmp(a->name, "value") == 0 && a->t)
    return an_oval_from_proto(a->t, m->lim.max_tensor_elems, v, err, errlen);
  int is_float = strcmp(a->name, "value_float") == 0 || strcmp(a->name, "value_floats") == 0;
  int is_int = strcmp(a->name, "value_int") == 0 || strcmp(a->name, "value_ints") == 0;
  int scalar = strcmp(a->name, "value_float") == 0 || strcmp(a->name, "value_int") == 0;
  size_t n = scalar ? 1 : is_float ? a->n_floats : a->n_ints;
  if (!is_float && !is_int)
    return an_fail(err, errlen, AN_EUNSUPPORTED, "Constant attribute '%s' is not supported",
                   a->name);
  if (n > m->lim.max_tensor_elems)
    return an_fail(err, errlen, AN_EMODEL, "Constant is over the element limit");
  v->dtype = is_float ? AN_ONNX_FLOAT : AN_ONNX_INT64;
  v->ndim = scalar ? 0 : 1;
  v->dims[0] = (int64_t)n;
  v->present = 1;
  v->data = malloc(n * 8 + 1);
  if (!v->data)
    return UV_ENOMEM;
  if (n && is_float)
    memcpy(v->data, scalar ? &a->f : a->floats, n * sizeof(float));
  else if (n)
    memcpy(v->data, scalar ? &a->i : a->ints, n * sizeof(int64_t));
  return 0;
}

void an_onnx_free(an_onnx_t *m) {
  if (!m)
    return;
  for (size_t i = 0; i < m->n_nodes; i++) {
    if (m->nodes[i].cache && m->nodes[i].cache_free)
      m->nodes[i].cache_free(m->nodes[i].cache);
    free(m->nodes[i].in);
    free(m->nodes[i].out);
  }
  if (m->consts)
    for (size_t i = 0; i < m->n_values; i++)
      free(m->consts[i].data);
  free(m->consts);
  free(m->is_const);
  free(m->consumers);
  free(m->value_names);
  free(m->nodes);
  free(m->inputs);
  free(m->outputs);
  free(m->in_info);
  free(m->out_info);
  if (m->arena) {
    an_arena_destroy(m->arena);
    free(m->arena);
  }
  an_pool_flush(m);
  if (m->stream)
    dnnl_stream_destroy(m->stream);
  if (m->eng)
    dnnl_engine_destroy(m->eng);
  free(m);
}

int an_onnx_load(const void *bytes, size_t len, const an_onnx_limits_t *lim, an_onnx_t **out,
                 char *err, size_t errlen) {
  an_onnx_t *m = calloc(1, sizeof *m);
  const Onnx__GraphProto *g;
  an_names_t names = {0};
  int rc = AN_EMODEL;
  size_t cap_values;

  *out = NULL;
  if (!m)
    return an_fail(err, errlen, UV_ENOMEM, "out of memory");
  if (lim)
    m->lim = *lim;
  else
    an_onnx_default_limits(&m->lim);
  if (len > m->lim.max_file_bytes) {
    rc = an_fail(err, errlen, AN_EMODEL, "the model is %zu bytes, over the %zu-byte limit", len,
                 m->lim.max_file_bytes);
    goto fail;
  }
  if (!(m->arena = malloc(sizeof(an_arena_t)))) {
    rc = an_fail(err, errlen, UV_ENOMEM, "out of memory");
    goto fail;
  }
  /* protobuf-c allocates from a capped arena: a file cannot make it reserve
   * more than a small multiple of its own size. */
  an_arena_init(m->arena, 1 << 20, len * 8 + ((size_t)64 << 20));
  m->proto = onnx__model_proto__unpack(an_arena_protobuf_allocator(m->arena), len, bytes);
  if (!m->proto) {
    rc = an_fail(err, errlen, AN_EMODEL, "not an ONNX model (the protobuf does not parse)");
    goto fail;
  }
  if (!m->proto->has_ir_version || m->proto->ir_version < 3) {
    rc = an_fail(err, errlen, AN_EMODEL, "missing or too old ir_version");
    goto fail;
  }
  m->opset = -1;
  for (size_t i = 0; i < m->proto->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *o = m->proto->opset_import[i];
    if (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0)
      m->opset = o->version;
    else if (strcmp(o->domain, "ai.onnx.ml") != 0) {
      rc = an_fail(err, errlen, AN_EUNSUPPORTED, "operator domain '%s' is not supported",
                   o->domain);
      goto fail;
    }
  }
  if (m->opset < AN_ONNX_MIN_OPSET || m->opset > AN_ONNX_MAX_OPSET) {
    rc = an_fail(err, errlen, AN_EUNSUPPORTED, "opset %lld is outside the supported %d..%d",
                 (long long)m->opset, AN_ONNX_MIN_OPSET, AN_ONNX_MAX_OPSET);
    goto fail;
  }
  if (!(g = m->proto->graph)) {
    rc = an_fail(err, errlen, AN_EMODEL, "the model has no graph");
    goto fail;
  }
  if (g->n_node > m->lim.max_nodes) {
    rc = an_fail(err, errlen, AN_EMODEL, "%zu nodes, over the limit of %zu", g->n_node,
                 m->lim.max_nodes);
    goto fail;
  }
  if (g->n_sparse_initializer) {
    rc = an_fail(err, errlen, AN_EUNSUPPORTED, "sparse initializers are not supported");
    goto fail;
  }
  if (g->n_output == 0) {
    rc = an_fail(err, errlen, AN_EMODEL, "the graph has no outputs");
    goto fail;
  }

  /* Values: initializers, graph inputs, node outputs; each defined once. */
  cap_values = g->n_initializer + g->n_input + 1;
  for (size_t i = 0; i < g->n_node; i++)
    cap_values += g->node[i]->n_output;
  if (an_names_init(&names, cap_values) != 0 ||
      !(m->value_names = calloc(cap_values, sizeof *m->value_names)) ||
      !(m->consts = calloc(cap_values, sizeof *m->consts)) ||
      !(m->is_const = calloc(cap_values, sizeof *m->is_const)) ||
      !(m->consumers = calloc(cap_values, sizeof *m->consumers)) ||
      !(m->nodes = calloc(g->n_node + 1, sizeof *m->nodes)) ||
      !(m->inputs = calloc(g->n_input + 1, sizeof *m->inputs)) ||
      !(m->outputs = calloc(g->n_output, sizeof *m->outputs)) ||
      !(m->in_info = calloc(g->n_input + 1, sizeof *m->in_info)) ||
      !(m->out_info = calloc(g->n_output, sizeof *m->out_info))) {
    rc = an_fail(err, errlen, UV_ENOMEM, "out of memory");
    goto fail;
  }
#define AN_DEFINE(nm, what)                                                                   \
  do {                                                                                        \
    const char *name_ = (nm);                                                                 \
    if (!name_ || !name_[0]) {                                                                \
      rc = an_fail(err, errlen, AN_EMODEL, "%s with an empty name", what);                    \
      goto fail;                                                                              \
    }                                                                                         \
    if (an_names_get(&names, name_, 0, 0) >= 0) {                                             \
      rc = an_fail(err, errlen, AN_EMODEL, "value '%s' is defined twice", name_);             \
      goto fail;                                                                              \
    }                                                                                         \
    m->value_names[m->n_values] = (char *)name_;                                              \
    an_names_get(&names, name_, 1, (int)m->n_values);                                         \
    m->n_values++;                                                                            \
  } while (0)

  for (size_t i = 0; i < g->n_initializer; i++) {
    AN_DEFINE(g->initializer[i]->name, "an initializer");
    size_t vi = m->n_values - 1;
    if ((rc = an_oval_from_proto(g->initializer[i], m->lim.max_tensor_elems, &m->consts[vi], err,
                                 errlen)) != 0)
      goto fail;
    m->is_const[vi] = 1;
  }
  for (size_t i = 0; i < g->n_input; i++) {
    const Onnx__ValueInfoProto *vi = g->input[i];
    if (vi->name && an_names_get(&names, vi->name, 0, 0) >= 0 &&
        m->is_const[an_names_get(&names, vi->name, 0, 0)])
      continue; /* older exporters list initializers as inputs too */
    AN_DEFINE(vi->name, "a graph input");
    m->inputs[m->n_inputs] = (int)(m->n_values - 1);
    if ((rc = an_value_info_shape(vi, &m->in_info[m->n_inputs], err, errlen)) != 0)
      goto fail;
    m->n_inputs++;
  }
  /* From here on an_onnx_free must see every node's arrays. */
  m->n_nodes = g->n_node;
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *np = g->node[i];
    an_onode_t *n = &m->nodes[i];
    if (np->domain && np->domain[0] && strcmp(np->domain, "ai.onnx") != 0) {
      rc = an_fail(err, errlen, AN_EUNSUPPORTED, "node %zu uses domain '%s'", i, np->domain);
      goto fail;
    }
    n->proto = np;
    if (!(n->op = an_onnx_find_op(np->op_type ? np->op_type : ""))) {
      rc = an_fail(err, errlen, AN_EUNSUPPORTED, "operator '%s' (node %zu '%s') is not supported",
                   np->op_type ? np->op_type : "", i, np->name ? np->name : "");
      goto fail;
    }
    if ((int)np->n_input < n->op->min_inputs || (int)np->n_input > n->op->max_inputs ||
        (int)np->n_output < n->op->min_outputs || (int)np->n_output > n->op->max_outputs) {
      rc = an_fail(err, errlen, AN_EMODEL, "%s node %zu has %zu inputs and %zu outputs",
                   n->op->name, i, np->n_input, np->n_output);
      goto fail;
    }
    n->n_in = (int)np->n_input;
    n->n_out = (int)np->n_output;
    if (!(n->in = calloc((size_t)n->n_in + 1, sizeof *n->in)) ||
        !(n->out = calloc((size_t)n->n_out + 1, sizeof *n->out))) {
      rc = an_fail(err, errlen, UV_ENOMEM, "out of memory");
      goto fail;
    }
    for (int o = 0; o < n->n_out; o++) {
      if (!np->output[o] || !np->output[o][0]) {
        n->out[o] = -1; /* an optional output nobody wants */
        continue;
      }
      AN_DEFINE(np->output[o], "a node output");
      n->out[o] = (int)(m->n_values - 1);
    }
  }
#undef AN_DEFINE

  /* Resolve inputs and sort (Kahn): a node is ready once all its inputs
   * are constants, graph inputs, or outputs of nodes already placed. */
  {
    int *ready = calloc(m->n_values + 1, sizeof *ready);
    an_onode_t *sorted = calloc(g->n_node + 1, sizeof *sorted);
    unsigned char *placed = calloc(g->n_node + 1, 1);
    size_t n_sorted = 0;
    if (!ready || !sorted || !placed) {
      free(ready), free(sorted), free(placed);
      rc = an_fail(err, errlen, UV_ENOMEM, "out of memory");
      goto fail;
    }
    for (size_t v = 0; v < m->n_values; v++)
      ready[v] = m->is_const[v];
    for (size_t i = 0; i < m->n_inputs; i++)
      ready[m->inputs[i]] = 1;
    for (size_t i = 0; i < g->n_node; i++)
      for (int k = 0; k < m->nodes[i].n_in; k++) {
        const char *nm = g->node[i]->input[k];
        int idx = nm && nm[0] ? an_names_get(&names, nm, 0, 0) : -1;
        if (nm && nm[0] && idx < 0) {
          free(ready), free(sorted), free(placed);
          rc = an_fail(err, errlen, AN_EMODEL, "node %zu reads '%s', which nothing defines", i,
                       nm);
          goto fail;
        }
        m->nodes[i].in[k] = idx;
        if (idx < 0 && k < m->nodes[i].op->min_inputs) {
          free(ready), free(sorted), free(placed);
          rc = an_fail(err, errlen, AN_EMODEL, "node %zu (%s): required input %d is empty", i,
                       m->nodes[i].op->name, k);
          goto fail;
        }
        if (idx >= 0)
          m->consumers[idx]++;
      }
    for (int progress = 1; progress && n_sorted < g->n_node;) {
      progress = 0;
      for (size_t i = 0; i < g->n_node; i++) {
        int ok = !placed[i];
        for (int k = 0; ok && k < m->nodes[i].n_in; k++)
          ok = m->nodes[i].in[k] < 0 || ready[m->nodes[i].in[k]];
        if (!ok)
          continue;
        placed[i] = 1;
        sorted[n_sorted++] = m->nodes[i];
        for (int o = 0; o < m->nodes[i].n_out; o++)
          if (m->nodes[i].out[o] >= 0)
            ready[m->nodes[i].out[o]] = 1;
        progress = 1;
      }
    }
    free(ready);
    free(placed);
    if (n_sorted < g->n_node) {
      free(sorted);
      rc = an_fail(err, errlen, AN_EMODEL, "the graph has a cycle");
      goto fail;
    }
    free(m->nodes);
    m->nodes = sorted;
    m->n_nodes = n_sorted;
  }

  for (size_t i = 0; i < g->n_output; i++) {
    int idx = g->output[i]->name ? an_names_get(&names, g->output[i]->name, 0, 0) : -1;
    if (idx < 0) {
      rc = an_fail(err, errlen, AN_EMODEL, "graph output '%s' is never computed",
                   g->output[i]->name ? g->output[i]->name : "");
      goto fail;
    }
    for (size_t j = 0; j < m->n_outputs; j++)
      if (m->outputs[j] == idx) {
        rc = an_fail(err, errlen, AN_EMODEL, "graph output '%s' is listed twice",
                     g->output[i]->name);
        goto fail;
      }
    m->outputs[m->n_outputs++] = idx;
  }

  /* Constant nodes are evaluated once, here. */
  for (size_t i = 0; i < m->n_nodes; i++) {
    an_onode_t *n = &m->nodes[i];
    if (strcmp(n->op->name, "Constant") != 0 || n->out[0] < 0)
      continue; /* a Constant nobody can read needs no value */
    if ((rc = an_constant_value(m, n->proto, &m->consts[n->out[0]], err, errlen)) != 0)
      goto fail;
    m->is_const[n->out[0]] = 1;
  }

  an_onnx_fuse(m);

  /* Static shapes with a symbolic batch: infer at batch 1 and at batch 2;
   * dimensions that differ follow the batch. */
  {
    an_oval_t *s1 = calloc(m->n_outputs, sizeof *s1), *s2 = calloc(m->n_outputs, sizeof *s2);
    if (!s1 || !s2 || (rc = an_onnx_probe(m, 1, s1, err, errlen)) < 0 ||
        (rc == 0 && (rc = an_onnx_probe(m, 2, s2, err, errlen)) < 0)) {
      int nomem = !s1 || !s2;
      free(s1), free(s2);
      if (nomem)
        rc = an_fail(err, errlen, UV_ENOMEM, "out of memory");
      goto fail;
    }
    /* rc == AN_EUNKNOWN_SHAPE: outputs keep ndim -1 (checked at run time). */
    for (size_t i = 0; i < m->n_outputs; i++) {
      if (rc == AN_EUNKNOWN_SHAPE) {
        m->out_info[i].ndim = -1;
        continue;
      }
      m->out_info[i] = s1[i];
      m->out_info[i].data = NULL;
      for (int d = 0; d < s1[i].ndim; d++)
        if (s1[i].ndim != s2[i].ndim || s1[i].dims[d] != s2[i].dims[d])
          m->out_info[i].dims[d] = -1;
    }
    free(s1);
    free(s2);
    rc = 0;
  }
  an_names_free(&names);
  *out = m;
  return 0;
fail:
  an_names_free(&names);
  an_onnx_free(m);
  return rc;
}

int an_onnx_load_file(const char *path, const an_onnx_limits_t *lim, an_onnx_t **out, char *err,
                      size_t errlen) {
  an_onnx_limits_t dl;
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  long len;
  int rc;
  char why[512];

  *out = NULL;
  if (!lim) {
    an_onnx_default_limits(&dl);
    lim = &dl;
  }
  if (!f)
    return an_fail(err, errlen, -errno, "%s: cannot open: %s", path, strerror(errno));
  if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fclose(f);
    return an_fail(err, errlen, UV_EIO, "%s: cannot read", path);
  }
  if ((size_t)len > lim->max_file_bytes) {
    fclose(f);
    return an_fail(err, errlen, AN_EMODEL, "%s: %ld bytes, over the %zu-byte limit", path, len,
                   lim->max_file_bytes);
  }
  buf = malloc((size_t)len + 1);
  if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
    fclose(f);
    free(buf);
    return an_fail(err, errlen, UV_EIO, "%s: cannot read", path);
  }
  fclose(f);
  rc = an_onnx_load(buf, (size_t)len, lim, out, why, sizeof why);
  free(buf);
  if (rc)
    an_fail(err, errlen, rc, "%s: %s", path, why);
  return rc;
}

size_t an_onnx_input_count(const an_onnx_t *m) { return m->n_inputs; }
size_t an_onnx_output_count(const an_onnx_t *m) { return m->n_outputs; }
const char *an_onnx_input_name(const an_onnx_t *m, size_t i) {
  return i < m->n_inputs ? m->value_names[m->inputs[i]] : NULL;
}
const char *an_onnx_output_name(const an_onnx_t *m, size_t i) {
  return i < m->n_outputs ? m->value_names[m->outputs[i]] : NULL;
}

static int an_shape_out(const an_oval_t *v, int *dtype, int *ndim, int64_t *dims) {
  *dtype = v->dtype;
  *ndim = v->ndim;
  memcpy(dims, v->dims, (size_t)v->ndim * sizeof *dims);
  return 0;
}

int an_onnx_input_shape(const an_onnx_t *m, size_t i, int *dtype, int *ndim, int64_t *dims) {
  return i < m->n_inputs ? an_shape_out(&m->in_info[i], dtype, ndim, dims) : AN_EMODEL;
}

int an_onnx_output_shape(const an_onnx_t *m, size_t i, int *dtype, int *ndim, int64_t *dims) {
  return i < m->n_outputs ? an_shape_out(&m->out_info[i], dtype, ndim, dims) : AN_EMODEL;
}

void an_onnx_fuse(an_onnx_t *m) {
  for (size_t i = 0; i < m->n_nodes; i++) {
    an_onode_t *conv = &m->nodes[i];
    if (strcmp(conv->op->name, "Conv") != 0 || conv->out[0] < 0)
      continue;
    int v = conv->out[0], graph_output = 0;
    for (size_t k = 0; k < m->n_outputs; k++)
      graph_output |= m->outputs[k] == v;
    if (graph_output || m->consumers[v] != 1)
      continue;
    /* The single reader comes later in topological order. */
    for (size_t j = i + 1; j < m->n_nodes; j++) {
      an_onode_t *r = &m->nodes[j];
      int reads = 0;
      for (int k = 0; k < r->n_in; k++)
        reads |= r->in[k] == v;
      if (!reads)
        continue;
      if (strcmp(r->op->name, "Relu") == 0 && r->n_out == 1 && r->out[0] >= 0) {
        conv->out[0] = r->out[0];
        conv->fused_relu = 1;
        m->consumers[v] = 0;
        r->n_in = r->n_out = 0; /* the pass skips it */
      }
      break;
    }
  }
}

void an_onnx_set_bf16(an_onnx_t *m, int on) {
  if (m->bf16 == !!on)
    return;
  m->bf16 = !!on;
  /* Kernels were built for the other precision. */
  for (size_t i = 0; i < m->n_nodes; i++)
    if (m->nodes[i].cache && m->nodes[i].cache_free) {
      m->nodes[i].cache_free(m->nodes[i].cache);
      m->nodes[i].cache = NULL;
    }
}
