/* Dataset tensors: float16 conversions checked against IEEE 754 binary16
 * facts (bit patterns from the standard, not from this code), uint8
 * quantisation against its closed form, and bounds. */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/nn/tensor.h"
#include "tests/support/testutil.h"

START_TEST(test_f16_known_values) {
  static const struct { float f; uint16_t h; } cases[] = {
      {0.0f, 0x0000},        {-0.0f, 0x8000},       {1.0f, 0x3c00},         {-2.0f, 0xc000},
      {0.5f, 0x3800},        {65504.0f, 0x7bff},    /* largest finite */
      {0x1p-14f, 0x0400},    /* smallest normal */ {0x1p-24f, 0x0001}, /* smallest subnormal */
      {1.0f + 0x1p-10f, 0x3c01},                    /* one ulp above 1 */
      {1.0f + 0x1p-11f, 0x3c00},                    /* halfway: ties to even (down) */
      {1.0f + 3 * 0x1p-11f, 0x3c02},                /* halfway: ties to even (up) */
      {65520.0f, 0x7c00},    /* rounds to infinity */ {INFINITY, 0x7c00},
      {0x1p-25f, 0x0000},    /* half the smallest subnormal: ties to even, zero */
      {3.0f * 0x1p-26f, 0x0001},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ck_assert_msg(an_f16_from_f32(cases[i].f) == cases[i].h, "%a -> %04x, want %04x",
                  (double)cases[i].f, an_f16_from_f32(cases[i].f), cases[i].h);
    if (cases[i].h != 0x7c00 && !(cases[i].h == 0 && cases[i].f != 0.0f) &&
        cases[i].f != 1.0f + 0x1p-11f && cases[i].f != 1.0f + 3 * 0x1p-11f &&
        cases[i].f != 3.0f * 0x1p-26f)
      ck_assert_msg(an_f32_from_f16(cases[i].h) == cases[i].f, "%04x back", cases[i].h);
  }
  ck_assert(isnan(an_f32_from_f16(an_f16_from_f32(NAN))));
  ck_assert(isinf(an_f32_from_f16(0xfc00)) && an_f32_from_f16(0xfc00) < 0);
}
END_TEST

START_TEST(test_round_trips) {
  int64_t shape[4] = {3, 2, 2, 2};
  float in[3 * 8], out[3 * 8];
  an_tensor_t t;
  for (int i = 0; i < 24; i++)
    in[i] = (float)(i - 10) * 0.37f;
  /* float32: exact. */
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_F32, 4, shape), 0);
  ck_assert_int_eq(an_tensor_write_f32(&t, 0, 3, in), 0);
  ck_assert_int_eq(an_tensor_read_f32(&t, 0, 3, out), 0);
  ck_assert_mem_eq(in, out, sizeof in);
  an_tensor_destroy(&t);
  /* float16: within half an ulp (relative 2^-11). */
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_F16, 4, shape), 0);
  ck_assert_uint_eq(t.nbytes, 24 * 2);
  ck_assert_int_eq(an_tensor_write_f32(&t, 0, 3, in), 0);
  ck_assert_int_eq(an_tensor_read_f32(&t, 1, 2, out + 8), 0);
  for (int i = 8; i < 24; i++)
    ck_assert(fabsf(out[i] - in[i]) <= fabsf(in[i]) * 0x1p-11f);
  an_tensor_destroy(&t);
  /* uint8 with per-channel scale/offset: q = round((v - offset) / scale). */
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_U8, 4, shape), 0);
  t.scale[0] = 0.1f, t.offset[0] = -4.0f;
  t.scale[1] = 0.02f, t.offset[1] = 0.0f;
  ck_assert_int_eq(an_tensor_write_f32(&t, 0, 3, in), 0);
  ck_assert_int_eq(an_tensor_read_f32(&t, 0, 3, out), 0);
  for (int i = 0; i < 24; i++) {
    int c = (i % 8) / 4;
    float q = (in[i] - t.offset[c]) / t.scale[c];
    q = q < 0 ? 0 : q > 255 ? 255 : nearbyintf(q);
    ck_assert(((uint8_t *)t.data)[i] == (uint8_t)q);
    ck_assert(fabsf(out[i] - (q * t.scale[c] + t.offset[c])) < 1e-5f);
  }
  an_tensor_destroy(&t);
}
END_TEST

START_TEST(test_bounds) {
  int64_t ok[2] = {4, 5}, zero[2] = {0, 5}, huge[4] = {1 << 20, 1 << 20, 1 << 20, 1 << 20};
  float buf[20];
  an_tensor_t t;
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_F32, 2, zero), AN_EFORMAT);
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_F32, 4, huge), AN_ETOOBIG);
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_F32, 5, ok), AN_EFORMAT);
  ck_assert_int_eq(an_tensor_init(&t, AN_DTYPE_F32, 2, ok), 0);
  ck_assert_int_eq(an_tensor_read_f32(&t, 3, 2, buf), AN_EFORMAT);
  ck_assert_int_eq(an_tensor_read_f32(&t, 4, 0, buf), 0); /* empty range at the end */
  ck_assert_int_eq(an_tensor_read_f32(&t, 5, 0, buf), AN_EFORMAT);
  ck_assert_int_eq(an_tensor_write_f32(&t, SIZE_MAX, 2, buf), AN_EFORMAT);
  ck_assert_str_eq(an_dtype_name(t.dtype), "float32");
  an_tensor_destroy(&t);
}
END_TEST

static Suite *tensor_suite(void) {
  Suite *s = suite_create("tensor");
  TCase *tc = tcase_create("tensor");
  tcase_add_test(tc, test_f16_known_values);
  tcase_add_test(tc, test_round_trips);
  tcase_add_test(tc, test_bounds);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(tensor_suite)
