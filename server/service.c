/* The broker's request handlers (see service.h). */
#include "server/service.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <stdatomic.h>

#include <openssl/evp.h>

#include "common/error.h"
#include "common/receipt.h"
#include "common/list.h"
#include "common/log.h"
#include "common/net/wire.h"
#include "server/session.h"
#include "server/validate.h"

#define AN_MAX_CHUNK_DEFAULT (1u << 20)

/* A worker's pending LeaseRequest. */
typedef struct waiter {
  an_list_t link;
  an_service_t *svc;
  an_session_t *session;
  uint64_t request_id;
  an_worker_caps_t caps;
  uv_timer_t timer;
} waiter_t;

/* A validation running in a child process. */
typedef struct scoring {
  an_list_t link;    /* in an_service.scoring */
  an_service_t *svc;
  int64_t task_id;
  double min_accuracy;
  int64_t bounty;
} scoring_t;

/* Recent authentication failures of one address. */
typedef struct auth_failures {
  char address[64]; /* IP, without the port */
  int count;
  int64_t window_start, blocked_until;
} auth_failures_t;

#define AN_AUTH_SLOTS 256
#define AN_AUTH_MAX_FAILURES 10
#define AN_AUTH_WINDOW 60

struct an_service {
  uv_loop_t *loop;
  auth_failures_t auth[AN_AUTH_SLOTS]; /* oldest window replaced when full */
  an_service_params_t p;
  char *exe;
  uv_timer_t expiry; /* lease deadlines */
  an_list_t waiters;
  int stopping;
  int scorings;      /* children still running */
  an_list_t scoring; /* their scoring_t, to know which tasks are being scored */
};

static int64_t an_now_s(void) { return (int64_t)time(NULL); }

/* Counts an event for /metrics. */
#define AN_STAT(svc, field, n)                                                                \
  do {                                                                                       \
    if ((svc)->p.stats)                                                                      \
      atomic_fetch_add(&(svc)->p.stats->field, (uint_fast64_t)(n));                          \
  } while (0)

/* ---- replies ---- */

static Archnet__Error__Code an_error_code(int rc) {
  switch (rc) {
  case AN_ENOTFOUND: return ARCHNET__ERROR__CODE__NOT_FOUND;
  case AN_ESTATE: return ARCHNET__ERROR__CODE__WRONG_STATE;
  case AN_EFORBIDDEN: return ARCHNET__ERROR__CODE__FORBIDDEN;
  case AN_EFUNDS: return ARCHNET__ERROR__CODE__INSUFFICIENT_FUNDS;
  case AN_EAUTH: return ARCHNET__ERROR__CODE__UNAUTHENTICATED;
  case AN_ENOSPACE: return ARCHNET__ERROR__CODE__NO_SPACE;
  case AN_ETOOBIG: return ARCHNET__ERROR__CODE__TOO_BIG;
  case AN_EFORMAT: return ARCHNET__ERROR__CODE__BAD_DIGEST;
  case UV_EINVAL: return ARCHNET__ERROR__CODE__BAD_REQUEST;
  case UV_EBUSY: return ARCHNET__ERROR__CODE__UNAVAILABLE;
  default: return ARCHNET__ERROR__CODE__INTERNAL;
  }
}

/* An Error reply for a store or blob failure; internal ones are logged
 * and not detailed to the client. */
static int an_reply_rc(an_session_t *s, uint64_t id, int rc, const char *what) {
  Archnet__Error__Code code = an_error_code(rc);
  if (code == ARCHNET__ERROR__CODE__INTERNAL) {
    AN_LOG(AN_LOG_ERROR, an_session_name(s), "%s: %s", what, an_strerror(rc));
    return an_session_error(s, id, code, "%s: internal error", what);
  }
  return an_session_error(s, id, code, "%s: %s", what, an_strerror(rc));
}

static int an_hex64(const char *d) {
  if (!d || strlen(d) != 64)
    return 0;
  for (int i = 0; i < 64; i++)
    if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
      return 0;
  return 1;
}

/* TaskInfo from a task, for `role` (workers see a coarse accuracy and no
 * validation set, publishers see their model). Strings point into `t`. */
static void an_task_info(const an_task_t *t, an_role_t role, Archnet__TaskInfo *ti,
                         Archnet__BlobRef *tx, Archnet__BlobRef *ty, Archnet__BlobRef *model) {
  archnet__task_info__init(ti);
  ti->task_id = (uint64_t)t->id;
  ti->state = (Archnet__TaskState)t->state;
  ti->bounty = (uint64_t)t->spec.bounty;
  ti->min_accuracy = t->spec.min_accuracy;
  ti->attempts = (uint32_t)t->attempts;
  ti->max_attempts = (uint32_t)t->spec.max_attempts;
  ti->lease_seconds = (uint32_t)t->spec.lease_seconds;
  ti->lease_deadline = t->lease_deadline;
  ti->progress = t->progress;
  ti->accuracy = t->accuracy;
  /* Workers learn accepted/rejected and the accuracy to 1%: not enough to
   * probe individual validation labels. */
  if (role == AN_ROLE_WORKER && t->accuracy >= 0)
    ti->accuracy = floor(t->accuracy * 100) / 100;
  ti->reason = (char *)t->reason;
  ti->input_c = (uint32_t)t->spec.input_c;
  ti->input_h = (uint32_t)t->spec.input_h;
  ti->input_w = (uint32_t)t->spec.input_w;
  ti->classes = (uint32_t)t->spec.classes;
  if (role == AN_ROLE_WORKER) {
    archnet__blob_ref__init(tx);
    archnet__blob_ref__init(ty);
    tx->sha256 = (char *)t->spec.train_x;
    ty->sha256 = (char *)t->spec.train_y;
    ti->train_x = tx;
    ti->train_y = ty;
  }
  if (role != AN_ROLE_WORKER && t->model[0]) {
    archnet__blob_ref__init(model);
    model->sha256 = (char *)t->model;
    ti->model = model;
  }
}

/* Blob sizes are in the blob store; TaskInfo carries them for downloads. */
static void an_fill_sizes(an_service_t *svc, Archnet__TaskInfo *ti) {
  Archnet__BlobRef *refs[] = {ti->train_x, ti->train_y, ti->model};
  for (int i = 0; i < 3; i++) {
    uint64_t size = 0;
    if (refs[i] && an_blobstore_has(svc->p.blobs, refs[i]->sha256, &size))
      refs[i]->size = size;
  }
}

static int an_send_task(an_service_t *svc, an_session_t *s, uint64_t id, const an_task_t *t) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__TaskInfo ti;
  Archnet__BlobRef tx, ty, model;
  an_task_info(t, an_session_role(s), &ti, &tx, &ty, &model);
  an_fill_sizes(svc, &ti);
  env.request_id = id;
  env.body_case = ARCHNET__ENVELOPE__BODY_TASK_INFO;
  env.task_info = &ti;
  return an_session_send(s, &env);
}

/* The task, if this session may see it: its publisher, its leaseholder (or
 * the worker it paid), or an admin. */
static int an_visible_task(an_service_t *svc, an_session_t *s, int64_t task_id, an_task_t *t) {
  int rc = an_store_task_get(svc->p.store, task_id, t);
  if (rc)
    return rc;
  int64_t node = (int64_t)an_session_node(s);
  switch (an_session_role(s)) {
  case AN_ROLE_ADMIN: return 0;
  case AN_ROLE_PUBLISHER: return t->spec.publisher == node ? 0 : AN_EFORBIDDEN;
  case AN_ROLE_WORKER: return t->worker == node ? 0 : AN_EFORBIDDEN;
  default: return AN_EFORBIDDEN;
  }
}

/* ---- leases and waiting workers ---- */

static void an_waiter_closed(uv_handle_t *h) { free(h->data); }

static void an_waiter_drop(waiter_t *w) {
  an_list_remove(&w->link);
  uv_timer_stop(&w->timer);
  uv_close((uv_handle_t *)&w->timer, an_waiter_closed);
}

static int an_send_lease(an_service_t *svc, an_session_t *s, uint64_t id, const an_task_t *t) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__LeaseGranted lg = ARCHNET__LEASE_GRANTED__INIT;
  Archnet__TaskInfo ti;
  Archnet__BlobRef tx, ty, model;
  an_task_info(t, AN_ROLE_WORKER, &ti, &tx, &ty, &model);
  an_fill_sizes(svc, &ti);
  lg.task = &ti;
  env.request_id = id;
  env.body_case = ARCHNET__ENVELOPE__BODY_LEASE_GRANTED;
  env.lease_granted = &lg;
  AN_STAT(svc, leases_granted, 1);
  AN_LOG(AN_LOG_INFO, an_session_name(s), "task %lld leased to worker %llu (attempt %d of %d)",
         (long long)t->id, (unsigned long long)an_session_node(s), t->attempts,
         t->spec.max_attempts);
  return an_session_send(s, &env);
}

static int an_send_no_lease(an_session_t *s, uint64_t id) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__NoLease nl = ARCHNET__NO_LEASE__INIT;
  env.request_id = id;
  env.body_case = ARCHNET__ENVELOPE__BODY_NO_LEASE;
  env.no_lease = &nl;
  return an_session_send(s, &env);
}

/* Whether a worker with `caps` can run even the least demanding of the
 * queued tasks (a necessary condition only: the store decides). */
static int an_may_run_some(const an_worker_caps_t *caps, const an_queued_t *q) {
  return caps->memory_bytes >= q->min_memory && (caps->gpu || !q->all_need_gpu) &&
         (caps->max_input_elems == 0 || caps->max_input_elems >= q->min_input_elems);
}

/* Work may have appeared: serve waiting workers in arrival order. Each
 * grant takes one queued task and nothing queues one meanwhile, so once as
 * many grants as there were queued tasks are made, the rest of a long list
 * of parked polls need not be asked; nor need a poll whose worker could
 * not run even the least demanding queued task. */
static void an_wake_waiters(an_service_t *svc) {
  an_list_t *it, *next;
  an_queued_t q;
  if (an_store_queued(svc->p.store, &q) != 0) /* cannot tell: ask every waiter */
    q = (an_queued_t){.tasks = INT64_MAX, .min_memory = 0, .min_input_elems = 0};
  for (it = svc->waiters.next; it != &svc->waiters && q.tasks > 0; it = next) {
    waiter_t *w = AN_CONTAINER_OF(it, waiter_t, link);
    an_task_t t;
    next = it->next;
    if (!an_may_run_some(&w->caps, &q))
      continue;
    int rc = an_store_lease_next(svc->p.store, (int64_t)an_session_node(w->session), &w->caps,
                                 an_now_s(), &t);
    if (rc == AN_ENOTFOUND)
      continue;
    if (rc == 0) {
      an_send_lease(svc, w->session, w->request_id, &t);
      q.tasks--;
    } else
      an_reply_rc(w->session, w->request_id, rc, "lease");
    an_waiter_drop(w);
  }
}

static void an_waiter_timeout(uv_timer_t *t) {
  waiter_t *w = t->data;
  an_send_no_lease(w->session, w->request_id);
  an_waiter_drop(w);
}

static void an_expiry_tick(uv_timer_t *t) {
  an_service_t *svc = t->data;
  int n = 0;
  int rc = an_store_lease_expire(svc->p.store, an_now_s(), &n);
  if (rc)
    AN_LOG(AN_LOG_ERROR, "service", "expiring leases: %s", an_strerror(rc));
  if (n > 0) {
    AN_STAT(svc, leases_expired, n);
    AN_LOG(AN_LOG_INFO, "service", "%d lease(s) expired; their tasks are queued again", n);
    an_wake_waiters(svc);
  }
}

static int an_on_lease_request(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  const Archnet__LeaseRequest *lr = req->lease_request;
  an_worker_caps_t caps = {0};
  an_task_t t;
  if (lr->caps) {
    caps.memory_bytes = (int64_t)(lr->caps->memory_bytes > INT64_MAX ? INT64_MAX
                                                                     : lr->caps->memory_bytes);
    caps.gpu = lr->caps->gpu;
    caps.max_input_elems = (int64_t)(lr->caps->max_input_elems > INT64_MAX
                                         ? INT64_MAX
                                         : lr->caps->max_input_elems);
  }
  int n = 0;
  an_store_lease_expire(svc->p.store, an_now_s(), &n);
  AN_STAT(svc, leases_expired, n);
  int rc = an_store_lease_next(svc->p.store, (int64_t)an_session_node(s), &caps, an_now_s(), &t);
  if (rc == 0)
    return an_send_lease(svc, s, req->request_id, &t);
  if (rc != AN_ENOTFOUND)
    return an_reply_rc(s, req->request_id, rc, "lease");
  uint32_t wait = lr->wait_seconds < svc->p.max_wait_seconds ? lr->wait_seconds
                                                             : svc->p.max_wait_seconds;
  if (wait == 0 || svc->stopping)
    return an_send_no_lease(s, req->request_id);
  /* One pending poll per session: a second replaces nothing, it is refused. */
  for (an_list_t *it = svc->waiters.next; it != &svc->waiters; it = it->next)
    if (AN_CONTAINER_OF(it, waiter_t, link)->session == s)
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__WRONG_STATE,
                              "a lease request is already waiting on this connection");
  waiter_t *w = calloc(1, sizeof *w);
  if (!w)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__INTERNAL, "out of memory");
  w->svc = svc;
  w->session = s;
  w->request_id = req->request_id;
  w->caps = caps;
  uv_timer_init(svc->loop, &w->timer);
  w->timer.data = w;
  uv_timer_start(&w->timer, an_waiter_timeout, (uint64_t)wait * 1000, 0);
  an_list_push(&svc->waiters, &w->link);
  return 0;
}

static int an_on_heartbeat(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__HeartbeatOk ok = ARCHNET__HEARTBEAT_OK__INIT;
  int cancelled = 0;
  double progress = req->heartbeat->progress;
  if (!isfinite(progress) || progress < 0 || progress > 1)
    progress = progress > 1 ? 1 : 0;
  int rc = an_store_lease_heartbeat(svc->p.store, (int64_t)req->heartbeat->task_id,
                                    (int64_t)an_session_node(s), progress, an_now_s(), &cancelled);
  if (rc)
    return an_reply_rc(s, req->request_id, rc, "heartbeat");
  an_task_t t;
  if (an_store_task_get(svc->p.store, (int64_t)req->heartbeat->task_id, &t) == 0)
    ok.lease_deadline = t.lease_deadline;
  ok.cancelled = cancelled;
  env.request_id = req->request_id;
  env.body_case = ARCHNET__ENVELOPE__BODY_HEARTBEAT_OK;
  env.heartbeat_ok = &ok;
  return an_session_send(s, &env);
}

/* ---- validation ---- */

static void an_scored(const an_validate_result_t *r, void *arg) {
  scoring_t *sc = arg;
  an_service_t *svc = sc->svc;
  int accepted = r->ok && r->accuracy >= sc->min_accuracy;
  char reason[300];
  if (!r->ok)
    snprintf(reason, sizeof reason, "%s", r->reason);
  else if (!accepted)
    snprintf(reason, sizeof reason, "accuracy %.4f below the required %.4f", r->accuracy,
             sc->min_accuracy);
  else
    reason[0] = '\0';
  int rc = an_store_validation_done(svc->p.store, sc->task_id, accepted, r->ok ? r->accuracy : -1,
                                    reason, svc->p.fee_permille, an_now_s());
  if (accepted) {
    AN_STAT(svc, validations_accepted, 1);
    AN_STAT(svc, payouts, 1);
    AN_STAT(svc, payout_credits, sc->bounty - sc->bounty * svc->p.fee_permille / 1000);
  } else {
    AN_STAT(svc, validations_rejected, 1);
  }
  if (rc)
    AN_LOG(AN_LOG_ERROR, "service", "task %lld: recording the validation: %s",
           (long long)sc->task_id, an_strerror(rc));
  else
    AN_LOG(AN_LOG_INFO, "service", "task %lld: model %s%s%s (accuracy %.4f on %lld images)",
           (long long)sc->task_id, accepted ? "accepted" : "rejected", reason[0] ? ": " : "",
           reason, r->ok ? r->accuracy : 0.0, (long long)r->images);
  svc->scorings--;
  an_list_remove(&sc->link);
  free(sc);
  if (!accepted && !svc->stopping)
    an_wake_waiters(svc); /* it may be queued again */
}

/* Starts scoring a validating task's model in a child process. */
static int an_start_scoring(an_service_t *svc, const an_task_t *t) {
  char model[4096], x[4096], y[4096];
  scoring_t *sc;
  int rc;
  if ((rc = an_blobstore_path(svc->p.blobs, t->model, model, sizeof model)) != 0 ||
      (rc = an_blobstore_path(svc->p.blobs, t->spec.val_x, x, sizeof x)) != 0 ||
      (rc = an_blobstore_path(svc->p.blobs, t->spec.val_y, y, sizeof y)) != 0)
    return rc;
  if (!(sc = calloc(1, sizeof *sc)))
    return UV_ENOMEM;
  sc->svc = svc;
  sc->task_id = t->id;
  sc->min_accuracy = t->spec.min_accuracy;
  sc->bounty = t->spec.bounty;
  an_validate_params_t vp = {
      .exe = svc->exe, .model_path = model, .x_path = x, .y_path = y,
      .input_c = t->spec.input_c, .input_h = t->spec.input_h, .input_w = t->spec.input_w,
      .classes = t->spec.classes, .max_memory_bytes = svc->p.score_memory_bytes,
      .max_cpu_seconds = svc->p.score_cpu_seconds, .max_wall_seconds = svc->p.score_wall_seconds};
  if ((rc = an_validate_start(svc->loop, &vp, an_scored, sc)) != 0) {
    free(sc);
    return rc;
  }
  svc->scorings++;
  an_list_push(&svc->scoring, &sc->link);
  AN_STAT(svc, validations_started, 1);
  AN_LOG(AN_LOG_INFO, "service", "task %lld: scoring the model of worker %lld",
         (long long)t->id, (long long)t->worker);
  return 0;
}

static int an_rescore(const an_task_t *t, void *arg) {
  an_service_t *svc = arg;
  /* Already being scored (after a lost commit, only the others). */
  for (an_list_t *it = svc->scoring.next; it != &svc->scoring; it = it->next)
    if (AN_CONTAINER_OF(it, scoring_t, link)->task_id == t->id)
      return 0;
  int rc = an_start_scoring(svc, t);
  if (rc)
    AN_LOG(AN_LOG_ERROR, "service", "task %lld: cannot score again after restart: %s",
           (long long)t->id, an_strerror(rc));
  return 0;
}

static int an_on_submit_model(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  const Archnet__SubmitModel *sm = req->submit_model;
  uint64_t size = 0;
  an_task_t t;
  int rc;
  if (!sm->model || !an_hex64(sm->model->sha256))
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__BAD_REQUEST,
                            "SubmitModel needs the model's SHA-256");
  if (!an_blobstore_has(svc->p.blobs, sm->model->sha256, &size))
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__WRONG_STATE,
                            "upload the model (BeginBlob, PutBlobChunk) before submitting it");
  if ((rc = an_store_model_submitted(svc->p.store, (int64_t)sm->task_id,
                                     (int64_t)an_session_node(s), sm->model->sha256,
                                     an_now_s())) != 0)
    return an_reply_rc(s, req->request_id, rc, "submit model");
  if ((rc = an_store_task_get(svc->p.store, (int64_t)sm->task_id, &t)) != 0)
    return an_reply_rc(s, req->request_id, rc, "submit model");
  if ((rc = an_start_scoring(svc, &t)) != 0) {
    /* Recorded as a rejection, not lost: the task goes back to the queue. */
    an_store_validation_done(svc->p.store, t.id, 0, -1, "the broker could not start scoring",
                             svc->p.fee_permille, an_now_s());
    AN_LOG(AN_LOG_ERROR, an_session_name(s), "task %lld: cannot start scoring: %s",
           (long long)t.id, an_strerror(rc));
  }
  return an_send_task(svc, s, req->request_id, &t);
}

/* ---- tasks ---- */

static int an_blob_ok(const Archnet__BlobRef *b) {
  return b && an_hex64(b->sha256) && b->size > 0;
}

static int an_on_submit_task(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  const Archnet__SubmitTask *st = req->submit_task;
  an_task_spec_t spec = {0};
  an_task_t t;
  int64_t id;
  int rc;
  const char *bad = NULL;
  if (st->bounty == 0 || st->bounty > (uint64_t)INT64_MAX / 2)
    bad = "bounty must be a positive number of credits";
  else if (!(st->min_accuracy >= 0 && st->min_accuracy <= 1))
    bad = "min_accuracy must be in [0, 1]";
  else if (st->max_attempts > 1000)
    bad = "max_attempts must be at most 1000";
  else if (st->lease_seconds > 7 * 86400)
    bad = "lease_seconds must be at most a week";
  else if (!an_blob_ok(st->train_x) || !an_blob_ok(st->train_y) || !an_blob_ok(st->val_x) ||
           !an_blob_ok(st->val_y))
    bad = "the four datasets need a SHA-256 (64 lowercase hex) and a size";
  else if (st->input_c < 1 || st->input_h < 1 || st->input_w < 1 || st->input_c > 65536 ||
           st->input_h > 65536 || st->input_w > 65536 || st->classes < 2 || st->classes > 65536)
    bad = "input shape and classes must be positive (classes at least 2)";
  if (bad)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__BAD_REQUEST, "%s", bad);
  spec.publisher = (int64_t)an_session_node(s);
  spec.bounty = (int64_t)st->bounty;
  spec.min_accuracy = st->min_accuracy;
  spec.max_attempts = st->max_attempts ? (int)st->max_attempts : 3;
  spec.lease_seconds = st->lease_seconds ? (int)st->lease_seconds
                                         : (int)svc->p.default_lease_seconds;
  memcpy(spec.train_x, st->train_x->sha256, AN_DIGEST_HEX);
  memcpy(spec.train_y, st->train_y->sha256, AN_DIGEST_HEX);
  memcpy(spec.val_x, st->val_x->sha256, AN_DIGEST_HEX);
  memcpy(spec.val_y, st->val_y->sha256, AN_DIGEST_HEX);
  spec.input_c = st->input_c;
  spec.input_h = st->input_h;
  spec.input_w = st->input_w;
  spec.classes = st->classes;
  spec.min_memory_bytes = (int64_t)(st->min_memory_bytes > INT64_MAX ? INT64_MAX
                                                                     : st->min_memory_bytes);
  spec.exclude_failed = st->exclude_failed;
  if ((rc = an_store_task_create(svc->p.store, &spec, an_now_s(), &id)) != 0 ||
      (rc = an_store_task_get(svc->p.store, id, &t)) != 0)
    return an_reply_rc(s, req->request_id, rc, "submit task");
  AN_LOG(AN_LOG_INFO, an_session_name(s), "task %lld submitted: bounty %lld, min accuracy %.3f",
         (long long)id, (long long)spec.bounty, spec.min_accuracy);
  return an_send_task(svc, s, req->request_id, &t);
}

/* uploading -> queued once the four datasets are all stored. */
static void an_maybe_ready(an_service_t *svc, int64_t task_id) {
  an_task_t t;
  uint64_t size;
  if (an_store_task_get(svc->p.store, task_id, &t) != 0 || t.state != AN_TASK_UPLOADING)
    return;
  const char *d[] = {t.spec.train_x, t.spec.train_y, t.spec.val_x, t.spec.val_y};
  for (int i = 0; i < 4; i++)
    if (!an_blobstore_has(svc->p.blobs, d[i], &size))
      return;
  if (an_store_task_ready(svc->p.store, task_id, an_now_s()) == 0) {
    AN_LOG(AN_LOG_INFO, "service", "task %lld: datasets complete; queued", (long long)task_id);
    an_wake_waiters(svc);
  }
}

static int an_send_offset(an_session_t *s, uint64_t id, uint64_t offset, int complete) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__BlobOffset bo = ARCHNET__BLOB_OFFSET__INIT;
  bo.offset = offset;
  bo.complete = complete;
  env.request_id = id;
  env.body_case = ARCHNET__ENVELOPE__BODY_BLOB_OFFSET;
  env.blob_offset = &bo;
  return an_session_send(s, &env);
}

static int an_on_begin_blob(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  const Archnet__BeginBlob *bb = req->begin_blob;
  char err[512];
  an_task_t t;
  uint64_t offset = 0;
  int rc;
  if (!an_blob_ok(bb->blob))
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__BAD_REQUEST,
                            "BeginBlob needs a SHA-256 (64 lowercase hex) and a size");
  if ((rc = an_visible_task(svc, s, (int64_t)bb->task_id, &t)) != 0)
    return an_reply_rc(s, req->request_id, rc, "begin blob");
  const char *d = bb->blob->sha256;
  if (an_session_role(s) == AN_ROLE_PUBLISHER) {
    /* A publisher uploads its task's four datasets, while uploading. */
    if (strcmp(d, t.spec.train_x) && strcmp(d, t.spec.train_y) && strcmp(d, t.spec.val_x) &&
        strcmp(d, t.spec.val_y))
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                              "task %llu has no dataset with that SHA-256",
                              (unsigned long long)bb->task_id);
    uint64_t have = 0;
    if (t.state != AN_TASK_UPLOADING) {
      /* A rerun of a finished submit: nothing left to send. */
      if (an_blobstore_has(svc->p.blobs, d, &have) && have == bb->blob->size)
        return an_send_offset(s, req->request_id, have, 1);
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__WRONG_STATE,
                              "task %llu is %s: it takes no uploads", (unsigned long long)bb->task_id,
                              an_task_state_name(t.state));
    }
  } else if (an_session_role(s) == AN_ROLE_WORKER) {
    /* A worker uploads one model, for its live lease. */
    if (t.state != AN_TASK_LEASED)
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__WRONG_STATE,
                              "task %llu is not leased to you now",
                              (unsigned long long)bb->task_id);
    if (bb->blob->size > svc->p.max_model_bytes)
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__TOO_BIG,
                              "models are limited to %llu bytes",
                              (unsigned long long)svc->p.max_model_bytes);
  } else {
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                            "only publishers and workers upload");
  }
  if ((rc = an_blobstore_begin(svc->p.blobs, d, bb->blob->size, &offset, err, sizeof err)) != 0)
    return an_session_error(s, req->request_id, an_error_code(rc), "%s", err);
  if ((rc = an_session_allow_upload(s, d, bb->task_id)) != 0)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__WRONG_STATE,
                            "too many uploads open on this connection");
  int complete = offset == bb->blob->size;
  if (!complete)
    AN_STAT(svc, uploads_started, 1);
  if (complete && an_session_role(s) == AN_ROLE_PUBLISHER)
    an_maybe_ready(svc, t.id);
  return an_send_offset(s, req->request_id, offset, complete);
}

/* The chunk's result, as the blob store reported it: the reply, and a
 * task whose last blob this completed is queued. */
static int an_put_chunk_answer(an_service_t *svc, an_session_t *s, uint64_t request_id,
                               const char *digest, uint64_t task, int rc, uint64_t next,
                               int complete, int completed_here, const char *err) {
  if (completed_here)
    AN_STAT(svc, uploads_completed, 1);
  if (rc == AN_ESTATE) /* out of order: tell where to resume */
    return an_send_offset(s, request_id, next, 0);
  if (rc)
    return an_session_error(s, request_id, an_error_code(rc), "%s", err);
  if (complete)
    an_session_upload_done(s, digest);
  if (complete && an_session_role(s) == AN_ROLE_PUBLISHER)
    an_maybe_ready(svc, (int64_t)task);
  return an_send_offset(s, request_id, next, complete);
}

/* A chunk on its way through the blob store's thread: what its answer
 * needs, and the request's arena, which holds the chunk's bytes. */
typedef struct an_put_chunk_job {
  an_service_t *svc;
  an_session_t *s; /* held by an_session_begin_deferred */
  uint64_t request_id, task;
  char digest[65];
  an_arena_t arena;
} an_put_chunk_job_t;

static void an_put_chunk_done(const an_blob_put_result_t *r, void *arg) {
  an_put_chunk_job_t *job = arg;
  /* A closed session sends nothing; a completed blob still readies its task. */
  if (!an_session_is_closed(job->s)) {
    an_put_chunk_answer(job->svc, job->s, job->request_id, job->digest, job->task, r->rc, r->next,
                        r->complete, r->completed_here, r->err);
  } else if (r->rc == 0 && r->complete) {
    struct an_service *svc = job->svc;
    if (r->completed_here)
      AN_STAT(svc, uploads_completed, 1);
    if (an_session_role(job->s) == AN_ROLE_PUBLISHER)
      an_maybe_ready(svc, (int64_t)job->task);
  }
  an_session_return_arena(job->s, &job->arena);
  an_session_end_deferred(job->s);
  free(job);
}

static int an_on_put_chunk(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  const Archnet__PutBlobChunk *pc = req->put_blob_chunk;
  an_put_chunk_job_t *job;
  char err[512];
  uint64_t next = 0;
  int complete = 0, rc;
  uint64_t task = an_hex64(pc->sha256) ? an_session_upload_task(s, pc->sha256) : 0;
  if (!task)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                            "send BeginBlob for this blob first");
  if (an_session_upload_finished(s, pc->sha256)) {
    /* A pipelined chunk sent before this connection's upload completed:
     * nothing to store or count again. */
    uint64_t size = 0;
    if (an_blobstore_has(svc->p.blobs, pc->sha256, &size))
      return an_send_offset(s, req->request_id, size, 1);
  }
  if ((pc->chunk_sha256.len != 0 && pc->chunk_sha256.len != 32) ||
      (pc->prefix_sha256.len != 0 && pc->prefix_sha256.len != 32) ||
      (pc->chunk_sha256.len == 0 && pc->prefix_sha256.len == 0))
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__BAD_REQUEST,
                            "a chunk needs chunk_sha256 or prefix_sha256, of 32 bytes");
  if (!(job = calloc(1, sizeof *job)))
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__INTERNAL,
                            "out of memory");
  job->svc = svc;
  job->s = s;
  job->request_id = req->request_id;
  job->task = task;
  snprintf(job->digest, sizeof job->digest, "%s", pc->sha256);
  /* The chunk's bytes live in the request's arena: it goes with the job
   * (pc stays valid, the memory just changes owner). */
  an_session_take_arena(s, &job->arena);
  /* Before the call: without a loop the blob store reports at once. */
  an_session_begin_deferred(s);
  rc = an_blobstore_put_async(svc->p.blobs, pc->sha256, pc->offset, pc->data.data, pc->data.len,
                              pc->chunk_sha256.len ? pc->chunk_sha256.data : NULL,
                              pc->prefix_sha256.len ? pc->prefix_sha256.data : NULL,
                              an_put_chunk_done, job, &next, &complete, err, sizeof err);
  if (rc == 1) /* queued: an_put_chunk_done answers (or has answered) */
    return 0;
  rc = an_put_chunk_answer(svc, s, req->request_id, job->digest, task, rc, next, complete, 0, err);
  an_session_return_arena(s, &job->arena);
  free(job);
  an_session_end_deferred(s); /* s is still open: its frame is being handled */
  return rc;
}

static int an_on_get_chunk(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  const Archnet__GetBlobChunk *gc = req->get_blob_chunk;
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__BlobChunk bc = ARCHNET__BLOB_CHUNK__INIT;
  char path[4096];
  uint8_t digest[32];
  an_task_t t;
  int rc, fd = -1;
  if (!an_hex64(gc->sha256))
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__BAD_REQUEST,
                            "GetBlobChunk needs a SHA-256");
  if ((rc = an_visible_task(svc, s, (int64_t)gc->task_id, &t)) != 0)
    return an_reply_rc(s, req->request_id, rc, "download");
  int allowed = 0;
  if (an_session_role(s) == AN_ROLE_WORKER)
    allowed = t.state == AN_TASK_LEASED &&
              (!strcmp(gc->sha256, t.spec.train_x) || !strcmp(gc->sha256, t.spec.train_y));
  else if (an_session_role(s) == AN_ROLE_PUBLISHER)
    allowed = (t.state == AN_TASK_ACCEPTED || t.state == AN_TASK_DELIVERED) &&
              !strcmp(gc->sha256, t.model);
  if (!allowed)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                            "that blob is not yours to download now");
  uint64_t size = 0;
  if (!an_blobstore_has(svc->p.blobs, gc->sha256, &size) ||
      an_blobstore_path(svc->p.blobs, gc->sha256, path, sizeof path) != 0)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__NOT_FOUND,
                            "the blob is not on this broker");
  if (gc->offset > size)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__BAD_REQUEST,
                            "offset past the end of the blob");
  uint32_t want = gc->max_bytes && gc->max_bytes < svc->p.max_chunk_bytes ? gc->max_bytes
                                                                         : svc->p.max_chunk_bytes;
  size_t len = size - gc->offset < want ? (size_t)(size - gc->offset) : want;
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__INTERNAL, "out of memory");
  rc = 0;
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 ||
      pread(fd, buf, len, (off_t)gc->offset) != (ssize_t)len)
    rc = an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__INTERNAL,
                          "reading the blob failed");
  if (fd >= 0)
    close(fd);
  if (rc == 0) {
    unsigned dl = 0;
    EVP_Digest(buf, len, digest, &dl, EVP_sha256(), NULL);
    bc.offset = gc->offset;
    bc.data.data = buf;
    bc.data.len = len;
    bc.chunk_sha256.data = digest;
    bc.chunk_sha256.len = 32;
    bc.size = size;
    env.request_id = req->request_id;
    env.body_case = ARCHNET__ENVELOPE__BODY_BLOB_CHUNK;
    env.blob_chunk = &bc;
    rc = an_session_send(s, &env);
  }
  free(buf);
  return rc;
}

typedef struct list_ctx {
  an_service_t *svc;
  an_role_t role;
  Archnet__TaskInfo **infos;
  an_task_t *tasks;
  size_t n, cap;
} list_ctx_t;

static int an_collect(const an_task_t *t, void *arg) {
  list_ctx_t *c = arg;
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    an_task_t *nt = realloc(c->tasks, cap * sizeof *nt);
    if (!nt)
      return 1;
    c->tasks = nt;
    c->cap = cap;
  }
  c->tasks[c->n++] = *t;
  return c->n >= 10000; /* a reply's worth */
}

static int an_on_list_tasks(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__TaskList tl = ARCHNET__TASK_LIST__INIT;
  list_ctx_t c = {.svc = svc, .role = an_session_role(s)};
  int rc;
  if (c.role == AN_ROLE_WORKER)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                            "workers do not list tasks; they lease them");
  rc = an_store_tasks(svc->p.store, c.role == AN_ROLE_ADMIN ? 0 : (int64_t)an_session_node(s),
                      an_collect, &c);
  Archnet__TaskInfo *infos = rc ? NULL : calloc(c.n ? c.n : 1, sizeof *infos);
  Archnet__TaskInfo **ptrs = rc ? NULL : calloc(c.n ? c.n : 1, sizeof *ptrs);
  Archnet__BlobRef *refs = rc ? NULL : calloc(c.n ? c.n * 3 : 1, sizeof *refs);
  if (rc || !infos || !ptrs || !refs) {
    rc = an_reply_rc(s, req->request_id, rc ? rc : UV_ENOMEM, "list tasks");
    goto done;
  }
  for (size_t i = 0; i < c.n; i++) {
    an_task_info(&c.tasks[i], c.role, &infos[i], &refs[3 * i], &refs[3 * i + 1],
                 &refs[3 * i + 2]);
    ptrs[i] = &infos[i];
  }
  tl.n_tasks = c.n;
  tl.tasks = ptrs;
  env.request_id = req->request_id;
  env.body_case = ARCHNET__ENVELOPE__BODY_TASK_LIST;
  env.task_list = &tl;
  rc = an_session_send(s, &env);
done:
  free(infos);
  free(ptrs);
  free(refs);
  free(c.tasks);
  return rc;
}

static int an_on_task_request(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  an_task_t t;
  int rc;
  int64_t node = (int64_t)an_session_node(s);
  switch (req->body_case) {
  case ARCHNET__ENVELOPE__BODY_TASK_STATUS:
    rc = an_visible_task(svc, s, (int64_t)req->task_status->task_id, &t);
    break;
  case ARCHNET__ENVELOPE__BODY_CANCEL_TASK:
    if (an_session_role(s) != AN_ROLE_PUBLISHER)
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                              "only the task's publisher cancels it");
    rc = an_store_task_cancel(svc->p.store, (int64_t)req->cancel_task->task_id, node,
                              an_now_s());
    if (rc == 0) {
      AN_LOG(AN_LOG_INFO, an_session_name(s), "task %llu cancelled; bounty refunded",
             (unsigned long long)req->cancel_task->task_id);
      rc = an_store_task_get(svc->p.store, (int64_t)req->cancel_task->task_id, &t);
    }
    break;
  default: /* MODEL_RECEIVED */
    rc = an_visible_task(svc, s, (int64_t)req->model_received->task_id, &t);
    if (rc == 0 && an_session_role(s) != AN_ROLE_PUBLISHER)
      rc = AN_EFORBIDDEN;
    if (rc == 0 && (rc = an_store_task_delivered(svc->p.store, t.id, an_now_s())) == 0)
      rc = an_store_task_get(svc->p.store, t.id, &t);
    break;
  }
  if (rc)
    return an_reply_rc(s, req->request_id, rc, an_wire_body_name(req));
  return an_send_task(svc, s, req->request_id, &t);
}

static int an_on_money(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  int rc;
  env.request_id = req->request_id;
  if (req->body_case == ARCHNET__ENVELOPE__BODY_BALANCE_QUERY) {
    Archnet__Balance b = ARCHNET__BALANCE__INIT;
    if ((rc = an_store_balance(svc->p.store, (int64_t)an_session_node(s), &b.credits)) != 0)
      return an_reply_rc(s, req->request_id, rc, "balance");
    env.body_case = ARCHNET__ENVELOPE__BODY_BALANCE;
    env.balance = &b;
    return an_session_send(s, &env);
  }
  an_receipt_t r;
  an_task_t t;
  Archnet__Receipt rp = ARCHNET__RECEIPT__INIT;
  int64_t task = (int64_t)req->receipt_query->task_id;
  if ((rc = an_store_receipt(svc->p.store, task, &r)) != 0 ||
      (rc = an_store_task_get(svc->p.store, task, &t)) != 0)
    return an_reply_rc(s, req->request_id, rc, "receipt");
  int64_t node = (int64_t)an_session_node(s);
  if (an_session_role(s) != AN_ROLE_ADMIN && r.worker_id != node && t.spec.publisher != node)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                            "that receipt is not yours");
  an_receipt_doc_t doc = {.transfer_id = (uint64_t)r.transfer_id,
                          .task_id = (uint64_t)r.task_id,
                          .worker_id = (uint64_t)r.worker_id,
                          .amount = r.amount,
                          .fee = r.fee,
                          .time = r.time};
  char err[300];
  if (!svc->p.receipt_key)
    snprintf(err, sizeof err, "no key to sign receipts with");
  if (!svc->p.receipt_key || an_receipt_sign(&doc, svc->p.receipt_key, err, sizeof err) != 0) {
    AN_LOG(AN_LOG_ERROR, an_session_name(s), "task %lld: %s", (long long)task, err);
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__INTERNAL,
                            "the broker could not sign the receipt");
  }
  rp.transfer_id = doc.transfer_id;
  rp.task_id = doc.task_id;
  rp.worker_id = doc.worker_id;
  rp.amount = doc.amount;
  rp.fee = doc.fee;
  rp.time = doc.time;
  rp.signature.data = doc.signature;
  rp.signature.len = doc.signature_len;
  rp.broker_key.data = doc.broker_key;
  rp.broker_key.len = doc.broker_key_len;
  env.body_case = ARCHNET__ENVELOPE__BODY_RECEIPT;
  env.receipt = &rp;
  return an_session_send(s, &env);
}

static int an_on_enroll(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__EnrollOk ok = ARCHNET__ENROLL_OK__INIT;
  char secret[AN_DIGEST_HEX], name[64];
  int64_t id;
  an_role_t role;
  size_t i = 0;
  const char *in = req->enroll->name ? req->enroll->name : "";
  for (; in[i] && i + 1 < sizeof name; i++) /* a display name: printable ASCII */
    name[i] = in[i] >= 0x20 && in[i] < 0x7f ? in[i] : '?';
  name[i] = '\0';
  int rc = an_store_enroll(svc->p.store, req->enroll->token ? req->enroll->token : "", name,
                           an_now_s(), &id, &role, secret);
  if (rc) {
    AN_LOG(AN_LOG_WARN, an_session_name(s), "enrollment refused: %s", an_strerror(rc));
    return an_reply_rc(s, req->request_id, rc, "enroll");
  }
  AN_LOG(AN_LOG_INFO, an_session_name(s), "node %lld '%s' enrolled", (long long)id, name);
  ok.node_id = (uint64_t)id;
  ok.secret = secret;
  ok.role = (Archnet__Role)role;
  env.request_id = req->request_id;
  env.body_case = ARCHNET__ENVELOPE__BODY_ENROLL_OK;
  env.enroll_ok = &ok;
  return an_session_send(s, &env);
}

/* ---- dispatch ---- */

int an_service_handle(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req) {
  an_role_t role = an_session_role(s);
  uint64_t node = an_session_node(s);
  int publisher = role == AN_ROLE_PUBLISHER, worker = role == AN_ROLE_WORKER;
  int (*handler)(an_service_t *, an_session_t *, const Archnet__Envelope *) = NULL;
  int allowed = 1;
  /* Which request goes where, and which role may send it. */
  switch (req->body_case) {
  case ARCHNET__ENVELOPE__BODY_ENROLL:
    if (node)
      return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__WRONG_STATE,
                              "this connection is already enrolled as node %llu",
                              (unsigned long long)node);
    return an_on_enroll(svc, s, req);
  case ARCHNET__ENVELOPE__BODY_SUBMIT_TASK:
    handler = an_on_submit_task, allowed = publisher;
    break;
  case ARCHNET__ENVELOPE__BODY_BEGIN_BLOB:
    handler = an_on_begin_blob;
    break;
  case ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK:
    handler = an_on_put_chunk;
    break;
  case ARCHNET__ENVELOPE__BODY_GET_BLOB_CHUNK:
    handler = an_on_get_chunk;
    break;
  case ARCHNET__ENVELOPE__BODY_TASK_STATUS:
  case ARCHNET__ENVELOPE__BODY_CANCEL_TASK:
  case ARCHNET__ENVELOPE__BODY_MODEL_RECEIVED:
    handler = an_on_task_request;
    break;
  case ARCHNET__ENVELOPE__BODY_LIST_TASKS:
    handler = an_on_list_tasks;
    break;
  case ARCHNET__ENVELOPE__BODY_LEASE_REQUEST:
    handler = an_on_lease_request, allowed = worker;
    break;
  case ARCHNET__ENVELOPE__BODY_HEARTBEAT:
    handler = an_on_heartbeat, allowed = worker;
    break;
  case ARCHNET__ENVELOPE__BODY_SUBMIT_MODEL:
    handler = an_on_submit_model, allowed = worker;
    break;
  case ARCHNET__ENVELOPE__BODY_BALANCE_QUERY:
  case ARCHNET__ENVELOPE__BODY_RECEIPT_QUERY:
    handler = an_on_money;
    break;
  default:
    /* Not fatal: a newer client may try something and fall back. */
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__UNSUPPORTED_REQUEST,
                            "this broker does not handle '%s' requests",
                            an_wire_body_name(req));
  }
  if (!node)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__UNAUTHENTICATED,
                            "'%s' needs a node's credentials in Hello (enroll first)",
                            an_wire_body_name(req));
  if (!allowed)
    return an_session_error(s, req->request_id, ARCHNET__ERROR__CODE__FORBIDDEN,
                            "'%s' is not for this node's role", an_wire_body_name(req));
  return handler(svc, s, req);
}

/* The failure record of the address in `peer`, made if needed. */
static auth_failures_t *an_auth_slot(an_service_t *svc, const char *peer, int64_t now) {
  char ip[64];
  snprintf(ip, sizeof ip, "%s", peer ? peer : "");
  char *colon = strrchr(ip, ':'); /* "1.2.3.4:5" or "[::1]:5" */
  if (colon)
    *colon = '\0';
  auth_failures_t *oldest = &svc->auth[0];
  for (int i = 0; i < AN_AUTH_SLOTS; i++) {
    auth_failures_t *a = &svc->auth[i];
    if (a->address[0] && strcmp(a->address, ip) == 0)
      return a;
    if (a->window_start < oldest->window_start)
      oldest = a;
  }
  memset(oldest, 0, sizeof *oldest);
  snprintf(oldest->address, sizeof oldest->address, "%s", ip);
  oldest->window_start = now;
  return oldest;
}

int an_service_authenticate(an_service_t *svc, uint64_t node_id, const char *secret,
                            const char *peer, an_role_t *role) {
  int64_t now = an_now_s();
  auth_failures_t *a = an_auth_slot(svc, peer, now);
  if (a->blocked_until > now)
    return UV_EAGAIN;
  int rc = node_id > (uint64_t)INT64_MAX || !secret
               ? AN_EAUTH
               : an_store_authenticate(svc->p.store, (int64_t)node_id, secret, role);
  if (rc == 0)
    return 0;
  AN_STAT(svc, auth_failures, 1);
  if (now - a->window_start >= AN_AUTH_WINDOW) {
    a->window_start = now;
    a->count = 0;
  }
  if (++a->count > AN_AUTH_MAX_FAILURES) {
    a->blocked_until = now + AN_AUTH_WINDOW;
    AN_LOG(AN_LOG_WARN, "service", "%s: over %d failed authentications in %d s; refusing it "
                                   "for %d s",
           a->address, AN_AUTH_MAX_FAILURES, AN_AUTH_WINDOW, AN_AUTH_WINDOW);
  }
  return rc;
}

void an_service_session_gone(an_service_t *svc, an_session_t *s) {
  an_list_t *it, *next;
  for (it = svc->waiters.next; it != &svc->waiters; it = next) {
    waiter_t *w = AN_CONTAINER_OF(it, waiter_t, link);
    next = it->next;
    if (w->session == s)
      an_waiter_drop(w);
  }
}

int an_service_new(uv_loop_t *loop, const an_service_params_t *p, an_service_t **out, char *err,
                   size_t errlen) {
  an_service_t *svc = calloc(1, sizeof *svc);
  *out = NULL;
  if (!svc || !(svc->exe = strdup(p->exe))) {
    free(svc);
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  svc->loop = loop;
  svc->p = *p;
  svc->p.exe = svc->exe;
  if (!svc->p.max_chunk_bytes)
    svc->p.max_chunk_bytes = AN_MAX_CHUNK_DEFAULT;
  if (!svc->p.default_lease_seconds)
    svc->p.default_lease_seconds = 600;
  if (!svc->p.max_wait_seconds)
    svc->p.max_wait_seconds = 60;
  if (!svc->p.max_model_bytes)
    svc->p.max_model_bytes = (uint64_t)1 << 30;
  an_list_init(&svc->scoring);
  an_list_init(&svc->waiters);
  uv_timer_init(loop, &svc->expiry);
  svc->expiry.data = svc;
  uv_timer_start(&svc->expiry, an_expiry_tick, 1000, 1000);
  /* Validations a crash interrupted run again; a verdict is recorded once. */
  an_store_validating(svc->p.store, an_rescore, svc);
  *out = svc;
  return 0;
}

void an_service_commit_lost(an_service_t *svc) {
  /* The lost group may have held a verdict (the task is validating again,
   * its scorer gone): score it again. A lost lease expiry comes back with
   * the next tick; everything else was a request whose reply was dropped
   * with its connection, and the client asks again. */
  if (svc->stopping)
    return;
  AN_LOG(AN_LOG_WARN, "service", "a commit failed: scoring validating tasks again");
  if (an_store_validating(svc->p.store, an_rescore, svc) != 0)
    AN_LOG(AN_LOG_ERROR, "service", "cannot list validating tasks: %s",
           an_store_errmsg(svc->p.store));
}

void an_service_reconfigure(an_service_t *svc, const an_service_params_t *p) {
  an_service_params_t keep = svc->p;
  svc->p = *p;
  svc->p.store = keep.store;
  svc->p.blobs = keep.blobs;
  svc->p.exe = keep.exe;
  svc->p.stats = keep.stats;
  svc->p.receipt_key = keep.receipt_key; /* the identity changes only with a restart */
  if (!svc->p.max_chunk_bytes)
    svc->p.max_chunk_bytes = keep.max_chunk_bytes;
  if (!svc->p.default_lease_seconds)
    svc->p.default_lease_seconds = keep.default_lease_seconds;
  if (!svc->p.max_wait_seconds)
    svc->p.max_wait_seconds = keep.max_wait_seconds;
  if (!svc->p.max_model_bytes)
    svc->p.max_model_bytes = keep.max_model_bytes;
}

void an_service_stop(an_service_t *svc) {
  an_list_t *it, *next;
  if (svc->stopping)
    return;
  svc->stopping = 1;
  uv_timer_stop(&svc->expiry);
  uv_close((uv_handle_t *)&svc->expiry, NULL);
  for (it = svc->waiters.next; it != &svc->waiters; it = next) {
    next = it->next;
    an_waiter_drop(AN_CONTAINER_OF(it, waiter_t, link));
  }
}

void an_service_free(an_service_t *svc) {
  if (!svc)
    return;
  free(svc->exe);
  free(svc);
}
