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
#include "common/error.h"

#define AN_TRANSFER_CHUNK_DEFAULT (1u << 20)

static void an_hex(const uint8_t *d, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[d[i] >> 4];
    out[2 * i + 1] = digits[d[i] & 15];
  }
  out[2 * n] = '\0';
}

int an_file_sha256(const char *path, char hex[65], uint64_t *size, char *err, size_t errlen) {
  uint8_t *buf = malloc(AN_TRANSFER_CHUNK_DEFAULT), d[EVP_MAX_MD_SIZE];
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  unsigned dl = 0;
  uint64_t total = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
  ssize_t n;
  if (fd < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto done;
  }
  if (!buf || !md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  while ((n = read(fd, buf, AN_TRANSFER_CHUNK_DEFAULT)) > 0) {
    EVP_DigestUpdate(md, buf, (size_t)n);
    total += (uint64_t)n;
  }
  if (n < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: read error: %s", path, strerror(errno));
    goto done;
  }
  EVP_DigestFinal_ex(md, d, &dl);
  an_hex(d, dl, hex);
  *size = total;
done:
  if (fd >= 0)
    close(fd);
  EVP_MD_CTX_free(md);
  free(buf);
  return rc;
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

int an_transfer_upload(an_client_t *c, uint64_t task_id, const char *path, const char *sha256,
                       uint64_t size, uint32_t chunk_bytes, an_transfer_progress progress,
                       void *arg, char *err, size_t errlen) {
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply;
  Archnet__BeginBlob bb = ARCHNET__BEGIN_BLOB__INIT;
  Archnet__BlobRef ref = ARCHNET__BLOB_REF__INIT;
  an_arena_t arena;
  uint8_t *buf = NULL, digest[EVP_MAX_MD_SIZE];
  unsigned dl;
  int fd = -1, rc;
  uint64_t offset;

  if (!chunk_bytes)
    chunk_bytes = AN_TRANSFER_CHUNK_DEFAULT;
  an_arena_init(&arena, 0, 0);
  ref.sha256 = (char *)sha256;
  ref.size = size;
  bb.task_id = task_id;
  bb.blob = &ref;
  req.body_case = ARCHNET__ENVELOPE__BODY_BEGIN_BLOB;
  req.begin_blob = &bb;
  if ((rc = an_call(c, &req, &arena, ARCHNET__ENVELOPE__BODY_BLOB_OFFSET, &reply, err,
                    errlen)) != 0)
    goto done;
  offset = reply->blob_offset->offset;
  if (reply->blob_offset->complete) {
    if (progress)
      progress(size, size, arg);
    goto done;
  }
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto done;
  }
  if (!(buf = malloc(chunk_bytes))) {
    rc = UV_ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  while (offset < size) {
    Archnet__PutBlobChunk pc = ARCHNET__PUT_BLOB_CHUNK__INIT;
    size_t n = size - offset < chunk_bytes ? (size_t)(size - offset) : chunk_bytes;
    if (pread(fd, buf, n, (off_t)offset) != (ssize_t)n) {
      rc = AN_EFORMAT;
      snprintf(err, errlen, "%s changed while it was being uploaded", path);
      goto done;
    }
    EVP_Digest(buf, n, digest, &dl, EVP_sha256(), NULL);
    pc.sha256 = (char *)sha256;
    pc.offset = offset;
    pc.data.data = buf;
    pc.data.len = n;
    pc.chunk_sha256.data = digest;
    pc.chunk_sha256.len = 32;
    memset(&req, 0, sizeof req);
    archnet__envelope__init(&req);
    req.body_case = ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK;
    req.put_blob_chunk = &pc;
    an_arena_reset(&arena);
    if ((rc = an_call(c, &req, &arena, ARCHNET__ENVELOPE__BODY_BLOB_OFFSET, &reply, err,
                      errlen)) != 0)
      goto done;
    /* The broker says where its verified end is: normally offset + n. */
    offset = reply->blob_offset->offset;
    if (progress)
      progress(offset, size, arg);
    if (reply->blob_offset->complete)
      break;
  }
  if (offset < size) {
    rc = AN_EPROTO;
    snprintf(err, errlen, "the broker stopped the upload at %llu of %llu bytes",
             (unsigned long long)offset, (unsigned long long)size);
  }
done:
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
