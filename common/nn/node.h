/* Inside a model: the nodes of the layer graph and the operator table.
 * Internal to common/nn; see model.h for the public interface. */
#ifndef AN_NN_NODE_H
#define AN_NN_NODE_H

#include <stddef.h>
#include <stdint.h>

#include "common/nn/engine.h"
#include "common/nn/model.h"
#include "common/nn/rng.h"

typedef struct an_node an_node_t;

typedef struct an_op {
  const char *name;
  /* Output shape and parameter/state counts from the desc and input shape. */
  int (*infer)(an_node_t *n, char *err, size_t errlen);
  /* Creates primitives and per-node buffers for a batch size. Optional. */
  int (*plan)(an_model_t *m, an_node_t *n, int batch, int with_grad);
  /* Releases what plan made. Optional. */
  void (*unplan)(an_node_t *n);
  /* n->x (and n->x2) -> n->y. */
  int (*forward)(an_model_t *m, an_node_t *n, int train);
  /* n->dy -> parameter gradients and, if dx is non-NULL, d/d(input) into dx.
   * Overwrites, never accumulates. (add is routed by the model itself.) */
  int (*backward)(an_model_t *m, an_node_t *n, float *dx);
  /* The output is the input buffer itself (flatten, reshape). */
  int alias;
  /* The activation layout the op works in; AN_LAYOUT_ANY follows its input. */
  an_layout_t layout;
} an_op_t;

struct an_node {
  an_layer_desc_t d;
  char label[32], from[32], with[32]; /* owned copies of the desc's strings */
  const an_op_t *op;
  int input, input2;     /* node indices; -1 = the model input */
  int in[3], out[3];     /* per-sample C, H, W */
  size_t w_off, w_count; /* into the model's params/grads */
  size_t b_off, b_count;
  size_t st_off, st_count; /* into the model's state */
  int64_t fan_in;        /* for initialisation; 64-bit: big layers overflow int */
  int consumers;         /* how many nodes read this node's output */
  int grad_ready;        /* backward: dy already holds one contribution */
  const float *x, *x2;   /* inputs during a pass */
  float *y, *dy;         /* batch x out; owned by the model unless alias */
  an_layout_t layout;    /* of x (after conversion), y and dy */
  /* When the input arrives in another layout: a converted copy of it, the
   * gradient in this node's layout, and the reorders between the two. */
  int convert;
  float *xconv, *dxconv;
  an_reorder_t to_node, to_input;
  void *impl;            /* the op's planned state */
};

/* The model, visible to the ops. */
struct an_model {
  an_node_t *nodes;
  int n_nodes, cap_nodes;
  int in[3];
  float *params, *grads, *state;
  size_t n_params, n_state;
  int finalized;
  int batch, with_grad;  /* current plan */
  float *scratch;        /* batch x largest input: gradient accumulation */
  int out_convert;       /* the last layer is NHWC: convert for the caller */
  float *out_y, *out_dy; /* the caller's NCHW output and its gradient */
  an_reorder_t out_to_nchw, out_to_node;
  int input_grad_ready;  /* backward: the caller's dx holds a contribution */
  const float *x;        /* the current input */
  an_engine_t eng;
  int eng_ready;
  an_rng_t rng;          /* dropout masks */
  an_precision_t precision;
};

extern const an_op_t an_op_conv, an_op_convt, an_op_linear, an_op_relu, an_op_leaky_relu,
    an_op_sigmoid, an_op_tanh, an_op_maxpool, an_op_avgpool, an_op_gap, an_op_batchnorm,
    an_op_dropout, an_op_flatten, an_op_reshape, an_op_add;

static inline size_t an_numel3(const int s[3]) { return (size_t)s[0] * s[1] * s[2]; }

/* Hot per-element loops are compiled for AVX-512, AVX2 and baseline x86-64,
 * chosen at load time, so one binary runs everywhere and fast where it can. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define AN_HOT_LOOP __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define AN_HOT_LOOP
#endif

/* An aligned float buffer of n elements (64-byte aligned), or NULL. */
float *an_nn_alloc(size_t n);

#endif
