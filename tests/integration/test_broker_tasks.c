/* The broker's task life through real processes on loopback: the admin's
 * commands, the publisher's program (enroll, submit, status, fetch,
 * cancel) and workers driven through the real client library (lease,
 * download, heartbeat, upload, submit a model). Checked: a full paid cycle
 * (balances, receipt, `ledger --check`), roles that may not cross, a lease
 * that expires and goes to another worker, cancel during a lease, a model
 * the sandbox rejects, a broker killed with SIGKILL mid-upload that
 * resumes from its verified offset with nothing acknowledged lost, and an
 * upload that resumes off its chunk grid and refuses a file changed since
 * it was hashed. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common/arena.h"
#include "common/blob/npy.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/receipt.h"
#include "common/small_file.h"
#include "common/net/client.h"
#include "common/net/transfer.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/spec.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/testutil.h"

typedef an_test_broker_t broker_t;
#define bin an_test_bin
#define run_ok an_test_run_ok
#define broker_init an_test_broker_init
#define broker_start an_test_broker_start
#define broker_stop an_test_broker_stop
#define broker_free an_test_broker_free
#define admin an_test_broker_admin
#define enroll an_test_broker_enroll
#define balance_of an_test_broker_balance
#define ledger_ok an_test_broker_ledger_ok

static an_client_t *connect_node(const char *cred_path) {
  an_credentials_t cred;
  an_client_t *c = NULL;
  char err[1024];
  ck_assert_msg(an_credentials_read(cred_path, &cred, err, sizeof err) == 0, "%s", err);
  ck_assert_msg(an_credentials_connect(&cred, "test", 20000, &c, err, sizeof err) == 0, "%s",
                err);
  return c;
}

static void make_dataset(const char *dir, const char *model_path) {
  an_test_encoded_dataset(dir, model_path, 0);
}

/* One request of the body `kind`; returns the reply (in arena) or NULL
 * with the broker's error message in err. */
static Archnet__Envelope *call(an_client_t *c, Archnet__Envelope *req, an_arena_t *a, char *err,
                               size_t errlen) {
  Archnet__Envelope *reply = NULL;
  an_arena_reset(a);
  int rc = an_client_call(c, req, a, &reply, err, errlen);
  return rc ? NULL : reply;
}

static Archnet__TaskInfo *lease(an_client_t *c, an_arena_t *a, uint32_t wait) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__LeaseRequest lr = ARCHNET__LEASE_REQUEST__INIT;
  Archnet__Capabilities caps = ARCHNET__CAPABILITIES__INIT;
  char err[512];
  caps.memory_bytes = (uint64_t)8 << 30;
  caps.cores = 2;
  lr.caps = &caps;
  lr.wait_seconds = wait;
  req.body_case = ARCHNET__ENVELOPE__BODY_LEASE_REQUEST;
  req.lease_request = &lr;
  r = call(c, &req, a, err, sizeof err);
  ck_assert_msg(r != NULL, "lease: %s", err);
  return r->body_case == ARCHNET__ENVELOPE__BODY_LEASE_GRANTED ? r->lease_granted->task : NULL;
}

static int heartbeat(an_client_t *c, uint64_t task, an_arena_t *a, int *cancelled) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__Heartbeat hb = ARCHNET__HEARTBEAT__INIT;
  char err[512];
  hb.task_id = task;
  hb.progress = 0.5;
  req.body_case = ARCHNET__ENVELOPE__BODY_HEARTBEAT;
  req.heartbeat = &hb;
  r = call(c, &req, a, err, sizeof err);
  if (!r || r->body_case != ARCHNET__ENVELOPE__BODY_HEARTBEAT_OK)
    return -1;
  *cancelled = r->heartbeat_ok->cancelled;
  return 0;
}

static Archnet__TaskInfo *status(an_client_t *c, uint64_t task, an_arena_t *a) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__TaskQuery q = ARCHNET__TASK_QUERY__INIT;
  char err[512];
  q.task_id = task;
  req.body_case = ARCHNET__ENVELOPE__BODY_TASK_STATUS;
  req.task_status = &q;
  r = call(c, &req, a, err, sizeof err);
  return r && r->body_case == ARCHNET__ENVELOPE__BODY_TASK_INFO ? r->task_info : NULL;
}

/* Uploads a model file for the lease and submits it. */
static void submit_model(an_client_t *c, uint64_t task, const char *path, an_arena_t *a) {
  char err[1024];
  an_blob_digests_t d;
  ck_assert(an_blob_digests_of(path, 4096, &d, err, sizeof err) == 0);
  ck_assert_msg(an_transfer_upload(c, task, path, &d, NULL, NULL, err, sizeof err) == 0, "%s",
                err);
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT;
  Archnet__SubmitModel sm = ARCHNET__SUBMIT_MODEL__INIT;
  Archnet__BlobRef ref = ARCHNET__BLOB_REF__INIT;
  ref.sha256 = d.sha256;
  ref.size = d.size;
  sm.task_id = task;
  sm.model = &ref;
  req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_MODEL;
  req.submit_model = &sm;
  ck_assert_msg(call(c, &req, a, err, sizeof err) != NULL, "submit model: %s", err);
  an_blob_digests_free(&d);
}

/* Waits until the task reaches `want` (polling status as the publisher). */
static Archnet__TaskInfo *wait_state(an_client_t *c, uint64_t task, int want, an_arena_t *a) {
  for (int i = 0; i < 600; i++) {
    Archnet__TaskInfo *t = status(c, task, a);
    ck_assert_ptr_nonnull(t);
    if ((int)t->state == want)
      return t;
    usleep(100 * 1000);
  }
  ck_abort_msg("task %llu never reached state %d", (unsigned long long)task, want);
  return NULL;
}

static uint64_t submit_task(broker_t *b, const char *pub, const char *data, const char *extra) {
  char *argv[] = {(char *)bin("ARCHNET_PUBLISHER"), "submit", "--credentials", (char *)pub,
                  "--data", (char *)data, "--bounty", "1000", "--min-accuracy",
                  (char *)(extra ? extra : "0"), "--lease-seconds", "3", NULL};
  char *out = run_ok(argv);
  unsigned long long id = 0;
  char *p = strstr(out, "task ");
  ck_assert_msg(p && sscanf(p, "task %llu", &id) == 1, "%s", out);
  ck_assert_msg(strstr(out, "queued"), "%s", out);
  free(out);
  (void)b;
  return id;
}

/* Waits until the broker's log has `text`. */
static int log_has(const char *log, const char *text, int seconds) {
  for (int i = 0; i < seconds * 10; i++) {
    FILE *f = fopen(log, "r");
    char line[1024];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
      found = strstr(line, text) != NULL;
    if (f)
      fclose(f);
    if (found)
      return 1;
    usleep(100 * 1000);
  }
  return 0;
}

/* SIGHUP re-reads the config file: new tunables apply, a broken file is
 * refused and the running configuration kept. */
START_TEST(test_full_cycle) {
  broker_t b;
  char pub[700], w1[700], data[700], model[700], fetched[700], got[700];
  an_arena_t a;
  an_arena_init(&a, 0, 0);
  broker_init(&b);
  broker_start(&b);
  enroll(&b, "publisher", "alice", pub, sizeof pub);
  enroll(&b, "worker", "wanda", w1, sizeof w1);
  free(admin(&b, "topup", "1", "5000"));
  snprintf(data, sizeof data, "%s/enc", b.dir);
  snprintf(model, sizeof model, "%s/model.onnx", b.dir);
  make_dataset(data, model);
  uint64_t task = submit_task(&b, pub, data, NULL);

  an_client_t *w = connect_node(w1);
  Archnet__TaskInfo *t = lease(w, &a, 5);
  ck_assert_ptr_nonnull(t);
  ck_assert_uint_eq(t->task_id, task);
  ck_assert_uint_eq(t->input_c, 3);
  ck_assert_uint_eq(t->classes, 10);
  /* The training set comes down verified; the validation set never does. */
  char tx[65], ty[65], err[1024];
  snprintf(tx, sizeof tx, "%s", t->train_x->sha256);
  snprintf(ty, sizeof ty, "%s", t->train_y->sha256);
  snprintf(got, sizeof got, "%s/got_x.npy", b.dir);
  ck_assert_msg(an_transfer_download(w, task, tx, got, NULL, NULL, err, sizeof err) == 0, "%s",
                err);
  char sha[65], want_sha[65], path[800];
  uint64_t size;
  snprintf(path, sizeof path, "%s/train_x.npy", data);
  an_file_sha256(path, want_sha, &size, err, sizeof err);
  an_file_sha256(got, sha, &size, err, sizeof err);
  ck_assert_str_eq(sha, want_sha);
  snprintf(path, sizeof path, "%s/val_x.npy", data);
  an_file_sha256(path, sha, &size, err, sizeof err);
  snprintf(got, sizeof got, "%s/stolen.npy", b.dir);
  ck_assert_int_ne(an_transfer_download(w, task, sha, got, NULL, NULL, err, sizeof err), 0);
  ck_assert_msg(strstr(err, "not yours"), "%s", err);
  int cancelled = -1;
  ck_assert_int_eq(heartbeat(w, task, &a, &cancelled), 0);
  ck_assert_int_eq(cancelled, 0);
  submit_model(w, task, model, &a);

  an_client_t *p = connect_node(pub);
  t = wait_state(p, task, ARCHNET__TASK_STATE__TASK_ACCEPTED, &a);
  ck_assert(t->accuracy >= 0 && t->accuracy <= 1);
  snprintf(fetched, sizeof fetched, "%s/fetched.onnx", b.dir);
  char taskarg[32];
  snprintf(taskarg, sizeof taskarg, "%llu", (unsigned long long)task);
  char *fetch[] = {(char *)bin("ARCHNET_PUBLISHER"), "fetch", taskarg, "--credentials", pub,
                   "--out", fetched, NULL};
  free(run_ok(fetch));
  an_file_sha256(model, want_sha, &size, err, sizeof err);
  an_file_sha256(fetched, sha, &size, err, sizeof err);
  ck_assert_str_eq(sha, want_sha);
  wait_state(p, task, ARCHNET__TASK_STATE__TASK_DELIVERED, &a);

  /* 1000 bounty, 10% fee: the worker gets 900, the publisher keeps 4000. */
  ck_assert_int_eq(balance_of(&b, "alice"), 4000);
  ck_assert_int_eq(balance_of(&b, "wanda"), 900);
  /* A configuration reload must not lose the key receipts are signed with. */
  kill(b.pid, SIGHUP);
  ck_assert_msg(log_has(b.log, "configuration reloaded", 10), "no reload in %s", b.log);
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__ReceiptQuery rq = ARCHNET__RECEIPT_QUERY__INIT;
  rq.task_id = task;
  req.body_case = ARCHNET__ENVELOPE__BODY_RECEIPT_QUERY;
  req.receipt_query = &rq;
  r = call(w, &req, &a, err, sizeof err);
  ck_assert_msg(r && r->body_case == ARCHNET__ENVELOPE__BODY_RECEIPT, "%s", err);
  ck_assert_int_eq(r->receipt->amount, 900);
  ck_assert_int_eq(r->receipt->fee, 100);
  /* Signed with the key the pin names; any other field value breaks it. */
  an_receipt_doc_t doc;
  ck_assert_int_eq(an_receipt_from_wire(r->receipt, &doc), 0);
  ck_assert_int_eq(doc.task_id, task);
  ck_assert_msg(an_receipt_verify(&doc, b.pin, err, sizeof err) == 0, "%s", err);
  doc.amount = 9000;
  ck_assert_int_eq(an_receipt_verify(&doc, b.pin, err, sizeof err), AN_EFORMAT);
  ledger_ok(&b);
  an_client_close(w);
  an_client_close(p);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
  an_arena_destroy(&a);
}
END_TEST

START_TEST(test_roles_do_not_cross) {
  broker_t b;
  char pub[700], pub2[700], w1[700], data[700], model[700], err[1024];
  an_arena_t a;
  an_arena_init(&a, 0, 0);
  broker_init(&b);
  broker_start(&b);
  enroll(&b, "publisher", "alice", pub, sizeof pub);
  enroll(&b, "publisher", "bob", pub2, sizeof pub2);
  enroll(&b, "worker", "wanda", w1, sizeof w1);
  free(admin(&b, "topup", "1", "1000"));
  snprintf(data, sizeof data, "%s/enc", b.dir);
  snprintf(model, sizeof model, "%s/model.onnx", b.dir);
  make_dataset(data, model);
  uint64_t task = submit_task(&b, pub, data, NULL);

  /* Bob sees nothing of Alice's task and cannot cancel it. */
  an_client_t *bob = connect_node(pub2);
  ck_assert_ptr_null(status(bob, task, &a));
  char taskarg[32];
  snprintf(taskarg, sizeof taskarg, "%llu", (unsigned long long)task);
  char *cancel[] = {(char *)bin("ARCHNET_PUBLISHER"), "cancel", taskarg, "--credentials", pub2,
                    NULL};
  ck_assert_int_eq(an_test_run(cancel, NULL, NULL), 1);
  /* A publisher cannot lease; a worker cannot submit tasks or heartbeat a
   * lease it does not hold. */
  ck_assert_ptr_null(NULL);
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT;
  Archnet__LeaseRequest lr = ARCHNET__LEASE_REQUEST__INIT;
  req.body_case = ARCHNET__ENVELOPE__BODY_LEASE_REQUEST;
  req.lease_request = &lr;
  ck_assert_ptr_null(call(bob, &req, &a, err, sizeof err));
  ck_assert_msg(strstr(err, "role"), "%s", err);
  an_client_t *w = connect_node(w1);
  int cancelled;
  ck_assert_int_eq(heartbeat(w, task, &a, &cancelled), -1);
  Archnet__SubmitTask st = ARCHNET__SUBMIT_TASK__INIT;
  memset(&req, 0, sizeof req);
  archnet__envelope__init(&req);
  req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_TASK;
  req.submit_task = &st;
  ck_assert_ptr_null(call(w, &req, &a, err, sizeof err));
  /* A wrong secret is refused at Hello. */
  an_credentials_t cred;
  an_client_t *bad = NULL;
  ck_assert(an_credentials_read(w1, &cred, err, sizeof err) == 0);
  cred.secret[0] = cred.secret[0] == 'a' ? 'b' : 'a';
  ck_assert_int_ne(an_credentials_connect(&cred, "test", 5000, &bad, err, sizeof err), 0);
  ck_assert_ptr_null(bad);
  /* Revoked: no more connections. */
  free(admin(&b, "revoke", "3", NULL));
  ck_assert(an_credentials_read(w1, &cred, err, sizeof err) == 0);
  ck_assert_int_ne(an_credentials_connect(&cred, "test", 5000, &bad, err, sizeof err), 0);
  /* Guessing secrets: after more than 10 failures in a minute the address
   * is refused without a check, even with the right secret. */
  an_credentials_t good;
  ck_assert(an_credentials_read(pub, &good, err, sizeof err) == 0);
  cred = good;
  cred.secret[1] = cred.secret[1] == 'a' ? 'b' : 'a';
  for (int i = 0; i < 12; i++)
    ck_assert_int_ne(an_credentials_connect(&cred, "test", 5000, &bad, err, sizeof err), 0);
  ck_assert_int_ne(an_credentials_connect(&good, "test", 5000, &bad, err, sizeof err), 0);
  ck_assert_msg(strstr(err, "wait a minute"), "%s", err);
  an_client_close(w);
  an_client_close(bob);
  ledger_ok(&b);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
  an_arena_destroy(&a);
}
END_TEST

START_TEST(test_lease_expires_to_another_worker) {
  broker_t b;
  char pub[700], w1[700], w2[700], data[700], model[700];
  an_arena_t a;
  an_arena_init(&a, 0, 0);
  broker_init(&b);
  broker_start(&b);
  enroll(&b, "publisher", "alice", pub, sizeof pub);
  enroll(&b, "worker", "wanda", w1, sizeof w1);
  enroll(&b, "worker", "walt", w2, sizeof w2);
  free(admin(&b, "topup", "1", "1000"));
  snprintf(data, sizeof data, "%s/enc", b.dir);
  snprintf(model, sizeof model, "%s/model.onnx", b.dir);
  make_dataset(data, model);
  uint64_t task = submit_task(&b, pub, data, NULL);
  an_client_t *x = connect_node(w1), *y = connect_node(w2);
  ck_assert_ptr_nonnull(lease(x, &a, 2));
  /* Wanda goes silent; Walt's long poll gets the task after the 3 s lease.
   * Walt pipelines: the poll, then a balance query, whose reply comes
   * first; the client finds each reply by its request's id. */
  Archnet__Envelope lreq = ARCHNET__ENVELOPE__INIT, breq = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__LeaseRequest lr = ARCHNET__LEASE_REQUEST__INIT;
  Archnet__Capabilities caps = ARCHNET__CAPABILITIES__INIT;
  Archnet__BalanceQuery bq = ARCHNET__BALANCE_QUERY__INIT;
  char err[512];
  uint64_t lease_id = 0, balance_id = 0;
  caps.memory_bytes = (uint64_t)8 << 30;
  lr.caps = &caps;
  lr.wait_seconds = 15;
  lreq.body_case = ARCHNET__ENVELOPE__BODY_LEASE_REQUEST;
  lreq.lease_request = &lr;
  breq.body_case = ARCHNET__ENVELOPE__BODY_BALANCE_QUERY;
  breq.balance_query = &bq;
  ck_assert_int_eq(an_client_send(y, &lreq, &lease_id, err, sizeof err), 0);
  ck_assert_int_eq(an_client_send(y, &breq, &balance_id, err, sizeof err), 0);
  an_arena_reset(&a);
  ck_assert_msg(an_client_reply(y, balance_id, &a, &r, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(r->body_case, ARCHNET__ENVELOPE__BODY_BALANCE);
  ck_assert_int_eq(r->balance->credits, 0);
  an_arena_reset(&a);
  ck_assert_msg(an_client_reply(y, lease_id, &a, &r, err, sizeof err) == 0, "%s", err);
  ck_assert_int_eq(r->body_case, ARCHNET__ENVELOPE__BODY_LEASE_GRANTED);
  Archnet__TaskInfo *t = r->lease_granted->task;
  ck_assert_ptr_nonnull(t);
  ck_assert_uint_eq(t->task_id, task);
  ck_assert_uint_eq(t->attempts, 2);
  int cancelled;
  ck_assert_int_eq(heartbeat(x, task, &a, &cancelled), -1); /* the lease is gone */
  submit_model(y, task, model, &a);
  an_client_t *p = connect_node(pub);
  wait_state(p, task, ARCHNET__TASK_STATE__TASK_ACCEPTED, &a);
  ck_assert_int_eq(balance_of(&b, "walt"), 900);
  ck_assert_int_eq(balance_of(&b, "wanda"), 0);
  ledger_ok(&b);
  an_client_close(x);
  an_client_close(y);
  an_client_close(p);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
  an_arena_destroy(&a);
}
END_TEST

START_TEST(test_cancel_and_rejection) {
  broker_t b;
  char pub[700], w1[700], data[700], model[700], junk[700];
  an_arena_t a;
  an_arena_init(&a, 0, 0);
  broker_init(&b);
  broker_start(&b);
  enroll(&b, "publisher", "alice", pub, sizeof pub);
  enroll(&b, "worker", "wanda", w1, sizeof w1);
  free(admin(&b, "topup", "1", "3000"));
  snprintf(data, sizeof data, "%s/enc", b.dir);
  snprintf(model, sizeof model, "%s/model.onnx", b.dir);
  make_dataset(data, model);
  /* A model that is not ONNX at all is rejected by the sandbox, the task
   * goes back to the queue, and the broker carries on. */
  uint64_t task = submit_task(&b, pub, data, NULL);
  an_client_t *w = connect_node(w1), *p = connect_node(pub);
  ck_assert_ptr_nonnull(lease(w, &a, 2));
  snprintf(junk, sizeof junk, "%s/junk.onnx", b.dir);
  FILE *f = fopen(junk, "w");
  fputs("\x08\x07garbage that is not a model", f);
  fclose(f);
  submit_model(w, task, junk, &a);
  Archnet__TaskInfo *t = wait_state(p, task, ARCHNET__TASK_STATE__TASK_QUEUED, &a);
  ck_assert_msg(t->reason && t->reason[0], "no rejection reason");
  /* Then cancelled while leased again: the worker hears it at its
   * heartbeat, and the publisher gets the bounty back. */
  ck_assert_ptr_null(lease(w, &a, 1)); /* exclude_failed: not to the same worker */
  char w2[700];
  enroll(&b, "worker", "walt", w2, sizeof w2);
  an_client_t *y = connect_node(w2);
  ck_assert_ptr_nonnull(lease(y, &a, 2));
  char taskarg[32];
  snprintf(taskarg, sizeof taskarg, "%llu", (unsigned long long)task);
  char *cancel[] = {(char *)bin("ARCHNET_PUBLISHER"), "cancel", taskarg, "--credentials", pub,
                    NULL};
  free(run_ok(cancel));
  int cancelled = 0;
  ck_assert_int_eq(heartbeat(y, task, &a, &cancelled), 0);
  ck_assert_int_eq(cancelled, 1);
  ck_assert_int_eq(balance_of(&b, "alice"), 3000);
  ledger_ok(&b);
  an_client_close(w);
  an_client_close(y);
  an_client_close(p);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
  an_arena_destroy(&a);
}
END_TEST

/* A broker killed with SIGKILL while a blob is half uploaded: after the
 * restart the upload resumes at an offset no smaller than what was
 * acknowledged, completes, and the state and ledger are intact. */
START_TEST(test_kill9_mid_upload) {
  broker_t b;
  char pub[700], data[700], model[800], big[800], err[1024], sha[65];
  an_arena_t a;
  an_arena_init(&a, 0, 0);
  broker_init(&b);
  broker_start(&b);
  enroll(&b, "publisher", "alice", pub, sizeof pub);
  free(admin(&b, "topup", "1", "1000"));
  snprintf(data, sizeof data, "%s/enc", b.dir);
  snprintf(model, sizeof model, "%s/model.onnx", b.dir);
  make_dataset(data, model);
  /* Make train_x large enough to stop in the middle of. */
  snprintf(big, sizeof big, "%s/train_x.npy", data);
  int64_t shape[4] = {60000, 3, 8, 8};
  float *x = calloc(60000 * 192, sizeof *x);
  for (int i = 0; i < 60000 * 192; i++)
    x[i] = (float)(i % 97);
  ck_assert(an_npy_write(big, AN_NPY_F32, 4, shape, x, err, sizeof err) == 0);
  free(x);
  uint64_t size;
  ck_assert(an_file_sha256(big, sha, &size, err, sizeof err) == 0);
  /* The publisher's task, created and partly uploaded by hand. */
  char *submit[] = {(char *)bin("ARCHNET_PUBLISHER"), "submit", "--credentials", pub, "--data",
                    data, "--bounty", "1000", "--min-accuracy", "0", NULL};
  pid_t sp = an_test_spawn(submit, "/dev/null");
  /* Kill the broker once part of train_x is on its disk. */
  char partial[800];
  struct stat st;
  snprintf(partial, sizeof partial, "%s/blobs/partial/%s", b.data, sha);
  for (int i = 0; i < 400 && !(stat(partial, &st) == 0 && st.st_size > 0); i++)
    usleep(50 * 1000);
  ck_assert_msg(stat(partial, &st) == 0 && st.st_size > 0 && (uint64_t)st.st_size < size,
                "the upload was not caught half way");
  broker_stop(&b, SIGKILL);
  an_test_wait(sp, 20000);
  broker_start(&b);
  /* Rerunning submit resumes the same task from the verified offset. */
  char *out = run_ok(submit);
  ck_assert_msg(strstr(out, "resuming") && strstr(out, "queued"), "%s", out);
  free(out);
  char *tasks = admin(&b, "tasks", NULL, NULL);
  ck_assert_msg(strstr(tasks, "queued") && !strstr(tasks, "\n     2 "), "%s", tasks);
  free(tasks);
  ck_assert_int_eq(balance_of(&b, "alice"), 0);
  ledger_ok(&b);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
  an_arena_destroy(&a);
}
END_TEST

/* An encoded dataset in b->dir/enc (train_x of `rows` rows), hashed for
 * uploads in chunks of `chunk` bytes into d[4] and paths[4]. */
static void hashed_dataset(broker_t *b, int rows, uint32_t chunk, char paths[4][800],
                           an_blob_digests_t d[4]) {
  static const char *names[4] = {"train_x", "train_y", "val_x", "val_y"};
  char data[700], model[800], err[512];
  snprintf(data, sizeof data, "%s/enc", b->dir);
  snprintf(model, sizeof model, "%s/model.onnx", b->dir);
  an_test_encoded_dataset(data, model, rows);
  for (int i = 0; i < 4; i++) {
    snprintf(paths[i], 800, "%s/%s.npy", data, names[i]);
    ck_assert_msg(an_blob_digests_of(paths[i], chunk, &d[i], err, sizeof err) == 0, "%s", err);
  }
}

/* SubmitTask through the client library for the dataset hashed in d;
 * returns the task (uploading). */
static uint64_t submit_by_hand(an_client_t *c, const an_blob_digests_t d[4], an_arena_t *a) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__SubmitTask st = ARCHNET__SUBMIT_TASK__INIT;
  Archnet__BlobRef refs[4];
  char err[512];
  for (int i = 0; i < 4; i++) {
    archnet__blob_ref__init(&refs[i]);
    refs[i].sha256 = (char *)d[i].sha256;
    refs[i].size = d[i].size;
  }
  st.bounty = 10;
  st.train_x = &refs[0];
  st.train_y = &refs[1];
  st.val_x = &refs[2];
  st.val_y = &refs[3];
  st.input_c = 3;
  st.input_h = 8;
  st.input_w = 8;
  st.classes = 10;
  req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_TASK;
  req.submit_task = &st;
  ck_assert_msg((r = call(c, &req, a, err, sizeof err)) != NULL, "%s", err);
  return r->task_info->task_id;
}

/* A broker with a funded publisher whose task (a dataset of `rows`
 * training rows, hashed for chunks of `chunk` bytes) was submitted through
 * the client library and waits for its uploads. */
typedef struct upload_case {
  broker_t b;
  char pub[700];
  char paths[4][800];
  an_blob_digests_t d[4];
  an_arena_t a;
  an_client_t *c;
  uint64_t task;
} upload_case_t;

static void upload_case_start(upload_case_t *u, int rows, uint32_t chunk) {
  an_arena_init(&u->a, 0, 0);
  broker_init(&u->b);
  broker_start(&u->b);
  enroll(&u->b, "publisher", "alice", u->pub, sizeof u->pub);
  free(admin(&u->b, "topup", "1", "1000"));
  hashed_dataset(&u->b, rows, chunk, u->paths, u->d);
  u->c = connect_node(u->pub);
  u->task = submit_by_hand(u->c, u->d, &u->a);
}

/* Uploads the four datasets (resuming wherever the broker is), checks the
 * task is queued, and lets go of everything but the broker. */
static void upload_case_finish(upload_case_t *u) {
  char err[1024];
  for (int i = 0; i < 4; i++)
    ck_assert_msg(an_transfer_upload(u->c, u->task, u->paths[i], &u->d[i], NULL, NULL, err,
                                     sizeof err) == 0,
                  "%s: %s", u->paths[i], err);
  Archnet__TaskInfo *t = status(u->c, u->task, &u->a);
  ck_assert_ptr_nonnull(t);
  ck_assert_int_eq(t->state, ARCHNET__TASK_STATE__TASK_QUEUED);
  for (int i = 0; i < 4; i++)
    an_blob_digests_free(&u->d[i]);
  an_client_close(u->c);
  an_arena_destroy(&u->a);
}

/* BeginBlob + one PutBlobChunk by hand (with the chunk's own digest): the
 * broker's verified end is then `len`, off the upload's chunk grid. */
static void put_first_bytes(an_client_t *c, uint64_t task, const char *path,
                            const an_blob_digests_t *d, size_t len, an_arena_t *a) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *r;
  Archnet__BeginBlob bb = ARCHNET__BEGIN_BLOB__INIT;
  Archnet__BlobRef ref = ARCHNET__BLOB_REF__INIT;
  Archnet__PutBlobChunk pc = ARCHNET__PUT_BLOB_CHUNK__INIT;
  uint8_t *bytes = malloc(len), digest[32];
  char err[512];
  FILE *f = fopen(path, "rb");
  ck_assert(bytes && f && fread(bytes, 1, len, f) == len);
  fclose(f);
  ck_assert(EVP_Digest(bytes, len, digest, NULL, EVP_sha256(), NULL) == 1);
  ref.sha256 = (char *)d->sha256;
  ref.size = d->size;
  bb.task_id = task;
  bb.blob = &ref;
  req.body_case = ARCHNET__ENVELOPE__BODY_BEGIN_BLOB;
  req.begin_blob = &bb;
  ck_assert_msg((r = call(c, &req, a, err, sizeof err)) != NULL, "%s", err);
  ck_assert_uint_eq(r->blob_offset->offset, 0);
  pc.sha256 = (char *)d->sha256;
  pc.data.data = bytes;
  pc.data.len = len;
  pc.chunk_sha256.data = digest;
  pc.chunk_sha256.len = sizeof digest;
  memset(&req, 0, sizeof req);
  archnet__envelope__init(&req);
  req.body_case = ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK;
  req.put_blob_chunk = &pc;
  ck_assert_msg((r = call(c, &req, a, err, sizeof err)) != NULL, "%s", err);
  ck_assert_uint_eq(r->blob_offset->offset, len);
  free(bytes);
}

static void flip_byte(const char *path, long at) {
  FILE *f = fopen(path, "r+b");
  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fseek(f, at, SEEK_SET), 0);
  int ch = fgetc(f);
  ck_assert_int_ne(ch, EOF);
  ck_assert_int_eq(fseek(f, at, SEEK_SET), 0);
  fputc(ch ^ 0x5a, f);
  ck_assert_int_eq(fclose(f), 0);
}

/* an_transfer_upload with digests taken before the upload: it resumes
 * where the broker's verified end is, even off its chunk grid; a file
 * changed after it was hashed is refused at the changed chunk, with a
 * message that says so, and nothing after it is kept; once the file is
 * as hashed again, the upload completes from the last verified byte. */
START_TEST(test_upload_resumes_off_grid_and_refuses_changed_file) {
  upload_case_t u;
  char err[1024];
  upload_case_start(&u, 2000, 4096); /* train_x: 1.5 MB, 375 chunks of 4 KiB */
  put_first_bytes(u.c, u.task, u.paths[0], &u.d[0], 1000, &u.a);
  /* Changed after hashing, in its third chunk (bytes 8192..12287). */
  flip_byte(u.paths[0], 9000);
  int rc = an_transfer_upload(u.c, u.task, u.paths[0], &u.d[0], NULL, NULL, err, sizeof err);
  ck_assert_int_eq(rc, AN_EREMOTE);
  ck_assert_msg(strstr(err, "changed after it was hashed") && strstr(err, "BAD_DIGEST"), "%s",
                err);
  flip_byte(u.paths[0], 9000); /* as it was hashed again */
  /* The broker kept 1000..8192 (the first two chunks, the first one short)
   * and nothing after the refused one: the retry resumes there. */
  char partial[900];
  struct stat stp;
  snprintf(partial, sizeof partial, "%s/blobs/partial/%s", u.b.data, u.d[0].sha256);
  ck_assert_int_eq(stat(partial, &stp), 0);
  ck_assert_int_eq(stp.st_size, 8192);
  upload_case_finish(&u);
  broker_stop(&u.b, SIGTERM);
  broker_free(&u.b);
}
END_TEST

/* A publisher that hangs up with many chunks in flight (being hashed and
 * written on the broker's threads when its session goes): the broker
 * stays up, keeps what it verified, and the next connection finishes the
 * upload from there. The chunks are 64 KiB, so the broker writes them with
 * O_DIRECT, as it does real uploads. */
START_TEST(test_hang_up_with_chunks_in_flight) {
  upload_case_t u;
  char err[1024];
  upload_case_start(&u, 20000, 65536); /* train_x: 15 MB, 235 chunks of 64 KiB */
  put_first_bytes(u.c, u.task, u.paths[0], &u.d[0], 65536, &u.a);
  /* 128 more chunks sent at once, none waited for. */
  FILE *f = fopen(u.paths[0], "rb");
  uint8_t *buf = malloc(65536);
  ck_assert(f && buf);
  ck_assert_int_eq(fseek(f, 65536, SEEK_SET), 0);
  for (uint64_t k = 1; k <= 128; k++) {
    Archnet__Envelope req = ARCHNET__ENVELOPE__INIT;
    Archnet__PutBlobChunk pc = ARCHNET__PUT_BLOB_CHUNK__INIT;
    uint64_t id = 0;
    ck_assert_uint_eq(fread(buf, 1, 65536, f), 65536);
    pc.sha256 = u.d[0].sha256;
    pc.offset = k * 65536;
    pc.data.data = buf;
    pc.data.len = 65536;
    pc.prefix_sha256.data = u.d[0].prefix[k];
    pc.prefix_sha256.len = 32;
    req.body_case = ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK;
    req.put_blob_chunk = &pc;
    ck_assert_msg(an_client_send(u.c, &req, &id, err, sizeof err) == 0, "%s", err);
  }
  fclose(f);
  free(buf);
  an_client_close(u.c);
  /* Again, as a rerun of submit would: the upload resumes where the broker's
   * durable end is and completes. */
  u.c = connect_node(u.pub);
  upload_case_finish(&u);
  /* A clean exit: under the sanitizers, nothing leaked or used after free. */
  kill(u.b.pid, SIGTERM);
  ck_assert_int_eq(an_test_wait(u.b.pid, 20000), 0);
  broker_free(&u.b);
}
END_TEST

/* Two publishers submit the same (large) dataset at the same moment: both
 * uploads share the one blob being written, the one behind is moved along
 * to the broker's verified end or told the blob is complete, and both
 * tasks end up queued, each paid for by its own publisher. */
START_TEST(test_same_dataset_two_publishers_at_once) {
  broker_t b;
  char pub[700], pub2[700], data[700], data2[700], model[800], big[800], err[1024];
  broker_init(&b);
  broker_start(&b);
  enroll(&b, "publisher", "alice", pub, sizeof pub);
  enroll(&b, "publisher", "bob", pub2, sizeof pub2);
  free(admin(&b, "topup", "1", "1000"));
  free(admin(&b, "topup", "2", "1000"));
  snprintf(data, sizeof data, "%s/enc", b.dir);
  snprintf(data2, sizeof data2, "%s/enc2", b.dir);
  snprintf(model, sizeof model, "%s/model.onnx", b.dir);
  make_dataset(data, model);
  snprintf(big, sizeof big, "%s/train_x.npy", data);
  int64_t shape[4] = {30000, 3, 8, 8};
  float *x = calloc(30000 * 192, sizeof *x);
  ck_assert_ptr_nonnull(x);
  for (int i = 0; i < 30000 * 192; i++)
    x[i] = (float)(i % 89);
  ck_assert(an_npy_write(big, AN_NPY_F32, 4, shape, x, err, sizeof err) == 0);
  free(x);
  char copy[2000];
  snprintf(copy, sizeof copy, "cp -r %s %s", data, data2);
  ck_assert_int_eq(system(copy), 0);
  char log1[800], log2[800];
  snprintf(log1, sizeof log1, "%s/submit1.log", b.dir);
  snprintf(log2, sizeof log2, "%s/submit2.log", b.dir);
  char *s1[] = {(char *)bin("ARCHNET_PUBLISHER"), "submit", "--credentials", pub, "--data",
                data, "--bounty", "1000", "--min-accuracy", "0", NULL};
  char *s2[] = {(char *)bin("ARCHNET_PUBLISHER"), "submit", "--credentials", pub2, "--data",
                data2, "--bounty", "1000", "--min-accuracy", "0", NULL};
  pid_t p1 = an_test_spawn(s1, log1), p2 = an_test_spawn(s2, log2);
  int st1 = an_test_wait(p1, 120000), st2 = an_test_wait(p2, 120000);
  char *l1 = an_small_file_read(log1, 1 << 20), *l2 = an_small_file_read(log2, 1 << 20);
  ck_assert_msg(st1 == 0 && st2 == 0, "submit exits %d and %d:\n%s\n---\n%s", st1, st2,
                l1 ? l1 : "", l2 ? l2 : "");
  free(l1);
  free(l2);
  char *tasks = admin(&b, "tasks", NULL, NULL);
  const char *q1 = strstr(tasks, "queued");
  ck_assert_msg(q1 && strstr(q1 + 1, "queued"), "two tasks queued:\n%s", tasks);
  free(tasks);
  ck_assert_int_eq(balance_of(&b, "alice"), 0);
  ck_assert_int_eq(balance_of(&b, "bob"), 0);
  ledger_ok(&b);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
}
END_TEST

START_TEST(test_sighup_reloads_config) {
  broker_t b;
  char conf[700];
  broker_init(&b);
  snprintf(conf, sizeof conf, "%s/broker.conf", b.dir);
  FILE *f = fopen(conf, "w");
  fprintf(f, "[broker]\nfee-permille = 10\nlease-seconds = 60\n");
  fclose(f);
  char *run[] = {(char *)bin("ARCHNET_BROKER"), "run", "--config", conf, "--data-dir", b.data,
                 "--listen", "127.0.0.1:0", "--ready-file", b.ready, "--http-listen", "",
                 NULL};
  b.pid = an_test_spawn(run, b.log);
  ck_assert(an_test_read_line_when_ready(b.ready, b.address, sizeof b.address, 10000) == 0);
  f = fopen(conf, "w");
  fprintf(f, "[broker]\nfee-permille = 200\nlease-seconds = 90\nlog-level = debug\n");
  fclose(f);
  kill(b.pid, SIGHUP);
  ck_assert_msg(log_has(b.log, "configuration reloaded (fee 200/1000, lease 90 s", 10),
                "no reload in %s", b.log);
  f = fopen(conf, "w");
  fprintf(f, "[broker]\nfee-permille = lots\n");
  fclose(f);
  kill(b.pid, SIGHUP);
  ck_assert_msg(log_has(b.log, "keeping the running configuration", 10), "see %s", b.log);
  broker_stop(&b, SIGTERM);
  broker_free(&b);
}
END_TEST

static Suite *broker_tasks_suite(void) {
  Suite *s = suite_create("broker-tasks");
  TCase *tc = tcase_create("tasks");
  tcase_add_test(tc, test_full_cycle);
  tcase_add_test(tc, test_roles_do_not_cross);
  tcase_add_test(tc, test_lease_expires_to_another_worker);
  tcase_add_test(tc, test_cancel_and_rejection);
  tcase_add_test(tc, test_kill9_mid_upload);
  tcase_add_test(tc, test_same_dataset_two_publishers_at_once);
  tcase_add_test(tc, test_upload_resumes_off_grid_and_refuses_changed_file);
  tcase_add_test(tc, test_hang_up_with_chunks_in_flight);
  tcase_add_test(tc, test_sighup_reloads_config);
  tcase_set_timeout(tc, 600);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(broker_tasks_suite)
