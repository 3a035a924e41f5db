/* What Conv2d, ConvTranspose2d and Linear share: three oneDNN primitives
 * (forward, backward data, backward weights) over the same argument names,
 * so one forward and one backward serve all three. */
#include <stdlib.h>

#include "common/error.h"
#include "common/nn/node.h"

void an_wlayer_unplan(an_node_t *n) {
  an_wlayer_t *c = n->impl;
  if (!c)
    return;
  dnnl_primitive_t prims[] = {c->fwd, c->bwd_data, c->bwd_w};
  dnnl_memory_t mems[] = {c->src, c->w, c->b, c->dst, c->diff_src, c->diff_w, c->diff_b,
                          c->diff_dst};
  for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++)
    if (prims[i])
      dnnl_primitive_destroy(prims[i]);
  for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
    if (mems[i])
      dnnl_memory_destroy(mems[i]);
  free(c);
  n->impl = NULL;
}

int an_wlayer_memories(an_engine_t *e, an_wlayer_t *c, const dnnl_memory_desc_t *src,
                       const dnnl_memory_desc_t *w, const dnnl_memory_desc_t *b,
                       const dnnl_memory_desc_t *dst) {
  if (an_engine_memory(e, src, NULL, &c->src) || an_engine_memory(e, w, NULL, &c->w) ||
      an_engine_memory(e, b, NULL, &c->b) || an_engine_memory(e, dst, NULL, &c->dst) ||
      an_engine_memory(e, src, NULL, &c->diff_src) || an_engine_memory(e, w, NULL, &c->diff_w) ||
      an_engine_memory(e, b, NULL, &c->diff_b) || an_engine_memory(e, dst, NULL, &c->diff_dst))
    return AN_EMODEL;
  return 0;
}

int an_wlayer_forward(an_model_t *m, an_node_t *n, int train) {
  an_wlayer_t *c = n->impl;
  dnnl_exec_arg_t args[5];
  int na = 0;
  (void)train;
  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  dnnl_memory_set_data_handle(c->w, m->params + n->w_off);
  dnnl_memory_set_data_handle(c->dst, n->y);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w};
  if (n->b_count) {
    dnnl_memory_set_data_handle(c->b, m->params + n->b_off);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->b};
  }
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
  return an_engine_exec(&m->eng, c->fwd, na, args);
}

int an_wlayer_backward(an_model_t *m, an_node_t *n, float *dx) {
  an_wlayer_t *c = n->impl;
  dnnl_exec_arg_t args[6];
  int na = 0, rc;
  dnnl_memory_set_data_handle(c->diff_dst, n->dy);
  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  dnnl_memory_set_data_handle(c->diff_w, m->grads + n->w_off);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, c->diff_dst};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, c->diff_w};
  if (n->b_count) {
    dnnl_memory_set_data_handle(c->diff_b, m->grads + n->b_off);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, c->diff_b};
  }
  if ((rc = an_engine_exec(&m->eng, c->bwd_w, na, args)) != 0 || !dx)
    return rc; /* no input gradient wanted (first layer) */
  dnnl_memory_set_data_handle(c->w, m->params + n->w_off);
  dnnl_memory_set_data_handle(c->diff_src, dx);
  na = 0;
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, c->diff_dst};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, c->diff_src};
  return an_engine_exec(&m->eng, c->bwd_data, na, args);
}
