#include "server/session.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net/wire.h"
#include "server/group_commit.h"

/* Oldest protocol version this broker still speaks. */
#define AN_PROTOCOL_MIN_VERSION 1

/* Requests answered later (chunks being written) one connection may have
 * at once before its reading stops: an uploader's window, and a bound on
 * the chunks in memory for it. */
#define AN_SESSION_MAX_DEFERRED 16

struct an_session {
  an_list_t link;
  an_conn_t *conn;
  an_session_env_t env;
  uint64_t id;
  int hello_done;
  uint32_t protocol_version;
  Archnet__Role role;
  an_arena_t arena; /* per request: reset before each frame is unpacked */
  size_t arena_cap; /* its byte cap, for a fresh one (an_session_take_arena) */
  /* Arenas back from deferred requests, reset, each with the big block its
   * chunk needed kept as a spare: the next chunks unpack into memory that
   * is already mapped instead of fresh pages. Emptied whenever nothing is
   * in flight. */
  an_arena_t pool[AN_SESSION_MAX_DEFERRED];
  int n_pool;
  int deferred;     /* requests answered later, in flight */
  int refs;         /* deferred ones keep the struct after its connection closed */
  int closed;       /* the connection is gone: nothing more is sent */
  char name[48];    /* "session 12", the log component */
  uint64_t node;    /* authenticated node, 0 = none */
  an_role_t node_role;
  struct {
    char digest[65];
    uint64_t task;
    int done;       /* complete: first to go when room is needed */
  } uploads[16];    /* blobs BeginBlob authorized on this connection */
  int n_uploads;
};

uint64_t an_session_node(const an_session_t *s) { return s->node; }
an_role_t an_session_role(const an_session_t *s) { return s->node ? s->node_role : 0; }
const char *an_session_name(const an_session_t *s) { return s->name; }

/* The connection, for writing a reply: held first if the store has changes
 * not yet committed, since the reply may tell of them (group_commit.h). */
static an_conn_t *an_session_out(an_session_t *s) {
  an_group_commit_hold(s->env.commit, s->conn);
  return s->conn;
}

int an_session_send(an_session_t *s, const Archnet__Envelope *env) {
  if (s->closed)
    return AN_ECLOSED;
  if (s->env.stats)
    atomic_fetch_add(&s->env.stats->bytes_sent, archnet__envelope__get_packed_size(env) + 4);
  return an_wire_send(an_session_out(s), env);
}

int an_session_error(an_session_t *s, uint64_t request_id, Archnet__Error__Code code,
                     const char *fmt, ...) {
  char msg[512];
  va_list ap;
  if (s->closed)
    return AN_ECLOSED;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return an_wire_send_error(an_session_out(s), request_id, code, "%s", msg);
}

static void an_session_drain_pool(an_session_t *s) {
  while (s->n_pool > 0)
    an_arena_destroy(&s->pool[--s->n_pool]);
}

/* Forgets grant i. */
static void an_session_drop_upload(an_session_t *s, int i) {
  memmove(&s->uploads[i], &s->uploads[i + 1],
          (size_t)(s->n_uploads - i - 1) * sizeof s->uploads[0]);
  s->n_uploads--;
}

int an_session_allow_upload(an_session_t *s, const char *digest, uint64_t task_id) {
  for (int i = 0; i < s->n_uploads; i++)
    if (strcmp(s->uploads[i].digest, digest) == 0) {
      s->uploads[i].task = task_id;
      s->uploads[i].done = 0;
      return 0;
    }
  if (s->n_uploads == (int)(sizeof s->uploads / sizeof s->uploads[0])) {
    /* Full: the oldest finished grant goes, else the oldest (its upload
     * can begin again). */
    int victim = 0;
    for (int i = 0; i < s->n_uploads; i++)
      if (s->uploads[i].done) {
        victim = i;
        break;
      }
    an_session_drop_upload(s, victim);
  }
  snprintf(s->uploads[s->n_uploads].digest, sizeof s->uploads[0].digest, "%s", digest);
  s->uploads[s->n_uploads].done = 0;
  s->uploads[s->n_uploads++].task = task_id;
  return 0;
}

void an_session_upload_done(an_session_t *s, const char *digest) {
  /* Kept, marked: pipelined chunks of it may still be on their way, and
   * must be answered "complete", not "not allowed". */
  for (int i = 0; i < s->n_uploads; i++)
    if (strcmp(s->uploads[i].digest, digest) == 0)
      s->uploads[i].done = 1;
}

int an_session_upload_finished(const an_session_t *s, const char *digest) {
  for (int i = 0; i < s->n_uploads; i++)
    if (strcmp(s->uploads[i].digest, digest) == 0)
      return s->uploads[i].done;
  return 0;
}

uint64_t an_session_upload_task(const an_session_t *s, const char *digest) {
  for (int i = 0; i < s->n_uploads; i++)
    if (strcmp(s->uploads[i].digest, digest) == 0)
      return s->uploads[i].task;
  return 0;
}

static void an_session_free(an_session_t *s) {
  an_session_drain_pool(s);
  an_arena_destroy(&s->arena);
  free(s);
}

void an_session_begin_deferred(an_session_t *s) {
  s->refs++;
  if (++s->deferred >= AN_SESSION_MAX_DEFERRED && !s->closed)
    an_conn_throttle(s->conn, 1);
}

void an_session_end_deferred(an_session_t *s) {
  /* Nothing in flight: the pooled arenas (a chunk's worth of memory each)
   * are not kept for an idle session. */
  if (--s->deferred == 0)
    an_session_drain_pool(s);
  if (!s->closed && s->deferred < AN_SESSION_MAX_DEFERRED)
    an_conn_throttle(s->conn, 0);
  if (--s->refs == 0 && s->closed)
    an_session_free(s);
}

int an_session_is_closed(const an_session_t *s) { return s->closed; }

void an_session_take_arena(an_session_t *s, an_arena_t *out) {
  *out = s->arena;
  if (s->n_pool > 0)
    s->arena = s->pool[--s->n_pool];
  else
    an_arena_init(&s->arena, 0, s->arena_cap);
}

void an_session_return_arena(an_session_t *s, an_arena_t *a) {
  if (s->closed || s->n_pool == AN_SESSION_MAX_DEFERRED) {
    an_arena_destroy(a);
    return;
  }
  an_arena_reset(a);
  s->pool[s->n_pool++] = *a;
}

an_list_t *an_session_link(an_session_t *s) { return &s->link; }
an_session_t *an_session_from_link(an_list_t *link) {
  return AN_CONTAINER_OF(link, an_session_t, link);
}

static const char *an_role_name(Archnet__Role role) {
  switch (role) {
  case ARCHNET__ROLE__ROLE_PUBLISHER: return "publisher";
  case ARCHNET__ROLE__ROLE_WORKER: return "worker";
  case ARCHNET__ROLE__ROLE_ADMIN: return "admin";
  default: return "client";
  }
}

/* Copies a peer-supplied string into a log-safe buffer (printable ASCII). */
static void an_session_sanitize(const char *in, char *out, size_t len) {
  size_t i = 0;
  for (; in && in[i] && i + 1 < len; i++)
    out[i] = (in[i] >= 0x20 && in[i] < 0x7f) ? in[i] : '?';
  out[i] = '\0';
}

static int an_session_on_hello(an_session_t *s, const Archnet__Envelope *req) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__HelloOk ok = ARCHNET__HELLO_OK__INIT;
  const Archnet__Hello *hello = req->hello;
  char node[64], software[64];

  if (s->hello_done)
    return an_wire_send_error(an_session_out(s), req->request_id,
                              ARCHNET__ERROR__CODE__UNSUPPORTED_REQUEST,
                              "Hello was already received on this connection");
  if (hello->protocol_version < AN_PROTOCOL_MIN_VERSION) {
    AN_LOG(AN_LOG_WARN, s->name, "%s speaks protocol %u; this broker needs %d..%d",
           an_conn_peer(s->conn), hello->protocol_version, AN_PROTOCOL_MIN_VERSION,
           AN_PROTOCOL_VERSION);
    an_wire_send_error(an_session_out(s), req->request_id, ARCHNET__ERROR__CODE__UNSUPPORTED_VERSION,
                       "this broker speaks protocol versions %d to %d, the client sent %u",
                       AN_PROTOCOL_MIN_VERSION, AN_PROTOCOL_VERSION, hello->protocol_version);
    an_conn_close(s->conn, AN_EVERSION);
    return 0;
  }
  /* A newer client talks down to our version; it decides if that suffices. */
  s->protocol_version = hello->protocol_version < AN_PROTOCOL_VERSION ? hello->protocol_version
                                                                      : AN_PROTOCOL_VERSION;
  s->role = hello->role;
  if (hello->node_id) {
    an_role_t role = 0;
    int rc = s->env.service ? an_service_authenticate(s->env.service, hello->node_id,
                                                      hello->secret, an_conn_peer(s->conn),
                                                      &role)
                            : AN_EAUTH;
    if (rc == UV_EAGAIN) {
      an_wire_send_error(an_session_out(s), req->request_id, ARCHNET__ERROR__CODE__RATE_LIMITED,
                         "too many failed authentications from this address; wait a minute");
      an_conn_close(s->conn, AN_EAUTH);
      return 0;
    }
    if (rc != 0 || (int)role != (int)hello->role) {
      /* Slow down guessing: the failure is logged and the connection closed. */
      AN_LOG(AN_LOG_WARN, s->name, "authentication failed for node %llu from %s",
             (unsigned long long)hello->node_id, an_conn_peer(s->conn));
      an_wire_send_error(an_session_out(s), req->request_id, ARCHNET__ERROR__CODE__UNAUTHENTICATED,
                         "unknown node, wrong secret, wrong role or revoked");
      an_conn_close(s->conn, AN_EAUTH);
      return 0;
    }
    s->node = hello->node_id;
    s->node_role = role;
  }
  s->hello_done = 1;
  an_conn_established(s->conn); /* from now on only the idle timeout applies */
  an_session_sanitize(hello->node_name, node, sizeof node);
  an_session_sanitize(hello->software, software, sizeof software);
  AN_LOG(AN_LOG_INFO, s->name, "hello from %s '%s' at %s (%s, protocol %u)",
         an_role_name(s->role), node, an_conn_peer(s->conn), software, s->protocol_version);

  ok.protocol_version = s->protocol_version;
  ok.software = "archnet-broker/" AN_VERSION;
  ok.session_id = s->id;
  ok.max_frame_bytes = s->env.max_frame;
  env.request_id = req->request_id;
  env.body_case = ARCHNET__ENVELOPE__BODY_HELLO_OK;
  env.hello_ok = &ok;
  return an_wire_send(an_session_out(s), &env);
}

static int an_session_on_ping(an_session_t *s, const Archnet__Envelope *req) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__Pong pong = ARCHNET__PONG__INIT;
  pong.nonce = req->ping->nonce;
  env.request_id = req->request_id;
  env.body_case = ARCHNET__ENVELOPE__BODY_PONG;
  env.pong = &pong;
  return an_wire_send(an_session_out(s), &env);
}

static int an_session_on_frame(an_conn_t *conn, const uint8_t *payload, size_t len) {
  an_session_t *s = an_conn_data(conn);
  Archnet__Envelope *req;
  int rc;

  /* The arena was reset after the last request, keeping the big block it
   * needed for this one (see arena.h). A chunk's arena leaves with its job
   * instead and comes back through the pool (an_session_return_arena). */
  if (s->env.stats)
    atomic_fetch_add(&s->env.stats->bytes_received, len + 4);
  req = an_wire_unpack(&s->arena, payload, len);
  if (!req) {
    an_arena_reset(&s->arena);
    AN_LOG(AN_LOG_WARN, s->name, "malformed frame of %zu bytes from %s; closing", len,
           an_conn_peer(conn));
    an_wire_send_error(an_session_out(s), 0, ARCHNET__ERROR__CODE__MALFORMED,
                       "the frame is not a valid Envelope; closing the connection");
    return AN_EPROTO;
  }
  AN_LOG(AN_LOG_DEBUG, s->name, "request %llu: %s", (unsigned long long)req->request_id,
         an_wire_body_name(req));

  if (req->body_case == ARCHNET__ENVELOPE__BODY_HELLO) {
    rc = an_session_on_hello(s, req);
  } else if (!s->hello_done) {
    an_wire_send_error(an_session_out(s), req->request_id, ARCHNET__ERROR__CODE__HELLO_REQUIRED,
                       "the first message on a connection must be Hello");
    rc = AN_EPROTO;
  } else if (req->body_case == ARCHNET__ENVELOPE__BODY_PING) {
    rc = an_session_on_ping(s, req);
  } else if (s->env.service) {
    rc = an_service_handle(s->env.service, s, req);
  } else {
    /* Not fatal: a newer client may try something and fall back. */
    rc = an_wire_send_error(an_session_out(s), req->request_id, ARCHNET__ERROR__CODE__UNSUPPORTED_REQUEST,
                            "this broker does not handle '%s' requests",
                            an_wire_body_name(req));
  }
  /* The request is done with: an idle session keeps at most the one big
   * block this request needed, until its next one. */
  an_arena_reset(&s->arena);
  return rc;
}

static void an_session_on_bad_input(an_conn_t *conn, int status) {
  an_session_t *s = an_conn_data(conn);
  AN_LOG(AN_LOG_WARN, s->name, "%s from %s; closing", an_strerror(status), an_conn_peer(conn));
  if (status == AN_ETOOBIG)
    an_wire_send_error(an_session_out(s), 0, ARCHNET__ERROR__CODE__FRAME_TOO_BIG,
                       "a frame exceeds this broker's limit of %u bytes", s->env.max_frame);
}

static void an_session_on_close(an_conn_t *conn, int status) {
  an_session_t *s = an_conn_data(conn);
  if (status == 0 || status == UV_EOF)
    AN_LOG(AN_LOG_INFO, s->name, "closed");
  else
    AN_LOG(AN_LOG_INFO, s->name, "closed: %s%s%s", an_strerror(status),
           an_conn_tls_error(conn)[0] ? ": " : "", an_conn_tls_error(conn));
  if (s->env.service)
    an_service_session_gone(s->env.service, s);
  if (s->env.on_gone)
    s->env.on_gone(s, s->env.broker);
  s->closed = 1;
  s->conn = NULL; /* freed after this returns */
  if (s->refs == 0)
    an_session_free(s);
}

int an_session_accept(uv_stream_t *server, an_tls_ctx_t *tls, const an_conn_params_t *params,
                      const an_session_env_t *env, uint64_t id, an_session_t **out) {
  static const an_conn_callbacks_t cb = {
      .on_frame = an_session_on_frame,
      .on_close = an_session_on_close,
      .on_bad_input = an_session_on_bad_input,
  };
  an_session_t *s = calloc(1, sizeof *s);
  int rc;

  if (!s)
    return UV_ENOMEM;
  s->env = *env;
  s->id = id;
  an_list_init(&s->link);
  /* Requests are small until blobs arrive; the cap bounds what a hostile
   * frame can make protobuf-c allocate. */
  s->arena_cap = (size_t)env->max_frame * 4 + 65536;
  an_arena_init(&s->arena, 0, s->arena_cap);
  snprintf(s->name, sizeof s->name, "session %llu", (unsigned long long)id);
  if ((rc = an_conn_accept(server, tls, params, &cb, s, &s->conn)) != 0) {
    an_arena_destroy(&s->arena);
    free(s);
    return rc;
  }
  AN_LOG(AN_LOG_DEBUG, s->name, "accepted %s", an_conn_peer(s->conn));
  *out = s;
  return 0;
}

void an_session_close(an_session_t *s) {
  if (!s->closed)
    an_conn_close(s->conn, 0);
}
