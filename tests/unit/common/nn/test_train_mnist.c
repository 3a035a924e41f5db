/* Training smoke test: the small CNN trained on 5,000 MNIST images must
 * classify 2,000 test images it never saw at 95% or better. The labels come
 * from the dataset, so the bar is set by the world, not by this code. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blob/idx.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

#define N_TRAIN 5000
#define N_TEST 2000
#define BATCH 64

static void load(const char *name, uint32_t n, an_idx_t *out) {
  char path[1024], err[512];
  snprintf(path, sizeof path, "%s/%s", getenv("ARCHNET_MNIST_DIR"), name);
  ck_assert_msg(an_idx_read(path, n, out, err, sizeof err) == 0, "%s", err);
}

static void to_float(const uint8_t *px, float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    x[i] = px[i] / 255.0f;
}

/* _i = 0: float32 products; 1: bfloat16 products (the precision option must
 * keep the same accuracy bar to be worth offering). */
START_TEST(test_small_cnn_learns_mnist) {
  an_idx_t tr_x, tr_y, te_x, te_y;
  an_model_t *m = NULL;
  an_optim_t *opt = NULL;
  an_rng_t rng;
  char err[512];
  uint32_t order[N_TRAIN];
  float *x = malloc(sizeof(float) * BATCH * 784);
  uint8_t labels[BATCH];
  const float *logits;

  load("train-images-idx3-ubyte.gz", N_TRAIN, &tr_x);
  load("train-labels-idx1-ubyte.gz", N_TRAIN, &tr_y);
  load("t10k-images-idx3-ubyte.gz", N_TEST, &te_x);
  load("t10k-labels-idx1-ubyte.gz", N_TEST, &te_y);
  ck_assert_uint_eq(tr_x.dims[1], 28);

  ck_assert_msg(an_model_preset("cnn-small", NULL, 10, &m, err, sizeof err) == 0, "%s", err);
  an_model_set_precision(m, _i ? AN_PRECISION_BF16 : AN_PRECISION_F32);
  ck_assert_msg(an_model_finalize(m, AN_INIT_UNIFORM, 7, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_model_plan(m, BATCH, 1, err, sizeof err) == 0, "%s", err);
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = 1e-3f};
  ck_assert_int_eq(an_optim_new(&op, an_model_param_count(m), &opt), 0);

  an_rng_seed(&rng, 11);
  for (uint32_t i = 0; i < N_TRAIN; i++)
    order[i] = i;
  for (int epoch = 0; epoch < 6; epoch++) {
    an_rng_shuffle(&rng, order, N_TRAIN);
    for (int b = 0; b + BATCH <= N_TRAIN; b += BATCH) {
      for (int i = 0; i < BATCH; i++) {
        to_float(tr_x.data + (size_t)order[b + i] * 784, x + (size_t)i * 784, 784);
        labels[i] = tr_y.data[order[b + i]];
      }
      ck_assert_int_eq(an_model_forward(m, x, 1, &logits), 0);
      double loss = an_loss_softmax_ce(logits, labels, BATCH, 10, an_model_output_grad(m), NULL);
      ck_assert(loss == loss);
      ck_assert_int_eq(an_model_backward(m, NULL), 0);
      an_optim_step(opt, an_model_params(m), an_model_grads(m));
    }
  }

  int correct = 0, seen = 0;
  for (int b = 0; b + BATCH <= N_TEST; b += BATCH) {
    int hits;
    to_float(te_x.data + (size_t)b * 784, x, (size_t)BATCH * 784);
    ck_assert_int_eq(an_model_forward(m, x, 0, &logits), 0);
    an_loss_softmax_ce(logits, te_y.data + b, BATCH, 10, NULL, &hits);
    correct += hits;
    seen += BATCH;
  }
  double acc = (double)correct / seen;
  printf("small CNN (%s), 5000 MNIST images x 6 epochs: test accuracy %.2f%% on %d images\n",
         _i ? "bf16" : "f32", 100 * acc, seen);
  ck_assert_msg(acc >= 0.95, "accuracy %.4f below 0.95", acc);

  an_optim_free(opt);
  an_model_free(m);
  free(x);
  an_idx_free(&tr_x);
  an_idx_free(&tr_y);
  an_idx_free(&te_x);
  an_idx_free(&te_y);
}
END_TEST

static Suite *train_suite(void) {
  Suite *s = suite_create("train-mnist");
  TCase *tc = tcase_create("smoke");
  tcase_add_loop_test(tc, test_small_cnn_learns_mnist, 0, 2);
  tcase_set_timeout(tc, 600);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(train_suite)
