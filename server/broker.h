/* The broker's network face: a TLS listener and the set of live sessions,
 * which hand their requests to the service (service.h). */
#ifndef AN_BROKER_H
#define AN_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/net/tls.h"
#include "server/http.h"

typedef struct an_broker an_broker_t;

typedef struct an_broker_params {
  const char *listen;            /* "HOST:PORT"; port 0 picks a free one */
  an_tls_ctx_t *tls;             /* server context; borrowed, must outlive the broker */
  uint32_t max_frame;            /* largest frame a client may send */
  uint64_t handshake_timeout_ms; /* the TLS handshake must finish within */
  uint64_t idle_timeout_ms;      /* close a session silent for this long; 0 = never */
  uint32_t max_sessions;         /* connections beyond this are refused */
  const char *ready_file;        /* if set, "HOST:PORT\n" is written here once listening */
  struct an_service *service;    /* requests after Hello; borrowed, outlives the broker */
  an_broker_stats_t *stats;      /* live counters for /metrics; may be NULL */
  struct an_group_commit *commit; /* the store's group commit (group_commit.h); may be NULL */
} an_broker_params_t;

/* Creates the broker on `loop` and starts listening. On failure returns an
 * error with a sentence in `err`. The params' strings are copied. */
int an_broker_start(uv_loop_t *loop, const an_broker_params_t *params, an_broker_t **out,
                    char *err, size_t errlen);

/* The address actually bound ("127.0.0.1:41234"). */
const char *an_broker_address(const an_broker_t *b);

/* Stops accepting, closes every session politely. The loop runs dry once
 * all handles are closed; then call an_broker_free. Idempotent. */
void an_broker_stop(an_broker_t *b);

/* Frees a stopped broker whose handles have closed (after uv_run returns). */
void an_broker_free(an_broker_t *b);

#endif
