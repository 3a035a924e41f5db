/* archnet-publisher: the data owner's program. Trains ArchNet (the secret
 * key), encodes datasets with it, measures what the encoding hides, submits
 * tasks to a broker and fetches the models workers trained. */
#include <signal.h>

#include "common/cli.h"
#include "common/enroll.h"
#include "common/probe.h"
#include "publisher/commands.h"

static int cmd_ping(int argc, char **argv) {
  return an_probe_main("archnet-publisher", ARCHNET__ROLE__ROLE_PUBLISHER, argc, argv);
}

static int cmd_enroll(int argc, char **argv) {
  return an_enroll_main("archnet-publisher", ARCHNET__ROLE__ROLE_PUBLISHER,
                        "publisher.credentials", argc, argv);
}

static const an_subcommand_t commands[] = {
    {"ping", "check that a broker is reachable and matches its pin", cmd_ping},
    {"enroll", "enroll with a broker using a one-time token from its admin", cmd_enroll},
    {"train", "train ArchNet on your images and write the secret key (encoder + decoder)",
     an_publisher_train},
    {"encode", "encode a dataset with the key into .npy files for workers and the broker",
     an_publisher_encode},
    {"decode", "decode codes back to images with the key (a PNG grid, PSNR)", an_publisher_decode},
    {"show", "draw images next to their encoded channels (a PNG)", an_publisher_show},
    {"predict", "classify raw images with the key and the model the workers trained",
     an_publisher_predict},
    {"submit", "submit an encoded dataset as a task with a bounty (resumable upload)",
     an_publisher_submit},
    {"status", "show your tasks and balance", an_publisher_status},
    {"fetch", "download the accepted model of a task", an_publisher_fetch},
    {"cancel", "cancel a task before acceptance; the bounty comes back", an_publisher_cancel},
    {"model-info", "show a model's layers, shapes and parameter counts",
     an_publisher_model_info},
    {"baseline", "the paper's baselines: 'baseline rc4' writes RC4-encrypted datasets",
     an_publisher_baseline},
    {"audit", "measure what an attacker with k known pairs recovers from encodings",
     an_publisher_audit},
};

static const an_program_t program = {
    .name = "archnet-publisher",
    .summary = "The data owner's tool: trains ArchNet (an H-encoder and L-decoder kept as a\n"
               "secret key), uploads only H-encoded data to a broker, and fetches the model\n"
               "that volunteers trained on it.",
    .commands = commands,
    .n_commands = sizeof commands / sizeof commands[0],
};

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  return an_cli_main(&program, argc, argv);
}
