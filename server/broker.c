#include "server/broker.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/list.h"
#include "common/log.h"
#include "common/net/addr.h"
#include "server/session.h"

struct an_broker {
  uv_tcp_t listener;
  an_broker_params_t params;
  char *listen_copy;
  char address[64];
  an_list_t sessions;
  uint32_t n_sessions;
  uint64_t next_session_id;
  int stopping;
  int listener_closed;
  /* One read buffer for every session: the loop reads one at a time. */
  uint8_t *read_buffer;
};

static void an_broker_count(an_broker_t *b, atomic_uint_fast64_t *counter) {
  if (b->params.stats)
    atomic_fetch_add(counter, 1);
}

static void an_broker_on_session_gone(an_session_t *s, void *arg) {
  an_broker_t *b = arg;
  if (b->params.stats)
    an_broker_count(b, &b->params.stats->connections_closed);
  an_list_remove(an_session_link(s));
  b->n_sessions--;
}

static void an_broker_free_handle(uv_handle_t *h) { free(h); }

/* Takes a connection off the backlog and drops it. libuv stops watching the
 * listener until a pending connection is accepted, so one that we cannot
 * serve must still be accepted, or the broker would stop accepting at all. */
static void an_broker_reject(uv_stream_t *server) {
  uv_tcp_t *reject = malloc(sizeof *reject);
  if (reject && uv_tcp_init(server->loop, reject) == 0) {
    uv_accept(server, (uv_stream_t *)reject);
    uv_close((uv_handle_t *)reject, an_broker_free_handle);
  } else {
    free(reject);
  }
}

static void an_broker_on_connection(uv_stream_t *server, int status) {
  an_broker_t *b = server->data;
  an_conn_params_t cp = {
      .max_frame = b->params.max_frame,
      .handshake_timeout_ms = b->params.handshake_timeout_ms,
      .idle_timeout_ms = b->params.idle_timeout_ms,
      .await_established = 1, /* TLS and Hello within the handshake timeout */
      .pause_reads_at = 4u << 20,
      .read_buffer = b->read_buffer,
  };
  an_session_env_t env = {
      .max_frame = b->params.max_frame,
      .on_gone = an_broker_on_session_gone,
      .broker = b,
      .service = b->params.service,
      .stats = b->params.stats,
      .commit = b->params.commit,
  };
  an_session_t *s;
  int rc;

  if (status < 0) {
    AN_LOG(AN_LOG_WARN, "broker", "accept failed: %s", an_strerror(status));
    return;
  }
  if (b->stopping) {
    an_broker_reject(server);
    return;
  }
  if (b->params.stats && b->params.max_sessions && b->n_sessions >= b->params.max_sessions)
    an_broker_count(b, &b->params.stats->connections_refused);
  if (b->params.max_sessions && b->n_sessions >= b->params.max_sessions) {
    /* A client retries with backoff. */
    AN_LOG(AN_LOG_WARN, "broker", "refusing a connection: %u sessions open (max-sessions)",
           b->n_sessions);
    an_broker_reject(server);
    return;
  }
  rc = an_session_accept(server, b->params.tls, &cp, &env, ++b->next_session_id, &s);
  if (rc != 0) {
    AN_LOG(AN_LOG_WARN, "broker", "cannot start a session: %s", an_strerror(rc));
    an_broker_reject(server); /* harmless if it was accepted already */
    return;
  }
  an_list_push(&b->sessions, an_session_link(s));
  b->n_sessions++;
  if (b->params.stats)
    an_broker_count(b, &b->params.stats->connections_accepted);
}

/* Written whole (rename), so a reader never sees half an address. */
static int an_broker_write_ready_file(const char *path, const char *address, char *err,
                                      size_t errlen) {
  an_atomic_file_t f;
  char line[80];
  int n = snprintf(line, sizeof line, "%s\n", address), rc;
  if ((rc = an_atomic_file_open(&f, path, 0644, err, errlen)) != 0)
    return rc;
  if ((rc = an_atomic_file_write(&f, line, (size_t)n, err, errlen)) != 0) {
    an_atomic_file_abort(&f);
    return rc;
  }
  return an_atomic_file_commit(&f, err, errlen);
}

int an_broker_start(uv_loop_t *loop, const an_broker_params_t *params, an_broker_t **out,
                    char *err, size_t errlen) {
  struct sockaddr_storage addr;
  int len = sizeof addr;
  an_broker_t *b;
  int rc;

  *out = NULL;
  if ((rc = an_addr_resolve(params->listen, &addr, err, errlen)) != 0)
    return rc;
  b = calloc(1, sizeof *b);
  if (!b || !(b->listen_copy = strdup(params->listen)) ||
      !(b->read_buffer = malloc(AN_CONN_READ_BUFFER))) {
    if (b)
      free(b->listen_copy);
    free(b);
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  b->params = *params;
  b->params.listen = b->listen_copy;
  b->params.ready_file = NULL; /* used only here, below */
  an_list_init(&b->sessions);
  uv_tcp_init(loop, &b->listener);
  b->listener.data = b;
  if ((rc = uv_tcp_bind(&b->listener, (struct sockaddr *)&addr, 0)) != 0 ||
      (rc = uv_listen((uv_stream_t *)&b->listener, 128, an_broker_on_connection)) != 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", params->listen, an_strerror(rc));
    goto fail;
  }
  uv_tcp_getsockname(&b->listener, (struct sockaddr *)&addr, &len);
  an_addr_format((struct sockaddr *)&addr, b->address, sizeof b->address);
  if (params->ready_file &&
      (rc = an_broker_write_ready_file(params->ready_file, b->address, err, errlen)) != 0)
    goto fail;
  AN_LOG(AN_LOG_INFO, "broker", "listening on %s (TLS 1.3, max frame %u bytes)", b->address,
         b->params.max_frame);
  *out = b;
  return 0;
fail:
  /* The listener is a live handle: let the loop close it, then free. */
  b->stopping = 1;
  uv_close((uv_handle_t *)&b->listener, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
  free(b->listen_copy);
  free(b->read_buffer);
  free(b);
  return rc;
}

const char *an_broker_address(const an_broker_t *b) { return b->address; }

static void an_broker_on_listener_closed(uv_handle_t *h) {
  an_broker_t *b = h->data;
  b->listener_closed = 1;
}

void an_broker_stop(an_broker_t *b) {
  an_list_t *it, *next;
  if (b->stopping)
    return;
  b->stopping = 1;
  AN_LOG(AN_LOG_INFO, "broker", "stopping: closing %u sessions", b->n_sessions);
  uv_close((uv_handle_t *)&b->listener, an_broker_on_listener_closed);
  for (it = b->sessions.next; it != &b->sessions; it = next) {
    next = it->next; /* closing never unlinks synchronously, but be safe */
    an_session_close(an_session_from_link(it));
  }
}

void an_broker_free(an_broker_t *b) {
  if (!b)
    return;
  /* Only after the loop closed the listener and every session (stop, then
   * uv_run until it returns): a session's on_gone still points here. */
  if (!b->listener_closed || !an_list_empty(&b->sessions)) {
    AN_LOG(AN_LOG_ERROR, "broker", "freed while still running; leaking it instead");
    return;
  }
  free(b->listen_copy);
  free(b->read_buffer);
  free(b);
}
