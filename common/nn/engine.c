#include "common/nn/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

const char *an_engine_status(dnnl_status_t st) {
  switch (st) {
  case dnnl_success: return "success";
  case dnnl_out_of_memory: return "out of memory";
  case dnnl_invalid_arguments: return "invalid arguments";
  case dnnl_unimplemented: return "no implementation for these shapes";
  case dnnl_iterator_ends: return "iterator ends";
  case dnnl_runtime_error: return "runtime error";
  case dnnl_not_required: return "not required";
  }
  return "unknown oneDNN status";
}

int an_engine_init(an_engine_t *e, char *err, size_t errlen) {
  dnnl_status_t st;
  memset(e, 0, sizeof *e);
  if ((st = dnnl_engine_create(&e->engine, dnnl_cpu, 0)) != dnnl_success ||
      (st = dnnl_stream_create(&e->stream, e->engine, dnnl_stream_default_flags)) !=
          dnnl_success ||
      (st = dnnl_primitive_attr_create(&e->attr)) != dnnl_success ||
      (st = dnnl_primitive_attr_set_scratchpad_mode(e->attr, dnnl_scratchpad_mode_user)) !=
          dnnl_success) {
    snprintf(err, errlen, "cannot start oneDNN: %s", an_engine_status(st));
    an_engine_destroy(e);
    return AN_EMODEL;
  }
  return 0;
}

void an_engine_destroy(an_engine_t *e) {
  if (e->scratch_mem)
    dnnl_memory_destroy(e->scratch_mem);
  free(e->scratch);
  if (e->attr)
    dnnl_primitive_attr_destroy(e->attr);
  if (e->stream)
    dnnl_stream_destroy(e->stream);
  if (e->engine)
    dnnl_engine_destroy(e->engine);
  memset(e, 0, sizeof *e);
}

void an_engine_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims) {
  static const dnnl_format_tag_t tags[] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
                                           dnnl_abcd};
  dnnl_dims_t full = {0}; /* the API reads a full DNNL_MAX_NDIMS array */
  memcpy(full, dims, (size_t)ndims * sizeof *dims);
  dnnl_memory_desc_init_by_tag(md, ndims, full, dnnl_f32, tags[ndims]);
}

int an_engine_primitive(an_engine_t *e, const void *op_desc, const_dnnl_primitive_desc_t hint,
                        dnnl_primitive_t *prim, dnnl_primitive_desc_t *pd_out) {
  dnnl_primitive_desc_t pd = NULL;
  const dnnl_memory_desc_t *scratch;
  dnnl_status_t st = dnnl_primitive_desc_create(&pd, op_desc, e->attr, e->engine, hint);
  if (st != dnnl_success)
    return AN_EMODEL;
  scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (scratch) {
    size_t need = dnnl_memory_desc_get_size(scratch);
    if (need > e->scratch_need)
      e->scratch_need = need;
  }
  st = dnnl_primitive_create(prim, pd);
  if (pd_out)
    *pd_out = pd;
  else
    dnnl_primitive_desc_destroy(pd);
  return st == dnnl_success ? 0 : AN_EMODEL;
}

int an_engine_memory(an_engine_t *e, const dnnl_memory_desc_t *md, void *data,
                     dnnl_memory_t *out) {
  /* DNNL_MEMORY_NONE: no buffer yet; the handle is set before execution. */
  return dnnl_memory_create(out, md, e->engine, data ? data : DNNL_MEMORY_NONE) == dnnl_success
             ? 0
             : AN_EMODEL;
}

int an_engine_commit_scratch(an_engine_t *e) {
  dnnl_memory_desc_t md;
  dnnl_dims_t dims = {0};
  if (e->scratch_need <= e->scratch_cap && e->scratch_mem)
    return 0;
  if (e->scratch_mem)
    dnnl_memory_destroy(e->scratch_mem);
  e->scratch_mem = NULL;
  free(e->scratch);
  e->scratch_cap = e->scratch_need ? e->scratch_need : 64;
  e->scratch = aligned_alloc(64, (e->scratch_cap + 63) / 64 * 64);
  if (!e->scratch)
    return UV_ENOMEM;
  dims[0] = (int64_t)e->scratch_cap;
  dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_u8, dnnl_a);
  return dnnl_memory_create(&e->scratch_mem, &md, e->engine, e->scratch) == dnnl_success
             ? 0
             : AN_EMODEL;
}

int an_engine_exec(an_engine_t *e, dnnl_primitive_t prim, int nargs, dnnl_exec_arg_t *args) {
  args[nargs].arg = DNNL_ARG_SCRATCHPAD;
  args[nargs].memory = e->scratch_mem;
  if (dnnl_primitive_execute(prim, e->stream, nargs + 1, args) != dnnl_success)
    return AN_EMODEL;
  return dnnl_stream_wait(e->stream) == dnnl_success ? 0 : AN_EMODEL;
}

void an_engine_md4(dnnl_memory_desc_t *md, const int64_t dims[4], an_layout_t layout) {
  dnnl_dims_t full = {dims[0], dims[1], dims[2], dims[3]};
  dnnl_memory_desc_init_by_tag(md, 4, full, dnnl_f32, layout == AN_NHWC ? dnnl_acdb : dnnl_abcd);
}

int an_reorder_init(an_engine_t *e, an_reorder_t *r, const dnnl_memory_desc_t *from,
                    const dnnl_memory_desc_t *to) {
  dnnl_primitive_desc_t pd = NULL;
  memset(r, 0, sizeof *r);
  if (dnnl_reorder_primitive_desc_create(&pd, from, e->engine, to, e->engine, e->attr) !=
      dnnl_success)
    return AN_EMODEL;
  const dnnl_memory_desc_t *scratch = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  if (scratch && dnnl_memory_desc_get_size(scratch) > e->scratch_need)
    e->scratch_need = dnnl_memory_desc_get_size(scratch);
  int rc = dnnl_primitive_create(&r->prim, pd) == dnnl_success &&
                   an_engine_memory(e, from, NULL, &r->src) == 0 &&
                   an_engine_memory(e, to, NULL, &r->dst) == 0
               ? 0
               : AN_EMODEL;
  dnnl_primitive_desc_destroy(pd);
  return rc;
}

int an_reorder_run(an_engine_t *e, an_reorder_t *r, const void *from, void *to) {
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, r->src}, {DNNL_ARG_TO, r->dst}};
  dnnl_memory_set_data_handle(r->src, (void *)from);
  dnnl_memory_set_data_handle(r->dst, to);
  return an_engine_exec(e, r->prim, 2, args);
}

void an_reorder_destroy(an_reorder_t *r) {
  if (r->prim)
    dnnl_primitive_destroy(r->prim);
  if (r->src)
    dnnl_memory_destroy(r->src);
  if (r->dst)
    dnnl_memory_destroy(r->dst);
  memset(r, 0, sizeof *r);
}

AN_HOT_LOOP void an_bf16_from_f32(uint16_t *restrict dst, const float *restrict src, size_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n > 65536)
  for (size_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, &src[i], sizeof u);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    /* A NaN must not round into an infinity: keep it a (quiet) NaN. Masks,
     * not a branch, so the loop vectorises. */
    uint32_t nan = -(uint32_t)((u & 0x7fffffffu) > 0x7f800000u);
    dst[i] = (uint16_t)((rounded & ~nan) | (((u >> 16) | 0x40u) & nan));
  }
}

void an_engine_release(dnnl_primitive_t *prims, size_t n_prims, dnnl_memory_t *mems,
                       size_t n_mems) {
  for (size_t i = 0; i < n_prims; i++)
    if (prims[i])
      dnnl_primitive_destroy(prims[i]);
  for (size_t i = 0; i < n_mems; i++)
    if (mems[i])
      dnnl_memory_destroy(mems[i]);
}

int an_engine_has_fast_bf16(void) {
  dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  return ((unsigned)isa & (unsigned)dnnl_cpu_isa_avx512_core_bf16) ==
         (unsigned)dnnl_cpu_isa_avx512_core_bf16;
}
