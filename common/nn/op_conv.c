/* Conv2d and ConvTranspose2d on oneDNN, with PyTorch's weight layouts:
 * conv [OC, IC, K, K], transposed conv [IC, OC, K, K]. */
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

static int conv_check(an_node_t *n, char *err, size_t errlen) {
  const an_layer_desc_t *d = &n->d;
  if (d->out <= 0 || d->out > 65536 || d->k <= 0 || d->k > 64 || d->s <= 0 || d->s > 64 ||
      d->p < 0 || d->p >= 64) {
    snprintf(err, errlen, "%s: needs out > 0, 0 < k <= 64, 0 < s <= 64, 0 <= p < 64",
             n->op->name);
    return AN_EMODEL;
  }
  return 0;
}

static int conv_infer(an_node_t *n, char *err, size_t errlen) {
  const an_layer_desc_t *d = &n->d;
  int rc = conv_check(n, err, errlen);
  if (rc)
    return rc;
  if (n->in[1] + 2 * d->p < d->k || n->in[2] + 2 * d->p < d->k) {
    snprintf(err, errlen, "conv: kernel %d does not fit input %dx%d with padding %d", d->k,
             n->in[1], n->in[2], d->p);
    return AN_EMODEL;
  }
  n->out[0] = d->out;
  n->out[1] = (n->in[1] + 2 * d->p - d->k) / d->s + 1;
  n->out[2] = (n->in[2] + 2 * d->p - d->k) / d->s + 1;
  n->w_count = (size_t)d->out * n->in[0] * d->k * d->k;
  n->b_count = d->no_bias ? 0 : (size_t)d->out;
  n->fan_in = n->in[0] * d->k * d->k;
  return 0;
}

static int convt_infer(an_node_t *n, char *err, size_t errlen) {
  const an_layer_desc_t *d = &n->d;
  int rc = conv_check(n, err, errlen);
  if (rc)
    return rc;
  n->out[0] = d->out;
  n->out[1] = (n->in[1] - 1) * d->s - 2 * d->p + d->k;
  n->out[2] = (n->in[2] - 1) * d->s - 2 * d->p + d->k;
  n->w_count = (size_t)n->in[0] * d->out * d->k * d->k;
  n->b_count = d->no_bias ? 0 : (size_t)d->out;
  /* PyTorch computes fan_in from weight dim 1, which is OC here. */
  n->fan_in = d->out * d->k * d->k;
  return 0;
}

static int conv_plan_kind(an_model_t *m, an_node_t *n, int batch, int with_grad, int transposed) {
  const an_layer_desc_t *d = &n->d;
  an_engine_t *e = &m->eng;
  dnnl_memory_desc_t src, w, b, dst;
  dnnl_convolution_desc_t cd;
  dnnl_deconvolution_desc_t dd;
  dnnl_primitive_desc_t fwd_pd = NULL;
  int64_t sdims[4] = {batch, n->in[0], n->in[1], n->in[2]};
  int64_t ddims[4] = {batch, n->out[0], n->out[1], n->out[2]};
  dnnl_dims_t wdims = {d->out, n->in[0], d->k, d->k}; /* oneDNN's logical (OC, IC, K, K) */
  int64_t bdims[1] = {d->out};
  dnnl_dims_t strides = {d->s, d->s}, pl = {d->p, d->p}, pr = {0};
  const dnnl_memory_desc_t *bmd = d->no_bias ? NULL : &b;
  an_wlayer_t *c = calloc(1, sizeof *c);
  int rc = AN_EMODEL;

  if (!c)
    return UV_ENOMEM;
  n->impl = c;
  an_engine_md(&src, 4, sdims);
  an_engine_md(&dst, 4, ddims);
  an_engine_md(&b, 1, bdims);
  /* Storage order: conv OIHW; transposed conv IOHW (PyTorch's layouts). */
  dnnl_memory_desc_init_by_tag(&w, 4, wdims, dnnl_f32, transposed ? dnnl_iohw : dnnl_oihw);
  if (transposed) {
    pr[0] = pr[1] = d->p;
  } else {
    /* Right padding that makes the floor-division output size exact; it is
     * negative when the stride skips trailing input (allowed by oneDNN). */
    pr[0] = (int64_t)(n->out[1] - 1) * d->s + d->k - n->in[1] - d->p;
    pr[1] = (int64_t)(n->out[2] - 1) * d->s + d->k - n->in[2] - d->p;
  }

  if (transposed) {
    if (dnnl_deconvolution_forward_desc_init(&dd, dnnl_forward_training,
                                             dnnl_deconvolution_direct, &src, &w, bmd, &dst,
                                             strides, pl, pr) != dnnl_success ||
        an_engine_primitive(e, &dd, NULL, &c->fwd, &fwd_pd) != 0)
      goto done;
  } else {
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct,
                                           &src, &w, bmd, &dst, strides, pl,
                                           pr) != dnnl_success ||
        an_engine_primitive(e, &cd, NULL, &c->fwd, &fwd_pd) != 0)
      goto done;
  }
  if (with_grad) {
    if (transposed) {
      if (dnnl_deconvolution_backward_data_desc_init(&dd, dnnl_deconvolution_direct, &src, &w,
                                                     &dst, strides, pl, pr) != dnnl_success ||
          an_engine_primitive(e, &dd, fwd_pd, &c->bwd_data, NULL) != 0 ||
          dnnl_deconvolution_backward_weights_desc_init(&dd, dnnl_deconvolution_direct, &src,
                                                        &w, bmd, &dst, strides, pl,
                                                        pr) != dnnl_success ||
          an_engine_primitive(e, &dd, fwd_pd, &c->bwd_w, NULL) != 0)
        goto done;
    } else {
      if (dnnl_convolution_backward_data_desc_init(&cd, dnnl_convolution_direct, &src, &w, &dst,
                                                   strides, pl, pr) != dnnl_success ||
          an_engine_primitive(e, &cd, fwd_pd, &c->bwd_data, NULL) != 0 ||
          dnnl_convolution_backward_weights_desc_init(&cd, dnnl_convolution_direct, &src, &w,
                                                      bmd, &dst, strides, pl,
                                                      pr) != dnnl_success ||
          an_engine_primitive(e, &cd, fwd_pd, &c->bwd_w, NULL) != 0)
        goto done;
    }
  }
  if (an_wlayer_memories(e, c, &src, &w, &b, &dst) != 0)
    goto done;
  rc = 0;
done:
  if (fwd_pd)
    dnnl_primitive_desc_destroy(fwd_pd);
  return rc;
}

static int conv_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  return conv_plan_kind(m, n, batch, with_grad, 0);
}

static int convt_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  return conv_plan_kind(m, n, batch, with_grad, 1);
}

const an_op_t an_op_conv = {
    .name = "conv", .infer = conv_infer, .plan = conv_plan, .unplan = an_wlayer_unplan,
    .forward = an_wlayer_forward, .backward = an_wlayer_backward,
};

const an_op_t an_op_convt = {
    .name = "convt", .infer = convt_infer, .plan = convt_plan, .unplan = an_wlayer_unplan,
    .forward = an_wlayer_forward, .backward = an_wlayer_backward,
};
