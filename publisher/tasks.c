/* The publisher's view of its tasks on the broker: `status` (one task or
 * all, with the balance), `fetch` (the accepted model, resumable and
 * verified), `cancel` (before acceptance; the bounty comes back). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/cli.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/net/transfer.h"
#include "common/progress.h"
#include "publisher/commands.h"

const char *an_publisher_task_state_name(int state) {
  static const char *const names[] = {"uploading", "queued",    "leased", "validating",
                                      "accepted",  "delivered", "failed", "cancelled"};
  return state >= 0 && state < 8 ? names[state] : "unknown";
}

typedef struct task_settings {
  char *credentials, *out;
  bool progress;
} task_settings_t;

#define OPT(f) offsetof(task_settings_t, f)

static const an_option_t status_options[] = {
    {"credentials", AN_OPT_STR, OPT(credentials), "publisher.credentials", 0, 0, "FILE",
     "from 'archnet-publisher enroll'"},
};

static const an_option_t fetch_options[] = {
    {"credentials", AN_OPT_STR, OPT(credentials), "publisher.credentials", 0, 0, "FILE",
     "from 'archnet-publisher enroll'"},
    {"out", AN_OPT_STR, OPT(out), "model.onnx", 0, 0, "FILE", "where to save the model"},
    {"progress", AN_OPT_BOOL, OPT(progress), "false", 0, 0, NULL,
     "draw the progress line even when stderr is not a terminal"},
};

static const an_command_spec_t status_spec = {
    .program = "archnet-publisher",
    .command = "status",
    .args = "[TASK]",
    .summary = "Show one of your tasks in detail, or all of them, and your balance.",
    .options = status_options,
    .n_options = sizeof status_options / sizeof status_options[0],
};

static const an_command_spec_t fetch_spec = {
    .program = "archnet-publisher",
    .command = "fetch",
    .args = "TASK",
    .summary = "Download the model the broker accepted for TASK (resumable, verified by its\n"
               "SHA-256), then mark the task delivered.",
    .options = fetch_options,
    .n_options = sizeof fetch_options / sizeof fetch_options[0],
};

static const an_command_spec_t cancel_spec = {
    .program = "archnet-publisher",
    .command = "cancel",
    .args = "TASK",
    .summary = "Cancel TASK before a model is accepted; its bounty comes back to you and a\n"
               "worker training it is told to stop.",
    .options = status_options,
    .n_options = sizeof status_options / sizeof status_options[0],
};

/* Parses TASK; 0 if it is not a positive integer. */
static uint64_t task_arg(const char *s) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  return *s && !*end && s[0] != '-' ? (uint64_t)v : 0;
}

static void print_task(const Archnet__TaskInfo *t, int detail) {
  printf("task %llu  %-10s  bounty %llu  min accuracy %.3f  attempts %u/%u",
         (unsigned long long)t->task_id, an_publisher_task_state_name(t->state),
         (unsigned long long)t->bounty, t->min_accuracy, t->attempts, t->max_attempts);
  if (t->accuracy >= 0)
    printf("  accuracy %.4f", t->accuracy);
  if (t->state == ARCHNET__TASK_STATE__TASK_LEASED)
    printf("  progress %.0f%%", 100 * t->progress);
  printf("\n");
  if (detail && t->reason && t->reason[0])
    printf("  last rejection or failure: %s\n", t->reason);
  if (detail && t->model && t->model->sha256 && t->model->sha256[0])
    printf("  model: sha256 %s, %llu bytes ('fetch %llu' downloads it)\n", t->model->sha256,
           (unsigned long long)t->model->size, (unsigned long long)t->task_id);
}

/* Connects with the credentials; prints errors. */
static int connect_node(const char *cmd, const char *file, an_client_t **c) {
  an_credentials_t cred;
  char err[2048], software[64];
  int rc;
  snprintf(software, sizeof software, "archnet-publisher/%s", AN_VERSION);
  if ((rc = an_credentials_read(file, &cred, err, sizeof err)) != 0 ||
      (rc = an_credentials_connect(&cred, software, 0, c, err, sizeof err)) != 0)
    fprintf(stderr, "archnet-publisher %s: %s\n", cmd, err);
  return rc;
}

/* A TaskStatus, CancelTask or ModelReceived for `id`. */
static int task_call(an_client_t *c, Archnet__Envelope__BodyCase kind, uint64_t id,
                     an_arena_t *arena, Archnet__TaskInfo **out, char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__TaskQuery q = ARCHNET__TASK_QUERY__INIT;
  Archnet__CancelTask ct = ARCHNET__CANCEL_TASK__INIT;
  Archnet__ModelReceived mr = ARCHNET__MODEL_RECEIVED__INIT;
  q.task_id = ct.task_id = mr.task_id = id;
  req.body_case = kind;
  if (kind == ARCHNET__ENVELOPE__BODY_TASK_STATUS)
    req.task_status = &q;
  else if (kind == ARCHNET__ENVELOPE__BODY_CANCEL_TASK)
    req.cancel_task = &ct;
  else
    req.model_received = &mr;
  int rc = an_client_call(c, &req, arena, &reply, err, errlen);
  if (rc)
    return rc;
  if (reply->body_case != ARCHNET__ENVELOPE__BODY_TASK_INFO) {
    snprintf(err, errlen, "unexpected reply from the broker");
    return AN_EPROTO;
  }
  *out = reply->task_info;
  return 0;
}

int an_publisher_status(int argc, char **argv) {
  task_settings_t s = {0};
  an_client_t *c = NULL;
  an_arena_t arena;
  char err[2048];
  int first, status, rc;
  an_arena_init(&arena, 0, 0);
  if ((status = an_cli_parse(&status_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  uint64_t id = argc - first == 1 ? task_arg(argv[first]) : 0;
  if (argc - first > 1 || (argc - first == 1 && !id)) {
    fprintf(stderr, "archnet-publisher status: takes at most one task number\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (connect_node("status", s.credentials, &c) != 0)
    goto done;
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  if (id) {
    Archnet__TaskInfo *t;
    if ((rc = task_call(c, ARCHNET__ENVELOPE__BODY_TASK_STATUS, id, &arena, &t, err,
                        sizeof err)) != 0)
      goto fail;
    print_task(t, 1);
  } else {
    Archnet__ListTasks lt = ARCHNET__LIST_TASKS__INIT;
    req.body_case = ARCHNET__ENVELOPE__BODY_LIST_TASKS;
    req.list_tasks = &lt;
    if ((rc = an_client_call(c, &req, &arena, &reply, err, sizeof err)) != 0)
      goto fail;
    if (reply->body_case != ARCHNET__ENVELOPE__BODY_TASK_LIST) {
      snprintf(err, sizeof err, "unexpected reply from the broker");
      goto fail;
    }
    if (reply->task_list->n_tasks == 0)
      printf("no tasks yet ('submit' creates one)\n");
    for (size_t i = 0; i < reply->task_list->n_tasks; i++)
      print_task(reply->task_list->tasks[i], 0);
  }
  Archnet__BalanceQuery bq = ARCHNET__BALANCE_QUERY__INIT;
  memset(&req, 0, sizeof req);
  archnet__envelope__init(&req);
  req.body_case = ARCHNET__ENVELOPE__BODY_BALANCE_QUERY;
  req.balance_query = &bq;
  an_arena_reset(&arena);
  if ((rc = an_client_call(c, &req, &arena, &reply, err, sizeof err)) != 0)
    goto fail;
  if (reply->body_case == ARCHNET__ENVELOPE__BODY_BALANCE)
    printf("balance: %lld credits\n", (long long)reply->balance->credits);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher status: %s\n", err);
  status = AN_EXIT_FAIL;
done:
  an_client_close(c);
  an_arena_destroy(&arena);
  an_config_free(&status_spec, &s);
  return status;
}

static void on_progress(uint64_t done, uint64_t total, void *arg) {
  an_progress_t *p = arg;
  p->total = total;
  an_progress_update(p, done, "downloading", false);
}

int an_publisher_fetch(int argc, char **argv) {
  task_settings_t s = {0};
  an_client_t *c = NULL;
  an_arena_t arena;
  Archnet__TaskInfo *t;
  char err[2048];
  int first, status, rc;
  an_arena_init(&arena, 0, 0);
  if ((status = an_cli_parse(&fetch_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  uint64_t id = argc - first == 1 ? task_arg(argv[first]) : 0;
  if (!id) {
    fprintf(stderr, "archnet-publisher fetch: needs one task number; see --help\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (connect_node("fetch", s.credentials, &c) != 0)
    goto done;
  if ((rc = task_call(c, ARCHNET__ENVELOPE__BODY_TASK_STATUS, id, &arena, &t, err,
                      sizeof err)) != 0)
    goto fail;
  if (t->state != ARCHNET__TASK_STATE__TASK_ACCEPTED &&
      t->state != ARCHNET__TASK_STATE__TASK_DELIVERED) {
    snprintf(err, sizeof err, "task %llu is %s: no accepted model yet",
             (unsigned long long)id, an_publisher_task_state_name(t->state));
    goto fail;
  }
  if (!t->model || !t->model->sha256) {
    snprintf(err, sizeof err, "the broker did not say which model was accepted");
    goto fail;
  }
  char digest[65];
  snprintf(digest, sizeof digest, "%s", t->model->sha256);
  an_progress_t prog;
  an_progress_init(&prog, t->model->size, "B", s.progress);
  rc = an_transfer_download(c, id, digest, s.out, on_progress, &prog, err, sizeof err);
  an_progress_done(&prog);
  if (rc)
    goto fail;
  an_arena_reset(&arena);
  if ((rc = task_call(c, ARCHNET__ENVELOPE__BODY_MODEL_RECEIVED, id, &arena, &t, err,
                      sizeof err)) != 0)
    goto fail;
  printf("task %llu: model saved to %s (sha256 %s, validation accuracy %.4f)\n",
         (unsigned long long)id, s.out, digest, t->accuracy);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher fetch: %s\n", err);
  status = AN_EXIT_FAIL;
done:
  an_client_close(c);
  an_arena_destroy(&arena);
  an_config_free(&fetch_spec, &s);
  return status;
}

int an_publisher_cancel(int argc, char **argv) {
  task_settings_t s = {0};
  an_client_t *c = NULL;
  an_arena_t arena;
  Archnet__TaskInfo *t;
  char err[2048];
  int first, status, rc;
  an_arena_init(&arena, 0, 0);
  if ((status = an_cli_parse(&cancel_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  uint64_t id = argc - first == 1 ? task_arg(argv[first]) : 0;
  if (!id) {
    fprintf(stderr, "archnet-publisher cancel: needs one task number; see --help\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (connect_node("cancel", s.credentials, &c) != 0)
    goto done;
  if ((rc = task_call(c, ARCHNET__ENVELOPE__BODY_CANCEL_TASK, id, &arena, &t, err,
                      sizeof err)) != 0) {
    fprintf(stderr, "archnet-publisher cancel: %s\n", err);
    goto done;
  }
  printf("task %llu cancelled; its bounty of %llu credits is back in your balance\n",
         (unsigned long long)id, (unsigned long long)t->bounty);
  status = AN_EXIT_OK;
done:
  an_client_close(c);
  an_arena_destroy(&arena);
  an_config_free(&cancel_spec, &s);
  return status;
}
