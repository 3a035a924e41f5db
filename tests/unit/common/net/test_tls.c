/* Framed TLS connections, client and server in one loop: handshake, many
 * frames each way, large frames across many records, a peer closing
 * mid-frame, a wrong pin, oversize frames, and non-TLS peers. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/error.h"
#include "common/net/conn.h"
#include "common/net/frame.h"
#include "common/net/tls.h"
#include "tests/support/testutil.h"

typedef struct peer {
  an_conn_t *conn;
  int ready, closed, close_status, bad_input;
  size_t received;   /* frames received */
  int mismatches;
  struct harness *h;
} peer_t;

typedef enum mode {
  MODE_MANY_FRAMES,
  MODE_LARGE_FRAMES,
  MODE_CLOSE_MID_FRAME,
  MODE_WRONG_PIN,
  MODE_TOO_BIG,
  MODE_RAW_SILENT,
  MODE_RAW_GARBAGE,
  MODE_HOLD_RELEASE, /* the server holds, writes, releases after a while */
  MODE_HOLD_CLOSE,   /* ... and closes while held: the close waits */
  MODE_HOLD_DISCARD, /* ... and discards: nothing reaches the client */
} scenario_t;

typedef struct harness {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t watchdog;
  uv_tcp_t raw;              /* plain TCP client for the non-TLS modes */
  uv_connect_t raw_connect;
  uv_write_t raw_write;
  an_tls_ctx_t *server_tls, *client_tls;
  an_conn_params_t server_params;
  peer_t server, client;
  scenario_t mode;
  size_t n_frames;
  int finished;
  int watchdog_fired;
  uv_timer_t release;        /* the hold modes' release, 200 ms after the writes */
  int released;              /* set just before an_conn_release */
} harness_t;

#define N_MANY 10000
static const size_t large_sizes[] = {8u << 20, (20u << 20) + 3, 1, 70000};

/* The byte at position j of frame i, both directions alike. */
static uint8_t pattern(size_t i, size_t j) { return (uint8_t)((i * 131) ^ (j * 7) ^ (j >> 9)); }

static size_t frame_size(const harness_t *h, size_t i) {
  if (h->mode == MODE_LARGE_FRAMES)
    return large_sizes[i];
  return 8 + i % 200; /* a sequence number and a tail */
}

static void send_frames(peer_t *p) {
  harness_t *h = p->h;
  size_t cap = h->mode == MODE_LARGE_FRAMES ? (20u << 20) + 3 : 256;
  uint8_t *buf = malloc(cap);
  ck_assert_ptr_nonnull(buf);
  for (size_t i = 0; i < h->n_frames; i++) {
    size_t n = frame_size(h, i);
    for (size_t j = 0; j < n; j++)
      buf[j] = pattern(i, j);
    ck_assert_int_eq(an_conn_write_frame(p->conn, buf, n), 0);
  }
  free(buf);
}

static void finish(harness_t *h) {
  if (h->finished)
    return;
  h->finished = 1;
  uv_close((uv_handle_t *)&h->listener, NULL);
  uv_close((uv_handle_t *)&h->watchdog, NULL);
  if (h->mode == MODE_RAW_SILENT || h->mode == MODE_RAW_GARBAGE)
    uv_close((uv_handle_t *)&h->raw, NULL);
}

static int hold_mode(scenario_t m) {
  return m == MODE_HOLD_RELEASE || m == MODE_HOLD_CLOSE || m == MODE_HOLD_DISCARD;
}

static void on_release(uv_timer_t *t) {
  harness_t *h = t->data;
  uv_close((uv_handle_t *)&h->release, NULL);
  h->released = 1;
  an_conn_release(h->server.conn, h->mode == MODE_HOLD_DISCARD, AN_EDB);
}

static void on_ready(an_conn_t *c) {
  peer_t *p = an_conn_data(c);
  harness_t *h = p->h;
  p->ready = 1;
  if (hold_mode(h->mode)) {
    if (p != &h->server)
      return;
    ck_assert_int_eq(an_conn_hold(c), 1);
    ck_assert_int_eq(an_conn_hold(c), 0); /* already held: nothing more owed */
    send_frames(p);
    if (h->mode == MODE_HOLD_CLOSE)
      an_conn_close(c, 0);
    uv_timer_init(&h->loop, &h->release);
    h->release.data = h;
    uv_timer_start(&h->release, on_release, 200, 0);
  } else if (h->mode == MODE_MANY_FRAMES || h->mode == MODE_LARGE_FRAMES) {
    send_frames(p);
  } else if (h->mode == MODE_CLOSE_MID_FRAME && p == &h->client) {
    uint8_t partial[AN_FRAME_HEADER_SIZE + 10] = {0};
    an_frame_put_header(partial, 1000);
    ck_assert_int_eq(an_conn_write_raw(c, partial, sizeof partial), 0);
    an_conn_close(c, 0);
  } else if (h->mode == MODE_TOO_BIG && p == &h->client) {
    uint8_t big[2000] = {0};
    ck_assert_int_eq(an_conn_write_frame(c, big, sizeof big), 0);
  }
}

static int on_frame(an_conn_t *c, const uint8_t *payload, size_t len) {
  peer_t *p = an_conn_data(c);
  harness_t *h = p->h;
  size_t i = p->received++;
  if (hold_mode(h->mode) && !h->released)
    p->mismatches++; /* held output escaped before its release */
  if (i >= h->n_frames || len != frame_size(h, i)) {
    p->mismatches++;
    return 0;
  }
  for (size_t j = 0; j < len; j++) {
    if (payload[j] != pattern(i, j)) {
      p->mismatches++;
      break;
    }
  }
  /* The client ends the exchange once both directions are complete. */
  if (h->client.received == h->n_frames &&
      (hold_mode(h->mode) || h->server.received == h->n_frames))
    an_conn_close(h->client.conn, 0);
  return 0;
}

static void on_bad_input(an_conn_t *c, int status) {
  peer_t *p = an_conn_data(c);
  p->bad_input = status;
}

static void on_close(an_conn_t *c, int status) {
  peer_t *p = an_conn_data(c);
  harness_t *h = p->h;
  p->closed = 1;
  p->close_status = status;
  p->conn = NULL;
  if (p == &h->server && h->client.ready == 0 && h->client.conn)
    an_conn_close(h->client.conn, status); /* a client that never got going */
  int raw = h->mode == MODE_RAW_SILENT || h->mode == MODE_RAW_GARBAGE;
  if (h->server.closed && (raw || h->client.closed))
    finish(h);
}

static const an_conn_callbacks_t callbacks = {
    .on_ready = on_ready,
    .on_frame = on_frame,
    .on_close = on_close,
    .on_bad_input = on_bad_input,
};

static void on_connection(uv_stream_t *server, int status) {
  harness_t *h = server->data;
  ck_assert_int_eq(status, 0);
  ck_assert_ptr_null(h->server.conn);
  ck_assert_int_eq(an_conn_accept(server, h->server_tls, &h->server_params, &callbacks,
                                  &h->server, &h->server.conn),
                   0);
}

static void on_watchdog(uv_timer_t *t) {
  harness_t *h = t->data;
  h->watchdog_fired = 1;
  if (h->client.conn)
    an_conn_close(h->client.conn, UV_ETIMEDOUT);
  if (h->server.conn)
    an_conn_close(h->server.conn, UV_ETIMEDOUT);
  finish(h);
}

static void on_raw_written(uv_write_t *req, int status) { (void)req; (void)status; }

static void on_raw_connect(uv_connect_t *req, int status) {
  harness_t *h = req->data;
  static char junk[] = "GET / HTTP/1.1\r\nHost: broker\r\n\r\n";
  uv_buf_t buf = uv_buf_init(junk, sizeof junk - 1);
  ck_assert_int_eq(status, 0);
  if (h->mode == MODE_RAW_GARBAGE)
    ck_assert_int_eq(uv_write(&h->raw_write, (uv_stream_t *)&h->raw, &buf, 1, on_raw_written), 0);
}

static char *identity(char **key_pem) {
  char *cert_pem = NULL, err[256];
  ck_assert_int_eq(
      an_tls_generate_identity("test-broker", 1, &cert_pem, key_pem, err, sizeof err), 0);
  return cert_pem;
}

/* Runs one scenario to completion and returns the harness for checks. */
static harness_t *run(scenario_t mode, size_t n_frames, uint32_t server_max_frame,
                      int wrong_pin) {
  harness_t *h = calloc(1, sizeof *h);
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof bound;
  char *key = NULL, *cert, pin[AN_TLS_PIN_LEN], err[256];

  ck_assert_ptr_nonnull(h);
  h->mode = mode;
  h->n_frames = n_frames;
  h->server.h = h->client.h = h;
  h->server_params.max_frame = server_max_frame;
  /* Short where a silent or plaintext peer must be dropped; otherwise long
   * enough for a handshake on a loaded machine. */
  h->server_params.handshake_timeout_ms =
      mode == MODE_RAW_SILENT || mode == MODE_RAW_GARBAGE ? 300 : 10000;

  cert = identity(&key);
  ck_assert_int_eq(an_tls_server_ctx_new_pem(cert, key, &h->server_tls, err, sizeof err), 0);
  if (wrong_pin) { /* pin some other key */
    free(cert);
    free(key);
    cert = identity(&key);
  }
  ck_assert_int_eq(an_tls_pin_from_pem(cert, pin, err, sizeof err), 0);
  free(cert);
  free(key);
  ck_assert_int_eq(an_tls_client_ctx_new(pin, &h->client_tls, err, sizeof err), 0);

  ck_assert_int_eq(uv_loop_init(&h->loop), 0);
  ck_assert_int_eq(uv_tcp_init(&h->loop, &h->listener), 0);
  h->listener.data = h;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  ck_assert_int_eq(uv_tcp_bind(&h->listener, (struct sockaddr *)&addr, 0), 0);
  ck_assert_int_eq(uv_listen((uv_stream_t *)&h->listener, 16, on_connection), 0);
  ck_assert_int_eq(uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &len), 0);
  uv_timer_init(&h->loop, &h->watchdog);
  h->watchdog.data = h;
  uv_timer_start(&h->watchdog, on_watchdog, 60000, 0);

  if (mode == MODE_RAW_SILENT || mode == MODE_RAW_GARBAGE) {
    uv_tcp_init(&h->loop, &h->raw);
    h->raw_connect.data = h;
    ck_assert_int_eq(
        uv_tcp_connect(&h->raw_connect, &h->raw, (struct sockaddr *)&bound, on_raw_connect), 0);
  } else {
    an_conn_params_t cp = {.max_frame = 64u << 20};
    ck_assert_int_eq(an_conn_connect(&h->loop, (struct sockaddr *)&bound, h->client_tls, &cp,
                                     &callbacks, &h->client, &h->client.conn),
                     0);
  }
  ck_assert_int_eq(uv_run(&h->loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&h->loop), 0);
  ck_assert_msg(!h->watchdog_fired, "scenario did not finish in time");
  an_tls_ctx_free(h->server_tls);
  an_tls_ctx_free(h->client_tls);
  return h;
}

START_TEST(test_many_frames_each_way) {
  harness_t *h = run(MODE_MANY_FRAMES, N_MANY, 0, 0);
  ck_assert(h->client.ready && h->server.ready);
  ck_assert_uint_eq(h->server.received, N_MANY);
  ck_assert_uint_eq(h->client.received, N_MANY);
  ck_assert_int_eq(h->server.mismatches, 0);
  ck_assert_int_eq(h->client.mismatches, 0);
  ck_assert_int_eq(h->client.close_status, 0);
  ck_assert_msg(h->server.close_status == 0, "server closed with %s",
                an_err_name(h->server.close_status));
  free(h);
}
END_TEST

START_TEST(test_large_frames_across_records) {
  size_t n = sizeof large_sizes / sizeof large_sizes[0];
  harness_t *h = run(MODE_LARGE_FRAMES, n, 32u << 20, 0);
  ck_assert_uint_eq(h->server.received, n);
  ck_assert_uint_eq(h->client.received, n);
  ck_assert_int_eq(h->server.mismatches, 0);
  ck_assert_int_eq(h->client.mismatches, 0);
  ck_assert_int_eq(h->server.close_status, 0);
  free(h);
}
END_TEST

START_TEST(test_peer_closes_mid_frame) {
  harness_t *h = run(MODE_CLOSE_MID_FRAME, 0, 0, 0);
  ck_assert_int_eq(h->server.received, 0);
  ck_assert_msg(h->server.close_status == AN_ETRUNC, "server saw %s",
                an_err_name(h->server.close_status));
  free(h);
}
END_TEST

START_TEST(test_wrong_pin_refused) {
  harness_t *h = run(MODE_WRONG_PIN, 0, 0, 1);
  ck_assert(!h->client.ready);
  ck_assert_msg(h->client.close_status == AN_EPIN, "client saw %s",
                an_err_name(h->client.close_status));
  ck_assert(!h->server.ready);
  ck_assert_int_eq(h->server.close_status, AN_ETLS);
  free(h);
}
END_TEST

START_TEST(test_frame_over_limit) {
  harness_t *h = run(MODE_TOO_BIG, 1, 1024, 0);
  ck_assert_int_eq(h->server.received, 0);
  ck_assert_int_eq(h->server.bad_input, AN_ETOOBIG);
  ck_assert_int_eq(h->server.close_status, AN_ETOOBIG);
  free(h);
}
END_TEST

START_TEST(test_silent_peer_times_out) {
  harness_t *h = run(MODE_RAW_SILENT, 0, 0, 0);
  ck_assert(!h->server.ready);
  ck_assert_int_eq(h->server.close_status, UV_ETIMEDOUT);
  free(h);
}
END_TEST

START_TEST(test_plaintext_peer_refused) {
  harness_t *h = run(MODE_RAW_GARBAGE, 0, 0, 0);
  ck_assert(!h->server.ready);
  ck_assert_int_eq(h->server.close_status, AN_ETLS);
  free(h);
}
END_TEST

/* Held output stays in the TLS engine until released, then arrives whole
 * and in order; a close meanwhile waits for the release. */
START_TEST(test_held_output_waits_for_release) {
  for (scenario_t m = MODE_HOLD_RELEASE; m <= MODE_HOLD_CLOSE; m++) {
    harness_t *h = run(m, 50, 0, 0);
    ck_assert_uint_eq(h->client.received, 50);
    ck_assert_int_eq(h->client.mismatches, 0);
    ck_assert_int_eq(h->server.close_status, 0);
    free(h);
  }
}
END_TEST

/* Discarded output never reaches the peer; the connection just closes. */
START_TEST(test_discarded_output_never_arrives) {
  harness_t *h = run(MODE_HOLD_DISCARD, 50, 0, 0);
  ck_assert_uint_eq(h->client.received, 0);
  ck_assert_int_eq(h->server.close_status, AN_EDB);
  ck_assert_int_ne(h->client.close_status, 0);
  free(h);
}
END_TEST

START_TEST(test_pin_matches_openssl_cli) {
  /* The pin is SHA-256 over the DER SubjectPublicKeyInfo; compute it with
   * the openssl command-line tool and compare. */
  char *key = NULL, *cert = identity(&key), pin[AN_TLS_PIN_LEN], err[256], line[128] = "";
  char path[] = "/tmp/an-test-cert-XXXXXX", cmd[512];
  int fd = mkstemp(path);
  FILE *f;
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, cert, strlen(cert)), (ssize_t)strlen(cert));
  close(fd);
  snprintf(cmd, sizeof cmd,
           "openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform der | "
           "openssl dgst -sha256 -binary | base64",
           path);
  f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
  pclose(f);
  line[strcspn(line, "\n")] = '\0';
  ck_assert_int_eq(an_tls_pin_from_file(path, pin, err, sizeof err), 0);
  ck_assert_str_eq(pin + 8, line);
  ck_assert(an_tls_pin_valid(pin));
  unlink(path);
  free(cert);
  free(key);
}
END_TEST

START_TEST(test_bad_pins_rejected) {
  an_tls_ctx_t *ctx = NULL;
  char err[256];
  static const char *const bad[] = {
      "", "sha256//", "sha1//hPev7gYCIbqmRbe7eliw+nv7p08YCEPWLsxGGz3XGAU=",
      "sha256//hPev7gYCIbqmRbe7eliw+nv7p08YCEPWLsxGGz3XGAU", /* no padding */
      "sha256//hPev7gYCIbqmRbe7eliw+nv7p08YCEPWLsxGGz3XG*U=",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ck_assert_int_eq(an_tls_client_ctx_new(bad[i], &ctx, err, sizeof err), AN_ECONFIG);
    ck_assert_ptr_null(ctx);
  }
}
END_TEST

START_TEST(test_bad_identity_files) {
  an_tls_ctx_t *ctx = NULL;
  char err[256];
  char *key1 = NULL, *cert1 = identity(&key1), *key2 = NULL, *cert2 = identity(&key2);
  /* A key that does not belong to the certificate. */
  ck_assert_int_eq(an_tls_server_ctx_new_pem(cert1, key2, &ctx, err, sizeof err), AN_ETLS);
  ck_assert_ptr_null(ctx);
  ck_assert_int_eq(an_tls_server_ctx_new_pem("not a certificate", key1, &ctx, err, sizeof err),
                   AN_ETLS);
  ck_assert_int_eq(an_tls_server_ctx_new("/nonexistent/c.pem", "/nonexistent/k.pem", &ctx, err,
                                         sizeof err),
                   AN_ETLS);
  ck_assert_ptr_nonnull(strstr(err, "/nonexistent/c.pem"));
  free(cert1);
  free(key1);
  free(cert2);
  free(key2);
}
END_TEST

static Suite *tls_suite(void) {
  Suite *s = suite_create("tls");
  TCase *tc = tcase_create("conn");
  tcase_add_test(tc, test_many_frames_each_way);
  tcase_add_test(tc, test_large_frames_across_records);
  tcase_add_test(tc, test_peer_closes_mid_frame);
  tcase_add_test(tc, test_wrong_pin_refused);
  tcase_add_test(tc, test_frame_over_limit);
  tcase_add_test(tc, test_silent_peer_times_out);
  tcase_add_test(tc, test_plaintext_peer_refused);
  tcase_add_test(tc, test_held_output_waits_for_release);
  tcase_add_test(tc, test_discarded_output_never_arrives);
  tcase_add_test(tc, test_pin_matches_openssl_cli);
  tcase_add_test(tc, test_bad_pins_rejected);
  tcase_add_test(tc, test_bad_identity_files);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(tls_suite)
