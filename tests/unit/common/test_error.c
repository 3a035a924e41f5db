#include <check.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

#include <uv.h>

#include "common/error.h"
#include "tests/support/testutil.h"

START_TEST(test_project_codes_described) {
  for (int code = AN_ERR_BASE - 1; code > AN_ERR_LAST; code--) {
    ck_assert_str_ne(an_strerror(code), "unknown error");
    ck_assert_ptr_eq(strstr(an_err_name(code), "AN_E"), an_err_name(code));
    for (int other = code - 1; other > AN_ERR_LAST; other--)
      ck_assert_str_ne(an_strerror(code), an_strerror(other));
  }
  ck_assert_str_eq(an_err_name(AN_ETRUNC), "AN_ETRUNC");
}
END_TEST

START_TEST(test_libuv_and_errno_pass_through) {
  /* libuv codes are negated errno values on Unix: libc describes them. */
  ck_assert_int_eq(strcasecmp(an_strerror(UV_ECONNREFUSED), strerror(ECONNREFUSED)), 0);
  ck_assert_int_eq(strcasecmp(an_strerror(-ENOENT), strerror(ENOENT)), 0);
  ck_assert_str_eq(an_err_name(UV_ETIMEDOUT), "ETIMEDOUT");
  ck_assert_str_eq(an_strerror(UV_EOF), "end of file");
  ck_assert_str_eq(an_strerror(0), "success");
  ck_assert_str_eq(an_strerror(AN_ERR_LAST), "unknown error");
  ck_assert_str_eq(an_strerror(-30000), "unknown error");
}
END_TEST

static Suite *error_suite(void) {
  Suite *s = suite_create("error");
  TCase *tc = tcase_create("strerror");
  tcase_add_test(tc, test_project_codes_described);
  tcase_add_test(tc, test_libuv_and_errno_pass_through);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(error_suite)
