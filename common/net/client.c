#include "common/net/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>
#include <uv.h>

#include "an_build_config.h"
#include "common/error.h"
#include "common/net/addr.h"
#include "common/net/conn.h"
#include "common/net/tls.h"
#include "common/net/wire.h"

#define AN_CLIENT_ABANDONED 16

/* A reply frame kept until an_client_reply takes it. */
typedef struct an_reply {
  struct an_reply *next;
  uint64_t id;
  size_t len;
  uint8_t data[];
} an_reply_t;

struct an_client {
  uv_loop_t loop;
  uv_timer_t timer;
  an_tls_ctx_t *tls;
  an_conn_t *conn;      /* NULL once closed */
  int ready;
  int close_status;
  int timed_out;
  uint64_t timeout_ms;
  uint64_t next_id;     /* the last request id given out */
  an_reply_t *head, *tail; /* replies not yet taken, in arrival order */
  /* Requests given up on whose replies have not come yet: dropped when
   * they do. A ring: past its size the oldest is forgotten, and its reply,
   * if it ever comes, waits in the queue until the client closes. */
  uint64_t abandoned[AN_CLIENT_ABANDONED];
  size_t n_abandoned, next_abandoned;
  char *broker_software;
  uint64_t session_id;
  char peer_error[256]; /* TLS detail captured at close */
};

static void an_client_on_ready(an_conn_t *conn) {
  an_client_t *c = an_conn_data(conn);
  c->ready = 1;
}

/* Whether `id` was given up on; if so it is forgotten (its reply came). */
static int an_client_take_abandoned(an_client_t *c, uint64_t id) {
  for (size_t i = 0; i < c->n_abandoned; i++)
    if (c->abandoned[i] == id) {
      c->abandoned[i] = c->abandoned[--c->n_abandoned];
      return 1;
    }
  return 0;
}

static int an_client_on_frame(an_conn_t *conn, const uint8_t *payload, size_t len) {
  an_client_t *c = an_conn_data(conn);
  uint64_t id = 0;
  if (an_wire_peek_request_id(payload, len, &id) != 0)
    return AN_EPROTO; /* a broker that sends garbage is not one to talk to */
  /* Only replies to our requests; broker-initiated messages (id 0) and
   * replies given up on are dropped. */
  if (id == 0 || id > c->next_id || an_client_take_abandoned(c, id))
    return 0;
  an_reply_t *r = malloc(sizeof *r + len);
  if (!r)
    return UV_ENOMEM;
  r->next = NULL;
  r->id = id;
  r->len = len;
  if (len)
    memcpy(r->data, payload, len);
  if (c->tail)
    c->tail->next = r;
  else
    c->head = r;
  c->tail = r;
  return 0;
}

static void an_client_on_close(an_conn_t *conn, int status) {
  an_client_t *c = an_conn_data(conn);
  snprintf(c->peer_error, sizeof c->peer_error, "%s", an_conn_tls_error(conn));
  c->close_status = status;
  c->conn = NULL;
}

static void an_client_on_timer(uv_timer_t *t) {
  an_client_t *c = t->data;
  c->timed_out = 1;
}

/* Unlinks and returns the kept reply to `id`, or NULL. */
static an_reply_t *an_client_unqueue(an_client_t *c, uint64_t id) {
  an_reply_t *prev = NULL;
  for (an_reply_t *r = c->head; r; prev = r, r = r->next)
    if (r->id == id) {
      if (prev)
        prev->next = r->next;
      else
        c->head = r->next;
      if (c->tail == r)
        c->tail = prev;
      r->next = NULL;
      return r;
    }
  return NULL;
}

/* Whether the reply to `id` is kept. */
static int an_client_has(const an_client_t *c, uint64_t id) {
  for (const an_reply_t *r = c->head; r; r = r->next)
    if (r->id == id)
      return 1;
  return 0;
}

/* Runs the loop until *flag is set, the reply to `id` (if not 0) is kept,
 * the connection closes, or time is up. */
static int an_client_wait(an_client_t *c, const int *flag, uint64_t id) {
  c->timed_out = 0;
  uv_timer_start(&c->timer, an_client_on_timer, c->timeout_ms, 0);
  while (!(flag && *flag) && !(id && an_client_has(c, id)) && c->conn && !c->timed_out)
    uv_run(&c->loop, UV_RUN_ONCE);
  uv_timer_stop(&c->timer);
  if ((flag && *flag) || (id && an_client_has(c, id)))
    return 0;
  if (c->timed_out)
    return UV_ETIMEDOUT;
  return c->close_status ? c->close_status : UV_ECONNRESET;
}

static void an_client_describe(an_client_t *c, int rc, const char *what, char *err,
                               size_t errlen) {
  if (rc == AN_EPIN)
    snprintf(err, errlen,
             "%s: the broker's key does not match the pin; check --pin (the broker prints its "
             "pin with 'archnet-broker pin')",
             what);
  else if (rc == AN_ETLS && c->peer_error[0])
    snprintf(err, errlen, "%s: %s", what, c->peer_error);
  else
    snprintf(err, errlen, "%s: %s", what, an_strerror(rc));
}

int an_client_send(an_client_t *c, Archnet__Envelope *req, uint64_t *id, char *err,
                   size_t errlen) {
  int rc;
  if (!c->conn) {
    snprintf(err, errlen, "not connected to the broker");
    return AN_ECLOSED;
  }
  req->request_id = ++c->next_id;
  if ((rc = an_wire_send(c->conn, req)) != 0) {
    an_client_describe(c, rc, "cannot send request", err, errlen);
    return rc;
  }
  *id = req->request_id;
  return 0;
}

int an_client_reply(an_client_t *c, uint64_t id, an_arena_t *arena, Archnet__Envelope **reply,
                    char *err, size_t errlen) {
  Archnet__Envelope *env;
  int rc;
  *reply = NULL;
  if (id == 0 || id > c->next_id) {
    snprintf(err, errlen, "no request %llu was sent", (unsigned long long)id);
    return UV_EINVAL;
  }
  if ((rc = an_client_wait(c, NULL, id)) != 0) {
    an_client_describe(c, rc, "no reply from the broker", err, errlen);
    return rc;
  }
  an_reply_t *r = an_client_unqueue(c, id);
  env = an_wire_unpack(arena, r->data, r->len);
  free(r);
  if (!env) {
    snprintf(err, errlen, "the broker's reply could not be decoded");
    return AN_EPROTO;
  }
  *reply = env;
  if (env->body_case == ARCHNET__ENVELOPE__BODY_ERROR) {
    snprintf(err, errlen, "broker: %s (%s)", env->error->message ? env->error->message : "",
             an_wire_error_name(env->error->code));
    return AN_EREMOTE;
  }
  return 0;
}

void an_client_abandon(an_client_t *c, uint64_t id) {
  an_reply_t *r = an_client_unqueue(c, id);
  if (r) {
    free(r);
    return;
  }
  if (c->n_abandoned < AN_CLIENT_ABANDONED) {
    c->abandoned[c->n_abandoned++] = id;
  } else {
    c->abandoned[c->next_abandoned] = id;
    c->next_abandoned = (c->next_abandoned + 1) % AN_CLIENT_ABANDONED;
  }
}

int an_client_call(an_client_t *c, Archnet__Envelope *req, an_arena_t *arena,
                   Archnet__Envelope **reply, char *err, size_t errlen) {
  uint64_t id = 0;
  int rc;
  *reply = NULL;
  if ((rc = an_client_send(c, req, &id, err, errlen)) != 0)
    return rc;
  return an_client_reply(c, id, arena, reply, err, errlen);
}

static int an_client_hello(an_client_t *c, const an_client_params_t *p, char *err,
                           size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__Hello hello = ARCHNET__HELLO__INIT;
  an_arena_t arena;
  int rc;

  hello.protocol_version = p->protocol_version ? p->protocol_version : AN_PROTOCOL_VERSION;
  hello.software = (char *)(p->software ? p->software : "archnet-client/" AN_VERSION);
  hello.role = p->role;
  hello.node_name = (char *)(p->node_name ? p->node_name : "");
  hello.node_id = p->node_id;
  hello.secret = (char *)(p->secret ? p->secret : "");
  req.body_case = ARCHNET__ENVELOPE__BODY_HELLO;
  req.hello = &hello;
  an_arena_init(&arena, 0, 0);
  rc = an_client_call(c, &req, &arena, &reply, err, errlen);
  if (rc == AN_EREMOTE && reply->error->code == ARCHNET__ERROR__CODE__UNSUPPORTED_VERSION)
    rc = AN_EVERSION;
  if (rc == 0 && reply->body_case != ARCHNET__ENVELOPE__BODY_HELLO_OK) {
    snprintf(err, errlen, "the broker answered Hello with '%s'", an_wire_body_name(reply));
    rc = AN_EPROTO;
  }
  if (rc == 0) {
    c->session_id = reply->hello_ok->session_id;
    c->broker_software = strdup(reply->hello_ok->software ? reply->hello_ok->software : "");
    if (!c->broker_software)
      rc = UV_ENOMEM;
  }
  an_arena_destroy(&arena);
  return rc;
}

int an_client_connect(const an_client_params_t *p, an_client_t **out, char *err,
                      size_t errlen) {
  an_conn_callbacks_t cb = {
      .on_ready = an_client_on_ready,
      .on_frame = an_client_on_frame,
      .on_close = an_client_on_close,
  };
  an_conn_params_t cp = {.max_frame = p->max_frame};
  struct sockaddr_storage addr;
  an_client_t *c;
  char what[300];
  int rc;

  *out = NULL;
  if ((rc = an_addr_resolve(p->broker, &addr, err, errlen)) != 0)
    return rc;
  c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  c->timeout_ms = p->timeout_ms ? p->timeout_ms : 30000;
  cp.handshake_timeout_ms = c->timeout_ms;
  if ((rc = uv_loop_init(&c->loop)) != 0) {
    snprintf(err, errlen, "cannot start an event loop: %s", uv_strerror(rc));
    free(c);
    return rc;
  }
  uv_timer_init(&c->loop, &c->timer);
  c->timer.data = c;
  if ((rc = an_tls_client_ctx_new(p->pin, &c->tls, err, errlen)) != 0)
    goto fail;
  rc = an_conn_connect(&c->loop, (struct sockaddr *)&addr, c->tls, &cp, &cb, c, &c->conn);
  snprintf(what, sizeof what, "cannot connect to %s", p->broker);
  if (rc != 0 || (rc = an_client_wait(c, &c->ready, 0)) != 0) {
    an_client_describe(c, rc, what, err, errlen);
    goto fail;
  }
  if ((rc = an_client_hello(c, p, err, errlen)) != 0)
    goto fail;
  *out = c;
  return 0;
fail:
  an_client_close(c);
  return rc;
}

int an_client_ping(an_client_t *c, uint64_t *rtt_ns, char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__Ping ping = ARCHNET__PING__INIT;
  an_arena_t arena;
  uint64_t t0;
  int rc;

  if (RAND_bytes((unsigned char *)&ping.nonce, sizeof ping.nonce) != 1)
    ping.nonce = uv_hrtime();
  req.body_case = ARCHNET__ENVELOPE__BODY_PING;
  req.ping = &ping;
  an_arena_init(&arena, 0, 0);
  t0 = uv_hrtime();
  rc = an_client_call(c, &req, &arena, &reply, err, errlen);
  if (rtt_ns)
    *rtt_ns = uv_hrtime() - t0;
  if (rc == 0 && (reply->body_case != ARCHNET__ENVELOPE__BODY_PONG ||
                  reply->pong->nonce != ping.nonce)) {
    snprintf(err, errlen, "the broker answered Ping with '%s' or a wrong nonce",
             an_wire_body_name(reply));
    rc = AN_EPROTO;
  }
  an_arena_destroy(&arena);
  return rc;
}

const char *an_client_broker_software(const an_client_t *c) {
  return c->broker_software ? c->broker_software : "";
}

uint64_t an_client_session_id(const an_client_t *c) { return c->session_id; }

void an_client_close(an_client_t *c) {
  if (!c)
    return;
  if (c->conn)
    an_conn_close(c->conn, 0);
  /* Runs until the connection's handles are closed (bounded by its close
   * timeout), then closes the timer and the loop itself. */
  while (c->conn)
    uv_run(&c->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&c->timer, NULL);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  uv_loop_close(&c->loop);
  an_tls_ctx_free(c->tls);
  free(c->broker_software);
  while (c->head) {
    an_reply_t *r = c->head;
    c->head = r->next;
    free(r);
  }
  free(c);
}
