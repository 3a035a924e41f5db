#include "common/cli.h"

#include <stdio.h>
#include <string.h>

#include "an_build_config.h"
#include "common/error.h"

static void an_cli_print_help(const an_program_t *prog, FILE *out) {
  fprintf(out, "Usage: %s COMMAND [OPTIONS] [ARGS]\n\n%s\n\nCommands:\n", prog->name,
          prog->summary);
  for (size_t i = 0; i < prog->n_commands; i++)
    fprintf(out, "  %-12s %s%s\n", prog->commands[i].name, prog->commands[i].summary,
            prog->default_command && strcmp(prog->default_command, prog->commands[i].name) == 0
                ? " (default)"
                : "");
  fprintf(out,
          "\nGeneral options:\n"
          "  -h, --help     show this help; '%s COMMAND --help' shows a command's options\n"
          "  --version      print the version and the wire protocol version\n",
          prog->name);
}

static const an_subcommand_t *an_cli_find(const an_program_t *prog, const char *name) {
  for (size_t i = 0; i < prog->n_commands; i++)
    if (strcmp(prog->commands[i].name, name) == 0)
      return &prog->commands[i];
  return NULL;
}

int an_cli_main(const an_program_t *prog, int argc, char **argv) {
  const an_subcommand_t *cmd;
  const char *first = argc > 1 ? argv[1] : NULL;

  if (first && (strcmp(first, "--help") == 0 || strcmp(first, "-h") == 0)) {
    an_cli_print_help(prog, stdout);
    return AN_EXIT_OK;
  }
  if (first && strcmp(first, "--version") == 0) {
    printf("%s %s (wire protocol %d)\n", prog->name, AN_VERSION, AN_PROTOCOL_VERSION);
    return AN_EXIT_OK;
  }
  if (first && strcmp(first, "help") == 0) {
    if (argc < 3) {
      an_cli_print_help(prog, stdout);
      return AN_EXIT_OK;
    }
    cmd = an_cli_find(prog, argv[2]);
    if (!cmd) {
      fprintf(stderr, "%s: unknown command '%s'; see '%s --help'\n", prog->name, argv[2],
              prog->name);
      return AN_EXIT_USAGE;
    }
    char *help_argv[] = {(char *)cmd->name, "--help", NULL};
    return cmd->run(2, help_argv);
  }
  if (!first || first[0] == '-') {
    if (!prog->default_command) {
      if (first)
        fprintf(stderr, "%s: unknown option '%s'; see '%s --help'\n", prog->name, first,
                prog->name);
      else
        an_cli_print_help(prog, stderr);
      return AN_EXIT_USAGE;
    }
    cmd = an_cli_find(prog, prog->default_command);
    /* argv[0] stands in for the command name. */
    return cmd->run(argc, argv);
  }
  cmd = an_cli_find(prog, first);
  if (!cmd) {
    fprintf(stderr, "%s: unknown command '%s'; see '%s --help'\n", prog->name, first,
            prog->name);
    return AN_EXIT_USAGE;
  }
  return cmd->run(argc - 1, argv + 1);
}

int an_cli_parse(const an_command_spec_t *spec, void *settings, int argc, char **argv,
                 int *first_arg) {
  char err[512];
  int rc = an_config_parse(spec, settings, argc, argv, first_arg, stdout, err, sizeof err);
  if (rc == AN_CONFIG_HELP)
    return AN_EXIT_OK;
  if (rc != 0) {
    fprintf(stderr, "%s%s%s: %s\nSee '%s%s%s --help'.\n", spec->program,
            spec->command ? " " : "", spec->command ? spec->command : "", err, spec->program,
            spec->command ? " " : "", spec->command ? spec->command : "");
    return AN_EXIT_USAGE;
  }
  return -1;
}
