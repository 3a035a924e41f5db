#include "common/probe.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "an_build_config.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/net/client.h"

typedef struct probe_settings {
  char *broker;
  char *pin;
  int64_t count;
  int64_t timeout_s;
  char *name;
} probe_settings_t;

#define PROBE_OPT(field) offsetof(probe_settings_t, field)

static const an_option_t probe_options[] = {
    {"broker", AN_OPT_STR, PROBE_OPT(broker), "127.0.0.1:7443", 0, 0, "HOST:PORT",
     "the broker's address"},
    {"pin", AN_OPT_STR, PROBE_OPT(pin), NULL, 0, 0, "PIN",
     "the broker's key pin, sha256//... (from 'archnet-broker init' or 'archnet-broker pin')"},
    {"count", AN_OPT_INT, PROBE_OPT(count), "3", 1, 100000, "N", "how many pings"},
    {"timeout", AN_OPT_INT, PROBE_OPT(timeout_s), "10", 1, 3600, "SECONDS",
     "give up on a step after this long"},
    {"name", AN_OPT_STR, PROBE_OPT(name), NULL, 0, 0, "NAME", "node name for the broker's logs"},
};

int an_probe_main(const char *program, Archnet__Role role, int argc, char **argv) {
  an_command_spec_t spec = {
      .program = program,
      .command = "ping",
      .summary = "Connect to a broker over TLS, check its key against --pin, say Hello and\n"
                 "time --count Ping round trips.",
      .section = "client",
      .options = probe_options,
      .n_options = sizeof probe_options / sizeof probe_options[0],
  };
  probe_settings_t s = {0};
  an_client_t *client = NULL;
  char software[64], err[1024];
  double min = 0, max = 0, sum = 0;
  int first, status, rc;

  if ((status = an_cli_parse(&spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (first < argc) {
    fprintf(stderr, "%s ping: unexpected argument '%s'\n", program, argv[first]);
    goto done;
  }
  if (!s.pin) {
    fprintf(stderr, "%s ping: --pin is required (the broker prints it at 'archnet-broker "
                    "init'; 'archnet-broker pin' shows it again)\n",
            program);
    goto done;
  }
  status = AN_EXIT_FAIL;
  snprintf(software, sizeof software, "%s/%s", program, AN_VERSION);
  an_client_params_t params = {
      .broker = s.broker,
      .pin = s.pin,
      .role = role,
      .node_name = s.name,
      .software = software,
      .timeout_ms = (uint64_t)s.timeout_s * 1000,
  };
  if ((rc = an_client_connect(&params, &client, err, sizeof err)) != 0) {
    fprintf(stderr, "%s ping: %s\n", program, err);
    goto done;
  }
  printf("connected to %s (%s, session %llu)\n", s.broker, an_client_broker_software(client),
         (unsigned long long)an_client_session_id(client));
  for (int64_t i = 1; i <= s.count; i++) {
    uint64_t rtt;
    if ((rc = an_client_ping(client, &rtt, err, sizeof err)) != 0) {
      fprintf(stderr, "%s ping: %s\n", program, err);
      goto done;
    }
    double ms = (double)rtt / 1e6;
    printf("pong %lld: %.3f ms\n", (long long)i, ms);
    min = i == 1 || ms < min ? ms : min;
    max = ms > max ? ms : max;
    sum += ms;
  }
  printf("%lld pings, round trip min/avg/max %.3f/%.3f/%.3f ms\n", (long long)s.count, min,
         sum / (double)s.count, max);
  status = AN_EXIT_OK;
done:
  an_client_close(client);
  an_config_free(&spec, &s);
  return status;
}
