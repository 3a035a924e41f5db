/* One option table per command, shared by the config file and the flags.
 *
 * A program describes each setting once (name, type, bounds, default, help)
 * and gets: defaults applied, an INI config file read with inih, command-line
 * flags parsed with getopt_long, every value validated against its bounds,
 * and a --help text generated from the same table. Precedence, lowest first:
 * default, config file, flag.
 *
 * Values are written into the caller's settings struct at each option's
 * `offset`. Strings are heap copies owned by the settings struct; release them
 * with an_config_free. */
#ifndef AN_CONFIG_H
#define AN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum an_opt_type {
  AN_OPT_STR,    /* char *            */
  AN_OPT_INT,    /* int64_t           */
  AN_OPT_SIZE,   /* uint64_t; accepts K, M, G, T suffixes (powers of 1024) */
  AN_OPT_DOUBLE, /* double            */
  AN_OPT_BOOL    /* bool; "true/false/yes/no/on/off/1/0", a bare flag is true */
} an_opt_type_t;

typedef struct an_option {
  const char *name;    /* "--name" on the command line, "name = " in the file */
  an_opt_type_t type;
  size_t offset;       /* offsetof(settings struct, field) */
  const char *def;     /* default, as text; NULL = empty string / 0 / false */
  double min, max;     /* bounds for numeric types; both 0 = unbounded */
  const char *metavar; /* shown in --help: "HOST:PORT", "DIR", ... */
  const char *help;    /* one line */
  /* Optional extra check of a string value (e.g. one of a fixed set). */
  int (*check)(const char *value, char *err, size_t errlen);
} an_option_t;

typedef struct an_command_spec {
  const char *program;  /* "archnet-broker" */
  const char *command;  /* "run"; NULL for a program without subcommands */
  const char *args;     /* positional arguments in the usage line, or NULL */
  const char *summary;  /* a paragraph for --help */
  const char *section;  /* INI section read from --config; NULL = no --config */
  const an_option_t *options;
  size_t n_options;
} an_command_spec_t;

/* Result of an_config_parse besides 0 and AN_ECONFIG. */
#define AN_CONFIG_HELP 1 /* --help was given and the help was printed */

/* Parses argv[0..argc) (argv[0] is the command's own name and is skipped).
 * Positional arguments are moved to the end of argv in order; their index is
 * stored in *first_arg. On error returns AN_ECONFIG with a message in `err`
 * naming the flag or file:line. --help prints to `out` and returns
 * AN_CONFIG_HELP. The settings struct must be zeroed by the caller. */
int an_config_parse(const an_command_spec_t *spec, void *settings, int argc, char **argv,
                    int *first_arg, FILE *out, char *err, size_t errlen);

/* Sets one option from text, as the file and flags do. For tests and for
 * programs that compute a value. */
int an_config_set(const an_option_t *opt, void *settings, const char *value, char *err,
                  size_t errlen);

/* Frees the strings an_config_parse stored in `settings`. */
void an_config_free(const an_command_spec_t *spec, void *settings);

/* Writes the generated help text. */
void an_config_print_help(const an_command_spec_t *spec, FILE *out);

/* Parses a size with an optional K/M/G/T suffix. Returns 0 or AN_ECONFIG. */
int an_config_parse_size(const char *text, uint64_t *out);

/* A check function for options holding a log level name. */
int an_config_check_log_level(const char *value, char *err, size_t errlen);

#endif
