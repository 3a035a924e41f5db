/* Fully connected layers on oneDNN's matmul. A general sgemm call packs B
 * into the kernel's layout on every call, which for a large constant B (the
 * H-encoder's 7840 x 15680 layer: 490 MB) costs more than the product. Here
 * B is reordered once into the layout the kernel picked and kept with the
 * node, like the convolutions' weights; in bf16 mode the product reads
 * bfloat16 (AMX) and accumulates in float32. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/engine.h"
#include "common/nn/onnx/gemm_dnnl.h"

typedef struct gemm_cache {
  an_onnx_t *m;
  int64_t key[8];
  dnnl_primitive_t mm, w_in, src_in;
  dnnl_memory_t src_user, src, w_user, w, bias, dst, scratch;
  void *w_buf, *scratch_buf;
  size_t w_bytes, scratch_bytes, src_bytes;
  int src_reorder;
} gemm_cache_t;

static void gemm_cache_free(void *p) {
  gemm_cache_t *c = p;
  if (!c)
    return;
  if (c->m)
    c->m->cache_bytes -= c->w_bytes + c->scratch_bytes;
  dnnl_primitive_t prims[] = {c->mm, c->w_in, c->src_in};
  dnnl_memory_t mems[] = {c->src_user, c->src, c->w_user, c->w, c->bias, c->dst, c->scratch};
  an_engine_release(prims, 3, mems, 7);
  free(c->w_buf);
  free(c->scratch_buf);
  free(c);
}

static int reorder(an_onnx_t *m, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                   dnnl_primitive_t *out) {
  dnnl_primitive_desc_t pd;
  if (dnnl_reorder_primitive_desc_create(&pd, from, m->eng, to, m->eng, NULL) != dnnl_success)
    return AN_EUNSUPPORTED;
  int ok = dnnl_primitive_create(out, pd) == dnnl_success;
  dnnl_primitive_desc_destroy(pd);
  return ok ? 0 : AN_EUNSUPPORTED;
}

static int gemm_build(an_onnx_t *m, const an_gemm_args_t *a, gemm_cache_t *c) {
  dnnl_memory_desc_t src_u, src_a, w_u, w_a, b_md, dst_md;
  dnnl_matmul_desc_t md;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_data_type_t in_type = m->bf16 ? dnnl_bf16 : dnnl_f32;
  dnnl_dims_t sd = {a->m, a->k}, wd = {a->k, a->n}, dd = {a->m, a->n}, bd = {1, a->n};
  int rc = AN_EUNSUPPORTED;

  if (an_onnx_engine(m) != 0)
    return rc;
  dnnl_memory_desc_init_by_tag(&src_u, 2, sd, dnnl_f32, dnnl_ab);
  dnnl_memory_desc_init_by_tag(&src_a, 2, sd, in_type, dnnl_ab);
  dnnl_memory_desc_init_by_tag(&w_u, 2, wd, dnnl_f32, a->trans_b ? dnnl_ba : dnnl_ab);
  dnnl_memory_desc_init_by_tag(&w_a, 2, wd, in_type, dnnl_format_tag_any);
  dnnl_memory_desc_init_by_tag(&b_md, 2, bd, dnnl_f32, dnnl_ab);
  dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dnnl_f32, dnnl_ab);
  if (dnnl_matmul_desc_init(&md, &src_a, &w_a, a->bias ? &b_md : NULL, &dst_md) !=
          dnnl_success ||
      dnnl_primitive_attr_create(&attr) != dnnl_success ||
      dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) != dnnl_success ||
      dnnl_primitive_desc_create(&pd, &md, attr, m->eng, NULL) != dnnl_success ||
      dnnl_primitive_create(&c->mm, pd) != dnnl_success)
    goto done;
  const dnnl_memory_desc_t *w_q = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  const dnnl_memory_desc_t *sp_q = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  c->w_bytes = dnnl_memory_desc_get_size(w_q);
  c->scratch_bytes = sp_q ? dnnl_memory_desc_get_size(sp_q) : 0;
  c->src_reorder = m->bf16;
  c->src_bytes = dnnl_memory_desc_get_size(&src_a);
  uint64_t lim = m->lim.max_memory_bytes, cached = c->w_bytes + c->scratch_bytes;
  if (cached > lim || m->cache_bytes > lim - cached) {
    rc = AN_ETOOBIG;
    goto done;
  }
  if (!(c->w_buf = aligned_alloc(64, (c->w_bytes + 63) / 64 * 64)) ||
      !(c->scratch_buf = aligned_alloc(64, (c->scratch_bytes + 64) / 64 * 64)))
    goto done;
  c->m = m;
  m->cache_bytes += cached;
  if (dnnl_memory_create(&c->src_user, &src_u, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->src, &src_a, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->w_user, &w_u, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->w, w_q, m->eng, c->w_buf) ||
      dnnl_memory_create(&c->bias, &b_md, m->eng, DNNL_MEMORY_NONE) ||
      dnnl_memory_create(&c->dst, &dst_md, m->eng, DNNL_MEMORY_NONE) ||
      (sp_q && c->scratch_bytes &&
       dnnl_memory_create(&c->scratch, sp_q, m->eng, c->scratch_buf)) ||
      reorder(m, &w_u, w_q, &c->w_in) || (c->src_reorder && reorder(m, &src_u, &src_a, &c->src_in)))
    goto done;
  /* B is constant: pack it now, once. */
  dnnl_memory_set_data_handle(c->w_user, (void *)a->b);
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, c->w_user}, {DNNL_ARG_TO, c->w}};
  if (dnnl_primitive_execute(c->w_in, m->stream, 2, args) != dnnl_success ||
      dnnl_stream_wait(m->stream) != dnnl_success)
    goto done;
  rc = 0;
done:
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (attr)
    dnnl_primitive_attr_destroy(attr);
  return rc;
}

int an_gemm_dnnl(an_oexec_t *x, an_onode_t *n, const an_gemm_args_t *a) {
  an_onnx_t *m = x->m;
  gemm_cache_t *c = n->cache;
  int64_t key[8] = {a->m, a->k, a->n, a->trans_b, (int64_t)(intptr_t)a->b,
                    (int64_t)(intptr_t)a->bias, m->bf16, 0};
  void *src_buf = NULL;
  int rc;
  if (!c || memcmp(c->key, key, sizeof key) != 0) {
    gemm_cache_free(c);
    n->cache = NULL;
    if (!(c = calloc(1, sizeof *c)))
      return an_oexec_fail(x, UV_ENOMEM, "out of memory");
    if ((rc = gemm_build(m, a, c)) != 0) {
      gemm_cache_free(c);
      if (rc == AN_ETOOBIG)
        return an_oexec_fail(x, rc, "the matrix product's packed weights exceed the memory limit");
      return rc;
    }
    memcpy(c->key, key, sizeof key);
    n->cache = c;
    n->cache_free = gemm_cache_free;
  }
  if (c->src_reorder && !(src_buf = an_oexec_scratch(x, c->src_bytes)))
    return AN_ETOOBIG;
  rc = AN_EMODEL;
  dnnl_memory_set_data_handle(c->src_user, (void *)a->a);
  dnnl_memory_set_data_handle(c->src, src_buf ? src_buf : (void *)a->a);
  dnnl_memory_set_data_handle(c->dst, a->y);
  if (src_buf) {
    dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, c->src_user}, {DNNL_ARG_TO, c->src}};
    if (dnnl_primitive_execute(c->src_in, m->stream, 2, r) != dnnl_success)
      goto done;
  }
  dnnl_exec_arg_t args[5];
  int na = 0;
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w};
  if (a->bias) {
    dnnl_memory_set_data_handle(c->bias, (void *)a->bias);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->bias};
  }
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
  if (c->scratch)
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, c->scratch};
  if (dnnl_primitive_execute(c->mm, m->stream, na, args) != dnnl_success ||
      dnnl_stream_wait(m->stream) != dnnl_success)
    goto done;
  rc = 0;
done:
  if (rc)
    an_oexec_fail(x, rc, "the matrix product failed");
  an_oexec_scratch_free(x, src_buf, c->src_bytes);
  return rc;
}
