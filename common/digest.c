/* SHA-256 helpers (see digest.h). */
#include "common/digest.h"

#include <uv.h>

void an_digest_hex(const uint8_t *raw, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[raw[i] >> 4];
    out[2 * i + 1] = digits[raw[i] & 15];
  }
  out[2 * n] = '\0';
}

int an_digest_peek(const EVP_MD_CTX *run, uint8_t out[32]) {
  /* A copy is finalised: the running hash goes on. */
  EVP_MD_CTX *peek = EVP_MD_CTX_new();
  unsigned n = 0;
  int ok = peek && EVP_MD_CTX_copy_ex(peek, run) == 1 && EVP_DigestFinal_ex(peek, out, &n) == 1 &&
           n == 32;
  EVP_MD_CTX_free(peek);
  return ok ? 0 : UV_ENOMEM;
}
