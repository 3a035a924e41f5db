/* Group commit; the contract is in group_commit.h. */
#include "server/group_commit.h"

#include <stdlib.h>

#include "common/error.h"
#include "common/log.h"

struct an_group_commit {
  uv_prepare_t turn;  /* runs right before the loop waits for I/O */
  an_store_t *store;  /* borrowed */
  an_conn_t **held;   /* connections whose output waits for the commit */
  void (*on_lost)(void *arg);
  void *on_lost_arg;
  size_t n_held, cap_held;
  uint64_t commits, failures;
};

int an_group_commit_flush(an_group_commit_t *g) {
  int rc = an_store_group_commit(g->store);
  if (rc == 0) {
    g->commits++;
  } else {
    g->failures++;
    AN_LOG(AN_LOG_ERROR, "store",
           "commit failed (%s): %zu connection(s) whose replies depended on it are closed "
           "unanswered",
           an_store_errmsg(g->store), g->n_held);
  }
  /* A release can close a connection, which cannot re-enter here: a closing
   * connection cannot be held again. */
  for (size_t i = 0; i < g->n_held; i++)
    an_conn_release(g->held[i], rc != 0, AN_EDB);
  g->n_held = 0;
  /* Nothing waits for a commit now: the loop may end without one. */
  uv_unref((uv_handle_t *)&g->turn);
  if (rc != 0 && g->on_lost)
    g->on_lost(g->on_lost_arg);
  return rc;
}

static void an_group_commit_closed(uv_handle_t *h) {
  an_group_commit_t *g = h->data;
  free(g->held);
  free(g);
}

static void an_group_commit_on_turn(uv_prepare_t *p) { an_group_commit_flush(p->data); }

int an_group_commit_start(uv_loop_t *loop, an_store_t *store, void (*on_lost)(void *arg),
                          void *arg, an_group_commit_t **out) {
  an_group_commit_t *g = calloc(1, sizeof *g);
  int rc;
  if (!g)
    return UV_ENOMEM;
  g->store = store;
  g->on_lost = on_lost;
  g->on_lost_arg = arg;
  if ((rc = uv_prepare_init(loop, &g->turn)) != 0) {
    free(g);
    return rc;
  }
  g->turn.data = g;
  if ((rc = uv_prepare_start(&g->turn, an_group_commit_on_turn)) != 0) {
    uv_close((uv_handle_t *)&g->turn, an_group_commit_closed); /* frees g */
    return rc;
  }
  /* The broker's loop ends when its sessions and timers are gone. */
  uv_unref((uv_handle_t *)&g->turn);
  an_store_group_begin(store);
  *out = g;
  return 0;
}

void an_group_commit_hold(an_group_commit_t *g, an_conn_t *conn) {
  if (!g || !an_store_group_pending(g->store) || !an_conn_hold(conn))
    return; /* nothing uncommitted, or already held (or closing) */
  if (g->n_held == g->cap_held) {
    size_t cap = g->cap_held ? g->cap_held * 2 : 64;
    an_conn_t **grown = realloc(g->held, cap * sizeof *grown);
    if (!grown) {
      /* Cannot remember the connection, so cannot release it after the
       * commit: it gets no reply (its client reconnects and asks again). */
      AN_LOG(AN_LOG_ERROR, "store", "out of memory holding a reply; closing %s",
             an_conn_peer(conn));
      an_conn_release(conn, 1, UV_ENOMEM);
      return;
    }
    g->held = grown;
    g->cap_held = cap;
  }
  g->held[g->n_held++] = conn;
  /* A held connection that is closing has no active handle of its own:
   * this keeps the loop turning until the commit releases it. */
  uv_ref((uv_handle_t *)&g->turn);
}

int an_group_commit_close(an_group_commit_t *g) {
  if (!g)
    return 0;
  int rc = an_group_commit_flush(g);
  int end = an_store_group_end(g->store);
  uv_loop_t *loop = g->turn.loop;
  uv_close((uv_handle_t *)&g->turn, an_group_commit_closed);
  uv_run(loop, UV_RUN_NOWAIT);
  return rc ? rc : end;
}
