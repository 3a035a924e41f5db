/* The broker's HTTP admin endpoint (see http.h).
 *
 * libmicrohttpd parses HTTP and runs one internal polling thread; every
 * request is answered in full from the access handler's first call, so no
 * per-request state outlives a call. The handler reads the store under a
 * mutex: with one polling thread it is never contended, but it keeps the
 * store connection single-threaded if the daemon is ever configured with a
 * thread pool. */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>
#include <uv.h>

#include "an_build_config.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net/addr.h"
#include "server/store.h"

#define AN_HTTP_DEFAULT_CONNECTIONS 32
#define AN_HTTP_DEFAULT_TIMEOUT_S 10
#define AN_HTTP_TASKS_DEFAULT 100
#define AN_HTTP_TASKS_MAX 1000 /* bounds the memory one /api/tasks request holds */

#define AN_HTTP_TYPE_TEXT "text/plain; charset=utf-8"
#define AN_HTTP_TYPE_JSON "application/json"
#define AN_HTTP_TYPE_METRICS "text/plain; version=0.0.4; charset=utf-8"

struct an_http {
  struct MHD_Daemon *daemon;
  an_store_t *store;           /* the endpoint's own connection; under store_lock */
  pthread_mutex_t store_lock;
  bool lock_ready;
  an_broker_stats_t *stats;    /* borrowed; may be NULL */
  bool loopback_only;          /* bound to loopback: Host headers are checked */
  char *dashboard_html;        /* built once at start */
  struct MHD_Response *dashboard; /* reused by every GET /; MHD counts its users */
  char address[64];
};

/* ---- the live counters ---- */

void an_broker_stats_init(an_broker_stats_t *s) {
  atomic_init(&s->connections_accepted, 0);
  atomic_init(&s->connections_closed, 0);
  atomic_init(&s->connections_refused, 0);
  atomic_init(&s->bytes_received, 0);
  atomic_init(&s->bytes_sent, 0);
  atomic_init(&s->auth_failures, 0);
  atomic_init(&s->leases_granted, 0);
  atomic_init(&s->leases_expired, 0);
  atomic_init(&s->uploads_started, 0);
  atomic_init(&s->uploads_completed, 0);
  atomic_init(&s->validations_started, 0);
  atomic_init(&s->validations_accepted, 0);
  atomic_init(&s->validations_rejected, 0);
  atomic_init(&s->payouts, 0);
  atomic_init(&s->payout_credits, 0);
}

/* One counter as Prometheus and the JSON API publish it. Counters of one
 * family (same metric name, different label) are adjacent. */
typedef struct an_counter_desc {
  const char *metric; /* Prometheus family name */
  const char *label;  /* `name="value"` inside the braces, or NULL */
  const char *key;    /* the JSON API's key */
  const char *help;
  size_t offset;      /* of the atomic in an_broker_stats_t */
  bool is_end;        /* counts the end of something another counter started */
} an_counter_desc_t;

#define AN_STAT(field) offsetof(an_broker_stats_t, field)

static const an_counter_desc_t an_counters[] = {
    {"archnet_connections_accepted_total", NULL, "connections_accepted",
     "Client connections accepted into a session.", AN_STAT(connections_accepted), false},
    {"archnet_connections_closed_total", NULL, "connections_closed",
     "Client sessions that ended, for any reason.", AN_STAT(connections_closed), true},
    {"archnet_connections_refused_total", NULL, "connections_refused",
     "Client connections turned away by the session limit.", AN_STAT(connections_refused),
     false},
    {"archnet_received_bytes_total", NULL, "bytes_received",
     "Bytes read from client connections.", AN_STAT(bytes_received), false},
    {"archnet_sent_bytes_total", NULL, "bytes_sent", "Bytes written to client connections.",
     AN_STAT(bytes_sent), false},
    {"archnet_auth_failures_total", NULL, "auth_failures",
     "Authentications refused (wrong, unknown or revoked credentials).", AN_STAT(auth_failures),
     false},
    {"archnet_leases_granted_total", NULL, "leases_granted", "Task leases handed to workers.",
     AN_STAT(leases_granted), false},
    {"archnet_leases_expired_total", NULL, "leases_expired",
     "Task leases that passed their deadline.", AN_STAT(leases_expired), false},
    {"archnet_uploads_started_total", NULL, "uploads_started",
     "Blob uploads begun (a resumed upload counts again).", AN_STAT(uploads_started), false},
    {"archnet_uploads_completed_total", NULL, "uploads_completed",
     "Blobs received in full, verified and stored.", AN_STAT(uploads_completed), false},
    {"archnet_validations_started_total", NULL, "validations_started",
     "Model validations started.", AN_STAT(validations_started), false},
    {"archnet_validations_total", "result=\"accepted\"", "validations_accepted",
     "Model validations finished, by verdict.", AN_STAT(validations_accepted), true},
    {"archnet_validations_total", "result=\"rejected\"", "validations_rejected",
     "Model validations finished, by verdict.", AN_STAT(validations_rejected), true},
    {"archnet_payouts_total", NULL, "payouts", "Payments made to workers.", AN_STAT(payouts),
     false},
    {"archnet_payout_credits_total", NULL, "payout_credits",
     "Credits paid to workers, broker fees excluded.", AN_STAT(payout_credits), false},
};

#define AN_N_COUNTERS (sizeof an_counters / sizeof an_counters[0])

typedef struct an_stats_view {
  uint64_t value[AN_N_COUNTERS];
  uint64_t connections_open;
  uint64_t validations_running;
} an_stats_view_t;

static uint64_t an_stats_load(const an_broker_stats_t *s, size_t offset) {
  /* The loop only ever adds, and the cast keeps the atomic access. */
  return atomic_load((const atomic_uint_fast64_t *)((const char *)s + offset));
}

static uint64_t an_stats_value(const an_stats_view_t *v, size_t offset) {
  uint64_t value = 0;
  for (size_t i = 0; i < AN_N_COUNTERS; i++)
    if (an_counters[i].offset == offset)
      value = v->value[i];
  return value;
}

/* a - b, or 0 if a broker bug ever made b overtake a. */
static uint64_t an_difference(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

/* Reads every counter. The "end" counters are read before the others:
 * the loop increments a start before its end, and these loads are
 * sequentially consistent, so every end seen here has its start seen too
 * and the derived gauges cannot dip below the truth. */
static void an_stats_read(const an_broker_stats_t *s, an_stats_view_t *v) {
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < AN_N_COUNTERS; i++)
      if (an_counters[i].is_end == (pass == 0))
        v->value[i] = an_stats_load(s, an_counters[i].offset);
  v->connections_open = an_difference(an_stats_value(v, AN_STAT(connections_accepted)),
                                      an_stats_value(v, AN_STAT(connections_closed)));
  v->validations_running =
      an_difference(an_stats_value(v, AN_STAT(validations_started)),
                    an_stats_value(v, AN_STAT(validations_accepted)) +
                        an_stats_value(v, AN_STAT(validations_rejected)));
}

/* ---- a growing text buffer (for /metrics) ---- */

typedef struct an_text {
  char *base;
  size_t len, cap;
  bool failed; /* out of memory: later appends do nothing */
} an_text_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void an_text_printf(an_text_t *t, const char *fmt, ...) {
  va_list ap;
  size_t need, cap;
  char *grown;
  int n;

  if (t->failed)
    goto done;
  /* Measure first (nothing is written when the buffer is too small), grow,
   * then write. */
  va_start(ap, fmt);
  n = vsnprintf(t->base ? t->base + t->len : NULL, t->cap - t->len, fmt, ap);
  va_end(ap);
  if (n < 0) {
    t->failed = true;
    goto done;
  }
  need = t->len + (size_t)n + 1;
  if (need > t->cap) {
    for (cap = t->cap ? t->cap : 4096; cap < need; cap *= 2)
      ;
    if (!(grown = realloc(t->base, cap))) {
      t->failed = true;
      goto done;
    }
    t->base = grown;
    t->cap = cap;
    va_start(ap, fmt);
    vsnprintf(t->base + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
  }
  t->len += (size_t)n;
done:
  return;
}

static void an_metric_family(an_text_t *t, const char *name, const char *type, const char *help) {
  an_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---- reading the store ---- */

static const char *an_role_label(an_role_t role) {
  static const char *const labels[] = {
      [AN_ROLE_PUBLISHER] = "publisher", [AN_ROLE_WORKER] = "worker", [AN_ROLE_ADMIN] = "admin"};
  unsigned i = (unsigned)role;
  return i < sizeof labels / sizeof labels[0] && labels[i] ? labels[i] : "unknown";
}

/* By the store's contract a task holds its whole bounty in escrow from
 * creation until it is paid, refunded or cancelled. */
static bool an_task_holds_escrow(an_task_state_t s) {
  return s == AN_TASK_UPLOADING || s == AN_TASK_QUEUED || s == AN_TASK_LEASED ||
         s == AN_TASK_VALIDATING;
}

static bool an_task_has_leaseholder(an_task_state_t s) {
  return s == AN_TASK_LEASED || s == AN_TASK_VALIDATING;
}

/* What /metrics shows from the store. The reads are separate store calls,
 * not one snapshot: a scrape may mix states a few milliseconds apart. */
typedef struct an_store_view {
  int64_t tasks[AN_TASK_STATE_COUNT];
  int64_t nodes[AN_ROLE_ADMIN + 1][2]; /* [role][revoked] */
  int64_t node_credits;
  int64_t escrow;
  bool ledger_ok;
} an_store_view_t;

static int an_view_add_node(const an_node_info_t *n, void *arg) {
  an_store_view_t *v = arg;
  if ((unsigned)n->role <= AN_ROLE_ADMIN)
    v->nodes[n->role][n->revoked ? 1 : 0]++;
  v->node_credits += n->balance;
  return 0;
}

static int an_add_escrow(const an_task_t *t, void *arg) {
  int64_t *escrow = arg;
  if (an_task_holds_escrow(t->state))
    *escrow += t->spec.bounty;
  return 0;
}

static int an_store_view_read(an_store_t *store, an_store_view_t *v) {
  char violation[256] = "";
  int rc;

  memset(v, 0, sizeof *v);
  if ((rc = an_store_task_counts(store, v->tasks)) != 0 ||
      (rc = an_store_nodes(store, an_view_add_node, v)) != 0 ||
      (rc = an_store_tasks(store, 0, an_add_escrow, &v->escrow)) != 0)
    goto fail;
  /* A violation is a finding to publish, not a failed scrape. (The store
   * reports a violation and an SQLite failure during the check alike, as
   * AN_EDB with a message: either way the invariants were not confirmed.) */
  v->ledger_ok = an_store_ledger_check(store, violation, sizeof violation) == 0;
fail:
  return rc;
}

/* ---- responses ---- */

typedef struct an_reply {
  unsigned status;
  const char *type;
  char *body;     /* heap, handed to MHD; or NULL for `fixed` */
  const char *fixed;
  size_t len;
} an_reply_t;

static void an_reply_fixed(an_reply_t *r, unsigned status, const char *text) {
  free(r->body);
  r->body = NULL;
  r->status = status;
  r->type = AN_HTTP_TYPE_TEXT;
  r->fixed = text;
  r->len = strlen(text);
}

/* Takes `j` (decref'd here) as the reply's body; NULL (a builder ran out
 * of memory) or a failed dump answers 500. */
static void an_reply_json(an_reply_t *r, json_t *j) {
  char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(j);
  if (text) {
    free(r->body);
    r->status = MHD_HTTP_OK;
    r->type = AN_HTTP_TYPE_JSON;
    r->body = text;
    r->fixed = NULL;
    r->len = strlen(text);
  } else {
    AN_LOG(AN_LOG_WARN, "http", "could not build a JSON answer (out of memory?)");
    an_reply_fixed(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "could not build the answer\n");
  }
}

static void an_reply_store_error(an_reply_t *r, an_http_t *h, int rc, const char *what) {
  AN_LOG(AN_LOG_WARN, "http", "%s: %s (%s)", what, an_strerror(rc), an_store_errmsg(h->store));
  an_reply_fixed(r, MHD_HTTP_INTERNAL_SERVER_ERROR,
                 "the state database failed; see the broker's log\n");
}

/* ---- GET /metrics ---- */

static void an_metrics_store(an_text_t *t, const an_store_view_t *v) {
  static const an_role_t roles[] = {AN_ROLE_PUBLISHER, AN_ROLE_WORKER, AN_ROLE_ADMIN};

  an_metric_family(t, "archnet_tasks", "gauge", "Tasks by state.");
  for (int s = 0; s < AN_TASK_STATE_COUNT; s++)
    an_text_printf(t, "archnet_tasks{state=\"%s\"} %" PRId64 "\n",
                   an_task_state_name((an_task_state_t)s), v->tasks[s]);
  an_metric_family(t, "archnet_nodes", "gauge", "Enrolled nodes by role and status.");
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
    for (int revoked = 0; revoked < 2; revoked++)
      an_text_printf(t, "archnet_nodes{role=\"%s\",status=\"%s\"} %" PRId64 "\n",
                     an_role_label(roles[i]), revoked ? "revoked" : "active",
                     v->nodes[roles[i]][revoked]);
  an_metric_family(t, "archnet_node_balance_credits", "gauge",
                   "Sum of all nodes' balances, in credits.");
  an_text_printf(t, "archnet_node_balance_credits %" PRId64 "\n", v->node_credits);
  an_metric_family(t, "archnet_escrow_credits", "gauge",
                   "Credits held in escrow for tasks not yet paid, refunded or cancelled.");
  an_text_printf(t, "archnet_escrow_credits %" PRId64 "\n", v->escrow);
  an_metric_family(t, "archnet_ledger_consistent", "gauge",
                   "1 if the ledger's invariants were checked and hold, else 0.");
  an_text_printf(t, "archnet_ledger_consistent %d\n", v->ledger_ok ? 1 : 0);
}

static void an_metrics_live(an_text_t *t, const an_broker_stats_t *stats) {
  an_stats_view_t v;

  an_stats_read(stats, &v);
  an_metric_family(t, "archnet_connections_open", "gauge", "Client sessions open now.");
  an_text_printf(t, "archnet_connections_open %" PRIu64 "\n", v.connections_open);
  an_metric_family(t, "archnet_validations_running", "gauge", "Model validations running now.");
  an_text_printf(t, "archnet_validations_running %" PRIu64 "\n", v.validations_running);
  for (size_t i = 0; i < AN_N_COUNTERS; i++) {
    const an_counter_desc_t *c = &an_counters[i];
    if (i == 0 || strcmp(an_counters[i - 1].metric, c->metric) != 0)
      an_metric_family(t, c->metric, "counter", c->help);
    if (c->label)
      an_text_printf(t, "%s{%s} %" PRIu64 "\n", c->metric, c->label, v.value[i]);
    else
      an_text_printf(t, "%s %" PRIu64 "\n", c->metric, v.value[i]);
  }
}

static void an_get_metrics(an_http_t *h, an_reply_t *r) {
  an_store_view_t view;
  an_text_t t = {0};
  int rc;

  pthread_mutex_lock(&h->store_lock);
  rc = an_store_view_read(h->store, &view);
  pthread_mutex_unlock(&h->store_lock);
  if (rc != 0) {
    an_reply_store_error(r, h, rc, "metrics");
    goto done;
  }
  an_metric_family(&t, "archnet_info", "gauge", "The broker's version, as a label.");
  an_text_printf(&t, "archnet_info{version=\"%s\"} 1\n", AN_VERSION);
  an_metrics_store(&t, &view);
  if (h->stats)
    an_metrics_live(&t, h->stats);
  if (t.failed) {
    an_reply_fixed(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    goto done;
  }
  r->status = MHD_HTTP_OK;
  r->type = AN_HTTP_TYPE_METRICS;
  r->body = t.base;
  r->len = t.len;
  t.base = NULL;
done:
  free(t.base);
}

/* ---- GET /api/... ---- */

/* Adds `value` under `key`; a failure (out of memory) is remembered in
 * *ok so a builder checks once at the end. */
static void an_json_put(json_t *obj, const char *key, json_t *value, bool *ok) {
  if (!value || json_object_set_new(obj, key, value) != 0)
    *ok = false;
}

/* The length of the well-formed UTF-8 character at p (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or 0. */
static size_t an_utf8_char_len(const unsigned char *p, size_t avail) {
  unsigned char lead = p[0], lo = 0x80, hi = 0xBF;
  size_t len = 0;

  if (lead < 0x80)
    len = 1;
  else if (lead >= 0xC2 && lead <= 0xDF)
    len = 2;
  else if (lead >= 0xE0 && lead <= 0xEF)
    len = 3;
  else if (lead >= 0xF0 && lead <= 0xF4)
    len = 4;
  /* The second byte's range is narrower after these leads. */
  if (lead == 0xE0)
    lo = 0xA0;
  else if (lead == 0xED)
    hi = 0x9F;
  else if (lead == 0xF0)
    lo = 0x90;
  else if (lead == 0xF4)
    hi = 0x8F;
  if (len > avail)
    len = 0;
  if (len > 1 && (p[1] < lo || p[1] > hi))
    len = 0;
  for (size_t i = 2; i < len; i++)
    if ((p[i] & 0xC0) != 0x80)
      len = 0;
  return len;
}

/* A JSON string for text that came from clients (node names, rejection
 * reasons). jansson refuses malformed UTF-8, and one bad name must not
 * take the whole answer down: each byte that does not start a
 * well-formed character becomes U+FFFD. NULL only when out of memory. */
static json_t *an_json_text(const char *text) {
  static const char replacement[] = "\xEF\xBF\xBD";
  const unsigned char *p = (const unsigned char *)text;
  size_t n = strlen(text), out = 0;
  json_t *j = json_string(text);
  char *clean = NULL;

  if (j || !(clean = malloc(3 * n + 1)))
    goto done;
  for (size_t i = 0; i < n;) {
    size_t len = an_utf8_char_len(p + i, n - i);
    if (len == 0) {
      memcpy(clean + out, replacement, 3);
      out += 3;
      i++;
    } else {
      memcpy(clean + out, p + i, len);
      out += len;
      i += len;
    }
  }
  j = json_stringn(clean, out);
done:
  free(clean);
  return j;
}

/* A task as the API shows it: its life cycle and terms, never the
 * datasets' digests (whoever holds a candidate file could confirm it is a
 * task's hidden validation set). */
static json_t *an_task_json(const an_task_t *t) {
  json_t *j = json_object(), *input = NULL;
  bool ok = j != NULL;

  if (!ok)
    goto done;
  an_json_put(j, "id", json_integer(t->id), &ok);
  an_json_put(j, "state", json_string(an_task_state_name(t->state)), &ok);
  an_json_put(j, "publisher", json_integer(t->spec.publisher), &ok);
  an_json_put(j, "bounty", json_integer(t->spec.bounty), &ok);
  an_json_put(j, "min_accuracy", json_real(t->spec.min_accuracy), &ok);
  an_json_put(j, "attempts", json_integer(t->attempts), &ok);
  an_json_put(j, "max_attempts", json_integer(t->spec.max_attempts), &ok);
  an_json_put(j, "lease_seconds", json_integer(t->spec.lease_seconds), &ok);
  an_json_put(j, "worker", t->worker ? json_integer(t->worker) : json_null(), &ok);
  an_json_put(j, "lease_deadline",
              an_task_has_leaseholder(t->state) ? json_integer(t->lease_deadline) : json_null(),
              &ok);
  an_json_put(j, "progress", json_real(t->progress), &ok);
  an_json_put(j, "accuracy", t->accuracy >= 0 ? json_real(t->accuracy) : json_null(), &ok);
  an_json_put(j, "model", t->model[0] ? json_string(t->model) : json_null(), &ok);
  an_json_put(j, "reason", t->reason[0] ? an_json_text(t->reason) : json_null(), &ok);
  input = json_pack("[III]", (json_int_t)t->spec.input_c, (json_int_t)t->spec.input_h,
                    (json_int_t)t->spec.input_w);
  an_json_put(j, "input", input, &ok);
  an_json_put(j, "classes", json_integer(t->spec.classes), &ok);
  an_json_put(j, "needs_gpu", json_boolean(t->spec.needs_gpu), &ok);
  an_json_put(j, "created", json_integer(t->created), &ok);
  an_json_put(j, "updated", json_integer(t->updated), &ok);
done:
  if (!ok) {
    json_decref(j);
    j = NULL;
  }
  return j;
}

/* The newest `limit` tasks matching `state` (-1: any), kept in a ring as
 * the store walks them oldest first. */
typedef struct an_task_ring {
  int state;
  size_t limit;
  an_task_t *slot;
  size_t matched;
} an_task_ring_t;

static int an_task_ring_add(const an_task_t *t, void *arg) {
  an_task_ring_t *ring = arg;
  if (ring->state < 0 || (int)t->state == ring->state)
    ring->slot[ring->matched++ % ring->limit] = *t;
  return 0;
}

/* Parses ?limit= and ?state=; false (with a 400 in r) if either is bad. */
static bool an_tasks_query(struct MHD_Connection *c, an_task_ring_t *ring, an_reply_t *r) {
  const char *limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
  const char *state = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "state");
  bool ok = true;

  ring->state = -1;
  ring->limit = AN_HTTP_TASKS_DEFAULT;
  if (limit) {
    char *end;
    long n = strtol(limit, &end, 10);
    if (end == limit || *end != '\0' || n < 1 || n > AN_HTTP_TASKS_MAX) {
      an_reply_fixed(r, MHD_HTTP_BAD_REQUEST, "limit must be an integer from 1 to 1000\n");
      ok = false;
    } else {
      ring->limit = (size_t)n;
    }
  }
  if (ok && state) {
    for (int s = 0; s < AN_TASK_STATE_COUNT; s++)
      if (strcmp(state, an_task_state_name((an_task_state_t)s)) == 0)
        ring->state = s;
    if (ring->state < 0) {
      an_reply_fixed(r, MHD_HTTP_BAD_REQUEST, "unknown task state\n");
      ok = false;
    }
  }
  return ok;
}

static void an_get_tasks(an_http_t *h, struct MHD_Connection *c, an_reply_t *r) {
  an_task_ring_t ring = {0};
  int64_t counts[AN_TASK_STATE_COUNT];
  json_t *root = NULL, *by_state = NULL, *list = NULL;
  bool ok;
  size_t shown;
  int rc;

  if (!an_tasks_query(c, &ring, r))
    goto done;
  if (!(ring.slot = calloc(ring.limit, sizeof *ring.slot))) {
    an_reply_fixed(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    goto done;
  }
  pthread_mutex_lock(&h->store_lock);
  if ((rc = an_store_task_counts(h->store, counts)) == 0)
    rc = an_store_tasks(h->store, 0, an_task_ring_add, &ring);
  pthread_mutex_unlock(&h->store_lock);
  if (rc != 0) {
    an_reply_store_error(r, h, rc, "api/tasks");
    goto done;
  }

  root = json_object();
  ok = root != NULL;
  if (ok) {
    an_json_put(root, "now", json_integer((json_int_t)time(NULL)), &ok);
    by_state = json_object();
    an_json_put(root, "counts", by_state, &ok); /* on failure by_state is freed: ok false */
    an_json_put(root, "matched", json_integer((json_int_t)ring.matched), &ok);
    list = json_array();
    an_json_put(root, "tasks", list, &ok);
  }
  for (int s = 0; ok && s < AN_TASK_STATE_COUNT; s++)
    an_json_put(by_state, an_task_state_name((an_task_state_t)s), json_integer(counts[s]), &ok);
  /* Newest first: the dashboard's reader wants the recent ones on top. */
  shown = ring.matched < ring.limit ? ring.matched : ring.limit;
  for (size_t i = 0; ok && i < shown; i++) {
    const an_task_t *t = &ring.slot[(ring.matched - 1 - i) % ring.limit];
    if (json_array_append_new(list, an_task_json(t)) != 0)
      ok = false;
  }
  if (!ok) {
    json_decref(root);
    root = NULL; /* an_reply_json answers NULL with a 500 */
  }
  an_reply_json(r, root);
done:
  free(ring.slot);
}

/* /api/nodes: every node, and for workers the tasks they hold a lease on. */
typedef struct an_nodes_build {
  json_t *list;
  json_t *by_id; /* "id" -> the node's object in list (borrowed) */
  bool ok;
} an_nodes_build_t;

static int an_nodes_add(const an_node_info_t *n, void *arg) {
  an_nodes_build_t *b = arg;
  json_t *j = json_object();
  char key[24];

  b->ok = b->ok && j != NULL;
  if (b->ok) {
    an_json_put(j, "id", json_integer(n->id), &b->ok);
    an_json_put(j, "name", an_json_text(n->name), &b->ok);
    an_json_put(j, "role", json_string(an_role_label(n->role)), &b->ok);
    an_json_put(j, "revoked", json_boolean(n->revoked), &b->ok);
    an_json_put(j, "created", json_integer(n->created), &b->ok);
    an_json_put(j, "balance", json_integer(n->balance), &b->ok);
    an_json_put(j, "holding", json_array(), &b->ok);
    snprintf(key, sizeof key, "%" PRId64, n->id);
    if (json_object_set(b->by_id, key, j) != 0 || json_array_append(b->list, j) != 0)
      b->ok = false;
  }
  json_decref(j);
  return b->ok ? 0 : 1;
}

static int an_nodes_add_lease(const an_task_t *t, void *arg) {
  an_nodes_build_t *b = arg;
  char key[24];
  json_t *node;

  if (an_task_has_leaseholder(t->state) && t->worker) {
    snprintf(key, sizeof key, "%" PRId64, t->worker);
    node = json_object_get(b->by_id, key);
    if (node && json_array_append_new(json_object_get(node, "holding"), json_integer(t->id)))
      b->ok = false;
  }
  return b->ok ? 0 : 1;
}

static void an_get_nodes(an_http_t *h, an_reply_t *r) {
  an_nodes_build_t b = {.list = json_array(), .by_id = json_object(), .ok = true};
  json_t *root = NULL;
  int rc = 0;

  if (!b.list || !b.by_id) {
    an_reply_fixed(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    goto done;
  }
  pthread_mutex_lock(&h->store_lock);
  if ((rc = an_store_nodes(h->store, an_nodes_add, &b)) == 0 && b.ok)
    rc = an_store_tasks(h->store, 0, an_nodes_add_lease, &b);
  pthread_mutex_unlock(&h->store_lock);
  if (rc != 0) {
    an_reply_store_error(r, h, rc, "api/nodes");
    goto done;
  }
  if (b.ok && (root = json_object()) != NULL) {
    an_json_put(root, "now", json_integer((json_int_t)time(NULL)), &b.ok);
    an_json_put(root, "nodes", json_incref(b.list), &b.ok);
  }
  if (!b.ok) {
    json_decref(root);
    root = NULL;
  }
  an_reply_json(r, root);
done:
  json_decref(b.list);
  json_decref(b.by_id);
}

/* /api/ledger: balances, escrow and the invariants' verdict. */
typedef struct an_ledger_build {
  json_t *balances;
  int64_t total;
  bool ok;
} an_ledger_build_t;

static int an_ledger_add(const an_node_info_t *n, void *arg) {
  an_ledger_build_t *b = arg;
  json_t *j = json_pack("{s:I, s:o, s:s, s:I}", "node", (json_int_t)n->id, "name",
                        an_json_text(n->name), "role", an_role_label(n->role), "balance",
                        (json_int_t)n->balance);
  if (!j || json_array_append_new(b->balances, j) != 0)
    b->ok = false;
  b->total += n->balance;
  return b->ok ? 0 : 1;
}

static void an_get_ledger(an_http_t *h, an_reply_t *r) {
  an_ledger_build_t b = {.balances = json_array(), .ok = true};
  char violation[256] = "";
  json_t *root = NULL;
  int64_t escrow = 0;
  int rc, check = 0;

  if (!b.balances) {
    an_reply_fixed(r, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    goto done;
  }
  pthread_mutex_lock(&h->store_lock);
  if ((rc = an_store_nodes(h->store, an_ledger_add, &b)) == 0 && b.ok &&
      (rc = an_store_tasks(h->store, 0, an_add_escrow, &escrow)) == 0)
    check = an_store_ledger_check(h->store, violation, sizeof violation);
  pthread_mutex_unlock(&h->store_lock);
  /* A failed check is reported, not turned into a 500: a violation and an
   * SQLite error during the check both come back as AN_EDB and a message. */
  if (check != 0 && violation[0] == '\0')
    snprintf(violation, sizeof violation, "%s", an_strerror(check));
  if (rc != 0) {
    an_reply_store_error(r, h, rc, "api/ledger");
    goto done;
  }
  if (b.ok && (root = json_object()) != NULL) {
    an_json_put(root, "now", json_integer((json_int_t)time(NULL)), &b.ok);
    an_json_put(root, "consistent", json_boolean(check == 0), &b.ok);
    an_json_put(root, "violation", check ? an_json_text(violation) : json_null(), &b.ok);
    an_json_put(root, "escrow", json_integer(escrow), &b.ok);
    an_json_put(root, "balances_total", json_integer(b.total), &b.ok);
    an_json_put(root, "balances", json_incref(b.balances), &b.ok);
  }
  if (!b.ok) {
    json_decref(root);
    root = NULL;
  }
  an_reply_json(r, root);
done:
  json_decref(b.balances);
}

static void an_get_stats(an_http_t *h, an_reply_t *r) {
  json_t *root = json_object();
  an_stats_view_t v;
  bool ok = root != NULL;

  if (ok) {
    an_json_put(root, "now", json_integer((json_int_t)time(NULL)), &ok);
    an_json_put(root, "available", json_boolean(h->stats != NULL), &ok);
  }
  if (ok && h->stats) {
    an_stats_read(h->stats, &v);
    an_json_put(root, "connections_open", json_integer((json_int_t)v.connections_open), &ok);
    an_json_put(root, "validations_running", json_integer((json_int_t)v.validations_running),
                &ok);
    for (size_t i = 0; i < AN_N_COUNTERS; i++)
      an_json_put(root, an_counters[i].key, json_integer((json_int_t)v.value[i]), &ok);
  }
  if (!ok) {
    json_decref(root);
    root = NULL;
  }
  an_reply_json(r, root);
}

/* ---- GET /: the dashboard ----
 *
 * One page, no external resources: the script fetches the JSON API and
 * fills the tables with textContent (names and rejection reasons come from
 * clients, so never innerHTML). Kept as lines because ISO C bounds the
 * length of one string literal. */
static const char *const an_dashboard_lines[] = {
    "<!doctype html>",
    "<html lang='en'>",
    "<head>",
    "<meta charset='utf-8'>",
    "<meta name='viewport' content='width=device-width, initial-scale=1'>",
    "<title>ArchNet broker</title>",
    "<style>",
    "body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }",
    "h1 { font-size: 1.3em; margin: 0 0 .2em; }",
    "h2 { font-size: 1.05em; margin: 1.5em 0 .4em; }",
    "table { border-collapse: collapse; width: 100%; background: #fff; }",
    "th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; }",
    "th { background: #f0f0f0; font-weight: 600; }",
    "td.num { text-align: right; font-variant-numeric: tabular-nums; }",
    ".pill { display: inline-block; margin: .3em .4em 0 0; padding: .15em .7em;",
    "        border-radius: 1em; background: #e6e6e6; }",
    ".bad { color: #b00020; } .good { color: #17693a; } .muted { color: #777; }",
    "</style>",
    "</head>",
    "<body>",
    "<h1>ArchNet broker</h1>",
    "<div id='updated' class='muted'>loading&hellip;</div>",
    "<div id='counts'></div>",
    "<div id='live'></div>",
    "<h2>Tasks <span id='tasks-note' class='muted'></span></h2>",
    "<table id='tasks'><thead><tr><th>id</th><th>state</th><th>publisher</th><th>bounty</th>",
    "<th>attempts</th><th>worker</th><th>lease left</th><th>progress</th><th>accuracy</th>",
    "<th>reason</th></tr></thead><tbody></tbody></table>",
    "<h2>Workers</h2>",
    "<table id='workers'><thead><tr><th>id</th><th>name</th><th>status</th>",
    "<th>holding</th><th>balance</th></tr></thead><tbody></tbody></table>",
    "<h2>Balances</h2>",
    "<div id='ledger'></div>",
    "<table id='balances'><thead><tr><th>node</th><th>name</th><th>role</th>",
    "<th>balance</th></tr></thead><tbody></tbody></table>",
    "<script>",
    "'use strict';",
    "const REFRESH_MS = 5000;",
    "const $ = (id) => document.getElementById(id);",
    "",
    "// A table row from [text, numeric?] pairs; text only, never markup.",
    "function row(cells) {",
    "  const tr = document.createElement('tr');",
    "  for (const [text, numeric] of cells) {",
    "    const td = document.createElement('td');",
    "    td.textContent = text === null || text === undefined ? '' : String(text);",
    "    if (numeric) td.className = 'num';",
    "    tr.appendChild(td);",
    "  }",
    "  return tr;",
    "}",
    "",
    "function fill(id, rows) {",
    "  $(id).querySelector('tbody').replaceChildren(...rows);",
    "}",
    "",
    "function pills(id, entries) {",
    "  $(id).replaceChildren(...entries.map(([name, value]) => {",
    "    const span = document.createElement('span');",
    "    span.className = 'pill';",
    "    span.textContent = name + ': ' + value;",
    "    return span;",
    "  }));",
    "}",
    "",
    "async function get(path) {",
    "  const response = await fetch(path, { cache: 'no-store' });",
    "  if (!response.ok) throw new Error(path + ': HTTP ' + response.status);",
    "  return response.json();",
    "}",
    "",
    "function render(tasks, nodes, ledger, stats) {",
    "  const names = new Map(nodes.nodes.map((n) => [n.id, n.name]));",
    "  const who = (id) => id === null ? '' : (names.get(id) || '') + ' #' + id;",
    "  pills('counts', Object.entries(tasks.counts));",
    "  pills('live', stats.available ? [",
    "    ['connections open', stats.connections_open],",
    "    ['leases granted', stats.leases_granted],",
    "    ['validations running', stats.validations_running],",
    "    ['uploads completed', stats.uploads_completed],",
    "    ['payouts', stats.payouts],",
    "  ] : []);",
    "  $('tasks-note').textContent = tasks.matched > tasks.tasks.length",
    "    ? '(newest ' + tasks.tasks.length + ' of ' + tasks.matched + ')' : '';",
    "  fill('tasks', tasks.tasks.map((t) => row([",
    "    [t.id, true], [t.state], [who(t.publisher)], [t.bounty, true],",
    "    [t.attempts + ' / ' + t.max_attempts, true], [who(t.worker)],",
    "    [t.lease_deadline === null ? '' :",
    "      Math.max(0, t.lease_deadline - tasks.now) + ' s', true],",
    "    [Math.round(t.progress * 100) + '%', true],",
    "    [t.accuracy === null ? '' : t.accuracy.toFixed(4), true], [t.reason],",
    "  ])));",
    "  fill('workers', nodes.nodes.filter((n) => n.role === 'worker').map((n) => row([",
    "    [n.id, true], [n.name], [n.revoked ? 'revoked' : 'active'],",
    "    [n.holding.join(', ')], [n.balance, true],",
    "  ])));",
    "  const verdict = document.createElement('p');",
    "  verdict.className = ledger.consistent ? 'good' : 'bad';",
    "  verdict.textContent = (ledger.consistent ? 'Ledger consistent' :",
    "    'Ledger invariant violated: ' + ledger.violation) +",
    "    '; escrow ' + ledger.escrow + ', balances ' + ledger.balances_total + ' credits.';",
    "  $('ledger').replaceChildren(verdict);",
    "  fill('balances', ledger.balances.map((b) => row([",
    "    [b.node, true], [b.name], [b.role], [b.balance, true],",
    "  ])));",
    "}",
    "",
    "async function refresh() {",
    "  const updated = $('updated');",
    "  try {",
    "    const parts = await Promise.all(",
    "      ['api/tasks', 'api/nodes', 'api/ledger', 'api/stats'].map(get));",
    "    render(...parts);",
    "    updated.className = 'muted';",
    "    updated.textContent = 'updated ' + new Date().toLocaleTimeString();",
    "  } catch (e) {",
    "    updated.className = 'bad';",
    "    updated.textContent = 'refresh failed: ' + e.message;",
    "  }",
    "  // After, not on an interval: a slow broker never gets requests piling up.",
    "  setTimeout(refresh, REFRESH_MS);",
    "}",
    "",
    "refresh();",
    "</script>",
    "</body>",
    "</html>",
};

static char *an_dashboard_join(size_t *len) {
  size_t n = sizeof an_dashboard_lines / sizeof an_dashboard_lines[0], total = 0;
  char *html, *p;

  for (size_t i = 0; i < n; i++)
    total += strlen(an_dashboard_lines[i]) + 1;
  if ((html = malloc(total + 1)) != NULL) {
    p = html;
    for (size_t i = 0; i < n; i++) {
      size_t l = strlen(an_dashboard_lines[i]);
      memcpy(p, an_dashboard_lines[i], l);
      p[l] = '\n';
      p += l + 1;
    }
    *p = '\0';
    *len = total;
  }
  return html;
}

/* Headers every answer carries: nothing cached (the state moves), nothing
 * sniffed into another type. */
static bool an_common_headers(struct MHD_Response *resp, const char *type) {
  return MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type) == MHD_YES &&
         MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") == MHD_YES &&
         MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff") == MHD_YES;
}

static int an_dashboard_build(an_http_t *h) {
  size_t len = 0;
  int rc = UV_ENOMEM;

  if (!(h->dashboard_html = an_dashboard_join(&len)))
    goto fail;
  if (!(h->dashboard = MHD_create_response_from_buffer(len, h->dashboard_html,
                                                       MHD_RESPMEM_PERSISTENT)))
    goto fail;
  /* Only the page's own inline style and script, and requests back to
   * this endpoint. */
  if (!an_common_headers(h->dashboard, "text/html; charset=utf-8") ||
      MHD_add_response_header(h->dashboard, "Content-Security-Policy",
                              "default-src 'none'; style-src 'unsafe-inline'; "
                              "script-src 'unsafe-inline'; connect-src 'self'; "
                              "frame-ancestors 'none'") != MHD_YES)
    goto fail;
  rc = 0;
fail:
  return rc;
}

/* ---- routing ---- */

/* Whether a Host header names this machine's loopback: "localhost",
 * 127.x.x.x or [::1], with or without a port. */
static bool an_host_is_loopback(const char *host) {
  char name[64];
  const char *end;
  size_t len;
  struct in_addr v4;
  bool ok = false;

  if (host[0] == '[') {
    end = strchr(host, ']');
    ok = end && (size_t)(end - host - 1) == 3 && memcmp(host + 1, "::1", 3) == 0 &&
         (end[1] == '\0' || end[1] == ':');
    goto done;
  }
  end = strchr(host, ':');
  len = end ? (size_t)(end - host) : strlen(host);
  if (len == 0 || len >= sizeof name)
    goto done;
  memcpy(name, host, len);
  name[len] = '\0';
  ok = strcasecmp(name, "localhost") == 0 ||
       (inet_pton(AF_INET, name, &v4) == 1 && (ntohl(v4.s_addr) >> 24) == 127);
done:
  return ok;
}

static void an_route(an_http_t *h, struct MHD_Connection *c, const char *url, an_reply_t *r) {
  if (strcmp(url, "/metrics") == 0)
    an_get_metrics(h, r);
  else if (strcmp(url, "/api/tasks") == 0)
    an_get_tasks(h, c, r);
  else if (strcmp(url, "/api/nodes") == 0)
    an_get_nodes(h, r);
  else if (strcmp(url, "/api/ledger") == 0)
    an_get_ledger(h, r);
  else if (strcmp(url, "/api/stats") == 0)
    an_get_stats(h, r);
  else
    an_reply_fixed(r, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* MHD's access handler. Every answer is queued on the first call, before
 * any request body is read; MHD then discards the body and closes. */
static enum MHD_Result an_http_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                          const char *method, const char *version,
                                          const char *upload_data, size_t *upload_data_size,
                                          void **req_cls) {
  an_http_t *h = cls;
  an_reply_t r = {0};
  struct MHD_Response *resp = NULL;
  const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
  bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
  enum MHD_Result result = MHD_NO;

  if (*req_cls != NULL) {
    /* Called again for the same request: body bytes arriving after the
     * answer was queued. Drop them. */
    *upload_data_size = 0;
    result = MHD_YES;
    goto done;
  }
  *req_cls = h;
  if (h->loopback_only && host && !an_host_is_loopback(host)) {
    /* A browser sends the name it resolved: anything else here is a page
     * on another site that rebound its name to 127.0.0.1. */
    an_reply_fixed(&r, MHD_HTTP_FORBIDDEN, "this endpoint answers only to a loopback Host\n");
  } else if (!get) {
    an_reply_fixed(&r, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD are allowed\n");
  } else if (strcmp(url, "/") == 0) {
    result = MHD_queue_response(c, MHD_HTTP_OK, h->dashboard);
    AN_LOG(AN_LOG_DEBUG, "http", "%s %s 200", method, url);
    goto done;
  } else {
    an_route(h, c, url, &r);
  }

  if (r.body)
    resp = MHD_create_response_from_buffer_with_free_callback(r.len, r.body, free);
  else
    resp = MHD_create_response_from_buffer(r.len, (void *)r.fixed, MHD_RESPMEM_PERSISTENT);
  if (!resp)
    goto done; /* MHD_NO: MHD closes the connection */
  r.body = NULL; /* the response owns it now */
  if (!an_common_headers(resp, r.type) ||
      (r.status == MHD_HTTP_METHOD_NOT_ALLOWED &&
       MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES))
    goto done;
  result = MHD_queue_response(c, r.status, resp);
  AN_LOG(AN_LOG_DEBUG, "http", "%s %s %u", method, url, r.status);
done:
  if (resp)
    MHD_destroy_response(resp); /* a queued response lives on inside MHD */
  free(r.body);
  return result;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
static void an_http_log(void *cls, const char *fmt, va_list ap) {
  char line[256];
  size_t n;

  vsnprintf(line, sizeof line, fmt, ap);
  n = strlen(line);
  while (n > 0 && line[n - 1] == '\n')
    line[--n] = '\0';
  AN_LOG(AN_LOG_WARN, "http", "%s", line);
}

/* ---- start and stop ---- */

static bool an_addr_is_loopback(const struct sockaddr_storage *ss) {
  bool loopback = false;
  if (ss->ss_family == AF_INET)
    loopback = (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
  else if (ss->ss_family == AF_INET6)
    loopback = IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
  return loopback;
}

static uint16_t an_addr_port(const struct sockaddr_storage *ss) {
  uint16_t port = 0;
  if (ss->ss_family == AF_INET)
    port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
  else if (ss->ss_family == AF_INET6)
    port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return port;
}

static void an_addr_set_port(struct sockaddr_storage *ss, uint16_t port) {
  if (ss->ss_family == AF_INET)
    ((struct sockaddr_in *)ss)->sin_port = htons(port);
  else if (ss->ss_family == AF_INET6)
    ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

int an_http_start(const an_http_params_t *params, an_http_t **out, char *err, size_t errlen) {
  struct sockaddr_storage addr;
  const union MHD_DaemonInfo *info;
  an_http_t *h = NULL;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
  unsigned max_connections, timeout;
  int rc;

  *out = NULL;
  if (!params->listen || !params->db_path) {
    snprintf(err, errlen, "the HTTP endpoint needs a listen address and a database path");
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_addr_resolve(params->listen, &addr, err, errlen)) != 0)
    goto fail;
  if (!(h = calloc(1, sizeof *h))) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto fail;
  }
  if ((rc = pthread_mutex_init(&h->store_lock, NULL)) != 0) {
    snprintf(err, errlen, "cannot create the HTTP endpoint's lock: %s", strerror(rc));
    rc = -rc;
    goto fail;
  }
  h->lock_ready = true;
  h->stats = params->stats;
  h->loopback_only = an_addr_is_loopback(&addr);
  if ((rc = an_store_open(params->db_path, &h->store, err, errlen)) != 0)
    goto fail;
  if ((rc = an_dashboard_build(h)) != 0) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }

  max_connections = params->max_connections ? params->max_connections
                                            : AN_HTTP_DEFAULT_CONNECTIONS;
  timeout = params->timeout_seconds ? params->timeout_seconds : AN_HTTP_DEFAULT_TIMEOUT_S;
  if (addr.ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  errno = 0;
  /* The logger goes first so that start-up messages reach it too. */
  h->daemon = MHD_start_daemon(flags, an_addr_port(&addr), NULL, NULL, an_http_on_request, h,
                               MHD_OPTION_EXTERNAL_LOGGER, an_http_log, h,
                               MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                               MHD_OPTION_CONNECTION_LIMIT, max_connections,
                               MHD_OPTION_CONNECTION_TIMEOUT, timeout,
                               MHD_OPTION_END);
  if (!h->daemon) {
    /* MHD says only "NULL"; bind's errno is the likely cause. */
    rc = errno ? -errno : UV_EINVAL;
    snprintf(err, errlen, "cannot serve HTTP on %s: %s", params->listen, an_strerror(rc));
    goto fail;
  }
  info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
  if (info && info->port)
    an_addr_set_port(&addr, info->port);
  an_addr_format((const struct sockaddr *)&addr, h->address, sizeof h->address);
  AN_LOG(AN_LOG_INFO, "http", "admin endpoint on http://%s/", h->address);
  *out = h;
  h = NULL;
fail:
  an_http_stop(h);
  return rc;
}

const char *an_http_address(const an_http_t *h) { return h->address; }

void an_http_stop(an_http_t *h) {
  if (!h)
    return;
  /* Joins the daemon's thread: after this no handler runs. */
  if (h->daemon)
    MHD_stop_daemon(h->daemon);
  if (h->dashboard)
    MHD_destroy_response(h->dashboard);
  free(h->dashboard_html);
  an_store_close(h->store);
  if (h->lock_ready)
    pthread_mutex_destroy(&h->store_lock);
  free(h);
}
