#include "common/net/tls.h"

#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "common/error.h"

struct an_tls_ctx {
  SSL_CTX *ssl_ctx;
  int is_server;
  unsigned char pin[32]; /* client: SHA-256 of the expected SubjectPublicKeyInfo */
};

struct an_tls {
  an_tls_ctx_t *ctx;
  SSL *ssl;
  BIO *rbio; /* network -> OpenSSL; owned by ssl */
  BIO *wbio; /* OpenSSL -> network; owned by ssl */
  int done;  /* handshake complete */
  int fatal; /* a fatal error happened: no shutdown alert may follow */
  char last_error[256];
};

/* Formats the OpenSSL error queue's first entry into err and clears it. */
static void an_tls_format_error(const char *what, char *err, size_t errlen) {
  unsigned long e = ERR_get_error();
  char detail[200] = "";
  if (e)
    ERR_error_string_n(e, detail, sizeof detail);
  ERR_clear_error();
  if (err && errlen)
    snprintf(err, errlen, "%s%s%s", what, detail[0] ? ": " : "", detail);
}

static int an_spki_sha256(X509 *cert, unsigned char out[32]) {
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(X509_get0_pubkey(cert), &der);
  int ok = len > 0 && EVP_Digest(der, (size_t)len, out, NULL, EVP_sha256(), NULL) == 1;
  OPENSSL_free(der);
  return ok ? 0 : AN_ETLS;
}

static void an_pin_format(const unsigned char digest[32], char out[AN_TLS_PIN_LEN]) {
  memcpy(out, "sha256//", 8);
  EVP_EncodeBlock((unsigned char *)out + 8, digest, 32); /* 44 chars + NUL */
}

int an_tls_pin_from_spki(const uint8_t *der, size_t len, char out[AN_TLS_PIN_LEN]) {
  unsigned char digest[32];
  if (!der || len == 0 || EVP_Digest(der, len, digest, NULL, EVP_sha256(), NULL) != 1)
    return AN_ETLS;
  an_pin_format(digest, out);
  return 0;
}

int an_tls_pin_valid(const char *pin) {
  unsigned char raw[33];
  size_t n = strlen(pin);
  if (n != AN_TLS_PIN_LEN - 1 || strncmp(pin, "sha256//", 8) != 0)
    return 0;
  /* 44 base64 chars decode to 33 bytes, the last being padding. */
  return EVP_DecodeBlock(raw, (const unsigned char *)pin + 8, 44) == 33 && pin[51] == '=';
}

/* Replaces chain verification: the only question is whether the leaf's key
 * is the pinned one. Runs during the handshake, so a mismatch aborts it
 * before any application data moves. */
static int an_tls_verify_pin(X509_STORE_CTX *store, void *arg) {
  an_tls_ctx_t *ctx = arg;
  X509 *leaf = X509_STORE_CTX_get0_cert(store);
  unsigned char digest[32];

  if (!leaf || an_spki_sha256(leaf, digest) != 0 || CRYPTO_memcmp(digest, ctx->pin, 32) != 0) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
  }
  return 1;
}

static int an_tls_ctx_alloc(int is_server, an_tls_ctx_t **out, char *err, size_t errlen) {
  an_tls_ctx_t *ctx = calloc(1, sizeof *ctx);
  if (!ctx) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  ctx->is_server = is_server;
  ctx->ssl_ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
  if (!ctx->ssl_ctx) {
    an_tls_format_error("cannot create TLS context", err, errlen);
    free(ctx);
    return AN_ETLS;
  }
  SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_3_VERSION);
  /* Idle connections (long-polling workers) should not hold 2 x 16 KiB. */
  SSL_CTX_set_mode(ctx->ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
  /* No resumption: every connection authenticates afresh, and clients need
   * not handle post-handshake tickets. */
  SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_NO_TICKET);
  if (is_server)
    SSL_CTX_set_num_tickets(ctx->ssl_ctx, 0);
  *out = ctx;
  return 0;
}

static int an_tls_server_finish(an_tls_ctx_t *ctx, an_tls_ctx_t **out, char *err,
                                size_t errlen) {
  if (SSL_CTX_check_private_key(ctx->ssl_ctx) != 1) {
    an_tls_format_error("private key does not match the certificate", err, errlen);
    an_tls_ctx_free(ctx);
    return AN_ETLS;
  }
  *out = ctx;
  return 0;
}

int an_tls_server_ctx_new(const char *cert_path, const char *key_path, an_tls_ctx_t **out,
                          char *err, size_t errlen) {
  an_tls_ctx_t *ctx = NULL;
  char what[512];
  int rc = an_tls_ctx_alloc(1, &ctx, err, errlen);
  if (rc)
    return rc;
  if (SSL_CTX_use_certificate_chain_file(ctx->ssl_ctx, cert_path) != 1) {
    snprintf(what, sizeof what, "cannot load certificate %s", cert_path);
    goto fail;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx->ssl_ctx, key_path, SSL_FILETYPE_PEM) != 1) {
    snprintf(what, sizeof what, "cannot load private key %s", key_path);
    goto fail;
  }
  return an_tls_server_finish(ctx, out, err, errlen);
fail:
  an_tls_format_error(what, err, errlen);
  an_tls_ctx_free(ctx);
  return AN_ETLS;
}

int an_tls_server_ctx_new_pem(const char *cert_pem, const char *key_pem, an_tls_ctx_t **out,
                              char *err, size_t errlen) {
  an_tls_ctx_t *ctx = NULL;
  BIO *bio = NULL;
  X509 *cert = NULL;
  EVP_PKEY *key = NULL;
  int rc = an_tls_ctx_alloc(1, &ctx, err, errlen);
  if (rc)
    return rc;
  bio = BIO_new_mem_buf(cert_pem, -1);
  cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  bio = BIO_new_mem_buf(key_pem, -1);
  key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  if (!cert || !key || SSL_CTX_use_certificate(ctx->ssl_ctx, cert) != 1 ||
      SSL_CTX_use_PrivateKey(ctx->ssl_ctx, key) != 1) {
    an_tls_format_error("cannot load certificate or key", err, errlen);
    X509_free(cert);
    EVP_PKEY_free(key);
    an_tls_ctx_free(ctx);
    return AN_ETLS;
  }
  X509_free(cert); /* the context holds its own references */
  EVP_PKEY_free(key);
  return an_tls_server_finish(ctx, out, err, errlen);
}

int an_tls_client_ctx_new(const char *pin, an_tls_ctx_t **out, char *err, size_t errlen) {
  an_tls_ctx_t *ctx = NULL;
  unsigned char raw[33];
  int rc;

  if (!pin || !an_tls_pin_valid(pin)) {
    snprintf(err, errlen, "malformed broker pin '%s' (expected sha256// and 44 base64 characters)",
             pin ? pin : "");
    return AN_ECONFIG;
  }
  if ((rc = an_tls_ctx_alloc(0, &ctx, err, errlen)) != 0)
    return rc;
  EVP_DecodeBlock(raw, (const unsigned char *)pin + 8, 44);
  memcpy(ctx->pin, raw, 32);
  SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_cert_verify_callback(ctx->ssl_ctx, an_tls_verify_pin, ctx);
  *out = ctx;
  return 0;
}

void an_tls_ctx_free(an_tls_ctx_t *ctx) {
  if (!ctx)
    return;
  SSL_CTX_free(ctx->ssl_ctx);
  free(ctx);
}

static char *an_bio_to_string(BIO *bio) {
  char *data;
  long n = BIO_get_mem_data(bio, &data);
  char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s) {
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
  }
  return s;
}

int an_tls_generate_identity(const char *common_name, int days, char **cert_pem, char **key_pem,
                             char *err, size_t errlen) {
  EVP_PKEY *key = NULL;
  X509 *cert = NULL;
  X509_NAME *name;
  BIO *cbio = NULL, *kbio = NULL;
  unsigned char serial[16];
  BIGNUM *bn = NULL;
  int rc = AN_ETLS;

  *cert_pem = *key_pem = NULL;
  key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  cert = X509_new();
  if (!key || !cert || RAND_bytes(serial, sizeof serial) != 1)
    goto fail;
  serial[0] &= 0x7f; /* a positive serial */
  bn = BN_bin2bn(serial, sizeof serial, NULL);
  if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) ||
      X509_set_version(cert, X509_VERSION_3) != 1 ||
      !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
      !X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400L) ||
      X509_set_pubkey(cert, key) != 1)
    goto fail;
  name = X509_get_subject_name(cert);
  if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)common_name,
                                 -1, -1, 0) != 1 ||
      X509_set_issuer_name(cert, name) != 1 || X509_sign(cert, key, EVP_sha256()) <= 0)
    goto fail;
  cbio = BIO_new(BIO_s_mem());
  kbio = BIO_new(BIO_s_mem());
  if (!cbio || !kbio || PEM_write_bio_X509(cbio, cert) != 1 ||
      PEM_write_bio_PrivateKey(kbio, key, NULL, NULL, 0, NULL, NULL) != 1)
    goto fail;
  *cert_pem = an_bio_to_string(cbio);
  *key_pem = an_bio_to_string(kbio);
  if (!*cert_pem || !*key_pem) {
    free(*cert_pem);
    free(*key_pem);
    *cert_pem = *key_pem = NULL;
    goto fail;
  }
  rc = 0;
fail:
  if (rc)
    an_tls_format_error("cannot generate a key and certificate", err, errlen);
  BN_free(bn);
  BIO_free(cbio);
  BIO_free(kbio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return rc;
}

static int an_tls_pin_from_bio(BIO *bio, const char *what, char out[AN_TLS_PIN_LEN], char *err,
                               size_t errlen) {
  unsigned char digest[32];
  X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  int rc = 0;
  if (!cert || an_spki_sha256(cert, digest) != 0) {
    char msg[300];
    snprintf(msg, sizeof msg, "no PEM certificate in %s", what);
    an_tls_format_error(msg, err, errlen);
    rc = AN_ETLS;
  } else {
    an_pin_format(digest, out);
  }
  X509_free(cert);
  BIO_free(bio);
  return rc;
}

int an_tls_pin_from_pem(const char *cert_pem, char out[AN_TLS_PIN_LEN], char *err,
                        size_t errlen) {
  return an_tls_pin_from_bio(BIO_new_mem_buf(cert_pem, -1), "the given text", out, err, errlen);
}

int an_tls_pin_from_file(const char *cert_path, char out[AN_TLS_PIN_LEN], char *err,
                         size_t errlen) {
  return an_tls_pin_from_bio(BIO_new_file(cert_path, "r"), cert_path, out, err, errlen);
}

int an_tls_new(an_tls_ctx_t *ctx, an_tls_t **out) {
  an_tls_t *t = calloc(1, sizeof *t);
  if (!t)
    return UV_ENOMEM;
  t->ctx = ctx;
  t->ssl = SSL_new(ctx->ssl_ctx);
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    free(t);
    ERR_clear_error();
    return UV_ENOMEM;
  }
  /* An empty memory BIO means "no data yet", not end of stream. */
  BIO_set_mem_eof_return(t->rbio, -1);
  BIO_set_mem_eof_return(t->wbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio); /* ssl owns both BIOs now */
  if (ctx->is_server)
    SSL_set_accept_state(t->ssl);
  else
    SSL_set_connect_state(t->ssl);
  *out = t;
  return 0;
}

void an_tls_free(an_tls_t *t) {
  if (!t)
    return;
  SSL_free(t->ssl);
  free(t);
}

int an_tls_feed(an_tls_t *t, const uint8_t *data, size_t len) {
  size_t written;
  if (len == 0)
    return 0;
  if (BIO_write_ex(t->rbio, data, len, &written) != 1 || written != len) {
    ERR_clear_error();
    return UV_ENOMEM;
  }
  return 0;
}

/* Maps an SSL_get_error result to our codes, recording the detail. */
static long an_tls_fail(an_tls_t *t, int ret, const char *op) {
  int e = SSL_get_error(t->ssl, ret);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
    return 0;
  if (e == SSL_ERROR_ZERO_RETURN)
    return UV_EOF;
  t->fatal = 1;
  if (SSL_get_verify_result(t->ssl) == X509_V_ERR_APPLICATION_VERIFICATION) {
    snprintf(t->last_error, sizeof t->last_error, "%s: server key does not match the pin", op);
    ERR_clear_error();
    return AN_EPIN;
  }
  an_tls_format_error(op, t->last_error, sizeof t->last_error);
  return AN_ETLS;
}

int an_tls_handshake(an_tls_t *t) {
  int ret;
  if (t->done)
    return 1;
  ERR_clear_error(); /* the queue is per thread, shared by every connection */
  ret = SSL_do_handshake(t->ssl);
  if (ret == 1) {
    t->done = 1;
    return 1;
  }
  long rc = an_tls_fail(t, ret, "TLS handshake failed");
  if (rc == UV_EOF) {
    snprintf(t->last_error, sizeof t->last_error, "peer closed during the TLS handshake");
    return AN_ETLS;
  }
  return (int)rc;
}

int an_tls_handshake_done(const an_tls_t *t) { return t->done; }

long an_tls_read(an_tls_t *t, uint8_t *buf, size_t cap) {
  size_t n = 0;
  int ret;
  ERR_clear_error();
  ret = SSL_read_ex(t->ssl, buf, cap, &n);
  if (ret == 1)
    return (long)n;
  return an_tls_fail(t, ret, "TLS read failed");
}

int an_tls_write(an_tls_t *t, const uint8_t *data, size_t len) {
  size_t n = 0;
  if (!t->done)
    return AN_ETLS;
  if (len == 0)
    return 0;
  ERR_clear_error();
  /* With a memory BIO below, a write after the handshake completes whole. */
  if (SSL_write_ex(t->ssl, data, len, &n) != 1 || n != len) {
    an_tls_format_error("TLS write failed", t->last_error, sizeof t->last_error);
    return AN_ETLS;
  }
  return 0;
}

void an_tls_shutdown(an_tls_t *t) {
  if (t->done && !t->fatal) /* OpenSSL forbids SSL_shutdown after a fatal error */
    SSL_shutdown(t->ssl);
  ERR_clear_error();
}

size_t an_tls_pending(an_tls_t *t) { return BIO_ctrl_pending(t->wbio); }

size_t an_tls_take(an_tls_t *t, uint8_t *buf, size_t cap) {
  size_t n = 0;
  if (BIO_read_ex(t->wbio, buf, cap, &n) != 1)
    return 0;
  return n;
}

const char *an_tls_last_error(const an_tls_t *t) { return t->last_error; }
