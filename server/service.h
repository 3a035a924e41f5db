/* The broker's requests after Hello: enrollment, tasks, blobs, leases,
 * heartbeats, models and money, over the store (SQLite), the blob store and
 * the validation sandbox. Sessions hand requests here; replies go back
 * through the session, at once or (a worker's long poll for a lease, a
 * model's validation) later on the same loop.
 *
 * Who may do what (checked on every request, from the session's
 * authenticated node and role):
 *   - a publisher: submit tasks, upload their datasets, see, cancel and list
 *     its own tasks, download the accepted model of its own task;
 *   - a worker: lease, heartbeat its lease, download the training set of the
 *     task it holds a live lease on (never a validation set), upload and
 *     submit a model for that lease only;
 *   - an admin: see every task;
 *   - anyone with a token: enroll. */
#ifndef AN_SERVER_SERVICE_H
#define AN_SERVER_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <uv.h>

#include "proto/archnet.pb-c.h"
#include "server/blobstore.h"
#include "server/http.h"
#include "server/store.h"

typedef struct an_service an_service_t;
typedef struct an_session an_session_t;

typedef struct an_service_params {
  an_store_t *store;         /* borrowed; outlives the service */
  an_blobstore_t *blobs;     /* borrowed */
  const char *exe;           /* the broker binary, re-executed to score models */
  int fee_permille;          /* the broker's cut of each bounty */
  uint32_t default_lease_seconds;
  uint32_t max_wait_seconds; /* longest lease long poll */
  uint32_t max_chunk_bytes;  /* largest download chunk */
  uint64_t max_model_bytes;  /* a worker's upload */
  uint64_t score_memory_bytes;
  double score_cpu_seconds, score_wall_seconds;
  an_broker_stats_t *stats;  /* live counters for /metrics; may be NULL */
  EVP_PKEY *receipt_key;     /* signs payment receipts (the TLS key); borrowed; NULL: receipts
                              * are refused (INTERNAL), never sent unsigned. Kept across
                              * an_service_reconfigure. */
} an_service_params_t;

int an_service_new(uv_loop_t *loop, const an_service_params_t *p, an_service_t **out, char *err,
                   size_t errlen);

/* Applies new tunables from `p` (fee, lease and wait times, limits of
 * models and of the scoring sandbox) to requests from now on; the store,
 * blob store, executable and stats stay. For SIGHUP. */
void an_service_reconfigure(an_service_t *svc, const an_service_params_t *p);

/* A group commit failed (group_commit.h): redo what the lost changes
 * started and no client will ask for again (scoring a model whose verdict
 * was lost). */
void an_service_commit_lost(an_service_t *svc);

/* Stops the timers and forgets waiters; the loop then closes the handles.
 * In-flight validations finish or are re-run at the next start. */
void an_service_stop(an_service_t *svc);
/* After the loop has run dry. */
void an_service_free(an_service_t *svc);

/* Checks Hello credentials from `peer` ("IP:PORT"). 0 with *role set;
 * AN_EAUTH; or UV_EAGAIN when that address failed too often lately (more
 * than 10 failures in a minute: refused for the next minute, without even
 * checking, so guessing secrets from one address is slow). */
int an_service_authenticate(an_service_t *svc, uint64_t node_id, const char *secret,
                            const char *peer, an_role_t *role);

/* Handles one request of an authenticated (or enrolling) session. Returns
 * 0, or an error that should close the connection. */
int an_service_handle(an_service_t *svc, an_session_t *s, const Archnet__Envelope *req);

/* The session is going away: drop its pending long poll. */
void an_service_session_gone(an_service_t *svc, an_session_t *s);

#endif
