/* Moving blobs (datasets, models) between a node and the broker over a
 * connected client: content-addressed by SHA-256, in chunks that each
 * carry a digest, resumable. An upload asks the broker where to resume
 * (its verified end) and sends from there, several chunks in flight, each
 * with the SHA-256 of the blob up to its end (taken when the file was
 * hashed for its address, and checked by the broker's running hash, so
 * neither side hashes a byte twice); a download appends to
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

/* What one pass over a file tells an upload: the blob's address (SHA-256)
 * and size, and, for chunks of chunk_bytes, the blob's SHA-256 up to each
 * chunk's end, which each chunk carries. The digests are taken where the
 * address has to be taken anyway (before BeginBlob), so the upload itself
 * hashes nothing: a file changed in between is refused by the broker at
 * the first changed chunk. */
typedef struct an_blob_digests {
  char sha256[65];
  uint64_t size;
  uint32_t chunk_bytes;
  size_t n_chunks;       /* ceil(size / chunk_bytes) */
  uint8_t (*prefix)[32]; /* owned: [k] = SHA-256 of bytes [0, min((k+1) * chunk_bytes, size)) */
} an_blob_digests_t;

/* Fills *out for the file at `path` (chunk_bytes 0 = 1 MiB). On failure
 * *out holds nothing to free. */
int an_blob_digests_of(const char *path, uint32_t chunk_bytes, an_blob_digests_t *out, char *err,
                       size_t errlen);
void an_blob_digests_free(an_blob_digests_t *d);

/* Called after each chunk: bytes done of the total. */
typedef void (*an_transfer_progress)(uint64_t done, uint64_t total, void *arg);

/* Uploads `path`, whose digests `d` were taken by an_blob_digests_of, for
 * task `task_id`, in chunks of d->chunk_bytes. Returns 0 once the broker
 * holds the whole verified blob. */
int an_transfer_upload(an_client_t *c, uint64_t task_id, const char *path,
                       const an_blob_digests_t *d, an_transfer_progress progress, void *arg,
                       char *err, size_t errlen);

/* Downloads blob `sha256` of task `task_id` to `path` (via path.part). */
int an_transfer_download(an_client_t *c, uint64_t task_id, const char *sha256, const char *path,
                         an_transfer_progress progress, void *arg, char *err, size_t errlen);

#endif
