/* The broker's durable state in SQLite; the contract is in store.h.
 *
 * Layout of the schema (version AN_STORE_SCHEMA, kept in PRAGMA
 * user_version):
 *
 *   nodes     enrolled nodes; the secret only as SHA-256(salt || secret)
 *   tokens    enrollment tokens, by SHA-256; single use
 *   tasks     one row per task, its spec and its place in the life cycle
 *   attempts  one row per lease handed out: who, in which round, how it
 *             ended (NULL while live), the model, accuracy and reason
 *   ledger    double-entry credits: two rows per transfer
 *
 * A task's `round` counts admin kicks. "At most one lease per task per
 * worker" holds within a round (a unique index on attempts enforces it);
 * a kick starts a new round in which earlier workers may try again, except,
 * for a task with `exclude_failed`, workers whose lease on it ever expired
 * or whose model it ever rejected.
 *
 * Every public function that changes state runs inside BEGIN IMMEDIATE ...
 * COMMIT: the write lock is taken up front, so a read-then-write sequence
 * can never be overtaken by another connection (an admin command on the
 * same file) and never fails half-way with SQLITE_BUSY_SNAPSHOT. Statements
 * are prepared once, cached for the life of the store, and always reset
 * right after use so no read transaction outlives the call that opened it. */
#include "server/store.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>
#include <uv.h>

#include "common/digest.h"
#include "common/error.h"

#define AN_STORE_SCHEMA 1     /* the user_version this code reads and writes */
#define AN_STORE_BUSY_MS 5000 /* wait this long for another process's write lock */
#define AN_SALT_LEN 16
#define AN_HASH_LEN 32        /* SHA-256 */
#define AN_RANDOM_LEN 32      /* bytes behind a token or a secret: 64 hex chars */
#define AN_REASON_MAX 255     /* an_task_t.reason's capacity, without the NUL */
#define AN_ACCOUNT_LEN 32     /* "escrow:" + 20 digits + NUL fits */

/* Migrations: entry i turns a version-i database into version i + 1, in the
 * same transaction as the user_version it sets, so a crash mid-migration
 * leaves the old version intact. Version 0 is an empty file. */
static const char *const an_store_migrations[AN_STORE_SCHEMA] = {
    /* 0 -> 1 */
    "CREATE TABLE nodes ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 63),"
    "  role INTEGER NOT NULL CHECK (role BETWEEN 1 AND 3),"
    "  salt BLOB NOT NULL CHECK (length(salt) = 16),"
    "  secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),"
    "  revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),"
    "  created INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE tokens ("
    "  hash BLOB PRIMARY KEY CHECK (length(hash) = 32),"
    "  role INTEGER NOT NULL CHECK (role BETWEEN 1 AND 3),"
    "  created INTEGER NOT NULL,"
    "  expires INTEGER NOT NULL,"
    "  used_at INTEGER,"
    "  node INTEGER REFERENCES nodes(id)"
    ") STRICT, WITHOUT ROWID;"
    "CREATE TABLE tasks ("
    "  id INTEGER PRIMARY KEY,"
    "  publisher INTEGER NOT NULL REFERENCES nodes(id),"
    "  bounty INTEGER NOT NULL CHECK (bounty > 0),"
    "  min_accuracy REAL NOT NULL CHECK (min_accuracy BETWEEN 0 AND 1),"
    "  max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),"
    "  lease_seconds INTEGER NOT NULL CHECK (lease_seconds >= 1),"
    "  train_x TEXT NOT NULL, train_y TEXT NOT NULL,"
    "  val_x TEXT NOT NULL, val_y TEXT NOT NULL,"
    "  input_c INTEGER NOT NULL, input_h INTEGER NOT NULL, input_w INTEGER NOT NULL,"
    "  input_elems INTEGER NOT NULL,"
    "  classes INTEGER NOT NULL,"
    "  min_memory INTEGER NOT NULL,"
    "  needs_gpu INTEGER NOT NULL CHECK (needs_gpu IN (0, 1)),"
    "  exclude_failed INTEGER NOT NULL CHECK (exclude_failed IN (0, 1)),"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 7),"
    "  round INTEGER NOT NULL DEFAULT 0,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  worker INTEGER REFERENCES nodes(id),"
    "  lease_deadline INTEGER NOT NULL DEFAULT 0,"
    "  progress REAL NOT NULL DEFAULT 0,"
    "  model TEXT NOT NULL DEFAULT '',"
    "  accuracy REAL NOT NULL DEFAULT -1,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  created INTEGER NOT NULL,"
    "  updated INTEGER NOT NULL"
    ") STRICT;"
    /* The queue in age order, the lease sweep by deadline, a publisher's list. */
    "CREATE INDEX tasks_by_state ON tasks(state, id);"
    "CREATE INDEX tasks_by_deadline ON tasks(state, lease_deadline);"
    "CREATE INDEX tasks_by_publisher ON tasks(publisher, id);"
    "CREATE TABLE attempts ("
    "  id INTEGER PRIMARY KEY,"
    "  task INTEGER NOT NULL REFERENCES tasks(id),"
    "  worker INTEGER NOT NULL REFERENCES nodes(id),"
    "  round INTEGER NOT NULL,"
    "  outcome TEXT CHECK (outcome IN ('expired', 'rejected', 'accepted', 'cancelled')),"
    "  model TEXT NOT NULL DEFAULT '',"
    "  accuracy REAL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  started INTEGER NOT NULL,"
    "  ended INTEGER"
    ") STRICT;"
    /* The database itself refuses a second lease per worker and round, and a
     * second live lease on a task, whatever the code above it does. */
    "CREATE UNIQUE INDEX attempts_once_per_round ON attempts(task, worker, round);"
    "CREATE UNIQUE INDEX attempts_one_live ON attempts(task) WHERE outcome IS NULL;"
    "CREATE TABLE ledger ("
    "  id INTEGER PRIMARY KEY,"
    "  transfer_id INTEGER NOT NULL,"
    "  account TEXT NOT NULL,"
    "  amount INTEGER NOT NULL,"
    "  task_id INTEGER REFERENCES tasks(id),"
    "  kind TEXT NOT NULL CHECK (kind IN ('topup', 'escrow', 'payout', 'fee', 'refund')),"
    "  time INTEGER NOT NULL,"
    "  UNIQUE (transfer_id, account)"
    ") STRICT;"
    /* On the account alone, not (account, amount): an account's entries are
     * then summed in the order they were written, so every partial sum is a
     * balance the account once had, within what was minted in all. Sorted by
     * amount, the debits would come first and a busy account's SUM() could
     * overflow although its balance never did. */
    "CREATE INDEX ledger_by_account ON ledger(account);"
    "CREATE INDEX ledger_by_task ON ledger(task_id, kind);"
    /* Exactly-once payment, below the state machine: a second payout (or
     * fee) for a task would repeat its escrow leg and is refused. */
    "CREATE UNIQUE INDEX ledger_paid_once ON ledger(task_id, kind, account)"
    "  WHERE kind IN ('payout', 'fee');"
    "PRAGMA user_version = 1;",
};

#define AN_TASK_COLUMNS                                                                     \
  "id, publisher, bounty, min_accuracy, max_attempts, lease_seconds, train_x, train_y, "   \
  "val_x, val_y, input_c, input_h, input_w, classes, min_memory, needs_gpu, "              \
  "exclude_failed, state, attempts, worker, lease_deadline, progress, model, accuracy, "   \
  "reason, created, updated"

/* The statements, prepared on first use and kept until an_store_close. */
enum an_stmt {
  ST_BEGIN,
  ST_BEGIN_READ,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SAVEPOINT,
  ST_RELEASE,
  ST_ROLLBACK_TO,
  ST_TOKEN_INSERT,
  ST_TOKEN_GET,
  ST_TOKEN_USE,
  ST_NODE_INSERT,
  ST_NODE_AUTH,
  ST_NODE_ROLE,
  ST_NODE_REVOKE,
  ST_NODE_NEXT,
  ST_BALANCE,
  ST_TRANSFER_ID,
  ST_LEDGER_INSERT,
  ST_RECEIPT,
  ST_RECEIPT_FEE,
  ST_TASK_INSERT,
  ST_TASK_GET,
  ST_TASK_NEXT,
  ST_TASK_NEXT_OF,
  ST_TASK_NEXT_IN_STATE,
  ST_TASK_COUNTS,
  ST_TASK_QUEUED,
  ST_TASK_SET_STATE,
  ST_TASK_END_LEASE,
  ST_TASK_LEASE,
  ST_TASK_HEARTBEAT,
  ST_TASK_MODEL,
  ST_TASK_VERDICT,
  ST_TASK_KICK,
  ST_TASK_EXPIRED,
  ST_LEASE_PICK,
  ST_ATTEMPT_INSERT,
  ST_ATTEMPT_END,
  ST_ATTEMPT_MODEL,
  ST_ATTEMPT_LAST,
  ST_CHECK_SUM,
  ST_CHECK_TRANSFERS,
  ST_CHECK_LEGS,
  ST_CHECK_ACCOUNTS,
  ST_CHECK_NEGATIVE,
  ST_CHECK_PAID_ONCE,
  ST_CHECK_PAID,
  ST_CHECK_ESCROW,
  ST_COUNT
};

static const char *const an_stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SAVEPOINT] = "SAVEPOINT op",
    [ST_RELEASE] = "RELEASE op",
    [ST_ROLLBACK_TO] = "ROLLBACK TO op",
    [ST_TOKEN_INSERT] = "INSERT INTO tokens (hash, role, created, expires) VALUES (?1, ?2, ?3, ?4)",
    [ST_TOKEN_GET] = "SELECT role, expires, used_at IS NOT NULL FROM tokens WHERE hash = ?1",
    [ST_TOKEN_USE] = "UPDATE tokens SET used_at = ?2, node = ?3 WHERE hash = ?1 AND used_at IS NULL",
    [ST_NODE_INSERT] =
        "INSERT INTO nodes (name, role, salt, secret_hash, created) VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_NODE_AUTH] = "SELECT role, revoked, salt, secret_hash FROM nodes WHERE id = ?1",
    [ST_NODE_ROLE] = "SELECT role, revoked FROM nodes WHERE id = ?1",
    [ST_NODE_REVOKE] = "UPDATE nodes SET revoked = 1 WHERE id = ?1",
    [ST_NODE_NEXT] = "SELECT id, name, role, revoked, created,"
                     " (SELECT COALESCE(SUM(amount), 0) FROM ledger"
                     "   WHERE account = 'node:' || nodes.id)"
                     " FROM nodes WHERE id > ?1 ORDER BY id LIMIT 1",
    [ST_BALANCE] = "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE account = ?1",
    [ST_TRANSFER_ID] = "SELECT COALESCE(MAX(transfer_id), 0) + 1 FROM ledger",
    [ST_LEDGER_INSERT] = "INSERT INTO ledger (transfer_id, account, amount, task_id, kind, time)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_RECEIPT] = "SELECT l.transfer_id, l.amount, l.time, t.worker"
                   " FROM ledger AS l JOIN tasks AS t ON t.id = l.task_id"
                   " WHERE l.task_id = ?1 AND l.kind = 'payout' AND l.account = 'node:' || t.worker",
    [ST_RECEIPT_FEE] = "SELECT COALESCE(SUM(amount), 0) FROM ledger"
                       " WHERE task_id = ?1 AND kind = 'fee' AND account = 'fees'",
    [ST_TASK_INSERT] =
        "INSERT INTO tasks (publisher, bounty, min_accuracy, max_attempts, lease_seconds,"
        " train_x, train_y, val_x, val_y, input_c, input_h, input_w, input_elems, classes,"
        " min_memory, needs_gpu, exclude_failed, state, created, updated)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
        " ?18, ?19, ?19)",
    [ST_TASK_GET] = "SELECT " AN_TASK_COLUMNS " FROM tasks WHERE id = ?1",
    [ST_TASK_NEXT] = "SELECT " AN_TASK_COLUMNS " FROM tasks WHERE id > ?1 ORDER BY id LIMIT 1",
    [ST_TASK_NEXT_OF] = "SELECT " AN_TASK_COLUMNS
                        " FROM tasks WHERE publisher = ?2 AND id > ?1 ORDER BY id LIMIT 1",
    [ST_TASK_NEXT_IN_STATE] = "SELECT " AN_TASK_COLUMNS
                              " FROM tasks WHERE state = ?2 AND id > ?1 ORDER BY id LIMIT 1",
    [ST_TASK_COUNTS] = "SELECT state, COUNT(*) FROM tasks GROUP BY state",
    [ST_TASK_QUEUED] = "SELECT COUNT(*), MIN(min_memory), MIN(needs_gpu), MIN(input_elems)"
                       " FROM tasks WHERE state = 1",
    [ST_TASK_SET_STATE] = "UPDATE tasks SET state = ?2, updated = ?3 WHERE id = ?1",
    [ST_TASK_END_LEASE] = "UPDATE tasks SET state = ?2, worker = NULL, lease_deadline = 0,"
                          " progress = 0, reason = ?3, updated = ?4 WHERE id = ?1",
    [ST_TASK_LEASE] = "UPDATE tasks SET state = ?2, worker = ?3, lease_deadline = ?4,"
                      " attempts = attempts + 1, progress = 0, model = '', updated = ?5"
                      " WHERE id = ?1",
    [ST_TASK_HEARTBEAT] =
        "UPDATE tasks SET lease_deadline = ?2, progress = ?3, updated = ?4 WHERE id = ?1",
    [ST_TASK_MODEL] = "UPDATE tasks SET state = ?2, model = ?3, lease_deadline = 0, updated = ?4"
                      " WHERE id = ?1",
    [ST_TASK_VERDICT] = "UPDATE tasks SET accuracy = ?2, reason = ?3, updated = ?4 WHERE id = ?1",
    [ST_TASK_KICK] = "UPDATE tasks SET state = ?2, attempts = 0, round = round + 1, model = '',"
                     " progress = 0, updated = ?3 WHERE id = ?1",
    [ST_TASK_EXPIRED] = "SELECT id FROM tasks WHERE state = ?1 AND lease_deadline <= ?2"
                        " ORDER BY lease_deadline LIMIT 1",
    /* The oldest queued task this worker can run, walking tasks_by_state in
     * id order. The attempts rule: none of this worker's in this round,
     * nor, with exclude_failed, a failed one in any round. */
    [ST_LEASE_PICK] =
        "SELECT t.id FROM tasks AS t"
        " WHERE t.state = ?1 AND t.min_memory <= ?2 AND (t.needs_gpu = 0 OR ?3 <> 0)"
        "   AND (?4 = 0 OR t.input_elems <= ?4)"
        "   AND NOT EXISTS (SELECT 1 FROM attempts AS a"
        "                    WHERE a.task = t.id AND a.worker = ?5"
        "                      AND (a.round = t.round OR (t.exclude_failed <> 0"
        "                           AND a.outcome IN ('expired', 'rejected'))))"
        " ORDER BY t.id LIMIT 1",
    [ST_ATTEMPT_INSERT] = "INSERT INTO attempts (task, worker, round, started)"
                          " SELECT id, ?2, round, ?3 FROM tasks WHERE id = ?1",
    [ST_ATTEMPT_END] = "UPDATE attempts SET outcome = ?2, reason = ?3, accuracy = ?4, ended = ?5"
                       " WHERE task = ?1 AND outcome IS NULL",
    [ST_ATTEMPT_MODEL] = "UPDATE attempts SET model = ?2 WHERE task = ?1 AND outcome IS NULL",
    [ST_ATTEMPT_LAST] = "SELECT outcome IS NULL, outcome = 'cancelled' FROM attempts"
                        " WHERE task = ?1 AND worker = ?2 ORDER BY id DESC LIMIT 1",
    /* ---- an_store_ledger_check, one invariant per statement ---- */
    /* As a sum of balances, each bounded by what was minted, so no partial
     * sum overflows however much has changed hands. */
    [ST_CHECK_SUM] = "SELECT COALESCE(SUM(balance), 0)"
                     " FROM (SELECT SUM(amount) AS balance FROM ledger GROUP BY account)",
    [ST_CHECK_TRANSFERS] =
        "SELECT transfer_id, COUNT(*), SUM(amount) FROM ledger GROUP BY transfer_id"
        " HAVING COUNT(*) <> 2 OR SUM(amount) <> 0 OR MIN(kind) <> MAX(kind)"
        "   OR MIN(time) <> MAX(time) OR COUNT(task_id) NOT IN (0, 2)"
        "   OR MIN(task_id) <> MAX(task_id)"
        " LIMIT 1",
    /* Each kind moves credits between its own two accounts, in its own
     * direction; anything else (a row NULL makes unknown) is reported. */
    [ST_CHECK_LEGS] =
        "SELECT transfer_id, kind, account FROM ledger WHERE NOT COALESCE(CASE kind"
        " WHEN 'topup' THEN task_id IS NULL AND ((account = 'mint' AND amount <= 0)"
        "   OR (account GLOB 'node:*' AND amount >= 0))"
        " WHEN 'escrow' THEN (account GLOB 'node:*' AND amount <= 0)"
        "   OR (account = 'escrow:' || task_id AND amount >= 0)"
        " WHEN 'payout' THEN (account = 'escrow:' || task_id AND amount <= 0)"
        "   OR (account GLOB 'node:*' AND amount >= 0)"
        " WHEN 'fee' THEN (account = 'escrow:' || task_id AND amount <= 0)"
        "   OR (account = 'fees' AND amount >= 0)"
        " WHEN 'refund' THEN (account = 'escrow:' || task_id AND amount <= 0)"
        "   OR (account GLOB 'node:*' AND amount >= 0)"
        " END, 0) LIMIT 1",
    [ST_CHECK_ACCOUNTS] = "SELECT account FROM ledger"
                          " WHERE account NOT IN ('mint', 'fees')"
                          "   AND account NOT IN (SELECT 'node:' || id FROM nodes)"
                          "   AND account NOT IN (SELECT 'escrow:' || id FROM tasks)"
                          " LIMIT 1",
    [ST_CHECK_NEGATIVE] = "SELECT account, SUM(amount) FROM ledger WHERE account <> 'mint'"
                          " GROUP BY account HAVING SUM(amount) < 0 LIMIT 1",
    [ST_CHECK_PAID_ONCE] = "SELECT task_id, kind, COUNT(DISTINCT transfer_id) FROM ledger"
                           " WHERE kind IN ('payout', 'fee') GROUP BY task_id, kind"
                           " HAVING COUNT(DISTINCT transfer_id) > 1 LIMIT 1",
    /* Accepted or delivered if and only if paid, and paid to its worker. */
    [ST_CHECK_PAID] = "SELECT t.id, t.state FROM tasks AS t"
                      " WHERE (t.state IN (?1, ?2)) <> EXISTS (SELECT 1 FROM ledger AS l"
                      "   WHERE l.task_id = t.id AND l.kind = 'payout'"
                      "     AND l.account = 'node:' || t.worker)"
                      " LIMIT 1",
    /* A live task's escrow holds its bounty; a finished task's holds 0. */
    [ST_CHECK_ESCROW] = "SELECT t.id, t.state, t.bounty,"
                        " (SELECT COALESCE(SUM(amount), 0) FROM ledger"
                        "   WHERE account = 'escrow:' || t.id) AS held"
                        " FROM tasks AS t"
                        " WHERE held <> CASE WHEN t.state IN (?1, ?2, ?3, ?4)"
                        "   THEN t.bounty ELSE 0 END"
                        " LIMIT 1",
};

struct an_store {
  sqlite3 *db;
  sqlite3_stmt *stmts[ST_COUNT];
  int grouping;    /* an_store_group_begin was called: changes join one transaction */
  int group_open;  /* that transaction has begun and holds changes not yet committed */
  int group_lost;  /* SQLite rolled the group back on an error (I/O, disk full) */
  int in_savepoint;/* the running call's own work is a savepoint inside it */
  char errmsg[256];
};

static const char *const an_state_names[AN_TASK_STATE_COUNT] = {
    [AN_TASK_UPLOADING] = "uploading", [AN_TASK_QUEUED] = "queued",
    [AN_TASK_LEASED] = "leased",       [AN_TASK_VALIDATING] = "validating",
    [AN_TASK_ACCEPTED] = "accepted",   [AN_TASK_DELIVERED] = "delivered",
    [AN_TASK_FAILED] = "failed",       [AN_TASK_CANCELLED] = "cancelled",
};

const char *an_task_state_name(an_task_state_t st) {
  return (unsigned)st < AN_TASK_STATE_COUNT ? an_state_names[st] : "unknown";
}

/* ---- SQLite plumbing ---- */

/* Keeps SQLite's message for an_store_errmsg and reports AN_EDB. */
static int an_store_db_error(an_store_t *s) {
  snprintf(s->errmsg, sizeof s->errmsg, "%s", sqlite3_errmsg(s->db));
  return AN_EDB;
}

/* Reports AN_EDB for a value SQLite returned that the schema forbids:
 * the file was changed behind the store's back. */
static int an_store_corrupt(an_store_t *s, const char *what, int64_t id) {
  snprintf(s->errmsg, sizeof s->errmsg, "corrupt database: %s (id %" PRId64 ")", what, id);
  return AN_EDB;
}

/* The cached statement `id`, reset and with its bindings cleared; NULL with
 * the error kept if it cannot be prepared. */
static sqlite3_stmt *an_store_stmt(an_store_t *s, enum an_stmt id) {
  sqlite3_stmt *st = s->stmts[id];
  if (st) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
  }
  if (sqlite3_prepare_v3(s->db, an_stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
      SQLITE_OK) {
    an_store_db_error(s);
    sqlite3_finalize(st);
    return NULL;
  }
  s->stmts[id] = st;
  return st;
}

/* Runs a statement that returns no row, then resets it. */
static int an_store_exec(an_store_t *s, sqlite3_stmt *st) {
  int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : an_store_db_error(s);
  sqlite3_reset(st);
  return rc;
}

/* Steps to a statement's first row: 1 if there is one (the caller reads
 * it, then resets), 0 if none, AN_EDB on error (both already reset). */
static int an_store_row(an_store_t *s, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW)
    return 1;
  rc = rc == SQLITE_DONE ? 0 : an_store_db_error(s);
  sqlite3_reset(st);
  return rc;
}

/* A single-integer query: *out = its value; 0, or AN_ENOTFOUND with no
 * row, or AN_EDB. */
static int an_store_int64(an_store_t *s, sqlite3_stmt *st, int64_t *out) {
  int rc = an_store_row(s, st);
  if (rc == 1) {
    *out = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    rc = 0;
  } else if (rc == 0) {
    rc = AN_ENOTFOUND;
  }
  return rc;
}

static int an_store_simple(an_store_t *s, enum an_stmt id) {
  sqlite3_stmt *st = an_store_stmt(s, id);
  return st ? an_store_exec(s, st) : AN_EDB;
}

/* A call's own transaction. Alone, BEGIN IMMEDIATE ... COMMIT. While
 * grouping, a savepoint inside the group's transaction (begun here on the
 * first change after a commit): the call's work is all or nothing as
 * before, and becomes durable at the next an_store_group_commit. `read`
 * asks for a plain deferred BEGIN when not grouping (a snapshot only). */
static int an_store_begin_kind(an_store_t *s, bool read) {
  int rc;
  s->in_savepoint = 0;
  if (!s->grouping)
    return an_store_simple(s, read ? ST_BEGIN_READ : ST_BEGIN);
  if (s->group_open && sqlite3_get_autocommit(s->db)) {
    /* An earlier call's error made SQLite undo the whole group: the commit
     * must report it, so that nothing of it is acknowledged. */
    s->group_lost = 1;
    s->group_open = 0;
  }
  if (read && !s->group_open)
    return an_store_simple(s, ST_BEGIN_READ);
  if (!s->group_open) {
    if ((rc = an_store_simple(s, ST_BEGIN)) != 0)
      return rc;
    s->group_open = 1;
  }
  if ((rc = an_store_simple(s, ST_SAVEPOINT)) != 0)
    return rc;
  s->in_savepoint = 1;
  return 0;
}

static int an_store_begin(an_store_t *s) { return an_store_begin_kind(s, false); }

static int an_store_commit(an_store_t *s) {
  if (!s->in_savepoint)
    return an_store_simple(s, ST_COMMIT);
  int rc = an_store_simple(s, ST_RELEASE);
  if (rc == 0)
    s->in_savepoint = 0;
  return rc; /* on failure the caller rolls back, which sees the savepoint */
}

/* Undoes the call's open transaction or savepoint, if any, keeping the
 * first error's message. In a group, if that cannot be done cleanly (SQLite
 * already undid the whole transaction, or undoing the savepoint failed and
 * part of the call may remain), the group is marked lost: its commit will
 * fail and nothing of it will be acknowledged. */
static void an_store_rollback(an_store_t *s) {
  char kept[sizeof s->errmsg];
  int in_savepoint = s->in_savepoint;
  s->in_savepoint = 0;
  memcpy(kept, s->errmsg, sizeof kept);
  if (sqlite3_get_autocommit(s->db)) {
    if (in_savepoint || s->group_open) {
      s->group_lost = s->group_open || in_savepoint;
      s->group_open = 0;
    }
  } else if (in_savepoint) {
    if (an_store_simple(s, ST_ROLLBACK_TO) != 0 || an_store_simple(s, ST_RELEASE) != 0)
      s->group_lost = 1;
  } else if (!s->group_open) {
    (void)an_store_simple(s, ST_ROLLBACK);
  }
  memcpy(s->errmsg, kept, sizeof kept);
}

/* Binds `len` bytes of text (SQLite copies them). */
static int an_bind_text(sqlite3_stmt *st, int col, const char *text, size_t len) {
  return sqlite3_bind_text(st, col, text, (int)len, SQLITE_TRANSIENT);
}

/* Copies a text column into dst; false if it does not fit (a corrupt row). */
static bool an_copy_text(sqlite3_stmt *st, int col, char *dst, size_t size) {
  const unsigned char *text = sqlite3_column_text(st, col);
  size_t len = (size_t)sqlite3_column_bytes(st, col);
  if (len >= size)
    return false;
  if (len > 0)
    memcpy(dst, text, len);
  dst[len] = '\0';
  return true;
}

/* ---- crypto ---- */


/* SHA-256 of (salt || text); salt may be NULL. */
static int an_sha256(const unsigned char *salt, size_t salt_len, const char *text,
                     unsigned char out[AN_HASH_LEN]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  unsigned int len = 0;
  int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) &&
           (!salt || EVP_DigestUpdate(ctx, salt, salt_len)) &&
           EVP_DigestUpdate(ctx, text, strlen(text)) && EVP_DigestFinal_ex(ctx, out, &len) &&
           len == AN_HASH_LEN;
  EVP_MD_CTX_free(ctx);
  return ok ? 0 : UV_ENOMEM;
}

/* A fresh random credential: AN_RANDOM_LEN bytes from OpenSSL's CSPRNG,
 * as lowercase hex. */
static int an_random_hex(an_store_t *s, char out[AN_DIGEST_HEX]) {
  unsigned char bytes[AN_RANDOM_LEN];
  int rc = 0;
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    snprintf(s->errmsg, sizeof s->errmsg, "the random generator failed");
    rc = UV_EIO;
    goto fail;
  }
  an_digest_hex(bytes, sizeof bytes, out);
fail:
  OPENSSL_cleanse(bytes, sizeof bytes);
  return rc;
}

/* ---- open / close ---- */

/* Brings the schema to AN_STORE_SCHEMA, or refuses a file it cannot use. */
static int an_store_migrate(an_store_t *s, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL;
  int64_t version = 0, tables = 0;
  int rc;

  /* The write lock first, so two processes opening a new file cannot both
   * create the schema. */
  rc = AN_EDB;
  if (an_store_begin(s) != 0)
    goto db_fail;
  if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW)
    goto db_fail;
  version = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (sqlite3_prepare_v2(s->db, "SELECT COUNT(*) FROM sqlite_schema", -1, &st, NULL) !=
          SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW)
    goto db_fail;
  tables = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  st = NULL;

  if (version > AN_STORE_SCHEMA) {
    snprintf(err, errlen,
             "database schema version %" PRId64 " is newer than this broker supports (%d); "
             "run a newer archnet-broker",
             version, AN_STORE_SCHEMA);
    goto fail;
  }
  if (version < 0 || (version == 0 && tables > 0)) {
    snprintf(err, errlen, "not an ArchNet broker database (user_version %" PRId64 ")", version);
    goto fail;
  }
  for (; version < AN_STORE_SCHEMA; version++)
    if (sqlite3_exec(s->db, an_store_migrations[version], NULL, NULL, NULL) != SQLITE_OK)
      goto db_fail;
  rc = an_store_commit(s);
  if (rc != 0)
    snprintf(err, errlen, "%s", s->errmsg);
  goto fail;

db_fail:
  an_store_db_error(s);
  snprintf(err, errlen, "%s", s->errmsg);
fail:
  sqlite3_finalize(st);
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_open(const char *path, an_store_t **out, char *err, size_t errlen) {
  an_store_t *s = NULL;
  sqlite3_stmt *st = NULL;
  const char *mode;
  int rc = AN_EDB;

  *out = NULL;
  if (!(s = calloc(1, sizeof *s))) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto fail;
  }
  if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
      SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
    goto fail;
  }
  sqlite3_extended_result_codes(s->db, 1);
  /* Defensive mode: no SQL from this connection can corrupt the file
   * (writable_schema, direct page writes). */
  sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  sqlite3_busy_timeout(s->db, AN_STORE_BUSY_MS);
  /* synchronous=FULL: in WAL mode each commit is fsynced, so a committed
   * acknowledgement survives power loss, not only a crash of the process. */
  if (sqlite3_exec(s->db,
                   "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; "
                   "PRAGMA trusted_schema = OFF;",
                   NULL, NULL, NULL) != SQLITE_OK)
    goto db_fail;
  if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK ||
      sqlite3_step(st) != SQLITE_ROW)
    goto db_fail;
  mode = (const char *)sqlite3_column_text(st, 0);
  if (!mode || sqlite3_stricmp(mode, "wal") != 0) {
    snprintf(err, errlen, "%s: cannot switch to WAL mode (journal_mode is %s)", path,
             mode ? mode : "unknown");
    goto fail;
  }
  sqlite3_finalize(st);
  st = NULL;
  if ((rc = an_store_migrate(s, err, errlen)) != 0)
    goto fail;
  *out = s;
  s = NULL;
  goto fail;

db_fail:
  snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
  rc = AN_EDB;
fail:
  sqlite3_finalize(st);
  an_store_close(s);
  return rc;
}

void an_store_close(an_store_t *s) {
  if (!s)
    return;
  /* A group not committed is rolled back by SQLite on close: nothing of it
   * was acknowledged. */
  for (int i = 0; i < ST_COUNT; i++)
    sqlite3_finalize(s->stmts[i]);
  sqlite3_close(s->db);
  free(s);
}

const char *an_store_errmsg(an_store_t *s) { return s ? s->errmsg : "no store"; }

/* ---- group commit ---- */

void an_store_group_begin(an_store_t *s) { s->grouping = 1; }

int an_store_group_pending(const an_store_t *s) { return s->group_open || s->group_lost; }

int an_store_group_commit(an_store_t *s) {
  int rc;
  if (!s->group_open && !s->group_lost)
    return 0;
  if (s->group_open && sqlite3_get_autocommit(s->db))
    s->group_lost = 1;
  if (s->group_lost)
    rc = AN_EDB;
  else
    rc = an_store_simple(s, ST_COMMIT);
  if (s->group_lost && !strstr(s->errmsg, "rolled back"))
    snprintf(s->errmsg, sizeof s->errmsg, "a change failed and SQLite rolled back the group");
  s->group_open = 0;
  s->group_lost = 0;
  s->in_savepoint = 0;
  if (rc != 0) {
    /* SQLite may have rolled back already (an I/O error); if not, do it,
     * so the next change starts a clean transaction. */
    char kept[sizeof s->errmsg];
    memcpy(kept, s->errmsg, sizeof kept);
    if (!sqlite3_get_autocommit(s->db))
      (void)an_store_simple(s, ST_ROLLBACK);
    memcpy(s->errmsg, kept, sizeof kept);
  }
  return rc;
}

int an_store_group_end(an_store_t *s) {
  int rc = an_store_group_commit(s);
  s->grouping = 0;
  return rc;
}

/* ---- nodes and credentials ---- */

/* A node's role and whether it is revoked; AN_ENOTFOUND if none. */
static int an_store_node_role(an_store_t *s, int64_t node, an_role_t *role, int *revoked) {
  sqlite3_stmt *st = an_store_stmt(s, ST_NODE_ROLE);
  int rc;
  if (!st || sqlite3_bind_int64(st, 1, node))
    return an_store_db_error(s);
  rc = an_store_row(s, st);
  if (rc == 1) {
    *role = (an_role_t)sqlite3_column_int(st, 0);
    *revoked = sqlite3_column_int(st, 1);
    sqlite3_reset(st);
    rc = 0;
  } else if (rc == 0) {
    rc = AN_ENOTFOUND;
  }
  return rc;
}

/* An active node of `want`: AN_ENOTFOUND, AN_EFORBIDDEN (another role) or
 * AN_EAUTH (revoked) otherwise. The session checks roles too; this keeps a
 * mistake there from, say, leasing a task to a publisher. */
static int an_store_node_is(an_store_t *s, int64_t node, an_role_t want) {
  an_role_t role;
  int revoked, rc = an_store_node_role(s, node, &role, &revoked);
  if (rc == 0 && role != want)
    rc = AN_EFORBIDDEN;
  else if (rc == 0 && revoked)
    rc = AN_EAUTH;
  return rc;
}

int an_store_token_create(an_store_t *s, an_role_t role, int64_t now, int64_t ttl_seconds,
                          char token_out[AN_DIGEST_HEX]) {
  char token[AN_DIGEST_HEX];
  unsigned char hash[AN_HASH_LEN];
  sqlite3_stmt *st;
  int rc;

  if (role < AN_ROLE_PUBLISHER || role > AN_ROLE_ADMIN || ttl_seconds <= 0 ||
      now > INT64_MAX - ttl_seconds) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_random_hex(s, token)) != 0 || (rc = an_sha256(NULL, 0, token, hash)) != 0 ||
      (rc = an_store_begin(s)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TOKEN_INSERT)) ||
      sqlite3_bind_blob(st, 1, hash, sizeof hash, SQLITE_TRANSIENT) ||
      sqlite3_bind_int(st, 2, (int)role) || sqlite3_bind_int64(st, 3, now) ||
      sqlite3_bind_int64(st, 4, now + ttl_seconds)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0 || (rc = an_store_commit(s)) != 0)
    goto fail;
  memcpy(token_out, token, AN_DIGEST_HEX);
fail:
  if (rc != 0)
    an_store_rollback(s);
  OPENSSL_cleanse(token, sizeof token);
  return rc;
}

/* A printable name of 1..63 bytes: it shows up in logs and the dashboard. */
static bool an_node_name_ok(const char *name) {
  size_t len = name ? strlen(name) : 0;
  if (len == 0 || len >= sizeof ((an_node_info_t *)0)->name)
    return false;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
      return false;
  return true;
}

int an_store_enroll(an_store_t *s, const char *token, const char *name, int64_t now,
                    int64_t *node_id, an_role_t *role, char secret_out[AN_DIGEST_HEX]) {
  unsigned char token_hash[AN_HASH_LEN], salt[AN_SALT_LEN], secret_hash[AN_HASH_LEN];
  char secret[AN_DIGEST_HEX];
  sqlite3_stmt *st;
  an_role_t token_role;
  int64_t expires, id;
  int used, rc;

  if (!token || !an_node_name_ok(name)) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_sha256(NULL, 0, token, token_hash)) != 0 || (rc = an_store_begin(s)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TOKEN_GET)) ||
      sqlite3_bind_blob(st, 1, token_hash, sizeof token_hash, SQLITE_TRANSIENT)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_row(s, st)) < 0)
    goto fail;
  if (rc == 0) {
    rc = AN_EAUTH; /* unknown */
    goto fail;
  }
  token_role = (an_role_t)sqlite3_column_int(st, 0);
  expires = sqlite3_column_int64(st, 1);
  used = sqlite3_column_int(st, 2);
  sqlite3_reset(st);
  if (used || now >= expires) {
    rc = AN_EAUTH;
    goto fail;
  }

  /* The secret is 256 random bits, so a salted SHA-256 is as strong as any
   * slow password hash here, and cheap enough to run on every hello. */
  if ((rc = an_random_hex(s, secret)) != 0)
    goto fail;
  if (RAND_bytes(salt, sizeof salt) != 1) {
    snprintf(s->errmsg, sizeof s->errmsg, "the random generator failed");
    rc = UV_EIO;
    goto fail;
  }
  if ((rc = an_sha256(salt, sizeof salt, secret, secret_hash)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_NODE_INSERT)) || an_bind_text(st, 1, name, strlen(name)) ||
      sqlite3_bind_int(st, 2, (int)token_role) ||
      sqlite3_bind_blob(st, 3, salt, sizeof salt, SQLITE_TRANSIENT) ||
      sqlite3_bind_blob(st, 4, secret_hash, sizeof secret_hash, SQLITE_TRANSIENT) ||
      sqlite3_bind_int64(st, 5, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  id = sqlite3_last_insert_rowid(s->db);
  if (!(st = an_store_stmt(s, ST_TOKEN_USE)) ||
      sqlite3_bind_blob(st, 1, token_hash, sizeof token_hash, SQLITE_TRANSIENT) ||
      sqlite3_bind_int64(st, 2, now) || sqlite3_bind_int64(st, 3, id)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  if (sqlite3_changes(s->db) != 1) {
    rc = an_store_corrupt(s, "token used twice", id);
    goto fail;
  }
  if ((rc = an_store_commit(s)) != 0)
    goto fail;
  *node_id = id;
  *role = token_role;
  memcpy(secret_out, secret, AN_DIGEST_HEX);
fail:
  if (rc != 0)
    an_store_rollback(s);
  OPENSSL_cleanse(secret, sizeof secret);
  return rc;
}

int an_store_authenticate(an_store_t *s, int64_t node_id, const char *secret, an_role_t *role) {
  unsigned char salt[AN_SALT_LEN], stored[AN_HASH_LEN], computed[AN_HASH_LEN];
  sqlite3_stmt *st;
  an_role_t node_role;
  int revoked, rc;

  if (!secret) {
    rc = AN_EAUTH;
    goto fail;
  }
  if (!(st = an_store_stmt(s, ST_NODE_AUTH)) || sqlite3_bind_int64(st, 1, node_id)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_row(s, st)) <= 0) {
    rc = rc == 0 ? AN_EAUTH : rc;
    goto fail;
  }
  node_role = (an_role_t)sqlite3_column_int(st, 0);
  revoked = sqlite3_column_int(st, 1);
  if (sqlite3_column_bytes(st, 2) != AN_SALT_LEN || sqlite3_column_bytes(st, 3) != AN_HASH_LEN) {
    sqlite3_reset(st);
    rc = an_store_corrupt(s, "node credential", node_id);
    goto fail;
  }
  memcpy(salt, sqlite3_column_blob(st, 2), sizeof salt);
  memcpy(stored, sqlite3_column_blob(st, 3), sizeof stored);
  sqlite3_reset(st);
  if ((rc = an_sha256(salt, sizeof salt, secret, computed)) != 0)
    goto fail;
  /* Constant time, so the comparison leaks nothing about the stored hash. */
  if (CRYPTO_memcmp(stored, computed, sizeof stored) != 0 || revoked) {
    rc = AN_EAUTH;
    goto fail;
  }
  *role = node_role;
fail:
  OPENSSL_cleanse(computed, sizeof computed);
  return rc;
}

int an_store_revoke(an_store_t *s, int64_t node_id) {
  sqlite3_stmt *st;
  int rc;
  if ((rc = an_store_begin(s)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_NODE_REVOKE)) || sqlite3_bind_int64(st, 1, node_id)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  if (sqlite3_changes(s->db) == 0) {
    rc = AN_ENOTFOUND;
    goto fail;
  }
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_nodes(an_store_t *s, int (*cb)(const an_node_info_t *n, void *arg), void *arg) {
  an_node_info_t n;
  sqlite3_stmt *st;
  int64_t after = 0;
  int rc;

  /* One row per query, the statement reset before cb runs: cb may call
   * back into the store, and no read transaction spans the whole walk. */
  for (;;) {
    if (!(st = an_store_stmt(s, ST_NODE_NEXT)) || sqlite3_bind_int64(st, 1, after)) {
      rc = an_store_db_error(s);
      goto fail;
    }
    if ((rc = an_store_row(s, st)) <= 0)
      goto fail;
    memset(&n, 0, sizeof n);
    n.id = sqlite3_column_int64(st, 0);
    n.role = (an_role_t)sqlite3_column_int(st, 2);
    n.revoked = sqlite3_column_int(st, 3);
    n.created = sqlite3_column_int64(st, 4);
    n.balance = sqlite3_column_int64(st, 5);
    if (!an_copy_text(st, 1, n.name, sizeof n.name)) {
      sqlite3_reset(st);
      rc = an_store_corrupt(s, "node name", n.id);
      goto fail;
    }
    sqlite3_reset(st);
    after = n.id;
    if (cb(&n, arg) != 0)
      break;
  }
  rc = 0;
fail:
  return rc;
}

/* ---- ledger ---- */

static void an_account_node(char buf[AN_ACCOUNT_LEN], int64_t node) {
  snprintf(buf, AN_ACCOUNT_LEN, "node:%" PRId64, node);
}

static void an_account_escrow(char buf[AN_ACCOUNT_LEN], int64_t task) {
  snprintf(buf, AN_ACCOUNT_LEN, "escrow:%" PRId64, task);
}

static int an_store_account_balance(an_store_t *s, const char *account, int64_t *credits) {
  sqlite3_stmt *st = an_store_stmt(s, ST_BALANCE);
  if (!st || an_bind_text(st, 1, account, strlen(account)))
    return an_store_db_error(s);
  return an_store_int64(s, st, credits);
}

/* Moves `amount` (>= 0) from one account to another as one transfer: two
 * rows that cancel. Runs inside the caller's transaction. */
static int an_store_transfer(an_store_t *s, const char *kind, int64_t task_id, const char *from,
                             const char *to, int64_t amount, int64_t now, int64_t *transfer_id) {
  sqlite3_stmt *st;
  int64_t id;
  int rc;

  if ((st = an_store_stmt(s, ST_TRANSFER_ID)) == NULL) {
    rc = AN_EDB;
    goto fail;
  }
  if ((rc = an_store_int64(s, st, &id)) != 0)
    goto fail;
  for (int leg = 0; leg < 2; leg++) {
    if (!(st = an_store_stmt(s, ST_LEDGER_INSERT)) || sqlite3_bind_int64(st, 1, id) ||
        an_bind_text(st, 2, leg == 0 ? from : to, strlen(leg == 0 ? from : to)) ||
        sqlite3_bind_int64(st, 3, leg == 0 ? -amount : amount) ||
        (task_id ? sqlite3_bind_int64(st, 4, task_id) : sqlite3_bind_null(st, 4)) ||
        an_bind_text(st, 5, kind, strlen(kind)) || sqlite3_bind_int64(st, 6, now)) {
      rc = an_store_db_error(s);
      goto fail;
    }
    if ((rc = an_store_exec(s, st)) != 0)
      goto fail;
  }
  if (transfer_id)
    *transfer_id = id;
fail:
  return rc;
}

int an_store_topup(an_store_t *s, int64_t node_id, int64_t credits, int64_t now) {
  char account[AN_ACCOUNT_LEN];
  an_role_t role;
  int64_t minted;
  int revoked, rc;

  if (credits <= 0) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_node_role(s, node_id, &role, &revoked)) != 0)
    goto fail;
  /* Every other balance, and every partial sum SQLite adds up, is bounded
   * by what was minted in all: keeping that within INT64_MAX keeps every
   * SUM() from overflowing. */
  if ((rc = an_store_account_balance(s, "mint", &minted)) != 0)
    goto fail;
  if (minted < credits - INT64_MAX) {
    rc = UV_EINVAL;
    goto fail;
  }
  an_account_node(account, node_id);
  if ((rc = an_store_transfer(s, "topup", 0, "mint", account, credits, now, NULL)) != 0)
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_balance(an_store_t *s, int64_t node_id, int64_t *credits) {
  char account[AN_ACCOUNT_LEN];
  an_role_t role;
  int revoked, rc;
  if ((rc = an_store_node_role(s, node_id, &role, &revoked)) != 0)
    goto fail;
  an_account_node(account, node_id);
  rc = an_store_account_balance(s, account, credits);
fail:
  return rc;
}

int an_store_receipt(an_store_t *s, int64_t task_id, an_receipt_t *out) {
  an_receipt_t r = {.task_id = task_id};
  sqlite3_stmt *st;
  int rc;

  /* One snapshot for both queries. */
  if ((rc = an_store_begin_kind(s, true)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_RECEIPT)) || sqlite3_bind_int64(st, 1, task_id)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_row(s, st)) <= 0) {
    rc = rc == 0 ? AN_ENOTFOUND : rc;
    goto fail;
  }
  r.transfer_id = sqlite3_column_int64(st, 0);
  r.amount = sqlite3_column_int64(st, 1);
  r.time = sqlite3_column_int64(st, 2);
  r.worker_id = sqlite3_column_int64(st, 3);
  sqlite3_reset(st);
  if (!(st = an_store_stmt(s, ST_RECEIPT_FEE)) || sqlite3_bind_int64(st, 1, task_id)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_int64(s, st, &r.fee)) != 0 || (rc = an_store_commit(s)) != 0)
    goto fail;
  *out = r;
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

/* Writes one violation into err and returns AN_EDB. */
static int an_ledger_violation(char *err, size_t errlen, const char *what, int64_t id,
                               const char *detail) {
  if (err && errlen)
    snprintf(err, errlen, "%s %" PRId64 ": %s", what, id, detail);
  return AN_EDB;
}

int an_store_ledger_check(an_store_t *s, char *err, size_t errlen) {
  char detail[160];
  sqlite3_stmt *st = NULL;
  int64_t total;
  int rc, found;

  if (err && errlen)
    err[0] = '\0';
  /* One snapshot for all the checks, so they judge one state. */
  if ((rc = an_store_begin_kind(s, true)) != 0)
    goto db_fail;

  if (!(st = an_store_stmt(s, ST_CHECK_SUM)) || (rc = an_store_int64(s, st, &total)) != 0)
    goto db_fail;
  if (total != 0) {
    snprintf(detail, sizeof detail, "all entries sum to %" PRId64 ", not 0", total);
    rc = an_ledger_violation(err, errlen, "ledger", 0, detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_TRANSFERS)) || (found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    snprintf(detail, sizeof detail,
             "%" PRId64 " entries summing to %" PRId64 " (a transfer is two entries of one kind,"
             " time and task that cancel)",
             (int64_t)sqlite3_column_int64(st, 1), (int64_t)sqlite3_column_int64(st, 2));
    rc = an_ledger_violation(err, errlen, "transfer", sqlite3_column_int64(st, 0), detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_LEGS)) || (found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    snprintf(detail, sizeof detail, "%.16s entry on account %.40s has the wrong direction",
             (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2));
    rc = an_ledger_violation(err, errlen, "transfer", sqlite3_column_int64(st, 0), detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_ACCOUNTS)) || (found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    snprintf(detail, sizeof detail, "entries on unknown account %.40s",
             (const char *)sqlite3_column_text(st, 0));
    rc = an_ledger_violation(err, errlen, "ledger", 0, detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_NEGATIVE)) || (found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    snprintf(detail, sizeof detail, "account %.40s is below zero (%" PRId64 ")",
             (const char *)sqlite3_column_text(st, 0), (int64_t)sqlite3_column_int64(st, 1));
    rc = an_ledger_violation(err, errlen, "ledger", 0, detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_PAID_ONCE)) || (found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    snprintf(detail, sizeof detail, "%" PRId64 " %.16s transfers (at most one allowed)",
             (int64_t)sqlite3_column_int64(st, 2), (const char *)sqlite3_column_text(st, 1));
    rc = an_ledger_violation(err, errlen, "task", sqlite3_column_int64(st, 0), detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_PAID)) ||
      sqlite3_bind_int(st, 1, AN_TASK_ACCEPTED) || sqlite3_bind_int(st, 2, AN_TASK_DELIVERED))
    goto db_fail;
  if ((found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    int state = sqlite3_column_int(st, 1);
    snprintf(detail, sizeof detail, "%s, but %s", an_task_state_name((an_task_state_t)state),
             state == AN_TASK_ACCEPTED || state == AN_TASK_DELIVERED
                 ? "no payout to its worker"
                 : "its worker was paid");
    rc = an_ledger_violation(err, errlen, "task", sqlite3_column_int64(st, 0), detail);
    goto fail;
  }

  if (!(st = an_store_stmt(s, ST_CHECK_ESCROW)) ||
      sqlite3_bind_int(st, 1, AN_TASK_UPLOADING) || sqlite3_bind_int(st, 2, AN_TASK_QUEUED) ||
      sqlite3_bind_int(st, 3, AN_TASK_LEASED) || sqlite3_bind_int(st, 4, AN_TASK_VALIDATING))
    goto db_fail;
  if ((found = an_store_row(s, st)) < 0)
    goto db_fail;
  if (found) {
    snprintf(detail, sizeof detail, "%s with %" PRId64 " in escrow (bounty %" PRId64 ")",
             an_task_state_name((an_task_state_t)sqlite3_column_int(st, 1)),
             (int64_t)sqlite3_column_int64(st, 3), (int64_t)sqlite3_column_int64(st, 2));
    rc = an_ledger_violation(err, errlen, "task", sqlite3_column_int64(st, 0), detail);
    goto fail;
  }
  rc = an_store_commit(s);
  if (rc != 0)
    goto db_fail;
  goto fail;

db_fail:
  rc = AN_EDB;
  if (err && errlen)
    snprintf(err, errlen, "%s", s->errmsg);
fail:
  if (st)
    sqlite3_reset(st);
  an_store_rollback(s);
  return rc;
}

/* ---- tasks ---- */

static bool an_digest_ok(const char *d) {
  size_t i;
  for (i = 0; i < AN_DIGEST_HEX - 1; i++)
    if (!((d[i] >= '0' && d[i] <= '9') || (d[i] >= 'a' && d[i] <= 'f')))
      return false;
  return d[i] == '\0';
}

/* Largest of C, H and W: generous for any image, small enough that their
 * product cannot overflow. */
#define AN_DIM_MAX (INT64_C(1) << 20)

static bool an_spec_ok(const an_task_spec_t *sp) {
  return sp && sp->bounty > 0 && sp->min_accuracy >= 0.0 && sp->min_accuracy <= 1.0 &&
         sp->max_attempts >= 1 && sp->lease_seconds >= 1 && an_digest_ok(sp->train_x) &&
         an_digest_ok(sp->train_y) && an_digest_ok(sp->val_x) && an_digest_ok(sp->val_y) &&
         sp->input_c >= 1 && sp->input_c <= AN_DIM_MAX && sp->input_h >= 1 &&
         sp->input_h <= AN_DIM_MAX && sp->input_w >= 1 && sp->input_w <= AN_DIM_MAX &&
         sp->classes >= 2 && sp->min_memory_bytes >= 0;
}

/* Fills a task from a row of AN_TASK_COLUMNS; false if a value is out of
 * the schema's range. */
static bool an_task_from_row(sqlite3_stmt *st, an_task_t *t) {
  an_task_spec_t *sp = &t->spec;
  int state;
  memset(t, 0, sizeof *t);
  t->id = sqlite3_column_int64(st, 0);
  sp->publisher = sqlite3_column_int64(st, 1);
  sp->bounty = sqlite3_column_int64(st, 2);
  sp->min_accuracy = sqlite3_column_double(st, 3);
  sp->max_attempts = sqlite3_column_int(st, 4);
  sp->lease_seconds = sqlite3_column_int(st, 5);
  sp->input_c = sqlite3_column_int64(st, 10);
  sp->input_h = sqlite3_column_int64(st, 11);
  sp->input_w = sqlite3_column_int64(st, 12);
  sp->classes = sqlite3_column_int64(st, 13);
  sp->min_memory_bytes = sqlite3_column_int64(st, 14);
  sp->needs_gpu = sqlite3_column_int(st, 15);
  sp->exclude_failed = sqlite3_column_int(st, 16);
  state = sqlite3_column_int(st, 17);
  t->state = (an_task_state_t)state;
  t->attempts = sqlite3_column_int(st, 18);
  t->worker = sqlite3_column_int64(st, 19);
  t->lease_deadline = sqlite3_column_int64(st, 20);
  t->progress = sqlite3_column_double(st, 21);
  t->accuracy = sqlite3_column_double(st, 23);
  t->created = sqlite3_column_int64(st, 25);
  t->updated = sqlite3_column_int64(st, 26);
  return state >= 0 && state < AN_TASK_STATE_COUNT &&
         an_copy_text(st, 6, sp->train_x, sizeof sp->train_x) &&
         an_copy_text(st, 7, sp->train_y, sizeof sp->train_y) &&
         an_copy_text(st, 8, sp->val_x, sizeof sp->val_x) &&
         an_copy_text(st, 9, sp->val_y, sizeof sp->val_y) &&
         an_copy_text(st, 22, t->model, sizeof t->model) &&
         an_copy_text(st, 24, t->reason, sizeof t->reason);
}

/* Runs a task query (its parameters bound): 0 and *t filled, AN_ENOTFOUND
 * or AN_EDB. */
static int an_store_task_row(an_store_t *s, sqlite3_stmt *st, an_task_t *t) {
  int rc = an_store_row(s, st);
  if (rc == 1) {
    bool ok = an_task_from_row(st, t);
    sqlite3_reset(st);
    rc = ok ? 0 : an_store_corrupt(s, "task row", t->id);
  } else if (rc == 0) {
    rc = AN_ENOTFOUND;
  }
  return rc;
}

static int an_store_task_load(an_store_t *s, int64_t task_id, an_task_t *t) {
  sqlite3_stmt *st = an_store_stmt(s, ST_TASK_GET);
  if (!st || sqlite3_bind_int64(st, 1, task_id))
    return an_store_db_error(s);
  return an_store_task_row(s, st, t);
}

int an_store_task_get(an_store_t *s, int64_t task_id, an_task_t *out) {
  return an_store_task_load(s, task_id, out);
}

static int an_store_set_state(an_store_t *s, int64_t task_id, an_task_state_t state,
                              int64_t now) {
  sqlite3_stmt *st = an_store_stmt(s, ST_TASK_SET_STATE);
  if (!st || sqlite3_bind_int64(st, 1, task_id) || sqlite3_bind_int(st, 2, (int)state) ||
      sqlite3_bind_int64(st, 3, now))
    return an_store_db_error(s);
  return an_store_exec(s, st);
}

/* Moves a task's escrow between its publisher and its escrow account. */
static int an_store_escrow(an_store_t *s, const an_task_t *t, const char *kind, int64_t now) {
  char node[AN_ACCOUNT_LEN], escrow[AN_ACCOUNT_LEN];
  an_account_node(node, t->spec.publisher);
  an_account_escrow(escrow, t->id);
  return strcmp(kind, "refund") == 0
             ? an_store_transfer(s, kind, t->id, escrow, node, t->spec.bounty, now, NULL)
             : an_store_transfer(s, kind, t->id, node, escrow, t->spec.bounty, now, NULL);
}

/* AN_EFUNDS unless the publisher can put up the task's bounty. */
static int an_store_can_pay(an_store_t *s, int64_t publisher, int64_t bounty) {
  char account[AN_ACCOUNT_LEN];
  int64_t balance;
  int rc;
  an_account_node(account, publisher);
  if ((rc = an_store_account_balance(s, account, &balance)) == 0 && balance < bounty)
    rc = AN_EFUNDS;
  return rc;
}

int an_store_task_create(an_store_t *s, const an_task_spec_t *spec, int64_t now,
                         int64_t *task_id) {
  sqlite3_stmt *st;
  an_task_t t;
  int rc;

  if (!an_spec_ok(spec)) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_store_begin(s)) != 0 ||
      (rc = an_store_node_is(s, spec->publisher, AN_ROLE_PUBLISHER)) != 0 ||
      (rc = an_store_can_pay(s, spec->publisher, spec->bounty)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TASK_INSERT)) || sqlite3_bind_int64(st, 1, spec->publisher) ||
      sqlite3_bind_int64(st, 2, spec->bounty) || sqlite3_bind_double(st, 3, spec->min_accuracy) ||
      sqlite3_bind_int(st, 4, spec->max_attempts) ||
      sqlite3_bind_int(st, 5, spec->lease_seconds) ||
      an_bind_text(st, 6, spec->train_x, AN_DIGEST_HEX - 1) ||
      an_bind_text(st, 7, spec->train_y, AN_DIGEST_HEX - 1) ||
      an_bind_text(st, 8, spec->val_x, AN_DIGEST_HEX - 1) ||
      an_bind_text(st, 9, spec->val_y, AN_DIGEST_HEX - 1) ||
      sqlite3_bind_int64(st, 10, spec->input_c) || sqlite3_bind_int64(st, 11, spec->input_h) ||
      sqlite3_bind_int64(st, 12, spec->input_w) ||
      sqlite3_bind_int64(st, 13, spec->input_c * spec->input_h * spec->input_w) ||
      sqlite3_bind_int64(st, 14, spec->classes) ||
      sqlite3_bind_int64(st, 15, spec->min_memory_bytes) ||
      sqlite3_bind_int(st, 16, spec->needs_gpu != 0) ||
      sqlite3_bind_int(st, 17, spec->exclude_failed != 0) ||
      sqlite3_bind_int(st, 18, AN_TASK_UPLOADING) || sqlite3_bind_int64(st, 19, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  memset(&t, 0, sizeof t);
  t.id = sqlite3_last_insert_rowid(s->db);
  t.spec = *spec;
  if ((rc = an_store_escrow(s, &t, "escrow", now)) != 0 || (rc = an_store_commit(s)) != 0)
    goto fail;
  *task_id = t.id;
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_task_ready(an_store_t *s, int64_t task_id, int64_t now) {
  an_task_t t;
  int rc;
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  if (t.state != AN_TASK_UPLOADING) {
    rc = AN_ESTATE;
    goto fail;
  }
  if ((rc = an_store_set_state(s, task_id, AN_TASK_QUEUED, now)) != 0)
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

/* Walks tasks in id order through a "next after id" statement with ?2
 * bound to `filter` (when the statement has it). The statement is reset
 * before cb runs, so cb may call back into the store. */
static int an_store_task_walk(an_store_t *s, enum an_stmt which, int64_t filter,
                              int (*cb)(const an_task_t *t, void *arg), void *arg) {
  sqlite3_stmt *st;
  an_task_t t;
  int64_t after = 0;
  int rc;
  for (;;) {
    if (!(st = an_store_stmt(s, which)) || sqlite3_bind_int64(st, 1, after) ||
        (sqlite3_bind_parameter_count(st) >= 2 && sqlite3_bind_int64(st, 2, filter))) {
      rc = an_store_db_error(s);
      goto fail;
    }
    if ((rc = an_store_task_row(s, st, &t)) != 0)
      break;
    after = t.id;
    if (cb(&t, arg) != 0)
      break;
  }
  if (rc == AN_ENOTFOUND)
    rc = 0;
fail:
  return rc;
}

int an_store_tasks(an_store_t *s, int64_t publisher, int (*cb)(const an_task_t *t, void *arg),
                   void *arg) {
  return an_store_task_walk(s, publisher ? ST_TASK_NEXT_OF : ST_TASK_NEXT, publisher, cb, arg);
}

int an_store_validating(an_store_t *s, int (*cb)(const an_task_t *t, void *arg), void *arg) {
  return an_store_task_walk(s, ST_TASK_NEXT_IN_STATE, AN_TASK_VALIDATING, cb, arg);
}

int an_store_queued(an_store_t *s, an_queued_t *out) {
  sqlite3_stmt *st = an_store_stmt(s, ST_TASK_QUEUED);
  int rc = st ? an_store_row(s, st) : AN_EDB;
  if (rc != 1)
    return rc == 0 ? an_store_corrupt(s, "COUNT returned no row", 0) : rc;
  out->tasks = sqlite3_column_int64(st, 0);
  out->min_memory = sqlite3_column_int64(st, 1);
  out->all_need_gpu = sqlite3_column_int64(st, 2) != 0;
  out->min_input_elems = sqlite3_column_int64(st, 3);
  sqlite3_reset(st);
  return 0;
}

int an_store_task_counts(an_store_t *s, int64_t counts[AN_TASK_STATE_COUNT]) {
  sqlite3_stmt *st = an_store_stmt(s, ST_TASK_COUNTS);
  int rc = 0, step;
  for (int i = 0; i < AN_TASK_STATE_COUNT; i++)
    counts[i] = 0;
  if (!st) {
    rc = AN_EDB;
    goto fail;
  }
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    int state = sqlite3_column_int(st, 0);
    if (state < 0 || state >= AN_TASK_STATE_COUNT) {
      rc = an_store_corrupt(s, "task state", state);
      goto fail;
    }
    counts[state] = sqlite3_column_int64(st, 1);
  }
  if (step != SQLITE_DONE)
    rc = an_store_db_error(s);
fail:
  if (st)
    sqlite3_reset(st);
  return rc;
}

/* ---- attempts and leases ---- */

/* How much of `text` fits in `max` bytes, cut on a UTF-8 character
 * boundary so a shortened message still reads back as valid text. */
static size_t an_utf8_cut(const char *text, size_t max) {
  size_t len = text ? strlen(text) : 0;
  if (len > max) {
    len = max;
    while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
      len--;
  }
  return len;
}

/* A reason as stored: what fits in an_task_t.reason. */
static size_t an_reason_len(const char *reason) { return an_utf8_cut(reason, AN_REASON_MAX); }

/* Closes the task's live attempt with `outcome`; accuracy < 0 is stored as
 * unknown. */
static int an_store_attempt_end(an_store_t *s, int64_t task_id, const char *outcome,
                                const char *reason, double accuracy, int64_t now) {
  sqlite3_stmt *st = an_store_stmt(s, ST_ATTEMPT_END);
  int rc;
  if (!st || sqlite3_bind_int64(st, 1, task_id) ||
      an_bind_text(st, 2, outcome, strlen(outcome)) ||
      an_bind_text(st, 3, reason ? reason : "", an_reason_len(reason)) ||
      (accuracy >= 0 ? sqlite3_bind_double(st, 4, accuracy) : sqlite3_bind_null(st, 4)) ||
      sqlite3_bind_int64(st, 5, now))
    return an_store_db_error(s);
  if ((rc = an_store_exec(s, st)) == 0 && sqlite3_changes(s->db) != 1)
    rc = an_store_corrupt(s, "no live attempt for a leased task", task_id);
  return rc;
}

/* A lease ended without a payout (expired or model rejected): the task goes
 * back to the queue while attempts remain, else fails and refunds. */
static int an_store_lease_lost(an_store_t *s, const an_task_t *t, const char *outcome,
                               const char *reason, double accuracy, int64_t now) {
  static const char used_up[] = " (all attempts used)";
  char text[AN_REASON_MAX + 1];
  sqlite3_stmt *st;
  bool exhausted = t->attempts >= t->spec.max_attempts;
  int rc;

  if ((rc = an_store_attempt_end(s, t->id, outcome, reason, accuracy, now)) != 0)
    goto fail;
  snprintf(text, sizeof text, "%.*s%s",
           (int)an_utf8_cut(reason, AN_REASON_MAX - (exhausted ? sizeof used_up - 1 : 0)),
           reason ? reason : "", exhausted ? used_up : "");
  if (!(st = an_store_stmt(s, ST_TASK_END_LEASE)) || sqlite3_bind_int64(st, 1, t->id) ||
      sqlite3_bind_int(st, 2, exhausted ? AN_TASK_FAILED : AN_TASK_QUEUED) ||
      an_bind_text(st, 3, text, an_reason_len(text)) || sqlite3_bind_int64(st, 4, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  if (exhausted)
    rc = an_store_escrow(s, t, "refund", now);
fail:
  return rc;
}

int an_store_task_cancel(an_store_t *s, int64_t task_id, int64_t publisher, int64_t now) {
  static const char reason[] = "cancelled by the publisher";
  sqlite3_stmt *st;
  an_task_t t;
  int rc;

  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  if (t.spec.publisher != publisher) {
    rc = AN_EFORBIDDEN;
    goto fail;
  }
  if (t.state != AN_TASK_UPLOADING && t.state != AN_TASK_QUEUED && t.state != AN_TASK_LEASED &&
      t.state != AN_TASK_VALIDATING) {
    rc = AN_ESTATE;
    goto fail;
  }
  /* The attempt's outcome is what the leaseholder's next heartbeat reads. */
  if ((t.state == AN_TASK_LEASED || t.state == AN_TASK_VALIDATING) &&
      (rc = an_store_attempt_end(s, t.id, "cancelled", reason, -1, now)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TASK_END_LEASE)) || sqlite3_bind_int64(st, 1, t.id) ||
      sqlite3_bind_int(st, 2, AN_TASK_CANCELLED) ||
      an_bind_text(st, 3, reason, sizeof reason - 1) || sqlite3_bind_int64(st, 4, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0 || (rc = an_store_escrow(s, &t, "refund", now)) != 0)
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_task_kick(an_store_t *s, int64_t task_id, int64_t now) {
  sqlite3_stmt *st;
  an_task_t t;
  int rc;

  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  if (t.state != AN_TASK_FAILED) {
    rc = AN_ESTATE;
    goto fail;
  }
  if ((rc = an_store_can_pay(s, t.spec.publisher, t.spec.bounty)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TASK_KICK)) || sqlite3_bind_int64(st, 1, t.id) ||
      sqlite3_bind_int(st, 2, AN_TASK_QUEUED) || sqlite3_bind_int64(st, 3, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0 || (rc = an_store_escrow(s, &t, "escrow", now)) != 0)
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_lease_next(an_store_t *s, int64_t worker, const an_worker_caps_t *caps,
                        int64_t now, an_task_t *out) {
  sqlite3_stmt *st;
  int64_t task_id;
  an_task_t t;
  int rc;

  if (!caps || caps->memory_bytes < 0 || caps->max_input_elems < 0) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_node_is(s, worker, AN_ROLE_WORKER)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_LEASE_PICK)) || sqlite3_bind_int(st, 1, AN_TASK_QUEUED) ||
      sqlite3_bind_int64(st, 2, caps->memory_bytes) || sqlite3_bind_int(st, 3, caps->gpu != 0) ||
      sqlite3_bind_int64(st, 4, caps->max_input_elems) || sqlite3_bind_int64(st, 5, worker)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_int64(s, st, &task_id)) != 0 ||
      (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_ATTEMPT_INSERT)) || sqlite3_bind_int64(st, 1, task_id) ||
      sqlite3_bind_int64(st, 2, worker) || sqlite3_bind_int64(st, 3, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TASK_LEASE)) || sqlite3_bind_int64(st, 1, task_id) ||
      sqlite3_bind_int(st, 2, AN_TASK_LEASED) || sqlite3_bind_int64(st, 3, worker) ||
      sqlite3_bind_int64(st, 4, now + t.spec.lease_seconds) || sqlite3_bind_int64(st, 5, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0 ||
      (rc = an_store_commit(s)) != 0)
    goto fail;
  *out = t;
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

/* Whether `worker` holds task t's live lease at `now`: 0 if so; otherwise
 * AN_EFORBIDDEN if it never held a lease on t, AN_ESTATE if its lease
 * expired or ended. *cancelled is set when that lease ended because the
 * publisher cancelled the task. */
static int an_store_lease_check(an_store_t *s, const an_task_t *t, int64_t worker, int64_t now,
                                int *cancelled) {
  sqlite3_stmt *st;
  int rc;
  *cancelled = 0;
  if (t->state == AN_TASK_LEASED && t->worker == worker) {
    rc = now < t->lease_deadline ? 0 : AN_ESTATE;
    goto fail;
  }
  if (!(st = an_store_stmt(s, ST_ATTEMPT_LAST)) || sqlite3_bind_int64(st, 1, t->id) ||
      sqlite3_bind_int64(st, 2, worker)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_row(s, st)) < 0)
    goto fail;
  if (rc == 0) {
    rc = AN_EFORBIDDEN;
    goto fail;
  }
  *cancelled = t->state == AN_TASK_CANCELLED && sqlite3_column_int(st, 1);
  sqlite3_reset(st);
  rc = AN_ESTATE;
fail:
  return rc;
}

int an_store_lease_heartbeat(an_store_t *s, int64_t task_id, int64_t worker, double progress,
                             int64_t now, int *cancelled) {
  sqlite3_stmt *st;
  an_task_t t;
  int was_cancelled = 0, rc;

  *cancelled = 0;
  if (!(progress >= 0.0 && progress <= 1.0)) { /* NaN too */
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  rc = an_store_lease_check(s, &t, worker, now, &was_cancelled);
  if (rc == AN_ESTATE && was_cancelled) {
    *cancelled = 1; /* not an error: the worker stops cleanly */
    rc = an_store_commit(s);
    goto fail;
  }
  if (rc != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TASK_HEARTBEAT)) || sqlite3_bind_int64(st, 1, task_id) ||
      sqlite3_bind_int64(st, 2, now + t.spec.lease_seconds) ||
      sqlite3_bind_double(st, 3, progress) || sqlite3_bind_int64(st, 4, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_lease_expire(an_store_t *s, int64_t now, int *n) {
  sqlite3_stmt *st;
  int64_t task_id;
  an_task_t t;
  int expired = 0, rc;

  *n = 0;
  /* Mostly nothing is due: look first, without taking the write lock (nor
   * opening a group whose commit every reply would wait for). */
  if (!(st = an_store_stmt(s, ST_TASK_EXPIRED)) || sqlite3_bind_int(st, 1, AN_TASK_LEASED) ||
      sqlite3_bind_int64(st, 2, now))
    return an_store_db_error(s);
  if ((rc = an_store_int64(s, st, &task_id)) == AN_ENOTFOUND)
    return 0;
  if (rc != 0)
    return rc;
  if ((rc = an_store_begin(s)) != 0)
    goto fail;
  /* Each pass moves one task out of `leased`, so this ends. */
  for (;;) {
    if (!(st = an_store_stmt(s, ST_TASK_EXPIRED)) || sqlite3_bind_int(st, 1, AN_TASK_LEASED) ||
        sqlite3_bind_int64(st, 2, now)) {
      rc = an_store_db_error(s);
      goto fail;
    }
    if ((rc = an_store_int64(s, st, &task_id)) == AN_ENOTFOUND)
      break;
    if (rc != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0 ||
        (rc = an_store_lease_lost(s, &t, "expired", "lease expired", -1, now)) != 0)
      goto fail;
    expired++;
  }
  if ((rc = an_store_commit(s)) != 0)
    goto fail;
  *n = expired;
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_model_submitted(an_store_t *s, int64_t task_id, int64_t worker,
                             const char model[AN_DIGEST_HEX], int64_t now) {
  sqlite3_stmt *st;
  an_task_t t;
  int cancelled, rc;

  if (!model || !an_digest_ok(model)) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0 ||
      (rc = an_store_lease_check(s, &t, worker, now, &cancelled)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_ATTEMPT_MODEL)) || sqlite3_bind_int64(st, 1, task_id) ||
      an_bind_text(st, 2, model, AN_DIGEST_HEX - 1)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  if (!(st = an_store_stmt(s, ST_TASK_MODEL)) || sqlite3_bind_int64(st, 1, task_id) ||
      sqlite3_bind_int(st, 2, AN_TASK_VALIDATING) ||
      an_bind_text(st, 3, model, AN_DIGEST_HEX - 1) || sqlite3_bind_int64(st, 4, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

/* bounty * permille / 1000 rounded down, without the product overflowing. */
static int64_t an_fee(int64_t bounty, int permille) {
  return bounty / 1000 * permille + bounty % 1000 * permille / 1000;
}

int an_store_validation_done(an_store_t *s, int64_t task_id, int accepted, double accuracy,
                             const char *reason, int fee_permille, int64_t now) {
  char escrow[AN_ACCOUNT_LEN], worker[AN_ACCOUNT_LEN];
  sqlite3_stmt *st;
  an_task_t t;
  int64_t fee;
  int rc;

  /* -1: no accuracy (the model never ran to the end). */
  if (fee_permille < 0 || fee_permille > 1000 ||
      !(accuracy == -1.0 || (accuracy >= 0.0 && accuracy <= 1.0))) {
    rc = UV_EINVAL;
    goto fail;
  }
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  /* A second verdict finds the task past `validating`: this, with the
   * ledger's unique index, is what makes the payout happen once. */
  if (t.state != AN_TASK_VALIDATING) {
    rc = AN_ESTATE;
    goto fail;
  }
  if (!(st = an_store_stmt(s, ST_TASK_VERDICT)) || sqlite3_bind_int64(st, 1, task_id) ||
      sqlite3_bind_double(st, 2, accuracy) ||
      an_bind_text(st, 3, reason ? reason : "", an_reason_len(reason)) ||
      sqlite3_bind_int64(st, 4, now)) {
    rc = an_store_db_error(s);
    goto fail;
  }
  if ((rc = an_store_exec(s, st)) != 0)
    goto fail;
  if (!accepted) {
    rc = an_store_lease_lost(s, &t, "rejected", reason, accuracy, now);
    if (rc == 0)
      rc = an_store_commit(s);
    goto fail;
  }
  if (t.worker <= 0) {
    rc = an_store_corrupt(s, "validating task without a worker", t.id);
    goto fail;
  }
  fee = an_fee(t.spec.bounty, fee_permille);
  an_account_escrow(escrow, t.id);
  an_account_node(worker, t.worker);
  if ((rc = an_store_attempt_end(s, t.id, "accepted", reason, accuracy, now)) != 0 ||
      (rc = an_store_set_state(s, t.id, AN_TASK_ACCEPTED, now)) != 0 ||
      (rc = an_store_transfer(s, "payout", t.id, escrow, worker, t.spec.bounty - fee, now,
                              NULL)) != 0 ||
      (fee > 0 && (rc = an_store_transfer(s, "fee", t.id, escrow, "fees", fee, now, NULL)) != 0))
    goto fail;
  rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}

int an_store_task_delivered(an_store_t *s, int64_t task_id, int64_t now) {
  an_task_t t;
  int rc;
  if ((rc = an_store_begin(s)) != 0 || (rc = an_store_task_load(s, task_id, &t)) != 0)
    goto fail;
  if (t.state == AN_TASK_ACCEPTED)
    rc = an_store_set_state(s, task_id, AN_TASK_DELIVERED, now);
  else if (t.state != AN_TASK_DELIVERED)
    rc = AN_ESTATE;
  if (rc == 0)
    rc = an_store_commit(s);
fail:
  if (rc != 0)
    an_store_rollback(s);
  return rc;
}
