/* BatchNorm2d on oneDNN. Training uses batch statistics and updates the
 * running ones as PyTorch does (momentum-weighted, unbiased variance);
 * inference uses the running statistics. Scale and shift are the trained
 * parameters (weights and bias); running mean and variance are state. */
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

typedef struct bn_impl {
  dnnl_primitive_t fwd_train, fwd_infer, bwd;
  dnnl_memory_t src, dst, diff_src, diff_dst, scale, shift, diff_scale, diff_shift, mean, var;
  float *batch_mean, *batch_var; /* statistics of the last training batch */
} bn_impl_t;

static int bn_infer(an_node_t *n, char *err, size_t errlen) {
  if (n->d.alpha == 0)
    n->d.alpha = 1e-5f;
  if (n->d.momentum == 0)
    n->d.momentum = 0.1f;
  if (!(n->d.alpha > 0 && n->d.alpha < 1) || !(n->d.momentum > 0 && n->d.momentum <= 1)) {
    snprintf(err, errlen, "batchnorm: needs 0 < eps < 1 and 0 < momentum <= 1");
    return AN_EMODEL;
  }
  n->out[0] = n->in[0];
  n->out[1] = n->in[1];
  n->out[2] = n->in[2];
  n->w_count = n->b_count = (size_t)n->in[0];
  n->st_count = 2 * (size_t)n->in[0]; /* running mean, then running variance */
  n->fan_in = 1;
  return 0;
}

static void bn_unplan(an_node_t *n) {
  bn_impl_t *c = n->impl;
  if (!c)
    return;
  dnnl_primitive_t prims[] = {c->fwd_train, c->fwd_infer, c->bwd};
  dnnl_memory_t mems[] = {c->src,        c->dst,        c->diff_src, c->diff_dst, c->scale,
                          c->shift,      c->diff_scale, c->diff_shift, c->mean,   c->var};
  an_engine_release(prims, sizeof prims / sizeof prims[0], mems, sizeof mems / sizeof mems[0]);
  free(c->batch_mean);
  free(c->batch_var);
  free(c);
  n->impl = NULL;
}

#define AN_BN_FLAGS (dnnl_use_scale | dnnl_use_shift)

static int bn_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  an_engine_t *e = &m->eng;
  int64_t dims[4] = {batch, n->in[0], n->in[1], n->in[2]}, cdims[1] = {n->in[0]};
  dnnl_memory_desc_t data, chan;
  dnnl_batch_normalization_desc_t bd;
  dnnl_primitive_desc_t fwd_pd = NULL;
  float eps = n->d.alpha;
  bn_impl_t *c = calloc(1, sizeof *c);
  int rc = AN_EMODEL;

  if (!c)
    return UV_ENOMEM;
  n->impl = c;
  an_engine_md4(&data, dims, n->layout);
  an_engine_md(&chan, 1, cdims);
  if (dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &data, eps,
                                                 AN_BN_FLAGS | dnnl_use_global_stats) !=
          dnnl_success ||
      an_engine_primitive(e, &bd, NULL, &c->fwd_infer, NULL) != 0)
    goto done;
  if (with_grad) {
    if (dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_training, &data, eps,
                                                   AN_BN_FLAGS) != dnnl_success ||
        an_engine_primitive(e, &bd, NULL, &c->fwd_train, &fwd_pd) != 0 ||
        dnnl_batch_normalization_backward_desc_init(&bd, dnnl_backward, &data, &data, eps,
                                                    AN_BN_FLAGS) != dnnl_success ||
        an_engine_primitive(e, &bd, fwd_pd, &c->bwd, NULL) != 0)
      goto done;
    c->batch_mean = an_nn_alloc((size_t)n->in[0]);
    c->batch_var = an_nn_alloc((size_t)n->in[0]);
    if (!c->batch_mean || !c->batch_var)
      goto done;
  }
  dnnl_memory_t *data_mems[] = {&c->src, &c->dst, &c->diff_src, &c->diff_dst};
  dnnl_memory_t *chan_mems[] = {&c->scale, &c->shift, &c->diff_scale, &c->diff_shift,
                                &c->mean,  &c->var};
  for (size_t i = 0; i < 4; i++)
    if (an_engine_memory(e, &data, NULL, data_mems[i]) != 0)
      goto done;
  for (size_t i = 0; i < 6; i++)
    if (an_engine_memory(e, &chan, NULL, chan_mems[i]) != 0)
      goto done;
  rc = 0;
done:
  if (fwd_pd)
    dnnl_primitive_desc_destroy(fwd_pd);
  return rc;
}

static int bn_forward(an_model_t *m, an_node_t *n, int train) {
  bn_impl_t *c = n->impl;
  size_t ch = (size_t)n->in[0];
  float *running_mean = m->state + n->st_off, *running_var = running_mean + ch;
  dnnl_exec_arg_t args[7];
  int rc;

  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  dnnl_memory_set_data_handle(c->dst, n->y);
  dnnl_memory_set_data_handle(c->scale, m->params + n->w_off);
  dnnl_memory_set_data_handle(c->shift, m->params + n->b_off);
  dnnl_memory_set_data_handle(c->mean, train ? c->batch_mean : running_mean);
  dnnl_memory_set_data_handle(c->var, train ? c->batch_var : running_var);
  args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
  args[2] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, c->scale};
  args[3] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, c->shift};
  args[4] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, c->mean};
  args[5] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, c->var};
  if ((rc = an_engine_exec(&m->eng, train ? c->fwd_train : c->fwd_infer, 6, args)) != 0 ||
      !train)
    return rc;
  /* PyTorch's running statistics: variance with Bessel's correction. */
  double count = (double)m->batch * n->in[1] * n->in[2];
  double unbias = count > 1 ? count / (count - 1) : 1.0;
  float mom = n->d.momentum;
  for (size_t i = 0; i < ch; i++) {
    running_mean[i] = (1 - mom) * running_mean[i] + mom * c->batch_mean[i];
    running_var[i] = (1 - mom) * running_var[i] + mom * (float)(c->batch_var[i] * unbias);
  }
  return 0;
}

static int bn_backward(an_model_t *m, an_node_t *n, float *dx) {
  bn_impl_t *c = n->impl;
  dnnl_exec_arg_t args[10];
  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  dnnl_memory_set_data_handle(c->diff_dst, n->dy);
  /* oneDNN always computes the input gradient; scratch takes it if unwanted. */
  dnnl_memory_set_data_handle(c->diff_src, dx ? dx : m->scratch);
  dnnl_memory_set_data_handle(c->scale, m->params + n->w_off);
  dnnl_memory_set_data_handle(c->mean, c->batch_mean);
  dnnl_memory_set_data_handle(c->var, c->batch_var);
  dnnl_memory_set_data_handle(c->diff_scale, m->grads + n->w_off);
  dnnl_memory_set_data_handle(c->diff_shift, m->grads + n->b_off);
  args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[1] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, c->mean};
  args[2] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, c->var};
  args[3] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, c->diff_dst};
  args[4] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, c->scale};
  args[5] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, c->diff_src};
  args[6] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SCALE, c->diff_scale};
  args[7] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SHIFT, c->diff_shift};
  dnnl_memory_set_data_handle(c->shift, m->params + n->b_off);
  args[8] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, c->shift};
  return an_engine_exec(&m->eng, c->bwd, 9, args);
}

const an_op_t an_op_batchnorm = {
    .name = "batchnorm", .infer = bn_infer, .plan = bn_plan, .unplan = bn_unplan,
    .forward = bn_forward, .backward = bn_backward, .layout = AN_NHWC,
};
