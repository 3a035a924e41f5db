/* One client connection as the broker sees it: the protocol state machine
 * (Hello first, then requests) on top of a framed TLS connection. */
#ifndef AN_SESSION_H
#define AN_SESSION_H

#include <stdint.h>

#include "common/arena.h"
#include "common/list.h"
#include "common/net/conn.h"
#include "proto/archnet.pb-c.h"
#include "server/service.h"

/* What a session needs from the broker, passed at creation. */
typedef struct an_session_env {
  uint32_t max_frame;
  an_service_t *service; /* handles requests after Hello; borrowed */
  an_broker_stats_t *stats; /* bytes in and out for /metrics; may be NULL */
  struct an_group_commit *commit; /* holds replies until committed; NULL = store not grouped */
  /* Called once when the session is gone, so the broker can forget it. */
  void (*on_gone)(an_session_t *s, void *broker);
  void *broker;
} an_session_env_t;

/* Accepts a pending connection from `server` and starts a session on it.
 * The session lives until its connection closes; the broker learns of that
 * through env->on_gone. */
int an_session_accept(uv_stream_t *server, an_tls_ctx_t *tls, const an_conn_params_t *params,
                      const an_session_env_t *env, uint64_t id, an_session_t **out);

/* The authenticated node (0 before credentials) and its role. */
uint64_t an_session_node(const an_session_t *s);
an_role_t an_session_role(const an_session_t *s);
/* "session 12", for logs. */
const char *an_session_name(const an_session_t *s);

/* Sends a reply (or an Error) on the session. */
int an_session_send(an_session_t *s, const Archnet__Envelope *env);
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int an_session_error(an_session_t *s, uint64_t request_id, Archnet__Error__Code code,
                     const char *fmt, ...);

/* Uploads this connection may send chunks for, after BeginBlob authorized
 * them: allow records (digest, task); upload_task returns the task, or 0
 * if the digest was not begun here; upload_done marks a finished one (late
 * pipelined chunks of it are still answered). 16 at a time: beyond that
 * the oldest finished grant is dropped, else the oldest (BeginBlob again). */
int an_session_allow_upload(an_session_t *s, const char *digest, uint64_t task_id);
uint64_t an_session_upload_task(const an_session_t *s, const char *digest);
/* 1 if the upload of `digest` on this connection was marked done. */
int an_session_upload_finished(const an_session_t *s, const char *digest);
void an_session_upload_done(an_session_t *s, const char *digest);

/* A request that will be answered later, from a callback (a chunk being
 * written on a thread): begin keeps the session's memory alive past a
 * close of its connection, and stops reading from it while too many are
 * in flight; end (exactly once each) undoes that and may free a closed
 * session, so the caller must not use it afterwards unless it holds
 * another. Before answering, check an_session_is_closed: a closed session
 * sends nothing. */
void an_session_begin_deferred(an_session_t *s);
void an_session_end_deferred(an_session_t *s);
int an_session_is_closed(const an_session_t *s);

/* Moves the current request's arena (and so the unpacked request) to
 * *out, which the caller then owns (an_arena_destroy), and gives the
 * session a fresh one: a deferred request keeps its bytes without a copy. */
void an_session_take_arena(an_session_t *s, an_arena_t *out);
/* Gives back (or frees) an arena from an_session_take_arena once its
 * request is answered; the session keeps a few for the next requests. */
void an_session_return_arena(an_session_t *s, an_arena_t *a);

/* Asks the session to end (broker shutdown). */
void an_session_close(an_session_t *s);

/* The link by which the broker lists its sessions, and back. */
an_list_t *an_session_link(an_session_t *s);
an_session_t *an_session_from_link(an_list_t *link);

#endif
