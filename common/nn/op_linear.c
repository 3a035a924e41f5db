/* Linear (fully connected) on oneDNN's inner product: y = x W^T + b with
 * PyTorch's weight layout [OUT, IN]; the input is flattened per sample. */
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

static int linear_infer(an_node_t *n, char *err, size_t errlen) {
  size_t in = an_numel3(n->in);
  if (n->d.out <= 0 || n->d.out > (1 << 24)) {
    snprintf(err, errlen, "linear: needs 0 < out <= 16777216");
    return AN_EMODEL;
  }
  if (in * (size_t)n->d.out > ((size_t)1 << 32)) {
    snprintf(err, errlen, "linear: %zu x %d weights are too many", in, n->d.out);
    return AN_EMODEL;
  }
  n->out[0] = n->d.out;
  n->out[1] = n->out[2] = 1;
  n->w_count = in * (size_t)n->d.out;
  n->b_count = n->d.no_bias ? 0 : (size_t)n->d.out;
  n->fan_in = (int)in;
  return 0;
}

static int linear_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  an_engine_t *e = &m->eng;
  dnnl_memory_desc_t src, w, b, dst;
  dnnl_inner_product_desc_t ipd;
  dnnl_primitive_desc_t fwd_pd = NULL;
  int64_t in = (int64_t)an_numel3(n->in);
  int64_t sdims[2] = {batch, in}, wdims[2] = {n->d.out, in}, bdims[1] = {n->d.out};
  int64_t ddims[2] = {batch, n->d.out};
  const dnnl_memory_desc_t *bmd = n->d.no_bias ? NULL : &b;
  an_wlayer_t *c = calloc(1, sizeof *c);
  int rc = AN_EMODEL;

  if (!c)
    return UV_ENOMEM;
  n->impl = c;
  an_engine_md(&src, 2, sdims);
  an_engine_md(&w, 2, wdims);
  an_engine_md(&b, 1, bdims);
  an_engine_md(&dst, 2, ddims);
  if (dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_training, &src, &w, bmd, &dst) !=
          dnnl_success ||
      an_engine_primitive(e, &ipd, NULL, &c->fwd, &fwd_pd) != 0)
    goto done;
  if (with_grad &&
      (dnnl_inner_product_backward_data_desc_init(&ipd, &src, &w, &dst) != dnnl_success ||
       an_engine_primitive(e, &ipd, fwd_pd, &c->bwd_data, NULL) != 0 ||
       dnnl_inner_product_backward_weights_desc_init(&ipd, &src, &w, bmd, &dst) !=
           dnnl_success ||
       an_engine_primitive(e, &ipd, fwd_pd, &c->bwd_w, NULL) != 0))
    goto done;
  if (an_wlayer_memories(e, c, &src, &w, &b, &dst) != 0)
    goto done;
  rc = 0;
done:
  if (fwd_pd)
    dnnl_primitive_desc_destroy(fwd_pd);
  return rc;
}

const an_op_t an_op_linear = {
    .name = "linear", .infer = linear_infer, .plan = linear_plan, .unplan = an_wlayer_unplan,
    .forward = an_wlayer_forward, .backward = an_wlayer_backward,
};
