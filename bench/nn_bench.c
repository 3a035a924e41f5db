/* Training and inference throughput of common/nn on random data, the same
 * workloads as `archnet_torch.py bench` in ../shared/reference, so the two
 * can be run side by side (bench/nn.sh) and compared as ratios.
 *
 *   nn_bench [--json] [--only NAME]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/optim.h"
#include "common/nn/rng.h"
#include "common/nn/spec.h"

typedef enum { TRAIN_MSE, TRAIN_CE, INFER } mode_t_;

typedef struct workload {
  const char *name;  /* the PyTorch reference's key */
  const char *preset;
  int chw[3];
  int batch, iters;
  mode_t_ mode;
  int encoder_only;  /* run the H-encoder half of ArchNet */
  an_precision_t precision;
} workload_t;

static const workload_t workloads[] = {
    {"archnet_train_b64", "archnet-mnist", {1, 28, 28}, 64, 12, TRAIN_MSE, 0, 0},
    {"archnet_train_b256", "archnet-mnist", {1, 28, 28}, 256, 4, TRAIN_MSE, 0, 0},
    {"hencoder_fwd_b256", "archnet-mnist", {1, 28, 28}, 256, 6, INFER, 1, 0},
    {"cnn_train_1x28_b64", "cnn-small", {1, 28, 28}, 64, 20, TRAIN_CE, 0, 0},
    {"cnn_train_10x56_b64", "cnn-small", {10, 56, 56}, 64, 20, TRAIN_CE, 0, 0},
    {"cnn_infer_10x56_b64", "cnn-small", {10, 56, 56}, 64, 20, INFER, 0, 0},
    /* The same with bfloat16 matrix products (no PyTorch counterpart run). */
    {"archnet_train_b64_bf16", "archnet-mnist", {1, 28, 28}, 64, 12, TRAIN_MSE, 0, 1},
    {"archnet_train_b256_bf16", "archnet-mnist", {1, 28, 28}, 256, 4, TRAIN_MSE, 0, 1},
    {"hencoder_fwd_b256_bf16", "archnet-mnist", {1, 28, 28}, 256, 6, INFER, 1, 1},
    {"cnn_train_10x56_b64_bf16", "cnn-small", {10, 56, 56}, 64, 20, TRAIN_CE, 0, 1},
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fail(const char *what, const char *err) {
  fprintf(stderr, "nn_bench: %s: %s\n", what, err);
  exit(1);
}

/* The H-encoder: the ArchNet spec up to and including the `code:` line. */
static an_model_t *build(const workload_t *w) {
  char spec[8192], err[512];
  an_model_t *m = NULL;
  if (an_preset_spec(w->preset, w->chw, 10, spec, sizeof spec, err, sizeof err) != 0)
    fail(w->name, err);
  if (w->encoder_only) {
    char *code = strstr(spec, "code:");
    char *eol = code ? strchr(code, '\n') : NULL;
    if (eol)
      eol[1] = '\0';
  }
  if (an_model_parse(spec, &m, err, sizeof err) != 0)
    fail(w->name, err);
  an_model_set_precision(m, w->precision);
  if (an_model_finalize(m, AN_INIT_UNIFORM, 0, err, sizeof err) != 0 ||
      an_model_plan(m, w->batch, w->mode != INFER, err, sizeof err) != 0)
    fail(w->name, err);
  return m;
}

static double run(const workload_t *w) {
  an_model_t *m = build(w);
  an_optim_t *opt = NULL;
  an_rng_t rng;
  size_t in = (size_t)w->batch * w->chw[0] * w->chw[1] * w->chw[2];
  int out[3];
  /* A few random batches made before the clock starts and used in turn:
   * the benchmark measures training, not the random number generator. */
  enum { POOL = 4 };
  float *pool = malloc(POOL * in * sizeof *pool);
  uint8_t *labels = malloc((size_t)w->batch * POOL);
  const float *y;
  double t0 = 0;

  an_model_output_shape(m, out);
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = 1e-3f};
  if (w->mode != INFER && an_optim_new(&op, an_model_param_count(m), &opt) != 0)
    fail(w->name, "out of memory");
  if (!pool || !labels)
    fail(w->name, "out of memory");
  an_rng_seed(&rng, 1);
  for (size_t i = 0; i < POOL * in; i++)
    pool[i] = (float)an_rng_uniform(&rng);
  for (int i = 0; i < w->batch * POOL; i++)
    labels[i] = (uint8_t)an_rng_below(&rng, 10);
  for (int it = -2; it < w->iters; it++) { /* two warm-up steps, as the reference */
    const float *x = pool + (size_t)((it + 2) % POOL) * in;
    if (it == 0)
      t0 = now();
    if (an_model_forward(m, x, w->mode != INFER, &y) != 0)
      fail(w->name, "forward failed");
    if (w->mode == INFER)
      continue;
    if (w->mode == TRAIN_MSE)
      an_loss_mse(y, x, in, an_model_output_grad(m));
    else
      an_loss_softmax_ce(y, labels + (size_t)((it + 2) % POOL) * w->batch, w->batch, out[0],
                         an_model_output_grad(m), NULL);
    if (an_model_backward(m, NULL) != 0)
      fail(w->name, "backward failed");
    an_optim_step(opt, an_model_params(m), an_model_grads(m));
  }
  double rate = (double)w->iters * w->batch / (now() - t0);
  an_optim_free(opt);
  an_model_free(m);
  free(pool);
  free(labels);
  return rate;
}

int main(int argc, char **argv) {
  int json = 0;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0)
      json = 1;
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
      only = argv[++i];
    else {
      fprintf(stderr, "usage: nn_bench [--json] [--only NAME]\n");
      return 2;
    }
  }
  if (json)
    printf("{");
  int first = 1;
  for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++) {
    if (only && strcmp(only, workloads[i].name) != 0)
      continue;
    double rate = run(&workloads[i]);
    if (json)
      printf("%s\"%s\": %.1f", first ? "" : ", ", workloads[i].name, rate);
    else
      printf("%-24s %10.1f img/s\n", workloads[i].name, rate);
    fflush(stdout);
    first = 0;
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  if (json)
    printf("%s\"peak_rss_mib\": %.1f}\n", first ? "" : ", ", ru.ru_maxrss / 1024.0);
  else
    printf("%-24s %10.1f MiB\n", "peak_rss", ru.ru_maxrss / 1024.0);
  return 0;
}
