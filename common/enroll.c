/* `enroll` (see enroll.h). */
#include "common/enroll.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "an_build_config.h"
#include "common/arena.h"
#include "common/cli.h"
#include "common/credentials.h"
#include "common/error.h"
#include "common/net/client.h"

typedef struct enroll_settings {
  char *broker, *pin, *token, *name, *credentials;
  bool force;
} enroll_settings_t;

#define OPT(f) offsetof(enroll_settings_t, f)

static const an_option_t enroll_options[] = {
    {"broker", AN_OPT_STR, OPT(broker), "127.0.0.1:7443", 0, 0, "HOST:PORT",
     "the broker's address"},
    {"pin", AN_OPT_STR, OPT(pin), NULL, 0, 0, "PIN",
     "the broker's key pin, sha256//... ('archnet-broker pin' prints it)"},
    {"token", AN_OPT_STR, OPT(token), NULL, 0, 0, "TOKEN",
     "the one-time token from 'archnet-broker enroll'"},
    {"name", AN_OPT_STR, OPT(name), NULL, 0, 0, "NAME",
     "this node's name in the broker's lists (default: the host name)"},
    {"credentials", AN_OPT_STR, OPT(credentials), NULL, 0, 0, "FILE",
     "where to save the node's credentials"},
    {"force", AN_OPT_BOOL, OPT(force), "false", 0, 0, NULL,
     "replace an existing credentials file"},
};

int an_enroll_main(const char *program, Archnet__Role role, const char *default_file, int argc,
                   char **argv) {
  an_command_spec_t spec = {
      .program = program,
      .command = "enroll",
      .summary = "Enroll this node with a broker: trade a one-time token from the broker's\n"
                 "admin for credentials, saved (mode 0600) for this program's other commands.",
      .section = "client",
      .options = enroll_options,
      .n_options = sizeof enroll_options / sizeof enroll_options[0],
  };
  enroll_settings_t s = {0};
  an_client_t *client = NULL;
  an_credentials_t cred = {0};
  an_arena_t arena;
  char software[64], err[1024], host[64];
  int first, status, rc;

  an_arena_init(&arena, 0, 0);
  if ((status = an_cli_parse(&spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (first < argc || !s.pin || !s.token) {
    fprintf(stderr, "%s enroll: --pin and --token are required; see --help\n", program);
    goto done;
  }
  const char *file = s.credentials ? s.credentials : default_file;
  status = AN_EXIT_FAIL;
  if (!s.force && access(file, F_OK) == 0) {
    fprintf(stderr, "%s enroll: %s exists: this node is enrolled (use --force to replace it)\n",
            program, file);
    goto done;
  }
  if (!s.name && gethostname(host, sizeof host) == 0)
    host[sizeof host - 1] = '\0';
  else
    snprintf(host, sizeof host, "%s", s.name ? s.name : "node");
  snprintf(software, sizeof software, "%s/%s", program, AN_VERSION);
  an_client_params_t p = {.broker = s.broker, .pin = s.pin, .role = role, .node_name = host,
                          .software = software};
  if ((rc = an_client_connect(&p, &client, err, sizeof err)) != 0) {
    fprintf(stderr, "%s enroll: %s\n", program, err);
    goto done;
  }
  Archnet__Envelope req = ARCHNET__ENVELOPE__INIT, *reply = NULL;
  Archnet__Enroll en = ARCHNET__ENROLL__INIT;
  en.token = s.token;
  en.name = host;
  req.body_case = ARCHNET__ENVELOPE__BODY_ENROLL;
  req.enroll = &en;
  if ((rc = an_client_call(client, &req, &arena, &reply, err, sizeof err)) != 0 ||
      reply->body_case != ARCHNET__ENVELOPE__BODY_ENROLL_OK) {
    fprintf(stderr, "%s enroll: %s\n", program, rc ? err : "unexpected reply");
    goto done;
  }
  if ((int)reply->enroll_ok->role != (int)role) {
    fprintf(stderr, "%s enroll: the token is for another role; ask for a %s token\n", program,
            role == ARCHNET__ROLE__ROLE_WORKER ? "worker" : "publisher");
    goto done;
  }
  snprintf(cred.broker, sizeof cred.broker, "%s", s.broker);
  snprintf(cred.pin, sizeof cred.pin, "%s", s.pin);
  snprintf(cred.secret, sizeof cred.secret, "%s", reply->enroll_ok->secret);
  snprintf(cred.name, sizeof cred.name, "%s", host);
  cred.node_id = reply->enroll_ok->node_id;
  cred.role = (int)role;
  if ((rc = an_credentials_write(file, &cred, err, sizeof err)) != 0) {
    fprintf(stderr, "%s enroll: %s\n", program, err);
    goto done;
  }
  printf("enrolled as node %llu; credentials saved to %s (keep this file private)\n",
         (unsigned long long)cred.node_id, file);
  status = AN_EXIT_OK;
done:
  an_client_close(client);
  an_arena_destroy(&arena);
  an_config_free(&spec, &s);
  return status;
}
