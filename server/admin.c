/* The broker operator's subcommands. They open the broker's state database
 * directly (SQLite in WAL mode lets them run beside a live broker):
 * enrollment tokens, top-ups, nodes, tasks, the ledger and its invariants,
 * revoking a node, and re-queuing a failed task. */
#include "server/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cli.h"
#include "common/error.h"
#include "server/store.h"

typedef struct admin_settings {
  char *data_dir, *role;
  int64_t ttl;
  bool check;
} admin_settings_t;

#define OPT(f) offsetof(admin_settings_t, f)

static const an_option_t dir_option[] = {
    {"data-dir", AN_OPT_STR, OPT(data_dir), "broker-data", 0, 0, "DIR",
     "the broker's state directory"},
};

static const an_option_t enroll_options[] = {
    {"data-dir", AN_OPT_STR, OPT(data_dir), "broker-data", 0, 0, "DIR",
     "the broker's state directory"},
    {"role", AN_OPT_STR, OPT(role), NULL, 0, 0, "publisher|worker|admin",
     "what the new node may do"},
    {"ttl", AN_OPT_INT, OPT(ttl), "86400", 60, 31536000, "SECONDS",
     "how long the token stays valid"},
};

static const an_option_t ledger_options[] = {
    {"data-dir", AN_OPT_STR, OPT(data_dir), "broker-data", 0, 0, "DIR",
     "the broker's state directory"},
    {"check", AN_OPT_BOOL, OPT(check), "false", 0, 0, NULL,
     "only check the ledger's invariants (exit 1 if one fails)"},
};

#define SPEC(cmd, args_, summary_, opts)                                                  \
  static const an_command_spec_t cmd##_spec = {                                           \
      .program = "archnet-broker", .command = #cmd, .args = args_, .summary = summary_,  \
      .options = opts, .n_options = sizeof opts / sizeof opts[0]}

SPEC(enroll, NULL,
     "Make a one-time enrollment token for a new node; hand it to the node's owner\n"
     "with the broker's address and pin ('archnet-broker pin').",
     enroll_options);
SPEC(topup, "NODE CREDITS", "Credit a node's balance (a publisher's, to fund bounties).",
     dir_option);
SPEC(nodes, NULL, "List the enrolled nodes with their roles and balances.", dir_option);
SPEC(tasks, NULL, "List every task with its state.", dir_option);
SPEC(ledger, NULL,
     "Show the balances and check the ledger's invariants: all entries sum to zero,\n"
     "no balance below zero, at most one payout per task.",
     ledger_options);
SPEC(revoke, "NODE", "Revoke a node's credentials; it can no longer connect.", dir_option);
SPEC(kick, "TASK", "Queue a failed task again (its publisher pays the bounty again).",
     dir_option);

static int open_store(const char *dir, an_store_t **st) {
  char path[4200], err[1024];
  snprintf(path, sizeof path, "%s/state.db", dir);
  int rc = an_store_open(path, st, err, sizeof err);
  if (rc)
    fprintf(stderr, "archnet-broker: %s\n", err);
  return rc;
}

static int64_t int_arg(const char *s) {
  char *end;
  long long v = strtoll(s, &end, 10);
  return *s && !*end && v > 0 ? (int64_t)v : 0;
}

/* Parses the options and the expected positional arguments; returns an
 * exit status >= 0 when done, -1 to go on. */
static int parse(const an_command_spec_t *spec, admin_settings_t *s, int argc, char **argv,
                 int nargs, int64_t *args) {
  int first, status = an_cli_parse(spec, s, argc, argv, &first);
  if (status >= 0)
    return status;
  if (argc - first != nargs) {
    fprintf(stderr, "archnet-broker %s: needs %s; see --help\n", spec->command,
            spec->args ? spec->args : "no arguments");
    return AN_EXIT_USAGE;
  }
  for (int i = 0; i < nargs; i++)
    if (!(args[i] = int_arg(argv[first + i]))) {
      fprintf(stderr, "archnet-broker %s: '%s' is not a positive number\n", spec->command,
              argv[first + i]);
      return AN_EXIT_USAGE;
    }
  return -1;
}

int an_admin_enroll(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  char token[AN_DIGEST_HEX];
  int status = parse(&enroll_spec, &s, argc, argv, 0, NULL);
  if (status >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  an_role_t role = !s.role                       ? 0
                   : !strcmp(s.role, "publisher") ? AN_ROLE_PUBLISHER
                   : !strcmp(s.role, "worker")    ? AN_ROLE_WORKER
                   : !strcmp(s.role, "admin")     ? AN_ROLE_ADMIN
                                                  : 0;
  if (!role) {
    fprintf(stderr, "archnet-broker enroll: --role must be publisher, worker or admin\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  int rc = an_store_token_create(st, role, (int64_t)time(NULL), s.ttl, token);
  if (rc) {
    fprintf(stderr, "archnet-broker enroll: %s\n", an_strerror(rc));
    goto done;
  }
  printf("%s\n", token);
  fprintf(stderr, "a one-time %s token, valid for %lld s: the node runs\n"
                  "  archnet-%s enroll --broker HOST:PORT --pin PIN --token %s\n",
          s.role, (long long)s.ttl, role == AN_ROLE_WORKER ? "worker" : "publisher", token);
  status = AN_EXIT_OK;
done:
  an_store_close(st);
  an_config_free(&enroll_spec, &s);
  return status;
}

int an_admin_topup(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  int64_t a[2], bal = 0;
  int status = parse(&topup_spec, &s, argc, argv, 2, a);
  if (status >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  int rc = an_store_topup(st, a[0], a[1], (int64_t)time(NULL));
  if (rc || (rc = an_store_balance(st, a[0], &bal)) != 0) {
    fprintf(stderr, "archnet-broker topup: node %lld: %s\n", (long long)a[0], an_strerror(rc));
    goto done;
  }
  printf("node %lld: +%lld credits, balance %lld\n", (long long)a[0], (long long)a[1],
         (long long)bal);
  status = AN_EXIT_OK;
done:
  an_store_close(st);
  an_config_free(&topup_spec, &s);
  return status;
}

static const char *role_name(an_role_t r) {
  return r == AN_ROLE_PUBLISHER ? "publisher" : r == AN_ROLE_WORKER ? "worker" : "admin";
}

static int print_node(const an_node_info_t *n, void *arg) {
  (void)arg;
  printf("%6lld  %-9s  %-24s  balance %12lld%s\n", (long long)n->id, role_name(n->role),
         n->name, (long long)n->balance, n->revoked ? "  (revoked)" : "");
  return 0;
}

int an_admin_nodes(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  int status = parse(&nodes_spec, &s, argc, argv, 0, NULL);
  if (status >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  status = an_store_nodes(st, print_node, NULL) == 0 ? AN_EXIT_OK : AN_EXIT_FAIL;
done:
  an_store_close(st);
  an_config_free(&nodes_spec, &s);
  return status;
}

static int print_task(const an_task_t *t, void *arg) {
  (void)arg;
  printf("%6lld  %-10s  publisher %lld  bounty %lld  attempts %d/%d", (long long)t->id,
         an_task_state_name(t->state), (long long)t->spec.publisher, (long long)t->spec.bounty,
         t->attempts, t->spec.max_attempts);
  if (t->worker)
    printf("  worker %lld", (long long)t->worker);
  if (t->accuracy >= 0)
    printf("  accuracy %.4f", t->accuracy);
  if (t->reason[0])
    printf("  (%s)", t->reason);
  printf("\n");
  return 0;
}

int an_admin_tasks(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  int status = parse(&tasks_spec, &s, argc, argv, 0, NULL);
  if (status >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  status = an_store_tasks(st, 0, print_task, NULL) == 0 ? AN_EXIT_OK : AN_EXIT_FAIL;
done:
  an_store_close(st);
  an_config_free(&tasks_spec, &s);
  return status;
}

int an_admin_ledger(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  char err[1024];
  int status = parse(&ledger_spec, &s, argc, argv, 0, NULL);
  if (status >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  if (!s.check && an_store_nodes(st, print_node, NULL) != 0)
    goto done;
  if (an_store_ledger_check(st, err, sizeof err) != 0) {
    printf("ledger check FAILED: %s\n", err);
    goto done;
  }
  printf("ledger check: ok (entries sum to zero, no negative balance, at most one payout per "
         "task)\n");
  status = AN_EXIT_OK;
done:
  an_store_close(st);
  an_config_free(&ledger_spec, &s);
  return status;
}

int an_admin_revoke(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  int64_t node;
  int status = parse(&revoke_spec, &s, argc, argv, 1, &node);
  if (status >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  int rc = an_store_revoke(st, node);
  if (rc) {
    fprintf(stderr, "archnet-broker revoke: node %lld: %s\n", (long long)node, an_strerror(rc));
    goto done;
  }
  printf("node %lld revoked\n", (long long)node);
  status = AN_EXIT_OK;
done:
  an_store_close(st);
  an_config_free(&revoke_spec, &s);
  return status;
}

int an_admin_kick(int argc, char **argv) {
  admin_settings_t s = {0};
  an_store_t *st = NULL;
  int64_t task;
  int status = parse(&kick_spec, &s, argc, argv, 1, &task);
  if (status >= 0)
    goto done;
  status = AN_EXIT_FAIL;
  if (open_store(s.data_dir, &st) != 0)
    goto done;
  int rc = an_store_task_kick(st, task, (int64_t)time(NULL));
  if (rc) {
    fprintf(stderr, "archnet-broker kick: task %lld: %s\n", (long long)task, an_strerror(rc));
    goto done;
  }
  printf("task %lld queued again\n", (long long)task);
  status = AN_EXIT_OK;
done:
  an_store_close(st);
  an_config_free(&kick_spec, &s);
  return status;
}
