/* Conv2d and ConvTranspose2d on oneDNN, with PyTorch's weight layouts:
 * conv [OC, IC, K, K], transposed conv [IC, OC, K, K].
 *
 * Activations are channels-last (NHWC) and the weights are handed to the
 * kernels in whatever blocked format they prefer ("any"): the plain master
 * copy is reordered in before use and the weight gradient reordered out.
 * The weights are small, the reorders cheap; the direct kernels this allows
 * are several times faster than im2col on NCHW. */
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

typedef struct conv_impl {
  dnnl_primitive_t fwd, bwd_data, bwd_w;
  dnnl_memory_t src, w_fwd, w_bwd, b, dst, diff_src, diff_w, diff_b, diff_dst;
  float *w_fwd_buf, *w_bwd_buf, *diff_w_buf; /* weights in the kernels' formats */
  an_reorder_t w_to_fwd, w_to_bwd, dw_to_plain;
  int w_bwd_shared; /* backward data takes the forward's weight format */
} conv_impl_t;

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
  n->fan_in = (int64_t)n->in[0] * d->k * d->k;
  return 0;
}

static int convt_infer(an_node_t *n, char *err, size_t errlen) {
  const an_layer_desc_t *d = &n->d;
  int rc = conv_check(n, err, errlen);
  if (rc)
    return rc;
  int64_t oh = (int64_t)(n->in[1] - 1) * d->s - 2 * d->p + d->k;
  int64_t ow = (int64_t)(n->in[2] - 1) * d->s - 2 * d->p + d->k;
  if (oh > 65536 || ow > 65536) {
    snprintf(err, errlen, "convt: output %lldx%lld is too large", (long long)oh, (long long)ow);
    return AN_EMODEL;
  }
  n->out[0] = d->out;
  n->out[1] = (int)oh;
  n->out[2] = (int)ow;
  n->w_count = (size_t)n->in[0] * d->out * d->k * d->k;
  n->b_count = d->no_bias ? 0 : (size_t)d->out;
  /* PyTorch computes fan_in from weight dim 1, which is OC here. */
  n->fan_in = (int64_t)d->out * d->k * d->k;
  return 0;
}

static void conv_unplan(an_node_t *n) {
  conv_impl_t *c = n->impl;
  if (!c)
    return;
  dnnl_primitive_t prims[] = {c->fwd, c->bwd_data, c->bwd_w};
  dnnl_memory_t mems[] = {c->src,      c->w_fwd,  c->w_bwd,  c->b,       c->dst,
                          c->diff_src, c->diff_w, c->diff_b, c->diff_dst};
  an_engine_release(prims, sizeof prims / sizeof prims[0], mems, sizeof mems / sizeof mems[0]);
  an_reorder_destroy(&c->w_to_fwd);
  an_reorder_destroy(&c->w_to_bwd);
  an_reorder_destroy(&c->dw_to_plain);
  free(c->w_fwd_buf);
  free(c->w_bwd_buf);
  free(c->diff_w_buf);
  free(c);
  n->impl = NULL;
}

/* A buffer and memory object in the format a primitive chose, plus the
 * reorder from (or to) the plain PyTorch layout. */
static int conv_weight_slot(an_engine_t *e, const dnnl_memory_desc_t *chosen,
                            const dnnl_memory_desc_t *plain, int into_chosen, float **buf,
                            dnnl_memory_t *mem, an_reorder_t *reorder) {
  size_t bytes = dnnl_memory_desc_get_size(chosen);
  if (!(*buf = an_nn_alloc(bytes / sizeof(float) + 1)))
    return UV_ENOMEM;
  if (an_engine_memory(e, chosen, *buf, mem) != 0)
    return AN_EMODEL;
  return into_chosen ? an_reorder_init(e, reorder, plain, chosen)
                     : an_reorder_init(e, reorder, chosen, plain);
}

/* The op descriptors of one direction, for both kinds. */
static int conv_desc(int transposed, int dir, void *desc, const dnnl_memory_desc_t *src,
                     const dnnl_memory_desc_t *w, const dnnl_memory_desc_t *b,
                     const dnnl_memory_desc_t *dst, const dnnl_dims_t strides,
                     const dnnl_dims_t pl, const dnnl_dims_t pr) {
  dnnl_status_t st;
  if (transposed)
    st = dir == 0   ? dnnl_deconvolution_forward_desc_init(desc, dnnl_forward_training,
                                                           dnnl_deconvolution_direct, src, w, b,
                                                           dst, strides, pl, pr)
         : dir == 1 ? dnnl_deconvolution_backward_data_desc_init(
                          desc, dnnl_deconvolution_direct, src, w, dst, strides, pl, pr)
                    : dnnl_deconvolution_backward_weights_desc_init(
                          desc, dnnl_deconvolution_direct, src, w, b, dst, strides, pl, pr);
  else
    st = dir == 0   ? dnnl_convolution_forward_desc_init(desc, dnnl_forward_training,
                                                         dnnl_convolution_direct, src, w, b,
                                                         dst, strides, pl, pr)
         : dir == 1 ? dnnl_convolution_backward_data_desc_init(
                          desc, dnnl_convolution_direct, src, w, dst, strides, pl, pr)
                    : dnnl_convolution_backward_weights_desc_init(
                          desc, dnnl_convolution_direct, src, w, b, dst, strides, pl, pr);
  return st == dnnl_success ? 0 : AN_EMODEL;
}

static int conv_plan_kind(an_model_t *m, an_node_t *n, int batch, int with_grad,
                          int transposed) {
  const an_layer_desc_t *d = &n->d;
  an_engine_t *e = &m->eng;
  dnnl_memory_desc_t src, w_any, w_plain, b, dst;
  union {
    dnnl_convolution_desc_t conv;
    dnnl_deconvolution_desc_t deconv;
  } desc;
  dnnl_primitive_desc_t fwd_pd = NULL, bwd_pd = NULL;
  int64_t sdims[4] = {batch, n->in[0], n->in[1], n->in[2]};
  int64_t ddims[4] = {batch, n->out[0], n->out[1], n->out[2]};
  int64_t bdims[1] = {d->out};
  dnnl_dims_t wdims = {d->out, n->in[0], d->k, d->k}; /* oneDNN's logical (OC, IC, K, K) */
  dnnl_dims_t strides = {d->s, d->s}, pl = {d->p, d->p}, pr = {0};
  const dnnl_memory_desc_t *bmd = d->no_bias ? NULL : &b;
  conv_impl_t *c = calloc(1, sizeof *c);
  int rc = AN_EMODEL;

  if (!c)
    return UV_ENOMEM;
  n->impl = c;
  an_engine_md4(&src, sdims, n->layout);
  an_engine_md4(&dst, ddims, n->layout);
  an_engine_md(&b, 1, bdims);
  dnnl_memory_desc_init_by_tag(&w_any, 4, wdims, dnnl_f32, dnnl_format_tag_any);
  /* Master copy: conv OIHW; transposed conv IOHW (PyTorch's layouts). */
  dnnl_memory_desc_init_by_tag(&w_plain, 4, wdims, dnnl_f32, transposed ? dnnl_iohw : dnnl_oihw);
  if (transposed) {
    pr[0] = pr[1] = d->p;
  } else {
    /* Right padding that makes the floor-division output size exact; it is
     * negative when the stride skips trailing input (allowed by oneDNN). */
    pr[0] = (int64_t)(n->out[1] - 1) * d->s + d->k - n->in[1] - d->p;
    pr[1] = (int64_t)(n->out[2] - 1) * d->s + d->k - n->in[2] - d->p;
  }

  if (conv_desc(transposed, 0, &desc, &src, &w_any, bmd, &dst, strides, pl, pr) ||
      an_engine_primitive(e, &desc, NULL, &c->fwd, &fwd_pd) ||
      conv_weight_slot(e, dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_weights_md, 0),
                       &w_plain, 1, &c->w_fwd_buf, &c->w_fwd, &c->w_to_fwd))
    goto done;
  if (with_grad) {
    const dnnl_memory_desc_t *wq;
    if (conv_desc(transposed, 1, &desc, &src, &w_any, NULL, &dst, strides, pl, pr) ||
        an_engine_primitive(e, &desc, fwd_pd, &c->bwd_data, &bwd_pd))
      goto done;
    wq = dnnl_primitive_desc_query_md(bwd_pd, dnnl_query_weights_md, 0);
    c->w_bwd_shared =
        dnnl_memory_desc_equal(wq, dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_weights_md, 0));
    if (!c->w_bwd_shared &&
        conv_weight_slot(e, wq, &w_plain, 1, &c->w_bwd_buf, &c->w_bwd, &c->w_to_bwd))
      goto done;
    dnnl_primitive_desc_destroy(bwd_pd);
    bwd_pd = NULL;
    if (conv_desc(transposed, 2, &desc, &src, &w_any, bmd, &dst, strides, pl, pr) ||
        an_engine_primitive(e, &desc, fwd_pd, &c->bwd_w, &bwd_pd) ||
        conv_weight_slot(e, dnnl_primitive_desc_query_md(bwd_pd, dnnl_query_diff_weights_md, 0),
                         &w_plain, 0, &c->diff_w_buf, &c->diff_w, &c->dw_to_plain))
      goto done;
  }
  if (an_engine_memory(e, &src, NULL, &c->src) || an_engine_memory(e, &b, NULL, &c->b) ||
      an_engine_memory(e, &dst, NULL, &c->dst) || an_engine_memory(e, &src, NULL, &c->diff_src) ||
      an_engine_memory(e, &b, NULL, &c->diff_b) || an_engine_memory(e, &dst, NULL, &c->diff_dst))
    goto done;
  rc = 0;
done:
  if (fwd_pd)
    dnnl_primitive_desc_destroy(fwd_pd);
  if (bwd_pd)
    dnnl_primitive_desc_destroy(bwd_pd);
  return rc;
}

static int conv_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  return conv_plan_kind(m, n, batch, with_grad, 0);
}

static int convt_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  return conv_plan_kind(m, n, batch, with_grad, 1);
}

static int conv_forward(an_model_t *m, an_node_t *n, int train) {
  conv_impl_t *c = n->impl;
  dnnl_exec_arg_t args[5];
  int na = 0, rc;
  (void)train;
  if ((rc = an_reorder_run(&m->eng, &c->w_to_fwd, m->params + n->w_off, c->w_fwd_buf)) != 0)
    return rc;
  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  dnnl_memory_set_data_handle(c->dst, n->y);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w_fwd};
  if (n->b_count) {
    dnnl_memory_set_data_handle(c->b, m->params + n->b_off);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->b};
  }
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
  return an_engine_exec(&m->eng, c->fwd, na, args);
}

static int conv_backward(an_model_t *m, an_node_t *n, float *dx) {
  conv_impl_t *c = n->impl;
  dnnl_exec_arg_t args[6];
  int na = 0, rc;
  dnnl_memory_set_data_handle(c->diff_dst, n->dy);
  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, c->diff_dst};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, c->diff_w};
  if (n->b_count) {
    dnnl_memory_set_data_handle(c->diff_b, m->grads + n->b_off);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, c->diff_b};
  }
  if ((rc = an_engine_exec(&m->eng, c->bwd_w, na, args)) != 0 ||
      (rc = an_reorder_run(&m->eng, &c->dw_to_plain, c->diff_w_buf, m->grads + n->w_off)) != 0 ||
      !dx)
    return rc; /* no input gradient wanted (first layer) */
  /* The forward put the current weights in w_fwd_buf already. */
  if (!c->w_bwd_shared &&
      (rc = an_reorder_run(&m->eng, &c->w_to_bwd, m->params + n->w_off, c->w_bwd_buf)) != 0)
    return rc;
  dnnl_memory_set_data_handle(c->diff_src, dx);
  na = 0;
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, c->diff_dst};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w_bwd_shared ? c->w_fwd : c->w_bwd};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, c->diff_src};
  return an_engine_exec(&m->eng, c->bwd_data, na, args);
}

const an_op_t an_op_conv = {
    .name = "conv", .infer = conv_infer, .plan = conv_plan, .unplan = conv_unplan,
    .forward = conv_forward, .backward = conv_backward, .layout = AN_NHWC,
};

const an_op_t an_op_convt = {
    .name = "convt", .infer = convt_infer, .plan = convt_plan, .unplan = conv_unplan,
    .forward = conv_forward, .backward = conv_backward, .layout = AN_NHWC,
};
