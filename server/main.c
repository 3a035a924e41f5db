/* archnet-broker: the task broker daemon and its admin commands. */
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "common/cli.h"
#include "common/error.h"
#include "common/log.h"
#include "common/net/conn.h"
#include "common/net/tls.h"
#include "server/broker.h"
#include "server/admin.h"
#include "server/blobstore.h"
#include "server/group_commit.h"
#include "server/http.h"
#include "server/identity.h"
#include "server/service.h"
#include "server/store.h"
#include "server/validate.h"

typedef struct run_settings {
  char *listen;
  char *data_dir;
  char *cert;
  char *key;
  uint64_t max_frame;
  int64_t handshake_timeout_ms;
  int64_t idle_timeout_s;
  int64_t max_sessions;
  char *log_level;
  char *ready_file;
  int64_t fee_permille, lease_seconds, max_wait;
  uint64_t max_blob, min_free, max_model, score_memory;
  double score_cpu, score_wall;
  char *http_listen, *http_ready_file;
} run_settings_t;

#define RUN_OPT(field) offsetof(run_settings_t, field)

static const an_option_t run_options[] = {
    {"listen", AN_OPT_STR, RUN_OPT(listen), "127.0.0.1:7443", 0, 0, "HOST:PORT",
     "address to accept workers and publishers on; port 0 picks a free port"},
    {"data-dir", AN_OPT_STR, RUN_OPT(data_dir), "broker-data", 0, 0, "DIR",
     "the broker's state directory (identity, state.db, blobs/)"},
    {"cert", AN_OPT_STR, RUN_OPT(cert), NULL, 0, 0, "FILE",
     "TLS certificate (PEM); default DIR/" AN_IDENTITY_CERT},
    {"key", AN_OPT_STR, RUN_OPT(key), NULL, 0, 0, "FILE",
     "TLS private key (PEM); default DIR/" AN_IDENTITY_KEY},
    {"max-frame", AN_OPT_SIZE, RUN_OPT(max_frame), "16M", 1024, 1073741824.0, "BYTES",
     "largest message a client may send"},
    {"handshake-timeout-ms", AN_OPT_INT, RUN_OPT(handshake_timeout_ms), "10000", 100, 600000,
     "MS", "drop clients that do not finish the TLS handshake in time"},
    {"idle-timeout", AN_OPT_INT, RUN_OPT(idle_timeout_s), "300", 0, 86400, "SECONDS",
     "drop sessions silent for this long; 0 = never"},
    {"max-sessions", AN_OPT_INT, RUN_OPT(max_sessions), "1024", 1, 1000000, "N",
     "refuse connections beyond this many"},
    {"log-level", AN_OPT_STR, RUN_OPT(log_level), "info", 0, 0, "LEVEL",
     "debug, info, warn, error or off", an_config_check_log_level},
    {"ready-file", AN_OPT_STR, RUN_OPT(ready_file), NULL, 0, 0, "FILE",
     "once listening, write the bound HOST:PORT here (for scripts and tests)"},
    {"fee-permille", AN_OPT_INT, RUN_OPT(fee_permille), "0", 0, 1000, "N",
     "the broker's cut of each bounty paid, in thousandths"},
    {"lease-seconds", AN_OPT_INT, RUN_OPT(lease_seconds), "600", 5, 604800, "S",
     "default time a worker has between heartbeats before its lease expires"},
    {"max-wait", AN_OPT_INT, RUN_OPT(max_wait), "60", 1, 3600, "S",
     "longest a worker's lease request is held open waiting for work"},
    {"max-blob", AN_OPT_SIZE, RUN_OPT(max_blob), "64G", 1024, 1099511627776.0, "BYTES",
     "largest dataset or model accepted"},
    {"min-free-disk", AN_OPT_SIZE, RUN_OPT(min_free), "1G", 0, 1099511627776.0, "BYTES",
     "refuse uploads that would leave less free disk than this"},
    {"max-model", AN_OPT_SIZE, RUN_OPT(max_model), "1G", 1024, 1099511627776.0, "BYTES",
     "largest model a worker may upload"},
    {"score-memory", AN_OPT_SIZE, RUN_OPT(score_memory), "4G", 16777216, 1099511627776.0,
     "BYTES", "address-space limit of the process scoring a model"},
    {"score-cpu", AN_OPT_DOUBLE, RUN_OPT(score_cpu), "600", 1, 86400, "S",
     "CPU-time limit of the process scoring a model"},
    {"score-wall", AN_OPT_DOUBLE, RUN_OPT(score_wall), "900", 1, 86400, "S",
     "wall-clock limit of the process scoring a model"},
    {"http-listen", AN_OPT_STR, RUN_OPT(http_listen), "127.0.0.1:7444", 0, 0, "HOST:PORT",
     "admin HTTP endpoint: /metrics, the JSON API and the dashboard; empty = off"},
    {"http-ready-file", AN_OPT_STR, RUN_OPT(http_ready_file), NULL, 0, 0, "FILE",
     "once the HTTP endpoint listens, write its HOST:PORT here"},
};

static const an_command_spec_t run_spec = {
    .program = "archnet-broker",
    .command = "run",
    .summary = "Run the broker: accept TLS connections from publishers and workers and\n"
               "answer them. Stops cleanly on SIGINT or SIGTERM. Create the broker's\n"
               "identity first with 'archnet-broker init'.",
    .section = "broker",
    .options = run_options,
    .n_options = sizeof run_options / sizeof run_options[0],
};

typedef struct broker_process {
  an_broker_t *broker;
  an_service_t *service;
  uv_signal_t sigint, sigterm, sighup;
  int argc;    /* the command line, parsed again on SIGHUP */
  char **argv;
} broker_process_t;

/* The tunables of `s` as service parameters (the store and blob store are
 * the running service's). */
static void service_params(const run_settings_t *s, an_service_params_t *sp) {
  memset(sp, 0, sizeof *sp);
  sp->fee_permille = (int)s->fee_permille;
  sp->default_lease_seconds = (uint32_t)s->lease_seconds;
  sp->max_wait_seconds = (uint32_t)s->max_wait;
  sp->max_model_bytes = s->max_model;
  sp->score_memory_bytes = s->score_memory;
  sp->score_cpu_seconds = s->score_cpu;
  sp->score_wall_seconds = s->score_wall;
}

/* SIGHUP: read the flags and --config file again and apply what can change
 * while running (log level, fee, lease and wait times, model and sandbox
 * limits). Addresses, the data directory and TLS need a restart. */
static void on_reload_signal(uv_signal_t *sig, int signum) {
  broker_process_t *p = sig->data;
  run_settings_t ns = {0};
  an_service_params_t sp;
  char err[1024];
  int first;
  (void)signum;
  if (an_config_parse(&run_spec, &ns, p->argc, p->argv, &first, stderr, err, sizeof err) != 0) {
    AN_LOG(AN_LOG_ERROR, "broker", "SIGHUP: %s; keeping the running configuration", err);
  } else {
    an_log_level_t level;
    an_log_parse_level(ns.log_level, &level);
    an_log_set_level(level);
    service_params(&ns, &sp);
    an_service_reconfigure(p->service, &sp);
    AN_LOG(AN_LOG_INFO, "broker",
           "SIGHUP: configuration reloaded (fee %lld/1000, lease %lld s, max wait %lld s, log "
           "level %s)",
           (long long)ns.fee_permille, (long long)ns.lease_seconds, (long long)ns.max_wait,
           ns.log_level);
  }
  an_config_free(&run_spec, &ns);
}

static void on_stop_signal(uv_signal_t *sig, int signum) {
  broker_process_t *p = sig->data;
  AN_LOG(AN_LOG_INFO, "broker", "received %s", signum == SIGINT ? "SIGINT" : "SIGTERM");
  an_broker_stop(p->broker);
  an_service_stop(p->service);
  uv_close((uv_handle_t *)&p->sigint, NULL);
  uv_close((uv_handle_t *)&p->sigterm, NULL);
  uv_close((uv_handle_t *)&p->sighup, NULL);
}

/* A failed commit lost changes; the service redoes what no client will. */
static void on_commit_lost(void *arg) {
  broker_process_t *p = arg;
  if (p->service)
    an_service_commit_lost(p->service);
}

static int cmd_run(int argc, char **argv) {
  run_settings_t s = {0};
  broker_process_t proc = {0};
  an_tls_ctx_t *tls = NULL;
  EVP_PKEY *receipt_key = NULL;
  uv_loop_t loop;
  char cert[4096], key[4096], err[1024];
  int first, rc, status;

  if ((status = an_cli_parse(&run_spec, &s, argc, argv, &first)) >= 0)
    goto done_settings;
  status = AN_EXIT_FAIL;
  if (first < argc) {
    fprintf(stderr, "archnet-broker run: unexpected argument '%s'\n", argv[first]);
    status = AN_EXIT_USAGE;
    goto done_settings;
  }
  an_log_level_t level;
  an_log_parse_level(s.log_level, &level); /* validated by the option's check */
  an_log_set_level(level);

  if (an_identity_path(s.data_dir, AN_IDENTITY_CERT, cert, sizeof cert) != 0 ||
      an_identity_path(s.data_dir, AN_IDENTITY_KEY, key, sizeof key) != 0) {
    fprintf(stderr, "archnet-broker: --data-dir is too long\n");
    goto done_settings;
  }
  if ((rc = an_tls_server_ctx_new(s.cert ? s.cert : cert, s.key ? s.key : key, &tls, err,
                                  sizeof err)) != 0) {
    fprintf(stderr, "archnet-broker: %s\n(create an identity with 'archnet-broker init "
                    "--data-dir %s')\n",
            err, s.data_dir);
    goto done_settings;
  }
  /* Receipts are signed with the TLS key: the pin nodes hold names it. */
  if ((rc = an_identity_load_key(s.key ? s.key : key, &receipt_key, err, sizeof err)) != 0) {
    fprintf(stderr, "archnet-broker: %s\n", err);
    goto done_tls;
  }

  char path[4200], exe[4096];
  an_store_t *store = NULL;
  an_blobstore_t *blobs = NULL;
  snprintf(path, sizeof path, "%s/state.db", s.data_dir);
  if ((rc = an_store_open(path, &store, err, sizeof err)) != 0) {
    fprintf(stderr, "archnet-broker: %s\n", err);
    goto done_tls;
  }
  snprintf(path, sizeof path, "%s/blobs", s.data_dir);
  an_blobstore_limits_t bl = {.max_blob_bytes = s.max_blob, .min_free_bytes = s.min_free};
  if ((rc = an_blobstore_open(path, &bl, &blobs, err, sizeof err)) != 0) {
    fprintf(stderr, "archnet-broker: %s\n", err);
    goto done_store;
  }
  /* Models are scored by this same binary, re-executed in a sandbox. */
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    fprintf(stderr, "archnet-broker: cannot find its own executable\n");
    goto done_store;
  }
  exe[n] = '\0';

  an_broker_params_t params = {
      .listen = s.listen,
      .tls = tls,
      .max_frame = (uint32_t)s.max_frame,
      .handshake_timeout_ms = (uint64_t)s.handshake_timeout_ms,
      .idle_timeout_ms = (uint64_t)s.idle_timeout_s * 1000,
      .max_sessions = (uint32_t)s.max_sessions,
      .ready_file = s.ready_file,
  };
  if ((rc = uv_loop_init(&loop)) != 0) {
    fprintf(stderr, "archnet-broker: cannot start the event loop: %s\n", uv_strerror(rc));
    goto done_tls;
  }
  an_broker_stats_t stats;
  an_http_t *http = NULL;
  an_group_commit_t *commit = NULL;
  an_broker_stats_init(&stats);
  /* Chunks are hashed, written and synced on the loop's thread pool; the
   * loop runs until the last of them has reported. */
  an_blobstore_use_loop(blobs, &loop);
  /* One fsync per turn of the loop for all requests of that turn. */
  if ((rc = an_group_commit_start(&loop, store, on_commit_lost, &proc, &commit)) != 0) {
    fprintf(stderr, "archnet-broker: cannot start the group commit: %s\n", an_strerror(rc));
    goto done_loop;
  }
  an_service_params_t sp;
  service_params(&s, &sp);
  sp.store = store;
  sp.blobs = blobs;
  sp.exe = exe;
  sp.stats = &stats;
  sp.receipt_key = receipt_key;
  if ((rc = an_service_new(&loop, &sp, &proc.service, err, sizeof err)) != 0) {
    fprintf(stderr, "archnet-broker: %s\n", err);
    goto done_loop;
  }
  params.service = proc.service;
  params.stats = &stats;
  params.commit = commit;
  if ((rc = an_broker_start(&loop, &params, &proc.broker, err, sizeof err)) != 0) {
    fprintf(stderr, "archnet-broker: %s\n", err);
    an_service_stop(proc.service);
    uv_run(&loop, UV_RUN_DEFAULT);
    goto done_loop;
  }
  uv_signal_init(&loop, &proc.sigint);
  uv_signal_init(&loop, &proc.sigterm);
  uv_signal_init(&loop, &proc.sighup);
  proc.sigint.data = proc.sigterm.data = proc.sighup.data = &proc;
  proc.argc = argc;
  proc.argv = argv;
  uv_signal_start(&proc.sigint, on_stop_signal, SIGINT);
  uv_signal_start(&proc.sigterm, on_stop_signal, SIGTERM);
  uv_signal_start(&proc.sighup, on_reload_signal, SIGHUP);

  if (s.http_listen && s.http_listen[0]) {
    snprintf(path, sizeof path, "%s/state.db", s.data_dir);
    an_http_params_t hp = {.listen = s.http_listen, .db_path = path, .stats = &stats};
    if ((rc = an_http_start(&hp, &http, err, sizeof err)) != 0) {
      fprintf(stderr, "archnet-broker: %s\n", err);
      an_broker_stop(proc.broker);
      an_service_stop(proc.service);
      uv_close((uv_handle_t *)&proc.sigint, NULL);
      uv_close((uv_handle_t *)&proc.sigterm, NULL);
      uv_close((uv_handle_t *)&proc.sighup, NULL);
    } else {
      AN_LOG(AN_LOG_INFO, "broker", "admin endpoint on http://%s/", an_http_address(http));
      if (s.http_ready_file) {
        FILE *f = fopen(s.http_ready_file, "w");
        if (f) {
          fprintf(f, "%s\n", an_http_address(http));
          fclose(f);
        }
      }
    }
  }
  uv_run(&loop, UV_RUN_DEFAULT); /* returns once every handle is closed */
  an_http_stop(http);
  an_broker_free(proc.broker);
  AN_LOG(AN_LOG_INFO, "broker", "stopped");
  status = rc == 0 ? AN_EXIT_OK : AN_EXIT_FAIL;
done_loop:
  /* What the last turns changed (a verdict recorded during shutdown). */
  if (an_group_commit_close(commit) != 0) {
    AN_LOG(AN_LOG_ERROR, "broker", "the last commit failed: %s", an_store_errmsg(store));
    status = AN_EXIT_FAIL;
  }
  if (uv_loop_close(&loop) != 0)
    AN_LOG(AN_LOG_WARN, "broker", "event loop closed with handles still open");
  an_service_free(proc.service);
done_store:
  an_blobstore_close(blobs);
  an_store_close(store);
done_tls:
  EVP_PKEY_free(receipt_key);
  an_tls_ctx_free(tls);
done_settings:
  an_config_free(&run_spec, &s);
  return status;
}

typedef struct init_settings {
  char *data_dir;
  char *common_name;
  int64_t days;
  bool force;
} init_settings_t;

#define INIT_OPT(field) offsetof(init_settings_t, field)

static const an_option_t init_options[] = {
    {"data-dir", AN_OPT_STR, INIT_OPT(data_dir), "broker-data", 0, 0, "DIR",
     "where to create the broker's state directory"},
    {"common-name", AN_OPT_STR, INIT_OPT(common_name), "archnet-broker", 0, 0, "NAME",
     "subject name written in the certificate"},
    {"days", AN_OPT_INT, INIT_OPT(days), "3650", 1, 36500, "N", "certificate validity"},
    {"force", AN_OPT_BOOL, INIT_OPT(force), "false", 0, 0, NULL,
     "replace an existing identity (clients then need the new pin)"},
};

static const an_command_spec_t init_spec = {
    .program = "archnet-broker",
    .command = "init",
    .summary = "Create the broker's data directory and its TLS identity: a new P-256 key\n"
               "and a self-signed certificate. Prints the pin that publishers and workers\n"
               "pass as --pin to trust this broker.",
    .options = init_options,
    .n_options = sizeof init_options / sizeof init_options[0],
};

static int cmd_init(int argc, char **argv) {
  init_settings_t s = {0};
  char pin[AN_TLS_PIN_LEN], err[1024];
  int first, status;

  if ((status = an_cli_parse(&init_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (first < argc) {
    fprintf(stderr, "archnet-broker init: unexpected argument '%s'\n", argv[first]);
    status = AN_EXIT_USAGE;
    goto done;
  }
  if (an_identity_create(s.data_dir, s.common_name, (int)s.days, s.force, pin, err,
                         sizeof err) != 0) {
    fprintf(stderr, "archnet-broker init: %s\n", err);
    goto done;
  }
  printf("Created the broker identity in %s:\n"
         "  certificate  %s/" AN_IDENTITY_CERT "\n"
         "  private key  %s/" AN_IDENTITY_KEY " (mode 0600, keep it secret)\n"
         "Publishers and workers trust this broker with:\n"
         "  --pin %s\n",
         s.data_dir, s.data_dir, s.data_dir, pin);
  status = AN_EXIT_OK;
done:
  an_config_free(&init_spec, &s);
  return status;
}

typedef struct pin_settings {
  char *data_dir;
  char *cert;
} pin_settings_t;

static const an_option_t pin_options[] = {
    {"data-dir", AN_OPT_STR, offsetof(pin_settings_t, data_dir), "broker-data", 0, 0, "DIR",
     "the broker's state directory"},
    {"cert", AN_OPT_STR, offsetof(pin_settings_t, cert), NULL, 0, 0, "FILE",
     "certificate to read instead of DIR/" AN_IDENTITY_CERT},
};

static const an_command_spec_t pin_spec = {
    .program = "archnet-broker",
    .command = "pin",
    .summary = "Print the pin of the broker's certificate (sha256// and the base64 SHA-256\n"
               "of its public key), the value clients pass as --pin.",
    .options = pin_options,
    .n_options = sizeof pin_options / sizeof pin_options[0],
};

static int cmd_pin(int argc, char **argv) {
  pin_settings_t s = {0};
  char path[4096], pin[AN_TLS_PIN_LEN], err[1024];
  int first, status;

  if ((status = an_cli_parse(&pin_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (s.cert)
    snprintf(path, sizeof path, "%s", s.cert);
  else if (an_identity_path(s.data_dir, AN_IDENTITY_CERT, path, sizeof path) != 0)
    goto done;
  if (an_tls_pin_from_file(path, pin, err, sizeof err) != 0) {
    fprintf(stderr, "archnet-broker pin: %s\n", err);
    goto done;
  }
  printf("%s\n", pin);
  status = AN_EXIT_OK;
done:
  an_config_free(&pin_spec, &s);
  return status;
}

static const an_subcommand_t commands[] = {
    {"run", "run the broker daemon", cmd_run},
    {"enroll", "make a one-time enrollment token for a new node", an_admin_enroll},
    {"topup", "credit a node's balance", an_admin_topup},
    {"nodes", "list the enrolled nodes and their balances", an_admin_nodes},
    {"tasks", "list every task and its state", an_admin_tasks},
    {"ledger", "show balances and check the ledger's invariants", an_admin_ledger},
    {"revoke", "revoke a node's credentials", an_admin_revoke},
    {"kick", "queue a failed task again", an_admin_kick},
    {"init", "create the data directory and the broker's TLS identity", cmd_init},
    {"pin", "print the pin clients use to trust this broker", cmd_pin},
    {"score", "score a model on a validation set in the sandbox (run by the broker itself)",
     an_validate_score_main},
};

static const an_program_t program = {
    .name = "archnet-broker",
    .summary = "The ArchNet task broker: takes H-encoded datasets from publishers, leases\n"
               "training tasks to workers, scores returned models on a validation set only\n"
               "it holds, and pays workers from escrowed bounties.",
    .commands = commands,
    .n_commands = sizeof commands / sizeof commands[0],
    .default_command = "run",
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error code, not a signal */
  return an_cli_main(&program, argc, argv);
}
