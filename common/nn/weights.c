#include "common/nn/weights.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <uv.h>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/nn/hashed_file.h"
#include "common/nn/spec.h"

#define AN_WEIGHTS_MAGIC "ANWT"
#define AN_WEIGHTS_VERSION 1u
#define AN_WEIGHTS_MAX_SPEC (1u << 20)

int an_weights_save(const an_model_t *m, const char *path, char *err, size_t errlen) {
  an_model_t *mm = (an_model_t *)m; /* the accessors are not const; nothing is changed */
  char *spec = malloc(AN_WEIGHTS_MAX_SPEC);
  uint8_t head[28], digest[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  an_atomic_file_t f = {.fd = -1};
  size_t spec_len;
  int rc;

  if (!spec || !md) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto done;
  }
  if (an_model_to_spec(m, spec, AN_WEIGHTS_MAX_SPEC) != 0) {
    snprintf(err, errlen, "the model's spec is over %u bytes", AN_WEIGHTS_MAX_SPEC);
    rc = AN_ETOOBIG;
    goto done;
  }
  spec_len = strlen(spec);
  memcpy(head, AN_WEIGHTS_MAGIC, 4);
  an__put_u32(head + 4, AN_WEIGHTS_VERSION);
  an__put_u64(head + 8, an_model_param_count(m));
  an__put_u64(head + 16, an_model_state_count(m));
  an__put_u32(head + 24, (uint32_t)spec_len);
  if ((rc = an_atomic_file_open(&f, path, 0644, err, errlen)) != 0)
    goto done;
  if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    snprintf(err, errlen, "hashing failed");
    rc = AN_EFORMAT;
    goto done;
  }
  if ((rc = an__write_hashed(&f, md, head, sizeof head, err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, spec, spec_len, err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, an_model_params(mm), an_model_param_count(m) * sizeof(float),
                            err, errlen)) != 0 ||
      (rc = an__write_hashed(&f, md, an_model_state(mm), an_model_state_count(m) * sizeof(float),
                            err, errlen)) != 0)
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
  an_atomic_file_abort(&f); /* no-op after a commit */
  EVP_MD_CTX_free(md);
  free(spec);
  return rc;
}

int an_weights_load(const char *path, an_model_t **out, char *err, size_t errlen) {
  uint8_t head[28], digest[EVP_MAX_MD_SIZE], stored[EVP_MAX_MD_SIZE];
  unsigned dlen = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  an_model_t *m = NULL;
  char *spec = NULL, why[512];
  FILE *f = fopen(path, "rb");
  uint64_t n_params, n_state;
  uint32_t spec_len;
  int rc = AN_EFORMAT;

  *out = NULL;
  if (!f) {
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    rc = -errno;
    goto done;
  }
  if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    snprintf(err, errlen, "out of memory");
    rc = UV_ENOMEM;
    goto done;
  }
  if (an__read_hashed(f, md, head, sizeof head) || memcmp(head, AN_WEIGHTS_MAGIC, 4) != 0) {
    snprintf(err, errlen, "%s: not an ArchNet weights file (bad magic)", path);
    goto done;
  }
  if (an__get_le(head + 4, 4) != AN_WEIGHTS_VERSION) {
    snprintf(err, errlen, "%s: weights format version %u is not supported (this build reads %u)",
             path, (unsigned)an__get_le(head + 4, 4), AN_WEIGHTS_VERSION);
    goto done;
  }
  n_params = an__get_le(head + 8, 8);
  n_state = an__get_le(head + 16, 8);
  spec_len = (uint32_t)an__get_le(head + 24, 4);
  if (spec_len == 0 || spec_len > AN_WEIGHTS_MAX_SPEC) {
    snprintf(err, errlen, "%s: spec length %u is absurd", path, spec_len);
    goto done;
  }
  if (!(spec = malloc((size_t)spec_len + 1)) || an__read_hashed(f, md, spec, spec_len)) {
    snprintf(err, errlen, "%s: truncated in the model spec", path);
    goto done;
  }
  spec[spec_len] = '\0';
  if (strlen(spec) != spec_len) {
    snprintf(err, errlen, "%s: the stored model spec contains a NUL byte", path);
    goto done;
  }
  if (an_model_parse(spec, &m, why, sizeof why) != 0) {
    snprintf(err, errlen, "%s: the stored model spec is invalid: %s", path, why);
    goto done;
  }
  /* The spec decides the sizes; the header must agree before we read. */
  if (n_params != an_model_param_count(m) || n_state != an_model_state_count(m)) {
    snprintf(err, errlen, "%s: header says %llu parameters and %llu state values, the spec %zu "
                          "and %zu",
             path, (unsigned long long)n_params, (unsigned long long)n_state,
             an_model_param_count(m), an_model_state_count(m));
    goto done;
  }
  if ((rc = an_model_finalize(m, AN_INIT_UNIFORM, 0, why, sizeof why)) != 0) {
    snprintf(err, errlen, "%s: %s", path, why);
    goto done;
  }
  rc = AN_EFORMAT;
  if (an__read_hashed(f, md, an_model_params(m), n_params * sizeof(float)) ||
      an__read_hashed(f, md, an_model_state(m), n_state * sizeof(float)) ||
      EVP_DigestFinal_ex(md, digest, &dlen) != 1 || fread(stored, 1, dlen, f) != dlen) {
    snprintf(err, errlen, "%s: truncated", path);
    goto done;
  }
  if (memcmp(digest, stored, dlen) != 0) {
    snprintf(err, errlen, "%s: checksum mismatch: the file is corrupt", path);
    goto done;
  }
  if (fgetc(f) != EOF) {
    snprintf(err, errlen, "%s: unexpected bytes after the checksum", path);
    goto done;
  }
  *out = m;
  m = NULL;
  rc = 0;
done:
  if (f)
    fclose(f);
  an_model_free(m);
  free(spec);
  EVP_MD_CTX_free(md);
  return rc;
}
