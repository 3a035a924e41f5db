/* archnet-worker's daemon against a real broker on loopback: two workers
 * and one task (exactly one wins the lease, the task is paid once); a worker
 * killed while training (the task goes to the other after the lease's
 * deadline); the external PyTorch trainer from deploy/examples end to end;
 * cancel during training; and the broker restarted while a worker is
 * downloading (the download resumes and the task completes). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/small_file.h"
#include "tests/support/broker_fixture.h"
#include "tests/support/testutil.h"

typedef struct scene {
  an_test_broker_t b;
  char pub[700], w1[700], w2[700], data[700];
} scene_t;

static void scene_init(scene_t *s, int train_rows) {
  an_test_broker_init(&s->b);
  an_test_broker_start(&s->b);
  an_test_broker_enroll(&s->b, "publisher", "alice", s->pub, sizeof s->pub);
  an_test_broker_enroll(&s->b, "worker", "wanda", s->w1, sizeof s->w1);
  an_test_broker_enroll(&s->b, "worker", "walt", s->w2, sizeof s->w2);
  free(an_test_broker_admin(&s->b, "topup", "1", "5000"));
  snprintf(s->data, sizeof s->data, "%s/enc", s->b.dir);
  an_test_encoded_dataset(s->data, NULL, train_rows);
}

static void scene_free(scene_t *s) {
  an_test_broker_ledger_ok(&s->b);
  an_test_broker_stop(&s->b, SIGTERM);
  an_test_broker_free(&s->b);
}

static void submit(scene_t *s, const char *lease_seconds) {
  char *argv[] = {(char *)an_test_bin("ARCHNET_PUBLISHER"), "submit", "--credentials", s->pub,
                  "--data", s->data, "--bounty", "1000", "--min-accuracy", "0",
                  "--lease-seconds", (char *)lease_seconds, NULL};
  free(an_test_run_ok(argv));
}

/* Starts `archnet-worker run` for credentials `cred` with extra options. */
static pid_t start_worker(scene_t *s, const char *cred, const char *name, char *const extra[]) {
  char cache[800], log[800];
  char *argv[32] = {(char *)an_test_bin("ARCHNET_WORKER"), "run", "--credentials", (char *)cred,
                    "--cache", cache, "--wait", "3"};
  int n = 8;
  snprintf(cache, sizeof cache, "%s/cache-%s", s->b.dir, name);
  snprintf(log, sizeof log, "%s/worker-%s.log", s->b.dir, name);
  for (int i = 0; extra && extra[i] && n < 31; i++)
    argv[n++] = extra[i];
  argv[n] = NULL;
  pid_t pid = an_test_spawn(argv, log);
  ck_assert_int_gt(pid, 0);
  return pid;
}

static char *worker_log(scene_t *s, const char *name) {
  char path[800];
  snprintf(path, sizeof path, "%s/worker-%s.log", s->b.dir, name);
  FILE *f = fopen(path, "r");
  char *buf = calloc(1, 1 << 20);
  ck_assert_ptr_nonnull(buf);
  if (f) {
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
  }
  return buf;
}

/* Waits until the worker's log contains `text`. */
static void wait_log(scene_t *s, const char *name, const char *text, int seconds) {
  for (int i = 0; i < seconds * 10; i++) {
    char *log = worker_log(s, name);
    int found = strstr(log, text) != NULL;
    free(log);
    if (found)
      return;
    usleep(100 * 1000);
  }
  char *log = worker_log(s, name);
  ck_abort_msg("worker %s never logged '%s':\n%s", name, text, log);
}

static const char *task_state(scene_t *s) {
  static char state[32];
  char *out = an_test_broker_admin(&s->b, "tasks", NULL, NULL);
  state[0] = '\0';
  sscanf(out, "%*s %31s", state);
  free(out);
  return state;
}

START_TEST(test_two_workers_one_task) {
  scene_t s;
  scene_init(&s, 0);
  submit(&s, "60");
  char *opts[] = {"--max-tasks", "1", "--exit-when-idle", "--epochs", "1", NULL};
  pid_t a = start_worker(&s, s.w1, "a", opts), b = start_worker(&s, s.w2, "b", opts);
  ck_assert_int_eq(an_test_wait(a, 300000), 0);
  ck_assert_int_eq(an_test_wait(b, 300000), 0);
  ck_assert_str_eq(task_state(&s), "accepted");
  int64_t wa = an_test_broker_balance(&s.b, "wanda"), wb = an_test_broker_balance(&s.b, "walt");
  /* One of them was paid 900 (1000 minus the 10% fee), the other nothing. */
  ck_assert_msg((wa == 900 && wb == 0) || (wa == 0 && wb == 900), "balances %lld and %lld",
                (long long)wa, (long long)wb);
  ck_assert_int_eq(an_test_broker_balance(&s.b, "alice"), 4000);
  scene_free(&s);
}
END_TEST

START_TEST(test_killed_worker_loses_the_task) {
  scene_t s;
  scene_init(&s, 0);
  submit(&s, "4");
  /* Wanda trains for a very long time and is killed while training. */
  char *slow[] = {"--epochs", "10000", NULL};
  pid_t a = start_worker(&s, s.w1, "a", slow);
  wait_log(&s, "a", "leased", 60);
  sleep(1);
  kill(a, SIGKILL);
  an_test_wait(a, 10000);
  /* Walt trains his own way: SGD and shifted samples. */
  char *opts[] = {"--max-tasks", "1", "--epochs", "1", "--optimizer", "sgd", "--augment-shift",
                  "2", NULL};
  pid_t b = start_worker(&s, s.w2, "b", opts);
  ck_assert_int_eq(an_test_wait(b, 300000), 0);
  ck_assert_str_eq(task_state(&s), "accepted");
  ck_assert_int_eq(an_test_broker_balance(&s.b, "walt"), 900);
  /* Walt kept the broker's signed receipt; it verifies with the pin, and a
   * receipt edited to claim more does not. */
  char cache[800], receipt[900];
  snprintf(cache, sizeof cache, "%s/cache-b", s.b.dir);
  char *list[] = {(char *)an_test_bin("ARCHNET_WORKER"), "receipts", "--cache", cache,
                  "--credentials", (char *)s.w2, NULL};
  an_test_expect_run(list, 0, "900", NULL);
  an_test_expect_run(list, 0, " ok", NULL);
  snprintf(receipt, sizeof receipt, "%s/receipts/task-1.json", cache);
  char *text = an_small_file_read(receipt, 1 << 16);
  ck_assert_ptr_nonnull(text);
  char *amount = strstr(text, "\"amount\": 900");
  ck_assert_msg(amount, "%s", text);
  amount[11] = '9'; /* 900 -> 990 */
  FILE *f = fopen(receipt, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  free(text);
  an_test_expect_run(list, 1, "BAD", NULL);
  char *bad[] = {(char *)an_test_bin("ARCHNET_WORKER"), "run", "--optimizer", "lbfgs", NULL};
  an_test_expect_run(bad, 2, NULL, "--optimizer is adam or sgd");
  ck_assert_int_eq(an_test_broker_balance(&s.b, "wanda"), 0);
  scene_free(&s);
}
END_TEST

START_TEST(test_cancel_during_training) {
  scene_t s;
  scene_init(&s, 0);
  submit(&s, "3"); /* heartbeats every second */
  char *slow[] = {"--epochs", "10000", "--max-tasks", "1", NULL};
  pid_t a = start_worker(&s, s.w1, "a", slow);
  wait_log(&s, "a", "leased", 60);
  sleep(2);
  char *cancel[] = {(char *)an_test_bin("ARCHNET_PUBLISHER"), "cancel", "1", "--credentials",
                    s.pub, NULL};
  free(an_test_run_ok(cancel));
  /* The worker hears it at its next heartbeat and stops training. */
  ck_assert_int_eq(an_test_wait(a, 60000), 0);
  char *log = worker_log(&s, "a");
  ck_assert_msg(strstr(log, "cancelled by its publisher"), "%s", log);
  free(log);
  ck_assert_str_eq(task_state(&s), "cancelled");
  ck_assert_int_eq(an_test_broker_balance(&s.b, "alice"), 5000);
  scene_free(&s);
}
END_TEST

START_TEST(test_external_pytorch_trainer) {
  scene_t s;
  char cmd[1200];
  scene_init(&s, 0);
  submit(&s, "60");
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/deploy/examples/pytorch_trainer.py \"$1\" "
                            "\"$2\" \"$3\"",
           an_test_bin("ARCHNET_SOURCE_ROOT"));
  char *opts[] = {"--trainer", "command", "--trainer-cmd", cmd, "--max-tasks", "1", NULL};
  setenv("ARCHNET_EPOCHS", "1", 1);
  setenv("ARCHNET_THREADS", "1", 1);
  pid_t a = start_worker(&s, s.w1, "a", opts);
  ck_assert_int_eq(an_test_wait(a, 600000), 0);
  char *log = worker_log(&s, "a");
  ck_assert_msg(strstr(log, "model accepted"), "%s", log);
  free(log);
  ck_assert_int_eq(an_test_broker_balance(&s.b, "wanda"), 900);
  scene_free(&s);
}
END_TEST

START_TEST(test_broker_restart_during_download) {
  scene_t s;
  char part[900];
  struct stat st;
  scene_init(&s, 60000); /* a 46 MB training set */
  submit(&s, "120");
  char *opts[] = {"--max-tasks", "1", "--epochs", "1", NULL};
  pid_t a = start_worker(&s, s.w1, "a", opts);
  /* Catch the download half way: a .part file in the worker's cache. */
  char cache[800];
  snprintf(cache, sizeof cache, "%s/cache-a", s.b.dir);
  int caught = 0;
  for (int i = 0; i < 600 && !caught; i++) {
    char cmd[1000];
    snprintf(cmd, sizeof cmd, "ls %s/*.part 2>/dev/null | head -1", cache);
    FILE *p = popen(cmd, "r");
    if (p && fgets(part, sizeof part, p)) {
      part[strcspn(part, "\n")] = '\0';
      caught = stat(part, &st) == 0 && st.st_size > 0;
    }
    if (p)
      pclose(p);
    if (!caught)
      usleep(20 * 1000);
  }
  ck_assert_msg(caught, "the download was not caught half way");
  an_test_broker_stop(&s.b, SIGKILL);
  sleep(1);
  an_test_broker_start(&s.b);
  /* The worker reconnects, finds its lease still live, resumes. */
  ck_assert_int_eq(an_test_wait(a, 600000), 0);
  ck_assert_str_eq(task_state(&s), "accepted");
  ck_assert_int_eq(an_test_broker_balance(&s.b, "wanda"), 900);
  scene_free(&s);
}
END_TEST

static Suite *worker_suite(void) {
  Suite *s = suite_create("worker");
  TCase *tc = tcase_create("daemon");
  tcase_add_test(tc, test_two_workers_one_task);
  tcase_add_test(tc, test_killed_worker_loses_the_task);
  tcase_add_test(tc, test_cancel_during_training);
  tcase_add_test(tc, test_external_pytorch_trainer);
  tcase_add_test(tc, test_broker_restart_during_download);
  tcase_set_timeout(tc, 900);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(worker_suite)
