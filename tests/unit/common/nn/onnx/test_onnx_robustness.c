/* The ONNX loader and runtime against hostile files. Every case must end in
 * an error with a sentence (AN_EMODEL, AN_EUNSUPPORTED, AN_ETOOBIG...) or in
 * a clean run; never a crash, a hang or an allocation without bound. The
 * suite runs under ASan/UBSan in CI, so a memory error fails it.
 *
 * Three sources of bad input:
 *  - truncations of real PyTorch exports (../shared/conformance/torch-exports):
 *    every length below 256 and a stride over the rest;
 *  - seeded random byte flips, insertions and deletions of the same files
 *    (an_test_rand, so a failure names the mutation that replays it);
 *  - ModelProtos built by hand with protobuf-c: cycles, undefined and
 *    duplicate values, absurd dims and attributes, external data, unknown
 *    domains and opsets, limits on nodes, elements, memory and time.
 * Each hand-built case runs in its own forked child (a loop test), so one
 * crash does not hide the others.
 *
 * Set ARCHNET_ROBUSTNESS_VERBOSE=1 to print each mutation before it is tried
 * (the last line printed before a crash names the culprit). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/onnx/onnx.h"
#include "proto/onnx.pb-c.h"
#include "tests/support/testutil.h"

/* ---- files ---- */

static const char *conformance_dir(void) {
  const char *d = getenv("ARCHNET_CONFORMANCE_DIR");
  ck_assert_msg(d != NULL, "ARCHNET_CONFORMANCE_DIR is not set; run through meson");
  return d;
}

static uint8_t *read_export(const char *name, size_t *len) {
  char path[1024];
  FILE *f;
  uint8_t *buf = NULL;
  long n;
  snprintf(path, sizeof path, "%s/torch-exports/%s", conformance_dir(), name);
  f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 64)) != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  ck_assert_msg(buf != NULL, "cannot read %s", path);
  *len = (size_t)n;
  return buf;
}

static int verbose(void) {
  const char *v = getenv("ARCHNET_ROBUSTNESS_VERBOSE");
  return v && v[0] && strcmp(v, "0") != 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- load, and run if it loads ---- */

typedef struct outcome {
  int load_rc;
  int run_rc; /* meaningful when load_rc == 0 and ran */
  int ran;
  double run_seconds;
  char err[1024];
} outcome_t;

/* Loads the bytes; if they load, runs once on inputs of the declared shapes
 * (symbolic dimensions = 1), floats filled with ffill, int64s with ifill.
 * Checks the contract on the way: an error is negative and has a sentence;
 * a success gives every output with data and sane dims; a failed run
 * leaves the outputs empty. `what` names the case in assertion messages. */
static void try_model(const void *bytes, size_t len, const an_onnx_limits_t *lim, float ffill,
                      int64_t ifill, const char *what, outcome_t *o) {
  an_onnx_t *m = NULL;
  an_onnx_tensor_t in[16], *out = NULL;
  size_t n_in = 0, n_out = 0;
  memset(o, 0, sizeof *o);
  memset(in, 0, sizeof in);
  o->load_rc = an_onnx_load(bytes, len, lim, &m, o->err, sizeof o->err);
  if (o->load_rc != 0) {
    ck_assert_msg(o->load_rc < 0, "%s: load returned %d (not negative)", what, o->load_rc);
    ck_assert_msg(m == NULL, "%s: failed load left a model", what);
    ck_assert_msg(o->err[0] != '\0', "%s: load failed (%d) without a message", what, o->load_rc);
    return;
  }
  ck_assert_msg(m != NULL, "%s: load succeeded without a model", what);
  n_in = an_onnx_input_count(m);
  n_out = an_onnx_output_count(m);
  ck_assert_msg(n_out > 0, "%s: a loaded model with no outputs", what);
  if (n_in > 16)
    goto done; /* nothing hostile about it; just not worth feeding */
  for (size_t i = 0; i < n_in; i++) {
    int dtype = 0, ndim = 0;
    int64_t dims[AN_ONNX_MAX_DIMS];
    size_t count = 1;
    ck_assert_int_eq(an_onnx_input_shape(m, i, &dtype, &ndim, dims), 0);
    ck_assert_msg(ndim >= 0 && ndim <= AN_ONNX_MAX_DIMS, "%s: input %zu has rank %d", what, i,
                  ndim);
    if (dtype != AN_ONNX_FLOAT && dtype != AN_ONNX_INT64 && dtype != AN_ONNX_BOOL)
      goto done;
    in[i].dtype = dtype;
    in[i].ndim = ndim;
    for (int d = 0; d < ndim; d++) {
      in[i].dims[d] = dims[d] < 0 ? 1 : dims[d];
      if (in[i].dims[d] && count > ((size_t)1 << 24) / (size_t)in[i].dims[d])
        goto done; /* the limits allowed it, but a test need not feed 64 MB */
      count *= (size_t)in[i].dims[d];
    }
    in[i].data = calloc(count + 1, 8);
    ck_assert_ptr_nonnull(in[i].data);
    for (size_t k = 0; k < count; k++) {
      if (dtype == AN_ONNX_FLOAT)
        ((float *)in[i].data)[k] = ffill;
      else if (dtype == AN_ONNX_INT64)
        ((int64_t *)in[i].data)[k] = ifill;
    }
  }
  out = calloc(n_out, sizeof *out);
  ck_assert_ptr_nonnull(out);
  o->ran = 1;
  o->err[0] = '\0';
  double t0 = now_s();
  o->run_rc = an_onnx_run(m, in, n_in, out, n_out, o->err, sizeof o->err);
  o->run_seconds = now_s() - t0;
  if (o->run_rc != 0) {
    ck_assert_msg(o->run_rc < 0, "%s: run returned %d (not negative)", what, o->run_rc);
    ck_assert_msg(o->err[0] != '\0', "%s: run failed (%d) without a message", what, o->run_rc);
    for (size_t i = 0; i < n_out; i++)
      ck_assert_msg(out[i].data == NULL, "%s: failed run left output %zu", what, i);
  } else {
    for (size_t i = 0; i < n_out; i++) {
      ck_assert_msg(out[i].ndim >= 0 && out[i].ndim <= AN_ONNX_MAX_DIMS,
                    "%s: output %zu has rank %d", what, i, out[i].ndim);
      for (int d = 0; d < out[i].ndim; d++)
        ck_assert_msg(out[i].dims[d] >= 0, "%s: output %zu has a negative dimension", what, i);
      ck_assert_msg(out[i].data != NULL, "%s: run succeeded but output %zu ('%s') has no data",
                    what, i, an_onnx_output_name(m, i));
    }
  }
done:
  for (size_t i = 0; out && i < n_out; i++)
    an_onnx_tensor_free(&out[i]);
  free(out);
  for (size_t i = 0; i < 16; i++)
    free(in[i].data);
  an_onnx_free(m);
}

/* Limits for the mutation corpus: the defaults, but small enough that a
 * mutated dimension cannot make a test allocate gigabytes. */
static void corpus_limits(an_onnx_limits_t *lim) {
  an_onnx_default_limits(lim);
  lim->max_tensor_elems = (size_t)1 << 22;
  lim->max_memory_bytes = (uint64_t)256 << 20;
  lim->max_seconds = 10;
}

/* ---- truncations ---- */

static void truncations(const char *name, size_t stride) {
  size_t len, loaded = 0, tried = 0;
  uint8_t *orig = read_export(name, &len);
  an_onnx_limits_t lim;
  outcome_t o;
  char what[256];
  corpus_limits(&lim);
  /* the whole file loads and runs: the corpus starts from a good model */
  try_model(orig, len, &lim, 0.5f, 0, name, &o);
  ck_assert_msg(o.load_rc == 0 && o.ran && o.run_rc == 0, "%s: the original fails: %s", name,
                o.err);
  for (size_t cut = 0; cut < len; cut += cut < 256 ? 1 : stride) {
    /* a fresh heap copy of exactly `cut` bytes, so ASan sees any over-read */
    uint8_t *buf = malloc(cut ? cut : 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, orig, cut);
    snprintf(what, sizeof what, "%s truncated to %zu of %zu bytes", name, cut, len);
    if (verbose())
      fprintf(stderr, "%s\n", what);
    try_model(buf, cut, &lim, 0.5f, 0, what, &o);
    loaded += o.load_rc == 0;
    tried++;
    free(buf);
  }
  /* the last 512 lengths one by one: graph inputs, outputs and opsets live at the end */
  for (size_t cut = len > 512 ? len - 512 : 0; cut < len; cut++) {
    uint8_t *buf = malloc(cut ? cut : 1);
    ck_assert_ptr_nonnull(buf);
    memcpy(buf, orig, cut);
    snprintf(what, sizeof what, "%s truncated to %zu of %zu bytes", name, cut, len);
    if (verbose())
      fprintf(stderr, "%s\n", what);
    try_model(buf, cut, &lim, 0.5f, 0, what, &o);
    loaded += o.load_rc == 0;
    tried++;
    free(buf);
  }
  printf("%-42s %zu truncations, %zu still loaded\n", name, tried, loaded);
  free(orig);
}

START_TEST(test_truncations) {
  truncations("smallcnn_1x28_dyn.onnx", 6007);
  truncations("head_maxpool_reshape_logsoftmax_dyn.onnx", 97);
  truncations("idiom_normalize_in_model_eval.onnx", 3);
  truncations("idiom_relu6_mean_eval.onnx", 3);
}
END_TEST

/* ---- random mutations ---- */

/* A position: half the time in the first or last 4 KiB, where the graph's
 * structure is (the middle of a PyTorch export is mostly raw weights). */
static size_t pick_pos(uint64_t *rng, size_t len) {
  uint64_t r = an_test_rand(rng);
  if (len > 8192 && (r & 1)) {
    size_t off = (size_t)(an_test_rand(rng) % 4096);
    return (r & 2) ? off : len - 1 - off;
  }
  return (size_t)(an_test_rand(rng) % len);
}

/* Applies 1 to 4 edits to buf (len bytes, room for len + 64); returns the
 * new length. */
static size_t mutate(uint64_t *rng, uint8_t *buf, size_t len) {
  static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0xff, 0x08, 0x10, 0x12, 0x1a, 0x3a};
  int edits = 1 + (int)(an_test_rand(rng) % 4);
  for (int e = 0; e < edits && len > 1; e++) {
    size_t pos = pick_pos(rng, len);
    switch (an_test_rand(rng) % 6) {
    case 0: /* flip some bits */
    case 1:
      buf[pos] ^= (uint8_t)(1 + an_test_rand(rng) % 255);
      break;
    case 2: /* an interesting byte: varint edges, common tags */
      buf[pos] = interesting[an_test_rand(rng) % sizeof interesting];
      break;
    case 3: { /* insert 1..8 random bytes */
      size_t k = 1 + (size_t)(an_test_rand(rng) % 8);
      memmove(buf + pos + k, buf + pos, len - pos);
      for (size_t i = 0; i < k; i++)
        buf[pos + i] = (uint8_t)an_test_rand(rng);
      len += k;
      break;
    }
    case 4: { /* delete 1..8 bytes */
      size_t k = 1 + (size_t)(an_test_rand(rng) % 8);
      if (k > len - pos)
        k = len - pos;
      memmove(buf + pos, buf + pos + k, len - pos - k);
      len -= k;
      break;
    }
    default: /* a huge varint where a length or value was */
      for (size_t i = pos; i < len && i < pos + 4; i++)
        buf[i] = 0xff;
      break;
    }
  }
  return len;
}

static void mutations(const char *name, int count, uint64_t seed) {
  size_t len, loaded = 0, ran_ok = 0;
  uint8_t *orig = read_export(name, &len), *buf = malloc(len + 64);
  an_onnx_limits_t lim;
  outcome_t o;
  char what[256];
  ck_assert_ptr_nonnull(buf);
  corpus_limits(&lim);
  for (int i = 0; i < count; i++) {
    uint64_t rng = seed * 1000003u + (uint64_t)i; /* each mutation replays alone */
    size_t n;
    memcpy(buf, orig, len);
    n = mutate(&rng, buf, len);
    /* exactly n bytes on the heap, so ASan sees any over-read */
    uint8_t *exact = malloc(n ? n : 1);
    ck_assert_ptr_nonnull(exact);
    memcpy(exact, buf, n);
    snprintf(what, sizeof what, "%s mutation %d (seed %llu)", name, i, (unsigned long long)seed);
    if (verbose())
      fprintf(stderr, "%s\n", what);
    try_model(exact, n, &lim, 0.25f, 0, what, &o);
    loaded += o.load_rc == 0;
    ran_ok += o.load_rc == 0 && o.ran && o.run_rc == 0;
    free(exact);
  }
  printf("%-42s %d mutations, %zu loaded, %zu ran\n", name, count, loaded, ran_ok);
  /* the mutations must not all be rejected at the first byte: some must
   * reach the checks behind the parser */
  ck_assert_msg(loaded > 0, "%s: no mutation loaded; the corpus tests only the parser", name);
  free(buf);
  free(orig);
}

START_TEST(test_mutations_small) {
  mutations("idiom_normalize_in_model_eval.onnx", 5000, 1);
  mutations("idiom_plain_preserve.onnx", 5000, 2);
  mutations("idiom_relu6_mean_eval.onnx", 5000, 3);
}
END_TEST

START_TEST(test_mutations_large) {
  mutations("head_maxpool_reshape_logsoftmax_dyn.onnx", 3000, 4);
  mutations("smallcnn_1x28_dyn.onnx", 500, 5);
}
END_TEST

START_TEST(test_oversized) {
  size_t len;
  uint8_t *orig = read_export("idiom_plain_preserve.onnx", &len);
  an_onnx_limits_t lim;
  an_onnx_t *m = NULL;
  char err[512] = "";
  an_onnx_default_limits(&lim);
  lim.max_file_bytes = len - 1;
  ck_assert_int_eq(an_onnx_load(orig, len, &lim, &m, err, sizeof err), AN_EMODEL);
  ck_assert_ptr_null(m);
  ck_assert_msg(strstr(err, "limit") != NULL, "%s", err);
  lim.max_file_bytes = len;
  ck_assert_msg(an_onnx_load(orig, len, &lim, &m, err, sizeof err) == 0, "%s", err);
  an_onnx_free(m);
  free(orig);
}
END_TEST

/* ---- hand-built models ---- */

typedef struct mb {
  void **allocs;
  size_t n_allocs, cap_allocs;
  Onnx__ModelProto model;
  Onnx__GraphProto graph;
  Onnx__OperatorSetIdProto *opsets[4];
  Onnx__NodeProto **nodes;
  Onnx__TensorProto *inits[32];
  Onnx__ValueInfoProto *inputs[32], *outputs[32];
} mb_t;

#define MB_MAX_NODES 1024

static void *mb_alloc(mb_t *b, size_t n) {
  void *p = calloc(1, n ? n : 1);
  ck_assert_ptr_nonnull(p);
  if (b->n_allocs == b->cap_allocs) {
    b->cap_allocs = b->cap_allocs ? 2 * b->cap_allocs : 256;
    b->allocs = realloc(b->allocs, b->cap_allocs * sizeof *b->allocs);
    ck_assert_ptr_nonnull(b->allocs);
  }
  b->allocs[b->n_allocs++] = p;
  return p;
}

static char *mb_str(mb_t *b, const char *s) {
  char *p = mb_alloc(b, strlen(s) + 1);
  memcpy(p, s, strlen(s) + 1);
  return p;
}

/* A model at the given opset (default domain), IR version 8. */
static void mb_init(mb_t *b, int64_t opset) {
  Onnx__ModelProto mi = ONNX__MODEL_PROTO__INIT;
  Onnx__GraphProto gi = ONNX__GRAPH_PROTO__INIT;
  memset(b, 0, sizeof *b);
  b->model = mi;
  b->graph = gi;
  b->model.has_ir_version = 1;
  b->model.ir_version = 8;
  b->model.graph = &b->graph;
  b->model.opset_import = b->opsets;
  b->graph.name = "robustness";
  b->graph.node = b->nodes = mb_alloc(b, MB_MAX_NODES * sizeof *b->nodes);
  b->graph.initializer = b->inits;
  b->graph.input = b->inputs;
  b->graph.output = b->outputs;
  if (opset >= 0) {
    Onnx__OperatorSetIdProto oi = ONNX__OPERATOR_SET_ID_PROTO__INIT, *o = mb_alloc(b, sizeof *o);
    *o = oi;
    o->domain = "";
    o->has_version = 1;
    o->version = opset;
    b->opsets[b->model.n_opset_import++] = o;
  }
}

static void mb_opset(mb_t *b, const char *domain, int64_t version) {
  Onnx__OperatorSetIdProto oi = ONNX__OPERATOR_SET_ID_PROTO__INIT, *o = mb_alloc(b, sizeof *o);
  *o = oi;
  o->domain = mb_str(b, domain);
  o->has_version = 1;
  o->version = version;
  b->opsets[b->model.n_opset_import++] = o;
}

static Onnx__ValueInfoProto *mb_value_info(mb_t *b, const char *name, int elem, int ndim,
                                           const int64_t *dims) {
  Onnx__ValueInfoProto vii = ONNX__VALUE_INFO_PROTO__INIT, *vi = mb_alloc(b, sizeof *vi);
  *vi = vii;
  vi->name = name ? mb_str(b, name) : NULL;
  if (elem < 0)
    return vi; /* no type at all */
  Onnx__TypeProto ti = ONNX__TYPE_PROTO__INIT, *t = mb_alloc(b, sizeof *t);
  Onnx__TypeProto__Tensor tti = ONNX__TYPE_PROTO__TENSOR__INIT, *tt = mb_alloc(b, sizeof *tt);
  Onnx__TensorShapeProto si = ONNX__TENSOR_SHAPE_PROTO__INIT, *s = mb_alloc(b, sizeof *s);
  *t = ti, *tt = tti, *s = si;
  t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  t->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = elem;
  tt->shape = s;
  s->n_dim = (size_t)ndim;
  s->dim = mb_alloc(b, (size_t)ndim * sizeof *s->dim);
  for (int i = 0; i < ndim; i++) {
    Onnx__TensorShapeProto__Dimension di = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    s->dim[i] = mb_alloc(b, sizeof *s->dim[i]);
    *s->dim[i] = di;
    if (dims[i] < 0) {
      s->dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      s->dim[i]->dim_param = "N";
    } else {
      s->dim[i]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      s->dim[i]->dim_value = dims[i];
    }
  }
  vi->type = t;
  return vi;
}

/* A graph input; a negative dimension is the symbolic batch "N". */
static void mb_input(mb_t *b, const char *name, int elem, int ndim, const int64_t *dims) {
  b->inputs[b->graph.n_input++] = mb_value_info(b, name, elem, ndim, dims);
}

static void mb_output(mb_t *b, const char *name) {
  b->outputs[b->graph.n_output++] = mb_value_info(b, name, -1, 0, NULL);
}

/* An initializer with dims and no data yet. */
static Onnx__TensorProto *mb_tensor(mb_t *b, const char *name, int dtype, int ndim,
                                    const int64_t *dims) {
  Onnx__TensorProto ti = ONNX__TENSOR_PROTO__INIT, *t = mb_alloc(b, sizeof *t);
  *t = ti;
  t->name = name ? mb_str(b, name) : NULL;
  t->has_data_type = 1;
  t->data_type = dtype;
  t->n_dims = (size_t)ndim;
  t->dims = mb_alloc(b, (size_t)ndim * sizeof *t->dims);
  memcpy(t->dims, dims, (size_t)ndim * sizeof *t->dims);
  return t;
}

static Onnx__TensorProto *mb_init_f(mb_t *b, const char *name, int ndim, const int64_t *dims,
                                    size_t count, const float *vals) {
  Onnx__TensorProto *t = mb_tensor(b, name, AN_ONNX_FLOAT, ndim, dims);
  t->n_float_data = count;
  t->float_data = mb_alloc(b, count * sizeof(float));
  if (vals)
    memcpy(t->float_data, vals, count * sizeof(float));
  b->inits[b->graph.n_initializer++] = t;
  return t;
}

static Onnx__TensorProto *mb_init_i64(mb_t *b, const char *name, int ndim, const int64_t *dims,
                                      size_t count, const int64_t *vals) {
  Onnx__TensorProto *t = mb_tensor(b, name, AN_ONNX_INT64, ndim, dims);
  t->n_int64_data = count;
  t->int64_data = mb_alloc(b, count * sizeof(int64_t));
  if (vals)
    memcpy(t->int64_data, vals, count * sizeof(int64_t));
  b->inits[b->graph.n_initializer++] = t;
  return t;
}

static Onnx__NodeProto *mb_node(mb_t *b, const char *op, const char *const *ins, size_t n_in,
                                const char *const *outs, size_t n_out) {
  Onnx__NodeProto ni = ONNX__NODE_PROTO__INIT, *n = mb_alloc(b, sizeof *n);
  ck_assert_uint_lt(b->graph.n_node, MB_MAX_NODES);
  *n = ni;
  n->op_type = mb_str(b, op);
  n->n_input = n_in;
  n->input = mb_alloc(b, n_in * sizeof *n->input);
  for (size_t i = 0; i < n_in; i++)
    n->input[i] = mb_str(b, ins[i]);
  n->n_output = n_out;
  n->output = mb_alloc(b, n_out * sizeof *n->output);
  for (size_t i = 0; i < n_out; i++)
    n->output[i] = mb_str(b, outs[i]);
  n->attribute = mb_alloc(b, 16 * sizeof *n->attribute);
  b->nodes[b->graph.n_node++] = n;
  return n;
}

#define MB_LIST(...)                                                                               \
  (const char *const[]){__VA_ARGS__},                                                              \
      sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)
#define NODE(b, op, ins, outs) mb_node((b), (op), ins, outs)
#define IN MB_LIST
#define OUT MB_LIST
#define DIMS(...)                                                                                  \
  (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[]) { __VA_ARGS__ }

static Onnx__AttributeProto *mb_attr(mb_t *b, Onnx__NodeProto *n, const char *name) {
  Onnx__AttributeProto ai = ONNX__ATTRIBUTE_PROTO__INIT, *a = mb_alloc(b, sizeof *a);
  ck_assert_uint_lt(n->n_attribute, 16);
  *a = ai;
  a->name = name ? mb_str(b, name) : NULL;
  n->attribute[n->n_attribute++] = a;
  return a;
}

static void mb_attr_i(mb_t *b, Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = mb_attr(b, n, name);
  a->has_type = 1, a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  a->has_i = 1, a->i = v;
}

static void mb_attr_f(mb_t *b, Onnx__NodeProto *n, const char *name, float v) {
  Onnx__AttributeProto *a = mb_attr(b, n, name);
  a->has_type = 1, a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  a->has_f = 1, a->f = v;
}

static void mb_attr_ints(mb_t *b, Onnx__NodeProto *n, const char *name, int count,
                         const int64_t *v) {
  Onnx__AttributeProto *a = mb_attr(b, n, name);
  a->has_type = 1, a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  a->n_ints = (size_t)count;
  a->ints = mb_alloc(b, (size_t)count * sizeof *a->ints);
  memcpy(a->ints, v, (size_t)count * sizeof *a->ints);
}

static void mb_attr_floats(mb_t *b, Onnx__NodeProto *n, const char *name, int count,
                           const float *v) {
  Onnx__AttributeProto *a = mb_attr(b, n, name);
  a->has_type = 1, a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
  a->n_floats = (size_t)count;
  a->floats = mb_alloc(b, (size_t)count * sizeof *a->floats);
  if (count)
    memcpy(a->floats, v, (size_t)count * sizeof *a->floats);
}

static uint8_t *mb_pack(mb_t *b, size_t *len) {
  size_t n = onnx__model_proto__get_packed_size(&b->model);
  uint8_t *buf = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(onnx__model_proto__pack(&b->model, buf), n);
  *len = n;
  return buf;
}

static void mb_free(mb_t *b) {
  for (size_t i = 0; i < b->n_allocs; i++)
    free(b->allocs[i]);
  free(b->allocs);
}

/* ---- the cases ---- */

typedef enum {
  EXPECT_SAFE,      /* refused, failed or ran: only no crash and the contract */
  EXPECT_REFUSED,   /* an_onnx_load fails */
  EXPECT_FAILS,     /* refused at load, or the run fails */
  EXPECT_RUN_FAILS, /* loads, and the run fails */
  EXPECT_RUN_OK,    /* loads and runs */
} expect_t;

typedef struct rcase rcase_t;
struct rcase {
  const char *name;
  void (*build)(mb_t *b, const rcase_t *c);
  expect_t expect;
  int code;           /* 0: any error; else the error expected */
  const char *needle; /* in the message, or NULL */
  const char *op;     /* for builders shared by several operators */
  int64_t ifill;      /* value of int64 inputs */
  size_t max_nodes, max_elems;
  uint64_t max_mem;
  double max_seconds; /* > 0: also the run must stop within max_seconds + 1 s */
  int64_t opset;      /* 0: 13 */
};

static const int64_t x_dims[2] = {-1, 4};

/* y = Relu(x), x: float [N, 4]. */
static void b_relu(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Relu", IN("x"), OUT("y"));
  mb_output(b, "y");
}

static void b_reverse_order(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Sigmoid", IN("b"), OUT("y"));
  NODE(b, "Tanh", IN("a"), OUT("b"));
  NODE(b, "Relu", IN("x"), OUT("a"));
  mb_output(b, "y");
}

static void b_cycle(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Add", IN("x", "b"), OUT("a"));
  NODE(b, "Relu", IN("a"), OUT("b"));
  mb_output(b, "b");
}

static void b_self_loop(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Add", IN("x", "a"), OUT("a"));
  mb_output(b, "a");
}

static void b_undefined(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Relu", IN("ghost"), OUT("y"));
  mb_output(b, "y");
}

static void b_output_undefined(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  mb_output(b, "ghost");
}

static void b_defined_twice(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Relu", IN("x"), OUT("y"));
  NODE(b, "Sigmoid", IN("x"), OUT("y"));
  mb_output(b, "y");
}

static void b_init_shadows_output(mb_t *b, const rcase_t *c) {
  mb_init_f(b, "y", DIMS(4), 4, NULL);
  b_relu(b, c);
}

static void b_input_twice(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  b_relu(b, c);
}

/* y = Add(x, w) with w an initializer whose dims the case chooses. */
static Onnx__TensorProto *add_with(mb_t *b, Onnx__TensorProto *w) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Add", IN("x", "w"), OUT("y"));
  mb_output(b, "y");
  return w;
}

static void b_init_huge_dim(mb_t *b, const rcase_t *c) {
  (void)c;
  add_with(b, mb_init_f(b, "w", DIMS((int64_t)1 << 40), 0, NULL));
}

static void b_init_dims_overflow(mb_t *b, const rcase_t *c) {
  (void)c;
  const int64_t big = (int64_t)1 << 27;
  add_with(b, mb_init_f(b, "w", DIMS(big, big, big, big, big, big, big, big), 0, NULL));
}

/* Two dims of 2^32 multiply to 2^64, which wraps to 0 in a size_t: with an
 * element limit large enough for each dim alone, the product check must
 * still see the overflow (raw_data of 0 bytes "matches" 0 elements). */
static void b_init_dims_wrap(mb_t *b, const rcase_t *c) {
  (void)c;
  Onnx__TensorProto *w = mb_tensor(b, "w", AN_ONNX_FLOAT, DIMS((int64_t)1 << 32, (int64_t)1 << 32));
  w->has_raw_data = 1;
  w->raw_data.len = 0;
  w->raw_data.data = NULL;
  b->inits[b->graph.n_initializer++] = w;
  add_with(b, w);
}

static void b_init_negative_dim(mb_t *b, const rcase_t *c) {
  (void)c;
  add_with(b, mb_init_f(b, "w", DIMS(-4), 0, NULL));
}

static void b_init_raw_len(mb_t *b, const rcase_t *c) {
  (void)c;
  Onnx__TensorProto *w = mb_tensor(b, "w", AN_ONNX_FLOAT, DIMS(4));
  w->has_raw_data = 1;
  w->raw_data.len = 12;
  w->raw_data.data = mb_alloc(b, 12);
  b->inits[b->graph.n_initializer++] = w;
  add_with(b, w);
}

static void b_init_float_count(mb_t *b, const rcase_t *c) {
  (void)c;
  add_with(b, mb_init_f(b, "w", DIMS(2, 2), 3, NULL));
}

static void b_init_external(mb_t *b, const rcase_t *c) {
  (void)c;
  Onnx__TensorProto *w = add_with(b, mb_init_f(b, "w", DIMS(4), 0, NULL));
  w->n_float_data = 0;
  w->has_data_location = 1;
  w->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
  Onnx__StringStringEntryProto ei = ONNX__STRING_STRING_ENTRY_PROTO__INIT;
  Onnx__StringStringEntryProto *e = mb_alloc(b, sizeof *e);
  *e = ei;
  e->key = "location";
  e->value = "/etc/passwd";
  w->n_external_data = 1;
  w->external_data = mb_alloc(b, sizeof *w->external_data);
  w->external_data[0] = e;
}

/* external_data entries without data_location = EXTERNAL */
static void b_init_external_entries(mb_t *b, const rcase_t *c) {
  b_init_external(b, c);
  b->inits[0]->has_data_location = 0;
  b->inits[0]->n_float_data = 4;
  b->inits[0]->float_data = mb_alloc(b, 4 * sizeof(float));
}

static void b_init_double(mb_t *b, const rcase_t *c) {
  (void)c;
  Onnx__TensorProto *w = mb_tensor(b, "w", 11 /* double */, DIMS(4));
  w->n_double_data = 4;
  w->double_data = mb_alloc(b, 4 * sizeof(double));
  b->inits[b->graph.n_initializer++] = w;
  add_with(b, w);
}

static void b_domain_opset(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  mb_opset(b, "com.evil", 1);
}

static void b_domain_node(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  b->nodes[0]->domain = "com.microsoft";
}

static void b_no_ir_version(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  b->model.has_ir_version = 0;
}

static void b_no_graph(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  b->model.graph = NULL;
}

static void b_no_outputs(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  b->graph.n_output = 0;
}

static void b_unknown_op(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "LaunchMissiles", IN("x"), OUT("y"));
  mb_output(b, "y");
}

static void b_wrong_arity(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  NODE(b, "Relu", IN("x", "x"), OUT("y"));
  mb_output(b, "y");
}

static void b_input_no_type(mb_t *b, const rcase_t *c) {
  (void)c;
  b->inputs[b->graph.n_input++] = mb_value_info(b, "x", -1, 0, NULL);
  NODE(b, "Relu", IN("x"), OUT("y"));
  mb_output(b, "y");
}

static void b_input_rank9(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 1, 1, 1, 1, 1, 1, 1, 2));
  NODE(b, "MatMul", IN("x", "x"), OUT("y"));
  mb_output(b, "y");
}

static void b_input_huge_dim(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, (int64_t)1 << 41));
  NODE(b, "Relu", IN("x"), OUT("y"));
  mb_output(b, "y");
}

static void b_input_wide(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 1000));
  NODE(b, "Relu", IN("x"), OUT("y"));
  mb_output(b, "y");
}

static void b_init_100(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(1, 100)); /* fixed: a batch of 2 would be 200 */
  mb_init_f(b, "w", DIMS(100), 100, NULL);
  NODE(b, "Add", IN("x", "w"), OUT("y"));
  mb_output(b, "y");
}

/* Conv: x [N, 2, 8, 8], w [4, 2, 3, 3]; c->op names the bad attribute. */
static void b_conv(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 2, 8, 8));
  mb_init_f(b, "w", DIMS(4, 2, 3, 3), 72, NULL);
  Onnx__NodeProto *n = NODE(b, "Conv", IN("x", "w"), OUT("y"));
  const char *a = c->op;
  if (strcmp(a, "kernel_shape") == 0)
    mb_attr_ints(b, n, "kernel_shape", DIMS(1000000000, 1000000000));
  else if (strcmp(a, "strides0") == 0)
    mb_attr_ints(b, n, "strides", DIMS(0, 1));
  else if (strcmp(a, "strides-1") == 0)
    mb_attr_ints(b, n, "strides", DIMS(-1, -1));
  else if (strcmp(a, "strides_huge") == 0)
    mb_attr_ints(b, n, "strides", DIMS((int64_t)1 << 62, 1));
  else if (strcmp(a, "pads-1") == 0)
    mb_attr_ints(b, n, "pads", DIMS(-1, 0, 0, 0));
  else if (strcmp(a, "pads_huge") == 0)
    mb_attr_ints(b, n, "pads", DIMS(1000000000, 0, 1000000000, 0));
  else if (strcmp(a, "pads3") == 0)
    mb_attr_ints(b, n, "pads", DIMS(1, 1, 1));
  else if (strcmp(a, "dilations0") == 0)
    mb_attr_ints(b, n, "dilations", DIMS(0, 0));
  else if (strcmp(a, "dilations_huge") == 0)
    mb_attr_ints(b, n, "dilations", DIMS(1000000, 1));
  else if (strcmp(a, "group0") == 0)
    mb_attr_i(b, n, "group", 0);
  else if (strcmp(a, "group-2") == 0)
    mb_attr_i(b, n, "group", -2);
  else if (strcmp(a, "group3") == 0)
    mb_attr_i(b, n, "group", 3);
  else if (strcmp(a, "group_huge") == 0)
    mb_attr_i(b, n, "group", (int64_t)1 << 40);
  else if (strcmp(a, "auto_pad") == 0) {
    Onnx__AttributeProto *s = mb_attr(b, n, "auto_pad");
    s->has_s = 1, s->s.len = 3, s->s.data = (uint8_t *)mb_str(b, "BAD");
  } else if (strcmp(a, "bias") == 0) {
    mb_init_f(b, "bias", DIMS(3), 3, NULL);
    n->n_input = 3;
    n->input = mb_alloc(b, 3 * sizeof *n->input);
    n->input[0] = "x", n->input[1] = "w", n->input[2] = "bias";
  } else if (strcmp(a, "window") == 0) {
    b->inits[0]->dims[2] = b->inits[0]->dims[3] = 10;
    b->inits[0]->n_float_data = 4 * 2 * 10 * 10;
    b->inits[0]->float_data = mb_alloc(b, 800 * sizeof(float));
  } else if (strcmp(a, "ok") != 0) {
    ck_abort_msg("unknown Conv case %s", a);
  }
  mb_output(b, "y");
}

static void b_maxpool(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 2, 8, 8));
  Onnx__NodeProto *n = NODE(b, "MaxPool", IN("x"), OUT("y"));
  if (strcmp(c->op, "kernel_huge") == 0)
    mb_attr_ints(b, n, "kernel_shape", DIMS(1000000000, 2));
  else if (strcmp(c->op, "kernel_neg") == 0)
    mb_attr_ints(b, n, "kernel_shape", DIMS(-3, 2));
  else if (strcmp(c->op, "no_kernel") == 0)
    ;
  else if (strcmp(c->op, "strides0") == 0) {
    mb_attr_ints(b, n, "kernel_shape", DIMS(2, 2));
    mb_attr_ints(b, n, "strides", DIMS(0, 0));
  } else
    ck_abort_msg("unknown MaxPool case %s", c->op);
  mb_output(b, "y");
}

/* Reshape(x [N, 4], shape) with the shape a constant. */
static void b_reshape(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  if (strcmp(c->op, "two-1") == 0)
    mb_init_i64(b, "s", DIMS(2), 2, (const int64_t[]){-1, -1});
  else if (strcmp(c->op, "neg") == 0)
    mb_init_i64(b, "s", DIMS(2), 2, (const int64_t[]){-5, 4});
  else if (strcmp(c->op, "huge") == 0)
    mb_init_i64(b, "s", DIMS(2), 2, (const int64_t[]){(int64_t)1 << 62, (int64_t)1 << 62});
  else if (strcmp(c->op, "wrap") == 0) /* (2^62 + 1) * 4 wraps to 4 */
    mb_init_i64(b, "s", DIMS(3), 3, (const int64_t[]){-1, ((int64_t)1 << 62) + 1, 4});
  else if (strcmp(c->op, "rank9") == 0)
    mb_init_i64(b, "s", DIMS(9), 9, (const int64_t[]){-1, 1, 1, 1, 1, 1, 1, 1, 4});
  else if (strcmp(c->op, "copy_missing") == 0)
    mb_init_i64(b, "s", DIMS(3), 3, (const int64_t[]){0, 0, 0});
  else if (strcmp(c->op, "float_shape") == 0)
    mb_init_f(b, "s", DIMS(2), 2, (const float[]){1, 4});
  else if (strcmp(c->op, "matrix_shape") == 0)
    mb_init_i64(b, "s", DIMS(1, 2), 2, (const int64_t[]){-1, 4});
  else
    ck_abort_msg("unknown Reshape case %s", c->op);
  NODE(b, "Reshape", IN("x", "s"), OUT("y"));
  mb_output(b, "y");
}

static void b_transpose(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  Onnx__NodeProto *n = NODE(b, "Transpose", IN("x"), OUT("y"));
  if (strcmp(c->op, "dup") == 0)
    mb_attr_ints(b, n, "perm", DIMS(0, 0));
  else if (strcmp(c->op, "oob") == 0)
    mb_attr_ints(b, n, "perm", DIMS(0, 7));
  else if (strcmp(c->op, "neg") == 0)
    mb_attr_ints(b, n, "perm", DIMS(-1, 0));
  else if (strcmp(c->op, "short") == 0)
    mb_attr_ints(b, n, "perm", DIMS(1));
  else if (strcmp(c->op, "long") == 0)
    mb_attr_ints(b, n, "perm", DIMS(0, 1, 2, 3, 4, 5, 6, 7, 8, 9));
  else
    ck_abort_msg("unknown Transpose case %s", c->op);
  mb_output(b, "y");
}

/* Gather(x [N, 4], idx) on axis 1; idx an int64 input [2] (filled with
 * c->ifill) or, for "const", a constant 9. */
static void b_gather(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  if (strcmp(c->op, "const") == 0)
    mb_init_i64(b, "idx", DIMS(1), 1, (const int64_t[]){9});
  else
    mb_input(b, "idx", AN_ONNX_INT64, DIMS(2));
  Onnx__NodeProto *n = NODE(b, "Gather", IN("x", "idx"), OUT("y"));
  mb_attr_i(b, n, "axis", strcmp(c->op, "axis") == 0 ? 2 : 1);
  mb_output(b, "y");
}

static void b_concat(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  if (strcmp(c->op, "17") == 0) {
    Onnx__NodeProto *n = NODE(
        b, "Concat",
        IN("x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x"),
        OUT("y"));
    mb_attr_i(b, n, "axis", 1);
  } else if (strcmp(c->op, "rank") == 0) {
    mb_init_f(b, "w", DIMS(4), 4, NULL);
    Onnx__NodeProto *n = NODE(b, "Concat", IN("x", "w"), OUT("y"));
    mb_attr_i(b, n, "axis", 1);
  } else {
    Onnx__NodeProto *n = NODE(b, "Concat", IN("x", "x"), OUT("y"));
    mb_attr_i(b, n, "axis", strcmp(c->op, "axis5") == 0 ? 5 : -3);
  }
  mb_output(b, "y");
}

static void b_gemm(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 3));
  if (strcmp(c->op, "inner") == 0) {
    mb_init_f(b, "w", DIMS(4, 5), 20, NULL);
    NODE(b, "Gemm", IN("x", "w"), OUT("y"));
  } else if (strcmp(c->op, "transB") == 0) {
    mb_init_f(b, "w", DIMS(3, 5), 15, NULL);
    Onnx__NodeProto *n = NODE(b, "Gemm", IN("x", "w"), OUT("y"));
    mb_attr_i(b, n, "transB", 1);
  } else if (strcmp(c->op, "C") == 0) {
    mb_init_f(b, "w", DIMS(3, 5), 15, NULL);
    mb_init_f(b, "c", DIMS(7), 7, NULL);
    NODE(b, "Gemm", IN("x", "w", "c"), OUT("y"));
  } else if (strcmp(c->op, "rank3") == 0) {
    mb_init_f(b, "w", DIMS(3, 5, 1), 15, NULL);
    NODE(b, "Gemm", IN("x", "w"), OUT("y"));
  } else {
    ck_abort_msg("unknown Gemm case %s", c->op);
  }
  mb_output(b, "y");
}

static void b_matmul(mb_t *b, const rcase_t *c) {
  if (strcmp(c->op, "inner") == 0) {
    mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 3));
    mb_init_f(b, "w", DIMS(4, 2), 8, NULL);
  } else if (strcmp(c->op, "batch") == 0) {
    mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 3, 2, 3));
    mb_init_f(b, "w", DIMS(4, 3, 2), 24, NULL);
  } else if (strcmp(c->op, "scalar") == 0) {
    mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 3));
    mb_init_f(b, "w", 0, (const int64_t[]){0}, 1, NULL);
  } else {
    ck_abort_msg("unknown MatMul case %s", c->op);
  }
  NODE(b, "MatMul", IN("x", "w"), OUT("y"));
  mb_output(b, "y");
}

static void b_unsqueeze_rank9(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 1, 1, 1, 1, 1, 1, 1));
  mb_init_i64(b, "axes", DIMS(1), 1, (const int64_t[]){0});
  NODE(b, "Unsqueeze", IN("x", "axes"), OUT("y"));
  mb_output(b, "y");
}

static void b_unsqueeze_repeat(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  mb_init_i64(b, "axes", DIMS(2), 2, (const int64_t[]){1, 1});
  NODE(b, "Unsqueeze", IN("x", "axes"), OUT("y"));
  mb_output(b, "y");
}

static void b_axis_attr(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  Onnx__NodeProto *n = NODE(b, c->op, IN("x"), OUT("y"));
  mb_attr_i(b, n, "axis", 9);
  mb_output(b, "y");
}

static void b_pad(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  if (strcmp(c->op, "huge") == 0)
    mb_init_i64(b, "p", DIMS(4), 4, (const int64_t[]){0, 0, 0, 1000000000000});
  else if (strcmp(c->op, "neg") == 0)
    mb_init_i64(b, "p", DIMS(4), 4, (const int64_t[]){0, -100, 0, 0});
  else if (strcmp(c->op, "count") == 0)
    mb_init_i64(b, "p", DIMS(3), 3, (const int64_t[]){0, 1, 0});
  else
    mb_init_i64(b, "p", DIMS(4), 4, (const int64_t[]){0, 9, 0, 0});
  Onnx__NodeProto *n = NODE(b, "Pad", IN("x", "p"), OUT("y"));
  if (strcmp(c->op, "reflect") == 0) {
    Onnx__AttributeProto *s = mb_attr(b, n, "mode");
    s->has_s = 1, s->s.len = 7, s->s.data = (uint8_t *)mb_str(b, "reflect");
  }
  mb_output(b, "y");
}

static void b_batchnorm_c(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 3, 2, 2));
  mb_init_f(b, "s", DIMS(3), 3, NULL);
  mb_init_f(b, "bb", DIMS(3), 3, NULL);
  mb_init_f(b, "m", DIMS(2), 2, NULL);
  mb_init_f(b, "v", DIMS(3), 3, NULL);
  NODE(b, "BatchNormalization", IN("x", "s", "bb", "m", "v"), OUT("y"));
  mb_output(b, "y");
}

/* A chain of 20 Relus. */
static void b_chain20(mb_t *b, const rcase_t *c) {
  (void)c;
  char prev[32] = "x", next[32];
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  for (int i = 0; i < 20; i++) {
    snprintf(next, sizeof next, "v%d", i);
    NODE(b, "Relu", IN(prev), OUT(next));
    memcpy(prev, next, sizeof prev);
  }
  mb_output(b, prev);
}

/* Three outputs of 256 KiB each at batch 1: 768 KiB live at the end. */
static void b_three_outputs(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(-1, 65536));
  NODE(b, "Relu", IN("x"), OUT("a"));
  NODE(b, "Sigmoid", IN("x"), OUT("b"));
  NODE(b, "Tanh", IN("x"), OUT("c"));
  mb_output(b, "a");
  mb_output(b, "b");
  mb_output(b, "c");
}

/* A convolution whose output is small (51 x 51) but whose im2col scratch
 * is 2500 x 2601 floats (26 MB): the memory limit is about the whole run,
 * scratch included. */
static void b_conv_scratch(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(1, 1, 100, 100));
  mb_input(b, "w", AN_ONNX_FLOAT, DIMS(1, 1, 50, 50));
  NODE(b, "Conv", IN("x", "w"), OUT("y"));
  mb_output(b, "y");
}

/* The same for ConvTranspose: output 99 x 99, scratch 2500 x 2500 floats. */
static void b_convt_scratch(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(1, 1, 50, 50));
  mb_input(b, "w", AN_ONNX_FLOAT, DIMS(1, 1, 50, 50));
  NODE(b, "ConvTranspose", IN("x", "w"), OUT("y"));
  mb_output(b, "y");
}

/* Zero input channels let any group pass a divisibility test; a huge group
 * then overflowed the output channel count (found in review). */
static void b_convt_group(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_init_f(b, "x", DIMS(1, 0, 4, 4), 0, NULL);
  mb_init_f(b, "w", DIMS(0, 3, 3, 3), 0, NULL);
  Onnx__NodeProto *n = NODE(b, "ConvTranspose", IN("x", "w"), OUT("y"));
  mb_attr_i(b, n, "group", 6148914691236517206LL);
  mb_output(b, "y");
}

/* 300 Relus over 1 Mi floats: tens of ms in all, far over a 2 ms limit. */
static void b_slow_chain(mb_t *b, const rcase_t *c) {
  (void)c;
  char prev[32] = "x", next[32];
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(1, 1 << 20));
  for (int i = 0; i < 300; i++) {
    snprintf(next, sizeof next, "v%d", i);
    NODE(b, "Relu", IN(prev), OUT(next));
    memcpy(prev, next, sizeof prev);
  }
  mb_output(b, prev);
}

/* One node with 151^2 windows of 150^2: ~5e8 steps, seconds of work in a
 * single operator. max_seconds must bound it too, not only the gaps
 * between nodes. */
static void b_slow_node(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, DIMS(1, 1, 300, 300));
  Onnx__NodeProto *n = NODE(b, "MaxPool", IN("x"), OUT("y"));
  mb_attr_ints(b, n, "kernel_shape", DIMS(150, 150));
  mb_output(b, "y");
}

/* A required input given as "" (the ONNX spelling of an omitted optional
 * input): the operator named by c->op must refuse it, not dereference it. */
static void b_empty_input(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  mb_init_i64(b, "s", DIMS(2), 2, (const int64_t[]){-1, 4});
  mb_init_f(b, "w", DIMS(4, 4), 16, NULL);
  if (strcmp(c->op, "Reshape") == 0)
    NODE(b, "Reshape", IN("", "s"), OUT("y"));
  else if (strcmp(c->op, "Reshape1") == 0)
    NODE(b, "Reshape", IN("x", ""), OUT("y"));
  else if (strcmp(c->op, "Gather") == 0)
    NODE(b, "Gather", IN("", "s"), OUT("y"));
  else if (strcmp(c->op, "Gather1") == 0)
    NODE(b, "Gather", IN("x", ""), OUT("y"));
  else if (strcmp(c->op, "Concat") == 0)
    NODE(b, "Concat", IN("", "x"), OUT("y"));
  else if (strcmp(c->op, "MatMul") == 0)
    NODE(b, "MatMul", IN("", "w"), OUT("y"));
  else if (strcmp(c->op, "Gemm") == 0)
    NODE(b, "Gemm", IN("", "w"), OUT("y"));
  else if (strcmp(c->op, "Add") == 0)
    NODE(b, "Add", IN("", "x"), OUT("y"));
  else if (strcmp(c->op, "Conv") == 0)
    NODE(b, "Conv", IN("", "w"), OUT("y"));
  else if (strcmp(c->op, "BatchNormalization") == 0)
    NODE(b, "BatchNormalization", IN("", "w", "w", "w", "w"), OUT("y"));
  else
    NODE(b, c->op, IN(""), OUT("y"));
  mb_output(b, "y");
}

static void b_constant_empty_output(mb_t *b, const rcase_t *c) {
  (void)c;
  Onnx__NodeProto *n = mb_node(b, "Constant", NULL, 0, OUT(""));
  b->nodes[0]->n_input = 0;
  mb_attr_f(b, n, "value_float", 1.5f);
  b_relu(b, c);
}

static void b_constant_unnamed_attr(mb_t *b, const rcase_t *c) {
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  Onnx__NodeProto *n = mb_node(b, "Constant", NULL, 0, OUT("k"));
  n->n_input = 0;
  mb_attr_f(b, n, NULL, 1.5f);
  NODE(b, "Add", IN("x", "k"), OUT("y"));
  mb_output(b, "y");
  (void)c;
}

static void b_constant_empty_floats(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  Onnx__NodeProto *n = mb_node(b, "Constant", NULL, 0, OUT("k"));
  n->n_input = 0;
  mb_attr_floats(b, n, "value_floats", 0, NULL);
  NODE(b, "Add", IN("x", "k"), OUT("y"));
  mb_output(b, "y");
}

static void b_constant_huge_tensor(mb_t *b, const rcase_t *c) {
  (void)c;
  mb_input(b, "x", AN_ONNX_FLOAT, 2, x_dims);
  Onnx__NodeProto *n = mb_node(b, "Constant", NULL, 0, OUT("k"));
  n->n_input = 0;
  Onnx__AttributeProto *a = mb_attr(b, n, "value");
  a->has_type = 1, a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  a->t = mb_tensor(b, "kt", AN_ONNX_FLOAT, DIMS((int64_t)1 << 40, 4));
  NODE(b, "Add", IN("x", "k"), OUT("y"));
  mb_output(b, "y");
}

/* Valid models where an int64 graph input (values unknown while shapes
 * are inferred at load) feeds an operator that computes int64 data. */
static void b_int64_input(mb_t *b, const rcase_t *c) {
  mb_input(b, "i", AN_ONNX_INT64, DIMS(2));
  mb_init_i64(b, "k", DIMS(4), 4, (const int64_t[]){10, 20, 30, 40});
  mb_init_i64(b, "k2", DIMS(2), 2, (const int64_t[]){1, 2});
  if (strcmp(c->op, "Gather") == 0) {
    NODE(b, "Gather", IN("k", "i"), OUT("y"));
  } else if (strcmp(c->op, "Gather0") == 0) {
    mb_init_i64(b, "j", DIMS(1), 1, (const int64_t[]){1});
    NODE(b, "Gather", IN("i", "j"), OUT("y"));
  } else if (strcmp(c->op, "Add") == 0) {
    NODE(b, "Add", IN("i", "k2"), OUT("y"));
  } else if (strcmp(c->op, "Concat") == 0) {
    Onnx__NodeProto *n = NODE(b, "Concat", IN("k2", "i"), OUT("y"));
    mb_attr_i(b, n, "axis", 0);
  } else if (strcmp(c->op, "Transpose") == 0) {
    NODE(b, "Transpose", IN("i"), OUT("y"));
  } else if (strcmp(c->op, "Identity") == 0) {
    NODE(b, "Identity", IN("i"), OUT("y"));
  } else {
    ck_abort_msg("unknown int64 case %s", c->op);
  }
  mb_output(b, "y");
}

static void b_duplicate_output(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  mb_output(b, "y");
}

static void b_input_is_output(mb_t *b, const rcase_t *c) {
  b_relu(b, c);
  mb_output(b, "x");
}

static const rcase_t cases[] = {
    /* sanity: the harness can see a good model run, and a sort */
    {.name = "valid relu", .build = b_relu, .expect = EXPECT_RUN_OK},
    {.name = "nodes in reverse order", .build = b_reverse_order, .expect = EXPECT_RUN_OK},
    {.name = "graph input is also an output", .build = b_input_is_output, .expect = EXPECT_RUN_OK},
    /* graph structure */
    {.name = "cycle A->B->A",
     .build = b_cycle,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "cycle"},
    {.name = "node reads its own output",
     .build = b_self_loop,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "cycle"},
    {.name = "node reads an undefined value",
     .build = b_undefined,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "ghost"},
    {.name = "graph output never computed",
     .build = b_output_undefined,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "ghost"},
    {.name = "value defined by two nodes",
     .build = b_defined_twice,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "twice"},
    {.name = "initializer and node output share a name",
     .build = b_init_shadows_output,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "twice"},
    {.name = "graph input listed twice",
     .build = b_input_twice,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "twice"},
    {.name = "graph output listed twice", .build = b_duplicate_output, .expect = EXPECT_SAFE},
    {.name = "no ir_version",
     .build = b_no_ir_version,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "ir_version"},
    {.name = "no graph",
     .build = b_no_graph,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "graph"},
    {.name = "no outputs",
     .build = b_no_outputs,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "output"},
    {.name = "unknown operator",
     .build = b_unknown_op,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .needle = "LaunchMissiles"},
    {.name = "Relu with two inputs",
     .build = b_wrong_arity,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    /* initializers */
    {.name = "initializer dim 2^40",
     .build = b_init_huge_dim,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    {.name = "initializer dims product 2^216",
     .build = b_init_dims_overflow,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    {.name = "initializer dims product wraps to 0",
     .build = b_init_dims_wrap,
     .expect = EXPECT_REFUSED,
     .max_elems = (size_t)1 << 62},
    {.name = "initializer negative dim",
     .build = b_init_negative_dim,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    {.name = "raw_data shorter than dims",
     .build = b_init_raw_len,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "match"},
    {.name = "float_data count differs",
     .build = b_init_float_count,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "match"},
    {.name = "external data",
     .build = b_init_external,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "external"},
    {.name = "external_data entries",
     .build = b_init_external_entries,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "external"},
    {.name = "double initializer",
     .build = b_init_double,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .needle = "double"},
    {.name = "initializer over max_tensor_elems",
     .build = b_init_100,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .max_elems = 50},
    {.name = "initializer at max_tensor_elems",
     .build = b_init_100,
     .expect = EXPECT_RUN_OK,
     .max_elems = 100},
    /* opsets and domains */
    {.name = "opset 99",
     .build = b_relu,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .needle = "opset",
     .opset = 99},
    {.name = "opset 6",
     .build = b_relu,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .needle = "opset",
     .opset = 6},
    {.name = "no opset_import",
     .build = b_relu,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .opset = -1},
    {.name = "opset_import of an unknown domain",
     .build = b_domain_opset,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .needle = "com.evil"},
    {.name = "node in an unknown domain",
     .build = b_domain_node,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED,
     .needle = "com.microsoft"},
    /* inputs */
    {.name = "input without a type",
     .build = b_input_no_type,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED},
    {.name = "input of rank 9 (MatMul rank > 8)",
     .build = b_input_rank9,
     .expect = EXPECT_REFUSED,
     .code = AN_EUNSUPPORTED},
    {.name = "input dim 2^41",
     .build = b_input_huge_dim,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    {.name = "input over max_tensor_elems",
     .build = b_input_wide,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "limit",
     .max_elems = 50},
    /* Conv attributes */
    {.name = "Conv valid", .build = b_conv, .expect = EXPECT_RUN_OK, .op = "ok"},
    {.name = "Conv kernel_shape 1e9",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "kernel_shape"},
    {.name = "Conv strides 0",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "strides0"},
    {.name = "Conv strides -1",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "strides-1"},
    {.name = "Conv strides 2^62",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "strides_huge"},
    {.name = "Conv pads -1",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "pads-1"},
    {.name = "Conv pads 1e9",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "pads_huge"},
    {.name = "Conv pads of 3 values",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "pads3"},
    {.name = "Conv dilations 0",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "dilations0"},
    {.name = "Conv dilations 1e6",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "dilations_huge"},
    {.name = "Conv group 0",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "group0"},
    {.name = "Conv group -2",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "group-2"},
    {.name = "Conv group 3 does not divide 2 channels",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "group3"},
    {.name = "Conv group 2^40",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "group_huge"},
    {.name = "Conv auto_pad BAD",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "auto_pad",
     .op = "auto_pad"},
    {.name = "Conv bias of the wrong size",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "bias"},
    {.name = "Conv kernel larger than the input",
     .build = b_conv,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "window"},
    {.name = "MaxPool kernel 1e9",
     .build = b_maxpool,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "kernel_huge"},
    {.name = "MaxPool kernel -3",
     .build = b_maxpool,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "kernel_neg"},
    {.name = "MaxPool without kernel_shape",
     .build = b_maxpool,
     .expect = EXPECT_REFUSED,
     .op = "no_kernel"},
    {.name = "MaxPool strides 0",
     .build = b_maxpool,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "strides0"},
    /* shapes */
    {.name = "Reshape with two -1",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "-1",
     .op = "two-1"},
    {.name = "Reshape to -5",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "neg"},
    {.name = "Reshape to 2^62 x 2^62",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "huge"},
    {.name = "Reshape whose product wraps",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "wrap"},
    {.name = "Reshape to rank 9", .build = b_reshape, .expect = EXPECT_REFUSED, .op = "rank9"},
    {.name = "Reshape copying a missing dim",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "copy_missing"},
    {.name = "Reshape with a float shape",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .op = "float_shape"},
    {.name = "Reshape with a 2-D shape",
     .build = b_reshape,
     .expect = EXPECT_REFUSED,
     .op = "matrix_shape"},
    {.name = "Transpose perm repeats",
     .build = b_transpose,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "permutation",
     .op = "dup"},
    {.name = "Transpose perm out of range",
     .build = b_transpose,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "permutation",
     .op = "oob"},
    {.name = "Transpose perm negative",
     .build = b_transpose,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "permutation",
     .op = "neg"},
    {.name = "Transpose perm too short",
     .build = b_transpose,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "short"},
    {.name = "Transpose perm of 10",
     .build = b_transpose,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "long"},
    {.name = "Gather index in range",
     .build = b_gather,
     .expect = EXPECT_RUN_OK,
     .op = "input",
     .ifill = 3},
    {.name = "Gather index -4 in range",
     .build = b_gather,
     .expect = EXPECT_RUN_OK,
     .op = "input",
     .ifill = -4},
    {.name = "Gather index 7 at run time",
     .build = b_gather,
     .expect = EXPECT_RUN_FAILS,
     .code = AN_EMODEL,
     .needle = "range",
     .op = "input",
     .ifill = 7},
    {.name = "Gather index -5 at run time",
     .build = b_gather,
     .expect = EXPECT_RUN_FAILS,
     .code = AN_EMODEL,
     .needle = "range",
     .op = "input",
     .ifill = -5},
    {.name = "Gather constant index 9",
     .build = b_gather,
     .expect = EXPECT_FAILS,
     .code = AN_EMODEL,
     .needle = "range",
     .op = "const"},
    /* The indices are an int64 graph input, so shapes past them are known
     * only at run time: refused at load or at run, either is right. */
    {.name = "Gather axis 2 of rank 2",
     .build = b_gather,
     .expect = EXPECT_FAILS,
     .code = AN_EMODEL,
     .needle = "axis",
     .op = "axis"},
    {.name = "Concat axis 5",
     .build = b_concat,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "axis",
     .op = "axis5"},
    {.name = "Concat axis -3",
     .build = b_concat,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "axis",
     .op = "axis-3"},
    {.name = "Concat of ranks 2 and 1",
     .build = b_concat,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "rank"},
    {.name = "Concat of 17 inputs", .build = b_concat, .expect = EXPECT_SAFE, .op = "17"},
    {.name = "Gemm inner sizes differ",
     .build = b_gemm,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "inner",
     .op = "inner"},
    {.name = "Gemm transB inner sizes differ",
     .build = b_gemm,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "inner",
     .op = "transB"},
    {.name = "Gemm C of 7",
     .build = b_gemm,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "C"},
    {.name = "Gemm B of rank 3",
     .build = b_gemm,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "rank3"},
    {.name = "MatMul inner sizes differ",
     .build = b_matmul,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "inner"},
    {.name = "MatMul batch dims do not broadcast",
     .build = b_matmul,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "batch"},
    {.name = "MatMul of a scalar",
     .build = b_matmul,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "scalar"},
    {.name = "Unsqueeze to rank 9", .build = b_unsqueeze_rank9, .expect = EXPECT_REFUSED},
    {.name = "Unsqueeze axis repeated",
     .build = b_unsqueeze_repeat,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    {.name = "Softmax axis 9",
     .build = b_axis_attr,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "Softmax"},
    {.name = "LogSoftmax axis 9",
     .build = b_axis_attr,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "LogSoftmax"},
    {.name = "Flatten axis 9",
     .build = b_axis_attr,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "Flatten"},
    {.name = "Pad by 1e12",
     .build = b_pad,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "huge"},
    {.name = "Pad by -100",
     .build = b_pad,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "neg"},
    {.name = "Pad with 3 values for rank 2",
     .build = b_pad,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "count"},
    {.name = "Pad reflect wider than the input",
     .build = b_pad,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .op = "reflect"},
    {.name = "BatchNormalization mean of 2 for 3 channels",
     .build = b_batchnorm_c,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    /* Constant nodes */
    {.name = "Constant tensor with dim 2^40",
     .build = b_constant_huge_tensor,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL},
    {.name = "Constant with output \"\"", .build = b_constant_empty_output, .expect = EXPECT_SAFE},
    {.name = "Constant attribute without a name",
     .build = b_constant_unnamed_attr,
     .expect = EXPECT_REFUSED},
    {.name = "Constant value_floats empty",
     .build = b_constant_empty_floats,
     .expect = EXPECT_SAFE},
    /* a required input spelled "" */
    {.name = "Identity of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Identity"},
    {.name = "Relu of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Relu"},
    {.name = "Flatten of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Flatten"},
    {.name = "Shape of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Shape"},
    {.name = "Transpose of \"\"",
     .build = b_empty_input,
     .expect = EXPECT_FAILS,
     .op = "Transpose"},
    {.name = "Squeeze of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Squeeze"},
    {.name = "Softmax of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Softmax"},
    {.name = "ReduceMean of \"\"",
     .build = b_empty_input,
     .expect = EXPECT_FAILS,
     .op = "ReduceMean"},
    {.name = "GlobalAveragePool of \"\"",
     .build = b_empty_input,
     .expect = EXPECT_FAILS,
     .op = "GlobalAveragePool"},
    {.name = "Dropout of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Dropout"},
    {.name = "Pad of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Pad"},
    {.name = "Reshape of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Reshape"},
    {.name = "Reshape to shape \"\"",
     .build = b_empty_input,
     .expect = EXPECT_FAILS,
     .op = "Reshape1"},
    {.name = "Gather from \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Gather"},
    {.name = "Gather indices \"\"",
     .build = b_empty_input,
     .expect = EXPECT_FAILS,
     .op = "Gather1"},
    {.name = "Concat of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Concat"},
    {.name = "MatMul of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "MatMul"},
    {.name = "Gemm of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Gemm"},
    {.name = "Add of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Add"},
    {.name = "Conv of \"\"", .build = b_empty_input, .expect = EXPECT_FAILS, .op = "Conv"},
    {.name = "BatchNormalization of \"\"",
     .build = b_empty_input,
     .expect = EXPECT_FAILS,
     .op = "BatchNormalization"},
    /* int64 graph inputs into int64 arithmetic (valid models) */
    {.name = "Gather of a constant by int64 input",
     .build = b_int64_input,
     .expect = EXPECT_RUN_OK,
     .op = "Gather",
     .ifill = 1},
    {.name = "Gather from an int64 input",
     .build = b_int64_input,
     .expect = EXPECT_RUN_OK,
     .op = "Gather0",
     .ifill = 1},
    {.name = "Add of an int64 input",
     .build = b_int64_input,
     .expect = EXPECT_RUN_OK,
     .op = "Add",
     .ifill = 1},
    {.name = "Concat of an int64 input",
     .build = b_int64_input,
     .expect = EXPECT_RUN_OK,
     .op = "Concat",
     .ifill = 1},
    {.name = "Transpose of an int64 input",
     .build = b_int64_input,
     .expect = EXPECT_RUN_OK,
     .op = "Transpose",
     .ifill = 1},
    {.name = "Identity of an int64 input",
     .build = b_int64_input,
     .expect = EXPECT_RUN_OK,
     .op = "Identity",
     .ifill = 1},
    /* limits */
    {.name = "20 nodes over max_nodes 10",
     .build = b_chain20,
     .expect = EXPECT_REFUSED,
     .code = AN_EMODEL,
     .needle = "nodes",
     .max_nodes = 10},
    {.name = "20 nodes at max_nodes 20",
     .build = b_chain20,
     .expect = EXPECT_RUN_OK,
     .max_nodes = 20},
    {.name = "768 KiB of outputs over max_memory 512 KiB",
     .build = b_three_outputs,
     .expect = EXPECT_RUN_FAILS,
     .code = AN_ETOOBIG,
     .max_mem = 512 << 10},
    {.name = "768 KiB of outputs under max_memory 1 MiB",
     .build = b_three_outputs,
     .expect = EXPECT_RUN_OK,
     .max_mem = 1 << 20},
    /* oneDNN's direct kernel needs no im2col scratch, so this may now run;
     * what matters is that nothing uncounted is allocated (ASan + the limit). */
    {.name = "Conv im2col scratch of 26 MB over max_memory 8 MiB",
     .build = b_conv_scratch,
     .expect = EXPECT_SAFE,
     .max_mem = 8 << 20},
    {.name = "ConvTranspose with zero channels and a huge group",
     .build = b_convt_group,
     .expect = EXPECT_FAILS,
     .code = AN_EMODEL},
    {.name = "ConvTranspose scratch of 25 MB over max_memory 8 MiB",
     .build = b_convt_scratch,
     .expect = EXPECT_RUN_FAILS,
     .max_mem = 8 << 20},
    /* 300 passes over 4 MiB each cannot finish in 2 ms (the floor of one
     * pass over memory is already ~0.1 ms). */
    {.name = "300 nodes over max_seconds 0.002",
     .build = b_slow_chain,
     .expect = EXPECT_RUN_FAILS,
     .code = UV_ETIMEDOUT,
     .max_seconds = 0.002},
    {.name = "one slow MaxPool over max_seconds 0.1",
     .build = b_slow_node,
     .expect = EXPECT_RUN_FAILS,
     .code = UV_ETIMEDOUT,
     .max_seconds = 0.1},
};

#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

START_TEST(test_handbuilt) {
  const rcase_t *c = &cases[_i];
  mb_t b;
  an_onnx_limits_t lim;
  outcome_t o;
  size_t len;
  uint8_t *bytes;
  char what[256];

  mb_init(&b, c->opset ? c->opset : 13);
  c->build(&b, c);
  bytes = mb_pack(&b, &len);
  mb_free(&b);
  an_onnx_default_limits(&lim);
  lim.max_memory_bytes = (uint64_t)1 << 30;
  if (c->max_nodes)
    lim.max_nodes = c->max_nodes;
  if (c->max_elems)
    lim.max_tensor_elems = c->max_elems;
  if (c->max_mem)
    lim.max_memory_bytes = c->max_mem;
  if (c->max_seconds > 0)
    lim.max_seconds = c->max_seconds;
  snprintf(what, sizeof what, "case %d '%s'", _i, c->name);
  try_model(bytes, len, &lim, 0.5f, c->ifill, what, &o);
  free(bytes);

  int failed_rc = o.load_rc ? o.load_rc : o.ran ? o.run_rc : 0;
  switch (c->expect) {
  case EXPECT_SAFE:
    break;
  case EXPECT_REFUSED:
    ck_assert_msg(o.load_rc != 0, "%s: loaded, but should have been refused%s%s", what,
                  o.ran && o.run_rc ? "; the run said: " : "", o.ran && o.run_rc ? o.err : "");
    break;
  case EXPECT_FAILS:
    ck_assert_msg(failed_rc != 0, "%s: loaded and ran, but should have failed", what);
    break;
  case EXPECT_RUN_FAILS:
    ck_assert_msg(o.load_rc == 0, "%s: refused at load (%d: %s), but should load", what, o.load_rc,
                  o.err);
    ck_assert_msg(o.ran, "%s: not run", what);
    ck_assert_msg(o.run_rc != 0, "%s: ran in %.2f s, but the run should have failed", what,
                  o.run_seconds);
    break;
  case EXPECT_RUN_OK:
    ck_assert_msg(o.load_rc == 0, "%s: refused at load (%d): %s", what, o.load_rc, o.err);
    ck_assert_msg(o.ran && o.run_rc == 0, "%s: run failed (%d): %s", what, o.run_rc, o.err);
    break;
  }
  if (c->code && c->expect != EXPECT_SAFE && c->expect != EXPECT_RUN_OK)
    ck_assert_msg(failed_rc == c->code, "%s: error %d (%s), expected %d: %s", what, failed_rc,
                  failed_rc ? an_strerror(failed_rc) : "none", c->code, o.err);
  if (c->needle && failed_rc)
    ck_assert_msg(strstr(o.err, c->needle) != NULL, "%s: message '%s' does not mention '%s'", what,
                  o.err, c->needle);
  if (c->max_seconds > 0 && o.ran)
    ck_assert_msg(o.run_seconds <= c->max_seconds + 1.0,
                  "%s: the run took %.2f s under a %.2f s limit", what, o.run_seconds,
                  c->max_seconds);
}
END_TEST

static Suite *robustness_suite(void) {
  Suite *s = suite_create("onnx-robustness");
  TCase *tc = tcase_create("handbuilt");
  tcase_add_loop_test(tc, test_handbuilt, 0, N_CASES);
  tcase_set_timeout(tc, 20); /* a case that hangs fails, it does not stall the suite */
  suite_add_tcase(s, tc);
  tc = tcase_create("corpus");
  tcase_add_test(tc, test_oversized);
  tcase_add_test(tc, test_truncations);
  tcase_add_test(tc, test_mutations_small);
  tcase_add_test(tc, test_mutations_large);
  tcase_set_timeout(tc, 600); /* JIT-compiled kernels per mutated model: slow on a loaded machine */
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(robustness_suite)
