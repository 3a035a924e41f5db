/* Training checkpoints (format in checkpoint.h). */
#include "common/nn/checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"
#include "common/nn/hashed_file.h"

#define AN_CK_MAGIC "ANCK"
#define AN_CK_VERSION 1u
#define AN_CK_MAX_META (1u << 16)
#define AN_CK_HEAD 36
#define AN_CK_SKIP_CHUNK ((size_t)1 << 22)

int an_checkpoint_save(const char *path, an_model_t *m, an_optim_t *o, const char *meta,
                       char *err, size_t errlen) {
  uint8_t head[AN_CK_HEAD], digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  size_t meta_len = strlen(meta), n = an_model_param_count(m);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  an_atomic_file_t f = {.fd = -1};
  int rc;

  if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto done;
  }
  if (meta_len > AN_CK_MAX_META) {
    snprintf(err, errlen, "checkpoint metadata over %u bytes", AN_CK_MAX_META);
    rc = AN_ETOOBIG;
    goto done;
  }
  memcpy(head, AN_CK_MAGIC, 4);
  an__put_u32(head + 4, AN_CK_VERSION);
  an__put_u64(head + 8, n);
  an__put_u64(head + 16, an_model_state_count(m));
  an__put_u32(head + 24, (uint32_t)an_optim_moment_count(o));
  an__put_u64(head + 28, an_optim_steps(o));
  if ((rc = an_atomic_file_open(&f, path, 0600, err, errlen)) != 0)
    goto done;
  uint8_t len4[4];
  an__put_u32(len4, (uint32_t)meta_len);
  if ((rc = an__write_hashed(&f, md, head, sizeof head, err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, len4, 4, err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, meta, meta_len, err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, an_model_params(m), n * sizeof(float), err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, an_model_state(m), an_model_state_count(m) * sizeof(float),
                             err, errlen)) != 0)
    goto done;
  for (int i = 0; i < an_optim_moment_count(o); i++)
    if ((rc = an__write_hashed(&f, md, an_optim_moment(o, i), n * sizeof(float), err,
                               errlen)) != 0)
      goto done;
  if (EVP_DigestFinal_ex(md, digest, &dlen) != 1) {
    snprintf(err, errlen, "hashing failed");
    rc = AN_EFORMAT;
    goto done;
  }
  if ((rc = an_atomic_file_write(&f, digest, dlen, err, errlen)) != 0)
    goto done;
  rc = an_atomic_file_commit(&f, err, errlen);
done:
  an_atomic_file_abort(&f);
  EVP_MD_CTX_free(md);
  return rc;
}

/* Reads n bytes into `dst`, or only hashes them when dst is NULL. */
static int ck_section(FILE *f, EVP_MD_CTX *md, void *dst, size_t n, uint8_t *chunk) {
  if (dst)
    return an__read_hashed(f, md, dst, n);
  while (n > 0) {
    size_t k = n < AN_CK_SKIP_CHUNK ? n : AN_CK_SKIP_CHUNK;
    if (an__read_hashed(f, md, chunk, k) != 0)
      return -1;
    n -= k;
  }
  return 0;
}

/* The whole file, verified. With m == NULL only the meta is returned. */
static int ck_read(const char *path, an_model_t *m, an_optim_t *o, char **meta_out, char *err,
                   size_t errlen) {
  uint8_t head[AN_CK_HEAD + 4], digest[EVP_MAX_MD_SIZE], stored[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  FILE *f = fopen(path, "rb");
  uint8_t *chunk = m ? NULL : malloc(AN_CK_SKIP_CHUNK);
  char *meta = NULL;
  int rc = AN_EFORMAT;

  if (!f) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    goto done;
  }
  if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 || (!m && !chunk)) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto done;
  }
  if (an__read_hashed(f, md, head, sizeof head) != 0 || memcmp(head, AN_CK_MAGIC, 4) != 0) {
    snprintf(err, errlen, "%s: not a training checkpoint (bad magic)", path);
    goto done;
  }
  if (an__get_le(head + 4, 4) != AN_CK_VERSION) {
    snprintf(err, errlen, "%s: checkpoint version %u is not supported", path,
             (unsigned)an__get_le(head + 4, 4));
    goto done;
  }
  uint64_t n = an__get_le(head + 8, 8), n_state = an__get_le(head + 16, 8);
  uint32_t moments = (uint32_t)an__get_le(head + 24, 4);
  uint64_t steps = an__get_le(head + 28, 8);
  uint32_t meta_len = (uint32_t)an__get_le(head + 36, 4);
  /* Sizes come from an untrusted file: bound them before anything is read. */
  if (meta_len > AN_CK_MAX_META || moments < 1 || moments > 2 || n > ((uint64_t)1 << 34) ||
      n_state > ((uint64_t)1 << 34)) {
    snprintf(err, errlen, "%s: the checkpoint header is absurd", path);
    goto done;
  }
  if (m && (n != an_model_param_count(m) || n_state != an_model_state_count(m) ||
            (int)moments != an_optim_moment_count(o))) {
    snprintf(err, errlen, "%s: the checkpoint is for a model of another size", path);
    goto done;
  }
  if (!(meta = malloc(meta_len + 1))) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto done;
  }
  int ok = an__read_hashed(f, md, meta, meta_len) == 0 &&
           ck_section(f, md, m ? an_model_params(m) : NULL, n * sizeof(float), chunk) == 0 &&
           ck_section(f, md, m ? an_model_state(m) : NULL, n_state * sizeof(float), chunk) == 0;
  for (uint32_t i = 0; ok && i < moments; i++)
    ok = ck_section(f, md, m ? an_optim_moment(o, (int)i) : NULL, n * sizeof(float), chunk) == 0;
  if (!ok || EVP_DigestFinal_ex(md, digest, &dlen) != 1 || fread(stored, 1, dlen, f) != dlen) {
    snprintf(err, errlen, "%s: truncated", path);
    goto done;
  }
  if (memcmp(digest, stored, dlen) != 0 || fgetc(f) != EOF) {
    snprintf(err, errlen, "%s: checksum mismatch: the checkpoint is corrupt", path);
    goto done;
  }
  meta[meta_len] = '\0';
  if (strlen(meta) != meta_len) {
    snprintf(err, errlen, "%s: the checkpoint metadata contains a NUL byte", path);
    goto done;
  }
  if (o)
    an_optim_set_steps(o, steps);
  if (meta_out) {
    *meta_out = meta;
    meta = NULL;
  }
  rc = 0;
done:
  if (f)
    fclose(f);
  EVP_MD_CTX_free(md);
  free(chunk);
  free(meta);
  return rc;
}

int an_checkpoint_meta(const char *path, char **meta, char *err, size_t errlen) {
  *meta = NULL;
  return ck_read(path, NULL, NULL, meta, err, errlen);
}

int an_checkpoint_load(const char *path, an_model_t *m, an_optim_t *o, char *err,
                       size_t errlen) {
  return ck_read(path, m, o, NULL, err, errlen);
}
