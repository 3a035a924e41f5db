/* archnet-worker: the volunteer's daemon. Leasing, training and uploading
 * arrive with later modules; for now it can check that a broker is
 * reachable and trusted, and run ONNX models locally. */
#include <signal.h>

#include "common/cli.h"
#include "common/probe.h"
#include "worker/commands.h"

static int cmd_ping(int argc, char **argv) {
  return an_probe_main("archnet-worker", ARCHNET__ROLE__ROLE_WORKER, argc, argv);
}

static const an_subcommand_t commands[] = {
    {"ping", "check that a broker is reachable and matches its pin", cmd_ping},
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
