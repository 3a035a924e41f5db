/* Group commit for the broker: many requests' changes, one fsync.
 *
 * The store (store.h) runs grouped: every change joins one open SQLite
 * transaction. Before a session sends anything while changes are pending,
 * it calls an_group_commit_hold, which holds that connection's output
 * (an_conn_hold). Once per turn of the event loop, just before it waits
 * for I/O, the group commits with one fsync and the held replies go out;
 * while the fsync runs, new requests pile up in the sockets and make up the
 * next group. So a client still hears nothing until what it is told is on
 * disk (the store's rule, kept), but a broker with N busy clients pays one
 * fsync per N requests instead of one per request.
 *
 * If a commit fails (I/O error, disk full), every change since the last
 * one is gone: the held replies are thrown away unsent and their
 * connections closed, so no client is told of something that did not
 * happen; clients reconnect and retry as after any disconnect.
 *
 * Single-threaded: used from the loop's thread only. */
#ifndef AN_SERVER_GROUP_COMMIT_H
#define AN_SERVER_GROUP_COMMIT_H

#include <uv.h>

#include "common/net/conn.h"
#include "server/store.h"

typedef struct an_group_commit an_group_commit_t;

/* Puts `store` (borrowed; outlives the group) in group mode and commits it
 * on every turn of `loop`. The loop's liveness depends on it only while a
 * reply is held. After a failed commit, on_lost(arg) is called (may be
 * NULL) so that work the lost changes started without a reply can be
 * redone. */
int an_group_commit_start(uv_loop_t *loop, an_store_t *store, void (*on_lost)(void *arg),
                          void *arg, an_group_commit_t **out);

/* Call before writing to `conn`: if the store has uncommitted changes, the
 * connection's output is held until they are committed. */
void an_group_commit_hold(an_group_commit_t *g, an_conn_t *conn);

/* Commits now and releases (or, on failure, discards) the held output.
 * Returns the commit's result. */
int an_group_commit_flush(an_group_commit_t *g);

/* Once the loop has run dry: commits what is left, returns the store to
 * one transaction per call, and frees the group (running the loop once
 * more to close its handle). Returns the last commit's result. NULL is a
 * no-op returning 0. */
int an_group_commit_close(an_group_commit_t *g);

#endif
