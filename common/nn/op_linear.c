/* Linear (fully connected): y = x W^T + b with PyTorch's weight layout
 * [OUT, IN]; the input is flattened per sample.
 *
 * All three products run on oneDNN's matmul (brgemm kernels), which is
 * markedly faster here than its inner-product primitive on the paper's
 * 7840 x 15680 layer. Transposes cost nothing: they are strides in the
 * memory descriptors. The bias gradient is a column sum.
 *
 * With the model's bf16 precision the three products take bfloat16 inputs
 * (on CPUs with AMX or AVX512-BF16) and accumulate in float32: the master
 * weights, the gradients and the optimizer stay float32. The weights are
 * converted into the kernels' blocked formats once per step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/node.h"

typedef struct linear_impl {
  dnnl_primitive_t fwd, bwd_data, bwd_w;
  /* forward: x[B,IN] . Wt[IN,OUT] (+ b) -> y[B,OUT] */
  dnnl_memory_t f_src, f_w, f_b, f_dst;
  /* backward data: dy[B,OUT] . W[OUT,IN] -> dx[B,IN] */
  dnnl_memory_t d_src, d_w, d_dst;
  /* backward weights: dyT[OUT,B] . x[B,IN] -> dW[OUT,IN] */
  dnnl_memory_t w_src, w_w, w_dst;
  /* bf16 only: converted operands and the reorders that make them. One
   * plain bf16 copy of W serves both products that read it (as W and as
   * its transpose), so the 123M-weight layer is converted once per step. */
  int bf16;
  uint16_t *w16;          /* W [OUT][IN] in bfloat16 */
  void *x16, *xb16, *dy16; /* x plain, x in the weight-gradient kernel's format, dy */
  an_reorder_t x_to16, x_to_b16, dy_to16;
} linear_impl_t;

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
  n->fan_in = (int64_t)in;
  return 0;
}

static void linear_unplan(an_node_t *n) {
  linear_impl_t *c = n->impl;
  if (!c)
    return;
  dnnl_primitive_t prims[] = {c->fwd, c->bwd_data, c->bwd_w};
  dnnl_memory_t mems[] = {c->f_src, c->f_w, c->f_b,   c->f_dst, c->d_src,
                          c->d_w,   c->d_dst, c->w_src, c->w_w,   c->w_dst};
  an_engine_release(prims, sizeof prims / sizeof prims[0], mems, sizeof mems / sizeof mems[0]);
  an_reorder_destroy(&c->x_to16);
  an_reorder_destroy(&c->x_to_b16);
  an_reorder_destroy(&c->dy_to16);
  free(c->w16);
  free(c->x16);
  free(c->xb16);
  free(c->dy16);
  free(c);
  n->impl = NULL;
}

/* A 2-D descriptor, row-major (ab), its transpose view (ba), or "any". */
static void md2t(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, dnnl_data_type_t dt,
                 dnnl_format_tag_t tag) {
  dnnl_dims_t dims = {rows, cols};
  dnnl_memory_desc_init_by_tag(md, 2, dims, dt, tag);
}

static void md2(dnnl_memory_desc_t *md, int64_t rows, int64_t cols, int transposed) {
  md2t(md, rows, cols, dnnl_f32, transposed ? dnnl_ba : dnnl_ab);
}

/* A matmul primitive and memory objects for its operands, in the formats it
 * chose (operands given as "any" get the kernel's preferred blocking). */
static int matmul(an_engine_t *e, const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                  const dnnl_memory_desc_t *bias, const dnnl_memory_desc_t *c,
                  dnnl_primitive_t *prim, dnnl_memory_t *ma, dnnl_memory_t *mb,
                  dnnl_memory_t *mbias, dnnl_memory_t *mc) {
  dnnl_matmul_desc_t desc;
  dnnl_primitive_desc_t pd = NULL;
  int rc = AN_EMODEL;
  if (dnnl_matmul_desc_init(&desc, a, b, bias, c) != dnnl_success ||
      an_engine_primitive(e, &desc, NULL, prim, &pd) != 0)
    goto done;
  if (an_engine_memory(e, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), NULL, ma) ||
      an_engine_memory(e, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), NULL, mb) ||
      an_engine_memory(e, c, NULL, mc) || (bias && an_engine_memory(e, bias, NULL, mbias)))
    goto done;
  rc = 0;
done:
  if (pd)
    dnnl_primitive_desc_destroy(pd);
  return rc;
}

/* A bf16 buffer in the layout a matmul chose for an operand, and the
 * reorder that fills it from the float32 original. */
static int bf16_operand(an_engine_t *e, dnnl_primitive_t prim, int arg,
                        const dnnl_memory_desc_t *from, void **buf, an_reorder_t *r) {
  const_dnnl_primitive_desc_t pd;
  const dnnl_memory_desc_t *want;
  if (dnnl_primitive_get_primitive_desc(prim, &pd) != dnnl_success ||
      !(want = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg)))
    return AN_EMODEL;
  if (!(*buf = aligned_alloc(64, (dnnl_memory_desc_get_size(want) + 63) / 64 * 64)))
    return UV_ENOMEM;
  return an_reorder_init(e, r, from, want);
}

/* The three products in bf16; dst and bias stay float32 plain. */
static int linear_plan_bf16(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  linear_impl_t *c = n->impl;
  an_engine_t *e = &m->eng;
  int64_t in = (int64_t)an_numel3(n->in), out = n->d.out;
  dnnl_memory_desc_t a, b, bias, y, x32, dy32, dw;
  c->bf16 = 1;
  if (!(c->w16 = aligned_alloc(64, ((size_t)in * out * 2 + 63) / 64 * 64)))
    return UV_ENOMEM;
  md2t(&a, batch, in, dnnl_bf16, dnnl_ab);
  md2t(&b, in, out, dnnl_bf16, dnnl_ba); /* W16 seen as its transpose */
  md2(&bias, 1, out, 0);
  md2(&y, batch, out, 0);
  md2(&x32, batch, in, 0);
  if (matmul(e, &a, &b, n->b_count ? &bias : NULL, &y, &c->fwd, &c->f_src, &c->f_w, &c->f_b,
             &c->f_dst) ||
      bf16_operand(e, c->fwd, DNNL_ARG_SRC, &x32, &c->x16, &c->x_to16))
    return AN_EMODEL;
  if (!with_grad)
    return 0;
  md2(&dy32, batch, out, 0);
  md2t(&a, batch, out, dnnl_bf16, dnnl_ab);
  md2t(&b, out, in, dnnl_bf16, dnnl_ab); /* W16 as it is */
  if (matmul(e, &a, &b, NULL, &x32, &c->bwd_data, &c->d_src, &c->d_w, NULL, &c->d_dst) ||
      bf16_operand(e, c->bwd_data, DNNL_ARG_SRC, &dy32, &c->dy16, &c->dy_to16))
    return AN_EMODEL;
  /* dW = dy^T x: dy16 viewed transposed; x in the kernel's own format. */
  md2t(&a, out, batch, dnnl_bf16, dnnl_ba);
  md2t(&b, batch, in, dnnl_bf16, dnnl_format_tag_any);
  md2(&dw, out, in, 0);
  if (matmul(e, &a, &b, NULL, &dw, &c->bwd_w, &c->w_src, &c->w_w, NULL, &c->w_dst) ||
      bf16_operand(e, c->bwd_w, DNNL_ARG_WEIGHTS, &x32, &c->xb16, &c->x_to_b16))
    return AN_EMODEL;
  return 0;
}

static int linear_plan(an_model_t *m, an_node_t *n, int batch, int with_grad) {
  an_engine_t *e = &m->eng;
  int64_t in = (int64_t)an_numel3(n->in), out = n->d.out;
  dnnl_memory_desc_t x, wt, bias, y, dy, w, dyt, dw;
  linear_impl_t *c = calloc(1, sizeof *c);

  if (!c)
    return UV_ENOMEM;
  n->impl = c;
  if (m->precision == AN_PRECISION_BF16)
    return linear_plan_bf16(m, n, batch, with_grad);
  md2(&x, batch, in, 0);
  md2(&wt, in, out, 1); /* W [OUT][IN] seen as its transpose [IN][OUT] */
  md2(&bias, 1, out, 0);
  md2(&y, batch, out, 0);
  if (matmul(e, &x, &wt, n->b_count ? &bias : NULL, &y, &c->fwd, &c->f_src, &c->f_w, &c->f_b,
             &c->f_dst))
    return AN_EMODEL;
  if (!with_grad)
    return 0;
  md2(&dy, batch, out, 0);
  md2(&w, out, in, 0);
  md2(&dyt, out, batch, 1); /* dy [B][OUT] seen as [OUT][B] */
  md2(&dw, out, in, 0);
  if (matmul(e, &dy, &w, NULL, &x, &c->bwd_data, &c->d_src, &c->d_w, NULL, &c->d_dst) ||
      matmul(e, &dyt, &x, NULL, &dw, &c->bwd_w, &c->w_src, &c->w_w, NULL, &c->w_dst))
    return AN_EMODEL;
  return 0;
}

static int linear_forward(an_model_t *m, an_node_t *n, int train) {
  linear_impl_t *c = n->impl;
  dnnl_exec_arg_t args[5];
  int na = 0;
  (void)train;
  if (c->bf16) {
    int rc;
    if ((rc = an_reorder_run(&m->eng, &c->x_to16, n->x, c->x16)) != 0)
      return rc;
    an_bf16_from_f32(c->w16, m->params + n->w_off, n->w_count);
    dnnl_memory_set_data_handle(c->f_src, c->x16);
    dnnl_memory_set_data_handle(c->f_w, c->w16);
  } else {
    dnnl_memory_set_data_handle(c->f_src, (void *)n->x);
    dnnl_memory_set_data_handle(c->f_w, m->params + n->w_off);
  }
  dnnl_memory_set_data_handle(c->f_dst, n->y);
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->f_src};
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->f_w};
  if (n->b_count) {
    dnnl_memory_set_data_handle(c->f_b, m->params + n->b_off);
    args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, c->f_b};
  }
  args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->f_dst};
  return an_engine_exec(&m->eng, c->fwd, na, args);
}

static int linear_backward(an_model_t *m, an_node_t *n, float *dx) {
  linear_impl_t *c = n->impl;
  dnnl_exec_arg_t args[4];
  int rc, batch = m->batch, out = n->d.out;

  if (c->bf16) {
    if ((rc = an_reorder_run(&m->eng, &c->dy_to16, n->dy, c->dy16)) != 0 ||
        (rc = an_reorder_run(&m->eng, &c->x_to_b16, n->x, c->xb16)) != 0)
      return rc;
    dnnl_memory_set_data_handle(c->w_src, c->dy16);
    dnnl_memory_set_data_handle(c->w_w, c->xb16);
  } else {
    dnnl_memory_set_data_handle(c->w_src, n->dy);
    dnnl_memory_set_data_handle(c->w_w, (void *)n->x);
  }
  dnnl_memory_set_data_handle(c->w_dst, m->grads + n->w_off);
  args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->w_src};
  args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->w_w};
  args[2] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->w_dst};
  if ((rc = an_engine_exec(&m->eng, c->bwd_w, 3, args)) != 0)
    return rc;
  if (n->b_count) {
    float *db = m->grads + n->b_off;
    const float *dy = n->dy;
    memset(db, 0, (size_t)out * sizeof *db);
    for (int b = 0; b < batch; b++)
      for (int o = 0; o < out; o++)
        db[o] += dy[(size_t)b * out + o];
  }
  if (!dx)
    return 0;
  if (c->bf16) {
    /* w16 still holds this step's weights from the forward pass. */
    dnnl_memory_set_data_handle(c->d_src, c->dy16);
    dnnl_memory_set_data_handle(c->d_w, c->w16);
  } else {
    dnnl_memory_set_data_handle(c->d_src, n->dy);
    dnnl_memory_set_data_handle(c->d_w, m->params + n->w_off);
  }
  dnnl_memory_set_data_handle(c->d_dst, dx);
  args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, c->d_src};
  args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, c->d_w};
  args[2] = (dnnl_exec_arg_t){DNNL_ARG_DST, c->d_dst};
  return an_engine_exec(&m->eng, c->bwd_data, 3, args);
}

const an_op_t an_op_linear = {
    .name = "linear", .infer = linear_infer, .plan = linear_plan, .unplan = linear_unplan,
    .forward = linear_forward, .backward = linear_backward, .layout = AN_NCHW,
};
