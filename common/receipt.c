/* Signed payment receipts; the format is in receipt.h. */
#include "common/receipt.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <uv.h>

#include "common/error.h"
#include "common/net/tls.h"
#include "common/small_file.h"

size_t an_receipt_message(const an_receipt_doc_t *r, char *buf, size_t cap) {
  int n = snprintf(buf, cap,
                   "archnet receipt v1\ntransfer %" PRIu64 "\ntask %" PRIu64 "\nworker %" PRIu64
                   "\namount %" PRId64 "\nfee %" PRId64 "\ntime %" PRId64 "\n",
                   r->transfer_id, r->task_id, r->worker_id, r->amount, r->fee, r->time);
  return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int an_receipt_from_wire(const Archnet__Receipt *wire, an_receipt_doc_t *r) {
  memset(r, 0, sizeof *r);
  if (wire->signature.len > sizeof r->signature || wire->broker_key.len > sizeof r->broker_key)
    return AN_EFORMAT;
  r->transfer_id = wire->transfer_id;
  r->task_id = wire->task_id;
  r->worker_id = wire->worker_id;
  r->amount = wire->amount;
  r->fee = wire->fee;
  r->time = wire->time;
  if (wire->signature.len)
    memcpy(r->signature, wire->signature.data, wire->signature.len);
  if (wire->broker_key.len)
    memcpy(r->broker_key, wire->broker_key.data, wire->broker_key.len);
  r->signature_len = wire->signature.len;
  r->broker_key_len = wire->broker_key.len;
  return 0;
}

static int an_receipt_ssl_error(const char *what, char *err, size_t errlen) {
  char detail[256] = "";
  unsigned long e = ERR_peek_last_error();
  if (e)
    ERR_error_string_n(e, detail, sizeof detail);
  ERR_clear_error();
  snprintf(err, errlen, "%s%s%s", what, detail[0] ? ": " : "", detail);
  return AN_ETLS;
}

/* Ed25519 and Ed448 sign the message itself; other keys a SHA-256 of it. */
static const EVP_MD *an_receipt_md(EVP_PKEY *key) {
  return EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448") ? NULL : EVP_sha256();
}

int an_receipt_sign(an_receipt_doc_t *r, EVP_PKEY *key, char *err, size_t errlen) {
  char msg[AN_RECEIPT_MAX_MESSAGE];
  size_t len = an_receipt_message(r, msg, sizeof msg), siglen = sizeof r->signature;
  unsigned char *der = NULL;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int rc = AN_ETLS;
  int keylen = i2d_PUBKEY(key, &der);
  if (!md || len == 0 || keylen <= 0 || (size_t)keylen > sizeof r->broker_key) {
    rc = an_receipt_ssl_error("cannot encode the broker's public key", err, errlen);
    goto done;
  }
  if (EVP_DigestSignInit(md, NULL, an_receipt_md(key), NULL, key) != 1 ||
      EVP_DigestSign(md, (unsigned char *)r->signature, &siglen, (const unsigned char *)msg,
                     len) != 1) {
    rc = an_receipt_ssl_error("cannot sign the receipt", err, errlen);
    goto done;
  }
  r->signature_len = siglen;
  memcpy(r->broker_key, der, (size_t)keylen);
  r->broker_key_len = (size_t)keylen;
  rc = 0;
done:
  OPENSSL_free(der);
  EVP_MD_CTX_free(md);
  return rc;
}

int an_receipt_verify(const an_receipt_doc_t *r, const char *pin, char *err, size_t errlen) {
  char msg[AN_RECEIPT_MAX_MESSAGE], have[AN_TLS_PIN_LEN] = "an unreadable key";
  size_t len = an_receipt_message(r, msg, sizeof msg);
  const unsigned char *p = r->broker_key;
  EVP_PKEY *key = NULL;
  EVP_MD_CTX *md = NULL;
  int rc = AN_EFORMAT;
  if (r->signature_len == 0 || r->broker_key_len == 0) {
    snprintf(err, errlen, "the receipt is not signed");
    return AN_EFORMAT;
  }
  if (an_tls_pin_from_spki(r->broker_key, r->broker_key_len, have) != 0 ||
      !pin || strcmp(have, pin) != 0) {
    snprintf(err, errlen, "the receipt was signed by the key %s, not by the broker's (%s)",
             have, pin ? pin : "no pin");
    return AN_EPIN;
  }
  if (!(key = d2i_PUBKEY(NULL, &p, (long)r->broker_key_len)) || !(md = EVP_MD_CTX_new()) ||
      EVP_DigestVerifyInit(md, NULL, an_receipt_md(key), NULL, key) != 1) {
    an_receipt_ssl_error("cannot read the broker's key in the receipt", err, errlen);
    rc = AN_EFORMAT;
    goto done;
  }
  if (len == 0 || EVP_DigestVerify(md, r->signature, r->signature_len,
                                   (const unsigned char *)msg, len) != 1) {
    ERR_clear_error();
    snprintf(err, errlen, "the signature does not match the receipt's fields");
    rc = AN_EFORMAT;
    goto done;
  }
  rc = 0;
done:
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(key);
  return rc;
}

/* base64 of n bytes into a heap string (NULL on failure). */
static char *an_base64(const uint8_t *data, size_t n) {
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (out)
    EVP_EncodeBlock((unsigned char *)out, data, (int)n);
  return out;
}

/* Decodes base64 into dst (cap bytes); its length, or 0 on error. */
static size_t an_unbase64(const char *text, uint8_t *dst, size_t cap) {
  size_t n = text ? strlen(text) : 0;
  uint8_t tmp[4 * AN_RECEIPT_MAX_SIG / 3 + 8];
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > sizeof tmp)
    return 0;
  int got = EVP_DecodeBlock(tmp, (const unsigned char *)text, (int)n);
  if (got < 0)
    return 0;
  size_t len = (size_t)got;
  /* EVP_DecodeBlock counts the padding as zero bytes. */
  if (n >= 1 && text[n - 1] == '=')
    len--;
  if (n >= 2 && text[n - 2] == '=')
    len--;
  if (len > cap)
    return 0;
  memcpy(dst, tmp, len);
  return len;
}

int an_receipt_save(const char *path, const an_receipt_doc_t *r, const char *pin, char *err,
                    size_t errlen) {
  char *sig = an_base64(r->signature, r->signature_len);
  char *key = an_base64(r->broker_key, r->broker_key_len);
  json_t *j = NULL;
  int rc = UV_ENOMEM;
  if (sig && key)
    j = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:s}", "transfer_id",
                  (json_int_t)r->transfer_id, "task_id", (json_int_t)r->task_id, "worker_id",
                  (json_int_t)r->worker_id, "amount", (json_int_t)r->amount, "fee",
                  (json_int_t)r->fee, "time", (json_int_t)r->time, "signature", sig,
                  "broker_key", key, "pin", pin ? pin : "");
  if (j)
    rc = an_json_write_file(path, j, 0600, err, errlen);
  else
    snprintf(err, errlen, "out of memory");
  json_decref(j);
  free(sig);
  free(key);
  return rc;
}

int an_receipt_load(const char *path, an_receipt_doc_t *r, char *pin, char *err, size_t errlen) {
  json_error_t je;
  json_int_t v[6];
  const char *sig = NULL, *key = NULL, *p = NULL;
  int rc = AN_EFORMAT;
  json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  memset(r, 0, sizeof *r);
  if (!j) {
    snprintf(err, errlen, "%s: %s", path, je.text);
    return AN_EFORMAT;
  }
  if (json_unpack(j, "{s:I, s:I, s:I, s:I, s:I, s:I, s:s, s:s, s:s}", "transfer_id", &v[0],
                  "task_id", &v[1], "worker_id", &v[2], "amount", &v[3], "fee", &v[4], "time",
                  &v[5], "signature", &sig, "broker_key", &key, "pin", &p) != 0 ||
      v[0] < 0 || v[1] < 0 || v[2] < 0) {
    snprintf(err, errlen, "%s: not a receipt (fields missing or of the wrong type)", path);
    goto done;
  }
  r->transfer_id = (uint64_t)v[0];
  r->task_id = (uint64_t)v[1];
  r->worker_id = (uint64_t)v[2];
  r->amount = v[3];
  r->fee = v[4];
  r->time = v[5];
  r->signature_len = an_unbase64(sig, r->signature, sizeof r->signature);
  r->broker_key_len = an_unbase64(key, r->broker_key, sizeof r->broker_key);
  if (!r->signature_len || !r->broker_key_len || strlen(p) >= AN_TLS_PIN_LEN) {
    snprintf(err, errlen, "%s: the signature, key or pin is malformed", path);
    goto done;
  }
  snprintf(pin, AN_TLS_PIN_LEN, "%s", p);
  rc = 0;
done:
  json_decref(j);
  return rc;
}
