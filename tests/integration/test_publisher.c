/* The publisher's own pipeline through the real program: train (and resume
 * after an interrupt to the very same key), encode (files checked with
 * numpy), decode (PSNR equal to the manifest's), predict (against the
 * worker's onnx-run on the same codes), show, and bad input.
 *
 * A small ArchNet-shaped spec keeps it fast under the sanitizers; the
 * paper's presets run the same code. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

static const char spec_text[] = "input 1 28 28\n"
                                "conv 4 k=3 p=1\n"
                                "relu\n"
                                "code: convt 3 k=2 s=2\n"
                                "conv 4 k=2 s=2\n"
                                "relu\n"
                                "conv 1 k=3 p=1\n";

static char *env(const char *name) {
  char *p = getenv(name);
  ck_assert_msg(p != NULL, "%s is not set; run through meson", name);
  return p;
}

static char *tmp;           /* this test's scratch folder */
static char spec_path[1024];

static void setup(void) {
  tmp = an_test_tmpdir();
  snprintf(spec_path, sizeof spec_path, "%s/small.spec", tmp);
  FILE *f = fopen(spec_path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(spec_text, f);
  fclose(f);
}

static void teardown(void) {
  an_test_rmtree(tmp);
  free(tmp);
}

/* Runs `train` for the small spec into dir; extra arguments after. */
static int train(const char *dir, const char *extra1, const char *extra2, char **err) {
  char *argv[] = {env("ARCHNET_PUBLISHER"), "train", "--spec", spec_path, "--data",
                  env("ARCHNET_MNIST_DIR"), "--out", (char *)dir, "--limit", "512", "--batch",
                  "64", "--epochs", "2", "--eval-images", "200", "--precision", "f32", "--seed",
                  "5", (char *)extra1, (char *)extra2, NULL};
  return an_test_run(argv, NULL, err);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (!f)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1)) && fread(buf, 1, (size_t)n, f) == (size_t)n) {
    buf[n] = '\0';
    *len = (size_t)n;
  } else {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  return buf;
}

static void same_file(const char *a, const char *b) {
  size_t la = 0, lb = 0;
  char *x = slurp(a, &la), *y = slurp(b, &lb);
  ck_assert_msg(x && y, "cannot read %s or %s", a, b);
  ck_assert_msg(la == lb && memcmp(x, y, la) == 0, "%s and %s differ", a, b);
  free(x);
  free(y);
}

START_TEST(test_train_resumes_to_the_same_key) {
  char a[1024], b[1024], pa[1100], pb[1100], ck[1100];
  char *err = NULL;
  snprintf(a, sizeof a, "%s/straight", tmp);
  snprintf(b, sizeof b, "%s/interrupted", tmp);
  ck_assert_int_eq(train(a, NULL, NULL, NULL), 0);
  /* 8 steps per epoch: stop in the first epoch, then again in the second
   * (the resumed run counts its own steps), then finish. */
  ck_assert_int_eq(train(b, "--stop-after-steps", "3", &err), 130);
  ck_assert_msg(strstr(err, "checkpoint saved"), "%s", err);
  free(err);
  snprintf(ck, sizeof ck, "%s/train.ckpt", b);
  ck_assert_int_eq(access(ck, F_OK), 0);
  ck_assert_int_eq(train(b, "--stop-after-steps", "7", &err), 130);
  ck_assert_msg(strstr(err, "resuming at epoch 1, step 3"), "%s", err);
  free(err);
  ck_assert_int_eq(train(b, NULL, NULL, &err), 0);
  ck_assert_msg(strstr(err, "resuming at epoch 2, step 2"), "%s", err);
  free(err);
  ck_assert_int_ne(access(ck, F_OK), 0); /* removed once the key is written */
  static const char *const files[] = {"h_encoder.onnx", "l_decoder.onnx"};
  for (int i = 0; i < 2; i++) {
    snprintf(pa, sizeof pa, "%s/%s", a, files[i]);
    snprintf(pb, sizeof pb, "%s/%s", b, files[i]);
    same_file(pa, pb);
  }
  /* A finished key is not overwritten by accident. */
  ck_assert_int_eq(train(a, NULL, NULL, &err), 1);
  ck_assert_msg(strstr(err, "--force"), "%s", err);
  free(err);
}
END_TEST

START_TEST(test_checkpoint_of_another_run_is_refused) {
  char d[1024];
  char *err = NULL;
  snprintf(d, sizeof d, "%s/key", tmp);
  ck_assert_int_eq(train(d, "--stop-after-steps", "2", NULL), 130);
  char *argv[] = {env("ARCHNET_PUBLISHER"), "train", "--spec", spec_path, "--data",
                  env("ARCHNET_MNIST_DIR"), "--out", d, "--limit", "512", "--batch", "64",
                  "--precision", "f32", "--seed", "6", NULL};
  ck_assert_int_eq(an_test_run(argv, NULL, &err), 1);
  ck_assert_msg(strstr(err, "other settings"), "%s", err);
  free(err);
}
END_TEST

/* A classifier for 3x56x56 codes, exported with common/nn's writer. */
static void write_classifier(const char *path) {
  an_model_t *m = NULL;
  char err[512];
  int chw[3] = {3, 56, 56};
  ck_assert_msg(an_model_preset("cnn-small", chw, 10, &m, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_model_finalize(m, AN_INIT_UNIFORM, 3, err, sizeof err) == 0, "%s", err);
  an_onnx_export_opts_t o = {.first = 0, .last = -1};
  ck_assert_msg(an_onnx_export(m, &o, path, err, sizeof err) == 0, "%s", err);
  an_model_free(m);
}

START_TEST(test_encode_decode_predict_show) {
  char key[1024], e32[1100], e16[1100], e8[1100], path[1200], model[1100];
  char *out = NULL, *err = NULL;
  snprintf(key, sizeof key, "%s/key", tmp);
  ck_assert_int_eq(train(key, NULL, NULL, NULL), 0);

  static const char *const dtypes[] = {"f32", "f16", "u8"};
  char *dirs[] = {e32, e16, e8};
  for (int i = 0; i < 3; i++) {
    snprintf(dirs[i], 1100, "%s/enc-%s", tmp, dtypes[i]);
    char *argv[] = {env("ARCHNET_PUBLISHER"), "encode", "--key", key, "--data",
                    env("ARCHNET_MNIST_DIR"), "--out", dirs[i], "--limit", "600", "--dtype",
                    (char *)dtypes[i], "--val-fraction", "0.1", "--with-test", "--batch", "128",
                    NULL};
    ck_assert_int_eq(an_test_run(argv, &out, &err), 0);
    ck_assert_msg(strstr(out, "540 train, 60 validation, 10000 test"), "%s", out);
    free(out);
    free(err);
  }
  /* numpy reads all three and checks the stored types against each other. */
  char script[1100];
  snprintf(script, sizeof script, "%s/tests/integration/publisher_check.py",
           env("ARCHNET_SOURCE_ROOT"));
  char *py[] = {"/usr/bin/python3", script, e32, e16, e8, NULL};
  ck_assert_int_eq(an_test_run(py, &out, &err), 0);
  ck_assert_msg(strstr(out, "encodings: ok"), "%s\n%s", out, err);
  free(out);
  free(err);

  /* decode reaches the manifest's PSNR on the same 200 test images. */
  snprintf(path, sizeof path, "%s/test_x.npy", e32);
  char png[1100];
  snprintf(png, sizeof png, "%s/decoded.png", tmp);
  char *dec[] = {env("ARCHNET_PUBLISHER"), "decode", "--key", key, "--input", path, "--data",
                 env("ARCHNET_MNIST_DIR"), "--count", "200", "--out", png, NULL};
  ck_assert_int_eq(an_test_run(dec, &out, NULL), 0);
  char mpath[1100];
  snprintf(mpath, sizeof mpath, "%s/manifest.json", key);
  char *mpy[] = {"/usr/bin/python3", "-c",
                 "import json,sys,re; m=json.load(open(sys.argv[1]));"
                 "got=float(re.search(r'PSNR ([0-9.]+) dB', sys.argv[2]).group(1));"
                 "want=m['reconstruction']['psnr_db']; print(got, want);"
                 "sys.exit(0 if abs(got-want) < 0.02 else 1)",
                 mpath, out, NULL};
  char *pout = NULL;
  ck_assert_msg(an_test_run(mpy, &pout, NULL) == 0, "decode: %s manifest vs decode: %s", out,
                pout);
  free(pout);
  free(out);

  /* predict = the worker's onnx-run on the codes encode wrote. */
  snprintf(model, sizeof model, "%s/classifier.onnx", tmp);
  write_classifier(model);
  char labels[1100];
  snprintf(labels, sizeof labels, "%s/labels.txt", tmp);
  char *pr[] = {env("ARCHNET_PUBLISHER"), "predict", "--key", key, "--model", model, "--data",
                env("ARCHNET_MNIST_DIR"), "--encoding", e32, "--limit", "300", "--out", labels,
                NULL};
  ck_assert_int_eq(an_test_run(pr, &out, &err), 0);
  ck_assert_msg(strstr(out, "of 300 test images"), "%s %s", out, err);
  free(out);
  free(err);
  char first300[1100];
  snprintf(first300, sizeof first300, "%s/first300.npy", tmp);
  char *cut[] = {"/usr/bin/python3", "-c",
                 "import numpy as np,sys; np.save(sys.argv[2], np.load(sys.argv[1])[:300])", path,
                 first300, NULL};
  ck_assert_int_eq(an_test_run(cut, NULL, NULL), 0);
  char *run[] = {env("ARCHNET_WORKER"), "onnx-run", model, first300, NULL};
  ck_assert_int_eq(an_test_run(run, &out, NULL), 0);
  size_t len = 0;
  char *mine = slurp(labels, &len);
  ck_assert_ptr_nonnull(mine);
  const char *rows = strchr(out, '\n'); /* after the shape line */
  ck_assert_ptr_nonnull(rows);
  ck_assert_msg(strcmp(rows + 1, mine) == 0, "predict and onnx-run disagree");
  free(mine);
  free(out);

  snprintf(png, sizeof png, "%s/show.png", tmp);
  char *sh[] = {env("ARCHNET_PUBLISHER"), "show", "--key", key, "--data",
                env("ARCHNET_MNIST_DIR"), "--out", png, "--count", "3", NULL};
  an_test_expect_run(sh, 0, "3 images, each followed by its 3 encoded channels", NULL);
  char *img = slurp(png, &len);
  ck_assert_msg(img && len > 8 && memcmp(img, "\x89PNG\r\n\x1a\n", 8) == 0, "not a PNG");
  free(img);
}
END_TEST

START_TEST(test_bad_input) {
  char *p = env("ARCHNET_PUBLISHER"), nokey[1100], junk[1100];
  snprintf(nokey, sizeof nokey, "%s/nokey", tmp);
  mkdir(nokey, 0700);
  snprintf(junk, sizeof junk, "%s/junk.onnx", tmp);
  FILE *f = fopen(junk, "w");
  fputs("not a model", f);
  fclose(f);
  char *no_data[] = {p, "train", "--out", nokey, NULL};
  an_test_expect_run(no_data, 2, NULL, "--data and --out are required");
  char *bad_loss[] = {p, "train", "--data", tmp, "--out", nokey, "--loss", "l1", NULL};
  an_test_expect_run(bad_loss, 2, NULL, "--loss must be mse or bce");
  char *empty_data[] = {p, "train", "--data", tmp, "--out", nokey, NULL};
  an_test_expect_run(empty_data, 1, NULL, tmp);
  char *wrong_shape[] = {p, "train", "--preset", "archnet-cifar10", "--data",
                         env("ARCHNET_MNIST_DIR"), "--out", nokey, "--limit", "64", NULL};
  an_test_expect_run(wrong_shape, 1, NULL, "1x28x28");
  char *not_a_key[] = {p, "encode", "--key", nokey, "--data", env("ARCHNET_MNIST_DIR"), "--out",
                       nokey, NULL};
  an_test_expect_run(not_a_key, 1, NULL, "manifest.json");
  char *bad_dtype[] = {p, "encode", "--key", nokey, "--data", tmp, "--out", tmp, "--dtype",
                       "f64", NULL};
  an_test_expect_run(bad_dtype, 2, NULL, "--dtype must be");
  char *no_args[] = {p, "predict", NULL};
  an_test_expect_run(no_args, 2, NULL, "--key, --model and --data");
}
END_TEST

static Suite *publisher_suite(void) {
  Suite *s = suite_create("publisher");
  TCase *tc = tcase_create("pipeline");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_train_resumes_to_the_same_key);
  tcase_add_test(tc, test_checkpoint_of_another_run_is_refused);
  tcase_add_test(tc, test_encode_decode_predict_show);
  tcase_add_test(tc, test_bad_input);
  tcase_set_timeout(tc, 900);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(publisher_suite)
