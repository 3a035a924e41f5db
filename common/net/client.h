/* A blocking client for the broker, for command-line tools and tests.
 *
 * It runs its own private libuv loop, so calls block the calling thread and
 * nothing else: connect (TCP, TLS with the broker's pin, Hello), then
 * requests, each answered by the reply with the same request id: one at a
 * time (an_client_call), or several in flight (an_client_send and
 * an_client_reply).
 * As with any libuv program, the process should ignore SIGPIPE, so that a
 * vanished broker is an error code rather than a fatal signal. */
#ifndef AN_CLIENT_H
#define AN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "proto/archnet.pb-c.h"

typedef struct an_client an_client_t;

typedef struct an_client_params {
  const char *broker;     /* "HOST:PORT" */
  const char *pin;        /* "sha256//..." of the broker's key */
  Archnet__Role role;
  const char *node_name;  /* for the broker's logs; may be NULL */
  const char *software;   /* "archnet-worker/0.1.0"; may be NULL */
  uint32_t max_frame;     /* 0 = AN_CONN_DEFAULT_MAX_FRAME */
  uint64_t timeout_ms;    /* per call, including connect; 0 = 30 s */
  /* Overrides the protocol version sent in Hello; tests only (0 = ours). */
  uint32_t protocol_version;
  /* The node's credentials from enrollment (0 / NULL: none, only Enroll
   * is then allowed). */
  uint64_t node_id;
  const char *secret;
} an_client_params_t;

/* Connects and says Hello. On failure returns an error (AN_EPIN, AN_ETLS,
 * AN_EVERSION, UV_ECONNREFUSED, UV_ETIMEDOUT, AN_EREMOTE...) with a sentence
 * for a person in `err`; *out is left NULL. */
int an_client_connect(const an_client_params_t *params, an_client_t **out, char *err,
                      size_t errlen);

/* Sends `req` (its request_id is assigned here) and waits for the reply,
 * unpacked into `arena`. If the broker answers with an Error, *reply is set,
 * the message goes to `err` and AN_EREMOTE is returned. */
int an_client_call(an_client_t *c, Archnet__Envelope *req, an_arena_t *arena,
                   Archnet__Envelope **reply, char *err, size_t errlen);

/* The two halves of an_client_call, for pipelining: several requests in
 * flight on one connection. an_client_send assigns the request id
 * (returned in *id) and sends without waiting; an_client_reply waits for
 * the reply to `id`, whatever order replies come in (the broker answers
 * most requests in order, but a parked LeaseRequest only when work comes),
 * and unpacks it as an_client_call does. Every request sent must have its
 * reply taken, or be given up with an_client_abandon, which frees its
 * reply now or when it comes. */
int an_client_send(an_client_t *c, Archnet__Envelope *req, uint64_t *id, char *err,
                   size_t errlen);
int an_client_reply(an_client_t *c, uint64_t id, an_arena_t *arena, Archnet__Envelope **reply,
                    char *err, size_t errlen);
void an_client_abandon(an_client_t *c, uint64_t id);

/* Round trip of a Ping; the time it took in nanoseconds. */
int an_client_ping(an_client_t *c, uint64_t *rtt_ns, char *err, size_t errlen);

/* What the broker said in HelloOk. Valid until an_client_close. */
const char *an_client_broker_software(const an_client_t *c);
uint64_t an_client_session_id(const an_client_t *c);

/* Closes politely (close_notify) and frees everything. NULL is fine. */
void an_client_close(an_client_t *c);

#endif
