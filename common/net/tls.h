/* TLS 1.3 over memory BIOs (the h2o way): OpenSSL never touches a socket.
 * The connection layer feeds ciphertext in, drains ciphertext out, and moves
 * plaintext through an_tls_read / an_tls_write; libuv owns the socket.
 *
 * Trust model: the broker has a self-generated key; clients pin the SHA-256
 * of its SubjectPublicKeyInfo, written "sha256//BASE64" (curl's syntax). No
 * certificate authority is involved, and a renewed certificate keeps its pin
 * as long as the key stays the same. */
#ifndef AN_TLS_H
#define AN_TLS_H

#include <stddef.h>
#include <stdint.h>

/* "sha256//" + 44 base64 characters + NUL */
#define AN_TLS_PIN_LEN 53

typedef struct an_tls_ctx an_tls_ctx_t; /* shared by many connections */
typedef struct an_tls an_tls_t;         /* one connection's engine */

/* Server context from PEM files (certificate chain, private key). */
int an_tls_server_ctx_new(const char *cert_path, const char *key_path, an_tls_ctx_t **out,
                          char *err, size_t errlen);
/* Server context from PEM text in memory (tests, embedded setups). */
int an_tls_server_ctx_new_pem(const char *cert_pem, const char *key_pem, an_tls_ctx_t **out,
                              char *err, size_t errlen);
/* Client context that accepts only a server whose key matches `pin`. */
int an_tls_client_ctx_new(const char *pin, an_tls_ctx_t **out, char *err, size_t errlen);
void an_tls_ctx_free(an_tls_ctx_t *ctx);

/* Generates a P-256 key and a self-signed certificate valid for `days` days.
 * On success *cert_pem and *key_pem are heap strings the caller frees. */
int an_tls_generate_identity(const char *common_name, int days, char **cert_pem, char **key_pem,
                             char *err, size_t errlen);

/* Computes the pin of the first certificate in PEM text or a PEM file. `out`
 * must hold AN_TLS_PIN_LEN bytes. */
int an_tls_pin_from_pem(const char *cert_pem, char out[AN_TLS_PIN_LEN], char *err,
                        size_t errlen);
int an_tls_pin_from_file(const char *cert_path, char out[AN_TLS_PIN_LEN], char *err,
                         size_t errlen);

/* The pin of a public key given as DER SubjectPublicKeyInfo. */
int an_tls_pin_from_spki(const uint8_t *der, size_t len, char out[AN_TLS_PIN_LEN]);

/* Checks that `pin` is well formed. */
int an_tls_pin_valid(const char *pin);

/* A connection's engine. The context must outlive it. */
int an_tls_new(an_tls_ctx_t *ctx, an_tls_t **out);
void an_tls_free(an_tls_t *t);

/* Hands ciphertext received from the network to the engine. */
int an_tls_feed(an_tls_t *t, const uint8_t *data, size_t len);

/* Advances the handshake. Returns 1 when it is complete, 0 when it needs more
 * input from the peer, or an error: AN_EPIN if the peer's key is not the
 * pinned one, AN_ETLS otherwise (details in an_tls_last_error). */
int an_tls_handshake(an_tls_t *t);
int an_tls_handshake_done(const an_tls_t *t);

/* Decrypts into buf. Returns the byte count (> 0), 0 when more ciphertext is
 * needed, UV_EOF when the peer sent close_notify, or AN_ETLS. */
long an_tls_read(an_tls_t *t, uint8_t *buf, size_t cap);

/* Encrypts all of `data` (handshake must be complete). 0 or AN_ETLS. */
int an_tls_write(an_tls_t *t, const uint8_t *data, size_t len);

/* Queues a close_notify alert. */
void an_tls_shutdown(an_tls_t *t);

/* Ciphertext waiting to be sent, and a way to take it out. */
size_t an_tls_pending(an_tls_t *t);
size_t an_tls_take(an_tls_t *t, uint8_t *buf, size_t cap);

/* The last OpenSSL error for this engine, for logs ("" if none). */
const char *an_tls_last_error(const an_tls_t *t);

#endif
