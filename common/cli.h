/* Subcommand dispatch shared by the three programs:
 *   archnet-broker [--version | --help | help CMD | CMD [OPTIONS] [ARGS]]
 * Exit statuses: 0 success, 1 the command failed, 2 usage error. */
#ifndef AN_CLI_H
#define AN_CLI_H

#include "common/config.h"

enum { AN_EXIT_OK = 0, AN_EXIT_FAIL = 1, AN_EXIT_USAGE = 2 };

typedef struct an_subcommand {
  const char *name;
  const char *summary;             /* one line for the program's --help */
  int (*run)(int argc, char **argv); /* argv[0] is the subcommand's name */
} an_subcommand_t;

typedef struct an_program {
  const char *name;    /* "archnet-broker" */
  const char *summary; /* a paragraph */
  const an_subcommand_t *commands;
  size_t n_commands;
  /* Run when the first argument is an option or absent; NULL = print help
   * and exit with AN_EXIT_USAGE when no command is given. */
  const char *default_command;
} an_program_t;

/* The main() of a program. Returns the process exit status. */
int an_cli_main(const an_program_t *prog, int argc, char **argv);

/* Parses a command's options (an_config_parse) and handles the outcome the
 * same way everywhere: errors are printed with a pointer to --help. Returns
 * -1 to go on, or the exit status to return now. */
int an_cli_parse(const an_command_spec_t *spec, void *settings, int argc, char **argv,
                 int *first_arg);

#endif
