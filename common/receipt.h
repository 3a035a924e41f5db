/* Payment receipts: what the broker paid a worker for a task, signed with
 * the broker's TLS key so the worker can keep it and show it to anyone.
 *
 * The signed message is this text, byte for byte (decimal numbers, one
 * field a line, "\n" line ends):
 *
 *   archnet receipt v1
 *   transfer <ledger transfer id>
 *   task <task id>
 *   worker <worker node id>
 *   amount <credits paid to the worker>
 *   fee <credits kept by the broker>
 *   time <unix seconds of the payment>
 *
 * signed with SHA-256 and the broker's private key (ECDSA P-256 for keys
 * made by `archnet-broker init`; DER signature). The receipt carries the
 * broker's public key (DER SubjectPublicKeyInfo); it is trusted when its
 * SHA-256 equals the broker's pin, which every enrolled node already holds,
 * so checking needs `openssl` and the pin, nothing of this project:
 *
 *   openssl dgst -sha256 -verify broker-key.pem -signature sig.der msg.txt
 *
 * Kept receipts are JSON files: the fields by name, plus "signature" and
 * "broker_key" in base64 and the "pin" it was checked against. */
#ifndef AN_RECEIPT_H
#define AN_RECEIPT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "proto/archnet.pb-c.h"

#define AN_RECEIPT_MAX_SIG 1024 /* room for an RSA-4096 signature too */
#define AN_RECEIPT_MAX_KEY 1024
#define AN_RECEIPT_MAX_MESSAGE 256

typedef struct an_receipt_doc {
  uint64_t transfer_id, task_id, worker_id;
  int64_t amount, fee, time;
  uint8_t signature[AN_RECEIPT_MAX_SIG];
  size_t signature_len;
  uint8_t broker_key[AN_RECEIPT_MAX_KEY]; /* DER SubjectPublicKeyInfo */
  size_t broker_key_len;
} an_receipt_doc_t;

/* The text above for `r`'s fields into buf; its length, or 0 if it does
 * not fit. */
size_t an_receipt_message(const an_receipt_doc_t *r, char *buf, size_t cap);

/* The receipt a broker sent (its fields, signature and key) as a document;
 * AN_EFORMAT if the signature or key is longer than any this reads. */
int an_receipt_from_wire(const Archnet__Receipt *wire, an_receipt_doc_t *r);

/* Fills r->signature and r->broker_key with `key` (a private key; borrowed).
 * 0, or AN_ETLS with OpenSSL's reason in err. */
int an_receipt_sign(an_receipt_doc_t *r, EVP_PKEY *key, char *err, size_t errlen);

/* 0 if r->broker_key is the key `pin` names and r->signature is its
 * signature over r's fields; AN_EPIN (another key) or AN_EFORMAT (a bad
 * or missing signature, or fields changed since signing), with a sentence
 * in err. */
int an_receipt_verify(const an_receipt_doc_t *r, const char *pin, char *err, size_t errlen);

/* Writes the receipt as JSON (mode 0600, atomically) with `pin` noted. */
int an_receipt_save(const char *path, const an_receipt_doc_t *r, const char *pin, char *err,
                    size_t errlen);
/* Reads a saved receipt; *pin (AN_TLS_PIN_LEN bytes) gets its noted pin.
 * AN_EFORMAT with the reason for a file that is not one. */
int an_receipt_load(const char *path, an_receipt_doc_t *r, char *pin, char *err, size_t errlen);

#endif
