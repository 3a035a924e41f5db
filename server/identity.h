/* The broker's TLS identity: a private key and a self-signed certificate in
 * the data directory. Clients trust the broker by pinning its key. */
#ifndef AN_IDENTITY_H
#define AN_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

#include "common/net/tls.h"

/* File names inside the data directory. */
#define AN_IDENTITY_CERT "broker.crt"
#define AN_IDENTITY_KEY "broker.key"

/* Creates `dir` (mode 0700) if needed and writes a new key (mode 0600) and
 * certificate. Refuses to replace an existing identity unless `force`.
 * The new pin is written to `pin`. */
int an_identity_create(const char *dir, const char *common_name, int days, bool force,
                       char pin[AN_TLS_PIN_LEN], char *err, size_t errlen);

/* Reads the private key at `path` (PEM) for signing receipts; the caller
 * frees it with EVP_PKEY_free. AN_ETLS with the reason in err. */
int an_identity_load_key(const char *path, EVP_PKEY **out, char *err, size_t errlen);

/* Joins dir and name into out; AN_ETOOBIG if it does not fit. */
int an_identity_path(const char *dir, const char *name, char *out, size_t len);

#endif
