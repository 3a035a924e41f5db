/* The real archnet-broker binary on an ephemeral loopback port, driven by
 * the real client code and by hand-made frames, plus the three programs'
 * command-line behaviour. Binaries come from the environment (meson sets
 * ARCHNET_BROKER, ARCHNET_PUBLISHER, ARCHNET_WORKER). */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <uv.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/error.h"
#include "common/net/addr.h"
#include "common/net/client.h"
#include "common/net/conn.h"
#include "common/net/wire.h"
#include "tests/support/testutil.h"

typedef struct broker_proc {
  char *dir;
  char data[512], log[512], ready[512];
  char address[64];
  char pin[128];
  pid_t pid;
} broker_proc_t;

static broker_proc_t shared; /* the broker the "protocol" case talks to */

static const char *bin(const char *var) {
  const char *p = getenv(var);
  ck_assert_msg(p != NULL, "%s is not set; run this test through meson", var);
  return p;
}

static void broker_init(broker_proc_t *b) {
  char *out = NULL, *err = NULL;
  memset(b, 0, sizeof *b);
  b->dir = an_test_tmpdir();
  ck_assert_ptr_nonnull(b->dir);
  snprintf(b->data, sizeof b->data, "%s/data", b->dir);
  snprintf(b->log, sizeof b->log, "%s/broker.log", b->dir);
  snprintf(b->ready, sizeof b->ready, "%s/ready", b->dir);
  char *init[] = {(char *)bin("ARCHNET_BROKER"), "init", "--data-dir", b->data, NULL};
  ck_assert_int_eq(an_test_run(init, &out, &err), 0);
  char *pin = strstr(out, "--pin sha256//");
  ck_assert_ptr_nonnull(pin);
  sscanf(pin + 6, "%127s", b->pin);
  free(out);
  free(err);
  /* `pin` prints the same value again. */
  char *pincmd[] = {(char *)bin("ARCHNET_BROKER"), "pin", "--data-dir", b->data, NULL};
  ck_assert_int_eq(an_test_run(pincmd, &out, NULL), 0);
  out[strcspn(out, "\n")] = '\0';
  ck_assert_str_eq(out, b->pin);
  free(out);
}

static void broker_start(broker_proc_t *b) {
  char conf[1024];
  /* The shipped example config, overridden by flags where a test needs to. */
  snprintf(conf, sizeof conf, "%s/deploy/broker.conf", bin("ARCHNET_SOURCE_ROOT"));
  char *run[] = {(char *)bin("ARCHNET_BROKER"), "run", "--config", conf, "--data-dir", b->data,
                 "--listen", "127.0.0.1:0", "--ready-file", b->ready,
                 "--max-frame", "64K", "--log-level", "debug",
                 "--handshake-timeout-ms", "1500", "--http-listen", "127.0.0.1:0", NULL};
  b->pid = an_test_spawn(run, b->log);
  ck_assert_int_gt(b->pid, 0);
  ck_assert_msg(an_test_read_line_when_ready(b->ready, b->address, sizeof b->address, 10000) == 0,
                "broker did not write its ready file; see %s", b->log);
}

static int broker_stop(broker_proc_t *b) {
  kill(b->pid, SIGTERM);
  return an_test_wait(b->pid, 10000);
}

static void shared_setup(void) {
  broker_init(&shared);
  broker_start(&shared);
}

static void shared_teardown(void) {
  if (shared.pid > 0 && broker_stop(&shared) != 0) {
    kill(shared.pid, SIGKILL);
    an_test_wait(shared.pid, 1000);
  }
  an_test_rmtree(shared.dir);
  free(shared.dir);
}

/* ---- scripted exchanges: raw frames in, every reply and the close out ---- */

typedef struct exchange {
  const uint8_t *frames[4];
  size_t lens[4];
  size_t n_frames;
  int close_after; /* we close once this many replies arrived (0 = wait for broker) */
  an_arena_t arena;
  Archnet__Envelope *replies[8];
  size_t n_replies;
  int closed, close_status;
} exchange_t;

static void ex_on_ready(an_conn_t *c) {
  exchange_t *ex = an_conn_data(c);
  for (size_t i = 0; i < ex->n_frames; i++)
    ck_assert_int_eq(an_conn_write_frame(c, ex->frames[i], ex->lens[i]), 0);
}

static int ex_on_frame(an_conn_t *c, const uint8_t *payload, size_t len) {
  exchange_t *ex = an_conn_data(c);
  Archnet__Envelope *env = an_wire_unpack(&ex->arena, payload, len);
  ck_assert_msg(env != NULL, "the broker sent an undecodable frame");
  ck_assert_uint_lt(ex->n_replies, 8);
  ex->replies[ex->n_replies++] = env;
  if (ex->close_after && (int)ex->n_replies == ex->close_after)
    an_conn_close(c, 0);
  return 0;
}

static void ex_on_close(an_conn_t *c, int status) {
  exchange_t *ex = an_conn_data(c);
  ex->closed = 1;
  ex->close_status = status;
}

static void exchange_run(exchange_t *ex) {
  an_conn_callbacks_t cb = {.on_ready = ex_on_ready, .on_frame = ex_on_frame,
                            .on_close = ex_on_close};
  struct sockaddr_storage addr;
  an_tls_ctx_t *tls = NULL;
  an_conn_t *conn = NULL;
  uv_loop_t loop;
  char err[256];

  an_arena_init(&ex->arena, 0, 0);
  ck_assert_int_eq(an_addr_resolve(shared.address, &addr, err, sizeof err), 0);
  ck_assert_int_eq(an_tls_client_ctx_new(shared.pin, &tls, err, sizeof err), 0);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  ck_assert_int_eq(an_conn_connect(&loop, (struct sockaddr *)&addr, tls, NULL, &cb, ex, &conn), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert(ex->closed);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  an_tls_ctx_free(tls);
}

static size_t pack(uint8_t *buf, Archnet__Envelope *env) { return archnet__envelope__pack(env, buf); }

static size_t pack_hello(uint8_t *buf, uint64_t id, uint32_t version) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__Hello hello = ARCHNET__HELLO__INIT;
  hello.protocol_version = version;
  hello.role = ARCHNET__ROLE__ROLE_WORKER;
  hello.node_name = "test\x01\nnode"; /* control characters must not reach the log raw */
  env.request_id = id;
  env.body_case = ARCHNET__ENVELOPE__BODY_HELLO;
  env.hello = &hello;
  return pack(buf, &env);
}

static size_t pack_ping(uint8_t *buf, uint64_t id, uint64_t nonce) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__Ping ping = ARCHNET__PING__INIT;
  ping.nonce = nonce;
  env.request_id = id;
  env.body_case = ARCHNET__ENVELOPE__BODY_PING;
  env.ping = &ping;
  return pack(buf, &env);
}

static void assert_error(const Archnet__Envelope *env, Archnet__Error__Code code) {
  ck_assert_int_eq(env->body_case, ARCHNET__ENVELOPE__BODY_ERROR);
  ck_assert_msg(env->error->code == code, "expected %s, got %s (%s)", an_wire_error_name(code),
                an_wire_error_name(env->error->code), env->error->message);
  ck_assert(strlen(env->error->message) > 0);
}

START_TEST(test_client_hello_and_ping) {
  an_client_params_t p = {.broker = shared.address, .pin = shared.pin,
                          .role = ARCHNET__ROLE__ROLE_PUBLISHER, .node_name = "it"};
  an_client_t *c = NULL;
  char err[512];
  int rc = an_client_connect(&p, &c, err, sizeof err);
  ck_assert_msg(rc == 0, "connect: %s", err);
  ck_assert_str_eq(an_client_broker_software(c), "archnet-broker/" AN_VERSION);
  ck_assert_uint_gt(an_client_session_id(c), 0);
  for (int i = 0; i < 50; i++) {
    uint64_t rtt = 0;
    ck_assert_int_eq(an_client_ping(c, &rtt, err, sizeof err), 0);
    ck_assert_uint_gt(rtt, 0);
  }
  an_client_close(c);
}
END_TEST

START_TEST(test_client_wrong_pin) {
  an_client_params_t p = {.broker = shared.address,
                          .pin = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                          .role = ARCHNET__ROLE__ROLE_WORKER, .timeout_ms = 5000};
  an_client_t *c = NULL;
  char err[512];
  ck_assert_int_eq(an_client_connect(&p, &c, err, sizeof err), AN_EPIN);
  ck_assert_ptr_null(c);
  ck_assert_ptr_nonnull(strstr(err, "pin"));
}
END_TEST

START_TEST(test_unsupported_version) {
  uint8_t hello[256];
  exchange_t ex = {.frames = {hello}, .n_frames = 1};
  ex.lens[0] = pack_hello(hello, 1, 0);
  exchange_run(&ex);
  ck_assert_uint_eq(ex.n_replies, 1);
  assert_error(ex.replies[0], ARCHNET__ERROR__CODE__UNSUPPORTED_VERSION);
  ck_assert_uint_eq(ex.replies[0]->request_id, 1);
  an_arena_destroy(&ex.arena);
}
END_TEST

START_TEST(test_newer_client_talks_down) {
  uint8_t hello[256];
  exchange_t ex = {.frames = {hello}, .n_frames = 1, .close_after = 1};
  ex.lens[0] = pack_hello(hello, 5, AN_PROTOCOL_VERSION + 7);
  exchange_run(&ex);
  ck_assert_uint_eq(ex.n_replies, 1);
  ck_assert_int_eq(ex.replies[0]->body_case, ARCHNET__ENVELOPE__BODY_HELLO_OK);
  ck_assert_uint_eq(ex.replies[0]->hello_ok->protocol_version, AN_PROTOCOL_VERSION);
  ck_assert_uint_eq(ex.replies[0]->hello_ok->max_frame_bytes, 64 * 1024);
  an_arena_destroy(&ex.arena);
}
END_TEST

START_TEST(test_malformed_frame) {
  static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
  exchange_t ex = {.frames = {junk}, .lens = {sizeof junk}, .n_frames = 1};
  exchange_run(&ex);
  ck_assert_uint_eq(ex.n_replies, 1);
  assert_error(ex.replies[0], ARCHNET__ERROR__CODE__MALFORMED);
  an_arena_destroy(&ex.arena);
}
END_TEST

START_TEST(test_request_before_hello) {
  uint8_t ping[64];
  exchange_t ex = {.frames = {ping}, .n_frames = 1};
  ex.lens[0] = pack_ping(ping, 3, 1234);
  exchange_run(&ex);
  ck_assert_uint_eq(ex.n_replies, 1);
  assert_error(ex.replies[0], ARCHNET__ERROR__CODE__HELLO_REQUIRED);
  ck_assert_uint_eq(ex.replies[0]->request_id, 3);
  an_arena_destroy(&ex.arena);
}
END_TEST

START_TEST(test_unknown_request_keeps_session) {
  uint8_t hello[256], odd[64], ping[64];
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__Pong pong = ARCHNET__PONG__INIT;
  env.request_id = 2;
  env.body_case = ARCHNET__ENVELOPE__BODY_PONG; /* not a request the broker takes */
  env.pong = &pong;
  exchange_t ex = {.frames = {hello, odd, ping}, .n_frames = 3, .close_after = 3};
  ex.lens[0] = pack_hello(hello, 1, AN_PROTOCOL_VERSION);
  ex.lens[1] = pack(odd, &env);
  ex.lens[2] = pack_ping(ping, 3, 0xfeedULL);
  exchange_run(&ex);
  ck_assert_uint_eq(ex.n_replies, 3);
  ck_assert_int_eq(ex.replies[0]->body_case, ARCHNET__ENVELOPE__BODY_HELLO_OK);
  assert_error(ex.replies[1], ARCHNET__ERROR__CODE__UNSUPPORTED_REQUEST);
  ck_assert_uint_eq(ex.replies[1]->request_id, 2);
  ck_assert_int_eq(ex.replies[2]->body_case, ARCHNET__ENVELOPE__BODY_PONG);
  ck_assert_uint_eq(ex.replies[2]->pong->nonce, 0xfeedULL);
  ck_assert_int_eq(ex.close_status, 0);
  an_arena_destroy(&ex.arena);
}
END_TEST

START_TEST(test_silent_after_tls_is_dropped) {
  /* TLS completes, then nothing: the Hello deadline must close the session. */
  exchange_t ex = {.n_frames = 0};
  uint64_t t0 = uv_hrtime();
  exchange_run(&ex);
  double secs = (double)(uv_hrtime() - t0) / 1e9;
  ck_assert_uint_eq(ex.n_replies, 0);
  ck_assert_msg(secs >= 1.0 && secs < 10.0, "closed after %.2f s", secs);
  an_arena_destroy(&ex.arena);
}
END_TEST

START_TEST(test_frame_over_broker_limit) {
  size_t n = 64 * 1024 + 1;
  uint8_t *big = calloc(1, n);
  exchange_t ex = {.frames = {big}, .lens = {n}, .n_frames = 1};
  exchange_run(&ex);
  ck_assert_uint_eq(ex.n_replies, 1);
  assert_error(ex.replies[0], ARCHNET__ERROR__CODE__FRAME_TOO_BIG);
  an_arena_destroy(&ex.arena);
  free(big);
}
END_TEST

/* ---- the programs' command lines ---- */

START_TEST(test_cli_help_version_and_bad_flags) {
  static const char *const vars[] = {"ARCHNET_BROKER", "ARCHNET_PUBLISHER", "ARCHNET_WORKER"};
  for (size_t i = 0; i < 3; i++) {
    char *p = (char *)bin(vars[i]);
    char *help[] = {p, "--help", NULL}, *version[] = {p, "--version", NULL};
    char *bad[] = {p, "--no-such-flag", NULL}, *badcmd[] = {p, "frobnicate", NULL};
    char *ping_help[] = {p, "ping", "--help", NULL};
    char *ping_bad[] = {p, "ping", "--count=zero", NULL};
    if (i == 0) {
      ping_help[1] = "run";
      ping_bad[1] = "run";
      ping_bad[2] = "--max-frame=huge";
    }
    an_test_expect_run(help, 0, "Usage:", NULL);
    an_test_expect_run(version, 0, AN_VERSION, NULL);
    an_test_expect_run(bad, 2, NULL, "--no-such-flag");
    an_test_expect_run(badcmd, 2, NULL, "unknown command 'frobnicate'");
    an_test_expect_run(ping_help, 0, "Options:", NULL);
    an_test_expect_run(ping_bad, 2, NULL, i == 0 ? "--max-frame" : "--count");
  }
}
END_TEST

START_TEST(test_cli_ping) {
  char *ok[] = {(char *)bin("ARCHNET_WORKER"), "ping", "--broker", shared.address, "--pin",
                shared.pin, "--count", "2", NULL};
  char *wrong[] = {(char *)bin("ARCHNET_PUBLISHER"), "ping", "--broker", shared.address, "--pin",
                   "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", NULL};
  char *nopin[] = {(char *)bin("ARCHNET_PUBLISHER"), "ping", "--broker", shared.address, NULL};
  an_test_expect_run(ok, 0, "2 pings", NULL);
  an_test_expect_run(wrong, 1, NULL, "does not match the pin");
  an_test_expect_run(nopin, 2, NULL, "--pin is required");
}
END_TEST

START_TEST(test_run_without_identity) {
  char *dir = an_test_tmpdir();
  char *run[] = {(char *)bin("ARCHNET_BROKER"), "run", "--data-dir", dir, "--listen",
                 "127.0.0.1:0", NULL};
  an_test_expect_run(run, 1, NULL, "archnet-broker init");
  an_test_rmtree(dir);
  free(dir);
}
END_TEST

START_TEST(test_init_refuses_to_overwrite) {
  broker_proc_t b;
  broker_init(&b);
  char *again[] = {(char *)bin("ARCHNET_BROKER"), "init", "--data-dir", b.data, NULL};
  an_test_expect_run(again, 1, NULL, "--force");
  an_test_rmtree(b.dir);
  free(b.dir);
}
END_TEST

START_TEST(test_sigterm_stops_cleanly) {
  broker_proc_t b;
  an_client_t *c = NULL;
  char err[512];
  broker_init(&b);
  broker_start(&b);
  /* A connected client does not hold the broker up. */
  an_client_params_t p = {.broker = b.address, .pin = b.pin, .role = ARCHNET__ROLE__ROLE_WORKER};
  ck_assert_int_eq(an_client_connect(&p, &c, err, sizeof err), 0);
  ck_assert_int_eq(broker_stop(&b), 0);
  ck_assert_int_ne(an_client_ping(c, NULL, err, sizeof err), 0);
  an_client_close(c);
  an_test_rmtree(b.dir);
  free(b.dir);
}
END_TEST

static Suite *broker_process_suite(void) {
  Suite *s = suite_create("broker-process");
  TCase *proto = tcase_create("protocol");
  tcase_add_unchecked_fixture(proto, shared_setup, shared_teardown);
  tcase_add_test(proto, test_client_hello_and_ping);
  tcase_add_test(proto, test_client_wrong_pin);
  tcase_add_test(proto, test_unsupported_version);
  tcase_add_test(proto, test_newer_client_talks_down);
  tcase_add_test(proto, test_malformed_frame);
  tcase_add_test(proto, test_request_before_hello);
  tcase_add_test(proto, test_unknown_request_keeps_session);
  tcase_add_test(proto, test_frame_over_broker_limit);
  tcase_add_test(proto, test_silent_after_tls_is_dropped);
  tcase_add_test(proto, test_cli_ping);
  tcase_set_timeout(proto, 60);
  suite_add_tcase(s, proto);

  TCase *cli = tcase_create("cli");
  tcase_add_test(cli, test_cli_help_version_and_bad_flags);
  tcase_add_test(cli, test_run_without_identity);
  tcase_add_test(cli, test_init_refuses_to_overwrite);
  tcase_add_test(cli, test_sigterm_stops_cleanly);
  tcase_set_timeout(cli, 60);
  suite_add_tcase(s, cli);
  return s;
}

AN_TEST_MAIN(broker_process_suite)
