/* Conv on oneDNN's direct kernels. The output stays in the blocked layout
 * the kernel writes (layout.c converts it when a row-major reader needs it);
 * a blocked input in the kernel's layout is read as it is, anything else is
 * reordered. Constant weights are reordered once and kept with the node, a
 * Relu that followed the Conv runs as the kernel's post-op, and the
 * primitive is built once per input shape (cached on the node). */
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <uv.h>

#include "common/error.h"
#include "common/nn/engine.h"
#include "common/nn/onnx/conv_dnnl.h"

typedef struct conv_cache {
  an_onnx_t *m;            /* for the cached-bytes account */
  int64_t key[20];         /* every shape parameter and the weight buffer's identity */
  dnnl_primitive_t conv, src_in, w_in;
  dnnl_memory_t src_user, src, w_user, w, b, dst, scratch;
  dnnl_memory_desc_t in_md; /* the input layout it was built for */
  size_t src_bytes, w_bytes, scratch_bytes;
  void *w_buf, *scratch_buf;
  int w_ready;             /* constant weights already reordered */
  int src_reorder;         /* the input needs a reorder into the kernel's layout */
  an_olayout_t dst_layout; /* the output's layout, when blocked */
  int dst_blocked;
} conv_cache_t;

static void conv_cache_free(void *p) {
  conv_cache_t *c = p;
  if (!c)
    return;
  if (c->m && c->w_buf)
    c->m->cache_bytes -= c->w_bytes + c->scratch_bytes;
  dnnl_primitive_t prims[] = {c->conv, c->src_in, c->w_in};
  dnnl_memory_t mems[] = {c->src_user, c->src, c->w_user, c->w, c->b, c->dst, c->scratch};
  an_engine_release(prims, sizeof prims / sizeof prims[0], mems, sizeof mems / sizeof mems[0]);
  an_olayout_destroy(&c->dst_layout);
  free(c->w_buf);
  free(c->scratch_buf);
  free(c);
}

static int reorder_prim(dnnl_engine_t eng, const dnnl_memory_desc_t *from,
                        const dnnl_memory_desc_t *to, dnnl_primitive_t *out) {
  dnnl_primitive_desc_t pd;
  if (dnnl_reorder_primitive_desc_create(&pd, from, eng, to, eng, NULL) != dnnl_success)
    return AN_EUNSUPPORTED;
  int ok = dnnl_primitive_create(out, pd) == dnnl_success;
  dnnl_primitive_desc_destroy(pd);
  return ok ? 0 : AN_EUNSUPPORTED;
}

/* Builds the cache for this input shape; AN_EUNSUPPORTED when oneDNN has
 * no kernel (the caller falls back to im2col). */
static int conv_build(an_onnx_t *m, const an_onode_t *n, const an_conv_args_t *a,
                      const dnnl_memory_desc_t *in_md, conv_cache_t *c) {
  dnnl_memory_desc_t src_a, w_u, w_a, b_md, dst_u, dst_a;
  /* bf16 mode: the kernel reads bfloat16 activations and weights (AMX or
   * AVX-512 BF16) and accumulates and writes float32. */
  dnnl_data_type_t in_type = m->bf16 ? dnnl_bf16 : dnnl_f32;
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  int g = a->group > 1;
  dnnl_dims_t sdims = {a->n, a->c, a->h, a->w}, ddims = {a->n, a->m, a->oh, a->ow};
  dnnl_dims_t wdims = {a->m, a->c, a->kh, a->kw}, gwdims = {a->group, a->m / a->group,
                                                            a->c / a->group, a->kh, a->kw};
  dnnl_dims_t bdims = {a->m}, strides = {a->sh, a->sw}, dil = {a->dh - 1, a->dw - 1};
  dnnl_dims_t pl = {a->ph0, a->pw0}, pr = {a->ph1, a->pw1};
  int rc = AN_EUNSUPPORTED;

  if (an_onnx_engine(m) != 0)
    return AN_EUNSUPPORTED;
  c->in_md = *in_md;
  dnnl_memory_desc_init_by_tag(&dst_u, 4, ddims, dnnl_f32, dnnl_nchw);
  dnnl_memory_desc_init_by_tag(&src_a, 4, sdims, in_type, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&dst_a, 4, ddims, dnnl_f32, dnnl_format_tag_any);
  if (g) {
    dnnl_memory_desc_init_by_tag(&w_u, 5, gwdims, dnnl_f32, dnnl_goihw);
    dnnl_memory_desc_init_by_tag(&w_a, 5, gwdims, in_type, dnnl_format_tag_any);
  } else {
    dnnl_memory_desc_init_by_tag(&w_u, 4, wdims, dnnl_f32, dnnl_oihw);
    dnnl_memory_desc_init_by_tag(&w_a, 4, wdims, in_type, dnnl_format_tag_any);
  }
  dnnl_memory_desc_init_by_tag(&b_md, 1, bdims, dnnl_f32, dnnl_a);
  if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                 dnnl_convolution_direct, &src_a, &w_a,
                                                 a->bias ? &b_md : NULL, &dst_a, strides, dil,
                                                 pl, pr) != dnnl_success)
    goto done;
  if (dnnl_primitive_attr_create(&attr) != dnnl_success ||
      dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success)
    goto done;
  if (n->fused_relu &&
      (dnnl_post_ops_create(&po) != dnnl_success ||
       dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f) != dnnl_success ||
       dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success))
    goto done;
  if (
      dnnl_primitive_desc_create(&pd, &cd, attr, m->eng, NULL) != dnnl_success ||
      dnnl_primitive_create(&c->conv, pd) != dnnl_success)
    goto done;
  const dnnl_memory_desc_t *src_q = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *dst_q = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  const dnnl_memory_desc_t *w_q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *sp_q = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  c->src_reorder = !dnnl_memory_desc_equal(src_q, in_md);
  c->dst_blocked = !dnnl_memory_desc_equal(dst_q, &dst_u);
  c->src_bytes = dnnl_memory_desc_get_size(src_q);
  c->w_bytes = dnnl_memory_desc_get_size(w_q);
  c->scratch_bytes = sp_q ? dnnl_memory_desc_get_size(sp_q) : 0;
  /* The cached weights and scratchpad stay with the model: they count in
   * every run's memory limit from now on. */
  uint64_t lim = m->lim.max_memory_bytes, cached = c->w_bytes + c->scratch_bytes;
  if (cached > lim || m->cache_bytes > lim - cached) {
    rc = AN_ETOOBIG;
    goto done;
  }
  if (!(c->w_buf = aligned_alloc(64, (c->w_bytes + 63) / 64 * 64)) ||
      !(c->scratch_buf = aligned_alloc(64, (c->scratch_bytes + 64) / 64 * 64)))
    goto done;
  if (dnnl_memory_create(&c->src_user, in_md, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->src, src_q, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->dst, dst_q, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->w_user, &w_u, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->w, w_q, m->eng, c->w_buf) ||
      dnnl_memory_create(&c->b, &b_md, m->eng, DNNL_MEMORY_NONE) ||
      (sp_q && dnnl_memory_create(&c->scratch, sp_q, m->eng, c->scratch_buf)))
    goto done;
  c->m = m;
  m->cache_bytes += cached;
  if ((c->src_reorder && reorder_prim(m->eng, in_md, src_q, &c->src_in)) ||
      reorder_prim(m->eng, &w_u, w_q, &c->w_in) ||
      (c->dst_blocked && an_olayout_init(m, &c->dst_layout, dst_q)))
    goto done;
  rc = 0;
done:
  if (po)
    dnnl_post_ops_destroy(po);
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  return rc;
}

static int run_reorder(an_onnx_t *m, dnnl_primitive_t r, dnnl_memory_t from, dnnl_memory_t to) {
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
  return dnnl_primitive_execute(r, m->stream, 2, args) == dnnl_success ? 0 : AN_EMODEL;
}

int an_conv_dnnl(an_oexec_t *x, an_onode_t *n, const an_conv_args_t *a, an_oval_t *in,
                 an_oval_t *out, const int64_t dims[4]) {
  an_onnx_t *m = x->m;
  conv_cache_t *c = n->cache;
  int64_t key[20] = {a->n,  a->c,  a->h,   a->w,   a->m,   a->oh,  a->ow,
                     a->kh, a->kw, a->group, a->sh, a->sw, a->dh, a->dw,
                     a->ph0, a->pw0, a->ph1, a->pw1, a->bias != NULL,
                     (int64_t)(intptr_t)a->weights};
  void *src_buf = NULL;
  int rc;

  /* The input as it arrives: row-major, or blocked by the node before. */
  dnnl_memory_desc_t in_md;
  if (in->layout) {
    in_md = in->layout->md;
  } else {
    dnnl_dims_t sdims = {a->n, a->c, a->h, a->w};
    dnnl_memory_desc_init_by_tag(&in_md, 4, sdims, dnnl_f32, dnnl_nchw);
  }
  if (!c || memcmp(c->key, key, sizeof key) != 0 || !dnnl_memory_desc_equal(&c->in_md, &in_md)) {
    conv_cache_free(c);
    n->cache = NULL;
    if (!(c = calloc(1, sizeof *c)))
      return an_oexec_fail(x, UV_ENOMEM, "out of memory");
    if ((rc = conv_build(m, n, a, &in_md, c)) != 0) {
      conv_cache_free(c);
      if (rc == AN_ETOOBIG)
        return an_oexec_fail(x, rc, "the convolution kernel would exceed the memory limit");
      return rc; /* AN_EUNSUPPORTED: the caller uses im2col */
    }
    memcpy(c->key, key, sizeof key);
    n->cache = c;
    n->cache_free = conv_cache_free;
  }
  if ((rc = c->dst_blocked ? an_oexec_alloc_blocked(x, out, 4, dims, &c->dst_layout)
                           : an_oexec_alloc(x, out, AN_ONNX_FLOAT, 4, dims)) != 0)
    return rc;
  /* The kernel's copy of the input counts against the memory limit. */
  if (c->src_reorder && !(src_buf = an_oexec_scratch(x, c->src_bytes)))
    return AN_ETOOBIG;
  dnnl_memory_set_data_handle(c->src_user, in->data);
  dnnl_memory_set_data_handle(c->src, src_buf ? src_buf : in->data);
  dnnl_memory_set_data_handle(c->dst, out->data);
  rc = AN_EMODEL;
  if (!c->w_ready || !a->weights_const) {
    dnnl_memory_set_data_handle(c->w_user, (void *)a->weights);
    if (run_reorder(m, c->w_in, c->w_user, c->w) != 0)
      goto done;
    c->w_ready = 1;
  }
  if (src_buf && run_reorder(m, c->src_in, c->src_user, c->src) != 0)
    goto done;
  dnnl_exec_arg_t args[5];
  int na = 0;
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w};
  if (a->bias) {
    dnnl_memory_set_data_handle(c->b, (void *)a->bias);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->b};
  }
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
  if (c->scratch)
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch};
  if (dnnl_primitive_execute(c->conv, m->stream, na, args) != dnnl_success)
    goto done;
  rc = dnnl_stream_wait(m->stream) == dnnl_success ? 0 : AN_EMODEL;
done:
  if (rc == AN_EMODEL)
    an_oexec_fail(x, rc, "the convolution kernel failed");
  an_oexec_scratch_free(x, src_buf, c->src_bytes);
  return rc;
}
