/* .npy files against NumPy itself: NumPy writes arrays whose values are known
 * in closed form and we read them; we write arrays and NumPy reads them back.
 * Malformed files are built here byte by byte. python3-numpy is a declared
 * test dependency: without it the tests fail and say so. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "common/blob/npy.h"
#include "common/error.h"
#include "tests/support/testutil.h"

/* ---- NumPy writes, we read -------------------------------------------- */

static const char numpy_files[] =
    "import sys, numpy as np\n"
    "d = sys.argv[1] + '/'\n"
    "np.save(d + 'f32.npy', (np.arange(120, dtype='<f4') * np.float32(0.5)).reshape(2, 3, 4, 5))\n"
    "np.save(d + 'f16.npy', np.concatenate([(np.arange(40) - 20) * 0.125,\n"
    "                                       [65504.0, 2.0 ** -24, np.inf]]).astype('<f2'))\n"
    "np.save(d + 'u8.npy', np.arange(256).astype('|u1').reshape(16, 16))\n"
    "np.save(d + 'f64.npy', (np.arange(10) / 4.0).reshape(2, 5))\n"
    "np.save(d + 'i64.npy', (np.arange(10, dtype='<i8') - 5) * 1000000007)\n"
    "np.save(d + 'scalar.npy', np.float32(3.25))\n"
    "np.save(d + 'one.npy', np.arange(5, dtype='<f4') + 1)\n"
    "np.save(d + 'empty.npy', np.zeros((0, 3), dtype='<f4'))\n"
    "np.save(d + 'dims8.npy', np.arange(6, dtype='<f4').reshape(1, 1, 1, 1, 1, 1, 2, 3))\n"
    "np.save(d + 'dims9.npy', np.zeros((1,) * 9, dtype='<f4'))\n"
    "np.save(d + 'fortran.npy', np.asfortranarray(np.arange(6, dtype='<f4').reshape(2, 3)))\n"
    "np.save(d + 'big.npy', np.arange(4, dtype='>f4'))\n"
    "np.save(d + 'c64.npy', np.zeros(3, dtype='<c8'))\n"
    "np.save(d + 'rec.npy', np.zeros(3, dtype=[('a', '<f4'), ('b', '<i8')]))\n"
    "for v in (2, 3):\n"
    "    with open(d + 'v%d.npy' % v, 'wb') as f:\n"
    "        np.lib.format.write_array(f, (np.arange(12, dtype='<f4') * np.float32(-1.5))\n"
    "                                  .reshape(3, 4), version=(v, 0))\n"
    "print('written')\n";

static void make_numpy_files(void) {
  an_test_scratch_make();
  char *out = an_test_python(numpy_files, an_test_scratch());
  ck_assert_str_eq(out, "written\n");
  free(out);
}

/* Reads dir/name, which must succeed, with the given dtype and shape. */
static void read_ok(const char *name, an_npy_t *a, an_npy_dtype_t dtype, int ndim,
                    const int64_t *shape) {
  char err[512] = "", *path = an_test_scratch_path(name);
  int rc = an_npy_read(path, 0, a, err, sizeof err);
  ck_assert_msg(rc == 0, "%s: %s (%s)", name, err, an_err_name(rc));
  ck_assert_int_eq(a->dtype, dtype);
  ck_assert_int_eq(a->ndim, ndim);
  for (int i = 0; i < ndim; i++)
    ck_assert_int_eq(a->shape[i], shape[i]);
  ck_assert_ptr_nonnull(a->data);
  free(path);
}

/* Reads dir/name, which must fail with `code` and a message naming the file
 * and containing `what`. */
static void read_fails(const char *path, size_t max_bytes, int code, const char *what) {
  an_npy_t a;
  char err[512] = "";
  memset(&a, 0x5a, sizeof a);
  int rc = an_npy_read(path, max_bytes, &a, err, sizeof err);
  ck_assert_msg(rc == code, "%s: got %s (%s), want %s", path, an_err_name(rc), err,
                an_err_name(code));
  ck_assert_msg(strstr(err, path) != NULL, "message does not name the file: %s", err);
  ck_assert_msg(!what || strstr(err, what) != NULL, "message lacks '%s': %s", what, err);
  ck_assert_ptr_null(a.data);
  ck_assert_int_eq(a.ndim, 0);
  an_npy_free(&a);
}

START_TEST(test_numpy_is_installed) {
  /* The other tests need it; this one makes the cause obvious. */
  char *out = an_test_python("import numpy; print(numpy.__name__)", "");
  ck_assert_str_eq(out, "numpy\n");
  free(out);
}
END_TEST

START_TEST(test_read_f32_4d) {
  an_npy_t a;
  static const int64_t shape[] = {2, 3, 4, 5};
  float v[120];
  read_ok("f32.npy", &a, AN_NPY_F32, 4, shape);
  ck_assert_uint_eq(an_npy_numel(&a), 120);
  ck_assert_uint_eq(a.nbytes, 480);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 120, v), 0);
  for (int i = 0; i < 120; i++)
    ck_assert_float_eq(v[i], i * 0.5f);
  /* A sub-range starts where asked. */
  ck_assert_int_eq(an_npy_to_f32(&a, 117, 3, v), 0);
  ck_assert_float_eq(v[0], 58.5f);
  ck_assert_float_eq(v[2], 59.5f);
  ck_assert_int_eq(an_npy_to_f32(&a, 118, 3, v), UV_EINVAL);
  ck_assert_int_eq(an_npy_to_f32(&a, 121, 0, v), UV_EINVAL);
  ck_assert_int_eq(an_npy_to_f32(&a, 120, 0, v), 0);
  ck_assert_int_eq(an_npy_to_f32(&a, 1, SIZE_MAX, v), UV_EINVAL);
  an_npy_free(&a);
  ck_assert_ptr_null(a.data);
  an_npy_free(&a); /* twice is fine */
}
END_TEST

START_TEST(test_read_f16) {
  an_npy_t a;
  static const int64_t shape[] = {43};
  float v[43];
  read_ok("f16.npy", &a, AN_NPY_F16, 1, shape);
  ck_assert_uint_eq(a.nbytes, 86);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 43, v), 0);
  for (int i = 0; i < 40; i++)
    ck_assert_float_eq(v[i], (i - 20) * 0.125f);
  ck_assert_float_eq(v[40], 65504.0f);
  ck_assert_float_eq(v[41], 0x1p-24f); /* the smallest subnormal */
  ck_assert_float_infinite(v[42]);
  ck_assert(v[42] > 0);
  an_npy_free(&a);
}
END_TEST

START_TEST(test_read_u8) {
  an_npy_t a;
  static const int64_t shape[] = {16, 16};
  float v[256];
  read_ok("u8.npy", &a, AN_NPY_U8, 2, shape);
  ck_assert_uint_eq(a.nbytes, 256);
  for (int i = 0; i < 256; i++)
    ck_assert_uint_eq(((uint8_t *)a.data)[i], i);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 256, v), 0);
  for (int i = 0; i < 256; i++)
    ck_assert_float_eq(v[i], (float)i);
  an_npy_free(&a);
}
END_TEST

START_TEST(test_read_f64_and_i64) {
  an_npy_t a;
  static const int64_t s64[] = {2, 5}, si[] = {10};
  float v[10];
  read_ok("f64.npy", &a, AN_NPY_F64, 2, s64);
  ck_assert_uint_eq(a.nbytes, 80);
  for (int i = 0; i < 10; i++)
    ck_assert_double_eq(((double *)a.data)[i], i / 4.0);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 10, v), 0);
  for (int i = 0; i < 10; i++)
    ck_assert_float_eq(v[i], i / 4.0f);
  an_npy_free(&a);

  read_ok("i64.npy", &a, AN_NPY_I64, 1, si);
  ck_assert_uint_eq(a.nbytes, 80);
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(((int64_t *)a.data)[i], (int64_t)(i - 5) * 1000000007);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 10, v), 0);
  for (int i = 0; i < 10; i++)
    ck_assert_float_eq(v[i], (float)((int64_t)(i - 5) * 1000000007));
  an_npy_free(&a);
}
END_TEST

START_TEST(test_read_scalar_one_tuple_empty_8d) {
  an_npy_t a;
  static const int64_t one[] = {5}, empty[] = {0, 3}, d8[] = {1, 1, 1, 1, 1, 1, 2, 3};
  float v[6];
  char *path;

  read_ok("scalar.npy", &a, AN_NPY_F32, 0, NULL);
  ck_assert_uint_eq(an_npy_numel(&a), 1);
  ck_assert_uint_eq(a.nbytes, 4);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 1, v), 0);
  ck_assert_float_eq(v[0], 3.25f);
  an_npy_free(&a);

  read_ok("one.npy", &a, AN_NPY_F32, 1, one);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 5, v), 0);
  for (int i = 0; i < 5; i++)
    ck_assert_float_eq(v[i], i + 1.0f);
  an_npy_free(&a);

  read_ok("empty.npy", &a, AN_NPY_F32, 2, empty);
  ck_assert_uint_eq(an_npy_numel(&a), 0);
  ck_assert_uint_eq(a.nbytes, 0);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 0, v), 0);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 1, v), UV_EINVAL);
  an_npy_free(&a);

  read_ok("dims8.npy", &a, AN_NPY_F32, 8, d8);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 6, v), 0);
  for (int i = 0; i < 6; i++)
    ck_assert_float_eq(v[i], (float)i);
  an_npy_free(&a);

  read_fails((path = an_test_scratch_path("dims9.npy")), 0, AN_EUNSUPPORTED, "8 dimensions");
  free(path);
}
END_TEST

START_TEST(test_read_versions_2_and_3) {
  an_npy_t a;
  static const int64_t shape[] = {3, 4};
  float v[12];
  const char *names[] = {"v2.npy", "v3.npy"};
  for (int k = 0; k < 2; k++) {
    read_ok(names[k], &a, AN_NPY_F32, 2, shape);
    ck_assert_int_eq(an_npy_to_f32(&a, 0, 12, v), 0);
    for (int i = 0; i < 12; i++)
      ck_assert_float_eq(v[i], i * -1.5f);
    an_npy_free(&a);
  }
}
END_TEST

START_TEST(test_read_refuses_what_it_cannot_hold) {
  static const struct { const char *name, *what; } cases[] = {
      {"fortran.npy", "Fortran"},
      {"big.npy", "big-endian"},
      {"c64.npy", "unsupported dtype"},
      {"rec.npy", "structured"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char *path = an_test_scratch_path(cases[i].name);
    read_fails(path, 0, AN_EUNSUPPORTED, cases[i].what);
    free(path);
  }
}
END_TEST

START_TEST(test_read_max_bytes) {
  an_npy_t a;
  char err[512], *path = an_test_scratch_path("f32.npy");
  read_fails(path, 479, AN_ETOOBIG, "limit");
  ck_assert_int_eq(an_npy_read(path, 480, &a, err, sizeof err), 0);
  an_npy_free(&a);
  free(path);
}
END_TEST

/* ---- we write, NumPy reads -------------------------------------------- */

/* Prints dtype, shape, the sum and an index-weighted sum (which catches a
 * wrong order), the format version and where the data starts modulo 64. */
static const char numpy_check[] =
    "import sys, numpy as np\n"
    "p = sys.argv[1]\n"
    "a = np.load(p)\n"
    "x = a.astype(np.float64)\n"
    "w = (x * np.arange(x.size).reshape(x.shape)).sum()\n"
    "with open(p, 'rb') as f:\n"
    "    v = np.lib.format.read_magic(f)\n"
    "    np.lib.format.read_array_header_1_0(f)\n"
    "    off = f.tell()\n"
    "print(a.dtype.str, ','.join(map(str, a.shape)) or '-', a.flags.c_contiguous,\n"
    "      '%.17g' % x.sum(), '%.17g' % w, '%d.%d' % v, off % 64)\n";

static double element(an_npy_dtype_t t, size_t i) {
  switch (t) {
  case AN_NPY_F32:
    return i * 0.5;
  case AN_NPY_F16:
    return ((double)i - 10) * 0.25;
  case AN_NPY_U8:
    return (double)((i * 7) % 256);
  case AN_NPY_F64:
    return i / 8.0;
  case AN_NPY_I64:
    return ((double)i - 3) * 123456789012.0;
  }
  return 0;
}

static void fill(an_npy_dtype_t t, void *data, size_t n) {
  __extension__ typedef _Float16 half_t;
  for (size_t i = 0; i < n; i++) {
    double x = element(t, i);
    switch (t) {
    case AN_NPY_F32:
      ((float *)data)[i] = (float)x;
      break;
    case AN_NPY_F16:
      ((half_t *)data)[i] = (half_t)x;
      break;
    case AN_NPY_U8:
      ((uint8_t *)data)[i] = (uint8_t)x;
      break;
    case AN_NPY_F64:
      ((double *)data)[i] = x;
      break;
    case AN_NPY_I64:
      ((int64_t *)data)[i] = (int64_t)x;
      break;
    }
  }
}

START_TEST(test_write_read_back_by_numpy) {
  static const struct {
    an_npy_dtype_t dtype;
    const char *descr;
    int ndim;
    int64_t shape[AN_NPY_MAX_DIMS];
  } cases[] = {
      {AN_NPY_F32, "<f4", 3, {2, 3, 4}},
      {AN_NPY_F16, "<f2", 1, {24}},
      {AN_NPY_U8, "|u1", 2, {4, 6}},
      {AN_NPY_F64, "<f8", 4, {2, 2, 2, 3}},
      {AN_NPY_I64, "<i8", 2, {3, 8}},
      {AN_NPY_F64, "<f8", 0, {0}},
      {AN_NPY_F32, "<f4", 2, {0, 3}},
      {AN_NPY_F32, "<f4", 8, {1, 2, 1, 3, 1, 2, 1, 2}},
      {AN_NPY_U8, "|u1", 1, {1000}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    uint64_t data[1000 / 8 + 1];
    size_t n = 1;
    double sum = 0, weighted = 0;
    char name[32], shape[128] = "", want[256], err[512] = "", *path, *out;
    an_npy_t a;

    for (int i = 0; i < cases[c].ndim; i++) {
      n *= (size_t)cases[c].shape[i];
      snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", i ? "," : "",
               (long long)cases[c].shape[i]);
    }
    fill(cases[c].dtype, data, n);
    for (size_t i = 0; i < n; i++) {
      sum += element(cases[c].dtype, i);
      weighted += element(cases[c].dtype, i) * (double)i;
    }
    snprintf(name, sizeof name, "w%zu.npy", c);
    path = an_test_scratch_path(name);
    ck_assert_msg(an_npy_write(path, cases[c].dtype, cases[c].ndim, cases[c].shape, data, err,
                               sizeof err) == 0, "%s", err);

    out = an_test_python(numpy_check, path);
    snprintf(want, sizeof want, "%s %s True %.17g %.17g 1.0 0\n", cases[c].descr,
             cases[c].ndim ? shape : "-", sum, weighted);
    ck_assert_msg(strcmp(out, want) == 0, "case %zu: numpy says %s, want %s", c, out, want);
    free(out);

    /* And our own reader agrees, bit for bit. */
    ck_assert_msg(an_npy_read(path, 0, &a, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(a.dtype, cases[c].dtype);
    ck_assert_int_eq(a.ndim, cases[c].ndim);
    ck_assert_uint_eq(an_npy_numel(&a), n);
    ck_assert_int_eq(memcmp(a.data, data, a.nbytes), 0);
    an_npy_free(&a);

    /* No temporary file is left behind. */
    size_t tl = strlen(path) + 5;
    char *tmp = malloc(tl);
    snprintf(tmp, tl, "%s.tmp", path);
    ck_assert_int_eq(access(tmp, F_OK), -1);
    free(tmp);
    free(path);
  }
}
END_TEST

START_TEST(test_write_replaces_and_refuses) {
  static const int64_t s3[] = {3}, neg[] = {2, -1}, huge[] = {INT64_MAX, INT64_MAX};
  static const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  float first[3] = {1, 2, 3}, second[3] = {4, 5, 6}, v[3];
  char err[512], *path = an_test_scratch_path("replace.npy");
  an_npy_t a;

  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 1, s3, first, err, sizeof err), 0);
  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 1, s3, second, err, sizeof err), 0);
  ck_assert_int_eq(an_npy_read(path, 0, &a, err, sizeof err), 0);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 3, v), 0);
  ck_assert_float_eq(v[0], 4);
  ck_assert_float_eq(v[2], 6);
  an_npy_free(&a);

  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 2, neg, first, err, sizeof err), UV_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "negative"));
  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 2, huge, first, err, sizeof err), UV_EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "overflow"));
  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 9, nine, first, err, sizeof err), UV_EINVAL);
  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, -1, s3, first, err, sizeof err), UV_EINVAL);
  ck_assert_int_eq(an_npy_write(path, (an_npy_dtype_t)99, 1, s3, first, err, sizeof err),
                   UV_EINVAL);
  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 1, s3, NULL, err, sizeof err), UV_EINVAL);
  /* The refused writes left the file as it was. */
  ck_assert_int_eq(an_npy_read(path, 0, &a, err, sizeof err), 0);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 3, v), 0);
  ck_assert_float_eq(v[1], 5);
  an_npy_free(&a);
  free(path);

  path = an_test_scratch_path("no/such/dir.npy");
  ck_assert_int_eq(an_npy_write(path, AN_NPY_F32, 1, s3, first, err, sizeof err), UV_ENOENT);
  ck_assert_ptr_nonnull(strstr(err, path));
  free(path);
}
END_TEST

/* ---- malformed files, built here -------------------------------------- */

/* Writes magic, version major.0, the header length (u16 or u32) and the
 * header exactly as given, then `datalen` bytes of data. */
static char *write_raw(const char *name, int major, const char *header, size_t hlen,
                       uint32_t claimed_hlen, size_t datalen) {
  char *path = an_test_scratch_path(name);
  FILE *f = fopen(path, "wb");
  uint8_t pre[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (uint8_t)major, 0};
  size_t prelen = major == 1 ? 10 : 12;
  ck_assert_ptr_nonnull(f);
  for (int i = 0; i < (major == 1 ? 2 : 4); i++)
    pre[8 + i] = (uint8_t)(claimed_hlen >> (8 * i));
  ck_assert_uint_eq(fwrite(pre, 1, prelen, f), prelen);
  ck_assert_uint_eq(fwrite(header, 1, hlen, f), hlen);
  for (size_t i = 0; i < datalen; i++)
    ck_assert_int_ne(fputc((int)(i & 0xff), f), EOF);
  ck_assert_int_eq(fclose(f), 0);
  return path;
}

static char *write_header(const char *name, const char *header, size_t datalen) {
  return write_raw(name, 1, header, strlen(header), (uint32_t)strlen(header), datalen);
}

static void header_ok(const char *header, size_t datalen, an_npy_dtype_t dtype, int ndim,
                      int64_t dim0) {
  char *path = write_header("ok.npy", header, datalen), err[512] = "";
  an_npy_t a;
  int rc = an_npy_read(path, 0, &a, err, sizeof err);
  ck_assert_msg(rc == 0, "'%s' refused: %s", header, err);
  ck_assert_int_eq(a.dtype, dtype);
  ck_assert_int_eq(a.ndim, ndim);
  if (ndim)
    ck_assert_int_eq(a.shape[0], dim0);
  ck_assert_uint_eq(a.nbytes, datalen);
  an_npy_free(&a);
  free(path);
}

START_TEST(test_header_variants_accepted) {
  /* Key order, quotes, spacing, trailing commas, byte-order marks, old 'L'. */
  header_ok("{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}\n", 24, AN_NPY_F32, 2, 2);
  header_ok("{\"descr\":\"<f2\",\"fortran_order\":False,\"shape\":(7,)}", 14, AN_NPY_F16, 1, 7);
  header_ok("  {  'descr' : '=f8' ,\n 'fortran_order' : False ,\t'shape' : ( 3 , ) , }   \n",
            24, AN_NPY_F64, 1, 3);
  header_ok("{'descr': '|u1', 'fortran_order': False, 'shape': (3L, 2L), }\n", 6, AN_NPY_U8, 2,
            3);
  header_ok("{'descr': 'u1', 'fortran_order': False, 'shape': (4,), }\n", 4, AN_NPY_U8, 1, 4);
  header_ok("{'descr': '<i8', 'fortran_order': False, 'shape': (), }\n", 8, AN_NPY_I64, 0, 0);
  header_ok("{'descr': 'f4', 'fortran_order': False, 'shape': (0,), }\n", 0, AN_NPY_F32, 1, 0);
}
END_TEST

START_TEST(test_bad_magic_version_and_short_files) {
  static const char good[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n";
  char *path = an_test_scratch_path("magic.npy");
  FILE *f = fopen(path, "wb");
  ck_assert_uint_eq(fwrite("\x93NUMPX\x01\x00\x3b\x00", 1, 10, f), 10);
  fputs(good, f);
  fclose(f);
  read_fails(path, 0, AN_EFORMAT, "bad magic");
  free(path);

  path = an_test_scratch_path("zero.npy");
  fclose(fopen(path, "wb"));
  read_fails(path, 0, AN_EFORMAT, "bad magic");
  free(path);

  path = an_test_scratch_path("pickle.npy");
  f = fopen(path, "wb");
  fputs("\x80\x04\x95", f);
  fclose(f);
  read_fails(path, 0, AN_EFORMAT, "bad magic");
  free(path);

  path = write_raw("v4.npy", 4, good, strlen(good), (uint32_t)strlen(good), 8);
  read_fails(path, 0, AN_EUNSUPPORTED, "version 4.0");
  free(path);

  path = write_raw("v1short.npy", 1, "", 0, 0, 0);
  ck_assert_int_eq(truncate(path, 9), 0); /* half a length field */
  read_fails(path, 0, AN_EFORMAT, "truncated");
  free(path);

  path = write_raw("hshort.npy", 1, good, 20, (uint32_t)strlen(good), 0);
  read_fails(path, 0, AN_EFORMAT, "truncated .npy header");
  free(path);

  path = an_test_scratch_path("missing.npy");
  read_fails(path, 0, UV_ENOENT, "cannot open");
  free(path);
  read_fails(an_test_scratch(), 0, UV_EISDIR, "directory");
}
END_TEST

START_TEST(test_header_over_64k) {
  /* Refused from the length field alone, before anything is allocated. */
  char *path = write_raw("huge.npy", 2, "{", 1, 0xffffffffu, 0);
  read_fails(path, 0, AN_ETOOBIG, "64 KiB");
  free(path);
  path = write_raw("huge2.npy", 3, "{", 1, (64u << 10) + 1, 0);
  read_fails(path, 0, AN_ETOOBIG, "64 KiB");
  free(path);

  /* Exactly 64 KiB is allowed, and real. */
  static const char dict[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  size_t hlen = 64u << 10;
  char *header = malloc(hlen);
  memset(header, ' ', hlen);
  memcpy(header, dict, strlen(dict));
  header[hlen - 1] = '\n';
  path = write_raw("big_ok.npy", 2, header, hlen, (uint32_t)hlen, 8);
  an_npy_t a;
  char err[512];
  ck_assert_msg(an_npy_read(path, 0, &a, err, sizeof err) == 0, "%s", err);
  an_npy_free(&a);
  free(path);
  free(header);
}
END_TEST

START_TEST(test_malformed_headers) {
  static const struct { const char *header, *what; int code, major; } cases[] = {
      {"garbage\n", "malformed header dict", AN_EFORMAT},
      {"", "malformed header dict", AN_EFORMAT},
      {"{}", "lacks", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False}", "lacks", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), ", "malformed", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk", "junk", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}}", "junk", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': Falsey, 'shape': (2,)}", "fortran_order", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "fortran_order", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", "tuple", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': 2}", "shape", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,,)}", "shape", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (,)}", "shape", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2 3)}", "shape", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2.5,)}", "shape", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,)}", "shape", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3)}", "negative", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "absurd",
       AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}",
       "overflows", AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296)}",
       "overflows", AN_EFORMAT},
      {"{'descr': '<f8', 'fortran_order': False, 'shape': (3074457345618258603,)}", "overflows",
       AN_EFORMAT},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,)}", "limit",
       AN_ETOOBIG},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "key",
       AN_EFORMAT},
      {"{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", "key",
       AN_EFORMAT},
      {"{'descr: '<f4', 'fortran_order': False, 'shape': (2,)}", "malformed", AN_EFORMAT},
      {"{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", "unsupported", AN_EUNSUPPORTED},
      {"{'descr': '<f4\\x', 'fortran_order': False, 'shape': (2,)}", "descr", AN_EFORMAT},
      {"{'descr': <f4, 'fortran_order': False, 'shape': (2,)}", "descr", AN_EFORMAT},
      {"{'descr': '|f4', 'fortran_order': False, 'shape': (2,)}", "ambiguous", AN_EUNSUPPORTED},
      /* Python 2's 'L' never appears in a 3.0 header. */
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1L,)}", "shape", AN_EFORMAT, 3},
      {"{'descr' '<f4', 'fortran_order': False, 'shape': (2,)}", "malformed", AN_EFORMAT},
      {"{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}", "malformed", AN_EFORMAT},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *h = cases[i].header;
    int major = cases[i].major ? cases[i].major : 1;
    char *path = write_raw("bad.npy", major, h, strlen(h), (uint32_t)strlen(h), 8);
    read_fails(path, 0, cases[i].code, cases[i].what);
    free(path);
  }

  /* A NUL byte inside the header is garbage, not an end of string. */
  static const char nul[] = "{'descr': '<f4', 'fortran_order': False, 'sh\0ape': (2,)}";
  char *path = write_raw("nul.npy", 1, nul, sizeof nul - 1, sizeof nul - 1, 8);
  read_fails(path, 0, AN_EFORMAT, "malformed");
  free(path);
}
END_TEST

static const char f4x3[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n";

START_TEST(test_truncated_and_trailing_data) {
  char *path = write_header("short.npy", f4x3, 11);
  read_fails(path, 0, AN_EFORMAT, "truncated");
  free(path);
  path = write_header("nodata.npy", f4x3, 0);
  read_fails(path, 0, AN_EFORMAT, "truncated");
  free(path);
  path = write_header("long.npy", f4x3, 13);
  read_fails(path, 0, AN_EFORMAT, "trailing");
  free(path);
  path = write_header("exact.npy", f4x3, 12);
  an_npy_t a;
  char err[512];
  ck_assert_msg(an_npy_read(path, 0, &a, err, sizeof err) == 0, "%s", err);
  an_npy_free(&a);
  free(path);
}
END_TEST

/* Every proper prefix of a good file is an error, never a crash. */
START_TEST(test_every_truncation) {
  char *path = write_header("full.npy", f4x3, 12), err[512];
  size_t total = 10 + strlen(f4x3) + 12;
  an_npy_t a;
  ck_assert_int_eq(an_npy_read(path, 0, &a, err, sizeof err), 0);
  an_npy_free(&a);
  for (size_t n = 0; n < total; n++) {
    ck_assert_int_eq(truncate(path, (off_t)n), 0);
    read_fails(path, 0, AN_EFORMAT, NULL);
  }
  free(path);
}
END_TEST

/* Random byte damage to the header: an error or a consistent array. */
START_TEST(test_random_damage) {
  char *good = write_header("good.npy", f4x3, 12), *path = an_test_scratch_path("damaged.npy"),
       err[512];
  size_t total = 10 + strlen(f4x3) + 12;
  uint8_t bytes[256], copy[256];
  uint64_t seed = 0x6e7079;
  FILE *f = fopen(good, "rb");
  ck_assert_uint_eq(fread(bytes, 1, total, f), total);
  fclose(f);
  for (int iter = 0; iter < 3000; iter++) {
    an_npy_t a;
    int rc, flips = 1 + (int)(an_test_rand(&seed) % 4);
    memcpy(copy, bytes, total);
    for (int k = 0; k < flips; k++) {
      size_t at = an_test_rand(&seed) % (total - 12);
      copy[at] = (uint8_t)an_test_rand(&seed);
    }
    f = fopen(path, "wb");
    ck_assert_uint_eq(fwrite(copy, 1, total, f), total);
    fclose(f);
    err[0] = '\0';
    rc = an_npy_read(path, 0, &a, err, sizeof err);
    if (rc == 0) {
      static const size_t size[] = {[AN_NPY_F32] = 4, [AN_NPY_F16] = 2, [AN_NPY_U8] = 1,
                                    [AN_NPY_F64] = 8, [AN_NPY_I64] = 8};
      ck_assert_uint_eq(a.nbytes, 12);
      ck_assert_uint_eq(a.nbytes, an_npy_numel(&a) * size[a.dtype]);
    } else {
      ck_assert_int_lt(rc, 0);
      ck_assert_msg(strstr(err, path), "iteration %d: %s", iter, err);
      ck_assert_ptr_null(a.data);
    }
    an_npy_free(&a);
  }
  free(good);
  free(path);
}
END_TEST

/* From a pipe, written one byte per write(): no file size to lean on, so the
 * reads alone must find short data and trailing bytes. */
static int read_from_pipe(const uint8_t *bytes, size_t n, an_npy_t *a, char *err, size_t errlen) {
  int fds[2], rc, ws;
  char path[64];
  pid_t pid;
  ck_assert_int_eq(pipe(fds), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    for (size_t i = 0; i < n; i++)
      if (write(fds[1], bytes + i, 1) != 1)
        _exit(1);
    _exit(0);
  }
  close(fds[1]);
  snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
  rc = an_npy_read(path, 0, a, err, errlen);
  close(fds[0]);
  waitpid(pid, &ws, 0);
  ck_assert_msg(strstr(err, path) || rc == 0, "%s", err);
  return rc;
}

START_TEST(test_read_from_pipe_byte_by_byte) {
  uint8_t bytes[256];
  size_t hl = strlen(f4x3), total = 10 + hl + 12;
  char err[512] = "";
  an_npy_t a;
  float v[3] = {1.5f, -2, 1e30f};
  memcpy(bytes, "\x93NUMPY\x01\x00", 8);
  bytes[8] = (uint8_t)hl;
  bytes[9] = 0;
  memcpy(bytes + 10, f4x3, hl);
  memcpy(bytes + 10 + hl, v, 12);
  bytes[total] = 0;

  ck_assert_msg(read_from_pipe(bytes, total, &a, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(an_npy_to_f32(&a, 0, 3, v), 0);
  ck_assert_float_eq(v[0], 1.5f);
  ck_assert_float_eq(v[2], 1e30f);
  an_npy_free(&a);
  ck_assert_int_eq(read_from_pipe(bytes, total - 1, &a, err, sizeof err), AN_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "truncated"));
  ck_assert_int_eq(read_from_pipe(bytes, total + 1, &a, err, sizeof err), AN_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "trailing"));
  ck_assert_int_eq(read_from_pipe(bytes, 30, &a, err, sizeof err), AN_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "truncated .npy header"));
}
END_TEST

static Suite *npy_suite(void) {
  Suite *s = suite_create("npy");
  TCase *numpy = tcase_create("numpy");
  TCase *bad = tcase_create("built-here");
  tcase_add_checked_fixture(numpy, make_numpy_files, an_test_scratch_remove);
  tcase_set_timeout(numpy, 60);
  tcase_add_test(numpy, test_numpy_is_installed);
  tcase_add_test(numpy, test_read_f32_4d);
  tcase_add_test(numpy, test_read_f16);
  tcase_add_test(numpy, test_read_u8);
  tcase_add_test(numpy, test_read_f64_and_i64);
  tcase_add_test(numpy, test_read_scalar_one_tuple_empty_8d);
  tcase_add_test(numpy, test_read_versions_2_and_3);
  tcase_add_test(numpy, test_read_refuses_what_it_cannot_hold);
  tcase_add_test(numpy, test_read_max_bytes);
  tcase_add_test(numpy, test_write_read_back_by_numpy);
  suite_add_tcase(s, numpy);
  tcase_add_checked_fixture(bad, an_test_scratch_make, an_test_scratch_remove);
  tcase_set_timeout(bad, 60);
  tcase_add_test(bad, test_write_replaces_and_refuses);
  tcase_add_test(bad, test_header_variants_accepted);
  tcase_add_test(bad, test_bad_magic_version_and_short_files);
  tcase_add_test(bad, test_header_over_64k);
  tcase_add_test(bad, test_malformed_headers);
  tcase_add_test(bad, test_truncated_and_trailing_data);
  tcase_add_test(bad, test_every_truncation);
  tcase_add_test(bad, test_random_damage);
  tcase_add_test(bad, test_read_from_pipe_byte_by_byte);
  suite_add_tcase(s, bad);
  return s;
}

AN_TEST_MAIN(npy_suite)
