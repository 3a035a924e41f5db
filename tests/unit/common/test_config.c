#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/error.h"
#include "tests/support/testutil.h"

typedef struct settings {
  char *listen;
  int64_t workers;
  uint64_t max_frame;
  double min_accuracy;
  bool foreground;
  char *log_level;
} settings_t;

#define OPT(f) offsetof(settings_t, f)
static const an_option_t options[] = {
    {"listen", AN_OPT_STR, OPT(listen), "127.0.0.1:7443", 0, 0, "HOST:PORT", "address"},
    {"workers", AN_OPT_INT, OPT(workers), "4", 1, 64, "N", "threads"},
    {"max-frame", AN_OPT_SIZE, OPT(max_frame), "16M", 1024, 1073741824.0, "BYTES", "limit"},
    {"min-accuracy", AN_OPT_DOUBLE, OPT(min_accuracy), "0.9", 0, 1, "A", "bar"},
    {"foreground", AN_OPT_BOOL, OPT(foreground), "false", 0, 0, NULL, "stay in front"},
    {"log-level", AN_OPT_STR, OPT(log_level), "info", 0, 0, "LEVEL", "verbosity",
     an_config_check_log_level},
};
static const an_command_spec_t spec = {
    .program = "archnet-test", .command = "run", .section = "test",
    .options = options, .n_options = sizeof options / sizeof options[0],
};

/* Parses a NULL-terminated list of arguments into a fresh settings struct. */
static int parse(settings_t *s, char *err, size_t errlen, const char *first, ...) {
  char *argv[32];
  int argc = 0, first_arg;
  va_list ap;
  memset(s, 0, sizeof *s);
  argv[argc++] = "run";
  va_start(ap, first);
  for (const char *a = first; a; a = va_arg(ap, const char *))
    argv[argc++] = (char *)a;
  va_end(ap);
  argv[argc] = NULL;
  FILE *devnull = fopen("/dev/null", "w");
  int rc = an_config_parse(&spec, s, argc, argv, &first_arg, devnull, err, errlen);
  fclose(devnull);
  return rc;
}

static char *write_file(const char *text) {
  char *path = strdup("/tmp/an-test-conf-XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

START_TEST(test_defaults) {
  settings_t s;
  char err[256];
  ck_assert_int_eq(parse(&s, err, sizeof err, NULL), 0);
  ck_assert_str_eq(s.listen, "127.0.0.1:7443");
  ck_assert_int_eq(s.workers, 4);
  ck_assert_uint_eq(s.max_frame, 16u << 20);
  ck_assert_double_eq(s.min_accuracy, 0.9);
  ck_assert(!s.foreground);
  an_config_free(&spec, &s);
}
END_TEST

START_TEST(test_flags_override_file_override_defaults) {
  settings_t s;
  char err[256];
  char *path = write_file("; comment\n[test]\nworkers = 8\nlisten = 0.0.0.0:1\n"
                          "[other]\nunknown-elsewhere = 1\n");
  ck_assert_int_eq(parse(&s, err, sizeof err, "--config", path, "--listen=[::1]:9", NULL), 0);
  ck_assert_int_eq(s.workers, 8);         /* from the file */
  ck_assert_str_eq(s.listen, "[::1]:9"); /* the flag wins */
  an_config_free(&spec, &s);
  unlink(path);
  free(path);
}
END_TEST

START_TEST(test_values_and_bounds) {
  settings_t s;
  char err[256];
  ck_assert_int_eq(parse(&s, err, sizeof err, "--max-frame", "1G", "--foreground",
                         "--min-accuracy=0.25", "--workers=64", NULL), 0);
  ck_assert_uint_eq(s.max_frame, 1073741824ull); /* the upper bound is inclusive */
  ck_assert(s.foreground);                      /* a bare boolean flag */
  ck_assert_double_eq(s.min_accuracy, 0.25);
  ck_assert_int_eq(s.workers, 64);
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--max-frame=2G", NULL), AN_ECONFIG);
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--foreground=off", NULL), 0);
  ck_assert(!s.foreground);
  an_config_free(&spec, &s);
}
END_TEST

START_TEST(test_errors_are_clear) {
  settings_t s;
  char err[256];
  ck_assert_int_eq(parse(&s, err, sizeof err, "--workers=0", NULL), AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, "--workers"));
  ck_assert_ptr_nonnull(strstr(err, "out of range"));
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--workers=4x", NULL), AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, "not an integer"));
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--bogus", NULL), AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, "--bogus"));
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--listen", NULL), AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, "needs a value"));
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--max-frame=-1", NULL), AN_ECONFIG);
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--min-accuracy=nan", NULL), AN_ECONFIG);
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--foreground=maybe", NULL), AN_ECONFIG);
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--log-level=loud", NULL), AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, "loud"));
  an_config_free(&spec, &s);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--config", "/nonexistent.conf", NULL),
                   AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, "/nonexistent.conf"));
  an_config_free(&spec, &s);
}
END_TEST

START_TEST(test_file_errors_name_the_line) {
  settings_t s;
  char err[256], expect[300];
  char *path = write_file("[test]\nworkers = 2\n\nworkrs = 3\n");
  ck_assert_int_eq(parse(&s, err, sizeof err, "--config", path, NULL), AN_ECONFIG);
  snprintf(expect, sizeof expect, "%s:4:", path);
  ck_assert_msg(strstr(err, expect) == err, "got '%s'", err);
  ck_assert_ptr_nonnull(strstr(err, "workrs"));
  an_config_free(&spec, &s);
  unlink(path);
  free(path);

  char longline[400];
  memset(longline, 'a', sizeof longline);
  memcpy(longline, "[test]\nlisten = ", 16);
  longline[sizeof longline - 2] = '\n';
  longline[sizeof longline - 1] = '\0';
  path = write_file(longline);
  ck_assert_int_eq(parse(&s, err, sizeof err, "--config", path, NULL), AN_ECONFIG);
  ck_assert_msg(strstr(err, ":2: line longer than") != NULL, "got '%s'", err);
  an_config_free(&spec, &s);
  unlink(path);
  free(path);

  path = write_file("[test]\nmax-frame = lots\n");
  ck_assert_int_eq(parse(&s, err, sizeof err, "--config", path, NULL), AN_ECONFIG);
  ck_assert_ptr_nonnull(strstr(err, ":2:"));
  an_config_free(&spec, &s);
  unlink(path);
  free(path);
}
END_TEST

START_TEST(test_help) {
  settings_t s;
  char err[256];
  ck_assert_int_eq(parse(&s, err, sizeof err, "--workers=3", "--help", NULL), AN_CONFIG_HELP);
  an_config_free(&spec, &s);
}
END_TEST

START_TEST(test_positional_arguments) {
  settings_t s = {0};
  char err[256];
  char *argv[] = {"run", "model.onnx", "--workers", "2", "input.npy", NULL};
  int first;
  ck_assert_int_eq(an_config_parse(&spec, &s, 5, argv, &first, stdout, err, sizeof err), 0);
  ck_assert_int_eq(first, 3);
  ck_assert_str_eq(argv[3], "model.onnx");
  ck_assert_str_eq(argv[4], "input.npy");
  ck_assert_int_eq(s.workers, 2);
  an_config_free(&spec, &s);
}
END_TEST

START_TEST(test_sizes) {
  static const struct { const char *text; uint64_t value; } ok[] = {
      {"0", 0}, {"4096", 4096}, {"64K", 64 << 10}, {"16M", 16 << 20}, {"16MiB", 16 << 20},
      {"2g", 2ull << 30}, {"1T", 1ull << 40}, {"3KB", 3 << 10},
  };
  static const char *const bad[] = {"", "-1", "1X", "M", "1.5M", "99999999999999999999",
                                    "17179869184G", " "};
  uint64_t v;
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    ck_assert_int_eq(an_config_parse_size(ok[i].text, &v), 0);
    ck_assert_uint_eq(v, ok[i].value);
  }
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    ck_assert_msg(an_config_parse_size(bad[i], &v) == AN_ECONFIG, "'%s' accepted", bad[i]);
}
END_TEST

static Suite *config_suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("config");
  tcase_add_test(tc, test_defaults);
  tcase_add_test(tc, test_flags_override_file_override_defaults);
  tcase_add_test(tc, test_values_and_bounds);
  tcase_add_test(tc, test_errors_are_clear);
  tcase_add_test(tc, test_file_errors_name_the_line);
  tcase_add_test(tc, test_help);
  tcase_add_test(tc, test_positional_arguments);
  tcase_add_test(tc, test_sizes);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(config_suite)
