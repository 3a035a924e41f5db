/* Little-endian integers and hashed reads and writes for common/nn's
 * checksummed files. */
#include "common/nn/hashed_file.h"

#include <stdio.h>

#include "common/error.h"

#define AN_HASHED_CHUNK ((size_t)1 << 22)

void an__put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

void an__put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

uint64_t an__get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

int an__write_hashed(an_atomic_file_t *f, EVP_MD_CTX *md, const void *p, size_t n, char *err,
                     size_t errlen) {
  if (EVP_DigestUpdate(md, p, n) != 1) {
    snprintf(err, errlen, "hashing failed");
    return AN_EFORMAT;
  }
  return an_atomic_file_write(f, p, n, err, errlen);
}

int an__read_hashed(FILE *f, EVP_MD_CTX *md, void *p, size_t n) {
  uint8_t *q = p;
  while (n > 0) {
    size_t chunk = n < AN_HASHED_CHUNK ? n : AN_HASHED_CHUNK;
    if (fread(q, 1, chunk, f) != chunk || EVP_DigestUpdate(md, q, chunk) != 1)
      return -1;
    q += chunk;
    n -= chunk;
  }
  return 0;
}
