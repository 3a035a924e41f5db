/* The worker's payment receipts: fetched from the broker once a model is
 * accepted, checked against the broker's pin, and kept as
 * CACHE/receipts/task-<id>.json (format: common/receipt.h). */
#ifndef AN_WORKER_RECEIPTS_H
#define AN_WORKER_RECEIPTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/net/client.h"

/* Asks the broker for the receipt of `task`, checks that it pays `worker`
 * (this node) and its signature with `pin`, and saves it under
 * cache/receipts/. The saved path goes to
 * path_out. AN_EPIN / AN_EFORMAT for a receipt that does not verify (it is
 * then not saved), or the call's error; a sentence in err. */
int an_worker_keep_receipt(an_client_t *c, an_arena_t *arena, uint64_t task, uint64_t worker,
                           const char *pin, const char *cache, char *path_out, size_t path_len,
                           char *err, size_t errlen);

/* `archnet-worker receipts`: lists the kept receipts, each checked again. */
int an_worker_receipts(int argc, char **argv);

#endif
