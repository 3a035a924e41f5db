/* Adam and SGD against torch.optim: three steps from the same parameters and
 * gradients must land where PyTorch's did (tests/golden/make_golden.py). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/nn/optim.h"
#include "tests/support/testutil.h"

#define N 37
#define STEPS 3

static void load(const char *name, float *out, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", getenv("ARCHNET_GOLDEN_DIR"), name);
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "missing %s", path);
  ck_assert_uint_eq(fread(out, sizeof *out, n, f), n);
  fclose(f);
}

static void check(const char *name, an_optim_params_t p) {
  float w[N], g[STEPS * N], want[STEPS * N];
  an_optim_t *o = NULL;
  char file[64];
  load("optim_p0.raw", w, N);
  load("optim_grads.raw", g, STEPS * N);
  snprintf(file, sizeof file, "optim_%s.raw", name);
  load(file, want, STEPS * N);
  ck_assert_int_eq(an_optim_new(&p, N, &o), 0);
  for (int s = 0; s < STEPS; s++) {
    an_optim_step(o, w, g + s * N);
    for (int i = 0; i < N; i++)
      ck_assert_msg(fabsf(w[i] - want[s * N + i]) <= 1e-6f * (1 + fabsf(want[s * N + i])),
                    "%s step %d [%d]: %.8g, PyTorch %.8g", name, s + 1, i, w[i], want[s * N + i]);
  }
  ck_assert_uint_eq(an_optim_steps(o), STEPS);
  an_optim_free(o);
}

START_TEST(test_adam) { check("adam", (an_optim_params_t){.kind = AN_OPTIM_ADAM, .lr = 1e-2f}); }
END_TEST

START_TEST(test_adam_weight_decay) {
  check("adam_wd", (an_optim_params_t){.kind = AN_OPTIM_ADAM, .lr = 1e-2f, .weight_decay = 0.1f});
}
END_TEST

START_TEST(test_sgd_momentum_weight_decay) {
  check("sgd", (an_optim_params_t){.kind = AN_OPTIM_SGD, .lr = 0.1f, .momentum = 0.9f,
                                   .weight_decay = 0.01f});
}
END_TEST

static Suite *optim_suite(void) {
  Suite *s = suite_create("optim");
  TCase *tc = tcase_create("torch");
  tcase_add_test(tc, test_adam);
  tcase_add_test(tc, test_adam_weight_decay);
  tcase_add_test(tc, test_sgd_momentum_weight_decay);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(optim_suite)
