/* `archnet-worker run`: the volunteer's daemon. It connects with its
 * credentials, long-polls the broker for a lease, downloads the training
 * set into a cache keyed by SHA-256 (resumable, verified), trains with the
 * built-in trainer or the configured command while heartbeating, uploads
 * the ONNX model, submits it, and goes back for more. Connection losses
 * are retried with exponential backoff and jitter; SIGINT/SIGTERM abandon
 * the current attempt (the broker re-queues it at the lease's deadline) and
 * exit. `archnet-worker status` shows what the daemon is doing. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/cli.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/net/transfer.h"
#include "common/nn/engine.h"
#include "common/small_file.h"
#include "worker/commands.h"
#include "worker/receipts.h"
#include "worker/trainer.h"

typedef struct run_settings {
  char *credentials, *cache, *trainer, *trainer_cmd, *preset, *optimizer, *schedule, *precision,
      *normalize;
  int64_t epochs, batch, seed, wait, max_tasks, verdict_wait, augment_shift;
  double lr;
  bool exit_when_idle;
} run_settings_t;

#define OPT(f) offsetof(run_settings_t, f)

static const an_option_t run_options[] = {
    {"credentials", AN_OPT_STR, OPT(credentials), "worker.credentials", 0, 0, "FILE",
     "from 'archnet-worker enroll'"},
    {"cache", AN_OPT_STR, OPT(cache), "worker-cache", 0, 0, "DIR",
     "downloaded training sets (by SHA-256), models, and the status file"},
    {"trainer", AN_OPT_STR, OPT(trainer), "builtin", 0, 0, "builtin|command",
     "train with common/nn, or run --trainer-cmd"},
    {"trainer-cmd", AN_OPT_STR, OPT(trainer_cmd), NULL, 0, 0, "CMD",
     "a shell command given X.npy, Y.npy and OUT.onnx as $1 $2 $3 (and ARCHNET_X,\n"
     "ARCHNET_Y, ARCHNET_OUT, ARCHNET_CLASSES, ARCHNET_INPUT_SHAPE); it must write OUT"},
    {"preset", AN_OPT_STR, OPT(preset), "cnn-small", 0, 0, "NAME",
     "built-in trainer's model: cnn-small, cnn-small-bn or resnet18"},
    {"epochs", AN_OPT_INT, OPT(epochs), "3", 1, 10000, "N", "built-in trainer: epochs"},
    {"batch", AN_OPT_INT, OPT(batch), "64", 1, 65536, "N", "built-in trainer: batch size"},
    {"lr", AN_OPT_DOUBLE, OPT(lr), "1e-3", 1e-9, 10, "X", "built-in trainer: learning rate"},
    {"optimizer", AN_OPT_STR, OPT(optimizer), "adam", 0, 0, "adam|sgd",
     "built-in trainer: Adam, or SGD with momentum 0.9"},
    {"augment-shift", AN_OPT_INT, OPT(augment_shift), "0", 0, 16, "N",
     "built-in trainer: shift each sample by up to N pixels at random (0 = off)"},
    {"schedule", AN_OPT_STR, OPT(schedule), "constant", 0, 0, "constant|cosine",
     "built-in trainer: learning rate constant, or cosine-annealed to 0 at the last step"},
    {"normalize", AN_OPT_STR, OPT(normalize), "none", 0, 0, "none|channel|image",
     "built-in trainer: standardise the inputs with the training set's statistics,\n"
     "subtracting each channel's mean (channel) or the mean image (image) and dividing\n"
     "by each channel's std; the exported model still takes the codes as stored"},
    {"precision", AN_OPT_STR, OPT(precision), "auto", 0, 0, "auto|f32|bf16",
     "built-in trainer: linear layers' products in bfloat16 (auto: when the CPU is fast at it)"},
    {"seed", AN_OPT_INT, OPT(seed), "1", 0, INT64_MAX, "N", "built-in trainer: seed"},
    {"wait", AN_OPT_INT, OPT(wait), "30", 1, 3600, "S",
     "each lease request waits this long for work"},
    {"max-tasks", AN_OPT_INT, OPT(max_tasks), "0", 0, INT32_MAX, "N",
     "exit after this many tasks (0 = run until stopped)"},
    {"exit-when-idle", AN_OPT_BOOL, OPT(exit_when_idle), "false", 0, 0, NULL,
     "exit when a lease request finds no work (scripts, the demo)"},
    {"verdict-wait", AN_OPT_INT, OPT(verdict_wait), "120", 0, 86400, "S",
     "after submitting, wait this long for the broker's verdict to log it"},
};

static const an_command_spec_t run_spec = {
    .program = "archnet-worker",
    .command = "run",
    .summary = "Run the worker: lease tasks from the broker, train a classifier on their\n"
               "encoded data, return the ONNX model, and repeat. Ctrl-C abandons the\n"
               "current task and exits.",
    .section = "worker",
    .options = run_options,
    .n_options = sizeof run_options / sizeof run_options[0],
};

/* Set by the signal handler, read between steps. */
static volatile sig_atomic_t an_worker_stop;
static void an_worker_on_signal(int sig) { an_worker_stop = sig; }

typedef struct worker {
  const run_settings_t *s;
  an_credentials_t cred;
  const char *software;
  an_client_t *client;
  an_arena_t arena;
  uint64_t task_id;
  uint32_t lease_seconds;
  double last_beat, progress;
  int cancelled;
  char err[4096];
} worker_t;

static double an_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
  char when[32];
  time_t now = time(NULL);
  va_list ap;
  strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
  fprintf(stderr, "%s archnet-worker: ", when);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

/* The status file `archnet-worker status` reads. */
static void write_status(worker_t *w, const char *state) {
  char path[4200], err[256];
  json_t *j = json_pack("{s:s, s:I, s:f, s:I}", "state", state, "task",
                        (json_int_t)w->task_id, "progress", w->progress, "updated",
                        (json_int_t)time(NULL));
  snprintf(path, sizeof path, "%s/status.json", w->s->cache);
  if (j)
    an_json_write_file(path, j, 0644, err, sizeof err);
  json_decref(j);
}

static int heartbeat(worker_t *w) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__Heartbeat hb = ARCHNET__HEARTBEAT__INIT;
  hb.task_id = w->task_id;
  hb.progress = w->progress;
  req.body_case = ARCHNET__ENVELOPE__BODY_HEARTBEAT;
  req.heartbeat = &hb;
  an_arena_reset(&w->arena);
  int rc = an_client_call(w->client, &req, &w->arena, &reply, w->err, sizeof w->err);
  if (rc)
    return rc;
  if (reply->body_case == ARCHNET__ENVELOPE__BODY_HEARTBEAT_OK && reply->heartbeat_ok->cancelled)
    w->cancelled = 1;
  return 0;
}

static int reconnect(worker_t *w);
static int transient(int rc);

/* From the trainer: keep the lease alive; stop on cancel or signal. */
static int on_progress(double fraction, void *arg) {
  worker_t *w = arg;
  w->progress = fraction;
  double every = w->lease_seconds > 3 ? w->lease_seconds / 3.0 : 1.0;
  if (an_mono() - w->last_beat >= every) {
    w->last_beat = an_mono();
    int rc = heartbeat(w);
    if (transient(rc) && reconnect(w) == 0)
      rc = heartbeat(w);
    if (rc != 0)
      logf_("heartbeat for task %llu failed: %s", (unsigned long long)w->task_id, w->err);
    else
      fprintf(stderr, "\rtask %llu: %3.0f%% trained ", (unsigned long long)w->task_id,
              100 * fraction);
    write_status(w, "training");
  }
  return w->cancelled || an_worker_stop;
}

/* After a lost connection in the middle of a task: connect again, with
 * backoff, for as long as the lease may still be alive. 0 once connected. */
static int reconnect(worker_t *w) {
  double backoff = 1, give_up = an_mono() + (w->lease_seconds ? w->lease_seconds : 60);
  an_client_close(w->client);
  w->client = NULL;
  while (!an_worker_stop && an_mono() < give_up) {
    char err[1024];
    if (an_credentials_connect(&w->cred, w->software, 30000, &w->client, err, sizeof err) == 0) {
      logf_("task %llu: reconnected to the broker", (unsigned long long)w->task_id);
      return 0;
    }
    double pause = backoff * (0.5 + (double)rand() / RAND_MAX);
    logf_("task %llu: broker unreachable (%s); retrying in %.0f s",
          (unsigned long long)w->task_id, err, pause);
    for (double t = 0; t < pause && !an_worker_stop; t += 0.2)
      usleep(200 * 1000);
    backoff = backoff < 16 ? backoff * 2 : 16;
  }
  return UV_ETIMEDOUT;
}

/* Whether a failure is the connection's (retry) rather than the broker's
 * answer or the data's (do not). */
static int transient(int rc) {
  return rc != 0 && rc != AN_EREMOTE && rc != AN_EFORMAT && rc != AN_ENOSPACE && rc != UV_ENOMEM;
}

/* Training-set blobs live in the cache under their digest. */
static int fetch_blob(worker_t *w, const Archnet__BlobRef *ref, char *path, size_t len) {
  struct statvfs vfs;
  struct stat st;
  snprintf(path, len, "%s/%s.npy", w->s->cache, ref->sha256);
  if (stat(path, &st) == 0 && (uint64_t)st.st_size == ref->size)
    return 0; /* verified when it was downloaded */
  if (statvfs(w->s->cache, &vfs) == 0 &&
      (uint64_t)vfs.f_bavail * vfs.f_frsize < ref->size + (ref->size >> 3)) {
    snprintf(w->err, sizeof w->err, "not enough free disk in %s for %llu bytes", w->s->cache,
             (unsigned long long)ref->size);
    return AN_ENOSPACE;
  }
  int rc;
  /* A dropped connection (or a broker restart) resumes from the .part. */
  while (transient(rc = an_transfer_download(w->client, w->task_id, ref->sha256, path, NULL,
                                             NULL, w->err, sizeof w->err))) {
    logf_("task %llu: download interrupted: %s", (unsigned long long)w->task_id, w->err);
    if (reconnect(w) != 0)
      break;
  }
  return rc;
}

/* After submitting: wait for and log the broker's verdict. */
static void log_verdict(worker_t *w) {
  double until = an_mono() + (double)w->s->verdict_wait;
  while (an_mono() < until && !an_worker_stop) {
    Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
    Archnet__TaskQuery q = ARCHNET__TASK_QUERY__INIT;
    q.task_id = w->task_id;
    req.body_case = ARCHNET__ENVELOPE__BODY_TASK_STATUS;
    req.task_status = &q;
    an_arena_reset(&w->arena);
    if (an_client_call(w->client, &req, &w->arena, &reply, w->err, sizeof w->err) != 0 ||
        reply->body_case != ARCHNET__ENVELOPE__BODY_TASK_INFO)
      return;
    Archnet__TaskInfo *t = reply->task_info;
    if (t->state == ARCHNET__TASK_STATE__TASK_ACCEPTED ||
        t->state == ARCHNET__TASK_STATE__TASK_DELIVERED) {
      logf_("task %llu: model accepted (validation accuracy about %.0f%%); bounty paid",
            (unsigned long long)w->task_id, 100 * t->accuracy);
      char kept[4600];
      if (an_worker_keep_receipt(w->client, &w->arena, w->task_id, w->cred.node_id, w->cred.pin,
                                 w->s->cache, kept, sizeof kept, w->err, sizeof w->err) == 0)
        logf_("task %llu: signed receipt kept in %s", (unsigned long long)w->task_id, kept);
      else
        logf_("task %llu: no receipt kept: %s", (unsigned long long)w->task_id, w->err);
      return;
    }
    if (t->state != ARCHNET__TASK_STATE__TASK_VALIDATING) {
      logf_("task %llu: model rejected: %s", (unsigned long long)w->task_id,
            t->reason ? t->reason : "");
      return;
    }
    sleep(1);
  }
}

/* Uploads the trained model (hashed into d) and submits it for the lease. */
static int submit_model(worker_t *w, const Archnet__TaskInfo *t, const char *model,
                        const an_blob_digests_t *d) {
  int rc;
  while (transient(rc = an_transfer_upload(w->client, t->task_id, model, d, NULL, NULL, w->err,
                                           sizeof w->err))) {
    logf_("task %llu: upload interrupted: %s", (unsigned long long)t->task_id, w->err);
    if (reconnect(w) != 0)
      break;
  }
  if (rc)
    return rc;
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__SubmitModel sm = ARCHNET__SUBMIT_MODEL__INIT;
  Archnet__BlobRef ref = ARCHNET__BLOB_REF__INIT;
  ref.sha256 = (char *)d->sha256;
  ref.size = d->size;
  sm.task_id = t->task_id;
  sm.model = &ref;
  req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_MODEL;
  req.submit_model = &sm;
  an_arena_reset(&w->arena);
  if ((rc = an_client_call(w->client, &req, &w->arena, &reply, w->err, sizeof w->err)) != 0)
    return rc;
  logf_("task %llu: model submitted (%llu bytes); the broker is scoring it",
        (unsigned long long)t->task_id, (unsigned long long)d->size);
  write_status(w, "validating");
  log_verdict(w);
  return 0;
}

/* One leased task, start to finish. */
static int work_on(worker_t *w, const Archnet__TaskInfo *t) {
  char x[4200], y[4200], model[4200];
  int rc;
  w->task_id = t->task_id;
  w->lease_seconds = t->lease_seconds;
  w->cancelled = 0;
  w->progress = 0;
  w->last_beat = an_mono();
  logf_("task %llu leased: %ux%ux%u codes, %u classes, lease %u s",
        (unsigned long long)t->task_id, t->input_c, t->input_h, t->input_w, t->classes,
        t->lease_seconds);
  if (!t->train_x || !t->train_y) {
    snprintf(w->err, sizeof w->err, "the lease names no training set");
    return AN_EPROTO;
  }
  write_status(w, "downloading");
  if ((rc = fetch_blob(w, t->train_x, x, sizeof x)) != 0 ||
      (rc = fetch_blob(w, t->train_y, y, sizeof y)) != 0)
    return rc;
  snprintf(model, sizeof model, "%s/task-%llu.onnx", w->s->cache,
           (unsigned long long)t->task_id);
  an_train_job_t job = {
      .x_path = x, .y_path = y, .c = t->input_c, .h = t->input_h, .w = t->input_w,
      .classes = t->classes, .out_path = model, .preset = w->s->preset,
      .epochs = (int)w->s->epochs, .batch = (int)w->s->batch, .lr = w->s->lr,
      .seed = (uint64_t)w->s->seed,
      .bf16 = strcmp(w->s->precision, "auto") == 0 ? an_engine_has_fast_bf16()
                                                   : strcmp(w->s->precision, "bf16") == 0,
      .sgd = strcmp(w->s->optimizer, "sgd") == 0, .shift = (int)w->s->augment_shift,
      .normalize = strcmp(w->s->normalize, "image") == 0     ? AN_TRAIN_NORM_IMAGE
                   : strcmp(w->s->normalize, "channel") == 0 ? AN_TRAIN_NORM_CHANNEL
                                                             : AN_TRAIN_NORM_NONE,
      .cosine = strcmp(w->s->schedule, "cosine") == 0,
      .command = w->s->trainer_cmd, .progress = on_progress, .arg = w};
  write_status(w, "training");
  rc = strcmp(w->s->trainer, "command") == 0 ? an_trainer_exec(&job, w->err, sizeof w->err)
                                             : an_trainer_builtin(&job, w->err, sizeof w->err);
  fputc('\n', stderr);
  if (rc == 1) {
    logf_("task %llu: %s; training stopped", (unsigned long long)t->task_id,
          w->cancelled ? "cancelled by its publisher" : "stopping");
    return 0;
  }
  if (rc)
    return rc;
  write_status(w, "uploading");
  an_blob_digests_t d;
  if ((rc = an_blob_digests_of(model, 0, &d, w->err, sizeof w->err)) != 0)
    return rc;
  rc = submit_model(w, t, model, &d);
  an_blob_digests_free(&d);
  return rc;
}

static void get_caps(const char *cache, Archnet__Capabilities *caps) {
  struct statvfs vfs;
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  caps->cores = (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
  caps->memory_bytes = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
  if (statvfs(cache, &vfs) == 0)
    caps->free_disk_bytes = (uint64_t)vfs.f_bavail * vfs.f_frsize;
}

int an_worker_run(int argc, char **argv) {
  run_settings_t s = {0};
  worker_t w = {.s = &s};
  int first, status, rc;
  struct sigaction sa = {.sa_handler = an_worker_on_signal};
  char software[64];
  double backoff = 1;
  int64_t tasks_done = 0;

  an_arena_init(&w.arena, 0, 0);
  if ((status = an_cli_parse(&run_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (argc != first) {
    fprintf(stderr, "archnet-worker run: unexpected argument '%s'\n", argv[first]);
    goto done;
  }
  if (strcmp(s.optimizer, "adam") != 0 && strcmp(s.optimizer, "sgd") != 0) {
    fprintf(stderr, "archnet-worker run: --optimizer is adam or sgd\n");
    goto done;
  }
  if (strcmp(s.schedule, "constant") != 0 && strcmp(s.schedule, "cosine") != 0) {
    fprintf(stderr, "archnet-worker run: --schedule is constant or cosine\n");
    goto done;
  }
  if (strcmp(s.normalize, "none") != 0 && strcmp(s.normalize, "channel") != 0 &&
      strcmp(s.normalize, "image") != 0) {
    fprintf(stderr, "archnet-worker run: --normalize is none, channel or image\n");
    goto done;
  }
  if (strcmp(s.precision, "auto") != 0 && strcmp(s.precision, "f32") != 0 &&
      strcmp(s.precision, "bf16") != 0) {
    fprintf(stderr, "archnet-worker run: --precision is auto, f32 or bf16\n");
    goto done;
  }
  if (strcmp(s.trainer, "builtin") != 0 &&
      (strcmp(s.trainer, "command") != 0 || !s.trainer_cmd)) {
    fprintf(stderr, "archnet-worker run: --trainer is builtin, or command with --trainer-cmd\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if ((rc = an_credentials_read(s.credentials, &w.cred, w.err, sizeof w.err)) != 0) {
    fprintf(stderr, "archnet-worker run: %s\n", w.err);
    goto done;
  }
  if (mkdir(s.cache, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "archnet-worker run: cannot create %s: %s\n", s.cache, strerror(errno));
    goto done;
  }
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  snprintf(software, sizeof software, "archnet-worker/%s", AN_VERSION);
  w.software = software;
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  logf_("node %llu, broker %s, trainer %s", (unsigned long long)w.cred.node_id, w.cred.broker,
        s.trainer);
  write_status(&w, "starting");
  while (!an_worker_stop && (!s.max_tasks || tasks_done < s.max_tasks)) {
    if (!w.client) {
      if ((rc = an_credentials_connect(&w.cred, software, (uint64_t)(s.wait + 30) * 1000,
                                       &w.client, w.err, sizeof w.err)) != 0) {
        /* Exponential backoff with jitter, so a fleet does not reconnect
         * in lockstep after a broker restart. */
        double pause = backoff * (0.5 + (double)rand() / RAND_MAX);
        logf_("cannot reach the broker (%s); retrying in %.0f s", w.err, pause);
        if (rc == AN_EAUTH || rc == AN_EPIN)
          goto done; /* retrying cannot fix credentials or a pin */
        for (double t = 0; t < pause && !an_worker_stop; t += 0.2)
          usleep(200 * 1000);
        backoff = backoff < 60 ? backoff * 2 : 60;
        continue;
      }
      backoff = 1;
      write_status(&w, "idle");
    }
    Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
    Archnet__LeaseRequest lr = ARCHNET__LEASE_REQUEST__INIT;
    Archnet__Capabilities caps = ARCHNET__CAPABILITIES__INIT;
    get_caps(s.cache, &caps);
    lr.caps = &caps;
    lr.wait_seconds = (uint32_t)s.wait;
    req.body_case = ARCHNET__ENVELOPE__BODY_LEASE_REQUEST;
    req.lease_request = &lr;
    an_arena_reset(&w.arena);
    if ((rc = an_client_call(w.client, &req, &w.arena, &reply, w.err, sizeof w.err)) != 0) {
      logf_("lease request failed: %s", w.err);
      an_client_close(w.client);
      w.client = NULL;
      if (rc == AN_EREMOTE)
        sleep(1);
      continue;
    }
    if (reply->body_case != ARCHNET__ENVELOPE__BODY_LEASE_GRANTED || !reply->lease_granted->task) {
      if (s.exit_when_idle) {
        logf_("no work; exiting (--exit-when-idle)");
        break;
      }
      continue;
    }
    /* The reply lives in the arena, which the task's calls reuse: copy. */
    Archnet__TaskInfo *t = reply->lease_granted->task;
    uint8_t *packed = malloc(archnet__task_info__get_packed_size(t));
    Archnet__TaskInfo *copy = NULL;
    if (packed) {
      size_t n = archnet__task_info__pack(t, packed);
      copy = archnet__task_info__unpack(NULL, n, packed);
    }
    free(packed);
    if (!copy) {
      logf_("out of memory");
      goto done;
    }
    rc = work_on(&w, copy);
    archnet__task_info__free_unpacked(copy, NULL);
    tasks_done++;
    if (rc) {
      logf_("task %llu abandoned: %s", (unsigned long long)w.task_id, w.err);
      /* The connection may be the problem: start afresh. */
      an_client_close(w.client);
      w.client = NULL;
    }
    w.task_id = 0;
    write_status(&w, "idle");
  }
  if (an_worker_stop)
    logf_("stopped by signal %d", (int)an_worker_stop);
  write_status(&w, "stopped");
  status = AN_EXIT_OK;
done:
  an_client_close(w.client);
  an_arena_destroy(&w.arena);
  an_config_free(&run_spec, &s);
  return status;
}

/* `archnet-worker status`: the daemon's status file. */
int an_worker_status(int argc, char **argv) {
  static const an_option_t opts[] = {
      {"cache", AN_OPT_STR, 0, "worker-cache", 0, 0, "DIR", "the daemon's --cache"},
  };
  an_command_spec_t spec = {.program = "archnet-worker", .command = "status",
                            .summary = "Show what the worker daemon is doing: its state, the "
                                       "leased task and progress.",
                            .options = opts, .n_options = 1};
  struct { char *cache; } s = {0};
  char path[4200];
  int first, status;
  if ((status = an_cli_parse(&spec, &s, argc, argv, &first)) >= 0)
    goto done;
  snprintf(path, sizeof path, "%s/status.json", s.cache);
  json_error_t je;
  json_t *j = json_load_file(path, 0, &je);
  if (!j) {
    fprintf(stderr, "archnet-worker status: %s: %s (is the daemon running with this --cache?)\n",
            path, je.text);
    status = AN_EXIT_FAIL;
    goto done;
  }
  json_int_t task = json_integer_value(json_object_get(j, "task"));
  printf("state: %s\n", json_string_value(json_object_get(j, "state")));
  if (task)
    printf("task: %lld, progress %.0f%%\n", (long long)task,
           100 * json_number_value(json_object_get(j, "progress")));
  printf("updated: %lld s ago\n",
         (long long)(time(NULL) - json_integer_value(json_object_get(j, "updated"))));
  json_decref(j);
  status = AN_EXIT_OK;
done:
  an_config_free(&spec, &s);
  return status;
}
