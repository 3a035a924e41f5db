/* Payment receipts: signed by us and checked by the openssl command-line
 * tool, signed by the openssl tool and checked by us, and every way a
 * receipt can be wrong (a changed field, another key, a damaged file). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "common/error.h"
#include "common/net/tls.h"
#include "common/receipt.h"
#include "tests/support/testutil.h"

typedef struct keyed {
  char *dir;
  char key_path[512], pub_path[512], pin[AN_TLS_PIN_LEN];
  EVP_PKEY *key;
} keyed_t;

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  ck_assert_uint_eq(fwrite(data, 1, n, f), n);
  fclose(f);
}

/* A broker identity as `archnet-broker init` makes it, on disk. */
static void keyed_init(keyed_t *k) {
  char *cert = NULL, *key = NULL, err[256], path[600];
  memset(k, 0, sizeof *k);
  k->dir = an_test_tmpdir();
  ck_assert_int_eq(an_tls_generate_identity("receipts", 1, &cert, &key, err, sizeof err), 0);
  ck_assert_int_eq(an_tls_pin_from_pem(cert, k->pin, err, sizeof err), 0);
  snprintf(k->key_path, sizeof k->key_path, "%s/key.pem", k->dir);
  write_file(k->key_path, key, strlen(key));
  snprintf(path, sizeof path, "%s/cert.pem", k->dir);
  write_file(path, cert, strlen(cert));
  snprintf(k->pub_path, sizeof k->pub_path, "%s/pub.pem", k->dir);
  char *argv[] = {"/usr/bin/openssl", "x509", "-in", path, "-pubkey", "-noout", "-out", k->pub_path, NULL};
  ck_assert_int_eq(an_test_run(argv, NULL, NULL), 0);
  BIO *bio = BIO_new_mem_buf(key, -1);
  k->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
  BIO_free(bio);
  ck_assert_ptr_nonnull(k->key);
  free(cert);
  free(key);
}

static void keyed_done(keyed_t *k) {
  EVP_PKEY_free(k->key);
  an_test_rmtree(k->dir);
  free(k->dir);
}

static an_receipt_doc_t sample(void) {
  return (an_receipt_doc_t){.transfer_id = 41, .task_id = 7, .worker_id = 3, .amount = 900,
                            .fee = 100, .time = 1764000000};
}

START_TEST(test_openssl_verifies_our_signature) {
  keyed_t k;
  char err[512], msg_path[600], sig_path[600], msg[AN_RECEIPT_MAX_MESSAGE], *out = NULL;
  keyed_init(&k);
  an_receipt_doc_t r = sample();
  ck_assert_int_eq(an_receipt_sign(&r, k.key, err, sizeof err), 0);
  size_t n = an_receipt_message(&r, msg, sizeof msg);
  ck_assert_uint_gt(n, 0);
  /* The message is the documented text, field by field. */
  ck_assert_str_eq(msg, "archnet receipt v1\ntransfer 41\ntask 7\nworker 3\namount 900\n"
                        "fee 100\ntime 1764000000\n");
  snprintf(msg_path, sizeof msg_path, "%s/msg.txt", k.dir);
  snprintf(sig_path, sizeof sig_path, "%s/sig.der", k.dir);
  write_file(msg_path, msg, n);
  write_file(sig_path, r.signature, r.signature_len);
  char *argv[] = {"/usr/bin/openssl", "dgst", "-sha256", "-verify", k.pub_path, "-signature", sig_path,
                  msg_path, NULL};
  ck_assert_int_eq(an_test_run(argv, &out, NULL), 0);
  ck_assert_ptr_nonnull(strstr(out, "Verified OK"));
  free(out);
  /* The key in the receipt is the one the pin names. */
  char pin[AN_TLS_PIN_LEN];
  ck_assert_int_eq(an_tls_pin_from_spki(r.broker_key, r.broker_key_len, pin), 0);
  ck_assert_str_eq(pin, k.pin);
  ck_assert_int_eq(an_receipt_verify(&r, k.pin, err, sizeof err), 0);
  keyed_done(&k);
}
END_TEST

START_TEST(test_we_verify_openssls_signature) {
  keyed_t k;
  char err[512], msg_path[600], sig_path[600], msg[AN_RECEIPT_MAX_MESSAGE];
  keyed_init(&k);
  an_receipt_doc_t r = sample();
  ck_assert_int_eq(an_receipt_sign(&r, k.key, err, sizeof err), 0); /* for broker_key */
  size_t n = an_receipt_message(&r, msg, sizeof msg);
  snprintf(msg_path, sizeof msg_path, "%s/msg.txt", k.dir);
  snprintf(sig_path, sizeof sig_path, "%s/sig.der", k.dir);
  write_file(msg_path, msg, n);
  char *argv[] = {"/usr/bin/openssl", "dgst", "-sha256", "-sign", k.key_path, "-out", sig_path, msg_path,
                  NULL};
  ck_assert_int_eq(an_test_run(argv, NULL, NULL), 0);
  FILE *f = fopen(sig_path, "rb");
  ck_assert_ptr_nonnull(f);
  r.signature_len = fread(r.signature, 1, sizeof r.signature, f);
  fclose(f);
  ck_assert_uint_gt(r.signature_len, 0);
  ck_assert_int_eq(an_receipt_verify(&r, k.pin, err, sizeof err), 0);
  keyed_done(&k);
}
END_TEST

START_TEST(test_changed_or_foreign_receipts_refused) {
  keyed_t k, other;
  char err[512];
  keyed_init(&k);
  keyed_init(&other);
  an_receipt_doc_t r = sample();
  ck_assert_int_eq(an_receipt_sign(&r, k.key, err, sizeof err), 0);
  /* Each field is covered by the signature. */
  for (int field = 0; field < 6; field++) {
    an_receipt_doc_t t = r;
    switch (field) {
    case 0: t.transfer_id++; break;
    case 1: t.task_id++; break;
    case 2: t.worker_id++; break;
    case 3: t.amount++; break;
    case 4: t.fee--; break;
    default: t.time++; break;
    }
    ck_assert_int_eq(an_receipt_verify(&t, k.pin, err, sizeof err), AN_EFORMAT);
  }
  /* One flipped bit of the signature. */
  an_receipt_doc_t t = r;
  t.signature[t.signature_len / 2] ^= 1;
  ck_assert_int_eq(an_receipt_verify(&t, k.pin, err, sizeof err), AN_EFORMAT);
  /* Signed by another key: even a valid signature is not the broker's. */
  t = sample();
  ck_assert_int_eq(an_receipt_sign(&t, other.key, err, sizeof err), 0);
  ck_assert_int_eq(an_receipt_verify(&t, other.pin, err, sizeof err), 0);
  ck_assert_int_eq(an_receipt_verify(&t, k.pin, err, sizeof err), AN_EPIN);
  /* Our signature presented with the other broker's key. */
  an_receipt_doc_t theirs = sample();
  ck_assert_int_eq(an_receipt_sign(&theirs, other.key, err, sizeof err), 0);
  t = r;
  memcpy(t.broker_key, theirs.broker_key, theirs.broker_key_len);
  t.broker_key_len = theirs.broker_key_len;
  ck_assert_int_eq(an_receipt_verify(&t, other.pin, err, sizeof err), AN_EFORMAT);
  /* Unsigned (a broker of before). */
  t = sample();
  ck_assert_int_eq(an_receipt_verify(&t, k.pin, err, sizeof err), AN_EFORMAT);
  keyed_done(&k);
  keyed_done(&other);
}
END_TEST

START_TEST(test_saved_receipt_round_trip_and_damage) {
  keyed_t k;
  char err[512], path[600], pin[AN_TLS_PIN_LEN];
  keyed_init(&k);
  an_receipt_doc_t r = sample(), back;
  ck_assert_int_eq(an_receipt_sign(&r, k.key, err, sizeof err), 0);
  snprintf(path, sizeof path, "%s/receipt.json", k.dir);
  ck_assert_int_eq(an_receipt_save(path, &r, k.pin, err, sizeof err), 0);
  ck_assert_int_eq(an_receipt_load(path, &back, pin, err, sizeof err), 0);
  ck_assert_str_eq(pin, k.pin);
  ck_assert_int_eq(back.amount, 900);
  ck_assert_uint_eq(back.signature_len, r.signature_len);
  ck_assert_mem_eq(back.signature, r.signature, r.signature_len);
  ck_assert_uint_eq(back.broker_key_len, r.broker_key_len);
  ck_assert_int_eq(an_receipt_verify(&back, pin, err, sizeof err), 0);
  /* Damaged files: clear errors, never a crash. */
  static const char *const bad[] = {
      "", "{", "[]", "{\"amount\": 1}",
      "{\"transfer_id\":1,\"task_id\":1,\"worker_id\":1,\"amount\":1,\"fee\":0,\"time\":1,"
      "\"signature\":\"***\",\"broker_key\":\"AAAA\",\"pin\":\"x\"}",
      "{\"transfer_id\":-1,\"task_id\":1,\"worker_id\":1,\"amount\":1,\"fee\":0,\"time\":1,"
      "\"signature\":\"AAAA\",\"broker_key\":\"AAAA\",\"pin\":\"x\"}",
      "{\"transfer_id\":1,\"task_id\":1,\"worker_id\":1,\"amount\":1,\"fee\":0,\"time\":1,"
      "\"signature\":\"AAAA\",\"broker_key\":\"AAAA\",\"pin\":\"x\"}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    write_file(path, bad[i], strlen(bad[i]));
    int rc = an_receipt_load(path, &back, pin, err, sizeof err);
    if (i + 1 < sizeof bad / sizeof bad[0]) {
      ck_assert_msg(rc == AN_EFORMAT, "case %zu loaded", i);
    } else {
      /* Well formed, but the key is three zero bytes: not the broker's. */
      ck_assert_int_eq(rc, 0);
      ck_assert_int_ne(an_receipt_verify(&back, k.pin, err, sizeof err), 0);
    }
  }
  keyed_done(&k);
}
END_TEST

static Suite *receipt_suite(void) {
  Suite *s = suite_create("receipt");
  TCase *tc = tcase_create("receipt");
  tcase_add_test(tc, test_openssl_verifies_our_signature);
  tcase_add_test(tc, test_we_verify_openssls_signature);
  tcase_add_test(tc, test_changed_or_foreign_receipts_refused);
  tcase_add_test(tc, test_saved_receipt_round_trip_and_damage);
  tcase_set_timeout(tc, 60);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(receipt_suite)
