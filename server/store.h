/* The broker's durable state: one SQLite database (WAL, synchronous=FULL,
 * foreign keys on) holding nodes, credentials, enrollment tokens, tasks,
 * leases, attempts, validation results and the ledger. All SQL lives in
 * store.c. Every function that changes state runs in one transaction and
 * returns only after it is committed (so a caller acknowledges a client
 * only after the state it acknowledges is on disk) unless the caller asked
 * for group commit (below), and every ledger entry
 * is written in the same transaction as the state change that causes it.
 *
 * Task life:
 *
 *   uploading -> queued -> leased -> validating -> accepted -> delivered
 *                  ^          |           |
 *                  +----------+-----------+  (lease expired / model rejected,
 *                                             while attempts < max_attempts)
 *   -> failed    (attempts exhausted: escrow refunded to the publisher)
 *   -> cancelled (by the publisher before acceptance: escrow refunded; a
 *                 leased worker learns it at its next heartbeat)
 *
 * Ledger: integer credits, double entry. Accounts are named strings:
 * "node:<id>" (a node's balance), "escrow:<task id>", "fees" (the broker's
 * cut) and "mint" (the counterpart of admin top-ups, so the sum of all
 * entries is always zero). Each transfer is a pair of rows with the same
 * transfer id, and every payout has a receipt: the transfer id plus the
 * task, worker, amount and time, which a worker can keep.
 *
 * The store is used from the broker's event loop thread only; it is not
 * thread-safe. Errors: AN_EDB (SQLite failed; the message is in `err` where
 * a function takes one), AN_ENOTFOUND, AN_ESTATE (wrong state for the
 * operation), AN_EFORBIDDEN (not this node's task or lease), AN_EFUNDS,
 * AN_EAUTH; UV_EINVAL for an argument out of its documented range. */
#ifndef AN_SERVER_STORE_H
#define AN_SERVER_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct an_store an_store_t;

/* Same numbers as the wire's Role. */
typedef enum an_role { AN_ROLE_PUBLISHER = 1, AN_ROLE_WORKER = 2, AN_ROLE_ADMIN = 3 } an_role_t;

typedef enum an_task_state {
  AN_TASK_UPLOADING = 0,
  AN_TASK_QUEUED,
  AN_TASK_LEASED,
  AN_TASK_VALIDATING,
  AN_TASK_ACCEPTED,
  AN_TASK_DELIVERED,
  AN_TASK_FAILED,
  AN_TASK_CANCELLED,
  AN_TASK_STATE_COUNT
} an_task_state_t;

/* "uploading", "queued", ... */
const char *an_task_state_name(an_task_state_t s);

#define AN_DIGEST_HEX 65 /* a SHA-256 in lowercase hex, NUL-terminated */

/* Opens (creating if needed) the database at `path`, migrating an older
 * schema version or refusing a newer one with a clear message. */
int an_store_open(const char *path, an_store_t **out, char *err, size_t errlen);
void an_store_close(an_store_t *s);

/* ---- nodes and credentials ---- */

/* A one-time enrollment token for `role`, valid for `ttl_seconds` from
 * `now`. Only its SHA-256 is stored; the token (64 hex chars) is written to
 * token_out for the admin to hand over. */
int an_store_token_create(an_store_t *s, an_role_t role, int64_t now, int64_t ttl_seconds,
                          char token_out[AN_DIGEST_HEX]);

/* Redeems a token (once; unknown, used or expired: AN_EAUTH) for a new
 * node named `name` with the token's role. The node's secret (64 hex
 * chars, random) is written to secret_out and stored only as a salted
 * hash. */
int an_store_enroll(an_store_t *s, const char *token, const char *name, int64_t now,
                    int64_t *node_id, an_role_t *role, char secret_out[AN_DIGEST_HEX]);

/* Checks a node's secret; AN_EAUTH if wrong, unknown or revoked. */
int an_store_authenticate(an_store_t *s, int64_t node_id, const char *secret, an_role_t *role);

int an_store_revoke(an_store_t *s, int64_t node_id);

typedef struct an_node_info {
  int64_t id;
  char name[64];
  an_role_t role;
  int revoked;
  int64_t created;
  int64_t balance;
} an_node_info_t;

/* Calls `cb` for every node, by id; a non-zero return from cb stops. */
int an_store_nodes(an_store_t *s, int (*cb)(const an_node_info_t *n, void *arg), void *arg);

/* ---- ledger ---- */

/* Admin top-up: `credits` (> 0) from "mint" to the node. */
int an_store_topup(an_store_t *s, int64_t node_id, int64_t credits, int64_t now);

/* A node's balance: the sum of its account's entries. */
int an_store_balance(an_store_t *s, int64_t node_id, int64_t *credits);

/* The invariants: all entries sum to zero; no node or escrow account is
 * below zero; every transfer's two rows cancel; no task has more than one
 * payout; every escrow account of a finished task is zero. Returns 0, or
 * AN_EDB with the first violation described in `err`. */
int an_store_ledger_check(an_store_t *s, char *err, size_t errlen);

typedef struct an_receipt {
  int64_t transfer_id, task_id, worker_id, amount, fee, time;
} an_receipt_t;

/* The payout receipt of a task (AN_ENOTFOUND if none was paid). */
int an_store_receipt(an_store_t *s, int64_t task_id, an_receipt_t *out);

/* ---- tasks ---- */

typedef struct an_task_spec {
  int64_t publisher;     /* the node submitting it */
  int64_t bounty;        /* credits moved to escrow at creation (> 0) */
  double min_accuracy;   /* in [0, 1]: the validation accuracy to be paid */
  int max_attempts;      /* >= 1: leases (expired or rejected) before failing */
  int lease_seconds;     /* >= 1: time a worker has between heartbeats */
  /* The datasets, by SHA-256 of their .npy files. */
  char train_x[AN_DIGEST_HEX], train_y[AN_DIGEST_HEX];
  char val_x[AN_DIGEST_HEX], val_y[AN_DIGEST_HEX];
  int64_t input_c, input_h, input_w; /* one encoded sample */
  int64_t classes;
  int64_t min_memory_bytes;          /* capability a worker needs */
  int needs_gpu;
  int exclude_failed;    /* never lease to a worker that already failed it */
} an_task_spec_t;

typedef struct an_task {
  int64_t id;
  an_task_spec_t spec;
  an_task_state_t state;
  int attempts;          /* leases handed out so far */
  int64_t worker;        /* the leaseholder (leased, validating) or the paid worker; 0 */
  int64_t lease_deadline;
  double progress;       /* last heartbeat's, in [0, 1] */
  char model[AN_DIGEST_HEX]; /* the submitted (then accepted) model, or "" */
  double accuracy;       /* last validation's, or -1 */
  char reason[256];      /* last rejection's, or failure's, or "" */
  int64_t created, updated;
} an_task_t;

/* Creates a task in `uploading`, moving the bounty from the publisher's
 * balance to the task's escrow (AN_EFUNDS if short). */
int an_store_task_create(an_store_t *s, const an_task_spec_t *spec, int64_t now,
                         int64_t *task_id);

/* uploading -> queued, once all four blobs are stored (the caller checks). */
int an_store_task_ready(an_store_t *s, int64_t task_id, int64_t now);

int an_store_task_get(an_store_t *s, int64_t task_id, an_task_t *out);

/* Tasks by id; publisher 0 = all (admin). A non-zero return from cb stops. */
int an_store_tasks(an_store_t *s, int64_t publisher, int (*cb)(const an_task_t *t, void *arg),
                   void *arg);

/* Counts by state, for metrics. */
int an_store_task_counts(an_store_t *s, int64_t counts[AN_TASK_STATE_COUNT]);

/* The queued tasks at a glance (an index scan of the queued ones): how
 * many, and the least any of them asks of a worker. */
typedef struct an_queued {
  int64_t tasks;
  int64_t min_memory;      /* the smallest min_memory_bytes among them */
  int all_need_gpu;        /* every one of them needs a GPU */
  int64_t min_input_elems; /* the smallest input (C*H*W) among them */
} an_queued_t;
int an_store_queued(an_store_t *s, an_queued_t *out);

/* Cancels a task of this publisher before acceptance (AN_EFORBIDDEN if not
 * theirs, AN_ESTATE once accepted): escrow refunded. */
int an_store_task_cancel(an_store_t *s, int64_t task_id, int64_t publisher, int64_t now);

/* Admin: a failed task back to queued with its attempts reset (its escrow
 * must be topped up again by the publisher: AN_EFUNDS if the publisher
 * cannot pay the bounty again). */
int an_store_task_kick(an_store_t *s, int64_t task_id, int64_t now);

/* ---- leases ---- */

typedef struct an_worker_caps {
  int64_t memory_bytes;
  int gpu;
  int64_t max_input_elems; /* largest C*H*W it accepts; 0 = any */
} an_worker_caps_t;

/* The oldest queued task this worker can run (capabilities, at most one
 * lease per task per worker, `exclude_failed`): queued -> leased with the
 * deadline now + lease_seconds, attempts + 1. AN_ENOTFOUND if none.
 * "At most one lease per task per worker" counts since the task's last
 * kick; `exclude_failed` also keeps out, across kicks, workers whose lease
 * on it expired or whose model it rejected. */
int an_store_lease_next(an_store_t *s, int64_t worker, const an_worker_caps_t *caps,
                        int64_t now, an_task_t *out);

/* Extends a live lease to now + lease_seconds and records progress.
 * *cancelled = 1 (and no error) if the publisher cancelled the task; the
 * worker should stop. AN_ESTATE if the lease expired or was lost,
 * AN_EFORBIDDEN if it is not this worker's. */
int an_store_lease_heartbeat(an_store_t *s, int64_t task_id, int64_t worker, double progress,
                             int64_t now, int *cancelled);

/* Leases past their deadline: back to queued, or failed (refund) when the
 * attempts are used up. *n set to how many expired. */
int an_store_lease_expire(an_store_t *s, int64_t now, int *n);

/* The leaseholder's model arrived (its blob stored): leased -> validating. */
int an_store_model_submitted(an_store_t *s, int64_t task_id, int64_t worker,
                             const char model[AN_DIGEST_HEX], int64_t now);

/* The validator's verdict on a validating task. Accepted (accuracy >=
 * min_accuracy is the caller's decision): pay the worker bounty - fee and
 * the fee to "fees" (fee = bounty * fee_permille / 1000, rounded down),
 * once. Rejected: back to queued, or failed with a refund when attempts are
 * used up; `reason` is recorded either way. */
int an_store_validation_done(an_store_t *s, int64_t task_id, int accepted, double accuracy,
                             const char *reason, int fee_permille, int64_t now);

/* The publisher fetched the model: accepted -> delivered (idempotent). */
int an_store_task_delivered(an_store_t *s, int64_t task_id, int64_t now);

/* Tasks in `validating`: after a restart their validation runs again
 * (a verdict is recorded once, so a crash mid-validation cannot pay twice).
 * Calls cb for each. */
int an_store_validating(an_store_t *s, int (*cb)(const an_task_t *t, void *arg), void *arg);

/* ---- group commit ----
 *
 * One fsync per change caps a broker at a few hundred changes a second
 * whatever the CPU. Grouped, every state-changing call joins one open
 * transaction (each call still all-or-nothing, as a savepoint in it), and
 * the owner commits them all with one fsync, then acknowledges them. The
 * rule of this file still holds, moved to the caller: while
 * an_store_group_pending, what the calls did is not yet durable, so
 * nothing that depends on it may be acknowledged before
 * an_store_group_commit returns 0. If it fails, every change since the
 * last commit is gone (AN_EDB, message in an_store_errmsg) and none of it
 * may be acknowledged. Reads see the group's changes. */

/* From now on, changes join the group (off after an_store_open). */
void an_store_group_begin(an_store_t *s);
/* Changes made since the last commit wait in the group. */
int an_store_group_pending(const an_store_t *s);
/* Commits the group (one fsync); 0 when nothing is pending. */
int an_store_group_commit(an_store_t *s);
/* Commits, then goes back to one transaction per call. */
int an_store_group_end(an_store_t *s);

/* The message of the last SQLite error, for logs. */
const char *an_store_errmsg(an_store_t *s);

#endif
