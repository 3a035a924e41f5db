/* Optimizers over a model's flat parameter buffer, with PyTorch's exact
 * update rules, so runs can be compared step for step. One fused pass over
 * (param, grad, state) per step: at 123M parameters the step is bound by
 * memory traffic, and each byte is read once. */
#ifndef AN_NN_OPTIM_H
#define AN_NN_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef enum an_optim_kind { AN_OPTIM_ADAM, AN_OPTIM_SGD } an_optim_kind_t;

typedef struct an_optim_params {
  an_optim_kind_t kind;
  float lr;
  float beta1, beta2, eps; /* Adam; 0 picks PyTorch's defaults 0.9, 0.999, 1e-8 */
  float momentum;          /* SGD */
  float weight_decay;      /* SGD and Adam (L2 added to the gradient, as torch.optim) */
} an_optim_params_t;

typedef struct an_optim an_optim_t;

/* An optimizer for `n` parameters. Its state (Adam's moments, SGD's
 * momentum buffer) is allocated here, once. */
int an_optim_new(const an_optim_params_t *p, size_t n, an_optim_t **out);
void an_optim_free(an_optim_t *o);

/* One update of params from grads. */
void an_optim_step(an_optim_t *o, float *params, const float *grads);

/* Changes the learning rate (schedules). */
void an_optim_set_lr(an_optim_t *o, float lr);

/* Cosine annealing without restarts (torch's CosineAnnealingLR with
 * eta_min 0 and T_max = total): the rate for step `step` (0-based) of
 * `total`, base * (1 + cos(pi * step / total)) / 2. */
float an_lr_cosine(float base, uint64_t step, uint64_t total);
uint64_t an_optim_steps(const an_optim_t *o);

/* The state a checkpoint must keep: the step count (Adam's bias correction)
 * and the moment buffers, n floats each: Adam's first and second moments,
 * or SGD's momentum buffer. Buffers are owned by the optimizer. */
void an_optim_set_steps(an_optim_t *o, uint64_t t);
int an_optim_moment_count(const an_optim_t *o);
float *an_optim_moment(an_optim_t *o, int i);

#endif
