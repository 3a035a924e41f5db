/* One client connection as the broker sees it: the protocol state machine
 * (Hello first, then requests) on top of a framed TLS connection. */
#ifndef AN_SESSION_H
#define AN_SESSION_H

#include <stdint.h>

#include "common/list.h"
#include "common/net/conn.h"

typedef struct an_session an_session_t;

/* What a session needs from the broker, passed at creation. */
typedef struct an_session_env {
  uint32_t max_frame;
  /* Called once when the session is gone, so the broker can forget it. */
  void (*on_gone)(an_session_t *s, void *broker);
  void *broker;
} an_session_env_t;

/* Accepts a pending connection from `server` and starts a session on it.
 * The session lives until its connection closes; the broker learns of that
 * through env->on_gone. */
int an_session_accept(uv_stream_t *server, an_tls_ctx_t *tls, const an_conn_params_t *params,
                      const an_session_env_t *env, uint64_t id, an_session_t **out);

/* Asks the session to end (broker shutdown). */
void an_session_close(an_session_t *s);

/* The link by which the broker lists its sessions, and back. */
an_list_t *an_session_link(an_session_t *s);
an_session_t *an_session_from_link(an_list_t *link);

#endif
