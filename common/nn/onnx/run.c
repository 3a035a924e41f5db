/* Running an ONNX graph: one pass over the sorted nodes, values freed after
 * their last reader, memory and time bounded. The same pass, in probe mode,
 * infers shapes at load time without touching float data. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/onnx/graph.h"

static void *an_pool_take(an_onnx_t *m, size_t bytes) {
  for (int i = 0; i < m->n_pool; i++)
    if (m->pool_size[i] == bytes) {
      void *p = m->pool[i];
      m->pool[i] = m->pool[m->n_pool - 1];
      m->pool_size[i] = m->pool_size[m->n_pool - 1];
      m->n_pool--;
      m->pool_bytes -= bytes;
      return p;
    }
  return NULL;
}

static void an_pool_put(an_onnx_t *m, void *p, size_t bytes) {
  if (m->n_pool == (int)(sizeof m->pool / sizeof m->pool[0])) {
    free(p);
    return;
  }
  m->pool[m->n_pool] = p;
  m->pool_size[m->n_pool++] = bytes;
  m->pool_bytes += bytes;
}

void an_pool_flush(an_onnx_t *m) {
  for (int i = 0; i < m->n_pool; i++)
    free(m->pool[i]);
  m->n_pool = 0;
  m->pool_bytes = 0;
}

int an_oexec_fail(an_oexec_t *x, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(x->err, x->errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* Shape checks and the allocation shared by row-major and blocked values;
 * `bytes` = 0 asks for the row-major size. */
static int an_oexec_alloc_as(an_oexec_t *x, an_oval_t *v, int dtype, int ndim,
                             const int64_t *dims, size_t bytes, const an_olayout_t *layout) {
  size_t n = 1;
  if (ndim < 0 || ndim > AN_ONNX_MAX_DIMS)
    return an_oexec_fail(x, AN_EUNSUPPORTED, "a result with %d dimensions", ndim);
  for (int i = 0; i < ndim; i++) {
    if (dims[i] < 0)
      return an_oexec_fail(x, AN_EMODEL, "a result with a negative dimension");
    /* Each dimension on its own too: an empty tensor must not carry a huge
     * one into later arithmetic and loops. */
    if ((uint64_t)dims[i] > x->m->lim.max_tensor_elems)
      return an_oexec_fail(x, AN_EMODEL, "a result dimension over the %zu-element limit",
                           x->m->lim.max_tensor_elems);
    if (dims[i] && n > x->m->lim.max_tensor_elems / (size_t)dims[i])
      return an_oexec_fail(x, AN_EMODEL, "a result over the %zu-element limit",
                           x->m->lim.max_tensor_elems);
    n *= (size_t)dims[i];
  }
  memset(v, 0, sizeof *v); /* each value is written once per pass */
  v->dtype = dtype;
  v->ndim = ndim;
  memcpy(v->dims, dims, (size_t)ndim * sizeof *dims);
  v->present = 1;
  /* Probing computes shapes only, except for int64 tensors: shapes are made
   * of them (Shape -> Gather -> Concat -> Reshape). */
  if (x->probe && dtype != AN_ONNX_INT64)
    return 0;
  if (!bytes)
    bytes = n * an_onnx_dtype_size(dtype);
  uint64_t used = x->live_bytes + x->m->cache_bytes;
  if (used > x->m->lim.max_memory_bytes || bytes > x->m->lim.max_memory_bytes - used)
    return an_oexec_fail(x, AN_ETOOBIG, "the run would need more than %llu bytes",
                         (unsigned long long)x->m->lim.max_memory_bytes);
  v->data = an_pool_take(x->m, bytes);
  if (!v->data) {
    /* Idle pooled buffers give way before the process grows past the limit. */
    if (x->m->pool_bytes > x->m->lim.max_memory_bytes - used - bytes)
      an_pool_flush(x->m);
    /* 64-byte alignment: oneDNN's kernels load whole cache lines. */
    v->data = aligned_alloc(64, (bytes + 63) / 64 * 64 + (bytes == 0) * 64);
  }
  if (!v->data)
    return an_oexec_fail(x, UV_ENOMEM, "out of memory");
  v->bytes = bytes;
  v->layout = layout;
  x->live_bytes += bytes;
  return 0;
}

int an_oexec_alloc(an_oexec_t *x, an_oval_t *v, int dtype, int ndim, const int64_t *dims) {
  return an_oexec_alloc_as(x, v, dtype, ndim, dims, 0, NULL);
}

int an_oexec_alloc_blocked(an_oexec_t *x, an_oval_t *v, int ndim, const int64_t *dims,
                           const an_olayout_t *l) {
  return an_oexec_alloc_as(x, v, AN_ONNX_FLOAT, ndim, dims, l->bytes, l);
}

int an_oexec_steal(an_oexec_t *x, const an_onode_t *n, int k, an_oval_t *in, an_oval_t *out) {
  if (x->probe || !x->left || n->in[k] < 0 || x->left[n->in[k]] != 1 || in->borrowed ||
      !in->data)
    return 0;
  *out = *in;
  in->data = NULL; /* released after the node without touching the buffer */
  in->bytes = 0;
  return 1;
}

void *an_oexec_scratch(an_oexec_t *x, size_t bytes) {
  void *p;
  uint64_t used = x->live_bytes + x->m->cache_bytes;
  if (used > x->m->lim.max_memory_bytes || bytes > x->m->lim.max_memory_bytes - used) {
    an_oexec_fail(x, AN_ETOOBIG, "an operator would need more than the %llu-byte limit",
                  (unsigned long long)x->m->lim.max_memory_bytes);
    return NULL;
  }
  if (!(p = an_pool_take(x->m, bytes)) &&
      !(p = aligned_alloc(64, (bytes + 63) / 64 * 64 + (bytes == 0) * 64))) {
    an_oexec_fail(x, UV_ENOMEM, "out of memory");
    return NULL;
  }
  x->live_bytes += bytes;
  return p;
}

void an_oexec_scratch_free(an_oexec_t *x, void *p, size_t bytes) {
  if (!p)
    return;
  x->live_bytes -= bytes;
  an_pool_put(x->m, p, bytes);
}

static void an_oval_release(an_oexec_t *x, an_oval_t *v) {
  if (!v->borrowed && v->data) {
    x->live_bytes -= v->bytes;
    an_pool_put(x->m, v->data, v->bytes);
  }
  memset(v, 0, sizeof *v);
}

static double an_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int an_oexec_deadline_passed(const an_oexec_t *x) {
  return x->deadline && an_now() > x->deadline;
}

int an_oexec_check_time(an_oexec_t *x) {
  if (x->deadline && an_now() > x->deadline)
    return an_oexec_fail(x, UV_ETIMEDOUT, "the run took longer than %.0f s",
                         x->m->lim.max_seconds);
  return 0;
}

/* The shared pass. Inputs must already be in x->vals. */
static int an_onnx_pass(an_oexec_t *x) {
  an_onnx_t *m = x->m;
  int *left = malloc((m->n_values + 1) * sizeof *left);
  int rc = 0;
  x->deadline = m->lim.max_seconds > 0 ? an_now() + m->lim.max_seconds : 0;
  if (!left)
    return an_oexec_fail(x, UV_ENOMEM, "out of memory");
  memcpy(left, m->consumers, m->n_values * sizeof *left);
  x->left = left;
  for (size_t v = 0; v < m->n_values; v++)
    if (m->is_const[v]) {
      x->vals[v] = m->consts[v];
      x->vals[v].borrowed = 1;
    }
  for (size_t i = 0; i < m->n_nodes && !rc; i++) {
    const an_onode_t *n = &m->nodes[i];
    an_oval_t *in[64] = {0}, *out[8] = {0}, scratch_out[8];
    if (n->n_in > 64 || n->n_out > 8) {
      rc = an_oexec_fail(x, AN_EUNSUPPORTED, "node %zu has too many inputs or outputs", i);
      break;
    }
    if (strcmp(n->op->name, "Constant") == 0 || n->n_out == 0)
      continue; /* evaluated at load, or fused into the node before it */
    if ((rc = an_oexec_check_time(x)) != 0)
      break;
    for (int k = 0; k < n->n_in; k++) {
      in[k] = n->in[k] >= 0 ? &x->vals[n->in[k]] : NULL;
      if (in[k] && !in[k]->present) {
        rc = an_oexec_fail(x, AN_EMODEL, "node %zu reads a value that was not computed", i);
        break;
      }
      /* Probing: an int64 value with unknown contents (it comes from an int64
       * graph input) means shapes past this point are known only at run time. */
      if (in[k] && x->probe && in[k]->dtype == AN_ONNX_INT64 && !in[k]->data) {
        rc = an_oexec_fail(x, AN_EUNKNOWN_SHAPE, "shape depends on input values");
        break;
      }
    }
    /* Operators that only know row-major get row-major. */
    for (int k = 0; !rc && !n->op->blocked_ok && k < n->n_in; k++)
      if (in[k] && in[k]->layout)
        rc = an_oval_make_plain(x, in[k]);
    if (rc)
      break;
    for (int o = 0; o < n->n_out; o++) {
      memset(&scratch_out[o], 0, sizeof scratch_out[o]);
      out[o] = n->out[o] >= 0 ? &x->vals[n->out[o]] : &scratch_out[o];
    }
    rc = n->op->run(x, n, in, out);
    for (int o = 0; o < n->n_out; o++)
      if (n->out[o] < 0)
        an_oval_release(x, &scratch_out[o]);
    if (rc) {
      char why[512];
      snprintf(why, sizeof why, "%s", x->err);
      an_oexec_fail(x, rc, "node %zu (%s '%s'): %s", i, n->op->name,
                    n->proto->name ? n->proto->name : "", why);
      break;
    }
    /* Free what nobody reads any more (graph outputs are kept: they have an
     * extra reader, the caller, counted below). */
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] >= 0 && --left[n->in[k]] == 0)
        an_oval_release(x, &x->vals[n->in[k]]);
  }
  x->left = NULL;
  free(left);
  return rc;
}

static int an_oexec_begin(an_onnx_t *m, an_oexec_t *x, int probe, char *err, size_t errlen) {
  memset(x, 0, sizeof *x);
  x->m = m;
  x->probe = probe;
  x->err = err;
  x->errlen = errlen;
  x->vals = calloc(m->n_values + 1, sizeof *x->vals);
  /* Graph outputs get an extra reader so the pass keeps them. */
  for (size_t i = 0; i < m->n_outputs; i++)
    m->consumers[m->outputs[i]]++;
  return x->vals ? 0 : an_oexec_fail(x, UV_ENOMEM, "out of memory");
}

static void an_oexec_end(an_oexec_t *x) {
  for (size_t i = 0; i < x->m->n_outputs; i++)
    x->m->consumers[x->m->outputs[i]]--;
  if (x->vals)
    for (size_t v = 0; v < x->m->n_values; v++)
      an_oval_release(x, &x->vals[v]);
  free(x->vals);
}

int an_onnx_probe(an_onnx_t *m, int64_t batch, an_oval_t *outs, char *err, size_t errlen) {
  an_oexec_t x;
  int rc = an_oexec_begin(m, &x, 1, err, errlen);
  for (size_t i = 0; !rc && i < m->n_inputs; i++) {
    an_oval_t *v = &x.vals[m->inputs[i]];
    int64_t dims[AN_ONNX_MAX_DIMS];
    for (int d = 0; d < m->in_info[i].ndim; d++)
      dims[d] = m->in_info[i].dims[d] < 0 ? batch : m->in_info[i].dims[d];
    rc = an_oexec_alloc(&x, v, m->in_info[i].dtype, m->in_info[i].ndim, dims);
    /* An int64 input's values are unknown until a run: shapes computed
     * from them cannot be inferred now (an_ints_of reports it). */
    if (!rc && v->data) {
      x.live_bytes -= v->bytes;
      free(v->data);
      v->data = NULL;
    }
  }
  if (!rc)
    rc = an_onnx_pass(&x);
  for (size_t i = 0; !rc && i < m->n_outputs; i++) {
    outs[i] = x.vals[m->outputs[i]];
    outs[i].data = NULL;
  }
  an_oexec_end(&x);
  return rc;
}

void an_onnx_tensor_free(an_onnx_tensor_t *t) {
  free(t->data);
  memset(t, 0, sizeof *t);
}

int an_onnx_run(an_onnx_t *m, const an_onnx_tensor_t *inputs, size_t n_in,
                an_onnx_tensor_t *outputs, size_t n_out, char *err, size_t errlen) {
  an_oexec_t x;
  int rc;
  memset(outputs, 0, n_out * sizeof *outputs);
  if (n_in != m->n_inputs || n_out > m->n_outputs)
    return snprintf(err, errlen, "the model takes %zu inputs and gives %zu outputs",
                    m->n_inputs, m->n_outputs),
           AN_EMODEL;
  if ((rc = an_oexec_begin(m, &x, 0, err, errlen)) != 0)
    goto done;
  for (size_t i = 0; i < n_in; i++) {
    const an_oval_t *want = &m->in_info[i];
    an_oval_t *v = &x.vals[m->inputs[i]];
    int ok = inputs[i].dtype == want->dtype && inputs[i].ndim == want->ndim && inputs[i].data;
    for (int d = 0; ok && d < want->ndim; d++)
      ok = inputs[i].dims[d] >= 0 && (want->dims[d] < 0 || inputs[i].dims[d] == want->dims[d]);
    if (!ok) {
      rc = an_oexec_fail(&x, AN_EMODEL, "input '%s' does not have the declared type and shape",
                         m->value_names[m->inputs[i]]);
      goto done;
    }
    v->dtype = inputs[i].dtype;
    v->ndim = inputs[i].ndim;
    memcpy(v->dims, inputs[i].dims, sizeof v->dims);
    v->data = inputs[i].data;
    v->borrowed = 1;
    v->present = 1;
  }
  if ((rc = an_onnx_pass(&x)) != 0)
    goto done;
  for (size_t i = 0; i < n_out; i++) {
    an_oval_t *v = &x.vals[m->outputs[i]];
    if ((rc = an_oval_make_plain(&x, v)) != 0)
      goto done;
    size_t bytes = an_oval_numel(v) * an_onnx_dtype_size(v->dtype);
    outputs[i].dtype = v->dtype;
    outputs[i].ndim = v->ndim;
    memcpy(outputs[i].dims, v->dims, sizeof v->dims);
    if (v->borrowed) { /* a constant or an input passed straight through */
      if (!(outputs[i].data = malloc(bytes ? bytes : 1))) {
        rc = an_oexec_fail(&x, UV_ENOMEM, "out of memory");
        goto done;
      }
      memcpy(outputs[i].data, v->data, bytes);
    } else {
      outputs[i].data = v->data; /* ownership moves to the caller */
      x.live_bytes -= v->bytes;
      v->data = NULL;
    }
  }
done:
  if (rc)
    for (size_t i = 0; i < n_out; i++)
      an_onnx_tensor_free(&outputs[i]);
  an_oexec_end(&x);
  return rc;
}
