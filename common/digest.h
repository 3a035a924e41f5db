/* Small SHA-256 helpers shared by the transfer client, the blob store and
 * the state store: hex spelling, and a running hash's digest so far. */
#ifndef AN_DIGEST_H
#define AN_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* n raw bytes as 2n lowercase hex characters and a NUL (out: 2n + 1). */
void an_digest_hex(const uint8_t *raw, size_t n, char *out);

/* The digest of what `run` (a running SHA-256) has consumed so far, into
 * out, leaving `run` as it was. Returns 0, or UV_ENOMEM. */
int an_digest_peek(const EVP_MD_CTX *run, uint8_t out[32]);

#endif
