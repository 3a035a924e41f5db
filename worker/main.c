/* archnet-worker: the volunteer's daemon. It enrolls with a broker, leases
 * tasks, trains on their encoded data (built-in trainer or the volunteer's
 * own command) and returns ONNX models; it can also run models locally. */
#include <signal.h>

#include "common/cli.h"
#include "common/enroll.h"
#include "common/probe.h"
#include "worker/commands.h"
#include "worker/receipts.h"

static int cmd_ping(int argc, char **argv) {
  return an_probe_main("archnet-worker", ARCHNET__ROLE__ROLE_WORKER, argc, argv);
}

static int cmd_enroll(int argc, char **argv) {
  return an_enroll_main("archnet-worker", ARCHNET__ROLE__ROLE_WORKER, "worker.credentials", argc,
                        argv);
}

static const an_subcommand_t commands[] = {
    {"ping", "check that a broker is reachable and matches its pin", cmd_ping},
    {"enroll", "enroll with a broker using a one-time token from its admin", cmd_enroll},
    {"run", "lease tasks, train on their encoded data, return models (the daemon)",
     an_worker_run},
    {"status", "show what the daemon is doing", an_worker_status},
    {"receipts", "list the signed payment receipts kept, each checked again",
     an_worker_receipts},
    {"onnx-run", "run an ONNX model on a .npy array and print top-1 labels",
     an_worker_onnx_run},
};

static const an_program_t program = {
    .name = "archnet-worker",
    .summary = "The volunteer's daemon: pulls training tasks from a broker, trains a\n"
               "classifier on H-encoded data with its own private method, and returns only\n"
               "an ONNX model.",
    .commands = commands,
    .n_commands = sizeof commands / sizeof commands[0],
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  return an_cli_main(&program, argc, argv);
}
