/* Moving blobs (datasets, models) between a node and the broker over a
 * connected client: content-addressed by SHA-256, in chunks that each
 * carry a digest, resumable. An upload asks the broker where to resume
 * (its verified end) and sends from there, several chunks in flight, each
 * with the SHA-256 of the blob up to its end (checked by the broker's
 * running hash, so neither side hashes a byte twice); a download appends to
 * PATH.part, so a rerun continues where the last one stopped, checks every
 * chunk, and renames the file into place only once the whole SHA-256
 * matches. */
#ifndef AN_TRANSFER_H
#define AN_TRANSFER_H

#include <stddef.h>
#include <stdint.h>

#include "common/net/client.h"

/* SHA-256 of a file as 64 lowercase hex characters, and its size. */
int an_file_sha256(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen);

/* Called after each chunk: bytes done of the total. */
typedef void (*an_transfer_progress)(uint64_t done, uint64_t total, void *arg);

/* Uploads `path` (whose digest and size the caller computed) for task
 * `task_id`. Returns 0 once the broker holds the whole verified blob. */
int an_transfer_upload(an_client_t *c, uint64_t task_id, const char *path, const char *sha256,
                       uint64_t size, uint32_t chunk_bytes, an_transfer_progress progress,
                       void *arg, char *err, size_t errlen);

/* Downloads blob `sha256` of task `task_id` to `path` (via path.part). */
int an_transfer_download(an_client_t *c, uint64_t task_id, const char *sha256, const char *path,
                         an_transfer_progress progress, void *arg, char *err, size_t errlen);

#endif
