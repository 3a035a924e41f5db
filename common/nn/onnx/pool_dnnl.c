/* Pooling on oneDNN's kernels, reading the input in whatever layout the
 * convolution before it wrote (blocked or row-major) and writing the same
 * layout, so conv -> pool -> conv chains never leave the blocked layout.
 * Built once per input shape and layout, cached on the node. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/engine.h"
#include "common/nn/onnx/pool_dnnl.h"

typedef struct pool_cache {
  an_pool_args_t args;
  dnnl_memory_desc_t src_md;  /* the input layout it was built for */
  dnnl_primitive_t pool;
  dnnl_memory_t src, dst, scratch;
  void *scratch_buf;
  size_t scratch_bytes;
  an_onnx_t *m;               /* for the cached-bytes account */
  an_olayout_t dst_layout;
  int dst_blocked;
} pool_cache_t;

static void pool_cache_free(void *p) {
  pool_cache_t *c = p;
  if (!c)
    return;
  if (c->m)
    c->m->cache_bytes -= c->scratch_bytes;
  dnnl_primitive_t prims[] = {c->pool};
  dnnl_memory_t mems[] = {c->src, c->dst, c->scratch};
  an_engine_release(prims, 1, mems, 3);
  an_olayout_destroy(&c->dst_layout);
  free(c->scratch_buf);
  free(c);
}

static int pool_build(an_onnx_t *m, const an_pool_args_t *a, const dnnl_memory_desc_t *src_md,
                      pool_cache_t *c) {
  dnnl_memory_desc_t dst_a, dst_u;
  dnnl_pooling_v2_desc_t pd_desc;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_dims_t ddims = {a->n, a->c, a->oh, a->ow}, strides = {a->sh, a->sw};
  dnnl_dims_t kernel = {a->kh, a->kw}, dil = {a->dh - 1, a->dw - 1};
  dnnl_dims_t pl = {a->ph0, a->pw0}, pr = {a->ph1, a->pw1};
  int rc = AN_EUNSUPPORTED;

  c->args = *a;
  c->src_md = *src_md;
  dnnl_memory_desc_init_by_tag(&dst_u, 4, ddims, dnnl_f32, dnnl_nchw);
  dnnl_memory_desc_init_by_tag(&dst_a, 4, ddims, dnnl_f32, dnnl_format_tag_any);
  if (dnnl_pooling_v2_forward_desc_init(&pd_desc, dnnl_forward_inference, a->alg, src_md,
                                        &dst_a, strides, kernel, dil, pl, pr) != dnnl_success ||
      dnnl_primitive_attr_create(&attr) != dnnl_success ||
      dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &pd_desc, attr, m->eng, NULL) != dnnl_success ||
      dnnl_primitive_create(&c->pool, pd) != dnnl_success)
    goto done;
  const dnnl_memory_desc_t *dst_q = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
  const dnnl_memory_desc_t *sp_q = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  c->scratch_bytes = sp_q ? dnnl_memory_desc_get_size(sp_q) : 0;
  uint64_t lim = m->lim.max_memory_bytes;
  if (c->scratch_bytes > lim || m->cache_bytes > lim - c->scratch_bytes) {
    rc = AN_ETOOBIG;
    goto done;
  }
  c->dst_blocked = !dnnl_memory_desc_equal(dst_q, &dst_u);
  if (!(c->scratch_buf = aligned_alloc(64, (c->scratch_bytes + 64) / 64 * 64)))
    goto done;
  c->m = m;
  m->cache_bytes += c->scratch_bytes;
  if (dnnl_memory_create(&c->src, src_md, m->eng, DNNL_MEMORY_NONE) != dnnl_success ||
      dnnl_memory_create(&c->dst, dst_q, m->eng, DNNL_MEMORY_NONE) != dnnl_success ||
      (c->scratch_bytes &&
       dnnl_memory_create(&c->scratch, sp_q, m->eng, c->scratch_buf) != dnnl_success) ||
      (c->dst_blocked && an_olayout_init(m, &c->dst_layout, dst_q) != 0))
    goto done;
  rc = 0;
done:
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  return rc;
}

int an_pool_dnnl(an_oexec_t *x, an_onode_t *n, const an_pool_args_t *a, an_oval_t *in,
                 an_oval_t *out, const int64_t dims[4]) {
  an_onnx_t *m = x->m;
  pool_cache_t *c = n->cache;
  dnnl_memory_desc_t src_md;
  int rc;

  if (an_onnx_engine(m) != 0)
    return AN_EUNSUPPORTED;
  if (in->layout) {
    src_md = in->layout->md;
  } else {
    dnnl_dims_t sdims = {a->n, a->c, a->h, a->w};
    dnnl_memory_desc_init_by_tag(&src_md, 4, sdims, dnnl_f32, dnnl_nchw);
  }
  if (!c || memcmp(&c->args, a, sizeof *a) != 0 || !dnnl_memory_desc_equal(&c->src_md, &src_md)) {
    pool_cache_free(c);
    n->cache = NULL;
    if (!(c = calloc(1, sizeof *c)))
      return an_oexec_fail(x, UV_ENOMEM, "out of memory");
    if ((rc = pool_build(m, a, &src_md, c)) != 0) {
      pool_cache_free(c);
      if (rc == AN_ETOOBIG)
        return an_oexec_fail(x, rc, "the pooling kernel would exceed the memory limit");
      return rc;
    }
    n->cache = c;
    n->cache_free = pool_cache_free;
  }
  if ((rc = c->dst_blocked ? an_oexec_alloc_blocked(x, out, 4, dims, &c->dst_layout)
                           : an_oexec_alloc(x, out, AN_ONNX_FLOAT, 4, dims)) != 0)
    return rc;
  dnnl_memory_set_data_handle(c->src, in->data);
  dnnl_memory_set_data_handle(c->dst, out->data);
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, c->src}, {DNNL_ARG_DST, c->dst}};
  int na = 2;
  if (c->scratch)
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch};
  if (dnnl_primitive_execute(c->pool, m->stream, na, args) != dnnl_success ||
      dnnl_stream_wait(m->stream) != dnnl_success)
    return an_oexec_fail(x, AN_EMODEL, "the pooling kernel failed");
  return 0;
}
