/* Does bfloat16 cost ArchNet accuracy? Trains the paper's MNIST ArchNet as
 * an identity map (MSE, Adam 1e-3, batch 256, same seed and data order) in
 * float32 and in bf16, and reports the reconstruction PSNR on held-out
 * MNIST test images and the wall time of each.
 *
 *   archnet_precision MNIST_DIR [TRAIN_IMAGES]   (default 60000 = one epoch)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/blob/idx.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"

#define BATCH 256
#define N_TEST 1024

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *msg) {
  fprintf(stderr, "archnet_precision: %s\n", msg);
  exit(1);
}

static void load(const char *dir, const char *name, uint32_t n, an_idx_t *out) {
  char path[1024], err[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (an_idx_read(path, n, out, err, sizeof err) != 0)
    die(err);
}

static void run(an_precision_t prec, const an_idx_t *train, const an_idx_t *test, uint32_t n) {
  an_model_t *m = NULL;
  an_optim_t *opt = NULL;
  an_rng_t rng;
  char err[512];
  float *x = malloc(sizeof(float) * BATCH * 784);
  uint32_t *order = malloc(sizeof *order * train->dims[0]);
  const float *y;
  double t0 = now(), mse = 0;

  if (!x || !order || an_model_preset("archnet-mnist", NULL, 0, &m, err, sizeof err) != 0)
    die("cannot build the model");
  an_model_set_precision(m, prec);
  if (an_model_finalize(m, AN_INIT_UNIFORM, 42, err, sizeof err) != 0 ||
      an_model_plan(m, BATCH, 1, err, sizeof err) != 0)
    die(err);
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = 1e-3f};
  if (an_optim_new(&op, an_model_param_count(m), &opt) != 0)
    die("out of memory");
  an_rng_seed(&rng, 7);
  for (uint32_t i = 0; i < train->dims[0]; i++)
    order[i] = i;
  for (uint32_t done = 0; done + BATCH <= n;) {
    if (done % train->dims[0] == 0)
      an_rng_shuffle(&rng, order, train->dims[0]);
    for (int b = 0; b < BATCH; b++, done++)
      for (int p = 0; p < 784; p++)
        x[b * 784 + p] = train->data[(size_t)order[done % train->dims[0]] * 784 + p] / 255.0f;
    if (an_model_forward(m, x, 1, &y) != 0)
      die("forward failed");
    an_loss_mse(y, x, (size_t)BATCH * 784, an_model_output_grad(m));
    if (an_model_backward(m, NULL) != 0)
      die("backward failed");
    an_optim_step(opt, an_model_params(m), an_model_grads(m));
  }
  double train_s = now() - t0;
  for (int b = 0; b < N_TEST; b += BATCH) {
    for (int i = 0; i < BATCH * 784; i++)
      x[i] = test->data[(size_t)b * 784 + i] / 255.0f;
    if (an_model_forward(m, x, 0, &y) != 0)
      die("forward failed");
    mse += an_loss_mse(y, x, (size_t)BATCH * 784, NULL) * BATCH / N_TEST;
  }
  printf("%-5s  %6u images  %7.1f s  test MSE %.5f  PSNR %.2f dB\n",
         prec == AN_PRECISION_BF16 ? "bf16" : "f32", n, train_s, mse, 10 * log10(1.0 / mse));
  fflush(stdout);
  an_optim_free(opt);
  an_model_free(m);
  free(x);
  free(order);
}

int main(int argc, char **argv) {
  an_idx_t train, test;
  uint32_t n = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 60000;
  if (argc < 2)
    die("usage: archnet_precision MNIST_DIR [TRAIN_IMAGES]");
  load(argv[1], "train-images-idx3-ubyte.gz", 0, &train);
  load(argv[1], "t10k-images-idx3-ubyte.gz", N_TEST, &test);
  run(AN_PRECISION_F32, &train, &test, n);
  run(AN_PRECISION_BF16, &train, &test, n);
  an_idx_free(&train);
  an_idx_free(&test);
  return 0;
}
