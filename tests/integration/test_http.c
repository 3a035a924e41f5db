/* The broker's HTTP admin endpoint, seen from outside. A store is filled
 * through the store's API (nodes, a top-up, tasks in every state), the
 * endpoint is started over the same database file, and Debian's Python
 * (its urllib, its json module, and a parser of the Prometheus text format
 * written from the format's specification in http_check.py) fetches every
 * endpoint and compares what it reads with what this file put in. The
 * expected figures are worked out here by hand, not read back from the
 * store. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>
#include <uv.h>

#include "common/error.h"
#include "server/http.h"
#include "server/store.h"
#include "tests/support/testutil.h"

#define PYTHON "/usr/bin/python3" /* Debian's, not a pyenv shim on PATH */
#define DIGEST_X "1111111111111111111111111111111111111111111111111111111111111111"
#define DIGEST_Y "2222222222222222222222222222222222222222222222222222222222222222"
#define MODEL_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define MODEL_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define FEE_PERMILLE 100
#define TOPUP 10000

/* A scratch directory with a store, and what the test expects the endpoint
 * to show, as JSON for http_check.py. */
typedef struct fixture {
  char *dir;
  char db[512], expect_path[600];
  an_store_t *s;
  json_t *expect;  /* {"tasks", "counts", "nodes", "escrow", "balances_total", ...} */
  json_t *secrets; /* tokens and node secrets: must appear in no response */
  int64_t now;
} fixture_t;

static const char *source_root(void) {
  const char *p = getenv("ARCHNET_SOURCE_ROOT");
  ck_assert_msg(p != NULL, "ARCHNET_SOURCE_ROOT is not set; run this test through meson");
  return p;
}

static void fixture_init(fixture_t *f) {
  char err[256];
  memset(f, 0, sizeof *f);
  f->dir = an_test_tmpdir();
  ck_assert_ptr_nonnull(f->dir);
  snprintf(f->db, sizeof f->db, "%s/state.db", f->dir);
  snprintf(f->expect_path, sizeof f->expect_path, "%s/expect.json", f->dir);
  ck_assert_msg(an_store_open(f->db, &f->s, err, sizeof err) == 0, "store: %s", err);
  f->expect = json_pack("{s:{}, s:{}, s:{}, s:I, s:I, s:n, s:b}", "tasks", "counts", "nodes",
                        "escrow", (json_int_t)0, "balances_total", (json_int_t)0, "stats",
                        "consistent", 1);
  f->secrets = json_array();
  ck_assert_ptr_nonnull(f->expect);
  ck_assert_ptr_nonnull(f->secrets);
  ck_assert_int_eq(json_object_set(f->expect, "secrets", f->secrets), 0);
  /* The datasets' digests are not shown either (see http.c). */
  json_array_append_new(f->secrets, json_string(DIGEST_X));
  json_array_append_new(f->secrets, json_string(DIGEST_Y));
  for (int s = 0; s < AN_TASK_STATE_COUNT; s++)
    json_object_set_new(json_object_get(f->expect, "counts"),
                        an_task_state_name((an_task_state_t)s), json_integer(0));
  f->now = 1700000000;
}

static void fixture_done(fixture_t *f) {
  an_store_close(f->s);
  json_decref(f->secrets);
  json_decref(f->expect);
  an_test_rmtree(f->dir);
  free(f->dir);
}

static json_t *expect_section(fixture_t *f, const char *section, int64_t id) {
  char key[24];
  json_t *obj;
  snprintf(key, sizeof key, "%lld", (long long)id);
  obj = json_object_get(json_object_get(f->expect, section), key);
  ck_assert_msg(obj != NULL, "no expectation for %s %s", section, key);
  return obj;
}

static void expect_add(json_t *obj, const char *key, json_int_t delta) {
  json_t *value = json_object_get(obj, key);
  ck_assert_msg(json_is_integer(value), "no expected figure %s", key);
  json_integer_set(value, json_integer_value(value) + delta);
}

/* Enrolls `name`; `shown` is how the API must print it (NULL: as is). */
static int64_t enroll_as(fixture_t *f, an_role_t role, const char *name, const char *shown) {
  char token[AN_DIGEST_HEX], secret[AN_DIGEST_HEX], key[24];
  int64_t id = 0;
  an_role_t got;
  json_t *node;
  ck_assert_int_eq(an_store_token_create(f->s, role, f->now, 3600, token), 0);
  ck_assert_int_eq(an_store_enroll(f->s, token, name, f->now, &id, &got, secret), 0);
  json_array_append_new(f->secrets, json_string(token));
  json_array_append_new(f->secrets, json_string(secret));
  snprintf(key, sizeof key, "%lld", (long long)id);
  node = json_pack("{s:s, s:s, s:b, s:I, s:[]}", "name", shown ? shown : name, "role",
                   role == AN_ROLE_PUBLISHER ? "publisher"
                   : role == AN_ROLE_WORKER  ? "worker"
                                             : "admin",
                   "revoked", 0, "balance", (json_int_t)0, "holding");
  ck_assert_ptr_nonnull(node); /* `shown` must be valid UTF-8 */
  json_object_set_new(json_object_get(f->expect, "nodes"), key, node);
  return id;
}

static int64_t enroll(fixture_t *f, an_role_t role, const char *name) {
  return enroll_as(f, role, name, NULL);
}

static void balance_add(fixture_t *f, int64_t node, int64_t delta) {
  expect_add(expect_section(f, "nodes", node), "balance", delta);
  expect_add(f->expect, "balances_total", delta);
}

/* Records a task's expected state, moving the per-state counts and
 * escrow along: a task holds its bounty in escrow until it is accepted,
 * failed or cancelled. */
static void task_expect(fixture_t *f, int64_t id, an_task_state_t state, int64_t worker,
                        int attempts, int has_reason) {
  char key[24];
  json_t *tasks = json_object_get(f->expect, "tasks"), *t;
  json_t *counts = json_object_get(f->expect, "counts");
  int holds_before, holds_after;

  snprintf(key, sizeof key, "%lld", (long long)id);
  t = json_object_get(tasks, key);
  ck_assert_ptr_nonnull(t);
  const char *old = json_string_value(json_object_get(t, "state"));
  holds_before = strcmp(old, "accepted") && strcmp(old, "delivered") && strcmp(old, "failed") &&
                 strcmp(old, "cancelled");
  holds_after = state <= AN_TASK_VALIDATING;
  expect_add(counts, old, -1);
  expect_add(counts, an_task_state_name(state), 1);
  if (holds_before && !holds_after)
    expect_add(f->expect, "escrow", -json_integer_value(json_object_get(t, "bounty")));
  json_object_set_new(t, "state", json_string(an_task_state_name(state)));
  json_object_set_new(t, "worker", worker ? json_integer(worker) : json_null());
  json_object_set_new(t, "attempts", json_integer(attempts));
  json_object_set_new(t, "has_reason", json_boolean(has_reason));
}

static int64_t task_create(fixture_t *f, int64_t publisher, int64_t bounty, int max_attempts) {
  an_task_spec_t sp = {
      .publisher = publisher, .bounty = bounty, .min_accuracy = 0.8,
      .max_attempts = max_attempts, .lease_seconds = 60, .input_c = 4, .input_h = 14,
      .input_w = 14, .classes = 10,
  };
  char key[24];
  int64_t id = 0;
  strcpy(sp.train_x, DIGEST_X);
  strcpy(sp.train_y, DIGEST_Y);
  strcpy(sp.val_x, DIGEST_Y);
  strcpy(sp.val_y, DIGEST_X);
  ck_assert_int_eq(an_store_task_create(f->s, &sp, ++f->now, &id), 0);
  snprintf(key, sizeof key, "%lld", (long long)id);
  json_object_set_new(json_object_get(f->expect, "tasks"), key,
                      json_pack("{s:s, s:I, s:I, s:n, s:i, s:b}", "state", "uploading", "bounty",
                                (json_int_t)bounty, "publisher", (json_int_t)publisher, "worker",
                                "attempts", 0, "has_reason", 0));
  expect_add(json_object_get(f->expect, "counts"), "uploading", 1);
  expect_add(f->expect, "escrow", bounty);
  balance_add(f, publisher, -bounty);
  return id;
}

static int64_t task_queued(fixture_t *f, int64_t publisher, int64_t bounty, int max_attempts) {
  int64_t id = task_create(f, publisher, bounty, max_attempts);
  ck_assert_int_eq(an_store_task_ready(f->s, id, ++f->now), 0);
  task_expect(f, id, AN_TASK_QUEUED, 0, 0, 0);
  return id;
}

static void lease(fixture_t *f, int64_t worker, int64_t want_task, int attempts) {
  an_worker_caps_t caps = {.memory_bytes = 1 << 30};
  an_task_t t;
  ck_assert_int_eq(an_store_lease_next(f->s, worker, &caps, ++f->now, &t), 0);
  ck_assert_int_eq(t.id, want_task);
  task_expect(f, want_task, AN_TASK_LEASED, worker, attempts, 0);
}

static void hold(fixture_t *f, int64_t worker, int64_t task) {
  json_array_append_new(json_object_get(expect_section(f, "nodes", worker), "holding"),
                        json_integer(task));
}

/* Tasks in all eight states, paid and refunded ones among them. */
static void populate(fixture_t *f, int64_t *pub, int64_t *w1, int64_t *w2) {
  int64_t t;
  int n;

  *pub = enroll(f, AN_ROLE_PUBLISHER, "alice's lab");
  *w1 = enroll(f, AN_ROLE_WORKER, "worker-one");
  *w2 = enroll(f, AN_ROLE_WORKER, "worker <two> & \"co\"");
  int64_t gone = enroll(f, AN_ROLE_WORKER, "worker-gone");
  ck_assert_int_eq(an_store_revoke(f->s, gone), 0);
  json_object_set_new(expect_section(f, "nodes", gone), "revoked", json_true());
  enroll(f, AN_ROLE_ADMIN, "operator");
  /* The store takes names as bytes; the JSON must stay valid UTF-8. */
  enroll_as(f, AN_ROLE_WORKER, "caf\xc3\xa9 \xff\xc3 \xed\xa0\x80!",
            "caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd!");

  ck_assert_int_eq(an_store_topup(f->s, *pub, TOPUP, ++f->now), 0);
  balance_add(f, *pub, TOPUP);

  /* Paid, then delivered: 1000 - 10% to worker one. */
  t = task_queued(f, *pub, 1000, 3);
  lease(f, *w1, t, 1);
  ck_assert_int_eq(an_store_model_submitted(f->s, t, *w1, MODEL_A, ++f->now), 0);
  ck_assert_int_eq(an_store_validation_done(f->s, t, 1, 0.93, "", FEE_PERMILLE, ++f->now), 0);
  ck_assert_int_eq(an_store_task_delivered(f->s, t, ++f->now), 0);
  task_expect(f, t, AN_TASK_DELIVERED, *w1, 1, 0);
  balance_add(f, *w1, 900);

  /* Paid, not yet fetched: 500 - 10% to worker two. */
  t = task_queued(f, *pub, 500, 3);
  lease(f, *w2, t, 1);
  ck_assert_int_eq(an_store_model_submitted(f->s, t, *w2, MODEL_B, ++f->now), 0);
  ck_assert_int_eq(an_store_validation_done(f->s, t, 1, 0.88, "", FEE_PERMILLE, ++f->now), 0);
  task_expect(f, t, AN_TASK_ACCEPTED, *w2, 1, 0);
  balance_add(f, *w2, 450);

  /* One attempt allowed, its lease expires: failed, refunded. */
  t = task_queued(f, *pub, 300, 1);
  lease(f, *w1, t, 1);
  f->now += 3600;
  ck_assert_int_eq(an_store_lease_expire(f->s, f->now, &n), 0);
  ck_assert_int_eq(n, 1);
  task_expect(f, t, AN_TASK_FAILED, 0, 1, 1);
  balance_add(f, *pub, 300);

  /* Cancelled while queued: refunded. */
  t = task_queued(f, *pub, 50, 3);
  ck_assert_int_eq(an_store_task_cancel(f->s, t, *pub, ++f->now), 0);
  task_expect(f, t, AN_TASK_CANCELLED, 0, 0, 1);
  balance_add(f, *pub, 50);

  /* A model waiting for its verdict. */
  t = task_queued(f, *pub, 400, 3);
  lease(f, *w2, t, 1);
  ck_assert_int_eq(an_store_model_submitted(f->s, t, *w2, MODEL_A, ++f->now), 0);
  task_expect(f, t, AN_TASK_VALIDATING, *w2, 1, 0);
  hold(f, *w2, t);

  /* A live lease. */
  t = task_queued(f, *pub, 250, 3);
  lease(f, *w1, t, 1);
  hold(f, *w1, t);

  /* A model rejected: back in the queue with a reason. */
  t = task_queued(f, *pub, 120, 3);
  lease(f, *w2, t, 1);
  ck_assert_int_eq(an_store_model_submitted(f->s, t, *w2, MODEL_B, ++f->now), 0);
  ck_assert_int_eq(
      an_store_validation_done(f->s, t, 0, 0.31, "accuracy 0.31 < 0.80", FEE_PERMILLE, ++f->now),
      0);
  task_expect(f, t, AN_TASK_QUEUED, 0, 1, 1);

  task_queued(f, *pub, 80, 3);
  task_create(f, *pub, 60, 3);
}

/* Writes the expectations and runs http_check.py MODE against base_url. */
static void check_with_python(fixture_t *f, const char *mode, const char *address) {
  char script[600], url[128], *out = NULL, *err = NULL;
  int status;

  snprintf(script, sizeof script, "%s/tests/integration/http_check.py", source_root());
  snprintf(url, sizeof url, "http://%s", address);
  ck_assert_int_eq(json_dump_file(f->expect, f->expect_path, JSON_INDENT(1)), 0);
  char *argv[] = {PYTHON, script, (char *)mode, url, f->expect_path, NULL};
  status = an_test_run(argv, &out, &err);
  ck_assert_msg(status == 0, "http_check.py %s: exit %d\n%s%s", mode, status, out ? out : "",
                err ? err : "");
  free(out);
  free(err);
}

static uint16_t port_of(const char *address) {
  const char *colon = strrchr(address, ':');
  ck_assert_ptr_nonnull(colon);
  return (uint16_t)atoi(colon + 1);
}

/* A TCP connection to 127.0.0.1:port; -1 with errno if refused. */
static int connect_to(uint16_t port) {
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(fd, 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int e = errno;
    close(fd);
    errno = e;
    fd = -1;
  }
  return fd;
}

static double seconds_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_stats(fixture_t *f, an_broker_stats_t *st) {
  static const struct {
    const char *key;
    size_t offset;
    uint64_t value;
  } values[] = {
      {"connections_accepted", offsetof(an_broker_stats_t, connections_accepted), 7},
      {"connections_closed", offsetof(an_broker_stats_t, connections_closed), 3},
      {"connections_refused", offsetof(an_broker_stats_t, connections_refused), 1},
      {"bytes_received", offsetof(an_broker_stats_t, bytes_received), 123456789012ull},
      {"bytes_sent", offsetof(an_broker_stats_t, bytes_sent), 54321},
      {"auth_failures", offsetof(an_broker_stats_t, auth_failures), 2},
      {"leases_granted", offsetof(an_broker_stats_t, leases_granted), 6},
      {"leases_expired", offsetof(an_broker_stats_t, leases_expired), 1},
      {"uploads_started", offsetof(an_broker_stats_t, uploads_started), 40},
      {"uploads_completed", offsetof(an_broker_stats_t, uploads_completed), 36},
      {"validations_started", offsetof(an_broker_stats_t, validations_started), 4},
      {"validations_accepted", offsetof(an_broker_stats_t, validations_accepted), 2},
      {"validations_rejected", offsetof(an_broker_stats_t, validations_rejected), 1},
      {"payouts", offsetof(an_broker_stats_t, payouts), 2},
      {"payout_credits", offsetof(an_broker_stats_t, payout_credits), 1350},
  };
  json_t *expect = json_object();

  an_broker_stats_init(st);
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
    /* As the broker's loop will: add, never store. */
    atomic_fetch_add((atomic_uint_fast64_t *)((char *)st + values[i].offset), values[i].value);
    json_object_set_new(expect, values[i].key, json_integer((json_int_t)values[i].value));
  }
  json_object_set_new(expect, "connections_open", json_integer(7 - 3));
  json_object_set_new(expect, "validations_running", json_integer(4 - 2 - 1));
  json_object_set_new(f->expect, "stats", expect);
}

START_TEST(test_endpoints) {
  fixture_t f;
  an_broker_stats_t stats;
  an_http_t *h = NULL;
  char err[256], address[64];
  int64_t pub, w1, w2;
  int idle;

  fixture_init(&f);
  populate(&f, &pub, &w1, &w2);
  set_stats(&f, &stats);
  an_http_params_t p = {.listen = "127.0.0.1:0", .db_path = f.db, .stats = &stats};
  ck_assert_msg(an_http_start(&p, &h, err, sizeof err) == 0, "start: %s", err);
  snprintf(address, sizeof address, "%s", an_http_address(h));
  ck_assert_int_ne(port_of(address), 0);
  check_with_python(&f, "full", address);

  /* The endpoint reads through its own connection: what this one commits
   * next shows on the next request. */
  task_queued(&f, pub, 70, 2);
  atomic_fetch_add(&stats.connections_accepted, 5);
  expect_add(json_object_get(f.expect, "stats"), "connections_accepted", 5);
  expect_add(json_object_get(f.expect, "stats"), "connections_open", 5);
  check_with_python(&f, "full", address);

  /* Stopping with a client connected and idle neither waits for its
   * timeout nor leaves the port open. */
  idle = connect_to(port_of(address));
  ck_assert_int_ge(idle, 0);
  double t0 = seconds_now();
  an_http_stop(h);
  ck_assert_msg(seconds_now() - t0 < 3.0, "stop took %.1f s", seconds_now() - t0);
  char byte;
  struct timeval tv = {.tv_sec = 2};
  setsockopt(idle, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ck_assert_int_le(recv(idle, &byte, 1, 0), 0); /* closed (0) or reset (-1), not data */
  close(idle);
  ck_assert_int_eq(connect_to(port_of(address)), -1);
  ck_assert_int_eq(errno, ECONNREFUSED);
  fixture_done(&f);
}
END_TEST

/* A ledger that breaks its invariants is reported as such, on every
 * surface. The damage is done with raw SQL through a connection of the
 * test's own, as a bad disk or a bug would: 5 credits that come from
 * nowhere, so the entries no longer sum to zero. */
START_TEST(test_ledger_violation) {
  fixture_t f;
  an_http_t *h = NULL;
  sqlite3 *db = NULL;
  char err[256], sql[256];
  int64_t pub, w1, w2;

  fixture_init(&f);
  populate(&f, &pub, &w1, &w2);
  snprintf(sql, sizeof sql,
           "INSERT INTO ledger (transfer_id, account, amount, kind, time) "
           "VALUES (424242, 'node:%lld', 5, 'topup', 0)",
           (long long)w1);
  ck_assert_int_eq(sqlite3_open(f.db, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s", sqlite3_errmsg(db));
  sqlite3_close(db);
  balance_add(&f, w1, 5);
  json_object_set_new(f.expect, "consistent", json_false());

  an_http_params_t p = {.listen = "127.0.0.1:0", .db_path = f.db};
  ck_assert_msg(an_http_start(&p, &h, err, sizeof err) == 0, "start: %s", err);
  check_with_python(&f, "nostats", an_http_address(h));
  an_http_stop(h);
  fixture_done(&f);
}
END_TEST

/* Without live counters (stats NULL) over an empty store. */
START_TEST(test_no_stats_empty_store) {
  fixture_t f;
  an_http_t *h = NULL;
  char err[256];

  fixture_init(&f);
  an_http_params_t p = {.listen = "127.0.0.1:0", .db_path = f.db};
  ck_assert_msg(an_http_start(&p, &h, err, sizeof err) == 0, "start: %s", err);
  check_with_python(&f, "nostats", an_http_address(h));
  an_http_stop(h);
  fixture_done(&f);
}
END_TEST

/* The connection limit and the idle timeout. */
START_TEST(test_limits) {
  fixture_t f;
  an_http_t *h = NULL;
  char err[256];

  fixture_init(&f);
  an_http_params_t p = {.listen = "127.0.0.1:0", .db_path = f.db, .max_connections = 3,
                        .timeout_seconds = 1};
  ck_assert_msg(an_http_start(&p, &h, err, sizeof err) == 0, "start: %s", err);
  json_object_set_new(f.expect, "max_connections", json_integer(3));
  json_object_set_new(f.expect, "timeout_seconds", json_integer(1));
  check_with_python(&f, "limits", an_http_address(h));
  an_http_stop(h);
  fixture_done(&f);
}
END_TEST

START_TEST(test_start_errors) {
  fixture_t f;
  an_http_t *h = NULL, *second = (an_http_t *)&f; /* must be left NULL on failure */
  char err[256], path[600], taken[80];
  int rc;

  fixture_init(&f);
  an_http_params_t bad_addr = {.listen = "localhost", .db_path = f.db};
  rc = an_http_start(&bad_addr, &second, err, sizeof err);
  ck_assert_int_eq(rc, AN_ECONFIG);
  ck_assert_ptr_null(second);
  ck_assert_msg(strstr(err, "localhost") != NULL, "%s", err);

  snprintf(path, sizeof path, "%s/no/such/dir/state.db", f.dir);
  an_http_params_t bad_db = {.listen = "127.0.0.1:0", .db_path = path};
  second = (an_http_t *)&f;
  rc = an_http_start(&bad_db, &second, err, sizeof err);
  ck_assert_int_eq(rc, AN_EDB);
  ck_assert_ptr_null(second);
  ck_assert_msg(strstr(err, path) != NULL, "%s", err);

  an_http_params_t first = {.listen = "127.0.0.1:0", .db_path = f.db};
  ck_assert_msg(an_http_start(&first, &h, err, sizeof err) == 0, "start: %s", err);
  snprintf(taken, sizeof taken, "%s", an_http_address(h));
  an_http_params_t same = {.listen = taken, .db_path = f.db};
  second = (an_http_t *)&f;
  rc = an_http_start(&same, &second, err, sizeof err);
  ck_assert_int_eq(rc, UV_EADDRINUSE);
  ck_assert_ptr_null(second);
  ck_assert_msg(strstr(err, taken) != NULL, "%s", err);
  an_http_stop(h);
  an_http_stop(NULL);

  /* The port is free again once stopped. */
  ck_assert_msg(an_http_start(&same, &h, err, sizeof err) == 0, "restart: %s", err);
  ck_assert_str_eq(an_http_address(h), taken);
  an_http_stop(h);
  fixture_done(&f);
}
END_TEST

static Suite *http_suite(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("endpoint");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_endpoints);
  tcase_add_test(tc, test_no_stats_empty_store);
  tcase_add_test(tc, test_ledger_violation);
  tcase_add_test(tc, test_limits);
  tcase_add_test(tc, test_start_errors);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(http_suite)
