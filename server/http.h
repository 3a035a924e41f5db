/* The broker's HTTP admin endpoint, on its own port, served by
 * libmicrohttpd from its own thread:
 *
 *   GET /            a self-contained HTML dashboard (tasks, workers, balances)
 *   GET /metrics     Prometheus text format 0.0.4
 *   GET /api/tasks   JSON: counts by state and the newest tasks
 *                    (?limit=N, 1..1000, default 100; ?state=NAME)
 *   GET /api/nodes   JSON: nodes, their balances and the leases they hold
 *   GET /api/ledger  JSON: balances, escrow and the ledger's invariant check
 *   GET /api/stats   JSON: the broker loop's live counters
 *
 * HEAD is answered like GET; other methods get 405, other paths 404. No
 * response carries a secret: credentials, tokens and the datasets' digests
 * are never read or shown.
 *
 * Threads: the endpoint reads the broker's state through a store connection
 * of its own, opened on the same database file (SQLite in WAL mode lets it
 * read while the broker writes) and used only by the endpoint's thread. The
 * counters only the broker's event loop knows arrive through an
 * an_broker_stats_t that the loop increments and the endpoint only reads. */
#ifndef AN_SERVER_HTTP_H
#define AN_SERVER_HTTP_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Live counters, shared between the broker's loop (the only writer, with
 * atomic_fetch_add) and the endpoint's thread (atomic_load). All are
 * monotonic: a gauge such as "connections open" is published as the
 * difference of two counters, so the loop never subtracts and never needs
 * to read. Each increment must follow the event it counts, and a "closed"
 * or "finished" counter must only be incremented after its "accepted" or
 * "started" counter was (the endpoint relies on that order to keep the
 * differences from going negative). */
typedef struct an_broker_stats {
  atomic_uint_fast64_t connections_accepted; /* TCP connections taken into a session */
  atomic_uint_fast64_t connections_closed;   /* sessions gone, for any reason */
  atomic_uint_fast64_t connections_refused;  /* turned away (session limit) */
  atomic_uint_fast64_t bytes_received;       /* from clients, as read from the sockets */
  atomic_uint_fast64_t bytes_sent;
  atomic_uint_fast64_t auth_failures;        /* wrong or revoked credentials */
  atomic_uint_fast64_t leases_granted;
  atomic_uint_fast64_t leases_expired;
  atomic_uint_fast64_t uploads_started;      /* blob uploads begun (a resume counts again) */
  atomic_uint_fast64_t uploads_completed;    /* blobs verified and stored */
  atomic_uint_fast64_t validations_started;
  atomic_uint_fast64_t validations_accepted; /* finished, model paid */
  atomic_uint_fast64_t validations_rejected; /* finished, model refused (or crashed, hung) */
  atomic_uint_fast64_t payouts;              /* payments to workers */
  atomic_uint_fast64_t payout_credits;       /* credits paid to workers, fees excluded */
} an_broker_stats_t;

/* Sets every counter to zero (atomic objects are initialised with
 * atomic_init, not memset). */
void an_broker_stats_init(an_broker_stats_t *stats);

typedef struct an_http an_http_t;

typedef struct an_http_params {
  const char *listen;         /* "HOST:PORT", e.g. "127.0.0.1:7444"; port 0 picks a free one */
  const char *db_path;        /* the broker's state database (DATA/state.db) */
  an_broker_stats_t *stats;   /* borrowed, must outlive the endpoint; NULL: no live counters */
  unsigned max_connections;   /* concurrent HTTP connections; 0: 32 */
  unsigned timeout_seconds;   /* an idle HTTP connection is closed after; 0: 10 */
} an_http_params_t;

/* Opens the endpoint's own store connection on params->db_path and starts
 * serving on params->listen from a new thread. Call it after the broker has
 * opened (and so created and migrated) the database. When the listen
 * address is a loopback one, requests must name a loopback host in their
 * Host header (localhost, 127.x.x.x, [::1]): a web page cannot then reach
 * the endpoint through DNS rebinding. On failure returns a negative code
 * (AN_ECONFIG: bad address; AN_EDB: the store; UV_EADDRINUSE and other libuv
 * codes: the socket) with a sentence in `err`, and *out set to NULL. The
 * params' strings need not outlive the call. */
int an_http_start(const an_http_params_t *params, an_http_t **out, char *err, size_t errlen);

/* The address actually bound ("127.0.0.1:41234"). Valid until an_http_stop. */
const char *an_http_address(const an_http_t *h);

/* Stops serving (waits for the endpoint's thread: a request in progress
 * finishes first), closes the store connection and frees `h`. NULL is
 * allowed. Call it before freeing the stats it reads. */
void an_http_stop(an_http_t *h);

#endif
