/* The validation sandbox end to end: an_validate_start on the test's own
 * loop runs the real archnet-broker (ARCHNET_BROKER, set by meson) as
 * `score` in a child process.
 *
 *  - A real classifier (common/nn's cnn-small, exported to ONNX) is scored
 *    on generated validation sets in float32, float16 and uint8; the
 *    expected accuracy comes from other code: logits from common/nn's own
 *    engine (not the ONNX runtime), argmax and accuracy by numpy.
 *  - Models that must be rejected with a reason: wrong input shape, wrong
 *    number of classes, NaN scores, malformed files (the fuzzer's
 *    regressions, random and truncated bytes), a slow model (wall clock and
 *    CPU limits), a memory-hungry one.
 *  - The limits really applied to the child, read from /proc/PID/limits.
 *  - The parent against a scorer that misbehaves (fake scorers written as
 *    shell scripts): garbage, floods, crashes, hangs.
 * Every case ends with uv_loop_close() == 0 on the test's loop. */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "common/blob/npy.h"
#include "common/error.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/spec.h"
#include "proto/onnx.pb-c.h"
#include "server/validate.h"
#include "tests/support/testutil.h"

/* Debian's interpreter, which has numpy (a bare `python3` may not). */
#define PYTHON "/usr/bin/python3"

/* The child runs without RLIMIT_AS under AddressSanitizer (see
 * server/validate.c); the test is built with the same flags. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static const char *env_or_fail(const char *var) {
  const char *p = getenv(var);
  ck_assert_msg(p != NULL, "%s is not set; run this test through meson", var);
  return p;
}

/* ---- running a scoring on a private loop ---- */

typedef struct outcome {
  int calls;
  an_validate_result_t r;
  double seconds;
} outcome_t;

static void on_scored(const an_validate_result_t *r, void *arg) {
  outcome_t *o = arg;
  o->calls++;
  o->r = *r;
}

/* Reads the limits of the scoring child while it runs (see probe_tick). */
typedef struct limits_probe {
  uv_timer_t timer;
  int found;
  char limits[4096]; /* /proc/PID/limits once the child has confined itself */
} limits_probe_t;

/* The pid of a child of this process, or -1. */
static pid_t find_child(void) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  pid_t found = -1;
  ck_assert_ptr_nonnull(d);
  while (found < 0 && (e = readdir(d)) != NULL) {
    char path[300], buf[1024];
    FILE *f;
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    if (!(f = fopen(path, "r")))
      continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces, so from the last ')' */
    char *close = strrchr(buf, ')');
    int ppid = -1;
    if (close && sscanf(close + 1, " %*c %d", &ppid) == 1 && ppid == (int)getpid())
      found = (pid_t)atoi(e->d_name);
  }
  closedir(d);
  return found;
}

static void probe_tick(uv_timer_t *t) {
  limits_probe_t *p = t->data;
  pid_t pid = find_child();
  char path[64];
  FILE *f;
  if (pid < 0 || p->found)
    return;
  snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
  if (!(f = fopen(path, "r")))
    return;
  size_t n = fread(p->limits, 1, sizeof p->limits - 1, f);
  fclose(f);
  p->limits[n] = '\0';
  /* RLIMIT_NOFILE is the child's last limit: once it shows, all are set. */
  char *line = strstr(p->limits, "Max open files");
  char soft[32] = "";
  if (line && sscanf(line + 26, "%31s", soft) == 1 && strcmp(soft, "32") == 0)
    p->found = 1;
}

/* Runs one scoring to the end; checks the callback came exactly once and
 * the loop closes with nothing left on it. */
static void score(const an_validate_params_t *p, outcome_t *o, limits_probe_t *probe) {
  uv_loop_t loop;
  uint64_t t0;
  memset(o, 0, sizeof *o);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  t0 = uv_hrtime();
  int rc = an_validate_start(&loop, p, on_scored, o);
  ck_assert_msg(rc == 0, "an_validate_start: %s", an_strerror(rc));
  if (probe) {
    memset(probe, 0, sizeof *probe);
    probe->timer.data = probe;
    ck_assert_int_eq(uv_timer_init(&loop, &probe->timer), 0);
    ck_assert_int_eq(uv_timer_start(&probe->timer, probe_tick, 20, 20), 0);
    uv_unref((uv_handle_t *)&probe->timer); /* the scoring alone keeps the loop running */
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  o->seconds = (double)(uv_hrtime() - t0) * 1e-9;
  if (probe) {
    uv_close((uv_handle_t *)&probe->timer, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  ck_assert_int_eq(o->calls, 1);
  /* Nothing is left running: libuv reaped the child, and a kill reached
   * its whole process group. */
  ck_assert_int_eq(find_child(), -1);
}

static void expect_rejected(const outcome_t *o, const char *in_reason, const char *what) {
  ck_assert_msg(!o->r.ok, "%s: accepted (accuracy %g)", what, o->r.accuracy);
  ck_assert_msg(strstr(o->r.reason, in_reason) != NULL, "%s: reason \"%s\" lacks \"%s\"", what,
                o->r.reason, in_reason);
}

/* ---- files ---- */

typedef struct fixture {
  char *dir;
  char model[512], x[512], y[512];
} fixture_t;

static void fixture_init(fixture_t *f) {
  f->dir = an_test_tmpdir();
  ck_assert_ptr_nonnull(f->dir);
  snprintf(f->model, sizeof f->model, "%s/model.onnx", f->dir);
  snprintf(f->x, sizeof f->x, "%s/val_x.npy", f->dir);
  snprintf(f->y, sizeof f->y, "%s/val_y.npy", f->dir);
}

static void fixture_done(fixture_t *f) {
  an_test_rmtree(f->dir);
  free(f->dir);
}

static void path_in(const fixture_t *f, const char *name, char *buf, size_t len) {
  snprintf(buf, len, "%s/%s", f->dir, name);
}

static void write_npy(const char *path, an_npy_dtype_t dtype, int ndim, const int64_t *shape,
                      const void *data) {
  char err[512] = "";
  int rc = an_npy_write(path, dtype, ndim, shape, data, err, sizeof err);
  ck_assert_msg(rc == 0, "writing %s: %s", path, err);
}

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *fp = fopen(path, "wb");
  ck_assert_ptr_nonnull(fp);
  ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
  ck_assert_int_eq(fclose(fp), 0);
}

static uint8_t *read_bytes(const char *path, size_t *len) {
  FILE *fp = fopen(path, "rb");
  uint8_t *buf;
  long n;
  ck_assert_msg(fp != NULL, "cannot open %s", path);
  ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
  n = ftell(fp);
  ck_assert_int_ge(n, 0);
  rewind(fp);
  buf = malloc((size_t)n + 1);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
  fclose(fp);
  *len = (size_t)n;
  return buf;
}

static void export_model(an_model_t *m, const char *path) {
  an_onnx_export_opts_t opts = {.last = -1};
  char err[512] = "";
  int rc = an_onnx_export(m, &opts, path, err, sizeof err);
  ck_assert_msg(rc == 0, "export: %s", err);
}

/* A model from spec text (or a preset when `preset` is set), initialised
 * with a fixed seed and exported to `path`. Returned for running it with
 * common/nn's engine; the caller frees it. */
static an_model_t *build_model(const char *spec, const char *preset, const int chw[3],
                               int classes, const char *path) {
  an_model_t *m = NULL;
  char err[512] = "";
  int rc = preset ? an_model_preset(preset, chw, classes, &m, err, sizeof err)
                  : an_model_parse(spec, &m, err, sizeof err);
  ck_assert_msg(rc == 0, "model: %s", err);
  ck_assert_int_eq(an_model_finalize(m, AN_INIT_UNIFORM, 42, err, sizeof err), 0);
  if (path)
    export_model(m, path);
  return m;
}

/* A validation set of n images of zeros and labels 0, for the models that
 * must be rejected before the data matters. */
static void write_zero_set(const fixture_t *f, int64_t n, const int chw[3]) {
  size_t count = (size_t)n * (size_t)chw[0] * (size_t)chw[1] * (size_t)chw[2];
  float *x = calloc(count, sizeof *x);
  uint8_t *y = calloc((size_t)n, 1);
  ck_assert(x && y);
  write_npy(f->x, AN_NPY_F32, 4, (int64_t[]){n, chw[0], chw[1], chw[2]}, x);
  write_npy(f->y, AN_NPY_U8, 1, (int64_t[]){n}, y);
  free(x);
  free(y);
}

static an_validate_params_t params_for(const fixture_t *f, const int chw[3], int classes) {
  an_validate_params_t p = {
      .exe = env_or_fail("ARCHNET_BROKER"),
      .model_path = f->model,
      .x_path = f->x,
      .y_path = f->y,
      .input_c = chw[0],
      .input_h = chw[1],
      .input_w = chw[2],
      .classes = classes,
      .max_memory_bytes = (uint64_t)4 << 30,
      .max_cpu_seconds = 120,
      .max_wall_seconds = 120,
  };
  return p;
}

/* ---- a real classifier, checked against numpy ---- */

enum { N_IMAGES = 300, CLASSES = 5 }; /* 300: a full batch of 256 and a partial one */
static const int CHW[3] = {2, 16, 16};

typedef enum set_kind { SET_F32, SET_F16, SET_U8 } set_kind_t;

/* Counts the images numpy finds correct from the engine's logits, and how
 * many of them have a top-two margin so thin that another float32 runtime
 * may rank them the other way. */
static void numpy_accuracy(const char *logits, const char *labels, long *correct,
                           long *uncertain) {
  static const char script[] =
      "import sys\n"
      "import numpy as np\n"
      "l = np.load(sys.argv[1]).astype(np.float64)\n"
      "y = np.load(sys.argv[2]).astype(np.int64)\n"
      "top = np.sort(l, axis=1)\n"
      "thin = (top[:, -1] - top[:, -2]) <= 1e-4 * np.abs(l).max(axis=1) + 1e-5\n"
      "print(int((l.argmax(axis=1) == y).sum()), int(thin.sum()))\n";
  char *argv[] = {PYTHON, "-c", (char *)script, (char *)logits, (char *)labels, NULL};
  char *out = NULL, *err = NULL;
  int status = an_test_run(argv, &out, &err);
  ck_assert_msg(status == 0, "numpy failed: %s", err ? err : "");
  ck_assert_int_eq(sscanf(out, "%ld %ld", correct, uncertain), 2);
  free(out);
  free(err);
}

/* numpy converts the float32 set to float16 (checking that nothing was
 * rounded, so the engine's logits still apply). */
static void numpy_to_f16(const char *from, const char *to) {
  static const char script[] =
      "import sys\n"
      "import numpy as np\n"
      "x = np.load(sys.argv[1])\n"
      "h = x.astype(np.float16)\n"
      "assert (h.astype(np.float32) == x).all()\n"
      "np.save(sys.argv[2], h)\n";
  char *argv[] = {PYTHON, "-c", (char *)script, (char *)from, (char *)to, NULL};
  char *err = NULL;
  int status = an_test_run(argv, NULL, &err);
  ck_assert_msg(status == 0, "numpy failed: %s", err ? err : "");
  free(err);
}

static void check_accuracy(set_kind_t kind, an_npy_dtype_t label_dtype) {
  fixture_t f;
  size_t per = (size_t)CHW[0] * CHW[1] * CHW[2], count = N_IMAGES * per;
  float *x = malloc(count * sizeof *x);
  uint8_t *x8 = malloc(count), *y8 = malloc(N_IMAGES);
  int64_t *y64 = malloc(N_IMAGES * sizeof *y64);
  const float *logits = NULL;
  char err[512], logits_path[600], x32_path[600];
  uint64_t rng = 1000 + (uint64_t)kind;
  long correct = 0, uncertain = 0;
  outcome_t o;

  ck_assert(x && x8 && y8 && y64);
  fixture_init(&f);
  /* float32 and float16 sets hold multiples of 1/64 in [-2, 2], exact in
   * both; the uint8 set holds 0..255, which the model sees as they are. */
  for (size_t i = 0; i < count; i++) {
    uint64_t r = an_test_rand(&rng);
    x8[i] = (uint8_t)r;
    x[i] = kind == SET_U8 ? (float)x8[i] : (float)((int)(r % 257) - 128) / 64.0f;
  }
  an_model_t *m = build_model(NULL, "cnn-small", CHW, CLASSES, f.model);
  ck_assert_int_eq(an_model_plan(m, N_IMAGES, 0, err, sizeof err), 0);
  ck_assert_int_eq(an_model_forward(m, x, 0, &logits), 0);
  /* Labels: the engine's own answer for 7 images in 10, a random class for
   * the rest, so that the accuracy is neither trivial nor perfect. */
  for (int i = 0; i < N_IMAGES; i++) {
    int best = 0;
    for (int k = 1; k < CLASSES; k++)
      if (logits[i * CLASSES + k] > logits[i * CLASSES + best])
        best = k;
    y8[i] = (uint8_t)(i % 10 < 7 ? best : (int)(an_test_rand(&rng) % CLASSES));
    y64[i] = y8[i];
  }
  path_in(&f, "logits.npy", logits_path, sizeof logits_path);
  write_npy(logits_path, AN_NPY_F32, 2, (int64_t[]){N_IMAGES, CLASSES}, logits);
  if (label_dtype == AN_NPY_U8)
    write_npy(f.y, AN_NPY_U8, 1, (int64_t[]){N_IMAGES}, y8);
  else
    write_npy(f.y, AN_NPY_I64, 1, (int64_t[]){N_IMAGES}, y64);
  const int64_t shape[4] = {N_IMAGES, CHW[0], CHW[1], CHW[2]};
  if (kind == SET_U8) {
    write_npy(f.x, AN_NPY_U8, 4, shape, x8);
  } else if (kind == SET_F16) {
    path_in(&f, "val_x32.npy", x32_path, sizeof x32_path);
    write_npy(x32_path, AN_NPY_F32, 4, shape, x);
    numpy_to_f16(x32_path, f.x);
  } else {
    write_npy(f.x, AN_NPY_F32, 4, shape, x);
  }
  numpy_accuracy(logits_path, f.y, &correct, &uncertain);

  an_validate_params_t p = params_for(&f, CHW, CLASSES);
  score(&p, &o, NULL);
  ck_assert_msg(o.r.ok, "rejected: %s", o.r.reason);
  ck_assert_int_eq(o.r.images, N_IMAGES);
  long got = lround(o.r.accuracy * N_IMAGES);
  ck_assert_double_eq_tol(o.r.accuracy, (double)got / N_IMAGES, 1e-9);
  ck_assert_msg(labs(got - correct) <= uncertain,
                "scored %ld correct, numpy %ld (%ld images too close to call)", got, correct,
                uncertain);
  /* Not a degenerate case: far from chance (1/5) and from perfect. */
  ck_assert_msg(correct > N_IMAGES / 2 && correct < N_IMAGES, "numpy found %ld correct",
                correct);
  an_model_free(m);
  fixture_done(&f);
  free(x);
  free(x8);
  free(y8);
  free(y64);
}

START_TEST(test_accuracy_f32) {
  check_accuracy(SET_F32, AN_NPY_U8);
}
END_TEST

START_TEST(test_accuracy_f16_int64_labels) {
  check_accuracy(SET_F16, AN_NPY_I64);
}
END_TEST

START_TEST(test_accuracy_u8) {
  check_accuracy(SET_U8, AN_NPY_U8);
}
END_TEST

/* ---- models that must be rejected ---- */

START_TEST(test_wrong_input_shape) {
  fixture_t f;
  outcome_t o;
  fixture_init(&f);
  write_zero_set(&f, 8, CHW);
  an_validate_params_t p = params_for(&f, CHW, CLASSES);
  /* One channel instead of two, then 12 x 12 images instead of 16 x 16. */
  an_model_free(build_model(NULL, "cnn-small", (const int[3]){1, 16, 16}, CLASSES, f.model));
  score(&p, &o, NULL);
  expect_rejected(&o, "wrong input", "a 1-channel model");
  an_model_free(build_model(NULL, "cnn-small", (const int[3]){2, 12, 12}, CLASSES, f.model));
  score(&p, &o, NULL);
  expect_rejected(&o, "wrong input", "a 12 x 12 model");
  fixture_done(&f);
}
END_TEST

START_TEST(test_wrong_classes) {
  fixture_t f;
  outcome_t o;
  fixture_init(&f);
  write_zero_set(&f, 8, CHW);
  an_validate_params_t p = params_for(&f, CHW, CLASSES);
  an_model_free(build_model(NULL, "cnn-small", CHW, CLASSES + 2, f.model));
  score(&p, &o, NULL);
  expect_rejected(&o, "wrong output", "7 classes for 5");
  /* Scores as an image (N x 2 x 16 x 16) rather than N x K. */
  an_model_free(build_model("input 2 16 16\nconv 2 k=3 p=1\n", NULL, NULL, 0, f.model));
  score(&p, &o, NULL);
  expect_rejected(&o, "wrong output", "a 4-dimensional output");
  fixture_done(&f);
}
END_TEST

START_TEST(test_nan_scores) {
  fixture_t f;
  outcome_t o;
  fixture_init(&f);
  write_zero_set(&f, 8, CHW);
  an_model_t *m = build_model(NULL, "cnn-small", CHW, CLASSES, NULL);
  /* A poisoned bias of the last layer reaches every score directly (one in
   * the first layer would be cleaned away by ReLU's max(0, NaN) = 0). */
  an_layer_info_t last;
  ck_assert_int_eq(an_model_layer_info(m, an_model_layer_count(m) - 1, &last), 0);
  ck_assert_uint_gt(last.b_count, 0);
  an_model_params(m)[last.b_off] = NAN;
  export_model(m, f.model);
  an_model_free(m);
  an_validate_params_t p = params_for(&f, CHW, CLASSES);
  score(&p, &o, NULL);
  expect_rejected(&o, "non-finite score", "a model giving NaN");
  fixture_done(&f);
}
END_TEST

START_TEST(test_malformed_files) {
  fixture_t f;
  outcome_t o;
  char dir[1024], path[2048], what[2300];
  uint64_t rng = 7;
  int regressions = 0;
  fixture_init(&f);
  write_zero_set(&f, 4, CHW);
  an_validate_params_t p = params_for(&f, CHW, CLASSES);

  /* The inputs that once crashed the ONNX fuzzer. */
  snprintf(dir, sizeof dir, "%s/tests/fuzz/regressions", env_or_fail("ARCHNET_SOURCE_ROOT"));
  DIR *d = opendir(dir);
  ck_assert_msg(d != NULL, "cannot open %s", dir);
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    p.model_path = path;
    score(&p, &o, NULL);
    snprintf(what, sizeof what, "fuzz regression %s", e->d_name);
    expect_rejected(&o, "model refused", what);
    regressions++;
  }
  closedir(d);
  ck_assert_int_gt(regressions, 0);

  /* A good model cut short, and with bytes overwritten by noise. */
  char good[600];
  path_in(&f, "good.onnx", good, sizeof good);
  an_model_free(build_model(NULL, "cnn-small", CHW, CLASSES, good));
  size_t len;
  uint8_t *bytes = read_bytes(good, &len);
  p.model_path = f.model;
  const size_t cuts[] = {0, 1, 16, len / 2, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    write_bytes(f.model, bytes, cuts[i]);
    score(&p, &o, NULL);
    snprintf(what, sizeof what, "the model cut to %zu of %zu bytes", cuts[i], len);
    expect_rejected(&o, "model refused", what);
  }
  for (int round = 0; round < 3; round++) {
    uint8_t *noisy = malloc(len);
    ck_assert_ptr_nonnull(noisy);
    memcpy(noisy, bytes, len);
    /* The graph's structure lives at both ends; the middle is weights. */
    for (size_t i = 0; i < 64; i++) {
      noisy[i] = (uint8_t)an_test_rand(&rng);
      noisy[len - 1 - i] = (uint8_t)an_test_rand(&rng);
    }
    write_bytes(f.model, noisy, len);
    free(noisy);
    score(&p, &o, NULL);
    snprintf(what, sizeof what, "noise round %d", round);
    /* Noise might still parse as some model; it must not be accepted. */
    ck_assert_msg(!o.r.ok && o.r.reason[0], "%s: accepted", what);
  }
  /* Pure noise, and a text file. */
  uint8_t junk[4096];
  for (size_t i = 0; i < sizeof junk; i++)
    junk[i] = (uint8_t)an_test_rand(&rng);
  write_bytes(f.model, junk, sizeof junk);
  score(&p, &o, NULL);
  expect_rejected(&o, "model refused", "random bytes");
  write_bytes(f.model, "ir_version: 8\n", 14);
  score(&p, &o, NULL);
  expect_rejected(&o, "model refused", "a text file");
  free(bytes);
  fixture_done(&f);
}
END_TEST

/* Max-pooling 150 x 150 windows over 300 x 300 images: 151^2 * 150^2 steps
 * per channel, seconds of work per image, so it cannot finish in time.
 * Written with protobuf-c, as common/nn caps pooling windows at 64:
 *   x [N, 2, 300, 300] -> MaxPool -> GlobalAveragePool -> Flatten -> [N, 2] */
static const int SLOW_CHW[3] = {2, 300, 300};
enum { SLOW_CLASSES = 2 };

typedef struct value_info {
  Onnx__ValueInfoProto info;
  Onnx__TypeProto type;
  Onnx__TypeProto__Tensor tensor;
  Onnx__TensorShapeProto shape;
  Onnx__TensorShapeProto__Dimension dims[4], *dimp[4];
} value_info_t;

/* A float tensor's declaration; a dimension of -1 is the batch, "N". */
static void value_info(value_info_t *v, const char *name, int ndim, const int64_t *dims) {
  *v = (value_info_t){.info = ONNX__VALUE_INFO_PROTO__INIT,
                      .type = ONNX__TYPE_PROTO__INIT,
                      .tensor = ONNX__TYPE_PROTO__TENSOR__INIT,
                      .shape = ONNX__TENSOR_SHAPE_PROTO__INIT};
  for (int i = 0; i < ndim; i++) {
    v->dims[i] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
    if (dims[i] < 0) {
      v->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      v->dims[i].dim_param = "N";
    } else {
      v->dims[i].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      v->dims[i].dim_value = dims[i];
    }
    v->dimp[i] = &v->dims[i];
  }
  v->shape.n_dim = (size_t)ndim;
  v->shape.dim = v->dimp;
  v->tensor.has_elem_type = 1;
  v->tensor.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  v->tensor.shape = &v->shape;
  v->type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  v->type.tensor_type = &v->tensor;
  v->info.name = (char *)name;
  v->info.type = &v->type;
}

static void build_slow_model(const char *path) {
  int64_t window[2] = {150, 150}, stride[2] = {1, 1};
  Onnx__AttributeProto kernel = ONNX__ATTRIBUTE_PROTO__INIT, strides = ONNX__ATTRIBUTE_PROTO__INIT;
  kernel.name = "kernel_shape";
  strides.name = "strides";
  kernel.has_type = strides.has_type = 1;
  kernel.type = strides.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  kernel.n_ints = strides.n_ints = 2;
  kernel.ints = window;
  strides.ints = stride;
  Onnx__AttributeProto *pool_attrs[] = {&kernel, &strides};

  char *x[] = {"x"}, *pooled[] = {"pooled"}, *avg[] = {"avg"}, *scores[] = {"scores"};
  Onnx__NodeProto pool = ONNX__NODE_PROTO__INIT, gap = ONNX__NODE_PROTO__INIT,
                  flat = ONNX__NODE_PROTO__INIT;
  pool.op_type = "MaxPool";
  pool.n_input = 1, pool.input = x, pool.n_output = 1, pool.output = pooled;
  pool.n_attribute = 2, pool.attribute = pool_attrs;
  gap.op_type = "GlobalAveragePool";
  gap.n_input = 1, gap.input = pooled, gap.n_output = 1, gap.output = avg;
  flat.op_type = "Flatten";
  flat.n_input = 1, flat.input = avg, flat.n_output = 1, flat.output = scores;
  Onnx__NodeProto *nodes[] = {&pool, &gap, &flat};

  value_info_t in, out;
  value_info(&in, "x", 4, (int64_t[]){-1, SLOW_CHW[0], SLOW_CHW[1], SLOW_CHW[2]});
  value_info(&out, "scores", 2, (int64_t[]){-1, SLOW_CLASSES});
  Onnx__ValueInfoProto *inputs[] = {&in.info}, *outputs[] = {&out.info};
  Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
  graph.name = "slow";
  graph.n_node = 3, graph.node = nodes;
  graph.n_input = 1, graph.input = inputs;
  graph.n_output = 1, graph.output = outputs;

  Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
  opset.domain = "";
  opset.has_version = 1, opset.version = 13;
  Onnx__OperatorSetIdProto *opsets[] = {&opset};
  Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
  model.has_ir_version = 1, model.ir_version = 8;
  model.n_opset_import = 1, model.opset_import = opsets;
  model.producer_name = "test_validate";
  model.graph = &graph;

  size_t len = onnx__model_proto__get_packed_size(&model);
  uint8_t *buf = malloc(len);
  ck_assert_ptr_nonnull(buf);
  ck_assert_uint_eq(onnx__model_proto__pack(&model, buf), len);
  write_bytes(path, buf, len);
  free(buf);
}

/* Reads one row of /proc/PID/limits: "Max cpu time   SOFT   HARD   units". */
static void limit_row(const char *limits, const char *name, char soft[32], char hard[32]) {
  const char *line = strstr(limits, name);
  ck_assert_msg(line != NULL, "no '%s' in:\n%s", name, limits);
  ck_assert_int_eq(sscanf(line + 26, "%31s %31s", soft, hard), 2);
}

START_TEST(test_wall_clock_and_limits) {
  fixture_t f;
  outcome_t o;
  limits_probe_t probe;
  char soft[32], hard[32], want[32];
  fixture_init(&f);
  write_zero_set(&f, 32, SLOW_CHW);
  build_slow_model(f.model);
  an_validate_params_t p = params_for(&f, SLOW_CHW, SLOW_CLASSES);
  p.max_wall_seconds = 4;
  p.max_cpu_seconds = 100;
  p.max_memory_bytes = (uint64_t)3 << 30;
  score(&p, &o, &probe);
  expect_rejected(&o, "timed out after 4 s", "the slow model");
  /* Killed at the deadline, not when it would have finished (32 images
   * take minutes). */
  ck_assert_msg(o.seconds >= 4 && o.seconds < 8, "scoring took %.1f s", o.seconds);

  /* What the child had applied to itself while it ran. */
  ck_assert_msg(probe.found, "never saw the child's limits");
  limit_row(probe.limits, "Max cpu time", soft, hard);
  ck_assert_str_eq(soft, "100");
  ck_assert_str_eq(hard, "101");
  limit_row(probe.limits, "Max core file size", soft, hard);
  ck_assert_str_eq(soft, "0");
  limit_row(probe.limits, "Max file size", soft, hard);
  ck_assert_str_eq(soft, "0");
  limit_row(probe.limits, "Max open files", soft, hard);
  ck_assert_str_eq(hard, "32");
  limit_row(probe.limits, "Max address space", soft, hard);
  snprintf(want, sizeof want, "%llu", (unsigned long long)p.max_memory_bytes);
  if (UNDER_ASAN)
    ck_assert_str_ne(soft, want); /* left out on purpose: ASan's shadow memory */
  else
    ck_assert_msg(strcmp(soft, want) == 0 && strcmp(hard, want) == 0,
                  "RLIMIT_AS is %s / %s, not %s", soft, hard, want);
  fixture_done(&f);
}
END_TEST

START_TEST(test_cpu_limit) {
  fixture_t f;
  outcome_t o;
  fixture_init(&f);
  write_zero_set(&f, 32, SLOW_CHW);
  build_slow_model(f.model);
  an_validate_params_t p = params_for(&f, SLOW_CHW, SLOW_CLASSES);
  p.max_wall_seconds = 60;
  p.max_cpu_seconds = 1;
  score(&p, &o, NULL);
  expect_rejected(&o, "CPU time limit of 1 s", "the slow model");
  ck_assert_msg(o.seconds < 30, "scoring took %.1f s", o.seconds);
  fixture_done(&f);
}
END_TEST

/* 1024 channels of 64 x 64 per image: 16 MiB of activations each, a
 * gigabyte per batch, against a limit of 256 MiB. Under ASan only the
 * runtime's accounting can stop it; otherwise whichever of it and
 * RLIMIT_AS comes first. */
START_TEST(test_memory_hungry_activations) {
  fixture_t f;
  outcome_t o;
  fixture_init(&f);
  write_zero_set(&f, 64, (const int[3]){1, 64, 64});
  an_model_free(build_model("input 1 64 64\nconv 1024 k=1\ngap\nlinear 5\n", NULL, NULL, 0,
                            f.model));
  an_validate_params_t p = params_for(&f, (const int[3]){1, 64, 64}, 5);
  p.max_memory_bytes = (uint64_t)256 << 20;
  score(&p, &o, NULL);
  ck_assert_msg(!o.r.ok && o.r.reason[0], "accepted: %g", o.r.accuracy);
  printf("memory-hungry activations: %s\n", o.r.reason);
  /* The same model within a generous limit runs: the limit made the difference. */
  p.max_memory_bytes = (uint64_t)4 << 30;
  score(&p, &o, NULL);
  ck_assert_msg(o.r.ok, "rejected with 4 GiB: %s", o.r.reason);
  fixture_done(&f);
}
END_TEST

/* Memory the ONNX runtime does not count as live tensors: a 256 MiB weight
 * matrix, read, parsed and copied while the model loads. Only RLIMIT_AS
 * stands in its way, so this runs where RLIMIT_AS is applied (not under
 * ASan, see server/validate.c). */
START_TEST(test_memory_hungry_weights_hit_rlimit_as) {
  fixture_t f;
  outcome_t o;
  if (UNDER_ASAN) {
    printf("skipped under AddressSanitizer: the child runs without RLIMIT_AS there\n");
    return;
  }
  fixture_init(&f);
  write_zero_set(&f, 4, (const int[3]){1, 64, 64});
  an_model_free(build_model("input 1 64 64\nlinear 16384\nlinear 5\n", NULL, NULL, 0,
                            f.model));
  an_validate_params_t p = params_for(&f, (const int[3]){1, 64, 64}, 5);
  p.max_memory_bytes = (uint64_t)512 << 20;
  score(&p, &o, NULL);
  /* Refused while loading, before the runtime's accounting (which only
   * covers runs) could have a say. */
  expect_rejected(&o, "model refused", "256 MiB of weights under 512 MiB");
  printf("memory-hungry weights: %s\n", o.r.reason);
  p.max_memory_bytes = (uint64_t)4 << 30;
  score(&p, &o, NULL);
  ck_assert_msg(o.r.ok, "rejected with 4 GiB: %s", o.r.reason);
  fixture_done(&f);
}
END_TEST

/* ---- the parent against scorers that misbehave ---- */

/* A fake scorer: a shell script standing in for the broker binary. */
static void fake_scorer(const fixture_t *f, const char *body, char *path, size_t len) {
  char text[4096];
  path_in(f, "fake-scorer", path, len);
  snprintf(text, sizeof text, "#!/bin/sh\n%s\n", body);
  write_bytes(path, text, strlen(text));
  ck_assert_int_eq(chmod(path, 0755), 0);
}

typedef struct fake_case {
  const char *body;
  int ok;
  const char *in_reason; /* expected in the reason (or NULL when ok) */
  double accuracy;
  int64_t images;
} fake_case_t;

START_TEST(test_misbehaving_scorer) {
  static const fake_case_t cases[] = {
      {"echo 'ok 0.75 8'", 1, NULL, 0.75, 8},
      {"echo 'rejected the model is shy'", 0, "the model is shy"},
      {"exit 0", 0, "printed no result"},
      {"echo garbage", 0, "unreadable result"},
      {"echo 'ok 1.5 8'", 0, "unreadable result"},
      {"echo 'ok 0.5 0'", 0, "unreadable result"},
      {"echo 'ok nan 8'", 0, "unreadable result"},
      {"echo 'ok 0.5 8 and more'", 0, "unreadable result"},
      {"printf 'ok 0.5 8'", 0, "not one line"},
      {"printf 'ok 0.5 8\\nok 0.9 8\\n'", 0, "not one line"},
      {"printf 'ok 0.5 8\\0\\n'", 0, "not one line"},
      {"head -c 100000 /dev/zero", 0, "printed more than 512 bytes"},
      {"yes", 0, "printed more than 512 bytes"},
      {"echo 'it broke' >&2; exit 3", 0, "exited with status 3: it broke"},
      {"ulimit -c 0; kill -SEGV $$", 0, "killed by signal 11"},
      {"exec sleep 100", 0, "timed out after 1 s"},
      /* Exits at once but leaves a grandchild holding its pipes. */
      {"sleep 100 & echo 'ok 0.5 8'", 1, NULL, 0.5, 8},
  };
  fixture_t f;
  outcome_t o;
  char exe[600];
  fixture_init(&f);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const fake_case_t *c = &cases[i];
    fake_scorer(&f, c->body, exe, sizeof exe);
    an_validate_params_t p = params_for(&f, CHW, CLASSES);
    p.exe = exe;
    p.max_wall_seconds = 1;
    score(&p, &o, NULL);
    ck_assert_msg(o.seconds < 5, "'%s' took %.1f s", c->body, o.seconds);
    if (c->ok) {
      ck_assert_msg(o.r.ok, "'%s': rejected: %s", c->body, o.r.reason);
      ck_assert_double_eq_tol(o.r.accuracy, c->accuracy, 1e-12);
      ck_assert_int_eq(o.r.images, c->images);
    } else {
      expect_rejected(&o, c->in_reason, c->body);
    }
  }
  fixture_done(&f);
}
END_TEST

/* The command line the scorer gets: the limits as flags, then the job. */
START_TEST(test_scorer_arguments) {
  fixture_t f;
  outcome_t o;
  char exe[600], body[1200], args_path[600], want[4096];
  fixture_init(&f);
  path_in(&f, "args", args_path, sizeof args_path);
  snprintf(body, sizeof body, "echo \"$*\" > '%s'; echo 'ok 1 1'", args_path);
  fake_scorer(&f, body, exe, sizeof exe);
  an_validate_params_t p = params_for(&f, CHW, CLASSES);
  p.exe = exe;
  p.max_memory_bytes = 123456789;
  p.max_cpu_seconds = 7.5;
  score(&p, &o, NULL);
  ck_assert_msg(o.r.ok, "rejected: %s", o.r.reason);
  size_t len;
  char *args = (char *)read_bytes(args_path, &len);
  args[len] = '\0';
  snprintf(want, sizeof want, "score --max-memory 123456789 --max-cpu 7.500 -- %s %s %s 2 16 16 5\n",
           f.model, f.x, f.y);
  ck_assert_str_eq(args, want);
  free(args);
  fixture_done(&f);
}
END_TEST

START_TEST(test_start_errors) {
  fixture_t f;
  outcome_t o = {0};
  uv_loop_t loop;
  fixture_init(&f);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  an_validate_params_t p = params_for(&f, CHW, CLASSES);
  /* A scorer that does not exist: an error now, never a callback. */
  p.exe = "/nonexistent/archnet-broker";
  ck_assert_int_eq(an_validate_start(&loop, &p, on_scored, &o), UV_ENOENT);
  p = params_for(&f, CHW, CLASSES);
  p.classes = 0;
  ck_assert_int_eq(an_validate_start(&loop, &p, on_scored, &o), UV_EINVAL);
  p = params_for(&f, CHW, CLASSES);
  p.model_path = NULL;
  ck_assert_int_eq(an_validate_start(&loop, &p, on_scored, &o), UV_EINVAL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(o.calls, 0);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  fixture_done(&f);
}
END_TEST

static Suite *validate_suite(void) {
  Suite *s = suite_create("validate");
  TCase *accuracy = tcase_create("accuracy");
  tcase_set_timeout(accuracy, 120);
  tcase_add_test(accuracy, test_accuracy_f32);
  tcase_add_test(accuracy, test_accuracy_f16_int64_labels);
  tcase_add_test(accuracy, test_accuracy_u8);
  suite_add_tcase(s, accuracy);

  TCase *rejected = tcase_create("rejected");
  tcase_set_timeout(rejected, 180);
  tcase_add_test(rejected, test_wrong_input_shape);
  tcase_add_test(rejected, test_wrong_classes);
  tcase_add_test(rejected, test_nan_scores);
  tcase_add_test(rejected, test_malformed_files);
  tcase_add_test(rejected, test_wall_clock_and_limits);
  tcase_add_test(rejected, test_cpu_limit);
  tcase_add_test(rejected, test_memory_hungry_activations);
  tcase_add_test(rejected, test_memory_hungry_weights_hit_rlimit_as);
  suite_add_tcase(s, rejected);

  TCase *parent = tcase_create("parent");
  tcase_set_timeout(parent, 120);
  tcase_add_test(parent, test_misbehaving_scorer);
  tcase_add_test(parent, test_scorer_arguments);
  tcase_add_test(parent, test_start_errors);
  suite_add_tcase(s, parent);
  return s;
}

AN_TEST_MAIN(validate_suite)
