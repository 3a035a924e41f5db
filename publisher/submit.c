/* `archnet-publisher submit`: an encoded dataset becomes a task on the
 * broker. The four .npy files are hashed, the task is created (the bounty
 * goes to escrow), and the files are uploaded in verified chunks. An
 * interrupted submit is resumed by running it again: the task's id is kept
 * in ENCODED_DIR/task.json, and each upload restarts at the broker's
 * verified end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/net/transfer.h"
#include "common/progress.h"
#include "common/small_file.h"
#include "publisher/commands.h"
#include "publisher/encoded.h"

#define TASK_FILE "task.json"

typedef struct submit_settings {
  char *data, *credentials;
  int64_t bounty, max_attempts, lease_seconds, classes;
  double min_accuracy;
  uint64_t min_memory;
  bool exclude_failed, progress;
} submit_settings_t;

#define OPT(f) offsetof(submit_settings_t, f)

static const an_option_t submit_options[] = {
    {"data", AN_OPT_STR, OPT(data), NULL, 0, 0, "ENCODED_DIR", "the folder 'encode' wrote"},
    {"bounty", AN_OPT_INT, OPT(bounty), NULL, 1, INT64_MAX / 4, "CREDITS",
     "paid to the worker whose model is accepted (held in escrow until then)"},
    {"min-accuracy", AN_OPT_DOUBLE, OPT(min_accuracy), NULL, 0, 1, "A",
     "validation accuracy (0..1) a model needs to be accepted"},
    {"max-attempts", AN_OPT_INT, OPT(max_attempts), "3", 1, 1000, "N",
     "leases (expired or rejected) before the task fails and the bounty comes back"},
    {"lease-seconds", AN_OPT_INT, OPT(lease_seconds), "0", 0, 604800, "S",
     "how long a worker may go without a heartbeat (0 = the broker's default)"},
    {"classes", AN_OPT_INT, OPT(classes), "0", 0, 65536, "K",
     "classes the model must output (0 = the largest label + 1)"},
    {"min-memory", AN_OPT_SIZE, OPT(min_memory), "0", 0, 1099511627776.0, "BYTES",
     "only workers with this much memory get the task"},
    {"exclude-failed", AN_OPT_BOOL, OPT(exclude_failed), "true", 0, 0, NULL,
     "never lease the task again to a worker that already failed it"},
    {"credentials", AN_OPT_STR, OPT(credentials), "publisher.credentials", 0, 0, "FILE",
     "from 'archnet-publisher enroll'"},
    {"progress", AN_OPT_BOOL, OPT(progress), "false", 0, 0, NULL,
     "draw the progress line even when stderr is not a terminal"},
};

static const an_command_spec_t submit_spec = {
    .program = "archnet-publisher",
    .command = "submit",
    .summary = "Submit an encoded dataset as a task: the bounty goes into escrow, the\n"
               "training and validation files are uploaded (with progress; rerun to resume\n"
               "an interrupted upload), and workers can lease the task once all arrived.",
    .options = submit_options,
    .n_options = sizeof submit_options / sizeof submit_options[0],
};

typedef struct part {
  const char *name;
  char path[4096];
  an_blob_digests_t d; /* owned: its address, size and per-chunk digests */
} part_t;

static void on_progress(uint64_t done, uint64_t total, void *arg) {
  an_progress_t *p = arg;
  (void)total;
  an_progress_update(p, done, "uploading", false);
}

/* The task this folder was already submitted as, if its files are the
 * same (0 if none). */
static uint64_t previous_task(const char *dir, const part_t *parts) {
  char path[4200];
  json_t *j;
  uint64_t id = 0;
  snprintf(path, sizeof path, "%s/%s", dir, TASK_FILE);
  if (!(j = json_load_file(path, 0, NULL)))
    return 0;
  json_t *digests = json_object_get(j, "sha256");
  int same = json_is_object(digests);
  for (int i = 0; same && i < 4; i++) {
    const char *d = json_string_value(json_object_get(digests, parts[i].name));
    same = d && strcmp(d, parts[i].d.sha256) == 0;
  }
  if (same)
    id = (uint64_t)json_integer_value(json_object_get(j, "task_id"));
  json_decref(j);
  return id;
}

static int save_task(const char *dir, const part_t *parts, uint64_t id, char *err,
                     size_t errlen) {
  char path[4200];
  int rc = UV_ENOMEM;
  json_t *j = json_pack("{s:I, s:{s:s, s:s, s:s, s:s}}", "task_id", (json_int_t)id, "sha256",
                        parts[0].name, parts[0].d.sha256, parts[1].name, parts[1].d.sha256,
                        parts[2].name, parts[2].d.sha256, parts[3].name, parts[3].d.sha256);
  snprintf(path, sizeof path, "%s/%s", dir, TASK_FILE);
  if (j)
    rc = an_json_write_file(path, j, 0644, err, errlen);
  else
    snprintf(err, errlen, "out of memory");
  json_decref(j);
  return rc;
}

/* The largest label + 1 in train_y.npy. */
static int count_classes(const char *path, int64_t *classes, char *err, size_t errlen) {
  an_npy_t y = {0};
  int rc = an_npy_map(path, &y, err, errlen);
  if (rc)
    return rc;
  int64_t k = 0;
  if (y.dtype != AN_NPY_U8 || y.ndim != 1) {
    snprintf(err, errlen, "%s: labels must be uint8, one per image", path);
    rc = AN_EFORMAT;
  } else {
    for (size_t i = 0; i < y.nbytes; i++)
      k = ((const uint8_t *)y.data)[i] + 1 > k ? ((const uint8_t *)y.data)[i] + 1 : k;
    *classes = k;
  }
  an_npy_free(&y);
  return rc;
}

int an_publisher_submit(int argc, char **argv) {
  submit_settings_t s = {0};
  an_credentials_t cred;
  an_encoded_info_t info;
  an_client_t *client = NULL;
  an_arena_t arena;
  part_t parts[4] = {{"train_x"}, {"train_y"}, {"val_x"}, {"val_y"}};
  char err[8192];
  int first, status, rc;
  uint64_t task_id = 0;

  an_arena_init(&arena, 0, 0);
  if ((status = an_cli_parse(&submit_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first || !s.data || !s.bounty || s.min_accuracy < 0) {
    fprintf(stderr,
            "archnet-publisher submit: needs --data, --bounty and --min-accuracy; see --help\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if ((rc = an_credentials_read(s.credentials, &cred, err, sizeof err)) != 0 ||
      (rc = an_encoded_read_info(s.data, &info, err, sizeof err)) != 0)
    goto fail;
  if (!s.classes) {
    char ypath[4200];
    snprintf(ypath, sizeof ypath, "%s/train_y.npy", s.data);
    if ((rc = count_classes(ypath, &s.classes, err, sizeof err)) != 0)
      goto fail;
  }
  fprintf(stderr, "archnet-publisher submit: hashing the dataset files\n");
  uint64_t total = 0;
  for (int i = 0; i < 4; i++) {
    snprintf(parts[i].path, sizeof parts[i].path, "%s/%s.npy", s.data, parts[i].name);
    if ((rc = an_blob_digests_of(parts[i].path, 0, &parts[i].d, err, sizeof err)) != 0)
      goto fail;
    total += parts[i].d.size;
  }
  char software[64];
  snprintf(software, sizeof software, "archnet-publisher/%s", AN_VERSION);
  if ((rc = an_credentials_connect(&cred, software, 0, &client, err, sizeof err)) != 0)
    goto fail;

  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  if (!(task_id = previous_task(s.data, parts))) {
    Archnet__SubmitTask st = ARCHNET__SUBMIT_TASK__INIT;
    Archnet__BlobRef refs[4];
    Archnet__BlobRef *slots[4];
    for (int i = 0; i < 4; i++) {
      archnet__blob_ref__init(&refs[i]);
      refs[i].sha256 = parts[i].d.sha256;
      refs[i].size = parts[i].d.size;
      slots[i] = &refs[i];
    }
    st.bounty = (uint64_t)s.bounty;
    st.min_accuracy = s.min_accuracy;
    st.max_attempts = (uint32_t)s.max_attempts;
    st.lease_seconds = (uint32_t)s.lease_seconds;
    st.train_x = slots[0];
    st.train_y = slots[1];
    st.val_x = slots[2];
    st.val_y = slots[3];
    st.input_c = (uint32_t)info.shape[0];
    st.input_h = (uint32_t)info.shape[1];
    st.input_w = (uint32_t)info.shape[2];
    st.classes = (uint32_t)s.classes;
    st.min_memory_bytes = s.min_memory;
    st.exclude_failed = s.exclude_failed;
    req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_TASK;
    req.submit_task = &st;
    if ((rc = an_client_call(client, &req, &arena, &reply, err, sizeof err)) != 0)
      goto fail;
    if (reply->body_case != ARCHNET__ENVELOPE__BODY_TASK_INFO) {
      snprintf(err, sizeof err, "unexpected reply to SubmitTask");
      goto fail;
    }
    task_id = reply->task_info->task_id;
    if ((rc = save_task(s.data, parts, task_id, err, sizeof err)) != 0)
      goto fail;
    printf("task %llu created: bounty %lld credits in escrow, min accuracy %.3f\n",
           (unsigned long long)task_id, (long long)s.bounty, s.min_accuracy);
  } else {
    printf("task %llu: resuming its upload\n", (unsigned long long)task_id);
  }
  for (int i = 0; i < 4; i++) {
    an_progress_t prog;
    an_progress_init(&prog, parts[i].d.size, "B", s.progress);
    rc = an_transfer_upload(client, task_id, parts[i].path, &parts[i].d, on_progress, &prog, err,
                            sizeof err);
    an_progress_done(&prog);
    if (rc)
      goto fail;
    fprintf(stderr, "archnet-publisher submit: %s.npy uploaded (%llu bytes, sha256 %.12s...)\n",
            parts[i].name, (unsigned long long)parts[i].d.size, parts[i].d.sha256);
  }
  Archnet__TaskQuery q = ARCHNET__TASK_QUERY__INIT;
  q.task_id = task_id;
  memset(&req, 0, sizeof req);
  archnet__envelope__init(&req);
  req.body_case = ARCHNET__ENVELOPE__BODY_TASK_STATUS;
  req.task_status = &q;
  an_arena_reset(&arena);
  if ((rc = an_client_call(client, &req, &arena, &reply, err, sizeof err)) != 0)
    goto fail;
  printf("task %llu: %llu bytes uploaded, state %s\n", (unsigned long long)task_id,
         (unsigned long long)total,
         reply->body_case == ARCHNET__ENVELOPE__BODY_TASK_INFO
             ? an_publisher_task_state_name(reply->task_info->state)
             : "?");
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "archnet-publisher submit: %s\n", err);
  status = AN_EXIT_FAIL;
done:
  for (int i = 0; i < 4; i++)
    an_blob_digests_free(&parts[i].d);
  an_client_close(client);
  an_arena_destroy(&arena);
  an_config_free(&submit_spec, &s);
  return status;
}
