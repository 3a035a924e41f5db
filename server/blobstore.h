/* Content-addressed blobs (datasets, models) on the broker's disk:
 *
 *   DIR/<sha256 hex>            complete, verified, read-only
 *   DIR/partial/<sha256 hex>    an upload in progress
 *
 * Uploads arrive in chunks, each with its own SHA-256 or the blob's up to
 * its end, in order: a chunk is accepted only at the end the chunks before
 * it reach and only if its digest matches, and it is on disk (fdatasync)
 * before it is reported kept, so the offset begin() gives to resume from
 * is always verified, durable data, across disconnects and broker
 * restarts. With a loop (an_blobstore_use_loop) the hashing, writing and
 * syncing of chunks run on its thread pool, in order per upload: one chunk
 * is hashed while the one before it is written and an fdatasync covers
 * those before that, and the loop's thread decrypts the next ones and
 * serves everyone else; the chunks written while one sync runs share the
 * next. The last chunk completes the blob: the whole file's SHA-256 must
 * equal its name and a sync must cover all of it, then it is renamed into
 * place (and the directory fsynced). Quotas: a maximum blob size and a
 * free-disk floor under which new bytes are refused.
 *
 * Called from one thread (the broker's loop); only put's jobs run
 * elsewhere. A partial file is hashed again, on the loop's thread, when
 * its upload begins after a restart, an eviction or a failure. */
#ifndef AN_SERVER_BLOBSTORE_H
#define AN_SERVER_BLOBSTORE_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

typedef struct an_blobstore an_blobstore_t;

typedef struct an_blobstore_limits {
  uint64_t max_blob_bytes;  /* 0 = 64 GiB */
  uint64_t min_free_bytes;  /* refuse writes that would leave less free; 0 = 1 GiB */
  uint32_t max_chunk_bytes; /* 0 = 4 MiB */
} an_blobstore_limits_t;

/* Opens (creating) DIR and DIR/partial. */
int an_blobstore_open(const char *dir, const an_blobstore_limits_t *lim, an_blobstore_t **out,
                      char *err, size_t errlen);
void an_blobstore_close(an_blobstore_t *b);

/* Starts or resumes the upload of blob `digest` (64 lowercase hex) of
 * `size` bytes. *offset = bytes already verified and durable (size if it
 * is complete).
 * Errors: UV_EINVAL (bad digest), AN_ETOOBIG, AN_ENOSPACE (a new upload
 * whose whole size would cross the floor), AN_ESTATE (an upload of the same
 * digest with another size exists). The hash state of up to 256 uploads is
 * kept in memory; past that the least recently used is evicted, and, as
 * after a restart, its next begin re-reads its partial file (the declared
 * size is then the one this begin gives); UV_EBUSY when every slot has
 * chunks in flight, or this blob's upload is ending after a failure: try
 * again shortly. */
int an_blobstore_begin(an_blobstore_t *b, const char *digest, uint64_t size, uint64_t *offset,
                       char *err, size_t errlen);

/* Appends one chunk at `offset` and returns once it is durable (only on a
 * blob store without a loop: else UV_EINVAL). `offset` must equal the
 * verified end (else AN_ESTATE, and *next says where to resume). `chunk_sha256` is the chunk's
 * raw 32-byte digest, `prefix_sha256` that of the blob's bytes [0, offset
 * + len); either may be NULL, not both (UV_EINVAL); given ones must match
 * (mismatch: AN_EFORMAT, nothing written). The prefix digest costs no
 * extra pass: the upload's running hash is checked as it advances. *next = the
 * new verified end; *complete = 1 once the blob is whole and verified
 * (a wrong whole-file digest: AN_EFORMAT, and the partial file is dropped).
 * Also AN_ETOOBIG (a chunk over max_chunk_bytes or past the declared size),
 * AN_ENOSPACE (the floor), AN_ENOTFOUND (no upload of `digest` begun in
 * this process, or evicted: begin it again). A chunk for a blob that is
 * already complete (another upload of the same content won the race) is
 * answered *complete = 1, *next = its size, without looking at it. */
int an_blobstore_put(an_blobstore_t *b, const char *digest, uint64_t offset, const void *data,
                     size_t len, const uint8_t *chunk_sha256, const uint8_t *prefix_sha256,
                     uint64_t *next, int *complete, char *err, size_t errlen);

/* From now on put_async runs its jobs on `loop`'s thread pool (borrowed;
 * the loop must run until every job reported). Without it they run in the
 * caller, before put_async returns. */
void an_blobstore_use_loop(an_blobstore_t *b, uv_loop_t *loop);

/* What became of one chunk. */
typedef struct an_blob_put_result {
  int rc;             /* 0, or an error as for an_blobstore_put */
  uint64_t next;      /* where the upload continues */
  int complete;       /* the blob is whole, verified and in place */
  int completed_here; /* ... and this chunk completed it (count it once) */
  char err[320];      /* what went wrong, when rc != 0 */
} an_blob_put_result_t;

/* Called on the loop's thread once the chunk's bytes are durable (or it
 * failed). */
typedef void (*an_blob_put_cb)(const an_blob_put_result_t *r, void *arg);

/* an_blobstore_put in two halves. The checks that need no byte of the
 * chunk run now: a refusal returns its error (AN_ESTATE with *next, ...)
 * and cb is never called; a chunk of a blob that is already complete
 * returns 0 with *complete = 1. Otherwise it returns 1: the chunk is
 * queued behind the upload's others, `data` must stay valid until cb, and
 * cb(result, arg) reports it. After a chunk refused for its digest, the
 * ones queued behind it get AN_ESTATE and where to continue; after a
 * failed write, sync or seal the upload ends and they get AN_ENOTFOUND
 * (begin it again). Chunks are checked against the end the queued ones
 * will reach, so a client may keep several in flight; a chunk out of
 * place while others are in flight waits for them and is told the
 * verified end they reached (or that the blob is complete). */
int an_blobstore_put_async(an_blobstore_t *b, const char *digest, uint64_t offset,
                           const void *data, size_t len, const uint8_t *chunk_sha256,
                           const uint8_t *prefix_sha256, an_blob_put_cb cb, void *arg,
                           uint64_t *next, int *complete, char *err, size_t errlen);

/* 1 and its size if the complete blob exists, else 0. */
int an_blobstore_has(an_blobstore_t *b, const char *digest, uint64_t *size);

/* Path of a complete blob (into buf). Returns 0 or AN_ENOTFOUND. */
int an_blobstore_path(an_blobstore_t *b, const char *digest, char *buf, size_t len);

/* Bytes of chunks written around the page cache (O_DIRECT) since open. */
uint64_t an_blobstore_direct_bytes(an_blobstore_t *b);

/* Bytes stored (complete and partial), for metrics. */
uint64_t an_blobstore_bytes(an_blobstore_t *b);

#endif
