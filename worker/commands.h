/* The worker's subcommands, one file each. */
#ifndef AN_WORKER_COMMANDS_H
#define AN_WORKER_COMMANDS_H

int an_worker_onnx_run(int argc, char **argv);

int an_worker_run(int argc, char **argv);
int an_worker_status(int argc, char **argv);

#endif
