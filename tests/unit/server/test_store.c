/* The broker's state store: the task life cycle, leases, credentials and the
 * double-entry ledger. Amounts are worked out by hand in each test, and a
 * long seeded random run keeps its own account of every balance, so the
 * store is checked against an independent model, not against itself. Raw
 * SQL through a second connection plays the part of a damaged file. */
#include <check.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <openssl/sha.h>
#include <sqlite3.h>
#include <uv.h>

#include "common/error.h"
#include "server/store.h"
#include "tests/support/testutil.h"

#define DIGEST_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define DIGEST_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define MODEL_1 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* A store in a scratch directory with a publisher and workers enrolled. */
typedef struct fixture {
  char *dir;
  char path[512];
  an_store_t *s;
  int64_t pub, pub2, w1, w2, w3;
} fixture_t;

static void expect_ledger_ok(an_store_t *s) {
  char err[512];
  int rc = an_store_ledger_check(s, err, sizeof err);
  ck_assert_msg(rc == 0, "ledger check: %s", err);
}

static void fixture_open(fixture_t *f) {
  char err[256];
  int rc = an_store_open(f->path, &f->s, err, sizeof err);
  ck_assert_msg(rc == 0, "open: %s", err);
}

static int64_t enroll(an_store_t *s, an_role_t role, const char *name) {
  char token[AN_DIGEST_HEX], secret[AN_DIGEST_HEX];
  int64_t id = 0;
  an_role_t got;
  ck_assert_int_eq(an_store_token_create(s, role, 100, 3600, token), 0);
  ck_assert_int_eq(an_store_enroll(s, token, name, 101, &id, &got, secret), 0);
  ck_assert_int_eq(got, role);
  return id;
}

static void fixture_init(fixture_t *f) {
  memset(f, 0, sizeof *f);
  f->dir = an_test_tmpdir();
  ck_assert_ptr_nonnull(f->dir);
  snprintf(f->path, sizeof f->path, "%s/broker.db", f->dir);
  fixture_open(f);
  f->pub = enroll(f->s, AN_ROLE_PUBLISHER, "pub");
  f->pub2 = enroll(f->s, AN_ROLE_PUBLISHER, "pub2");
  f->w1 = enroll(f->s, AN_ROLE_WORKER, "w1");
  f->w2 = enroll(f->s, AN_ROLE_WORKER, "w2");
  f->w3 = enroll(f->s, AN_ROLE_WORKER, "w3");
}

static void fixture_done(fixture_t *f) {
  an_store_close(f->s);
  an_test_rmtree(f->dir);
  free(f->dir);
}

/* Runs SQL on the database file through its own connection, as another
 * process (or a bad disk) would. */
static int raw_sql(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  char *msg = NULL;
  int rc = sqlite3_open(path, &db);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  }
  sqlite3_free(msg);
  sqlite3_close(db);
  return rc;
}

/* The first column of the first row of a query, as an integer. */
static int64_t raw_int(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int64_t v;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static an_task_spec_t spec_for(int64_t publisher, int64_t bounty) {
  an_task_spec_t sp = {
      .publisher = publisher, .bounty = bounty, .min_accuracy = 0.9, .max_attempts = 3,
      .lease_seconds = 60, .input_c = 1, .input_h = 28, .input_w = 28, .classes = 10,
  };
  strcpy(sp.train_x, DIGEST_A);
  strcpy(sp.train_y, DIGEST_B);
  strcpy(sp.val_x, DIGEST_A);
  strcpy(sp.val_y, DIGEST_B);
  return sp;
}

static int64_t balance(an_store_t *s, int64_t node) {
  int64_t b = -1;
  ck_assert_int_eq(an_store_balance(s, node, &b), 0);
  return b;
}

static an_task_t task(an_store_t *s, int64_t id) {
  an_task_t t;
  ck_assert_int_eq(an_store_task_get(s, id, &t), 0);
  return t;
}

static int64_t create_task(an_store_t *s, const an_task_spec_t *sp, int64_t now) {
  int64_t id = 0;
  ck_assert_int_eq(an_store_task_create(s, sp, now, &id), 0);
  ck_assert_int_gt(id, 0);
  return id;
}

/* A queued task of f->pub's with the given bounty and attempts. */
static int64_t queued_task(fixture_t *f, int64_t bounty, int max_attempts) {
  an_task_spec_t sp = spec_for(f->pub, bounty);
  sp.max_attempts = max_attempts;
  int64_t id = create_task(f->s, &sp, 1000);
  ck_assert_int_eq(an_store_task_ready(f->s, id, 1000), 0);
  return id;
}

static const an_worker_caps_t any_caps = {.memory_bytes = INT64_C(1) << 40, .gpu = 1};

static int64_t lease(an_store_t *s, int64_t worker, int64_t now) {
  an_task_t t;
  ck_assert_int_eq(an_store_lease_next(s, worker, &any_caps, now, &t), 0);
  ck_assert_int_eq(t.state, AN_TASK_LEASED);
  ck_assert_int_eq(t.worker, worker);
  return t.id;
}

/* ---- opening, schema, durability ---- */

START_TEST(test_open_sets_wal_and_schema) {
  fixture_t f;
  fixture_init(&f);
  an_store_close(f.s);
  f.s = NULL;
  /* WAL is recorded in the file itself; user_version is our schema. */
  ck_assert_int_eq(raw_int(f.path, "SELECT journal_mode = 'wal' FROM pragma_journal_mode"), 1);
  ck_assert_int_eq(raw_int(f.path, "PRAGMA user_version"), 1);
  fixture_open(&f);
  ck_assert_str_eq(an_task_state_name(AN_TASK_VALIDATING), "validating");
  ck_assert_str_eq(an_task_state_name(AN_TASK_STATE_COUNT), "unknown");
  fixture_done(&f);
}
END_TEST

START_TEST(test_newer_schema_refused) {
  fixture_t f;
  char err[256] = "";
  an_store_t *s = (an_store_t *)&f; /* must be reset to NULL on failure */
  fixture_init(&f);
  an_store_close(f.s);
  f.s = NULL;
  ck_assert_int_eq(raw_sql(f.path, "PRAGMA user_version = 2"), SQLITE_OK);
  ck_assert_int_eq(an_store_open(f.path, &s, err, sizeof err), AN_EDB);
  ck_assert_ptr_null(s);
  ck_assert_msg(strstr(err, "newer") && strstr(err, "version 2"), "unclear: %s", err);

  /* Someone else's database is not taken over either. */
  char other[600];
  snprintf(other, sizeof other, "%s/other.db", f.dir);
  ck_assert_int_eq(raw_sql(other, "CREATE TABLE t (x)"), SQLITE_OK);
  ck_assert_int_eq(an_store_open(other, &s, err, sizeof err), AN_EDB);
  ck_assert_msg(strstr(err, "not an ArchNet"), "unclear: %s", err);

  /* A directory that does not exist is an error with the path in it. */
  snprintf(other, sizeof other, "%s/missing/dir/x.db", f.dir);
  ck_assert_int_eq(an_store_open(other, &s, err, sizeof err), AN_EDB);
  ck_assert_ptr_nonnull(strstr(err, "missing/dir"));
  fixture_done(&f);
}
END_TEST

static int count_task(const an_task_t *t, void *arg) {
  (void)t;
  (*(int *)arg)++;
  return 0;
}


static void expect_same_task(const an_task_t *a, const an_task_t *b) {
  ck_assert_int_eq(a->id, b->id);
  ck_assert_int_eq(a->state, b->state);
  ck_assert_int_eq(a->attempts, b->attempts);
  ck_assert_int_eq(a->worker, b->worker);
  ck_assert_int_eq(a->lease_deadline, b->lease_deadline);
  ck_assert_double_eq(a->progress, b->progress);
  ck_assert_double_eq(a->accuracy, b->accuracy);
  ck_assert_str_eq(a->model, b->model);
  ck_assert_str_eq(a->reason, b->reason);
  ck_assert_int_eq(a->created, b->created);
  ck_assert_int_eq(a->updated, b->updated);
  ck_assert_int_eq(a->spec.publisher, b->spec.publisher);
  ck_assert_int_eq(a->spec.bounty, b->spec.bounty);
  ck_assert_double_eq(a->spec.min_accuracy, b->spec.min_accuracy);
  ck_assert_int_eq(a->spec.max_attempts, b->spec.max_attempts);
  ck_assert_int_eq(a->spec.lease_seconds, b->spec.lease_seconds);
  ck_assert_str_eq(a->spec.train_x, b->spec.train_x);
  ck_assert_str_eq(a->spec.val_y, b->spec.val_y);
  ck_assert_int_eq(a->spec.input_c * a->spec.input_h * a->spec.input_w,
                   b->spec.input_c * b->spec.input_h * b->spec.input_w);
  ck_assert_int_eq(a->spec.classes, b->spec.classes);
  ck_assert_int_eq(a->spec.min_memory_bytes, b->spec.min_memory_bytes);
  ck_assert_int_eq(a->spec.needs_gpu, b->spec.needs_gpu);
  ck_assert_int_eq(a->spec.exclude_failed, b->spec.exclude_failed);
}

START_TEST(test_reopen_keeps_everything) {
  fixture_t f;
  an_receipt_t r1, r2;
  char token[AN_DIGEST_HEX], secret[AN_DIGEST_HEX];
  int64_t node, ids[4], counts[AN_TASK_STATE_COUNT], counts2[AN_TASK_STATE_COUNT];
  an_task_t before[4];
  an_role_t role;
  int n, cancelled;
  fixture_init(&f);

  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 10), 0);
  /* Paid, leased (with a deadline), still uploading, failed. */
  ids[0] = queued_task(&f, 100, 2);
  ck_assert_int_eq(lease(f.s, f.w1, 1000), ids[0]);
  ck_assert_int_eq(an_store_model_submitted(f.s, ids[0], f.w1, MODEL_1, 1001), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, ids[0], 1, 0.97, "ok", 50, 1002), 0);
  ids[3] = queued_task(&f, 50, 1);
  ck_assert_int_eq(lease(f.s, f.w3, 1010), ids[3]);
  ck_assert_int_eq(an_store_lease_expire(f.s, 1070, &n), 0);
  ck_assert_int_eq(n, 1);
  ids[1] = queued_task(&f, 200, 2);
  ck_assert_int_eq(lease(f.s, f.w2, 1100), ids[1]);
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, ids[1], f.w2, 0.25, 1110, &cancelled), 0);
  an_task_spec_t sp = spec_for(f.pub, 300);
  ids[2] = create_task(f.s, &sp, 1200);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 1400, 600, token), 0);
  ck_assert_int_eq(an_store_enroll(f.s, token, "late", 1401, &node, &role, secret), 0);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_PUBLISHER, 1400, 600, token), 0);
  for (int i = 0; i < 4; i++)
    before[i] = task(f.s, ids[i]);
  ck_assert_int_eq(an_store_receipt(f.s, ids[0], &r1), 0);
  ck_assert_int_eq(an_store_task_counts(f.s, counts), 0);

  an_store_close(f.s);
  fixture_open(&f);

  for (int i = 0; i < 4; i++) {
    an_task_t after = task(f.s, ids[i]);
    expect_same_task(&before[i], &after);
  }
  ck_assert_int_eq(before[1].lease_deadline, 1170);
  ck_assert_int_eq(an_store_receipt(f.s, ids[0], &r2), 0);
  ck_assert_mem_eq(&r1, &r2, sizeof r1);
  ck_assert_int_eq(balance(f.s, f.pub), 1000 - 100 - 200 - 300);
  ck_assert_int_eq(balance(f.s, f.w1), 95);
  ck_assert_int_eq(an_store_task_counts(f.s, counts2), 0);
  ck_assert_mem_eq(counts, counts2, sizeof counts);
  ck_assert_int_eq(an_store_authenticate(f.s, node, secret, &role), 0);
  ck_assert_int_eq(role, AN_ROLE_WORKER);
  ck_assert_int_eq(an_store_enroll(f.s, token, "later", 1402, &node, &role, secret), 0);
  ck_assert_int_eq(role, AN_ROLE_PUBLISHER);
  /* The lease's deadline came back with it: it expires on time. */
  ck_assert_int_eq(an_store_lease_expire(f.s, 1169, &n), 0);
  ck_assert_int_eq(n, 0);
  ck_assert_int_eq(an_store_lease_expire(f.s, 1170, &n), 0);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(task(f.s, ids[1]).state, AN_TASK_QUEUED);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* ---- credentials ---- */

static void sha256_hex(const void *data, size_t len, char out[AN_DIGEST_HEX]) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(data, len, md);
  for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool is_hex64(const char *s) {
  if (strlen(s) != 64)
    return false;
  for (int i = 0; i < 64; i++)
    if (!strchr("0123456789abcdef", s[i]))
      return false;
  return true;
}

START_TEST(test_tokens_single_use_and_expiry) {
  fixture_t f;
  char token[AN_DIGEST_HEX], token2[AN_DIGEST_HEX], secret[AN_DIGEST_HEX], sql[256];
  char hash[AN_DIGEST_HEX];
  int64_t node = 0;
  an_role_t role;
  fixture_init(&f);

  ck_assert_int_eq(an_store_token_create(f.s, 0, 100, 60, token), UV_EINVAL);
  ck_assert_int_eq(an_store_token_create(f.s, 4, 100, 60, token), UV_EINVAL);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 100, 0, token), UV_EINVAL);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 100, 60, token), 0);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 100, 60, token2), 0);
  ck_assert(is_hex64(token) && is_hex64(token2));
  ck_assert_str_ne(token, token2);

  /* Only the token's SHA-256 is on disk. */
  sha256_hex(token, 64, hash);
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM tokens WHERE hex(hash) = upper('%s')", hash);
  ck_assert_int_eq(raw_int(f.path, sql), 1);
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM tokens WHERE instr(hex(hash), upper('%s'))",
           token);
  ck_assert_int_eq(raw_int(f.path, sql), 0);

  /* A bad name is refused without using the token up. */
  ck_assert_int_eq(an_store_enroll(f.s, token, "", 110, &node, &role, secret), UV_EINVAL);
  ck_assert_int_eq(an_store_enroll(f.s, token, "line\nbreak", 110, &node, &role, secret),
                   UV_EINVAL);
  char long_name[65];
  memset(long_name, 'n', 64);
  long_name[64] = '\0';
  ck_assert_int_eq(an_store_enroll(f.s, token, long_name, 110, &node, &role, secret), UV_EINVAL);
  long_name[63] = '\0'; /* 63 bytes fit */
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 100, 60, token2), 0);
  ck_assert_int_eq(an_store_enroll(f.s, token2, long_name, 110, &node, &role, secret), 0);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 100, 60, token2), 0);
  ck_assert_int_eq(an_store_enroll(f.s, token, "w-new", 110, &node, &role, secret), 0);
  ck_assert_int_eq(role, AN_ROLE_WORKER);
  ck_assert(is_hex64(secret));
  /* Single use, even with another name. */
  ck_assert_int_eq(an_store_enroll(f.s, token, "w-again", 111, &node, &role, secret), AN_EAUTH);
  /* Unknown, and expired: valid while now < created + ttl. */
  ck_assert_int_eq(an_store_enroll(f.s, DIGEST_A, "w-x", 111, &node, &role, secret), AN_EAUTH);
  ck_assert_int_eq(an_store_enroll(f.s, token2, "w-late", 160, &node, &role, secret), AN_EAUTH);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_ADMIN, 100, 60, token2), 0);
  ck_assert_int_eq(an_store_enroll(f.s, token2, "root", 159, &node, &role, secret), 0);
  ck_assert_int_eq(role, AN_ROLE_ADMIN);
  fixture_done(&f);
}
END_TEST

/* The hex text of a query's first column. */
static void raw_text(const char *path, const char *sql, char *out, size_t len) {
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  snprintf(out, len, "%s", (const char *)sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  sqlite3_close(db);
}

START_TEST(test_authentication) {
  fixture_t f;
  char token[AN_DIGEST_HEX], secret[AN_DIGEST_HEX], wrong[AN_DIGEST_HEX], sql[256];
  char salt_hex[64], stored[AN_DIGEST_HEX], expect[AN_DIGEST_HEX];
  unsigned char salted[16 + 64];
  int64_t node;
  an_role_t role = 0;
  an_task_t t;
  fixture_init(&f);
  ck_assert_int_eq(an_store_token_create(f.s, AN_ROLE_WORKER, 100, 60, token), 0);
  ck_assert_int_eq(an_store_enroll(f.s, token, "w", 101, &node, &role, secret), 0);

  ck_assert_int_eq(an_store_authenticate(f.s, node, secret, &role), 0);
  ck_assert_int_eq(role, AN_ROLE_WORKER);
  strcpy(wrong, secret);
  wrong[10] = wrong[10] == '0' ? '1' : '0';
  ck_assert_int_eq(an_store_authenticate(f.s, node, wrong, &role), AN_EAUTH);
  ck_assert_int_eq(an_store_authenticate(f.s, node, "", &role), AN_EAUTH);
  ck_assert_int_eq(an_store_authenticate(f.s, node, NULL, &role), AN_EAUTH);
  ck_assert_int_eq(an_store_authenticate(f.s, node + 100, secret, &role), AN_EAUTH);
  /* Another node's secret is not this one's. */
  ck_assert_int_eq(an_store_authenticate(f.s, f.w1, secret, &role), AN_EAUTH);

  /* Stored as SHA-256(salt || secret), never as the secret. */
  snprintf(sql, sizeof sql, "SELECT hex(salt) FROM nodes WHERE id = %lld", (long long)node);
  raw_text(f.path, sql, salt_hex, sizeof salt_hex);
  ck_assert_uint_eq(strlen(salt_hex), 32);
  for (int i = 0; i < 16; i++) {
    unsigned v;
    ck_assert_int_eq(sscanf(salt_hex + 2 * i, "%2x", &v), 1);
    salted[i] = (unsigned char)v;
  }
  memcpy(salted + 16, secret, 64);
  sha256_hex(salted, sizeof salted, expect);
  snprintf(sql, sizeof sql, "SELECT lower(hex(secret_hash)) FROM nodes WHERE id = %lld",
           (long long)node);
  raw_text(f.path, sql, stored, sizeof stored);
  ck_assert_str_eq(stored, expect);
  /* Salts differ per node. */
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(DISTINCT salt) = COUNT(*) FROM nodes"), 1);

  ck_assert_int_eq(an_store_revoke(f.s, node), 0);
  ck_assert_int_eq(an_store_authenticate(f.s, node, secret, &role), AN_EAUTH);
  ck_assert_int_eq(an_store_lease_next(f.s, node, &any_caps, 200, &t), AN_EAUTH);
  ck_assert_int_eq(an_store_revoke(f.s, node + 100), AN_ENOTFOUND);
  fixture_done(&f);
}
END_TEST

START_TEST(test_roles_enforced) {
  fixture_t f;
  an_task_spec_t sp;
  an_task_t t;
  int64_t id;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.w1, 1000, 1), 0);
  sp = spec_for(f.w1, 10); /* a worker's credential cannot submit */
  ck_assert_int_eq(an_store_task_create(f.s, &sp, 2, &id), AN_EFORBIDDEN);
  sp = spec_for(9999, 10);
  ck_assert_int_eq(an_store_task_create(f.s, &sp, 2, &id), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  id = queued_task(&f, 10, 1);
  /* A publisher's credential cannot take a lease. */
  ck_assert_int_eq(an_store_lease_next(f.s, f.pub, &any_caps, 3, &t), AN_EFORBIDDEN);
  ck_assert_int_eq(an_store_lease_next(f.s, 9999, &any_caps, 3, &t), AN_ENOTFOUND);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_QUEUED);
  ck_assert_int_eq(an_store_revoke(f.s, f.pub), 0);
  sp = spec_for(f.pub, 10);
  ck_assert_int_eq(an_store_task_create(f.s, &sp, 2, &id), AN_EAUTH);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* ---- the life cycle ---- */

START_TEST(test_happy_path) {
  fixture_t f;
  an_task_spec_t sp;
  an_task_t t;
  an_receipt_t r;
  int64_t id;
  int cancelled = -1;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 500, 1), 0);
  sp = spec_for(f.pub, 400);
  id = create_task(f.s, &sp, 10);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_UPLOADING);
  ck_assert_int_eq(t.attempts, 0);
  ck_assert_int_eq(t.worker, 0);
  ck_assert_double_eq(t.accuracy, -1);
  ck_assert_str_eq(t.model, "");
  ck_assert_int_eq(balance(f.s, f.pub), 100);
  expect_ledger_ok(f.s);

  /* Not leasable while its blobs are uploading. */
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &any_caps, 11, &t), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_task_ready(f.s, id, 20), 0);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_QUEUED);

  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &any_caps, 30, &t), 0);
  ck_assert_int_eq(t.id, id);
  ck_assert_int_eq(t.state, AN_TASK_LEASED);
  ck_assert_int_eq(t.worker, f.w1);
  ck_assert_int_eq(t.attempts, 1);
  ck_assert_int_eq(t.lease_deadline, 90);

  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.5, 80, &cancelled), 0);
  ck_assert_int_eq(cancelled, 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.lease_deadline, 140);
  ck_assert_double_eq(t.progress, 0.5);

  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, MODEL_1, 100), 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_VALIDATING);
  ck_assert_str_eq(t.model, MODEL_1);
  ck_assert_int_eq(t.worker, f.w1);
  expect_ledger_ok(f.s);

  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 0.93, "", 100, 110), 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_ACCEPTED);
  ck_assert_double_eq(t.accuracy, 0.93);
  ck_assert_int_eq(t.worker, f.w1);
  ck_assert_int_eq(balance(f.s, f.w1), 360);
  ck_assert_int_eq(balance(f.s, f.pub), 100);
  ck_assert_int_eq(an_store_receipt(f.s, id, &r), 0);
  ck_assert_int_eq(r.task_id, id);
  ck_assert_int_eq(r.worker_id, f.w1);
  ck_assert_int_eq(r.amount, 360);
  ck_assert_int_eq(r.fee, 40);
  ck_assert_int_eq(r.time, 110);
  ck_assert_int_gt(r.transfer_id, 0);
  expect_ledger_ok(f.s);

  ck_assert_int_eq(an_store_task_delivered(f.s, id, 120), 0);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_DELIVERED);
  ck_assert_int_eq(an_store_task_delivered(f.s, id, 130), 0); /* idempotent */
  ck_assert_int_eq(task(f.s, id).updated, 120);
  ck_assert_int_eq(an_store_task_delivered(f.s, id + 1, 130), AN_ENOTFOUND);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

enum op { OP_READY, OP_LEASE, OP_HEARTBEAT, OP_MODEL, OP_VERDICT, OP_DELIVERED, OP_CANCEL,
          OP_KICK, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"ready",   "lease",     "heartbeat", "model",
                                               "verdict", "delivered", "cancel",    "kick"};

/* A task of f->pub's (bounty 100, one attempt) brought to `state`, with w1
 * as its leaseholder wherever it had one. */
static int64_t task_in_state(fixture_t *f, an_task_state_t state) {
  an_task_spec_t sp = spec_for(f->pub, 100);
  int64_t id;
  int n;
  sp.max_attempts = 1;
  id = create_task(f->s, &sp, 1000);
  if (state == AN_TASK_UPLOADING)
    return id;
  ck_assert_int_eq(an_store_task_ready(f->s, id, 1000), 0);
  if (state == AN_TASK_CANCELLED)
    ck_assert_int_eq(an_store_task_cancel(f->s, id, f->pub, 1000), 0);
  if (state == AN_TASK_QUEUED || state == AN_TASK_CANCELLED)
    return id;
  ck_assert_int_eq(lease(f->s, f->w1, 1000), id);
  if (state == AN_TASK_FAILED) {
    ck_assert_int_eq(an_store_lease_expire(f->s, 1100, &n), 0);
    ck_assert_int_eq(n, 1);
  }
  if (state == AN_TASK_LEASED || state == AN_TASK_FAILED)
    return id;
  ck_assert_int_eq(an_store_model_submitted(f->s, id, f->w1, MODEL_1, 1001), 0);
  if (state == AN_TASK_VALIDATING)
    return id;
  ck_assert_int_eq(an_store_validation_done(f->s, id, 1, 0.95, "ok", 0, 1002), 0);
  if (state == AN_TASK_DELIVERED)
    ck_assert_int_eq(an_store_task_delivered(f->s, id, 1003), 0);
  return id;
}

static int run_op(fixture_t *f, enum op op, int64_t id) {
  an_task_t t;
  int cancelled = 0, rc = -1;
  switch (op) {
  case OP_READY: rc = an_store_task_ready(f->s, id, 1010); break;
  case OP_LEASE:
    rc = an_store_lease_next(f->s, f->w2, &any_caps, 1010, &t);
    if (rc == 0)
      ck_assert_int_eq(t.id, id);
    break;
  case OP_HEARTBEAT:
    rc = an_store_lease_heartbeat(f->s, id, f->w1, 0.5, 1010, &cancelled);
    ck_assert_int_eq(cancelled, 0);
    break;
  case OP_MODEL: rc = an_store_model_submitted(f->s, id, f->w1, MODEL_1, 1010); break;
  case OP_VERDICT: rc = an_store_validation_done(f->s, id, 1, 0.95, "ok", 0, 1010); break;
  case OP_DELIVERED: rc = an_store_task_delivered(f->s, id, 1010); break;
  case OP_CANCEL: rc = an_store_task_cancel(f->s, id, f->pub, 1010); break;
  case OP_KICK: rc = an_store_task_kick(f->s, id, 1010); break;
  case OP_COUNT: break;
  }
  return rc;
}

/* Every operation in every state: what it returns and where it leads.
 * A refused operation changes nothing. */
START_TEST(test_transition_matrix) {
  enum { OK = 0, ST = AN_ESTATE, FB = AN_EFORBIDDEN, NF = AN_ENOTFOUND };
  static const struct {
    an_task_state_t state;
    int rc[OP_COUNT];             /* ready lease hb model verdict delivered cancel kick */
    an_task_state_t to[OP_COUNT]; /* the state after each successful op */
  } rows[] = {
      {AN_TASK_UPLOADING, {OK, NF, FB, FB, ST, ST, OK, ST},
       {AN_TASK_QUEUED, 0, 0, 0, 0, 0, AN_TASK_CANCELLED, 0}},
      {AN_TASK_QUEUED, {ST, OK, FB, FB, ST, ST, OK, ST},
       {0, AN_TASK_LEASED, 0, 0, 0, 0, AN_TASK_CANCELLED, 0}},
      {AN_TASK_LEASED, {ST, NF, OK, OK, ST, ST, OK, ST},
       {0, 0, AN_TASK_LEASED, AN_TASK_VALIDATING, 0, 0, AN_TASK_CANCELLED, 0}},
      {AN_TASK_VALIDATING, {ST, NF, ST, ST, OK, ST, OK, ST},
       {0, 0, 0, 0, AN_TASK_ACCEPTED, 0, AN_TASK_CANCELLED, 0}},
      {AN_TASK_ACCEPTED, {ST, NF, ST, ST, ST, OK, ST, ST},
       {0, 0, 0, 0, 0, AN_TASK_DELIVERED, 0, 0}},
      {AN_TASK_DELIVERED, {ST, NF, ST, ST, ST, OK, ST, ST},
       {0, 0, 0, 0, 0, AN_TASK_DELIVERED, 0, 0}},
      {AN_TASK_FAILED, {ST, NF, ST, ST, ST, ST, ST, OK},
       {0, 0, 0, 0, 0, 0, 0, AN_TASK_QUEUED}},
      {AN_TASK_CANCELLED, {ST, NF, FB, FB, ST, ST, ST, ST}, {0}},
  };
  for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
    for (int op = 0; op < OP_COUNT; op++) {
      fixture_t f;
      fixture_init(&f);
      ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
      int64_t id = task_in_state(&f, rows[r].state);
      an_task_t before = task(f.s, id), after;
      int64_t pub_before = balance(f.s, f.pub), w1_before = balance(f.s, f.w1);
      int rc = run_op(&f, (enum op)op, id);
      ck_assert_msg(rc == rows[r].rc[op], "%s on a %s task: %s, expected %s", op_names[op],
                    an_task_state_name(rows[r].state), an_err_name(rc),
                    an_err_name(rows[r].rc[op]));
      after = task(f.s, id);
      if (rc == 0) {
        ck_assert_msg(after.state == rows[r].to[op], "%s on a %s task led to %s", op_names[op],
                      an_task_state_name(rows[r].state), an_task_state_name(after.state));
      } else {
        expect_same_task(&before, &after);
        ck_assert_int_eq(balance(f.s, f.pub), pub_before);
        ck_assert_int_eq(balance(f.s, f.w1), w1_before);
      }
      expect_ledger_ok(f.s);
      fixture_done(&f);
    }
  }
}
END_TEST

START_TEST(test_cross_node_refused) {
  fixture_t f;
  int cancelled;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t id = queued_task(&f, 100, 3);
  ck_assert_int_eq(lease(f.s, f.w1, 10), id);
  /* Another worker can neither renew nor answer w1's lease. */
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w2, 0.1, 11, &cancelled), AN_EFORBIDDEN);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w2, MODEL_1, 11), AN_EFORBIDDEN);
  /* Another publisher cannot cancel it. */
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub2, 12), AN_EFORBIDDEN);
  an_task_t t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_LEASED);
  ck_assert_int_eq(t.worker, f.w1);
  ck_assert_int_eq(t.lease_deadline, 70);
  /* Unknown tasks. */
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, 999, f.w1, 0.1, 11, &cancelled), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_model_submitted(f.s, 999, f.w1, MODEL_1, 11), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_task_cancel(f.s, 999, f.pub, 12), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_validation_done(f.s, 999, 1, 1, "", 0, 12), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_task_kick(f.s, 999, 12), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_task_ready(f.s, 999, 12), AN_ENOTFOUND);
  fixture_done(&f);
}
END_TEST

START_TEST(test_bad_arguments) {
  fixture_t f;
  an_task_spec_t sp;
  an_task_t t;
  int64_t id;
  int cancelled;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  ck_assert_int_eq(an_store_task_create(f.s, NULL, 1, &id), UV_EINVAL);
#define BAD_SPEC(field, value)                                                              \
  do {                                                                                      \
    sp = spec_for(f.pub, 10);                                                               \
    sp.field = value;                                                                       \
    ck_assert_msg(an_store_task_create(f.s, &sp, 1, &id) == UV_EINVAL, #field " = " #value); \
  } while (0)
  BAD_SPEC(bounty, 0);
  BAD_SPEC(bounty, -5);
  BAD_SPEC(min_accuracy, -0.1);
  BAD_SPEC(min_accuracy, 1.5);
  BAD_SPEC(min_accuracy, NAN);
  BAD_SPEC(max_attempts, 0);
  BAD_SPEC(lease_seconds, 0);
  BAD_SPEC(input_c, 0);
  BAD_SPEC(input_w, INT64_C(1) << 40);
  BAD_SPEC(classes, 1);
  BAD_SPEC(min_memory_bytes, -1);
  BAD_SPEC(train_x[3], 'A'); /* upper case is not our hex */
  BAD_SPEC(val_y[63], '\0');
#undef BAD_SPEC
  ck_assert_int_eq(balance(f.s, f.pub), 1000);

  id = queued_task(&f, 10, 1);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, NULL, 1, &t), UV_EINVAL);
  ck_assert_int_eq(lease(f.s, f.w1, 1), id);
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, NAN, 2, &cancelled), UV_EINVAL);
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 1.5, 2, &cancelled), UV_EINVAL);
  char short_digest[AN_DIGEST_HEX] = "abc";
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, short_digest, 2), UV_EINVAL);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, MODEL_1, 2), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 1.2, "", 0, 3), UV_EINVAL);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, NAN, "", 0, 3), UV_EINVAL);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 0.9, "", -1, 3), UV_EINVAL);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 0.9, "", 1001, 3), UV_EINVAL);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_VALIDATING);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 0, 1), UV_EINVAL);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, -3, 1), UV_EINVAL);
  ck_assert_int_eq(an_store_topup(f.s, 999, 3, 1), AN_ENOTFOUND);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* ---- leases ---- */

START_TEST(test_lease_expiry_then_failure) {
  fixture_t f;
  an_task_t t;
  int n, cancelled;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  an_task_spec_t sp = spec_for(f.pub, 300);
  sp.max_attempts = 2;
  sp.lease_seconds = 10;
  int64_t id = create_task(f.s, &sp, 0);
  ck_assert_int_eq(an_store_task_ready(f.s, id, 0), 0);

  ck_assert_int_eq(lease(f.s, f.w1, 100), id);
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.2, 105, &cancelled), 0);
  ck_assert_int_eq(task(f.s, id).lease_deadline, 115);
  ck_assert_int_eq(an_store_lease_expire(f.s, 114, &n), 0);
  ck_assert_int_eq(n, 0);
  /* Past the deadline the lease is dead even before the sweep runs. */
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.3, 115, &cancelled), AN_ESTATE);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, MODEL_1, 115), AN_ESTATE);
  ck_assert_int_eq(an_store_lease_expire(f.s, 115, &n), 0);
  ck_assert_int_eq(n, 1);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_QUEUED);
  ck_assert_int_eq(t.attempts, 1);
  ck_assert_int_eq(t.worker, 0);
  ck_assert_double_eq(t.progress, 0);
  ck_assert_str_eq(t.reason, "lease expired");
  ck_assert_int_eq(balance(f.s, f.pub), 700); /* still in escrow */
  expect_ledger_ok(f.s);
  /* The old leaseholder lost it for good: no renewal, no second lease. */
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.3, 116, &cancelled), AN_ESTATE);
  ck_assert_int_eq(cancelled, 0);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &any_caps, 116, &t), AN_ENOTFOUND);

  ck_assert_int_eq(lease(f.s, f.w2, 120), id);
  ck_assert_int_eq(task(f.s, id).attempts, 2);
  ck_assert_int_eq(an_store_lease_expire(f.s, 200, &n), 0);
  ck_assert_int_eq(n, 1);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_FAILED);
  ck_assert_str_eq(t.reason, "lease expired (all attempts used)");
  ck_assert_int_eq(balance(f.s, f.pub), 1000); /* refunded */
  ck_assert_int_eq(an_store_lease_next(f.s, f.w3, &any_caps, 201, &t), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_lease_expire(f.s, 10000, &n), 0);
  ck_assert_int_eq(n, 0);
  expect_ledger_ok(f.s);

  /* The admin's kick: escrowed again, attempts from zero. */
  ck_assert_int_eq(an_store_task_kick(f.s, id, 300), 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_QUEUED);
  ck_assert_int_eq(t.attempts, 0);
  ck_assert_int_eq(balance(f.s, f.pub), 700);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_many_leases_expire_at_once) {
  fixture_t f;
  int n;
  an_task_t t;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t a = queued_task(&f, 10, 1), b = queued_task(&f, 10, 2), c = queued_task(&f, 10, 2);
  ck_assert_int_eq(lease(f.s, f.w1, 0), a);
  ck_assert_int_eq(lease(f.s, f.w2, 0), b);
  ck_assert_int_eq(lease(f.s, f.w3, 30), c);
  ck_assert_int_eq(an_store_lease_expire(f.s, 60, &n), 0);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(task(f.s, a).state, AN_TASK_FAILED);
  ck_assert_int_eq(task(f.s, b).state, AN_TASK_QUEUED);
  ck_assert_int_eq(task(f.s, c).state, AN_TASK_LEASED);
  ck_assert_int_eq(balance(f.s, f.pub), 1000 - 20);
  /* The requeued task is older than any new one, so it goes first. */
  int64_t d = queued_task(&f, 10, 1);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &any_caps, 61, &t), 0);
  ck_assert_int_eq(t.id, b);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w2, &any_caps, 61, &t), 0);
  ck_assert_int_eq(t.id, d);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_capability_matching) {
  fixture_t f;
  an_task_spec_t sp;
  an_task_t t;
  int64_t ids[4];
  fixture_init(&f);
  int64_t w4 = enroll(f.s, AN_ROLE_WORKER, "w4");
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  for (int i = 0; i < 4; i++) {
    sp = spec_for(f.pub, 10);
    if (i == 0)
      sp.min_memory_bytes = INT64_C(8) << 30;
    if (i == 1)
      sp.needs_gpu = 1;
    if (i == 2)
      sp.input_c = 3, sp.input_h = 64, sp.input_w = 64; /* 12288 elements */
    ids[i] = create_task(f.s, &sp, 1);
    ck_assert_int_eq(an_store_task_ready(f.s, ids[i], 1), 0);
  }
  /* The least any queued task asks: the plain one's 0 bytes and 784
   * inputs, and one without a GPU exists. */
  an_queued_t q;
  ck_assert_int_eq(an_store_queued(f.s, &q), 0);
  ck_assert_int_eq(q.tasks, 4);
  ck_assert_int_eq(q.min_memory, 0);
  ck_assert_int_eq(q.all_need_gpu, 0);
  ck_assert_int_eq(q.min_input_elems, 784);
  /* Small memory, no GPU, at most 1000 inputs: only the plain task (784). */
  an_worker_caps_t small = {.memory_bytes = INT64_C(1) << 30, .gpu = 0, .max_input_elems = 1000};
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &small, 2, &t), 0);
  ck_assert_int_eq(t.id, ids[3]);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &small, 2, &t), AN_ENOTFOUND);
  /* Exactly the memory asked for is enough. */
  an_worker_caps_t big = {.memory_bytes = INT64_C(8) << 30, .max_input_elems = 784};
  ck_assert_int_eq(an_store_lease_next(f.s, f.w2, &big, 2, &t), 0);
  ck_assert_int_eq(t.id, ids[0]);
  /* Left: the GPU one (784 inputs) and the wide one (12288, no GPU). */
  ck_assert_int_eq(an_store_queued(f.s, &q), 0);
  ck_assert_int_eq(q.tasks, 2);
  ck_assert_int_eq(q.all_need_gpu, 0);
  ck_assert_int_eq(q.min_input_elems, 784);
  /* A GPU and any input size: the oldest of the two it can now run. */
  an_worker_caps_t gpu = {.memory_bytes = INT64_C(1) << 30, .gpu = 1};
  ck_assert_int_eq(an_store_lease_next(f.s, f.w3, &gpu, 2, &t), 0);
  ck_assert_int_eq(t.id, ids[1]);
  ck_assert_int_eq(an_store_queued(f.s, &q), 0);
  ck_assert_int_eq(q.tasks, 1);
  ck_assert_int_eq(q.min_input_elems, 12288);
  an_worker_caps_t wide = {.memory_bytes = 0, .max_input_elems = 12288};
  ck_assert_int_eq(an_store_lease_next(f.s, w4, &wide, 2, &t), 0);
  ck_assert_int_eq(t.id, ids[2]);
  fixture_done(&f);
}
END_TEST

START_TEST(test_exclude_failed) {
  fixture_t f;
  an_task_spec_t sp;
  an_task_t t;
  int n;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  /* A excludes workers that failed it, B does not; one attempt each. */
  sp = spec_for(f.pub, 100);
  sp.max_attempts = 1;
  sp.exclude_failed = 1;
  int64_t a = create_task(f.s, &sp, 1);
  sp.exclude_failed = 0;
  int64_t b = create_task(f.s, &sp, 1);
  ck_assert_int_eq(an_store_task_ready(f.s, a, 1), 0);
  ck_assert_int_eq(an_store_task_ready(f.s, b, 1), 0);
  /* w1 fails A by letting its lease expire, and B with a rejected model. */
  ck_assert_int_eq(lease(f.s, f.w1, 10), a);
  ck_assert_int_eq(an_store_lease_expire(f.s, 100, &n), 0);
  ck_assert_int_eq(lease(f.s, f.w1, 100), b);
  ck_assert_int_eq(an_store_model_submitted(f.s, b, f.w1, MODEL_1, 101), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, b, 0, 0.2, "accuracy 0.2 < 0.9", 0, 102), 0);
  ck_assert_int_eq(task(f.s, a).state, AN_TASK_FAILED);
  ck_assert_int_eq(task(f.s, b).state, AN_TASK_FAILED);
  /* A kick starts a new round: w1 may try B again, never A. */
  ck_assert_int_eq(an_store_task_kick(f.s, a, 200), 0);
  ck_assert_int_eq(an_store_task_kick(f.s, b, 200), 0);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &any_caps, 201, &t), 0);
  ck_assert_int_eq(t.id, b);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &any_caps, 201, &t), AN_ENOTFOUND);
  ck_assert_int_eq(an_store_lease_next(f.s, f.w2, &any_caps, 201, &t), 0);
  ck_assert_int_eq(t.id, a);
  /* w1-A, w1-B, then in the new round w1-B and w2-A. */
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM attempts"), 4);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* ---- validation verdicts and cancels ---- */

START_TEST(test_rejection_requeues_then_fails) {
  fixture_t f;
  an_task_t t;
  an_receipt_t r;
  char reason[700] = "";
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t id = queued_task(&f, 250, 2);
  ck_assert_int_eq(lease(f.s, f.w1, 10), id);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, MODEL_1, 11), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 0, 0.5, "accuracy 0.50 < 0.90", 0, 12), 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_QUEUED);
  ck_assert_str_eq(t.reason, "accuracy 0.50 < 0.90");
  ck_assert_double_eq(t.accuracy, 0.5);
  ck_assert_int_eq(t.worker, 0);
  ck_assert_int_eq(t.attempts, 1);
  ck_assert_int_eq(balance(f.s, f.pub), 750);

  /* A long reason is cut to fit, on a character boundary. */
  for (int i = 0; i < 300; i++)
    strcat(reason, "\xc3\xa9"); /* é */
  ck_assert_int_eq(lease(f.s, f.w2, 20), id);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w2, MODEL_1, 21), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 0, -1, reason, 0, 22), 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_FAILED);
  ck_assert_double_eq(t.accuracy, -1);
  ck_assert_ptr_nonnull(strstr(t.reason, "\xc3\xa9 (all attempts used)"));
  ck_assert_uint_le(strlen(t.reason), 255);
  ck_assert_int_eq(balance(f.s, f.pub), 1000);
  ck_assert_int_eq(balance(f.s, f.w1) + balance(f.s, f.w2), 0);
  ck_assert_int_eq(an_store_receipt(f.s, id, &r), AN_ENOTFOUND);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_cancel_while_leased) {
  fixture_t f;
  an_task_t t;
  an_receipt_t r;
  int cancelled = 0;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t id = queued_task(&f, 300, 3);
  ck_assert_int_eq(lease(f.s, f.w1, 10), id);
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub, 20), 0);
  t = task(f.s, id);
  ck_assert_int_eq(t.state, AN_TASK_CANCELLED);
  ck_assert_int_eq(t.worker, 0);
  ck_assert_int_eq(balance(f.s, f.pub), 1000);
  /* The leaseholder learns it at its next heartbeat, and at every one
   * after; it is not an error. */
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.4, 25, &cancelled), 0);
  ck_assert_int_eq(cancelled, 1);
  cancelled = 0;
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.4, 26, &cancelled), 0);
  ck_assert_int_eq(cancelled, 1);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, MODEL_1, 27), AN_ESTATE);
  /* Nobody else hears of a lease they never had. */
  cancelled = 0;
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w2, 0.4, 25, &cancelled), AN_EFORBIDDEN);
  ck_assert_int_eq(cancelled, 0);
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub, 30), AN_ESTATE);
  ck_assert_int_eq(an_store_task_kick(f.s, id, 30), AN_ESTATE);
  ck_assert_int_eq(balance(f.s, f.pub), 1000);
  expect_ledger_ok(f.s);

  /* Cancelled while its model is being validated: the verdict is refused
   * and nobody is paid. */
  id = queued_task(&f, 300, 3);
  ck_assert_int_eq(lease(f.s, f.w2, 40), id);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w2, MODEL_1, 41), 0);
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub, 42), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 0.99, "", 0, 43), AN_ESTATE);
  ck_assert_int_eq(an_store_receipt(f.s, id, &r), AN_ENOTFOUND);
  ck_assert_int_eq(balance(f.s, f.w2), 0);
  ck_assert_int_eq(balance(f.s, f.pub), 1000);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_cancel_after_acceptance_refused) {
  fixture_t f;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t id = queued_task(&f, 300, 3);
  ck_assert_int_eq(lease(f.s, f.w1, 10), id);
  ck_assert_int_eq(an_store_model_submitted(f.s, id, f.w1, MODEL_1, 11), 0);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 0.95, "", 0, 12), 0);
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub2, 13), AN_EFORBIDDEN);
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub, 13), AN_ESTATE);
  ck_assert_int_eq(an_store_task_delivered(f.s, id, 14), 0);
  ck_assert_int_eq(an_store_task_cancel(f.s, id, f.pub, 15), AN_ESTATE);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_DELIVERED);
  ck_assert_int_eq(balance(f.s, f.pub), 700);
  ck_assert_int_eq(balance(f.s, f.w1), 300);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* ---- ledger ---- */

static int64_t fees_total(const char *path) {
  return raw_int(path, "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account = 'fees'");
}

/* Leases, answers and accepts a queued task; returns its receipt. */
static an_receipt_t pay(fixture_t *f, int64_t id, int64_t worker, int fee_permille) {
  an_receipt_t r;
  ck_assert_int_eq(lease(f->s, worker, 50), id);
  ck_assert_int_eq(an_store_model_submitted(f->s, id, worker, MODEL_1, 51), 0);
  ck_assert_int_eq(an_store_validation_done(f->s, id, 1, 0.95, "", fee_permille, 52), 0);
  ck_assert_int_eq(an_store_receipt(f->s, id, &r), 0);
  ck_assert_int_eq(r.worker_id, worker);
  return r;
}

START_TEST(test_amounts_and_fee_rounding) {
  fixture_t f;
  an_task_spec_t sp;
  an_receipt_t r;
  int64_t id, counts[AN_TASK_STATE_COUNT];
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 600, 1), 0);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 400, 2), 0);
  ck_assert_int_eq(balance(f.s, f.pub), 1000);

  /* 999 at 2.5%: the fee is 24.975, rounded down to 24. */
  id = queued_task(&f, 999, 1);
  ck_assert_int_eq(balance(f.s, f.pub), 1);
  r = pay(&f, id, f.w1, 25);
  ck_assert_int_eq(r.amount, 975);
  ck_assert_int_eq(r.fee, 24);
  ck_assert_int_eq(balance(f.s, f.w1), 975);
  ck_assert_int_eq(fees_total(f.path), 24);

  /* Short of funds: nothing is created, nothing moves. */
  sp = spec_for(f.pub, 2);
  ck_assert_int_eq(an_store_task_create(f.s, &sp, 60, &id), AN_EFUNDS);
  ck_assert_int_eq(an_store_task_counts(f.s, counts), 0);
  ck_assert_int_eq(counts[AN_TASK_ACCEPTED], 1);
  ck_assert_int_eq(counts[AN_TASK_UPLOADING], 0);
  ck_assert_int_eq(balance(f.s, f.pub), 1);
  expect_ledger_ok(f.s);

  /* No fee, a fee rounding to zero, and a 100% fee. */
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 301, 70), 0);
  id = queued_task(&f, 100, 1);
  r = pay(&f, id, f.w2, 0);
  ck_assert_int_eq(r.amount, 100);
  ck_assert_int_eq(r.fee, 0);
  id = queued_task(&f, 1, 1);
  r = pay(&f, id, f.w2, 999);
  ck_assert_int_eq(r.amount, 1);
  ck_assert_int_eq(r.fee, 0);
  id = queued_task(&f, 200, 1);
  r = pay(&f, id, f.w3, 1000);
  ck_assert_int_eq(r.amount, 0);
  ck_assert_int_eq(r.fee, 200);
  ck_assert_int_eq(balance(f.s, f.w2), 101);
  ck_assert_int_eq(balance(f.s, f.w3), 0);
  ck_assert_int_eq(fees_total(f.path), 224);
  ck_assert_int_eq(balance(f.s, f.pub), 1);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_kick_needs_funds) {
  fixture_t f;
  int n;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 100, 1), 0);
  int64_t id = queued_task(&f, 100, 1);
  ck_assert_int_eq(lease(f.s, f.w1, 10), id);
  ck_assert_int_eq(an_store_lease_expire(f.s, 1000, &n), 0);
  ck_assert_int_eq(balance(f.s, f.pub), 100);
  /* Spend the refund on another task: the kick cannot escrow again. */
  int64_t other = queued_task(&f, 60, 1);
  (void)other;
  ck_assert_int_eq(an_store_task_kick(f.s, id, 1001), AN_EFUNDS);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_FAILED);
  ck_assert_int_eq(balance(f.s, f.pub), 40);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 60, 1002), 0);
  ck_assert_int_eq(an_store_task_kick(f.s, id, 1003), 0);
  ck_assert_int_eq(balance(f.s, f.pub), 0);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_fee_without_overflow) {
  fixture_t f;
  an_receipt_t r;
  fixture_init(&f);
  /* The largest bounty there can be: bounty * permille would overflow. */
  ck_assert_int_eq(an_store_topup(f.s, f.pub, INT64_MAX, 1), 0);
  /* Nothing more can be minted: a balance would pass INT64_MAX. */
  ck_assert_int_eq(an_store_topup(f.s, f.pub2, 1, 2), UV_EINVAL);
  int64_t id = queued_task(&f, INT64_MAX, 1);
  r = pay(&f, id, f.w1, 999);
  ck_assert_int_eq(r.fee, INT64_C(9214148664817921031)); /* floor(bounty * 0.999) */
  ck_assert_int_eq(r.amount, INT64_C(9223372036854776));
  ck_assert_int_eq(balance(f.s, f.w1), INT64_C(9223372036854776));
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

START_TEST(test_no_double_payout) {
  fixture_t f;
  an_receipt_t r1, r2;
  char sql[512];
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t id = queued_task(&f, 500, 2);
  r1 = pay(&f, id, f.w1, 100);
  /* The validator's answer arrives again (a retry, a restart): refused,
   * whichever verdict it carries. */
  ck_assert_int_eq(an_store_validation_done(f.s, id, 1, 0.95, "", 100, 60), AN_ESTATE);
  ck_assert_int_eq(an_store_validation_done(f.s, id, 0, 0.10, "", 100, 61), AN_ESTATE);
  ck_assert_int_eq(an_store_receipt(f.s, id, &r2), 0);
  ck_assert_mem_eq(&r1, &r2, sizeof r1);
  ck_assert_int_eq(balance(f.s, f.w1), 450);
  ck_assert_int_eq(fees_total(f.path), 50);
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM ledger WHERE kind = 'payout'"), 2);
  /* Below the state machine, the database refuses a second payout too. */
  snprintf(sql, sizeof sql,
           "INSERT INTO ledger (transfer_id, account, amount, task_id, kind, time) VALUES"
           " (900, 'escrow:%lld', 0, %lld, 'payout', 1), (900, 'node:%lld', 0, %lld, 'payout', 1)",
           (long long)id, (long long)id, (long long)f.w2, (long long)id);
  ck_assert_int_eq(raw_sql(f.path, sql), SQLITE_CONSTRAINT);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* Corruptions of a store holding one paid task (A, worker w1, 10% fee),
 * one cancelled (B) and one queued (C): every kind of ledger entry. In the
 * SQL and the expected message, {A} {B} {C} stand for the tasks' ids, {P}
 * for the publisher's and {W} for w1's. */
typedef struct ledger_case {
  const char *sql;
  const char *expect;
} ledger_case_t;

static void substitute(const char *tmpl, const int64_t ids[5], char *out, size_t len) {
  static const char keys[] = "ABCPW";
  size_t n = 0;
  for (const char *p = tmpl; *p; p++) {
    const char *k = p[0] == '{' && p[1] && p[2] == '}' ? strchr(keys, p[1]) : NULL;
    int w = k ? snprintf(out + n, len - n, "%lld", (long long)ids[k - keys])
              : snprintf(out + n, len - n, "%c", *p);
    ck_assert(w > 0 && (size_t)w < len - n);
    n += (size_t)w;
    p += k ? 2 : 0;
  }
}

START_TEST(test_ledger_check_catches_corruption) {
  static const ledger_case_t cases[] = {
      {"UPDATE ledger SET amount = amount + 1 WHERE id = 1", "sum to 1"},
      /* Total still zero, but two transfers no longer cancel. */
      {"UPDATE ledger SET amount = amount + 5 WHERE id = 1;"
       "UPDATE ledger SET amount = amount - 5 WHERE id = 3",
       "summing to 5"},
      {"DELETE FROM ledger WHERE transfer_id = (SELECT MAX(transfer_id) FROM ledger)"
       " AND amount > 0;"
       "UPDATE ledger SET amount = 0 WHERE transfer_id = (SELECT MAX(transfer_id) FROM ledger)",
       "1 entries"},
      {"UPDATE ledger SET amount = -amount WHERE transfer_id = 1", "wrong direction"},
      {"UPDATE ledger SET account = 'node:999' WHERE transfer_id = 1 AND amount > 0",
       "unknown account node:999"},
      {"INSERT INTO ledger (transfer_id, account, amount, task_id, kind, time) VALUES"
       " (999, 'node:{P}', -5000, {C}, 'escrow', 1),"
       " (999, 'escrow:{C}', 5000, {C}, 'escrow', 1)",
       "node:{P} is below zero"},
      {"DROP INDEX ledger_paid_once;"
       "INSERT INTO ledger (transfer_id, account, amount, task_id, kind, time) VALUES"
       " (999, 'escrow:{A}', 0, {A}, 'payout', 1),"
       " (999, 'node:{W}', 0, {A}, 'payout', 1)",
       "task {A}: 2 payout transfers"},
      {"UPDATE tasks SET state = 4 WHERE id = {C}", "task {C}: accepted, but no payout"},
      {"UPDATE tasks SET state = 1 WHERE id = {A}", "task {A}: queued, but its worker"},
      {"UPDATE ledger SET account = 'node:{P}' WHERE kind = 'payout'"
       " AND account = 'node:{W}'",
       "task {A}: accepted, but no payout to its worker"},
      {"DELETE FROM ledger WHERE kind = 'refund' AND task_id = {B}",
       "task {B}: cancelled with 50 in escrow"},
      {"UPDATE tasks SET bounty = 71 WHERE id = {C}",
       "task {C}: queued with 70 in escrow (bounty 71)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fixture_t f;
    char sql[1024], expect[256], err[512] = "";
    fixture_init(&f);
    ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
    int64_t a = queued_task(&f, 100, 1), b = queued_task(&f, 50, 1),
            c = queued_task(&f, 70, 1);
    pay(&f, a, f.w1, 100);
    ck_assert_int_eq(an_store_task_cancel(f.s, b, f.pub, 60), 0);
    expect_ledger_ok(f.s);
    const int64_t ids[5] = {a, b, c, f.pub, f.w1};
    substitute(cases[i].sql, ids, sql, sizeof sql);
    substitute(cases[i].expect, ids, expect, sizeof expect);
    /* Written behind the open store's back, as another process would. */
    ck_assert_msg(raw_sql(f.path, sql) == SQLITE_OK, "case %zu: SQL failed", i);
    ck_assert_msg(an_store_ledger_check(f.s, err, sizeof err) == AN_EDB,
                  "case %zu (%s): the check passed", i, expect);
    ck_assert_msg(strstr(err, expect), "case %zu: \"%s\" does not say \"%s\"", i, err, expect);
    fixture_done(&f);
  }
}
END_TEST

START_TEST(test_corrupt_rows_are_errors) {
  fixture_t f;
  an_task_t t;
  int64_t counts[AN_TASK_STATE_COUNT];
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 1000, 1), 0);
  int64_t id = queued_task(&f, 10, 1);
  /* Values the schema's CHECKs forbid, forced in: errors, not crashes. */
  ck_assert_int_eq(raw_sql(f.path, "PRAGMA ignore_check_constraints = ON;"
                                   "UPDATE tasks SET model = hex(zeroblob(150))"),
                   SQLITE_OK);
  ck_assert_int_eq(an_store_task_get(f.s, id, &t), AN_EDB);
  ck_assert_ptr_nonnull(strstr(an_store_errmsg(f.s), "corrupt"));
  ck_assert_int_eq(an_store_task_ready(f.s, id, 2), AN_EDB);
  ck_assert_int_eq(raw_sql(f.path, "PRAGMA ignore_check_constraints = ON;"
                                   "UPDATE tasks SET model = '', state = 42"),
                   SQLITE_OK);
  ck_assert_int_eq(an_store_task_get(f.s, id, &t), AN_EDB);
  ck_assert_int_eq(an_store_task_counts(f.s, counts), AN_EDB);
  ck_assert_int_eq(raw_sql(f.path, "UPDATE nodes SET salt = x'00'"), SQLITE_CONSTRAINT);
  fixture_done(&f);
}
END_TEST

/* ---- lists ---- */

typedef struct collected {
  int64_t ids[16];
  int n, stop_after;
  an_store_t *s;
  int64_t cancel_as;
} collected_t;

static int collect_task(const an_task_t *t, void *arg) {
  collected_t *c = arg;
  ck_assert_int_lt(c->n, 16);
  c->ids[c->n++] = t->id;
  /* Calling back into the store from inside the walk is allowed. */
  if (c->cancel_as)
    ck_assert_int_eq(an_store_task_cancel(c->s, t->id, c->cancel_as, 5), 0);
  return c->stop_after && c->n >= c->stop_after;
}

static int collect_node(const an_node_info_t *n, void *arg) {
  collected_t *c = arg;
  ck_assert_int_lt(c->n, 16);
  c->ids[c->n++] = n->balance;
  ck_assert_int_eq(n->revoked, n->id == 1);
  ck_assert_int_eq(n->role, n->id <= 2 ? AN_ROLE_PUBLISHER : AN_ROLE_WORKER);
  static const char *const names[] = {"pub", "pub2", "w1", "w2", "w3"};
  ck_assert_int_le(n->id, 5);
  ck_assert_str_eq(n->name, names[n->id - 1]);
  return 0;
}

START_TEST(test_lists_and_counts) {
  fixture_t f;
  collected_t c = {0};
  int64_t counts[AN_TASK_STATE_COUNT];
  int64_t mine[3], theirs;
  int all = 0;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 100, 1), 0);
  ck_assert_int_eq(an_store_topup(f.s, f.pub2, 100, 1), 0);
  mine[0] = queued_task(&f, 10, 1);
  an_task_spec_t sp = spec_for(f.pub2, 20);
  theirs = create_task(f.s, &sp, 2);
  mine[1] = queued_task(&f, 10, 1);
  mine[2] = queued_task(&f, 10, 1);
  ck_assert_int_eq(lease(f.s, f.w1, 3), mine[0]);
  ck_assert_int_eq(an_store_model_submitted(f.s, mine[0], f.w1, MODEL_1, 4), 0);

  ck_assert_int_eq(an_store_tasks(f.s, 0, count_task, &all), 0);
  ck_assert_int_eq(all, 4);
  ck_assert_int_eq(an_store_tasks(f.s, f.pub, collect_task, &c), 0);
  ck_assert_int_eq(c.n, 3);
  ck_assert_mem_eq(c.ids, mine, sizeof mine);
  c = (collected_t){.stop_after = 1};
  ck_assert_int_eq(an_store_tasks(f.s, f.pub2, collect_task, &c), 0);
  ck_assert_int_eq(c.n, 1);
  ck_assert_int_eq(c.ids[0], theirs);
  c = (collected_t){.stop_after = 2};
  ck_assert_int_eq(an_store_tasks(f.s, 0, collect_task, &c), 0);
  ck_assert_int_eq(c.n, 2);
  c = (collected_t){0};
  ck_assert_int_eq(an_store_validating(f.s, collect_task, &c), 0);
  ck_assert_int_eq(c.n, 1);
  ck_assert_int_eq(c.ids[0], mine[0]);

  ck_assert_int_eq(an_store_task_counts(f.s, counts), 0);
  ck_assert_int_eq(counts[AN_TASK_VALIDATING], 1);
  ck_assert_int_eq(counts[AN_TASK_QUEUED], 2);
  an_queued_t queued;
  ck_assert_int_eq(an_store_queued(f.s, &queued), 0);
  ck_assert_int_eq(queued.tasks, 2);
  ck_assert_int_eq(queued.min_memory, 0);
  ck_assert_int_eq(queued.all_need_gpu, 0);
  ck_assert_int_eq(queued.min_input_elems, 1 * 28 * 28); /* spec_for's input */
  ck_assert_int_eq(counts[AN_TASK_UPLOADING], 1);
  ck_assert_int_eq(counts[AN_TASK_LEASED] + counts[AN_TASK_ACCEPTED] + counts[AN_TASK_FAILED],
                   0);

  /* Cancel every task of pub's from inside the walk over them. */
  c = (collected_t){.s = f.s, .cancel_as = f.pub};
  ck_assert_int_eq(an_store_tasks(f.s, f.pub, collect_task, &c), 0);
  ck_assert_int_eq(c.n, 3);
  ck_assert_int_eq(an_store_task_counts(f.s, counts), 0);
  ck_assert_int_eq(counts[AN_TASK_CANCELLED], 3);
  ck_assert_int_eq(an_store_queued(f.s, &queued), 0);
  ck_assert_int_eq(queued.tasks, 0);

  ck_assert_int_eq(an_store_revoke(f.s, f.pub), 0);
  c = (collected_t){0};
  ck_assert_int_eq(an_store_nodes(f.s, collect_node, &c), 0);
  ck_assert_int_eq(c.n, 5);
  ck_assert_int_eq(c.ids[0], 100);
  ck_assert_int_eq(c.ids[1], 80);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* ---- a long random run against a model of the ledger ---- */

#define SIM_PUBS 3
#define SIM_WORKERS 4
#define SIM_NODES (SIM_PUBS + SIM_WORKERS)
#define SIM_MAX_TASKS 600
#define SIM_STEPS 3000

typedef struct sim_task {
  an_task_state_t state;
  int64_t publisher, bounty, worker;
} sim_task_t;

typedef struct sim {
  fixture_t f;
  uint64_t rng;
  int64_t now;
  int64_t node[SIM_NODES]; /* publishers first */
  int64_t expect[SIM_NODES];
  int64_t fees;
  sim_task_t task[SIM_MAX_TASKS + 1]; /* by id: ids are 1, 2, ... */
  int64_t ntasks;
  int fee_permille;                    /* of the latest verdict */
  int transitions;                     /* seen by the latest reconcile */
  int seen[AN_TASK_STATE_COUNT][AN_TASK_STATE_COUNT];
  int efunds;
} sim_t;

static uint64_t sim_rand(sim_t *m, uint64_t n) { return an_test_rand(&m->rng) % n; }

static int sim_index(const sim_t *m, int64_t node) {
  for (int i = 0; i < SIM_NODES; i++)
    if (m->node[i] == node)
      return i;
  ck_abort_msg("node %lld is not in the simulation", (long long)node);
  return -1;
}

/* The life cycle as store.h draws it. */
static bool legal_transition(an_task_state_t from, an_task_state_t to) {
  switch (from) {
  case AN_TASK_UPLOADING: return to == AN_TASK_QUEUED || to == AN_TASK_CANCELLED;
  case AN_TASK_QUEUED: return to == AN_TASK_LEASED || to == AN_TASK_CANCELLED;
  case AN_TASK_LEASED:
  case AN_TASK_VALIDATING:
    return to == AN_TASK_QUEUED || to == AN_TASK_FAILED || to == AN_TASK_CANCELLED ||
           (from == AN_TASK_LEASED ? to == AN_TASK_VALIDATING : to == AN_TASK_ACCEPTED);
  case AN_TASK_ACCEPTED: return to == AN_TASK_DELIVERED;
  case AN_TASK_FAILED: return to == AN_TASK_QUEUED; /* kick */
  default: return false;
  }
}

/* Applies what the store did to the model: every change of state is
 * checked against the life cycle and moves the credits it must. */
static int sim_observe(const an_task_t *t, void *arg) {
  sim_t *m = arg;
  sim_task_t *k;
  ck_assert_int_le(t->id, m->ntasks + 1);
  if (t->id == m->ntasks + 1) { /* created by this step */
    ck_assert_int_eq(t->state, AN_TASK_UPLOADING);
    m->ntasks++;
    ck_assert_int_le(m->ntasks, SIM_MAX_TASKS);
    m->task[t->id] = (sim_task_t){AN_TASK_UPLOADING, t->spec.publisher, t->spec.bounty, 0};
    m->expect[sim_index(m, t->spec.publisher)] -= t->spec.bounty;
    m->transitions++;
  }
  k = &m->task[t->id];
  if (k->state != t->state) {
    ck_assert_msg(legal_transition(k->state, t->state), "task %lld: %s -> %s", (long long)t->id,
                  an_task_state_name(k->state), an_task_state_name(t->state));
    m->seen[k->state][t->state]++;
    if (t->state == AN_TASK_FAILED || t->state == AN_TASK_CANCELLED)
      m->expect[sim_index(m, k->publisher)] += k->bounty;
    if (k->state == AN_TASK_FAILED) /* kicked: escrowed again */
      m->expect[sim_index(m, k->publisher)] -= k->bounty;
    if (t->state == AN_TASK_ACCEPTED) {
      int64_t fee = k->bounty * m->fee_permille / 1000;
      m->expect[sim_index(m, t->worker)] += k->bounty - fee;
      m->fees += fee;
    }
    k->state = t->state;
    m->transitions++;
  }
  k->worker = t->worker;
  return 0;
}

static void sim_reconcile(sim_t *m) {
  m->transitions = 0;
  ck_assert_int_eq(an_store_tasks(m->f.s, 0, sim_observe, m), 0);
  for (int i = 0; i < SIM_NODES; i++)
    ck_assert_msg(balance(m->f.s, m->node[i]) == m->expect[i], "node %lld: %lld, expected %lld",
                  (long long)m->node[i], (long long)balance(m->f.s, m->node[i]),
                  (long long)m->expect[i]);
  expect_ledger_ok(m->f.s);
}

/* A task id, most often one in `want` (so most operations can succeed),
 * sometimes any, sometimes one that does not exist. */
static int64_t sim_pick(sim_t *m, an_task_state_t want) {
  int64_t candidates[SIM_MAX_TASKS], n = 0;
  if (m->ntasks == 0 || sim_rand(m, 20) == 0)
    return m->ntasks + 1 + (int64_t)sim_rand(m, 3);
  if (sim_rand(m, 4) != 0) {
    for (int64_t id = 1; id <= m->ntasks; id++)
      if (m->task[id].state == want)
        candidates[n++] = id;
    if (n > 0)
      return candidates[sim_rand(m, (uint64_t)n)];
  }
  return 1 + (int64_t)sim_rand(m, (uint64_t)m->ntasks);
}

static int64_t sim_worker(sim_t *m) { return m->node[SIM_PUBS + sim_rand(m, SIM_WORKERS)]; }

static bool rc_in(int rc, int a, int b, int c) { return rc == 0 || rc == a || rc == b || rc == c; }

static void sim_step(sim_t *m, int step) {
  an_task_t t;
  int64_t id, worker, pub;
  int rc = 0, n, cancelled, op = (int)sim_rand(m, 100);
  bool may_change = true;

  m->now += (int64_t)sim_rand(m, 3);
  if (op < 6) { /* top-up */
    int i = (int)sim_rand(m, SIM_NODES);
    int64_t credits = 1 + (int64_t)sim_rand(m, 600);
    rc = an_store_topup(m->f.s, m->node[i], credits, m->now);
    ck_assert_int_eq(rc, 0);
    m->expect[i] += credits;
  } else if (op < 16) { /* submit */
    int i = (int)sim_rand(m, SIM_PUBS);
    an_task_spec_t sp = spec_for(m->node[i], 1 + (int64_t)sim_rand(m, 300));
    sp.max_attempts = 1 + (int)sim_rand(m, 3);
    sp.lease_seconds = 5 + (int)sim_rand(m, 25);
    sp.exclude_failed = sim_rand(m, 2) == 0;
    sp.needs_gpu = sim_rand(m, 5) == 0;
    sp.min_memory_bytes = sim_rand(m, 4) == 0 ? INT64_C(4) << 30 : 0;
    if (sim_rand(m, 3) == 0)
      sp.input_c = 3, sp.input_h = 32, sp.input_w = 32;
    if (m->ntasks >= SIM_MAX_TASKS - 1)
      return;
    rc = an_store_task_create(m->f.s, &sp, m->now, &id);
    ck_assert_int_eq(rc, m->expect[i] < sp.bounty ? AN_EFUNDS : 0);
    m->efunds += rc == AN_EFUNDS;
  } else if (op < 26) {
    id = sim_pick(m, AN_TASK_UPLOADING);
    rc = an_store_task_ready(m->f.s, id, m->now);
    ck_assert(rc_in(rc, AN_ESTATE, AN_ENOTFOUND, 0));
  } else if (op < 42) {
    an_worker_caps_t caps = {
        .memory_bytes = sim_rand(m, 2) ? INT64_C(8) << 30 : INT64_C(1) << 30,
        .gpu = (int)sim_rand(m, 2),
        .max_input_elems = sim_rand(m, 2) ? 0 : 1000,
    };
    worker = sim_worker(m);
    rc = an_store_lease_next(m->f.s, worker, &caps, m->now, &t);
    ck_assert(rc_in(rc, AN_ENOTFOUND, 0, 0));
    if (rc == 0) {
      ck_assert(caps.memory_bytes >= t.spec.min_memory_bytes);
      ck_assert(caps.gpu || !t.spec.needs_gpu);
      ck_assert(!caps.max_input_elems ||
                t.spec.input_c * t.spec.input_h * t.spec.input_w <= caps.max_input_elems);
      ck_assert_int_eq(t.lease_deadline, m->now + t.spec.lease_seconds);
    }
  } else if (op < 54) {
    id = sim_pick(m, AN_TASK_LEASED);
    worker = id <= m->ntasks && m->task[id].worker && sim_rand(m, 5) ? m->task[id].worker
                                                                    : sim_worker(m);
    rc = an_store_lease_heartbeat(m->f.s, id, worker, 0.5, m->now, &cancelled);
    ck_assert(rc_in(rc, AN_ESTATE, AN_EFORBIDDEN, AN_ENOTFOUND));
    if (cancelled)
      ck_assert_int_eq(m->task[id].state, AN_TASK_CANCELLED);
    may_change = false;
  } else if (op < 66) {
    id = sim_pick(m, AN_TASK_LEASED);
    worker = id <= m->ntasks && m->task[id].worker && sim_rand(m, 5) ? m->task[id].worker
                                                                    : sim_worker(m);
    rc = an_store_model_submitted(m->f.s, id, worker, MODEL_1, m->now);
    ck_assert(rc_in(rc, AN_ESTATE, AN_EFORBIDDEN, AN_ENOTFOUND));
  } else if (op < 76) {
    id = sim_pick(m, AN_TASK_VALIDATING);
    m->fee_permille = (int)sim_rand(m, 200);
    rc = an_store_validation_done(m->f.s, id, sim_rand(m, 3) != 0, 0.5, "verdict",
                                  m->fee_permille, m->now);
    ck_assert(rc_in(rc, AN_ESTATE, AN_ENOTFOUND, 0));
    if (id <= m->ntasks)
      ck_assert_int_eq(rc == 0, m->task[id].state == AN_TASK_VALIDATING);
  } else if (op < 84) {
    m->now += (int64_t)sim_rand(m, 20);
    rc = an_store_lease_expire(m->f.s, m->now, &n);
    ck_assert_int_eq(rc, 0);
  } else if (op < 91) {
    id = sim_pick(m, sim_rand(m, 2) ? AN_TASK_LEASED : AN_TASK_QUEUED);
    pub = id <= m->ntasks && sim_rand(m, 6) ? m->task[id].publisher
                                            : m->node[sim_rand(m, SIM_PUBS)];
    rc = an_store_task_cancel(m->f.s, id, pub, m->now);
    ck_assert(rc_in(rc, AN_ESTATE, AN_EFORBIDDEN, AN_ENOTFOUND));
    if (id <= m->ntasks && pub != m->task[id].publisher)
      ck_assert_int_eq(rc, AN_EFORBIDDEN);
  } else if (op < 95) {
    id = sim_pick(m, AN_TASK_FAILED);
    rc = an_store_task_kick(m->f.s, id, m->now);
    ck_assert(rc_in(rc, AN_ESTATE, AN_EFUNDS, AN_ENOTFOUND));
    if (id <= m->ntasks && m->task[id].state == AN_TASK_FAILED)
      ck_assert_int_eq(rc, m->expect[sim_index(m, m->task[id].publisher)] < m->task[id].bounty
                               ? AN_EFUNDS
                               : 0);
  } else {
    id = sim_pick(m, AN_TASK_ACCEPTED);
    rc = an_store_task_delivered(m->f.s, id, m->now);
    ck_assert(rc_in(rc, AN_ESTATE, AN_ENOTFOUND, 0));
    may_change = rc == 0 && m->task[id].state == AN_TASK_ACCEPTED;
  }
  sim_reconcile(m);
  /* A refused operation, or one that only renews, changes no task. */
  if (rc != 0 || !may_change)
    ck_assert_msg(m->transitions == 0, "step %d: op %d returned %s but changed %d tasks", step,
                  op, an_err_name(rc), m->transitions);
}

START_TEST(test_random_operations_keep_the_ledger) {
  static sim_t m; /* large; one per test process */
  char name[16];
  memset(&m, 0, sizeof m);
  fixture_init(&m.f);
  m.rng = 0x5eed0001u; /* fixed: a failure replays exactly */
  for (int i = 0; i < SIM_NODES; i++) {
    snprintf(name, sizeof name, "%s%d", i < SIM_PUBS ? "p" : "w", i);
    m.node[i] = enroll(m.f.s, i < SIM_PUBS ? AN_ROLE_PUBLISHER : AN_ROLE_WORKER, name);
  }
  /* _i = 1: the broker's way, changes grouped and committed every few
   * steps, so refused calls roll back inside a group of good ones. */
  if (_i)
    an_store_group_begin(m.f.s);
  for (int step = 0; step < SIM_STEPS; step++) {
    sim_step(&m, step);
    if (_i && sim_rand(&m, 4) == 0)
      ck_assert_int_eq(an_store_group_commit(m.f.s), 0);
    /* Now and then the broker restarts. */
    if (step % 700 == 699) {
      if (_i)
        ck_assert_int_eq(an_store_group_commit(m.f.s), 0);
      an_store_close(m.f.s);
      fixture_open(&m.f);
      if (_i)
        an_store_group_begin(m.f.s);
      sim_reconcile(&m);
    }
  }
  if (_i)
    ck_assert_int_eq(an_store_group_end(m.f.s), 0);
  /* Everything minted is somewhere: balances, fees and live escrows. */
  ck_assert_int_eq(fees_total(m.f.path), m.fees);
  ck_assert_int_eq(raw_int(m.f.path, "SELECT -SUM(amount) FROM ledger WHERE account = 'mint'"),
                   raw_int(m.f.path, "SELECT SUM(amount) FROM ledger WHERE account <> 'mint'"));
  /* The run reached every corner of the life cycle, so it tested them. */
  ck_assert_int_gt(m.seen[AN_TASK_VALIDATING][AN_TASK_ACCEPTED], 10);
  ck_assert_int_gt(m.seen[AN_TASK_VALIDATING][AN_TASK_QUEUED], 5);
  ck_assert_int_gt(m.seen[AN_TASK_VALIDATING][AN_TASK_FAILED], 2);
  ck_assert_int_gt(m.seen[AN_TASK_LEASED][AN_TASK_QUEUED], 5);
  ck_assert_int_gt(m.seen[AN_TASK_LEASED][AN_TASK_FAILED], 2);
  ck_assert_int_gt(m.seen[AN_TASK_LEASED][AN_TASK_CANCELLED], 2);
  ck_assert_int_gt(m.seen[AN_TASK_QUEUED][AN_TASK_CANCELLED], 2);
  ck_assert_int_gt(m.seen[AN_TASK_FAILED][AN_TASK_QUEUED], 2);
  ck_assert_int_gt(m.seen[AN_TASK_ACCEPTED][AN_TASK_DELIVERED], 5);
  ck_assert_int_gt(m.efunds, 2);
  fixture_done(&m.f);
}
END_TEST


/* ---- group commit ---- */

/* Grouped changes are invisible to other connections (not durable) until
 * the commit, and all of them are there after it. */
START_TEST(test_group_commit_makes_changes_durable_together) {
  fixture_t f;
  fixture_init(&f);
  an_store_group_begin(f.s);
  ck_assert_int_eq(an_store_group_pending(f.s), 0);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 500, 1000), 0);
  int64_t id = queued_task(&f, 200, 2);
  ck_assert_int_eq(an_store_group_pending(f.s), 1);
  /* This connection reads its own group ... */
  ck_assert_int_eq(balance(f.s, f.pub), 300);
  ck_assert_int_eq(task(f.s, id).state, AN_TASK_QUEUED);
  /* ... another does not see it yet. */
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM tasks"), 0);
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM ledger"), 0);
  ck_assert_int_eq(an_store_group_commit(f.s), 0);
  ck_assert_int_eq(an_store_group_pending(f.s), 0);
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM tasks WHERE state = 1"), 1);
  ck_assert_int_eq(raw_int(f.path, "SELECT SUM(amount) FROM ledger WHERE account = 'node:' || "
                                   "(SELECT id FROM nodes WHERE name = 'pub')"),
                   300);
  /* A commit with nothing pending is a no-op. */
  ck_assert_int_eq(an_store_group_commit(f.s), 0);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* A refused call inside a group undoes only itself. */
START_TEST(test_group_refused_call_undoes_only_itself) {
  fixture_t f;
  an_task_t t;
  int cancelled = 0;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 100, 1000), 0);
  an_store_group_begin(f.s);
  int64_t id = queued_task(&f, 60, 2);
  an_task_spec_t big = spec_for(f.pub, 60); /* 40 left: short */
  int64_t none = 0;
  ck_assert_int_eq(an_store_task_create(f.s, &big, 1001, &none), AN_EFUNDS);
  an_worker_caps_t caps = {.memory_bytes = 1LL << 40};
  ck_assert_int_eq(an_store_lease_next(f.s, f.w1, &caps, 1002, &t), 0);
  ck_assert_int_eq(t.id, id);
  /* Not w2's lease. */
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w2, 0.5, 1003, &cancelled), AN_EFORBIDDEN);
  ck_assert_int_eq(an_store_lease_heartbeat(f.s, id, f.w1, 0.25, 1003, &cancelled), 0);
  ck_assert_int_eq(an_store_group_commit(f.s), 0);
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM tasks"), 1);
  ck_assert_int_eq(raw_int(f.path, "SELECT state FROM tasks"), AN_TASK_LEASED);
  ck_assert_int_eq(raw_int(f.path, "SELECT CAST(progress * 100 AS INTEGER) FROM tasks"), 25);
  ck_assert_int_eq(balance(f.s, f.pub), 40);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* A broker that dies before the commit loses the group, all of it, and
 * nothing else: that is why nothing in it may have been acknowledged. */
START_TEST(test_group_lost_whole_without_commit) {
  fixture_t f;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 100, 1000), 0);
  an_store_group_begin(f.s);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 7, 1001), 0);
  (void)queued_task(&f, 50, 1);
  an_store_close(f.s); /* no commit */
  fixture_open(&f);
  ck_assert_int_eq(balance(f.s, f.pub), 100);
  ck_assert_int_eq(raw_int(f.path, "SELECT COUNT(*) FROM tasks"), 0);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

/* After group_end, each call is durable on return again. */
START_TEST(test_group_after_end_commits_per_call) {
  fixture_t f;
  fixture_init(&f);
  an_store_group_begin(f.s);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 10, 1000), 0);
  ck_assert_int_eq(an_store_group_end(f.s), 0);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 5, 1001), 0);
  ck_assert_int_eq(an_store_group_pending(f.s), 0);
  ck_assert_int_eq(raw_int(f.path, "SELECT SUM(amount) FROM ledger WHERE amount > 0"), 15);
  fixture_done(&f);
}
END_TEST

/* A commit that fails (here the disk is "full": a file size limit) loses
 * the whole group and says so; nothing of it is there after a reopen, and
 * the next group works once there is room again. */
START_TEST(test_group_commit_failure_loses_the_group) {
  fixture_t f;
  struct rlimit old, tight;
  char wal[600];
  struct stat st;
  fixture_init(&f);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 100, 1000), 0);
  an_store_group_begin(f.s);
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 5, 1001), 0); /* the lock is held from here */
  snprintf(wal, sizeof wal, "%s-wal", f.path);
  ck_assert_int_eq(stat(wal, &st), 0);
  ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, SIG_IGN); /* a write past the limit fails with EFBIG instead */
  /* Enough changes that the commit must grow the write-ahead log. */
  for (int i = 0; i < 200; i++)
    ck_assert_int_eq(an_store_topup(f.s, f.pub, 1, 1002), 0);
  tight = old;
  tight.rlim_cur = (rlim_t)st.st_size;
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &tight), 0);
  int rc = an_store_group_commit(f.s);
  ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, SIG_DFL);
  ck_assert_int_eq(rc, AN_EDB);
  ck_assert_int_eq(an_store_group_pending(f.s), 0);
  /* Room again: the next group commits. */
  ck_assert_int_eq(an_store_topup(f.s, f.pub, 7, 1003), 0);
  ck_assert_int_eq(an_store_group_commit(f.s), 0);
  an_store_close(f.s);
  fixture_open(&f);
  ck_assert_int_eq(balance(f.s, f.pub), 107);
  expect_ledger_ok(f.s);
  fixture_done(&f);
}
END_TEST

static Suite *store_suite(void) {
  Suite *s = suite_create("store");
  TCase *basics = tcase_create("basics");
  tcase_set_timeout(basics, 60);
  tcase_add_test(basics, test_open_sets_wal_and_schema);
  tcase_add_test(basics, test_newer_schema_refused);
  tcase_add_test(basics, test_reopen_keeps_everything);
  tcase_add_test(basics, test_tokens_single_use_and_expiry);
  tcase_add_test(basics, test_authentication);
  tcase_add_test(basics, test_roles_enforced);
  tcase_add_test(basics, test_happy_path);
  tcase_add_test(basics, test_cross_node_refused);
  tcase_add_test(basics, test_bad_arguments);
  tcase_add_test(basics, test_lease_expiry_then_failure);
  tcase_add_test(basics, test_many_leases_expire_at_once);
  tcase_add_test(basics, test_capability_matching);
  tcase_add_test(basics, test_exclude_failed);
  tcase_add_test(basics, test_rejection_requeues_then_fails);
  tcase_add_test(basics, test_cancel_while_leased);
  tcase_add_test(basics, test_cancel_after_acceptance_refused);
  tcase_add_test(basics, test_amounts_and_fee_rounding);
  tcase_add_test(basics, test_kick_needs_funds);
  tcase_add_test(basics, test_fee_without_overflow);
  tcase_add_test(basics, test_no_double_payout);
  tcase_add_test(basics, test_corrupt_rows_are_errors);
  tcase_add_test(basics, test_lists_and_counts);
  tcase_add_test(basics, test_group_commit_makes_changes_durable_together);
  tcase_add_test(basics, test_group_refused_call_undoes_only_itself);
  tcase_add_test(basics, test_group_lost_whole_without_commit);
  tcase_add_test(basics, test_group_after_end_commits_per_call);
  tcase_add_test(basics, test_group_commit_failure_loses_the_group);
  suite_add_tcase(s, basics);
  /* Dozens of fresh stores each: slower. */
  TCase *sweeps = tcase_create("sweeps");
  tcase_set_timeout(sweeps, 240);
  tcase_add_test(sweeps, test_transition_matrix);
  tcase_add_test(sweeps, test_ledger_check_catches_corruption);
  tcase_add_loop_test(sweeps, test_random_operations_keep_the_ledger, 0, 2);
  suite_add_tcase(s, sweeps);
  return s;
}

AN_TEST_MAIN(store_suite)
