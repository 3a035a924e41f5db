/* Resumable, verified blob transfers (see transfer.h). */
#include "common/net/transfer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <uv.h>

#include "common/arena.h"
#include "common/digest.h"
#include "common/error.h"

#define AN_TRANSFER_CHUNK_DEFAULT (1u << 20)

/* Reads up to `len` bytes, fewer only at the end of the file: read() may
 * return short, and chunk ends must fall on whole chunks. */
static ssize_t an_read_full(int fd, uint8_t *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

/* The shared pass of an_file_sha256 and an_blob_digests_of: hashes the
 * file at `path` and, when `d` is given, keeps the running digest at
 * every chunk end in d->prefix (allocated here, owned by d). */
static int an_hash_file(const char *path, char hex[65], uint64_t *size, an_blob_digests_t *d,
                        char *err, size_t errlen) {
  uint32_t chunk = d ? d->chunk_bytes : AN_TRANSFER_CHUNK_DEFAULT;
  uint8_t *buf = malloc(chunk), dg[EVP_MAX_MD_SIZE];
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned dl = 0;
  uint64_t total = 0;
  size_t cap = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
  struct stat st;
  ssize_t n;
  if (fd < 0 || fstat(fd, &st) != 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto done;
  }
  if (d) /* sized from fstat: a file that grows meanwhile is refused below */
    cap = (size_t)(((uint64_t)st.st_size + chunk - 1) / chunk);
  if (!buf || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
      (cap && !(d->prefix = calloc(cap, sizeof *d->prefix)))) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  while ((n = an_read_full(fd, buf, chunk)) > 0) {
    if (d && d->n_chunks == cap) {
      rc = AN_EFORMAT;
      snprintf(err, errlen, "%s changed while it was being hashed", path);
      goto done;
    }
    if (EVP_DigestUpdate(md, buf, (size_t)n) != 1 ||
        (d && an_digest_peek(md, d->prefix[d->n_chunks++]) != 0)) {
      rc = UV_ENOMEM;
      snprintf(err, errlen, "SHA-256 failed");
      goto done;
    }
    total += (uint64_t)n;
    if ((size_t)n < chunk)
      break;
  }
  if (n < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
    goto done;
  }
  if (d && d->n_chunks != cap) {
    rc = AN_EFORMAT;
    snprintf(err, errlen, "%s changed while it was being hashed", path);
    goto done;
  }
  EVP_DigestFinal_ex(md, dg, &dl);
  an_digest_hex(dg, dl, hex);
  *size = total;
done:
  if (fd >= 0)
    close(fd);
  EVP_MD_CTX_free(md);
  free(buf);
  return rc;
}

int an_file_sha256(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen) {
  return an_hash_file(path, hex, size, NULL, err, errlen);
}

int an_blob_digests_of(const char *path, uint32_t chunk_bytes, an_blob_digests_t *out, char *err,
                       size_t errlen) {
  int rc;
  memset(out, 0, sizeof *out);
  out->chunk_bytes = chunk_bytes ? chunk_bytes : AN_TRANSFER_CHUNK_DEFAULT;
  if ((rc = an_hash_file(path, out->sha256, &out->size, out, err, errlen)) != 0)
    an_blob_digests_free(out);
  return rc;
}

void an_blob_digests_free(an_blob_digests_t *d) {
  free(d->prefix);
  d->prefix = NULL;
  d->n_chunks = 0;
}

/* One request/reply; the reply must have the expected body. */
static int an_call(an_client_t *c, Archnet__Envelope *req, an_arena_t *arena,
                   Archnet__Envelope__BodyCase want, Archnet__Envelope **reply, char *err,
                   size_t errlen) {
  int rc = an_client_call(c, req, arena, reply, err, errlen);
  if (rc)
    return rc;
  if ((*reply)->body_case != want) {
    snprintf(err, errlen, "unexpected reply from the broker");
    return AN_EPROTO;
  }
  return 0;
}

/* Chunks of an upload in flight at once: while the broker checks and
 * stores one, the next ones are already on the wire and this side is
 * reading the one after. */
#define AN_TRANSFER_WINDOW 8

/* BeginBlob answered UNAVAILABLE: asked again this often, this far apart. */
#define AN_TRANSFER_BUSY_RETRIES 20
#define AN_TRANSFER_BUSY_WAIT_MS 250

typedef struct an_flight {
  uint64_t id;  /* the PutBlobChunk's request id */
  uint64_t end; /* the verified end the broker should answer */
} an_flight_t;

int an_transfer_upload(an_client_t *c, uint64_t task_id, const char *path,
                       const an_blob_digests_t *d, an_transfer_progress progress, void *arg,
                       char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__BeginBlob bb = ARCHNET__BEGIN_BLOB__INIT;
  Archnet__BlobRef ref = ARCHNET__BLOB_REF__INIT;
  an_flight_t flights[AN_TRANSFER_WINDOW];
  size_t first = 0, in_flight = 0;
  an_arena_t arena;
  uint8_t *buf = NULL;
  const uint64_t size = d->size, chunk = d->chunk_bytes;
  int fd = -1, rc;
  uint64_t acked, sent;

  an_arena_init(&arena, 0, 0);
  if (!chunk || d->n_chunks != (size + chunk - 1) / chunk) {
    rc = UV_EINVAL;
    snprintf(err, errlen, "the digests of %s are not a whole set", path);
    goto done;
  }
  ref.sha256 = (char *)d->sha256;
  ref.size = size;
  bb.task_id = task_id;
  bb.blob = &ref;
  req.body_case = ARCHNET__ENVELOPE__BODY_BEGIN_BLOB;
  req.begin_blob = &bb;
  /* UNAVAILABLE is the broker's "in a moment" (every upload slot busy, or
   * this blob's last upload still ending): asked again for a few seconds. */
  for (int attempt = 0;; attempt++) {
    an_arena_reset(&arena);
    rc = an_call(c, &req, &arena, ARCHNET__ENVELOPE__BODY_BLOB_OFFSET, &reply, err, errlen);
    if (!(rc == AN_EREMOTE && reply && reply->error->code == ARCHNET__ERROR__CODE__UNAVAILABLE &&
          attempt < AN_TRANSFER_BUSY_RETRIES))
      break;
    uv_sleep(AN_TRANSFER_BUSY_WAIT_MS);
  }
  if (rc != 0)
    goto done;
  acked = sent = reply->blob_offset->offset;
  if (reply->blob_offset->complete) {
    if (progress)
      progress(size, size, arg);
    goto done;
  }
  if (acked > size) {
    rc = AN_EPROTO;
    snprintf(err, errlen, "the broker holds more of the blob than its size");
    goto done;
  }
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto done;
  }
  if (!(buf = malloc(chunk))) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  while (acked < size) {
    /* Fill the window. Each chunk ends on the digests' chunk grid (the
     * first after a resume elsewhere may be shorter) and carries the
     * blob's digest up to its end, from the table: the broker checks it
     * against its own running hash, so a file changed since it was
     * hashed is refused at the first changed chunk. */
    while (in_flight < AN_TRANSFER_WINDOW && sent < size) {
      Archnet__PutBlobChunk pc = ARCHNET__PUT_BLOB_CHUNK__INIT;
      uint64_t k = sent / chunk, end = (k + 1) * chunk < size ? (k + 1) * chunk : size;
      size_t n = (size_t)(end - sent);
      uint64_t id = 0;
      if (pread(fd, buf, n, (off_t)sent) != (ssize_t)n) {
        rc = AN_EFORMAT;
        snprintf(err, errlen, "%s changed while it was being uploaded", path);
        goto done;
      }
      pc.sha256 = (char *)d->sha256;
      pc.offset = sent;
      pc.data.data = buf;
      pc.data.len = n;
      pc.prefix_sha256.data = (uint8_t *)d->prefix[k];
      pc.prefix_sha256.len = sizeof d->prefix[k];
      memset(&req, 0, sizeof req);
      archnet__envelope__init(&req);
      req.body_case = ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK;
      req.put_blob_chunk = &pc;
      /* Sent means packed into the connection: buf is free again. */
      if ((rc = an_client_send(c, &req, &id, err, errlen)) != 0)
        goto done;
      sent = end;
      flights[(first + in_flight++) % AN_TRANSFER_WINDOW] = (an_flight_t){id, sent};
    }
    an_flight_t f = flights[first];
    first = (first + 1) % AN_TRANSFER_WINDOW;
    in_flight--;
    an_arena_reset(&arena);
    if ((rc = an_client_reply(c, f.id, &arena, &reply, err, errlen)) != 0) {
      if (rc == AN_EREMOTE && reply && reply->error->code == ARCHNET__ERROR__CODE__BAD_DIGEST &&
          strlen(err) < errlen) /* the broker's check: the file is not what was hashed */
        snprintf(err + strlen(err), errlen - strlen(err),
                 " (%s changed after it was hashed; submit it again)", path);
      goto done;
    }
    if (reply->body_case != ARCHNET__ENVELOPE__BODY_BLOB_OFFSET) {
      rc = AN_EPROTO;
      snprintf(err, errlen, "unexpected reply from the broker");
      goto done;
    }
    uint64_t at = reply->blob_offset->offset;
    if (reply->blob_offset->complete) {
      acked = size;
    } else if (at == f.end) {
      acked = at;
    } else if (at > size) {
      rc = AN_EPROTO;
      snprintf(err, errlen, "the broker holds more of the blob than its size");
      goto done;
    } else {
      /* The broker's verified end is elsewhere (another upload of the same
       * blob moved it): start again from there. The chunks still in
       * flight will be refused; their replies are dropped. */
      for (; in_flight > 0; in_flight--, first = (first + 1) % AN_TRANSFER_WINDOW)
        an_client_abandon(c, flights[first].id);
      acked = sent = at;
    }
    if (progress)
      progress(acked, size, arg);
  }
done:
  /* Done early (complete, or an error): nobody waits for the rest. */
  for (; in_flight > 0; in_flight--, first = (first + 1) % AN_TRANSFER_WINDOW)
    an_client_abandon(c, flights[first].id);
  if (fd >= 0)
    close(fd);
  free(buf);
  an_arena_destroy(&arena);
  return rc;
}

int an_transfer_download(an_client_t *c, uint64_t task_id, const char *sha256, const char *path,
                         an_transfer_progress progress, void *arg, char *err, size_t errlen) {
  char part[4096], have[65];
  an_arena_t arena;
  int fd = -1, rc = 0;
  uint64_t offset = 0, size = UINT64_MAX, got_size;
  struct stat st;

  an_arena_init(&arena, 0, 0);
  snprintf(part, sizeof part, "%s.part", path);
  if ((fd = open(part, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0 || fstat(fd, &st) != 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot write: %s", part, strerror(errno));
    goto done;
  }
  offset = (uint64_t)st.st_size; /* resume after what an earlier run kept */
  while (offset < size) {
    Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
    Archnet__GetBlobChunk gc = ARCHNET__GET_BLOB_CHUNK__INIT;
    uint8_t digest[EVP_MAX_MD_SIZE];
    unsigned dl;
    gc.task_id = task_id;
    gc.sha256 = (char *)sha256;
    gc.offset = offset;
    req.body_case = ARCHNET__ENVELOPE__BODY_GET_BLOB_CHUNK;
    req.get_blob_chunk = &gc;
    an_arena_reset(&arena);
    if ((rc = an_call(c, &req, &arena, ARCHNET__ENVELOPE__BODY_BLOB_CHUNK, &reply, err,
                      errlen)) != 0)
      goto done;
    const Archnet__BlobChunk *bc = reply->blob_chunk;
    size = bc->size;
    if (offset > size) { /* a stale .part longer than the blob */
      rc = AN_EFORMAT;
      snprintf(err, errlen, "%s is longer than the blob; remove it", part);
      goto done;
    }
    EVP_Digest(bc->data.data, bc->data.len, digest, &dl, EVP_sha256(), NULL);
    if (bc->offset != offset || bc->chunk_sha256.len != 32 ||
        memcmp(digest, bc->chunk_sha256.data, 32) != 0 ||
        (bc->data.len == 0 && offset < size)) {
      rc = AN_EFORMAT;
      snprintf(err, errlen, "a chunk at offset %llu failed its check",
               (unsigned long long)offset);
      goto done;
    }
    if (pwrite(fd, bc->data.data, bc->data.len, (off_t)offset) != (ssize_t)bc->data.len) {
      rc = -errno;
      snprintf(err, errlen, "%s: write error: %s", part, strerror(errno));
      goto done;
    }
    offset += bc->data.len;
    if (progress)
      progress(offset, size, arg);
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    fd = -1;
    rc = -errno;
    snprintf(err, errlen, "%s: cannot save: %s", part, strerror(errno));
    goto done;
  }
  fd = -1;
  if ((rc = an_file_sha256(part, have, &got_size, err, errlen)) != 0)
    goto done;
  if (strcmp(have, sha256) != 0) {
    unlink(part); /* corrupt: start over next time */
    rc = AN_EFORMAT;
    snprintf(err, errlen, "the downloaded file does not match its SHA-256; removed it");
    goto done;
  }
  if (rename(part, path) != 0) {
    rc = -errno;
    snprintf(err, errlen, "cannot rename %s to %s: %s", part, path, strerror(errno));
  }
done:
  if (fd >= 0)
    close(fd);
  an_arena_destroy(&arena);
  return rc;
}
