/* `archnet-publisher audit` end to end: a small key (an ArchNet-shaped
 * encoder 1x28x28 -> 10x56x56 and decoder, trained briefly on MNIST with
 * common/nn, exported as two ONNX files split at `code`, with a manifest) is attacked with
 * --dump, and tests/integration/audit_check.py recomputes the ridge fit, its
 * PSNR, SSIM and re-identification rate from the dumped arrays with numpy
 * (Debian's /usr/bin/python3), checking the C figures. Bad usage is refused
 * with the right exit status. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/blob/idx.h"
#include "common/nn/loss.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/optim.h"
#include "common/nn/spec.h"
#include "publisher/key.h"
#include "tests/support/testutil.h"

#define N_TRAIN 256
#define BATCH 32

/* ArchNet's shape at a fraction of its size: the paper's 123M-parameter
 * linear layer would make the key 490 MB, and the audit does not care. */
static const char key_spec[] = "input 1 28 28\n"
                               "conv 4 k=3 p=1\n"
                               "relu\n"
                               "conv 8 k=3 p=1\n"
                               "code: convt 10 k=2 s=2\n"
                               "conv 10 k=2 s=2\n"
                               "conv 8 k=3 p=1\n"
                               "relu\n"
                               "conv 1 k=3 p=1\n";

static const char *env(const char *name) {
  const char *v = getenv(name);
  ck_assert_msg(v != NULL, "%s is not set; run through meson", name);
  return v;
}

static char *join(const char *a, const char *b) {
  char *p = malloc(strlen(a) + strlen(b) + 2);
  sprintf(p, "%s/%s", a, b);
  return p;
}

/* Trains the key as an identity map for a few epochs and writes it. */
static void make_key(const char *keydir) {
  an_idx_t images;
  an_model_t *m = NULL;
  an_optim_t *opt = NULL;
  char err[512], *path = join(env("ARCHNET_MNIST_DIR"), "train-images-idx3-ubyte.gz");
  float *x = malloc(sizeof *x * N_TRAIN * 784);
  const float *y;

  ck_assert_msg(an_idx_read(path, N_TRAIN, &images, err, sizeof err) == 0, "%s", err);
  for (size_t i = 0; i < N_TRAIN * 784; i++)
    x[i] = images.data[i] / 255.0f;
  ck_assert_msg(an_model_parse(key_spec, &m, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_model_finalize(m, AN_INIT_UNIFORM, 5, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_model_plan(m, BATCH, 1, err, sizeof err) == 0, "%s", err);
  an_optim_params_t op = {.kind = AN_OPTIM_ADAM, .lr = 3e-3f};
  ck_assert_int_eq(an_optim_new(&op, an_model_param_count(m), &opt), 0);
  double loss = 0;
  for (int epoch = 0; epoch < 4; epoch++)
    for (int b = 0; b < N_TRAIN; b += BATCH) {
      const float *in = x + (size_t)b * 784;
      ck_assert_int_eq(an_model_forward(m, in, 1, &y), 0);
      loss = an_loss_mse(y, in, (size_t)BATCH * 784, an_model_output_grad(m));
      ck_assert_int_eq(an_model_backward(m, NULL), 0);
      an_optim_step(opt, an_model_params(m), an_model_grads(m));
    }
  ck_assert_msg(loss < 0.05, "the key did not learn (loss %g)", loss);

  int code = an_model_find_label(m, "code");
  ck_assert_int_ge(code, 0);
  char *enc = join(keydir, "h_encoder.onnx"), *dec = join(keydir, "l_decoder.onnx");
  an_onnx_export_opts_t e = {.output_name = "code", .first = 0, .last = code};
  an_onnx_export_opts_t d = {.input_name = "code", .output_name = "image", .first = code + 1,
                             .last = -1};
  ck_assert_msg(an_onnx_export(m, &e, enc, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_onnx_export(m, &d, dec, err, sizeof err) == 0, "%s", err);
  an_key_manifest_t mf = {.preset = "spec", .loss = "mse", .precision = "f32",
                          .input = {1, 28, 28}, .code = {10, 56, 56}, .seed = 5, .epochs = 4,
                          .images = N_TRAIN, .batch = BATCH, .lr = 3e-3,
                          .dataset_format = "idx", .dataset_digest = "not recorded"};
  ck_assert_msg(an_key_write_manifest(keydir, &mf, err, sizeof err) == 0, "%s", err);
  free(enc);
  free(dec);
  free(path);
  free(x);
  an_optim_free(opt);
  an_model_free(m);
  an_idx_free(&images);
}

START_TEST(test_audit_matches_numpy) {
  char *tmp = an_test_tmpdir(), *key = join(tmp, "key"), *out = join(tmp, "out"),
       *dump = join(tmp, "dump"), *stdout_text = NULL, *stderr_text = NULL;
  char *publisher = (char *)env("ARCHNET_PUBLISHER");
  ck_assert_int_eq(mkdir(key, 0755), 0);
  make_key(key);

  char *argv[] = {publisher, "audit", "--key", key, "--data", (char *)env("ARCHNET_MNIST_DIR"),
                  "--pairs", "50,10", "--held-out", "100", "--seed", "3", "--out", out,
                  "--decoder-epochs", "3", "--dump", dump, NULL};
  int status = an_test_run(argv, &stdout_text, &stderr_text);
  ck_assert_msg(status == 0, "audit exited %d: %s", status, stderr_text);
  printf("%s", stdout_text);
  ck_assert_ptr_nonnull(strstr(stdout_text, "owner L-decoder"));
  ck_assert_ptr_nonnull(strstr(stdout_text, "learned decoder"));
  ck_assert_ptr_nonnull(strstr(stdout_text, "not encryption"));
  /* Not a terminal: no progress lines. */
  ck_assert_msg(stderr_text[0] == '\0', "stderr: %s", stderr_text);
  char *png = join(out, "audit.png");
  ck_assert_int_eq(access(png, R_OK), 0);
  free(png);

  char *script = join(env("ARCHNET_SOURCE_ROOT"), "tests/integration/audit_check.py");
  char *check[] = {"/usr/bin/python3", script, out, dump, NULL};
  char *check_out = NULL, *check_err = NULL;
  status = an_test_run(check, &check_out, &check_err);
  printf("%s", check_out ? check_out : "");
  ck_assert_msg(status == 0, "audit_check.py exited %d:\n%s%s", status, check_out, check_err);

  free(check_out);
  free(check_err);
  free(script);
  free(stdout_text);
  free(stderr_text);
  an_test_rmtree(tmp);
  free(tmp);
  free(key);
  free(out);
  free(dump);
}
END_TEST

START_TEST(test_bad_usage) {
  char *publisher = (char *)env("ARCHNET_PUBLISHER");
  char *tmp = an_test_tmpdir();
  char *no_key[] = {publisher, "audit", "--data", tmp, NULL};
  char *bad_pairs[] = {publisher, "audit", "--key", tmp, "--data", tmp, "--pairs", "1,10", NULL};
  char *twice[] = {publisher, "audit", "--key", tmp, "--data", tmp, "--pairs", "10,10", NULL};
  char *no_model[] = {publisher, "audit", "--key", tmp, "--data", tmp, NULL};
  an_test_expect_run(no_key, 2, NULL, "--key and --data are required");
  an_test_expect_run(bad_pairs, 2, NULL, "pair counts from 2 to 5000");
  an_test_expect_run(twice, 2, NULL, "appears twice");
  an_test_expect_run(no_model, 1, NULL, "manifest.json");
  char *help[] = {publisher, "audit", "--help", NULL};
  an_test_expect_run(help, 0, "--decoder-epochs", NULL);
  an_test_rmtree(tmp);
  free(tmp);
}
END_TEST

static Suite *audit_suite(void) {
  Suite *s = suite_create("audit");
  TCase *tc = tcase_create("cli");
  tcase_add_test(tc, test_audit_matches_numpy);
  tcase_add_test(tc, test_bad_usage);
  tcase_set_timeout(tc, 600);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(audit_suite)
