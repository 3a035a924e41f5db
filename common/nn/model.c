#include "common/nn/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

static const an_op_t *const an_ops[AN_OP_COUNT] = {
    [AN_OP_CONV] = &an_op_conv,           [AN_OP_CONVT] = &an_op_convt,
    [AN_OP_LINEAR] = &an_op_linear,       [AN_OP_RELU] = &an_op_relu,
    [AN_OP_LEAKY_RELU] = &an_op_leaky_relu, [AN_OP_SIGMOID] = &an_op_sigmoid,
    [AN_OP_TANH] = &an_op_tanh,           [AN_OP_MAXPOOL] = &an_op_maxpool,
    [AN_OP_AVGPOOL] = &an_op_avgpool,     [AN_OP_GAP] = &an_op_gap,
    [AN_OP_BATCHNORM] = &an_op_batchnorm, [AN_OP_DROPOUT] = &an_op_dropout,
    [AN_OP_FLATTEN] = &an_op_flatten,     [AN_OP_RESHAPE] = &an_op_reshape,
    [AN_OP_ADD] = &an_op_add,
};

const char *an_op_name(an_op_kind_t kind) {
  return kind >= 0 && kind < AN_OP_COUNT ? an_ops[kind]->name : "?";
}

float *an_nn_alloc(size_t n) {
  size_t bytes = (n ? n : 1) * sizeof(float);
  if (bytes / sizeof(float) != (n ? n : 1))
    return NULL;
  return aligned_alloc(64, (bytes + 63) / 64 * 64);
}

int an_model_new(int c, int h, int w, an_model_t **out) {
  an_model_t *m;
  *out = NULL;
  if (c <= 0 || h <= 0 || w <= 0 || c > 65536 || h > 65536 || w > 65536)
    return AN_EMODEL;
  m = calloc(1, sizeof *m);
  if (!m)
    return UV_ENOMEM;
  m->in[0] = c;
  m->in[1] = h;
  m->in[2] = w;
  an_rng_seed(&m->rng, 1);
  *out = m;
  return 0;
}

static void an_model_unplan(an_model_t *m) {
  for (int i = 0; i < m->n_nodes; i++) {
    an_node_t *n = &m->nodes[i];
    if (n->op->unplan)
      n->op->unplan(n);
    if (!n->op->alias)
      free(n->y);
    free(n->dy);
    free(n->xconv);
    free(n->dxconv);
    an_reorder_destroy(&n->to_node);
    an_reorder_destroy(&n->to_input);
    n->y = n->dy = n->xconv = n->dxconv = NULL;
    n->impl = NULL;
  }
  free(m->scratch);
  free(m->out_y);
  free(m->out_dy);
  an_reorder_destroy(&m->out_to_nchw);
  an_reorder_destroy(&m->out_to_node);
  m->scratch = m->out_y = m->out_dy = NULL;
  m->batch = 0;
}

void an_model_free(an_model_t *m) {
  if (!m)
    return;
  an_model_unplan(m);
  if (m->eng_ready)
    an_engine_destroy(&m->eng);
  free(m->nodes);
  free(m->params);
  free(m->grads);
  free(m->state);
  free(m);
}

/* NCHW and NHWC are the same bytes when C == 1 or H == W == 1. */
static int an_layout_same(const int s[3], an_layout_t a, an_layout_t b) {
  return a == b || s[0] == 1 || (s[1] == 1 && s[2] == 1);
}

static an_layout_t an_node_layout(const an_model_t *m, int idx) {
  return idx < 0 ? AN_NCHW : m->nodes[idx].layout;
}

static void an_dims4(int64_t d[4], int batch, const int s[3]) {
  d[0] = batch;
  d[1] = s[0];
  d[2] = s[1];
  d[3] = s[2];
}

/* Buffers and reorders for a node whose input comes in another layout. */
static int an_plan_convert(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  dnnl_memory_desc_t from, to;
  int64_t d[4];
  size_t count = (size_t)batch * an_numel3(n->in);
  an_dims4(d, batch, n->in);
  an_engine_md4(&from, d, an_node_layout(m, n->input));
  an_engine_md4(&to, d, n->layout);
  if (!(n->xconv = an_nn_alloc(count)) || (with_grad && !(n->dxconv = an_nn_alloc(count))))
    return UV_ENOMEM;
  if (an_reorder_init(&m->eng, &n->to_node, &from, &to) != 0 ||
      (with_grad && an_reorder_init(&m->eng, &n->to_input, &to, &from) != 0))
    return AN_EMODEL;
  return 0;
}

/* The caller sees NCHW: convert the last layer's output if it is NHWC. */
static int an_plan_output(an_model_t *m, int batch, int with_grad) {
  an_node_t *last = &m->nodes[m->n_nodes - 1];
  dnnl_memory_desc_t node, nchw;
  int64_t d[4];
  size_t count = (size_t)batch * an_numel3(last->out);
  m->out_convert = !an_layout_same(last->out, last->layout, AN_NCHW);
  if (!m->out_convert)
    return 0;
  an_dims4(d, batch, last->out);
  an_engine_md4(&node, d, last->layout);
  an_engine_md4(&nchw, d, AN_NCHW);
  if (!(m->out_y = an_nn_alloc(count)) || (with_grad && !(m->out_dy = an_nn_alloc(count))))
    return UV_ENOMEM;
  if (an_reorder_init(&m->eng, &m->out_to_nchw, &node, &nchw) != 0 ||
      (with_grad && an_reorder_init(&m->eng, &m->out_to_node, &nchw, &node) != 0))
    return AN_EMODEL;
  return 0;
}

static int an_model_find(const an_model_t *m, const char *label) {
  for (int i = m->n_nodes - 1; i >= 0; i--)
    if (strcmp(m->nodes[i].label, label) == 0)
      return i;
  return -2;
}

static void an_copy_label(char dst[32], const char *src) {
  snprintf(dst, 32, "%s", src ? src : "");
}

int an_model_add(an_model_t *m, const an_layer_desc_t *d, char *err, size_t errlen) {
  an_node_t *n;
  int rc;

  if (m->finalized) {
    snprintf(err, errlen, "the model is finalized; no more layers");
    return AN_EMODEL;
  }
  if (d->kind < 0 || d->kind >= AN_OP_COUNT) {
    snprintf(err, errlen, "unknown layer kind %d", (int)d->kind);
    return AN_EMODEL;
  }
  if (m->n_nodes >= 4096) {
    snprintf(err, errlen, "too many layers (at most 4096)");
    return AN_EMODEL;
  }
  if (m->n_nodes == m->cap_nodes) {
    int cap = m->cap_nodes ? m->cap_nodes * 2 : 16;
    an_node_t *grown = realloc(m->nodes, (size_t)cap * sizeof *grown);
    if (!grown) {
      snprintf(err, errlen, "out of memory");
      return UV_ENOMEM;
    }
    m->nodes = grown;
    m->cap_nodes = cap;
    /* The descs point at their node's own label buffers, which just moved. */
    for (int i = 0; i < m->n_nodes; i++) {
      m->nodes[i].d.label = m->nodes[i].label;
      m->nodes[i].d.from = m->nodes[i].from;
      m->nodes[i].d.with = m->nodes[i].with;
    }
  }
  n = &m->nodes[m->n_nodes];
  memset(n, 0, sizeof *n);
  n->d = *d;
  n->op = an_ops[d->kind];
  an_copy_label(n->label, d->label);
  an_copy_label(n->from, d->from);
  an_copy_label(n->with, d->with);
  n->d.label = n->label;
  n->d.from = n->from;
  n->d.with = n->with;
  if (n->label[0] && an_model_find(m, n->label) >= 0) {
    snprintf(err, errlen, "label '%s' is used twice", n->label);
    return AN_EMODEL;
  }
  n->input = m->n_nodes - 1;
  if (n->from[0] && (n->input = an_model_find(m, n->from)) == -2) {
    snprintf(err, errlen, "%s: no layer is labelled '%s'", n->op->name, n->from);
    return AN_EMODEL;
  }
  n->input2 = -2;
  if (d->kind == AN_OP_ADD) {
    if (!n->with[0] || (n->input2 = an_model_find(m, n->with)) == -2) {
      snprintf(err, errlen, "add: needs the label of an earlier layer, not '%s'", n->with);
      return AN_EMODEL;
    }
  }
  memcpy(n->in, n->input < 0 ? m->in : m->nodes[n->input].out, sizeof n->in);
  if ((rc = n->op->infer(n, err, errlen)) != 0)
    return rc;
  an_layout_t from = an_node_layout(m, n->input);
  n->layout = n->op->layout == AN_LAYOUT_ANY ? from : n->op->layout;
  n->convert = !an_layout_same(n->in, from, n->layout);
  if (n->input2 >= -1 && !an_layout_same(n->in, an_node_layout(m, n->input2), n->layout)) {
    snprintf(err, errlen, "add: '%s' and the previous layer are in different memory layouts; "
                          "add a layer of the same kind to both branches",
             n->with);
    return AN_EMODEL;
  }
  if (n->out[0] <= 0 || n->out[1] <= 0 || n->out[2] <= 0) {
    snprintf(err, errlen, "%s: output shape %dx%dx%d is empty", n->op->name, n->out[0],
             n->out[1], n->out[2]);
    return AN_EMODEL;
  }
  if (an_numel3(n->out) > ((size_t)1 << 31)) {
    snprintf(err, errlen, "%s: output of %zu values per sample is too large", n->op->name,
             an_numel3(n->out));
    return AN_EMODEL;
  }
  if (n->input2 >= -1) {
    const int *o = n->input2 < 0 ? m->in : m->nodes[n->input2].out;
    if (memcmp(o, n->in, sizeof n->in) != 0) {
      snprintf(err, errlen, "add: shapes %dx%dx%d and %dx%dx%d differ", n->in[0], n->in[1],
               n->in[2], o[0], o[1], o[2]);
      return AN_EMODEL;
    }
  }
  n->w_off = m->n_params;
  m->n_params += n->w_count;
  n->b_off = m->n_params;
  m->n_params += n->b_count;
  n->st_off = m->n_state;
  m->n_state += n->st_count;
  if (n->input >= 0)
    m->nodes[n->input].consumers++;
  if (n->input2 >= 0)
    m->nodes[n->input2].consumers++;
  m->n_nodes++;
  return 0;
}

static void an_init_node(an_model_t *m, an_node_t *n, an_init_kind_t kind, an_rng_t *rng) {
  float *w = m->params + n->w_off, *b = m->params + n->b_off;
  if (n->d.kind == AN_OP_BATCHNORM) {
    for (size_t i = 0; i < n->w_count; i++)
      w[i] = 1.0f;
    for (size_t i = 0; i < n->b_count; i++)
      b[i] = 0.0f;
    for (size_t i = 0; i < n->st_count; i++) /* running mean 0, running var 1 */
      m->state[n->st_off + i] = i < n->st_count / 2 ? 0.0f : 1.0f;
    return;
  }
  if (!n->w_count)
    return;
  double bound = 1.0 / sqrt((double)n->fan_in);
  if (kind == AN_INIT_KAIMING) {
    double sd = sqrt(2.0 / (double)n->fan_in);
    for (size_t i = 0; i < n->w_count; i++)
      w[i] = (float)(an_rng_normal(rng) * sd);
    for (size_t i = 0; i < n->b_count; i++)
      b[i] = 0.0f;
  } else {
    for (size_t i = 0; i < n->w_count; i++)
      w[i] = (float)((2.0 * an_rng_uniform(rng) - 1.0) * bound);
    for (size_t i = 0; i < n->b_count; i++)
      b[i] = (float)((2.0 * an_rng_uniform(rng) - 1.0) * bound);
  }
}

int an_model_finalize(an_model_t *m, an_init_kind_t init, uint64_t seed, char *err,
                      size_t errlen) {
  an_rng_t rng;
  if (m->finalized)
    return 0;
  if (m->n_nodes == 0) {
    snprintf(err, errlen, "the model has no layers");
    return AN_EMODEL;
  }
  m->params = an_nn_alloc(m->n_params);
  m->grads = an_nn_alloc(m->n_params);
  m->state = an_nn_alloc(m->n_state);
  if (!m->params || !m->grads || !m->state) {
    snprintf(err, errlen, "out of memory for %zu parameters", m->n_params);
    return UV_ENOMEM;
  }
  memset(m->grads, 0, m->n_params * sizeof(float));
  an_rng_seed(&rng, seed);
  for (int i = 0; i < m->n_nodes; i++)
    an_init_node(m, &m->nodes[i], init, &rng);
  an_rng_seed(&m->rng, seed ^ 0x5eedULL);
  m->finalized = 1;
  return 0;
}

void an_model_set_seed(an_model_t *m, uint64_t seed) { an_rng_seed(&m->rng, seed); }

void an_model_set_precision(an_model_t *m, an_precision_t p) {
  if (m->precision != p)
    an_model_unplan(m); /* the kernels differ: plan again */
  m->precision = p;
}

int an_model_plan(an_model_t *m, int batch, int with_grad, char *err, size_t errlen) {
  size_t scratch = 0;
  int rc;
  if (!m->finalized) {
    snprintf(err, errlen, "finalize the model before planning");
    return AN_EMODEL;
  }
  if (batch <= 0 || batch > 1 << 20) {
    snprintf(err, errlen, "batch size %d is out of range", batch);
    return AN_EMODEL;
  }
  if (m->batch == batch && m->with_grad >= with_grad)
    return 0;
  an_model_unplan(m);
  if (!m->eng_ready) {
    if ((rc = an_engine_init(&m->eng, err, errlen)) != 0)
      return rc;
    m->eng_ready = 1;
  }
  m->batch = batch;
  m->with_grad = with_grad;
  for (int i = 0; i < m->n_nodes; i++) {
    an_node_t *n = &m->nodes[i];
    size_t outn = (size_t)batch * an_numel3(n->out), inn = (size_t)batch * an_numel3(n->in);
    if (!n->op->alias && !(n->y = an_nn_alloc(outn)))
      goto oom;
    if (with_grad && !(n->dy = an_nn_alloc(outn)))
      goto oom;
    if (inn > scratch)
      scratch = inn;
  }
  if (with_grad && !(m->scratch = an_nn_alloc(scratch)))
    goto oom;
  for (int i = 0; i < m->n_nodes; i++) {
    an_node_t *n = &m->nodes[i];
    if ((n->convert && (rc = an_plan_convert(m, n, batch, with_grad)) != 0) ||
        (n->op->plan && (rc = n->op->plan(m, n, batch, with_grad)) != 0)) {
      snprintf(err, errlen, "layer %d (%s): oneDNN has no kernel for this shape at batch %d", i,
               n->op->name, batch);
      an_model_unplan(m);
      return rc;
    }
  }
  if ((rc = an_plan_output(m, batch, with_grad)) != 0) {
    snprintf(err, errlen, "cannot prepare the output conversion at batch %d", batch);
    an_model_unplan(m);
    return rc;
  }
  if ((rc = an_engine_commit_scratch(&m->eng)) != 0) {
    snprintf(err, errlen, "out of memory for the kernels' scratchpad");
    an_model_unplan(m);
    return rc;
  }
  return 0;
oom:
  snprintf(err, errlen, "out of memory for activations at batch %d", batch);
  an_model_unplan(m);
  return UV_ENOMEM;
}

static const float *an_node_input(const an_model_t *m, int idx) {
  return idx < 0 ? m->x : m->nodes[idx].y;
}

int an_model_forward(an_model_t *m, const float *x, int train, const float **y) {
  int rc;
  if (!m->batch || (train && !m->with_grad))
    return AN_EMODEL;
  m->x = x;
  for (int i = 0; i < m->n_nodes; i++) {
    an_node_t *n = &m->nodes[i];
    n->x = an_node_input(m, n->input);
    n->x2 = n->input2 >= -1 ? an_node_input(m, n->input2) : NULL;
    if (n->convert) {
      if ((rc = an_reorder_run(&m->eng, &n->to_node, n->x, n->xconv)) != 0)
        return rc;
      n->x = n->xconv;
    }
    if (n->op->alias)
      n->y = (float *)n->x;
    if ((rc = n->op->forward(m, n, train)) != 0)
      return rc;
  }
  *y = m->nodes[m->n_nodes - 1].y;
  if (m->out_convert) {
    if ((rc = an_reorder_run(&m->eng, &m->out_to_nchw, *y, m->out_y)) != 0)
      return rc;
    *y = m->out_y;
  }
  return 0;
}

float *an_model_output_grad(an_model_t *m) {
  if (!m->with_grad)
    return NULL;
  return m->out_convert ? m->out_dy : m->nodes[m->n_nodes - 1].dy;
}

AN_HOT_LOOP static void an_grad_add(float *dst, const float *src, size_t n) {
#pragma omp parallel for simd if (parallel : n > 65536)
  for (size_t i = 0; i < n; i++)
    dst[i] += src[i];
}

/* The gradient buffer of node `idx` (-1: the caller's dx), and whether it
 * already holds a contribution that a new one must be added to. */
static float *an_grad_slot(an_model_t *m, int idx, float *dx, int **ready) {
  if (idx < 0) {
    *ready = &m->input_grad_ready;
    return dx;
  }
  *ready = &m->nodes[idx].grad_ready;
  return m->nodes[idx].dy;
}

/* Adds `g` into the gradient of node `idx` (copy on first contribution). */
static void an_grad_route(an_model_t *m, int idx, float *dx, const float *g, size_t count) {
  int *ready;
  float *slot = an_grad_slot(m, idx, dx, &ready);
  if (!slot)
    return;
  if (*ready)
    an_grad_add(slot, g, count);
  else
    memcpy(slot, g, count * sizeof(float));
  *ready = 1;
}

int an_model_backward(an_model_t *m, float *dx) {
  int rc;
  if (!m->with_grad)
    return AN_EMODEL;
  for (int i = 0; i < m->n_nodes; i++)
    m->nodes[i].grad_ready = 0;
  m->nodes[m->n_nodes - 1].grad_ready = 1; /* the loss wrote it */
  m->input_grad_ready = 0;
  if (m->out_convert &&
      (rc = an_reorder_run(&m->eng, &m->out_to_node, m->out_dy, m->nodes[m->n_nodes - 1].dy)) != 0)
    return rc;
  for (int i = m->n_nodes - 1; i >= 0; i--) {
    an_node_t *n = &m->nodes[i];
    size_t count = (size_t)m->batch * an_numel3(n->in);
    int *ready;
    float *slot;
    if (!n->grad_ready) {
      /* Nothing downstream used this output: its parameters get zero. */
      memset(m->grads + n->w_off, 0, (n->w_count + n->b_count) * sizeof(float));
      continue;
    }
    if (n->d.kind == AN_OP_ADD) { /* the gradient passes to both operands */
      an_grad_route(m, n->input, dx, n->dy, count);
      an_grad_route(m, n->input2, dx, n->dy, count);
      continue;
    }
    slot = an_grad_slot(m, n->input, dx, &ready);
    if (n->convert) {
      /* The op's gradient is in its own layout: convert it back. */
      if ((rc = n->op->backward(m, n, slot ? n->dxconv : NULL)) != 0)
        return rc;
      if (!slot)
        continue;
      if ((rc = an_reorder_run(&m->eng, &n->to_input, n->dxconv, *ready ? m->scratch : slot)) != 0)
        return rc;
      if (*ready)
        an_grad_add(slot, m->scratch, count);
      *ready = 1;
    } else if (slot && *ready) {
      /* A second consumer of the same tensor: compute aside, then add. */
      if ((rc = n->op->backward(m, n, m->scratch)) != 0)
        return rc;
      an_grad_add(slot, m->scratch, count);
    } else {
      if ((rc = n->op->backward(m, n, slot)) != 0)
        return rc;
      if (slot)
        *ready = 1;
    }
  }
  return 0;
}

float *an_model_params(an_model_t *m) { return m->params; }
float *an_model_grads(an_model_t *m) { return m->grads; }
size_t an_model_param_count(const an_model_t *m) { return m->n_params; }
float *an_model_state(an_model_t *m) { return m->state; }
size_t an_model_state_count(const an_model_t *m) { return m->n_state; }
int an_model_layer_count(const an_model_t *m) { return m->n_nodes; }

void an_model_input_shape(const an_model_t *m, int chw[3]) { memcpy(chw, m->in, 3 * sizeof(int)); }

void an_model_output_shape(const an_model_t *m, int chw[3]) {
  memcpy(chw, m->n_nodes ? m->nodes[m->n_nodes - 1].out : m->in, 3 * sizeof(int));
}

int an_model_layer_info(const an_model_t *m, int i, an_layer_info_t *info) {
  const an_node_t *n;
  if (i < 0 || i >= m->n_nodes)
    return AN_EMODEL;
  n = &m->nodes[i];
  info->desc = n->d;
  memcpy(info->in, n->in, sizeof info->in);
  memcpy(info->outshape, n->out, sizeof info->outshape);
  info->input = n->input;
  info->input2 = n->input2 >= -1 ? n->input2 : -2;
  info->w_off = n->w_off;
  info->w_count = n->w_count;
  info->b_off = n->b_off;
  info->b_count = n->b_count;
  info->state_off = n->st_off;
  info->state_count = n->st_count;
  return 0;
}

static void an_describe_args(const an_node_t *n, char *buf, size_t len) {
  const an_layer_desc_t *d = &n->d;
  switch (d->kind) {
  case AN_OP_CONV:
  case AN_OP_CONVT:
    snprintf(buf, len, "%d->%d k=%d s=%d p=%d%s", n->in[0], d->out, d->k, d->s, d->p,
             d->no_bias ? " no-bias" : "");
    break;
  case AN_OP_LINEAR:
    snprintf(buf, len, "%zu->%d%s", an_numel3(n->in), d->out, d->no_bias ? " no-bias" : "");
    break;
  case AN_OP_MAXPOOL:
  case AN_OP_AVGPOOL:
    snprintf(buf, len, "k=%d s=%d p=%d", d->k, d->s, d->p);
    break;
  case AN_OP_LEAKY_RELU:
    snprintf(buf, len, "alpha=%g", d->alpha);
    break;
  case AN_OP_DROPOUT:
    snprintf(buf, len, "p=%g", d->alpha);
    break;
  case AN_OP_BATCHNORM:
    snprintf(buf, len, "eps=%g momentum=%g", d->alpha, d->momentum);
    break;
  case AN_OP_ADD:
    snprintf(buf, len, "+ %s", n->with);
    break;
  default:
    buf[0] = '\0';
  }
}

void an_model_describe(const an_model_t *m, FILE *out) {
  fprintf(out, "%-4s %-10s %-10s %-26s %-16s %14s\n", "#", "layer", "label", "arguments",
          "output (CxHxW)", "params");
  fprintf(out, "%-4s %-10s %-10s %-26s %3dx%dx%-10d %14s\n", "-", "input", "", "", m->in[0],
          m->in[1], m->in[2], "0");
  for (int i = 0; i < m->n_nodes; i++) {
    const an_node_t *n = &m->nodes[i];
    char args[64], shape[32];
    an_describe_args(n, args, sizeof args);
    if (n->from[0]) {
      size_t l = strlen(args);
      snprintf(args + l, sizeof args - l, "%sfrom %s", l ? " " : "", n->from);
    }
    snprintf(shape, sizeof shape, "%dx%dx%d", n->out[0], n->out[1], n->out[2]);
    fprintf(out, "%-4d %-10s %-10s %-26s %-16s %14zu\n", i + 1, n->op->name, n->label, args,
            shape, n->w_count + n->b_count);
  }
  fprintf(out, "params: %zu\n", m->n_params);
}
