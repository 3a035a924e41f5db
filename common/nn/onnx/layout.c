/* Blocked layouts between operators. oneDNN's convolution and pooling
 * kernels read and write channel-blocked tensors (nChw16c on AVX-512); a
 * value produced that way stays blocked for the next operator that accepts
 * it and is reordered to row-major only when an operator that does not
 * (Flatten, Gemm, Reshape...) or the caller reads it. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/engine.h"
#include "common/nn/onnx/graph.h"

int an_onnx_engine(an_onnx_t *m) {
  if (m->eng)
    return 0;
  if (dnnl_engine_create(&m->eng, dnnl_cpu, 0) != dnnl_success)
    return AN_EUNSUPPORTED;
  if (dnnl_stream_create(&m->stream, m->eng, dnnl_stream_default_flags) != dnnl_success)
    return AN_EUNSUPPORTED;
  return 0;
}

int an_olayout_init(an_onnx_t *m, an_olayout_t *l, const dnnl_memory_desc_t *md) {
  dnnl_memory_desc_t plain;
  dnnl_primitive_desc_t pd = NULL;
  int rc = AN_EUNSUPPORTED;
  memset(l, 0, sizeof *l);
  l->md = *md;
  l->bytes = dnnl_memory_desc_get_size(md);
  if (an_onnx_engine(m) != 0 || md->ndims != 4)
    return rc;
  an_engine_md(&plain, md->ndims, md->dims);
  if (dnnl_reorder_primitive_desc_create(&pd, md, m->eng, &plain, m->eng, NULL) !=
          dnnl_success ||
      dnnl_primitive_create(&l->to_plain, pd) != dnnl_success ||
      dnnl_memory_create(&l->from_mem, md, m->eng, DNNL_MEMORY_NONE) != dnnl_success ||
      dnnl_memory_create(&l->to_mem, &plain, m->eng, DNNL_MEMORY_NONE) != dnnl_success)
    goto done;
  rc = 0;
done:
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  if (rc)
    an_olayout_destroy(l);
  return rc;
}

void an_olayout_destroy(an_olayout_t *l) {
  dnnl_primitive_t prims[] = {l->to_plain};
  dnnl_memory_t mems[] = {l->from_mem, l->to_mem};
  an_engine_release(prims, 1, mems, 2);
  memset(l, 0, sizeof *l);
}

int an_oval_make_plain(an_oexec_t *x, an_oval_t *v) {
  const an_olayout_t *l = v->layout;
  an_oval_t plain;
  int rc;
  if (!l || !v->data)
    return 0;
  if ((rc = an_oexec_alloc(x, &plain, AN_ONNX_FLOAT, v->ndim, v->dims)) != 0)
    return rc;
  dnnl_memory_set_data_handle(l->from_mem, v->data);
  dnnl_memory_set_data_handle(l->to_mem, plain.data);
  dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, l->from_mem}, {DNNL_ARG_TO, l->to_mem}};
  if (dnnl_primitive_execute(l->to_plain, x->m->stream, 2, args) != dnnl_success ||
      dnnl_stream_wait(x->m->stream) != dnnl_success) {
    an_oexec_scratch_free(x, plain.data, plain.bytes);
    return an_oexec_fail(x, AN_EMODEL, "reordering a tensor to row-major failed");
  }
  /* The blocked buffer goes back to the pool; the value keeps its place. */
  an_oexec_scratch_free(x, v->data, v->bytes);
  v->data = plain.data;
  v->bytes = plain.bytes;
  v->layout = NULL;
  return 0;
}
