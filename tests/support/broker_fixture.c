/* A real broker for integration tests (see broker_fixture.h). */
#include "tests/support/broker_fixture.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/blob/npy.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/spec.h"
#include "tests/support/testutil.h"

const char *an_test_bin(const char *var) {
  const char *p = getenv(var);
  ck_assert_msg(p != NULL, "%s is not set; run this test through meson", var);
  return p;
}

char *an_test_run_ok(char *const argv[]) {
  char *out = NULL, *err = NULL;
  int st = an_test_run(argv, &out, &err);
  ck_assert_msg(st == 0, "%s %s: exit %d: %s", argv[0], argv[1], st, err ? err : "");
  free(err);
  return out;
}

void an_test_broker_init(an_test_broker_t *b) {
  memset(b, 0, sizeof *b);
  b->dir = an_test_tmpdir();
  snprintf(b->data, sizeof b->data, "%s/data", b->dir);
  snprintf(b->log, sizeof b->log, "%s/broker.log", b->dir);
  snprintf(b->ready, sizeof b->ready, "%s/ready", b->dir);
  char *init[] = {(char *)an_test_bin("ARCHNET_BROKER"), "init", "--data-dir", b->data, NULL};
  free(an_test_run_ok(init));
  char *pin[] = {(char *)an_test_bin("ARCHNET_BROKER"), "pin", "--data-dir", b->data, NULL};
  char *out = an_test_run_ok(pin);
  out[strcspn(out, "\n")] = '\0';
  snprintf(b->pin, sizeof b->pin, "%s", out);
  free(out);
}

void an_test_broker_start(an_test_broker_t *b) {
  char listen[64];
  /* A restart keeps the address: the nodes' credentials name it. */
  snprintf(listen, sizeof listen, "%s", b->address[0] ? b->address : "127.0.0.1:0");
  unlink(b->ready);
  char *run[] = {(char *)an_test_bin("ARCHNET_BROKER"), "run", "--data-dir", b->data,
                 "--listen", listen, "--ready-file", b->ready, "--log-level", "debug",
                 "--fee-permille", "100", "--min-free-disk", "0", "--max-wait", "20",
                 "--score-wall", "60", "--http-listen", "127.0.0.1:0", NULL};
  b->pid = an_test_spawn(run, b->log);
  ck_assert_int_gt(b->pid, 0);
  ck_assert_msg(an_test_read_line_when_ready(b->ready, b->address, sizeof b->address, 10000) == 0,
                "the broker did not start; see %s", b->log);
}

void an_test_broker_stop(an_test_broker_t *b, int sig) {
  kill(b->pid, sig);
  an_test_wait(b->pid, 20000);
}

void an_test_broker_free(an_test_broker_t *b) {
  an_test_rmtree(b->dir);
  free(b->dir);
}

char *an_test_broker_admin(an_test_broker_t *b, const char *cmd, const char *a1,
                           const char *a2) {
  char *argv[] = {(char *)an_test_bin("ARCHNET_BROKER"), (char *)cmd, "--data-dir", b->data,
                  (char *)a1, (char *)a2, NULL};
  return an_test_run_ok(argv);
}

void an_test_broker_enroll(an_test_broker_t *b, const char *role, const char *name, char *cred,
                           size_t len) {
  char *argv_tok[] = {(char *)an_test_bin("ARCHNET_BROKER"), "enroll", "--data-dir", b->data,
                      "--role", (char *)role, NULL};
  char *token = an_test_run_ok(argv_tok);
  token[strcspn(token, "\n")] = '\0';
  snprintf(cred, len, "%s/%s.credentials", b->dir, name);
  char *en[] = {(char *)an_test_bin(strcmp(role, "worker") ? "ARCHNET_PUBLISHER"
                                                           : "ARCHNET_WORKER"),
                "enroll", "--broker", b->address, "--pin", b->pin, "--token", token,
                "--credentials", cred, "--name", (char *)name, NULL};
  free(an_test_run_ok(en));
  /* A token is good once. */
  char other[700];
  snprintf(other, sizeof other, "%s.again", cred);
  en[9] = other;
  ck_assert_int_eq(an_test_run(en, NULL, NULL), 1);
  free(token);
}

int64_t an_test_broker_balance(an_test_broker_t *b, const char *name) {
  char *out = an_test_broker_admin(b, "nodes", NULL, NULL);
  char *line = strstr(out, name);
  long long bal = -1;
  ck_assert_msg(line, "%s", out);
  char *p = strstr(line, "balance");
  ck_assert_ptr_nonnull(p);
  sscanf(p, "balance %lld", &bal);
  free(out);
  return bal;
}

void an_test_broker_ledger_ok(an_test_broker_t *b) {
  char *out = an_test_broker_admin(b, "ledger", "--check", NULL);
  ck_assert_msg(strstr(out, "ledger check: ok"), "%s", out);
  free(out);
}

void an_test_encoded_dataset(const char *dir, const char *model_path, int train_rows) {
  char path[800], err[512];
  int n = train_rows > 0 ? train_rows : 96;
  int64_t tx[4] = {n, 3, 8, 8}, vx[4] = {40, 3, 8, 8}, ty[1] = {n}, vy[1] = {40};
  uint64_t seed = 7;
  float *x = malloc((size_t)(n + 40) * 192 * sizeof *x);
  uint8_t *y = malloc((size_t)n + 40);
  ck_assert(x && y);
  mkdir(dir, 0755);
  for (size_t i = 0; i < (size_t)(n + 40) * 192; i++)
    x[i] = (float)(an_test_rand(&seed) % 1000) / 1000.0f;
  for (int i = 0; i < n + 40; i++)
    y[i] = (uint8_t)(an_test_rand(&seed) % 10);
  snprintf(path, sizeof path, "%s/train_x.npy", dir);
  ck_assert(an_npy_write(path, AN_NPY_F32, 4, tx, x, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/train_y.npy", dir);
  ck_assert(an_npy_write(path, AN_NPY_U8, 1, ty, y, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/val_x.npy", dir);
  ck_assert(an_npy_write(path, AN_NPY_F32, 4, vx, x + (size_t)n * 192, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/val_y.npy", dir);
  ck_assert(an_npy_write(path, AN_NPY_U8, 1, vy, y + n, err, sizeof err) == 0);
  snprintf(path, sizeof path, "%s/encoding.json", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fprintf(f, "{\"format\": \"archnet-encoded/1\", \"dtype\": \"f32\", \"shape\": [3, 8, 8],"
             " \"split\": {\"seed\": 1, \"val_fraction\": 0.3, \"source\": %d, \"train\": %d,"
             " \"val\": 40, \"test\": 0}, \"dataset_digest\": \"%064d\"}\n",
          n + 40, n, 0);
  fclose(f);
  free(x);
  free(y);
  if (!model_path)
    return;
  an_model_t *m = NULL;
  int chw[3] = {3, 8, 8};
  ck_assert(an_model_preset("cnn-small", chw, 10, &m, err, sizeof err) == 0);
  ck_assert(an_model_finalize(m, AN_INIT_UNIFORM, 1, err, sizeof err) == 0);
  an_onnx_export_opts_t o = {.first = 0, .last = -1};
  ck_assert_msg(an_onnx_export(m, &o, model_path, err, sizeof err) == 0, "%s", err);
  an_model_free(m);
}
