/* MaxPool2d, AvgPool2d (padding counted, PyTorch's default) and global
 * average pooling, on oneDNN. Max pooling keeps oneDNN's workspace (argmax)
 * between forward and backward. */
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

typedef struct pool_impl {
  dnnl_primitive_t fwd, bwd;
  dnnl_memory_t src, dst, diff_src, diff_dst, ws;
  void *ws_buf;
} pool_impl_t;

static void pool_geometry(const an_node_t *n, int64_t k[2], int64_t s[2], int64_t p[2]) {
  if (n->d.kind == AN_OP_GAP) {
    k[0] = s[0] = n->in[1];
    k[1] = s[1] = n->in[2];
    p[0] = p[1] = 0;
  } else {
    k[0] = k[1] = n->d.k;
    s[0] = s[1] = n->d.s ? n->d.s : n->d.k;
    p[0] = p[1] = n->d.p;
  }
}

static int pool_infer(an_node_t *n, char *err, size_t errlen) {
  int64_t k[2], s[2], p[2];
  if (n->d.kind != AN_OP_GAP) {
    if (n->d.k <= 0 || n->d.k > 64 || n->d.s < 0 || n->d.s > 64 || n->d.p < 0 ||
        2 * n->d.p > n->d.k) {
      snprintf(err, errlen, "%s: needs 0 < k <= 64, 0 <= s <= 64, 0 <= p <= k/2", n->op->name);
      return AN_EMODEL;
    }
    if (!n->d.s)
      n->d.s = n->d.k; /* PyTorch: stride defaults to the kernel */
  }
  pool_geometry(n, k, s, p);
  if (n->in[1] + 2 * p[0] < k[0] || n->in[2] + 2 * p[1] < k[1]) {
    snprintf(err, errlen, "%s: kernel %lldx%lld does not fit input %dx%d", n->op->name,
             (long long)k[0], (long long)k[1], n->in[1], n->in[2]);
    return AN_EMODEL;
  }
  n->out[0] = n->in[0];
  n->out[1] = (int)((n->in[1] + 2 * p[0] - k[0]) / s[0] + 1);
  n->out[2] = (int)((n->in[2] + 2 * p[1] - k[1]) / s[1] + 1);
  return 0;
}

static void pool_unplan(an_node_t *n) {
  pool_impl_t *c = n->impl;
  if (!c)
    return;
  dnnl_primitive_t prims[] = {c->fwd, c->bwd};
  dnnl_memory_t mems[] = {c->src, c->dst, c->diff_src, c->diff_dst, c->ws};
  an_engine_release(prims, 2, mems, sizeof mems / sizeof mems[0]);
  free(c->ws_buf);
  free(c);
  n->impl = NULL;
}

static int pool_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  an_engine_t *e = &m->eng;
  dnnl_alg_kind_t alg = n->d.kind == AN_OP_MAXPOOL ? dnnl_pooling_max
                                                   : dnnl_pooling_avg_include_padding;
  int64_t sdims[4] = {batch, n->in[0], n->in[1], n->in[2]};
  int64_t ddims[4] = {batch, n->out[0], n->out[1], n->out[2]};
  dnnl_dims_t k = {0}, s = {0}, pl = {0}, pr = {0};
  dnnl_memory_desc_t src, dst;
  dnnl_pooling_desc_t pd;
  dnnl_primitive_desc_t fwd_pd = NULL;
  const dnnl_memory_desc_t *ws;
  pool_impl_t *c = calloc(1, sizeof *c);
  int rc = AN_EMODEL;

  if (!c)
    return UV_ENOMEM;
  n->impl = c;
  pool_geometry(n, k, s, pl);
  for (int i = 0; i < 2; i++)
    pr[i] = (int64_t)(n->out[1 + i] - 1) * s[i] + k[i] - n->in[1 + i] - pl[i];
  an_engine_md4(&src, sdims, n->layout);
  an_engine_md4(&dst, ddims, n->layout);
  if (dnnl_pooling_forward_desc_init(&pd, dnnl_forward_training, alg, &src, &dst, s, k, pl,
                                     pr) != dnnl_success ||
      an_engine_primitive(e, &pd, NULL, &c->fwd, &fwd_pd) != 0)
    goto done;
  if (with_grad &&
      (dnnl_pooling_backward_desc_init(&pd, alg, &src, &dst, s, k, pl, pr) != dnnl_success ||
       an_engine_primitive(e, &pd, fwd_pd, &c->bwd, NULL) != 0))
    goto done;
  ws = dnnl_primitive_desc_query_md(fwd_pd, dnnl_query_workspace_md, 0);
  if (ws && dnnl_memory_desc_get_size(ws) > 0) {
    c->ws_buf = aligned_alloc(64, (dnnl_memory_desc_get_size(ws) + 63) / 64 * 64);
    if (!c->ws_buf || an_engine_memory(e, ws, c->ws_buf, &c->ws) != 0)
      goto done;
  }
  if (an_engine_memory(e, &src, NULL, &c->src) || an_engine_memory(e, &dst, NULL, &c->dst) ||
      an_engine_memory(e, &src, NULL, &c->diff_src) ||
      an_engine_memory(e, &dst, NULL, &c->diff_dst))
    goto done;
  rc = 0;
done:
  if (fwd_pd)
    dnnl_primitive_desc_destroy(fwd_pd);
  return rc;
}

static int pool_forward(an_model_t *m, an_node_t *n, int train) {
  pool_impl_t *c = n->impl;
  dnnl_exec_arg_t args[4];
  int na = 0;
  (void)train;
  dnnl_memory_set_data_handle(c->src, (void *)n->x);
  dnnl_memory_set_data_handle(c->dst, n->y);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->dst};
  if (c->ws)
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, c->ws};
  return an_engine_exec(&m->eng, c->fwd, na, args);
}

static int pool_backward(an_model_t *m, an_node_t *n, float *dx) {
  pool_impl_t *c = n->impl;
  dnnl_exec_arg_t args[4];
  int na = 0;
  if (!dx)
    return 0;
  dnnl_memory_set_data_handle(c->diff_dst, n->dy);
  dnnl_memory_set_data_handle(c->diff_src, dx);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, c->diff_dst};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, c->diff_src};
  if (c->ws)
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WORKSPACE, c->ws};
  return an_engine_exec(&m->eng, c->bwd, na, args);
}

const an_op_t an_op_maxpool = {
    .name = "maxpool", .infer = pool_infer, .plan = pool_plan, .unplan = pool_unplan,
    .forward = pool_forward, .backward = pool_backward, .layout = AN_NHWC,
};
const an_op_t an_op_avgpool = {
    .name = "avgpool", .infer = pool_infer, .plan = pool_plan, .unplan = pool_unplan,
    .forward = pool_forward, .backward = pool_backward, .layout = AN_NHWC,
};
const an_op_t an_op_gap = {
    .name = "gap", .infer = pool_infer, .plan = pool_plan, .unplan = pool_unplan,
    .forward = pool_forward, .backward = pool_backward, .layout = AN_NHWC,
};
