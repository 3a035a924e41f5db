/* Conv on oneDNN's direct kernels. The tensors stay NCHW outside; inside,
 * the input and output are reordered to the blocked layouts the kernels
 * want, and constant weights are reordered once and kept with the node. The
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
  dnnl_primitive_t conv, src_in, dst_out, w_in;
  dnnl_memory_t src_user, src, w_user, w, b, dst, dst_user, scratch;
  size_t src_bytes, dst_bytes, w_bytes, scratch_bytes;
  void *w_buf, *scratch_buf;
  int w_ready;             /* constant weights already reordered */
  int src_reorder, dst_reorder;
} conv_cache_t;

static void conv_cache_free(void *p) {
  conv_cache_t *c = p;
  if (!c)
    return;
  if (c->m && c->w_buf)
    c->m->cache_bytes -= c->w_bytes + c->scratch_bytes;
  dnnl_primitive_t prims[] = {c->conv, c->src_in, c->dst_out, c->w_in};
  dnnl_memory_t mems[] = {c->src_user, c->src, c->w_user, c->w, c->b, c->dst, c->dst_user,
                          c->scratch};
  an_engine_release(prims, sizeof prims / sizeof prims[0], mems, sizeof mems / sizeof mems[0]);
  free(c->w_buf);
  free(c->scratch_buf);
  free(c);
}

static int an_onnx_engine(an_onnx_t *m) {
  if (m->eng)
    return 0;
  if (dnnl_engine_create(&m->eng, dnnl_cpu, 0) != dnnl_success)
    return AN_EUNSUPPORTED;
  if (dnnl_stream_create(&m->stream, m->eng, dnnl_stream_default_flags) != dnnl_success)
    return AN_EUNSUPPORTED;
  return 0;
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
static int conv_build(an_onnx_t *m, const an_conv_args_t *a, conv_cache_t *c) {
  dnnl_memory_desc_t src_u, src_a, w_u, w_a, b_md, dst_u, dst_a;
  dnnl_convolution_desc_t cd;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  int g = a->group > 1;
  dnnl_dims_t sdims = {a->n, a->c, a->h, a->w}, ddims = {a->n, a->m, a->oh, a->ow};
  dnnl_dims_t wdims = {a->m, a->c, a->kh, a->kw}, gwdims = {a->group, a->m / a->group,
                                                            a->c / a->group, a->kh, a->kw};
  dnnl_dims_t bdims = {a->m}, strides = {a->sh, a->sw}, dil = {a->dh - 1, a->dw - 1};
  dnnl_dims_t pl = {a->ph0, a->pw0}, pr = {a->ph1, a->pw1};
  int rc = AN_EUNSUPPORTED;

  if (an_onnx_engine(m) != 0)
    return AN_EUNSUPPORTED;
  dnnl_memory_desc_init_by_tag(&src_u, 4, sdims, dnnl_f32, dnnl_nchw);
  dnnl_memory_desc_init_by_tag(&dst_u, 4, ddims, dnnl_f32, dnnl_nchw);
  dnnl_memory_desc_init_by_tag(&src_a, 4, sdims, dnnl_f32, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&dst_a, 4, ddims, dnnl_f32, dnnl_format_tag_any);
  if (g) {
    dnnl_memory_desc_init_by_tag(&w_u, 5, gwdims, dnnl_f32, dnnl_goihw);
    dnnl_memory_desc_init_by_tag(&w_a, 5, gwdims, dnnl_f32, dnnl_format_tag_any);
  } else {
    dnnl_memory_desc_init_by_tag(&w_u, 4, wdims, dnnl_f32, dnnl_oihw);
    dnnl_memory_desc_init_by_tag(&w_a, 4, wdims, dnnl_f32, dnnl_format_tag_any);
  }
  dnnl_memory_desc_init_by_tag(&b_md, 1, bdims, dnnl_f32, dnnl_a);
  if (dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                 dnnl_convolution_direct, &src_a, &w_a,
                                                 a->bias ? &b_md : NULL, &dst_a, strides, dil,
                                                 pl, pr) != dnnl_success)
    goto done;
  if (dnnl_primitive_attr_create(&attr) != dnnl_success ||
      dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &cd, attr, m->eng, NULL) != dnnl_success ||
      dnnl_primitive_create(&c->conv, pd) != dnnl_success)
    goto done;
  const dnnl_memory_desc_t *src_q = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
  const dnnl_memory_desc_t *dst_q = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  const dnnl_memory_desc_t *w_q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *sp_q = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  c->src_reorder = !dnnl_memory_desc_equal(src_q, &src_u);
  c->dst_reorder = !dnnl_memory_desc_equal(dst_q, &dst_u);
  c->src_bytes = dnnl_memory_desc_get_size(src_q);
  c->dst_bytes = dnnl_memory_desc_get_size(dst_q);
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
  if (dnnl_memory_create(&c->src_user, &src_u, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->src, src_q, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->dst, dst_q, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->dst_user, &dst_u, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->w_user, &w_u, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->w, w_q, m->eng, c->w_buf) ||
      dnnl_memory_create(&c->b, &b_md, m->eng, DNNL_MEMORY_NONE) ||
      (sp_q && dnnl_memory_create(&c->scratch, sp_q, m->eng, c->scratch_buf)))
    goto done;
  c->m = m;
  m->cache_bytes += cached;
  if ((c->src_reorder && reorder_prim(m->eng, &src_u, src_q, &c->src_in)) ||
      (c->dst_reorder && reorder_prim(m->eng, dst_q, &dst_u, &c->dst_out)) ||
      reorder_prim(m->eng, &w_u, w_q, &c->w_in))
    goto done;
  rc = 0;
done:
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

int an_conv_dnnl(an_oexec_t *x, an_onode_t *n, const an_conv_args_t *a) {
  an_onnx_t *m = x->m;
  conv_cache_t *c = n->cache;
  int64_t key[20] = {a->n,  a->c,  a->h,   a->w,   a->m,   a->oh,  a->ow,
                     a->kh, a->kw, a->group, a->sh, a->sw, a->dh, a->dw,
                     a->ph0, a->pw0, a->ph1, a->pw1, a->bias != NULL,
                     (int64_t)(intptr_t)a->weights};
  void *src_buf = NULL, *dst_buf = NULL;
  int rc;

  if (!c || memcmp(c->key, key, sizeof key) != 0) {
    conv_cache_free(c);
    n->cache = NULL;
    if (!(c = calloc(1, sizeof *c)))
      return an_oexec_fail(x, UV_ENOMEM, "out of memory");
    if ((rc = conv_build(m, a, c)) != 0) {
      conv_cache_free(c);
      if (rc == AN_ETOOBIG)
        return an_oexec_fail(x, rc, "the convolution kernel would exceed the memory limit");
      return rc; /* AN_EUNSUPPORTED: the caller uses im2col */
    }
    memcpy(c->key, key, sizeof key);
    n->cache = c;
    n->cache_free = conv_cache_free;
  }
  /* The blocked copies count against the run's memory limit. */
  if ((c->src_reorder && !(src_buf = an_oexec_scratch(x, c->src_bytes))) ||
      (c->dst_reorder && !(dst_buf = an_oexec_scratch(x, c->dst_bytes)))) {
    rc = AN_ETOOBIG;
    goto done;
  }
  dnnl_memory_set_data_handle(c->src_user, (void *)a->input);
  dnnl_memory_set_data_handle(c->dst_user, a->output);
  dnnl_memory_set_data_handle(c->src, c->src_reorder ? src_buf : (void *)a->input);
  dnnl_memory_set_data_handle(c->dst, c->dst_reorder ? dst_buf : a->output);
  rc = AN_EMODEL;
  if (!c->w_ready || !a->weights_const) {
    dnnl_memory_set_data_handle(c->w_user, (void *)a->weights);
    if (run_reorder(m, c->w_in, c->w_user, c->w) != 0)
      goto done;
    c->w_ready = 1;
  }
  if (c->src_reorder && run_reorder(m, c->src_in, c->src_user, c->src) != 0)
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
  if (c->dst_reorder && run_reorder(m, c->dst_out, c->dst, c->dst_user) != 0)
    goto done;
  rc = dnnl_stream_wait(m->stream) == dnnl_success ? 0 : AN_EMODEL;
done:
  if (rc == AN_EMODEL)
    an_oexec_fail(x, rc, "the convolution kernel failed");
  an_oexec_scratch_free(x, src_buf, c->src_bytes);
  an_oexec_scratch_free(x, dst_buf, c->dst_bytes);
  return rc;
}
