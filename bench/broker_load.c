/* A load generator for archnet-broker, run by bench/broker.sh against a
 * broker on loopback: a separate process, bounded in time and in
 * connections, that talks to the broker the way publishers and workers do.
 *
 *   broker_load cycles   tiny tasks, then W worker connections that each
 *                        loop LeaseRequest -> Heartbeat [-> model upload ->
 *                        SubmitModel]: cycles per second, lease latency
 *   broker_load idle     N TLS sessions (Hello done) on one libuv loop, idle
 *                        and then long-polling: the broker's RSS per session
 *   broker_load upload   one large blob at several chunk sizes: bytes/s
 *   broker_load disk     fdatasync latency of a directory's disk, the floor
 *                        under every durable commit
 *
 * Every command prints rows of a Markdown table: | what | value | detail |.
 *
 * Publishers and workers use the real client library (an_client_t: one
 * private loop per client, so one thread per worker). The idle sessions are
 * hand-made frames on an_conn_t, all on one loop: 10,000 clients with a loop
 * and a thread each would measure this program instead of the broker. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/net/addr.h"
#include "common/net/client.h"
#include "common/net/conn.h"
#include "common/net/tls.h"
#include "common/net/transfer.h"
#include "common/net/wire.h"
#include "common/nn/model.h"
#include "common/nn/onnx/export.h"
#include "common/nn/spec.h"

#define SOFTWARE "broker_load/" AN_VERSION
#define CALL_TIMEOUT_MS 60000
/* Tasks the bench submits but no worker here may lease (it asks for more
 * memory than any LeaseRequest of ours offers), so that the phases that
 * queue them (upload, the wake-up probe) never feed the others. */
#define UNRUNNABLE_MEMORY ((uint64_t)1 << 50)

static double now_s(void) { return (double)uv_hrtime() / 1e9; }

/* The value at quantile q (0..1] of n sorted values. */
static uint64_t quantile(const uint64_t *sorted, size_t n, double q) {
  size_t i = (size_t)ceil(q * (double)n);
  return n == 0 ? 0 : sorted[i == 0 ? 0 : (i > n ? n - 1 : i - 1)];
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Resident set size of a process in KiB (pid 0: this one), from
 * /proc/PID/status; 0 if it cannot be read. */
static uint64_t rss_kib(long pid) {
  char path[64], line[256];
  unsigned long long kib = 0;
  FILE *f;
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
  else
    snprintf(path, sizeof path, "/proc/self/status");
  if (!(f = fopen(path, "r")))
    return 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %llu kB", &kib) == 1)
      break;
  fclose(f);
  return kib;
}

/* CPU time of a process (pid 0: this one, all threads), and of its
 * children it has waited for, in seconds, from /proc/PID/stat. The broker's
 * children are its scoring sandboxes. */
typedef struct cpu_times {
  double own, children;
} cpu_times_t;

static cpu_times_t proc_cpu(long pid) {
  cpu_times_t t = {0, 0};
  char path[64], line[1024];
  unsigned long long ut = 0, st = 0;
  long long cut = 0, cst = 0;
  long hz = sysconf(_SC_CLK_TCK);
  FILE *f;
  if (pid > 0)
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  else
    snprintf(path, sizeof path, "/proc/self/stat");
  if (!(f = fopen(path, "r")))
    return t;
  /* The command name is in parentheses and may hold spaces: parse after
   * the last ')'. Fields 14-17: utime stime cutime cstime. */
  char *close = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
  if (close && hz > 0 &&
      sscanf(close + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld", &ut,
             &st, &cut, &cst) == 4) {
    t.own = (double)(ut + st) / (double)hz;
    t.children = (double)(cut + cst) / (double)hz;
  }
  fclose(f);
  return t;
}

/* ---- the tiny workload ---- */

typedef struct blob_file {
  char path[1024];
  an_blob_digests_t d; /* owned: address, size, per-chunk digests */
} blob_file_t;

static void blob_files_free(blob_file_t *b, size_t n) {
  for (size_t i = 0; b && i < n; i++)
    an_blob_digests_free(&b[i].d);
}

/* What every tiny task names: four small datasets (train X/Y, validation
 * X/Y). Blobs are content-addressed, so only the first task's uploads move
 * bytes; every later BeginBlob finds the blob complete and answers at once. */
typedef struct tiny_work {
  blob_file_t data[4];
} tiny_work_t;

#define TINY_C 1
#define TINY_H 4
#define TINY_W 4
#define TINY_CLASSES 2
#define TINY_ROWS 16

static int write_tiny_npys(const char *dir, tiny_work_t *tw, char *err, size_t errlen) {
  static const char *const names[4] = {"train_x.npy", "train_y.npy", "val_x.npy", "val_y.npy"};
  float x[TINY_ROWS * TINY_C * TINY_H * TINY_W];
  uint8_t y[TINY_ROWS];
  int64_t xshape[4] = {TINY_ROWS, TINY_C, TINY_H, TINY_W}, yshape[1] = {TINY_ROWS};
  int rc = 0;
  for (int k = 0; k < 4 && rc == 0; k++) {
    /* Train and validation differ (k / 2), so there are four blobs. */
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
      x[i] = (float)((i * 37 + (size_t)k * 11) % 101) / 101.0f;
    for (size_t i = 0; i < TINY_ROWS; i++)
      y[i] = (uint8_t)((i + (size_t)k / 2) % TINY_CLASSES);
    snprintf(tw->data[k].path, sizeof tw->data[k].path, "%s/%s", dir, names[k]);
    rc = k % 2 == 0 ? an_npy_write(tw->data[k].path, AN_NPY_F32, 4, xshape, x, err, errlen)
                    : an_npy_write(tw->data[k].path, AN_NPY_U8, 1, yshape, y, err, errlen);
  }
  return rc;
}

/* Writes `n` one-layer models for the tiny shape into `dir`, each a
 * different blob (the producer name carries its number), as n workers'
 * models would be: two workers sending the same new blob at once would
 * race for one upload, which real models never do. *out is freed by the
 * caller. */
static int write_tiny_models(const char *dir, size_t n, blob_file_t **out, char *err,
                             size_t errlen) {
  static const char spec[] = "input 1 4 4\nlinear 2\n";
  an_onnx_export_opts_t opts = {.first = 0, .last = -1};
  blob_file_t *models = calloc(n, sizeof *models);
  an_model_t *m = NULL;
  char producer[64];
  int rc = 0;
  if (!models) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  if ((rc = an_model_parse(spec, &m, err, errlen)) != 0 ||
      (rc = an_model_finalize(m, AN_INIT_UNIFORM, 1, err, errlen)) != 0)
    goto done;
  opts.producer = producer;
  for (size_t i = 0; i < n && rc == 0; i++) {
    snprintf(producer, sizeof producer, "broker_load model %zu", i);
    snprintf(models[i].path, sizeof models[i].path, "%s/model-%zu.onnx", dir, i);
    if ((rc = an_onnx_export(m, &opts, models[i].path, err, errlen)) == 0)
      rc = an_blob_digests_of(models[i].path, 0, &models[i].d, err, errlen);
  }
done:
  an_model_free(m);
  if (rc != 0) {
    blob_files_free(models, n);
    free(models);
    models = NULL;
  }
  *out = models;
  return rc;
}

/* Writes the tiny datasets into `dir` (made if missing) and fills in their
 * digests. The content is fixed, so reruns name the same blobs. */
static int tiny_work_make(const char *dir, tiny_work_t *tw, char *err, size_t errlen) {
  int rc = 0;
  memset(tw, 0, sizeof *tw);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    rc = -errno;
    snprintf(err, errlen, "%s: %s", dir, strerror(errno));
    goto done;
  }
  if ((rc = write_tiny_npys(dir, tw, err, errlen)) != 0)
    goto done;
  for (int k = 0; k < 4 && rc == 0; k++)
    rc = an_blob_digests_of(tw->data[k].path, 0, &tw->data[k].d, err, errlen);
done:
  return rc;
}

/* ---- requests over the blocking client ---- */

/* One request and its reply, unpacked into `arena` (reset first). With
 * `want` other than BODY__NOT_SET, any other reply is an error. */
static int rpc(an_client_t *c, Archnet__Envelope *req, an_arena_t *arena,
               Archnet__Envelope__BodyCase want, Archnet__Envelope **reply, char *err,
               size_t errlen) {
  int rc;
  an_arena_reset(arena);
  rc = an_client_call(c, req, arena, reply, err, errlen);
  if (rc == 0 && want != ARCHNET__ENVELOPE__BODY__NOT_SET && (*reply)->body_case != want) {
    snprintf(err, errlen, "the broker answered '%s' with '%s'", an_wire_body_name(req),
             an_wire_body_name(*reply));
    rc = AN_EPROTO;
  }
  return rc;
}

static int connect_node(const char *cred_path, an_client_t **out, char *err, size_t errlen) {
  an_credentials_t cred;
  int rc = an_credentials_read(cred_path, &cred, err, errlen);
  if (rc == 0)
    rc = an_credentials_connect(&cred, SOFTWARE, CALL_TIMEOUT_MS, out, err, errlen);
  return rc;
}

static void blob_ref(const blob_file_t *b, Archnet__BlobRef *ref) {
  archnet__blob_ref__init(ref);
  ref->sha256 = (char *)b->d.sha256;
  ref->size = b->d.size;
}

/* SubmitTask for the tiny shape with the given datasets (train X may be
 * the big blob of the upload test); the broker escrows a bounty of 1. */
static int submit_task(an_client_t *pub, an_arena_t *arena, const blob_file_t *const data[4],
                       uint32_t lease_seconds, uint64_t min_memory, uint64_t *task_id,
                       char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  Archnet__SubmitTask st = ARCHNET__SUBMIT_TASK__INIT;
  Archnet__BlobRef refs[4];
  int rc;
  for (int k = 0; k < 4; k++)
    blob_ref(data[k], &refs[k]);
  st.bounty = 1;
  st.min_accuracy = 0; /* any well-formed model is accepted: scoring runs, then pays */
  st.max_attempts = 3;
  st.lease_seconds = lease_seconds;
  st.train_x = &refs[0];
  st.train_y = &refs[1];
  st.val_x = &refs[2];
  st.val_y = &refs[3];
  st.input_c = TINY_C;
  st.input_h = TINY_H;
  st.input_w = TINY_W;
  st.classes = TINY_CLASSES;
  st.min_memory_bytes = min_memory;
  req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_TASK;
  req.submit_task = &st;
  if ((rc = rpc(pub, &req, arena, ARCHNET__ENVELOPE__BODY_TASK_INFO, &reply, err, errlen)) == 0)
    *task_id = reply->task_info->task_id;
  return rc;
}

/* A tiny task, submitted and with its four datasets in place, as
 * `archnet-publisher submit` does it: SubmitTask, then BeginBlob (and the
 * chunks, the first time only) for each dataset. The last one queues it. */
static int submit_tiny(an_client_t *pub, an_arena_t *arena, const tiny_work_t *tw,
                       uint32_t lease_seconds, uint64_t min_memory, char *err, size_t errlen) {
  const blob_file_t *data[4] = {&tw->data[0], &tw->data[1], &tw->data[2], &tw->data[3]};
  uint64_t task = 0;
  int rc = submit_task(pub, arena, data, lease_seconds, min_memory, &task, err, errlen);
  for (int k = 0; k < 4 && rc == 0; k++)
    rc = an_transfer_upload(pub, task, data[k]->path, &data[k]->d, NULL, NULL, err, errlen);
  return rc;
}

/* LeaseRequest without waiting: *task is the leased task, or 0 when the
 * queue has nothing for this worker. */
static int lease(an_client_t *c, an_arena_t *arena, uint64_t *task, char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  Archnet__LeaseRequest lr = ARCHNET__LEASE_REQUEST__INIT;
  Archnet__Capabilities caps = ARCHNET__CAPABILITIES__INIT;
  int rc;
  caps.cores = 2;
  caps.memory_bytes = (uint64_t)8 << 30;
  lr.caps = &caps;
  lr.wait_seconds = 0;
  req.body_case = ARCHNET__ENVELOPE__BODY_LEASE_REQUEST;
  req.lease_request = &lr;
  *task = 0;
  rc = rpc(c, &req, arena, ARCHNET__ENVELOPE__BODY__NOT_SET, &reply, err, errlen);
  if (rc == 0 && reply->body_case == ARCHNET__ENVELOPE__BODY_LEASE_GRANTED &&
      reply->lease_granted->task)
    *task = reply->lease_granted->task->task_id;
  else if (rc == 0 && reply->body_case != ARCHNET__ENVELOPE__BODY_NO_LEASE) {
    snprintf(err, errlen, "the broker answered a lease request with '%s'",
             an_wire_body_name(reply));
    rc = AN_EPROTO;
  }
  return rc;
}

static int heartbeat(an_client_t *c, an_arena_t *arena, uint64_t task, char *err,
                     size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  Archnet__Heartbeat hb = ARCHNET__HEARTBEAT__INIT;
  hb.task_id = task;
  hb.progress = 0.5;
  req.body_case = ARCHNET__ENVELOPE__BODY_HEARTBEAT;
  req.heartbeat = &hb;
  return rpc(c, &req, arena, ARCHNET__ENVELOPE__BODY_HEARTBEAT_OK, &reply, err, errlen);
}

/* Uploads a model for the lease (BeginBlob, then its chunk) and submits
 * it, which starts the sandboxed scoring. */
static int submit_model(an_client_t *c, an_arena_t *arena, uint64_t task, const blob_file_t *m,
                        char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  Archnet__SubmitModel sm = ARCHNET__SUBMIT_MODEL__INIT;
  Archnet__BlobRef ref;
  int rc = an_transfer_upload(c, task, m->path, &m->d, NULL, NULL, err, errlen);
  if (rc == 0) {
    blob_ref(m, &ref);
    sm.task_id = task;
    sm.model = &ref;
    req.body_case = ARCHNET__ENVELOPE__BODY_SUBMIT_MODEL;
    req.submit_model = &sm;
    rc = rpc(c, &req, arena, ARCHNET__ENVELOPE__BODY_TASK_INFO, &reply, err, errlen);
  }
  return rc;
}

static int task_state(an_client_t *c, an_arena_t *arena, uint64_t task, int *state, char *err,
                      size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  Archnet__TaskQuery q = ARCHNET__TASK_QUERY__INIT;
  int rc;
  q.task_id = task;
  req.body_case = ARCHNET__ENVELOPE__BODY_TASK_STATUS;
  req.task_status = &q;
  if ((rc = rpc(c, &req, arena, ARCHNET__ENVELOPE__BODY_TASK_INFO, &reply, err, errlen)) == 0)
    *state = (int)reply->task_info->state;
  return rc;
}

/* ---- cycles: W workers on tiny tasks ---- */

typedef struct cycle_plan {
  const blob_file_t *models; /* full cycles: one per cycle, uploaded and submitted */
  size_t n_models;
  atomic_size_t next_model;
  double seconds;    /* each worker stops after this long or on an empty queue */
  size_t max_cycles; /* per worker: the size of its logs */
  /* Workers connect, post `ready`, and wait for `go`, so that the timed part
   * starts with every connection made. `cancelled` (set before `go`) sends
   * them home if not all could be started. */
  uv_sem_t ready, go;
  int cancelled;
} cycle_plan_t;

typedef struct cycle_worker {
  uv_thread_t thread;
  cycle_plan_t *plan;
  const char *cred_path;
  uint64_t *lease_ns; /* LeaseRequest -> LeaseGranted of each cycle */
  uint64_t *tasks;    /* the task of each cycle */
  size_t cycles;
  size_t uploads;
  double t_end;
  int rc;
  char err[512];
} cycle_worker_t;


static void cycle_worker_run(void *arg) {
  cycle_worker_t *w = arg;
  cycle_plan_t *p = w->plan;
  an_client_t *c = NULL;
  an_arena_t arena;
  double deadline;

  an_arena_init(&arena, 0, 0);
  w->rc = connect_node(w->cred_path, &c, w->err, sizeof w->err);
  uv_sem_post(&p->ready); /* even after a failure: the others must not wait for us */
  uv_sem_wait(&p->go);
  deadline = now_s() + p->seconds;
  while (w->rc == 0 && !p->cancelled && w->cycles < p->max_cycles && now_s() < deadline) {
    uint64_t task = 0, t0 = uv_hrtime();
    if ((w->rc = lease(c, &arena, &task, w->err, sizeof w->err)) != 0 || task == 0)
      break; /* an error, or the queue is empty */
    w->lease_ns[w->cycles] = uv_hrtime() - t0;
    w->tasks[w->cycles] = task;
    if ((w->rc = heartbeat(c, &arena, task, w->err, sizeof w->err)) != 0)
      break;
    if (p->models) {
      /* Past n_models (leftover tasks), a model is sent again: it is
       * complete by then, so BeginBlob answers at once. */
      size_t k = atomic_fetch_add(&p->next_model, 1) % p->n_models;
      if ((w->rc = submit_model(c, &arena, task, &p->models[k], w->err, sizeof w->err)) != 0)
        break;
      w->uploads++;
    }
    w->cycles++;
  }
  w->t_end = now_s();
  an_client_close(c);
  an_arena_destroy(&arena);
}

/* After full cycles: polls the tasks' states as their publisher until
 * none is still being scored (or `limit` seconds pass). *t_last is when the
 * last verdict was seen. */
static int await_verdicts(an_client_t *pub, an_arena_t *arena, uint64_t *tasks, size_t n,
                          double limit, size_t *accepted, double *t_last, char *err,
                          size_t errlen) {
  size_t pending = n;
  double deadline = now_s() + limit;
  int rc = 0;
  *accepted = 0;
  *t_last = now_s();
  /* Finished tasks are swapped out of [0, pending). */
  while (rc == 0 && pending > 0 && now_s() < deadline) {
    for (size_t i = 0; i < pending && rc == 0;) {
      int state = 0;
      if ((rc = task_state(pub, arena, tasks[i], &state, err, errlen)) != 0)
        break;
      if (state == ARCHNET__TASK_STATE__TASK_VALIDATING) {
        i++;
        continue;
      }
      *accepted += state == ARCHNET__TASK_STATE__TASK_ACCEPTED ||
                   state == ARCHNET__TASK_STATE__TASK_DELIVERED;
      *t_last = now_s();
      uint64_t t = tasks[i];
      tasks[i] = tasks[--pending];
      tasks[pending] = t;
    }
    if (pending > 0)
      uv_sleep(20);
  }
  if (rc == 0 && pending > 0) {
    snprintf(err, errlen, "%zu models still being scored after %.0f s", pending, limit);
    rc = UV_ETIMEDOUT;
  }
  return rc;
}

typedef struct cycles_settings {
  char *publisher;
  char *workers;
  char *work;
  char *label;
  int64_t tasks;
  double seconds;
  bool models;
  int64_t lease_seconds;
  double score_limit;
  int64_t broker_pid;
} cycles_settings_t;

#define CY(f) offsetof(cycles_settings_t, f)

static const an_option_t cycles_options[] = {
    {"publisher", AN_OPT_STR, CY(publisher), NULL, 0, 0, "FILE",
     "the publisher's credentials (from archnet-publisher enroll; with credits)"},
    {"workers", AN_OPT_STR, CY(workers), NULL, 0, 0, "FILE[,FILE...]",
     "one worker connection per credentials file"},
    {"work", AN_OPT_STR, CY(work), "broker-load-work", 0, 0, "DIR",
     "where the tiny datasets and models are written"},
    {"label", AN_OPT_STR, CY(label), "durable", 0, 0, "TEXT", "prefix of the table rows"},
    {"tasks", AN_OPT_INT, CY(tasks), "1000", 1, 1000000, "N", "tiny tasks to queue first"},
    {"seconds", AN_OPT_DOUBLE, CY(seconds), "10", 0.1, 3600, "S",
     "workers stop after this long, or earlier when the queue is empty"},
    {"models", AN_OPT_BOOL, CY(models), "false", 0, 0, NULL,
     "full cycles: each lease also uploads a model and submits it (sandboxed scoring)"},
    {"lease-seconds", AN_OPT_INT, CY(lease_seconds), "600", 5, 604800, "S",
     "the tasks' lease time (long, so that no lease expires during the run)"},
    {"score-limit", AN_OPT_DOUBLE, CY(score_limit), "180", 1, 3600, "S",
     "with --models: how long to wait for the last verdict"},
    {"broker-pid", AN_OPT_INT, CY(broker_pid), "0", 0, 4194304, "PID",
     "the broker's process id: adds its CPU time per cycle (0 = not known)"},
};

static const an_command_spec_t cycles_spec = {
    .program = "broker_load",
    .command = "cycles",
    .summary = "Queue --tasks tiny tasks as the publisher (timed), then run one worker\n"
               "connection per credentials file, each looping LeaseRequest -> Heartbeat\n"
               "(and with --models: model upload -> SubmitModel) until the queue is empty\n"
               "or --seconds pass. Prints cycles per second and lease latency.",
    .options = cycles_options,
    .n_options = sizeof cycles_options / sizeof cycles_options[0],
};

/* Splits a comma-separated list in place; returns the count (at most max). */
static size_t split_list(char *list, char **items, size_t max) {
  size_t n = 0;
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && n < max;
       tok = strtok_r(NULL, ",", &save))
    items[n++] = tok;
  return n;
}

#define MAX_WORKERS 256

static void print_cycle_rows(const cycles_settings_t *s, cycle_worker_t *w, size_t n_workers,
                             double t0, uint64_t *all_ns, uint64_t *all_tasks, size_t *total) {
  double t_end = t0;
  size_t n = 0;
  for (size_t i = 0; i < n_workers; i++) {
    memcpy(all_ns + n, w[i].lease_ns, w[i].cycles * sizeof *all_ns);
    memcpy(all_tasks + n, w[i].tasks, w[i].cycles * sizeof *all_tasks);
    n += w[i].cycles;
    t_end = w[i].t_end > t_end ? w[i].t_end : t_end;
  }
  qsort(all_ns, n, sizeof *all_ns, cmp_u64);
  printf("| %s: %s cycles/s, %zu worker%s | %.1f | %zu cycles in %.2f s |\n", s->label,
         s->models ? "lease+heartbeat+SubmitModel (acknowledged)" : "lease+heartbeat",
         n_workers, n_workers == 1 ? "" : "s", t_end > t0 ? (double)n / (t_end - t0) : 0.0, n,
         t_end - t0);
  printf("| %s: lease latency p50 / p99 / max, %zu worker%s | %.2f / %.2f / %.2f ms | %zu "
         "leases, work queued |\n",
         s->label, n_workers, n_workers == 1 ? "" : "s", (double)quantile(all_ns, n, 0.5) / 1e6,
         (double)quantile(all_ns, n, 0.99) / 1e6, (double)quantile(all_ns, n, 1.0) / 1e6, n);
  *total = n;
}

/* Starts one thread per worker, lets them go together once every one has
 * connected (or failed to), and joins them. *t0 and *cpu0 (the broker's
 * CPU time) are taken as they are let go. */
static int run_workers(cycle_plan_t *plan, cycle_worker_t *w, size_t n, long broker_pid,
                       double *t0, cpu_times_t *cpu0, char *err, size_t errlen) {
  size_t started = 0;
  int rc = 0, sems = 0;
  if (uv_sem_init(&plan->ready, 0) == 0) {
    sems = 1;
    if (uv_sem_init(&plan->go, 0) == 0)
      sems = 2;
  }
  if (sems < 2) {
    snprintf(err, errlen, "cannot make a semaphore");
    rc = UV_ENOMEM;
    goto done;
  }
  for (started = 0; started < n; started++)
    if (uv_thread_create(&w[started].thread, cycle_worker_run, &w[started]) != 0)
      break;
  for (size_t i = 0; i < started; i++)
    uv_sem_wait(&plan->ready);
  plan->cancelled = started < n; /* the semaphore orders this before their reads */
  *cpu0 = proc_cpu(broker_pid);
  *t0 = now_s();
  for (size_t i = 0; i < started; i++)
    uv_sem_post(&plan->go);
  for (size_t i = 0; i < started; i++)
    uv_thread_join(&w[i].thread);
  if (plan->cancelled) {
    snprintf(err, errlen, "cannot start worker thread %zu", started);
    rc = UV_EAGAIN;
  }
  for (size_t i = 0; i < started && rc == 0; i++)
    if (w[i].rc != 0) {
      snprintf(err, errlen, "worker %zu (%s): %s", i, w[i].cred_path, w[i].err);
      rc = w[i].rc;
    }
done:
  if (sems > 0)
    uv_sem_destroy(&plan->ready);
  if (sems > 1)
    uv_sem_destroy(&plan->go);
  return rc;
}

static int cmd_cycles(int argc, char **argv) {
  cycles_settings_t s = {0};
  cycle_plan_t plan = {0};
  cycle_worker_t *w = NULL;
  tiny_work_t tw;
  an_client_t *pub = NULL;
  an_arena_t arena;
  char *paths[MAX_WORKERS], err[2048];
  uint64_t *logs = NULL;
  blob_file_t *models = NULL;
  size_t n_workers = 0, total = 0;
  int first, status;

  memset(&tw, 0, sizeof tw);
  an_arena_init(&arena, 0, 0);
  if ((status = an_cli_parse(&cycles_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (!s.publisher || !s.workers ||
      (n_workers = split_list(s.workers, paths, MAX_WORKERS)) == 0) {
    fprintf(stderr, "broker_load cycles: --publisher and --workers are required\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (tiny_work_make(s.work, &tw, err, sizeof err) != 0 ||
      connect_node(s.publisher, &pub, err, sizeof err) != 0)
    goto fail;

  /* Queue the tasks first, timed: each is SubmitTask (a commit) and four
   * BeginBlob (the fourth queues the task: another commit). */
  double t0 = now_s();
  for (int64_t i = 0; i < s.tasks; i++)
    if (submit_tiny(pub, &arena, &tw, (uint32_t)s.lease_seconds, 0, err, sizeof err) != 0)
      goto fail;
  double t_submit = now_s() - t0;
  printf("| %s: task submits/s (SubmitTask + 4 BeginBlob), 1 publisher | %.1f | %" PRId64
         " tasks in %.2f s |\n",
         s.label, (double)s.tasks / t_submit, s.tasks, t_submit);
  fflush(stdout);

  atomic_init(&plan.next_model, 0);
  if (s.models) {
    if (write_tiny_models(s.work, (size_t)s.tasks, &models, err, sizeof err) != 0)
      goto fail;
    plan.models = models;
    plan.n_models = (size_t)s.tasks;
  }
  plan.seconds = s.seconds;
  plan.max_cycles = (size_t)s.tasks;
  /* Each worker's two logs, then room to merge them all. */
  w = calloc(n_workers, sizeof *w);
  logs = calloc(4 * n_workers * plan.max_cycles, sizeof *logs);
  if (!w || !logs) {
    snprintf(err, sizeof err, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n_workers; i++) {
    w[i].plan = &plan;
    w[i].cred_path = paths[i];
    w[i].lease_ns = logs + 2 * i * plan.max_cycles;
    w[i].tasks = w[i].lease_ns + plan.max_cycles;
  }
  cpu_times_t cpu0;
  if (run_workers(&plan, w, n_workers, (long)s.broker_pid, &t0, &cpu0, err, sizeof err) != 0)
    goto fail;
  uint64_t *all_ns = logs + 2 * n_workers * plan.max_cycles;
  uint64_t *all_tasks = all_ns + n_workers * plan.max_cycles;
  cpu_times_t cpu1 = proc_cpu((long)s.broker_pid);
  double t_workers = 0;
  for (size_t i = 0; i < n_workers; i++)
    t_workers = w[i].t_end > t_workers ? w[i].t_end : t_workers;
  print_cycle_rows(&s, w, n_workers, t0, all_ns, all_tasks, &total);
  /* CPU against wall clock per cycle: what is left is waiting, mostly for
   * the fsync of each commit (the loop thread sleeps in it). */
  if (s.broker_pid && total > 0)
    printf("| %s: broker CPU per cycle (its loop thread), %zu worker%s | %.3f ms | of %.3f ms "
           "wall per cycle |\n",
           s.label, n_workers, n_workers == 1 ? "" : "s",
           (cpu1.own - cpu0.own) * 1e3 / (double)total, (t_workers - t0) * 1e3 / (double)total);
  if (s.models && total > 0) {
    size_t accepted = 0;
    double t_last = 0;
    if (await_verdicts(pub, &arena, all_tasks, total, s.score_limit, &accepted, &t_last, err,
                       sizeof err) != 0)
      goto fail;
    cpu_times_t cpu2 = proc_cpu((long)s.broker_pid);
    if (s.broker_pid)
      printf("| %s: CPU per model scored: broker loop / scoring children | %.2f / %.2f ms | "
             "one sandboxed child process per model |\n",
             s.label, (cpu2.own - cpu0.own) * 1e3 / (double)total,
             (cpu2.children - cpu0.children) * 1e3 / (double)total);
    printf("| %s: full cycles/s to a verdict (sandboxed scoring included), %zu worker%s | "
           "%.1f | %zu of %zu models accepted, last verdict %.2f s after the start |\n",
           s.label, n_workers, n_workers == 1 ? "" : "s", (double)total / (t_last - t0),
           accepted, total, t_last - t0);
  }
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "broker_load cycles: %s\n", err);
done:
  an_client_close(pub);
  an_arena_destroy(&arena);
  free(logs);
  blob_files_free(models, (size_t)s.tasks);
  free(models);
  blob_files_free(tw.data, 4);
  free(w);
  an_config_free(&cycles_spec, &s);
  return status;
}

/* ---- idle: many sessions on one loop ---- */

typedef struct idle_pool idle_pool_t;

typedef struct idle_session {
  an_conn_t *conn; /* NULL once closed */
  idle_pool_t *pool;
  int hello_ok;
  int closing; /* we closed it: not a failure */
} idle_session_t;

struct idle_pool {
  uv_loop_t loop;
  uv_timer_t tick; /* wakes uv_run now and then so that deadlines are checked */
  an_tls_ctx_t *tls;
  struct sockaddr_storage addr;
  an_conn_params_t params;
  an_arena_t arena; /* scratch for the replies */
  uint8_t *hello, *poll; /* packed frames: Hello; LeaseRequest then Ping */
  size_t hello_len, poll_len, lease_len;
  idle_session_t *sessions;
  size_t cap, n;       /* started so far, of cap */
  size_t handshaking;  /* started, not yet HelloOk nor closed */
  size_t ready, pongs, granted, failed, live;
  char error[256];     /* the first failure */
};

static void idle_fail(idle_pool_t *p, const char *what, int status) {
  p->failed++;
  if (!p->error[0])
    snprintf(p->error, sizeof p->error, "%s: %s", what, an_strerror(status));
}

static void idle_on_ready(an_conn_t *c) {
  idle_session_t *s = an_conn_data(c);
  int rc = an_conn_write_frame(c, s->pool->hello, s->pool->hello_len);
  if (rc != 0)
    an_conn_close(c, rc);
}

static int idle_on_frame(an_conn_t *c, const uint8_t *payload, size_t len) {
  idle_session_t *s = an_conn_data(c);
  idle_pool_t *p = s->pool;
  Archnet__Envelope *env;
  int rc = 0;
  an_arena_reset(&p->arena);
  if (!(env = an_wire_unpack(&p->arena, payload, len)))
    return AN_EPROTO;
  switch (env->body_case) {
  case ARCHNET__ENVELOPE__BODY_HELLO_OK:
    s->hello_ok = 1;
    p->handshaking--;
    p->ready++;
    break;
  case ARCHNET__ENVELOPE__BODY_PONG: p->pongs++; break;
  case ARCHNET__ENVELOPE__BODY_LEASE_GRANTED: p->granted++; break;
  case ARCHNET__ENVELOPE__BODY_NO_LEASE: break; /* the long poll ended; this one stays idle */
  case ARCHNET__ENVELOPE__BODY_ERROR:
    if (!p->error[0])
      snprintf(p->error, sizeof p->error, "broker: %s (%s)",
               env->error->message ? env->error->message : "",
               an_wire_error_name(env->error->code));
    rc = AN_EREMOTE;
    break;
  default: rc = AN_EPROTO; break;
  }
  return rc;
}

static void idle_on_close(an_conn_t *c, int status) {
  idle_session_t *s = an_conn_data(c);
  idle_pool_t *p = s->pool;
  if (!s->hello_ok)
    p->handshaking--;
  if (!s->closing)
    idle_fail(p, "a session closed", status ? status : UV_EOF);
  s->conn = NULL;
  p->live--;
}

static void idle_on_tick(uv_timer_t *t) { (void)t; }

static const an_conn_callbacks_t idle_callbacks = {
    .on_ready = idle_on_ready,
    .on_frame = idle_on_frame,
    .on_close = idle_on_close,
};

/* Packs `env` into a new heap buffer. */
static uint8_t *pack_envelope(const Archnet__Envelope *env, size_t *len) {
  size_t n = archnet__envelope__get_packed_size(env);
  uint8_t *buf = malloc(n ? n : 1);
  if (buf)
    *len = archnet__envelope__pack(env, buf);
  return buf;
}

/* The frames every session sends: Hello with the worker's credentials;
 * then a LeaseRequest that waits up to `wait` seconds, followed by a Ping
 * whose Pong proves the broker has parked the request. */
static int idle_frames(idle_pool_t *p, const an_credentials_t *cred, uint32_t wait) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__Hello hello = ARCHNET__HELLO__INIT;
  Archnet__LeaseRequest lr = ARCHNET__LEASE_REQUEST__INIT;
  Archnet__Ping ping = ARCHNET__PING__INIT;
  uint8_t *lease = NULL, *pingbuf = NULL;
  size_t ping_len = 0;
  int rc = 0;
  hello.protocol_version = AN_PROTOCOL_VERSION;
  hello.software = SOFTWARE;
  hello.role = ARCHNET__ROLE__ROLE_WORKER;
  hello.node_name = "idle";
  hello.node_id = cred->node_id;
  hello.secret = (char *)cred->secret;
  env.request_id = 1;
  env.body_case = ARCHNET__ENVELOPE__BODY_HELLO;
  env.hello = &hello;
  p->hello = pack_envelope(&env, &p->hello_len);
  lr.wait_seconds = wait; /* no capabilities: only tasks that need nothing */
  env.request_id = 2;
  env.body_case = ARCHNET__ENVELOPE__BODY_LEASE_REQUEST;
  env.lease_request = &lr;
  lease = pack_envelope(&env, &p->lease_len);
  ping.nonce = 3;
  env.request_id = 3;
  env.body_case = ARCHNET__ENVELOPE__BODY_PING;
  env.ping = &ping;
  pingbuf = pack_envelope(&env, &ping_len);
  /* Both in one buffer: poll[0, lease_len) and then the Ping. */
  if (!p->hello || !lease || !pingbuf || !(p->poll = malloc(p->lease_len + ping_len))) {
    rc = UV_ENOMEM;
    goto done;
  }
  memcpy(p->poll, lease, p->lease_len);
  memcpy(p->poll + p->lease_len, pingbuf, ping_len);
  p->poll_len = p->lease_len + ping_len;
done:
  free(lease);
  free(pingbuf);
  return rc;
}

/* Runs the loop until *count reaches `want`, a session fails, or `limit`
 * seconds pass. */
static int idle_run_until(idle_pool_t *p, const size_t *count, size_t want, double limit) {
  double deadline = now_s() + limit;
  while (*count < want && !p->failed && now_s() < deadline)
    uv_run(&p->loop, UV_RUN_ONCE);
  if (p->failed)
    return AN_EPROTO;
  return *count < want ? UV_ETIMEDOUT : 0;
}

/* Opens sessions until `target` have said Hello, with at most `in_flight`
 * handshakes at a time: the broker's listen backlog is 128. */
static int idle_grow(idle_pool_t *p, size_t target, size_t in_flight, double limit) {
  double deadline = now_s() + limit;
  int rc = 0;
  while (rc == 0 && p->ready < target) {
    while (p->n < target && p->handshaking < in_flight) {
      idle_session_t *s = &p->sessions[p->n];
      s->pool = p;
      rc = an_conn_connect(&p->loop, (struct sockaddr *)&p->addr, p->tls, &p->params,
                           &idle_callbacks, s, &s->conn);
      if (rc != 0) {
        idle_fail(p, "connect", rc);
        break;
      }
      p->n++;
      p->handshaking++;
      p->live++;
    }
    if (p->failed)
      rc = AN_EPROTO;
    else if (now_s() > deadline)
      rc = UV_ETIMEDOUT;
    else
      uv_run(&p->loop, UV_RUN_ONCE);
  }
  return rc;
}

/* Sends every ready session its long poll and waits for the Pongs. */
static int idle_poll_all(idle_pool_t *p, double limit) {
  int rc = 0;
  for (size_t i = 0; i < p->n && rc == 0; i++)
    if (p->sessions[i].conn && p->sessions[i].hello_ok) {
      /* Two frames, written as the wire has them. */
      rc = an_conn_write_frame(p->sessions[i].conn, p->poll, p->lease_len);
      if (rc == 0)
        rc = an_conn_write_frame(p->sessions[i].conn, p->poll + p->lease_len,
                                 p->poll_len - p->lease_len);
    }
  if (rc != 0)
    idle_fail(p, "sending the long poll", rc);
  return rc ? rc : idle_run_until(p, &p->pongs, p->ready, limit);
}

static void idle_close_all(idle_pool_t *p, double limit) {
  double deadline = now_s() + limit;
  for (size_t i = 0; i < p->n; i++)
    if (p->sessions[i].conn) {
      p->sessions[i].closing = 1;
      an_conn_close(p->sessions[i].conn, 0);
    }
  while (p->live > 0 && now_s() < deadline)
    uv_run(&p->loop, UV_RUN_ONCE);
}

/* Lets the broker settle (its replies are out, but it may still be freeing
 * handshake buffers), then reads its RSS. */
static uint64_t idle_settled_rss(idle_pool_t *p, long pid) {
  double until = now_s() + 1.0;
  while (now_s() < until)
    uv_run(&p->loop, UV_RUN_ONCE);
  return rss_kib(pid);
}

/* Times the submission of a tiny task that nobody here can run: the broker
 * still offers it to every parked long poll before it answers. */
static int time_unrunnable_submits(an_client_t *pub, const tiny_work_t *tw, int n,
                                   double *median_ms, char *err, size_t errlen) {
  double ms[16];
  an_arena_t arena;
  int rc = 0;
  an_arena_init(&arena, 0, 0);
  n = n > 16 ? 16 : n;
  for (int i = 0; i < n && rc == 0; i++) {
    double t0 = now_s();
    rc = submit_tiny(pub, &arena, tw, 600, UNRUNNABLE_MEMORY, err, errlen);
    ms[i] = (now_s() - t0) * 1e3;
  }
  for (int i = 1; i < n; i++) /* insertion sort of a handful */
    for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
      double t = ms[j];
      ms[j] = ms[j - 1];
      ms[j - 1] = t;
    }
  *median_ms = ms[n / 2];
  an_arena_destroy(&arena);
  return rc;
}

typedef struct idle_settings {
  char *worker;
  char *publisher;
  char *work;
  char *counts;
  int64_t broker_pid;
  int64_t in_flight;
  int64_t wait;
} idle_settings_t;

#define ID(f) offsetof(idle_settings_t, f)

static const an_option_t idle_options[] = {
    {"worker", AN_OPT_STR, ID(worker), NULL, 0, 0, "FILE",
     "credentials every session says Hello with (one worker node, many sessions)"},
    {"publisher", AN_OPT_STR, ID(publisher), NULL, 0, 0, "FILE",
     "optional: also time a task submission with no long polls and with all parked"},
    {"work", AN_OPT_STR, ID(work), "broker-load-work", 0, 0, "DIR",
     "where the tiny datasets are written (with --publisher)"},
    {"counts", AN_OPT_STR, ID(counts), "1000,10000", 0, 0, "N[,N...]",
     "session counts to measure at, ascending; the sessions accumulate"},
    {"broker-pid", AN_OPT_INT, ID(broker_pid), NULL, 1, 4194304, "PID",
     "the broker's process id, to read its RSS"},
    {"in-flight", AN_OPT_INT, ID(in_flight), "64", 1, 4096, "N",
     "most handshakes under way at once"},
    {"wait", AN_OPT_INT, ID(wait), "600", 1, 3600, "S",
     "the long polls' wait_seconds (the broker caps it at its --max-wait)"},
};

static const an_command_spec_t idle_spec = {
    .program = "broker_load",
    .command = "idle",
    .summary = "Open TLS sessions that say Hello and then stay idle, all on one loop, up\n"
               "to each of --counts in turn; then make every session long-poll. Prints the\n"
               "broker's RSS per session at each step (from /proc/PID/status).",
    .options = idle_options,
    .n_options = sizeof idle_options / sizeof idle_options[0],
};

#define MAX_COUNTS 8

/* Allows this process as many descriptors as the hard limit does; the
 * sessions need one each. */
static int raise_nofile(size_t need, char *err, size_t errlen) {
  struct rlimit rl = {0};
  int rc = 0;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    rc = -errno;
  } else {
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
      rc = -errno;
    else if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
      rc = UV_EMFILE;
  }
  if (rc)
    snprintf(err, errlen, "%zu sessions need %zu descriptors; the hard limit is %llu", need - 64,
             need, (unsigned long long)rl.rlim_max);
  return rc;
}

static int cmd_idle(int argc, char **argv) {
  idle_settings_t s = {0};
  idle_pool_t p;
  an_credentials_t cred;
  an_client_t *pub = NULL;
  tiny_work_t tw;
  char *items[MAX_COUNTS], err[2048];
  size_t counts[MAX_COUNTS], n_counts;
  double submit_none = 0, submit_parked = 0;
  int first, status, loop = 0;

  memset(&p, 0, sizeof p);
  memset(&tw, 0, sizeof tw);
  an_arena_init(&p.arena, 0, 0);
  if ((status = an_cli_parse(&idle_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (!s.worker || !s.broker_pid || !(n_counts = split_list(s.counts, items, MAX_COUNTS))) {
    fprintf(stderr, "broker_load idle: --worker, --broker-pid and --counts are required\n");
    goto done;
  }
  for (size_t i = 0; i < n_counts; i++) {
    counts[i] = strtoul(items[i], NULL, 10);
    if (counts[i] == 0 || counts[i] > 100000 || (i > 0 && counts[i] < counts[i - 1])) {
      fprintf(stderr, "broker_load idle: --counts must ascend, each in 1..100000\n");
      goto done;
    }
  }
  status = AN_EXIT_FAIL;
  p.cap = counts[n_counts - 1];
  p.params = (an_conn_params_t){.max_frame = 65536, .handshake_timeout_ms = 120000};
  if (raise_nofile(p.cap + 64, err, sizeof err) != 0 ||
      an_credentials_read(s.worker, &cred, err, sizeof err) != 0 ||
      an_addr_resolve(cred.broker, &p.addr, err, sizeof err) != 0 ||
      an_tls_client_ctx_new(cred.pin, &p.tls, err, sizeof err) != 0)
    goto fail;
  if (!(p.sessions = calloc(p.cap, sizeof *p.sessions)) ||
      idle_frames(&p, &cred, (uint32_t)s.wait) != 0) {
    snprintf(err, sizeof err, "out of memory");
    goto fail;
  }
  if (s.publisher && (tiny_work_make(s.work, &tw, err, sizeof err) != 0 ||
                      connect_node(s.publisher, &pub, err, sizeof err) != 0 ||
                      time_unrunnable_submits(pub, &tw, 5, &submit_none, err, sizeof err) != 0))
    goto fail;
  if (uv_loop_init(&p.loop) != 0) {
    snprintf(err, sizeof err, "cannot start a loop");
    goto fail;
  }
  loop = 1;
  uv_timer_init(&p.loop, &p.tick);
  uv_timer_start(&p.tick, idle_on_tick, 100, 100);

  uint64_t base = idle_settled_rss(&p, (long)s.broker_pid), self_base = rss_kib(0);
  double t_growing = 0;
  for (size_t i = 0; i < n_counts; i++) {
    double t0 = now_s();
    if (idle_grow(&p, counts[i], (size_t)s.in_flight, 300) != 0)
      goto sessions_failed;
    t_growing += now_s() - t0;
    uint64_t rss = idle_settled_rss(&p, (long)s.broker_pid);
    printf("| broker RSS per idle session, %zu held (TLS + Hello done) | %.1f KiB | RSS %.1f "
           "-> %.1f MiB |\n",
           counts[i], (double)(rss - base) / (double)counts[i], (double)base / 1024,
           (double)rss / 1024);
    fflush(stdout);
  }
  printf("| sessions established (TCP + TLS 1.3 + Hello), one client loop | %.0f /s | %zu "
         "sessions, at most %" PRId64 " handshakes at once |\n",
         (double)p.ready / t_growing, p.ready, s.in_flight);
  uint64_t before_poll = rss_kib((long)s.broker_pid);
  if (idle_poll_all(&p, 120) != 0)
    goto sessions_failed;
  uint64_t polled = idle_settled_rss(&p, (long)s.broker_pid);
  printf("| broker RSS per long-polling session, %zu held | %.1f KiB | +%.2f KiB each over "
         "idle (the parked request and its timer) |\n",
         p.ready, (double)(polled - base) / (double)p.ready,
         ((double)polled - (double)before_poll) / (double)p.ready);
  printf("| this generator's RSS per session (client side, for scale) | %.1f KiB | one "
         "an_conn_t each, with a read buffer of its own |\n",
         (double)(rss_kib(0) - self_base) / (double)p.ready);
  if (pub) {
    if (time_unrunnable_submits(pub, &tw, 5, &submit_parked, err, sizeof err) != 0)
      goto fail;
    printf("| task submit, median of 5: no long poll parked / %zu parked | %.1f / %.1f ms | "
           "a newly queued task is offered to every parked poll before the reply |\n",
           p.ready, submit_none, submit_parked);
  }
  idle_close_all(&p, 60);
  printf("| broker RSS after all sessions closed | %.1f MiB | from %.1f MiB before the "
         "first |\n",
         (double)idle_settled_rss(&p, (long)s.broker_pid) / 1024, (double)base / 1024);
  if (p.granted)
    fprintf(stderr, "broker_load idle: note: %zu long polls were granted a task\n", p.granted);
  status = AN_EXIT_OK;
  goto done;
sessions_failed:
  snprintf(err, sizeof err, "%zu of %zu sessions ready: %s", p.ready, p.n,
           p.error[0] ? p.error : "timed out");
fail:
  fprintf(stderr, "broker_load idle: %s\n", err);
done:
  if (loop) {
    idle_close_all(&p, 60);
    uv_close((uv_handle_t *)&p.tick, NULL);
    uv_run(&p.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&p.loop) != 0)
      fprintf(stderr, "broker_load idle: the loop still had handles open\n");
  }
  blob_files_free(tw.data, 4);
  an_client_close(pub);
  an_tls_ctx_free(p.tls);
  an_arena_destroy(&p.arena);
  free(p.hello);
  free(p.poll);
  free(p.sessions);
  an_config_free(&idle_spec, &s);
  return status;
}

/* ---- upload: one large blob, several chunk sizes ---- */

/* Fills `path` with `size` pseudo-random bytes (xorshift64*: cheap, and no
 * run of equal bytes that a layer below could treat specially). */
static int write_big_file(const char *path, uint64_t size, char *err, size_t errlen) {
  const size_t piece = (size_t)8 << 20;
  uint64_t *buf = malloc(piece), state = 0x9e3779b97f4a7c15ULL;
  int fd = -1, rc = 0;
  if (!buf) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: %s", path, strerror(errno));
    goto done;
  }
  for (uint64_t done = 0; done < size && rc == 0;) {
    size_t n = size - done < piece ? (size_t)(size - done) : piece;
    for (size_t i = 0; i < piece / sizeof *buf; i++) {
      state ^= state >> 12;
      state ^= state << 25;
      state ^= state >> 27;
      buf[i] = state * 0x2545f4914f6cdd1dULL;
    }
    if (write(fd, buf, n) != (ssize_t)n) {
      rc = -EIO;
      snprintf(err, errlen, "%s: short write", path);
    }
    done += n;
  }
done:
  if (fd >= 0)
    close(fd);
  free(buf);
  return rc;
}

/* Makes the file a blob the broker has not seen: content addressing would
 * otherwise finish a second upload of the same bytes at once. */
static int stamp_big_file(const char *path, uint64_t tag, char *err, size_t errlen) {
  char text[32];
  int fd = open(path, O_WRONLY | O_CLOEXEC), rc = 0;
  int n = snprintf(text, sizeof text, "broker_load %016" PRIx64, tag);
  if (fd < 0 || pwrite(fd, text, (size_t)n, 0) != n) {
    rc = -EIO;
    snprintf(err, errlen, "%s: cannot write", path);
  }
  if (fd >= 0)
    close(fd);
  return rc;
}

typedef struct upload_settings {
  char *publisher;
  char *work;
  uint64_t size;
  char *chunks;
  int64_t repeat;
  int64_t broker_pid;
} upload_settings_t;

#define UP(f) offsetof(upload_settings_t, f)

static const an_option_t upload_options[] = {
    {"publisher", AN_OPT_STR, UP(publisher), NULL, 0, 0, "FILE", "the publisher's credentials"},
    {"work", AN_OPT_STR, UP(work), "broker-load-work", 0, 0, "DIR",
     "where the blob file (and the tiny datasets) are written"},
    {"size", AN_OPT_SIZE, UP(size), "1G", 1024, 68719476736.0, "BYTES", "the blob's size"},
    {"chunks", AN_OPT_STR, UP(chunks), "1M,4M,16M", 0, 0, "SIZE[,SIZE...]",
     "chunk sizes to upload with, one fresh blob each (the broker's --max-frame must allow "
     "them)"},
    {"repeat", AN_OPT_INT, UP(repeat), "3", 1, 16, "N",
     "uploads per chunk size (each a fresh blob): the median and the best are reported"},
    {"broker-pid", AN_OPT_INT, UP(broker_pid), "0", 0, 4194304, "PID",
     "the broker's process id: adds its CPU time per GiB (0 = not known)"},
};

static const an_command_spec_t upload_spec = {
    .program = "broker_load",
    .command = "upload",
    .summary = "Upload a --size blob as a task's training set through the client library\n"
               "(an_transfer_upload: chunks in flight, each with the blob's SHA-256 up to its\n"
               "end), once per chunk size, each time as a new blob. Prints bytes/s.",
    .options = upload_options,
    .n_options = sizeof upload_options / sizeof upload_options[0],
};

/* One timed upload of `big` (stamped afresh, so a new blob) as a task's
 * training set: its seconds and the CPU seconds of broker and client.
 * Returns 0, AN_EREMOTE (refused by the broker: err says why) or an error. */
typedef struct upload_run {
  double secs, broker_cpu, client_cpu;
} upload_run_t;

static int upload_once(an_client_t *pub, an_arena_t *arena, blob_file_t *big,
                       const tiny_work_t *tw, uint32_t chunk, long broker_pid, double *hash_s,
                       upload_run_t *run, char *err, size_t errlen) {
  const blob_file_t *data[4] = {big, &tw->data[1], &tw->data[2], &tw->data[3]};
  uint64_t task = 0;
  int rc;
  if ((rc = stamp_big_file(big->path, uv_hrtime() ^ chunk, err, errlen)) != 0)
    return rc;
  double t0 = now_s();
  an_blob_digests_free(&big->d);
  if ((rc = an_blob_digests_of(big->path, chunk, &big->d, err, errlen)) != 0)
    return rc;
  *hash_s += now_s() - t0;
  if ((rc = submit_task(pub, arena, data, 600, UNRUNNABLE_MEMORY, &task, err, errlen)) != 0)
    return rc;
  for (int k = 1; k < 4; k++)
    if ((rc = an_transfer_upload(pub, task, data[k]->path, &data[k]->d, NULL, NULL, err,
                                 errlen)) != 0)
      return rc;
  cpu_times_t broker0 = proc_cpu(broker_pid), self0 = proc_cpu(0);
  t0 = now_s();
  rc = an_transfer_upload(pub, task, big->path, &big->d, NULL, NULL, err, errlen);
  run->secs = now_s() - t0;
  cpu_times_t broker1 = proc_cpu(broker_pid), self1 = proc_cpu(0);
  run->broker_cpu = broker1.own - broker0.own;
  run->client_cpu = self1.own - self0.own;
  return rc;
}

static int cmp_run(const void *a, const void *b) {
  double x = ((const upload_run_t *)a)->secs, y = ((const upload_run_t *)b)->secs;
  return (x > y) - (x < y);
}

static int cmd_upload(int argc, char **argv) {
  upload_settings_t s = {0};
  tiny_work_t tw;
  blob_file_t big;
  an_client_t *pub = NULL;
  an_arena_t arena;
  char *items[MAX_COUNTS], err[2048];
  uint64_t chunks[MAX_COUNTS];
  size_t n_chunks, n_hashed = 0;
  double hash_s = 0;
  int first, status, made = 0;

  an_arena_init(&arena, 0, 0);
  memset(&big, 0, sizeof big);
  memset(&tw, 0, sizeof tw);
  if ((status = an_cli_parse(&upload_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (!s.publisher || !(n_chunks = split_list(s.chunks, items, MAX_COUNTS))) {
    fprintf(stderr, "broker_load upload: --publisher and --chunks are required\n");
    goto done;
  }
  for (size_t i = 0; i < n_chunks; i++)
    if (an_config_parse_size(items[i], &chunks[i]) != 0 || chunks[i] < 1024 ||
        chunks[i] > ((uint64_t)1 << 30)) {
      fprintf(stderr, "broker_load upload: bad chunk size '%s'\n", items[i]);
      goto done;
    }
  status = AN_EXIT_FAIL;
  snprintf(big.path, sizeof big.path, "%s/big.bin", s.work);
  if (tiny_work_make(s.work, &tw, err, sizeof err) != 0 ||
      connect_node(s.publisher, &pub, err, sizeof err) != 0 ||
      write_big_file(big.path, s.size, err, sizeof err) != 0)
    goto fail;
  made = 1;
  for (size_t i = 0; i < n_chunks; i++) {
    upload_run_t runs[16];
    int rc = 0, n = 0;
    for (; n < (int)s.repeat && rc == 0; n++) {
      rc = upload_once(pub, &arena, &big, &tw, (uint32_t)chunks[i], (long)s.broker_pid, &hash_s,
                       &runs[n], err, sizeof err);
      n_hashed++;
    }
    if (rc == AN_EREMOTE) { /* the broker's limits are a result too */
      printf("| upload over TLS, %.0f KiB chunks | refused | %s |\n", (double)chunks[i] / 1024,
             err);
      continue;
    }
    if (rc != 0)
      goto fail;
    /* The median run, and the best: on a machine whose freed memory goes
     * back to its host, a run that lands on such pages pays for it. */
    qsort(runs, (size_t)n, sizeof runs[0], cmp_run);
    const upload_run_t *mid = &runs[n / 2];
    double gib = (double)big.d.size / 1073741824.0;
    printf("| upload of a %.2f GiB blob over TLS, %.0f KiB chunks (median of %d) | %.2f GB/s | "
           "best %.2f GB/s; %" PRIu64 " chunks, 8 in flight, each checked against the broker's "
           "running SHA-256 and durable (fdatasync, shared by the chunks queued together) "
           "before its ack |\n",
           (double)big.d.size / 1073741824.0, (double)chunks[i] / 1024, n,
           (double)big.d.size / mid->secs / 1e9, (double)big.d.size / runs[0].secs / 1e9,
           (big.d.size + chunks[i] - 1) / chunks[i]);
    /* Client and broker work at once (chunks in flight); on a shared
     * machine their CPU times together bound the rate. */
    if (s.broker_pid)
      printf("| CPU per GiB at %.0f KiB chunks (median run): broker / client | %.2f / %.2f s | "
             "on loopback both share this machine's cores |\n",
             (double)chunks[i] / 1024, mid->broker_cpu / gib, mid->client_cpu / gib);
    fflush(stdout);
  }
  printf("| client: SHA-256 of the file and of each chunk's prefix, before each upload (not "
         "in the figures above) | %.2f GB/s | OpenSSL, one core |\n",
         (double)big.d.size * (double)n_hashed / hash_s / 1e9);
  status = AN_EXIT_OK;
  goto done;
fail:
  fprintf(stderr, "broker_load upload: %s\n", err);
done:
  if (made)
    unlink(big.path);
  an_blob_digests_free(&big.d);
  blob_files_free(tw.data, 4);
  an_client_close(pub);
  an_arena_destroy(&arena);
  an_config_free(&upload_spec, &s);
  return status;
}

/* ---- disk: what one durable commit costs at least ---- */

typedef struct disk_settings {
  char *dir;
  int64_t count;
} disk_settings_t;

static const an_option_t disk_options[] = {
    {"dir", AN_OPT_STR, offsetof(disk_settings_t, dir), ".", 0, 0, "DIR",
     "a directory on the disk to probe (the broker's data directory's disk)"},
    {"count", AN_OPT_INT, offsetof(disk_settings_t, count), "200", 10, 100000, "N",
     "fdatasync calls to time"},
};

static const an_command_spec_t disk_spec = {
    .program = "broker_load",
    .command = "disk",
    .summary = "Time fdatasync after overwriting 4 KiB of a preallocated file, the way a\n"
               "SQLite commit in WAL mode with synchronous=FULL ends. Prints the median and\n"
               "the 99th percentile.",
    .options = disk_options,
    .n_options = sizeof disk_options / sizeof disk_options[0],
};

static int cmd_disk(int argc, char **argv) {
  disk_settings_t s = {0};
  char path[4200], page[4096];
  uint64_t *ns = NULL;
  int first, status, fd = -1;

  if ((status = an_cli_parse(&disk_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  snprintf(path, sizeof path, "%s/broker_load.fsync-probe", s.dir);
  memset(page, 'a', sizeof page);
  if (!(ns = calloc((size_t)s.count, sizeof *ns))) {
    fprintf(stderr, "broker_load disk: out of memory\n");
    goto done;
  }
  if ((fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0) {
    fprintf(stderr, "broker_load disk: %s: %s\n", path, strerror(errno));
    goto done;
  }
  /* Allocated and durable first, so that the timed calls flush data only,
   * as a WAL that is being reused does. */
  for (int64_t i = 0; i < s.count; i++)
    if (pwrite(fd, page, sizeof page, (off_t)(i * (int64_t)sizeof page)) != sizeof page)
      goto io_fail;
  if (fsync(fd) != 0)
    goto io_fail;
  for (int64_t i = 0; i < s.count; i++) {
    page[0] = (char)('b' + i % 20);
    if (pwrite(fd, page, sizeof page, (off_t)(i * (int64_t)sizeof page)) != sizeof page)
      goto io_fail;
    uint64_t t0 = uv_hrtime();
    if (fdatasync(fd) != 0)
      goto io_fail;
    ns[i] = uv_hrtime() - t0;
  }
  qsort(ns, (size_t)s.count, sizeof *ns, cmp_u64);
  printf("| disk: fdatasync after a 4 KiB overwrite, p50 / p99 | %.2f / %.2f ms | %" PRId64
         " calls in %s |\n",
         (double)quantile(ns, (size_t)s.count, 0.5) / 1e6,
         (double)quantile(ns, (size_t)s.count, 0.99) / 1e6, s.count, s.dir);
  /* What a durable upload can reach at most: 1 MiB appends, made durable
   * one by one (a chunk alone) or eight at a time (a batch of chunks that
   * queued up behind one another, which share one fdatasync). */
  for (size_t batch = 1; batch <= 8; batch *= 8) {
    const size_t piece = (size_t)1 << 20, pieces = 256;
    char *mib = malloc(piece);
    if (!mib || ftruncate(fd, 0) != 0) {
      free(mib);
      goto io_fail;
    }
    memset(mib, 'c', piece);
    double t0 = now_s();
    for (size_t i = 0; i < pieces; i++)
      if (pwrite(fd, mib, piece, (off_t)(i * piece)) != (ssize_t)piece ||
          ((i + 1) % batch == 0 && fdatasync(fd) != 0)) {
        free(mib);
        goto io_fail;
      }
    double secs = now_s() - t0;
    free(mib);
    printf("| disk: appending 256 MiB in 1 MiB writes, fdatasync every %zu MiB | %.2f GB/s | "
           "what a durable upload to %s can reach with that batch |\n",
           batch, (double)(piece * pieces) / secs / 1e9, s.dir);
  }
  status = AN_EXIT_OK;
  goto done;
io_fail:
  fprintf(stderr, "broker_load disk: %s: %s\n", path, strerror(errno));
done:
  if (fd >= 0) {
    close(fd);
    unlink(path);
  }
  free(ns);
  an_config_free(&disk_spec, &s);
  return status;
}

/* ---- main ---- */

static const an_subcommand_t commands[] = {
    {"cycles", "tiny tasks through W workers: lease cycles/s and lease latency", cmd_cycles},
    {"idle", "many idle and long-polling sessions: the broker's memory per session", cmd_idle},
    {"upload", "one large blob at several chunk sizes: upload bytes/s", cmd_upload},
    {"disk", "fdatasync latency of a directory's disk", cmd_disk},
};

static const an_program_t program = {
    .name = "broker_load",
    .summary = "Load generator for archnet-broker on loopback (see bench/broker.sh).",
    .commands = commands,
    .n_commands = sizeof commands / sizeof commands[0],
};

int main(int argc, char **argv) {
  /* A broker that goes away is an error code, not a fatal signal. */
  signal(SIGPIPE, SIG_IGN);
  return an_cli_main(&program, argc, argv);
}
