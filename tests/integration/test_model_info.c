/* `archnet-publisher model-info`: the presets' parameter counts against the
 * paper's Table 2 (122,960,821 and 14,961), the PyTorch reference's
 * `archnet_torch.py params` (the small CNN at 1x28x28 and 10x56x56), and
 * the well-known CIFAR ResNet-18 count; and clear errors on bad input. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/support/testutil.h"

static char *publisher(void) {
  char *p = getenv("ARCHNET_PUBLISHER");
  ck_assert_msg(p != NULL, "ARCHNET_PUBLISHER is not set; run through meson");
  return p;
}

START_TEST(test_preset_counts) {
  static const struct { const char *preset, *input, *last_line; } cases[] = {
      {"archnet-mnist", NULL, "params: 122960821\n"},
      {"archnet-cifar10", NULL, "params: 14961\n"},
      {"cnn-small", NULL, "params: 421642\n"},
      {"cnn-small", "10x56x56", "params: 1628458\n"},
      {"resnet18", NULL, "params: 11173962\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *argv[] = {publisher(), "model-info", "--preset", (char *)cases[i].preset,
                    cases[i].input ? "--input" : NULL, (char *)cases[i].input, NULL};
    char *out = NULL;
    ck_assert_int_eq(an_test_run(argv, &out, NULL), 0);
    size_t n = strlen(out), m = strlen(cases[i].last_line);
    ck_assert_msg(n >= m && strcmp(out + n - m, cases[i].last_line) == 0, "%s: %s",
                  cases[i].preset, out);
    free(out);
  }
}
END_TEST

START_TEST(test_bad_input) {
  char *unknown[] = {publisher(), "model-info", "--preset", "vgg99", NULL};
  char *none[] = {publisher(), "model-info", NULL};
  char *shape[] = {publisher(), "model-info", "--preset", "cnn-small", "--input", "ten", NULL};
  char *tiny[] = {publisher(), "model-info", "--preset", "cnn-small", "--input", "1x2x2", NULL};
  an_test_expect_run(unknown, 1, NULL, "unknown preset 'vgg99'");
  an_test_expect_run(none, 2, NULL, "exactly one of --preset or --spec");
  an_test_expect_run(shape, 2, NULL, "not CxHxW");
  an_test_expect_run(tiny, 1, NULL, "does not fit");

  char path[] = "/tmp/an-test-spec-XXXXXX";
  int fd = mkstemp(path);
  const char *text = "input 1 8 8\nconv 4 k=3 p=1\nfrob 3\n";
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  char *spec[] = {publisher(), "model-info", "--spec", path, NULL};
  an_test_expect_run(spec, 1, NULL, "line 3: unknown layer 'frob'");
  unlink(path);
}
END_TEST

static Suite *model_info_suite(void) {
  Suite *s = suite_create("model-info");
  TCase *tc = tcase_create("cli");
  tcase_add_test(tc, test_preset_counts);
  tcase_add_test(tc, test_bad_input);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(model_info_suite)
