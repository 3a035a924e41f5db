#include "common/config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "common/error.h"
#include "common/log.h"

static void *an_opt_field(const an_option_t *opt, void *settings) {
  return (char *)settings + opt->offset;
}

static int an_opt_bounded(const an_option_t *opt) { return opt->min != 0 || opt->max != 0; }

static int an_opt_bounds_error(const an_option_t *opt, const char *value, char *err,
                               size_t errlen) {
  snprintf(err, errlen, "--%s: %s is out of range [%.17g, %.17g]", opt->name, value, opt->min,
           opt->max);
  return AN_ECONFIG;
}

int an_config_parse_size(const char *text, uint64_t *out) {
  char *end;
  unsigned long long v;
  unsigned shift = 0;

  while (*text == ' ')
    text++;
  if (!(*text >= '0' && *text <= '9'))
    return AN_ECONFIG; /* rejects "-1", which strtoull would wrap */
  errno = 0;
  v = strtoull(text, &end, 10);
  if (errno || end == text)
    return AN_ECONFIG;
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: break;
  }
  if (shift && (*end == 'i' || *end == 'I') && (end[1] == 'B' || end[1] == 'b'))
    end += 2; /* "16MiB" */
  else if (shift && (*end == 'B' || *end == 'b'))
    end++; /* "16MB", still powers of 1024 */
  if (*end != '\0')
    return AN_ECONFIG;
  if (shift && v > (UINT64_MAX >> shift))
    return AN_ECONFIG;
  *out = (uint64_t)v << shift;
  return 0;
}

static int an_parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"1", "true", "yes", "on"};
  static const char *const no[] = {"0", "false", "no", "off"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(s, yes[i]) == 0) {
      *out = true;
      return 0;
    }
    if (strcasecmp(s, no[i]) == 0) {
      *out = false;
      return 0;
    }
  }
  return AN_ECONFIG;
}

int an_config_check_log_level(const char *value, char *err, size_t errlen) {
  an_log_level_t level;
  if (an_log_parse_level(value, &level) == 0)
    return 0;
  snprintf(err, errlen, "unknown log level '%s' (expected debug, info, warn, error or off)",
           value);
  return AN_ECONFIG;
}

int an_config_set(const an_option_t *opt, void *settings, const char *value, char *err,
                  size_t errlen) {
  void *field = an_opt_field(opt, settings);
  char *end;

  switch (opt->type) {
  case AN_OPT_STR: {
    char *copy;
    if (opt->check) {
      char why[256];
      if (opt->check(value, why, sizeof why) != 0) {
        snprintf(err, errlen, "--%s: %s", opt->name, why);
        return AN_ECONFIG;
      }
    }
    copy = strdup(value);
    if (!copy) {
      snprintf(err, errlen, "--%s: out of memory", opt->name);
      return AN_ECONFIG;
    }
    free(*(char **)field);
    *(char **)field = copy;
    return 0;
  }
  case AN_OPT_INT: {
    long long v;
    errno = 0;
    v = strtoll(value, &end, 10);
    if (errno || end == value || *end != '\0') {
      snprintf(err, errlen, "--%s: '%s' is not an integer", opt->name, value);
      return AN_ECONFIG;
    }
    if (an_opt_bounded(opt) && ((double)v < opt->min || (double)v > opt->max))
      return an_opt_bounds_error(opt, value, err, errlen);
    *(int64_t *)field = v;
    return 0;
  }
  case AN_OPT_SIZE: {
    uint64_t v;
    if (an_config_parse_size(value, &v) != 0) {
      snprintf(err, errlen, "--%s: '%s' is not a size (examples: 4096, 64K, 16M, 2G)",
               opt->name, value);
      return AN_ECONFIG;
    }
    if (an_opt_bounded(opt) && ((double)v < opt->min || (double)v > opt->max))
      return an_opt_bounds_error(opt, value, err, errlen);
    *(uint64_t *)field = v;
    return 0;
  }
  case AN_OPT_DOUBLE: {
    double v;
    errno = 0;
    v = strtod(value, &end);
    if (errno || end == value || *end != '\0' || !isfinite(v)) {
      snprintf(err, errlen, "--%s: '%s' is not a number", opt->name, value);
      return AN_ECONFIG;
    }
    if (an_opt_bounded(opt) && (v < opt->min || v > opt->max))
      return an_opt_bounds_error(opt, value, err, errlen);
    *(double *)field = v;
    return 0;
  }
  case AN_OPT_BOOL: {
    bool v;
    if (an_parse_bool(value, &v) != 0) {
      snprintf(err, errlen, "--%s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)",
               opt->name, value);
      return AN_ECONFIG;
    }
    *(bool *)field = v;
    return 0;
  }
  }
  snprintf(err, errlen, "--%s: option of unknown type", opt->name);
  return AN_ECONFIG;
}

static const an_option_t *an_find_option(const an_command_spec_t *spec, const char *name) {
  for (size_t i = 0; i < spec->n_options; i++)
    if (strcmp(spec->options[i].name, name) == 0)
      return &spec->options[i];
  return NULL;
}

typedef struct an_ini_ctx {
  const an_command_spec_t *spec;
  void *settings;
  char err[512]; /* first error, if any */
} an_ini_ctx_t;

static int an_ini_handler(void *user, const char *section, const char *name, const char *value) {
  an_ini_ctx_t *ctx = user;
  const an_option_t *opt;
  char why[400];

  if (section[0] && strcmp(section, ctx->spec->section) != 0)
    return 1; /* another program's section in a shared file */
  if (ctx->err[0])
    return 0;
  opt = an_find_option(ctx->spec, name);
  if (!opt) {
    snprintf(ctx->err, sizeof ctx->err, "unknown option '%s' for %s %s", name,
             ctx->spec->program, ctx->spec->command ? ctx->spec->command : "");
    return 0;
  }
  if (an_config_set(opt, ctx->settings, value, why, sizeof why) != 0) {
    snprintf(ctx->err, sizeof ctx->err, "%s", why);
    return 0;
  }
  return 1;
}

/* Debian's inih reads lines of at most 200 bytes and would parse the rest
 * of a longer line as a line of its own; refuse such files instead. */
#define AN_INI_MAX_LINE 199

static int an_config_check_lines(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  size_t len = 0;
  int c, line = 1;
  if (!f)
    return 0; /* ini_parse reports it */
  while ((c = fgetc(f)) != EOF) {
    if (c == '\n') {
      line++;
      len = 0;
    } else if (++len > AN_INI_MAX_LINE) {
      snprintf(err, errlen, "%s:%d: line longer than %d characters", path, line,
               AN_INI_MAX_LINE);
      fclose(f);
      return AN_ECONFIG;
    }
  }
  fclose(f);
  return 0;
}

static int an_config_read_file(const an_command_spec_t *spec, void *settings, const char *path,
                               char *err, size_t errlen) {
  an_ini_ctx_t ctx = {.spec = spec, .settings = settings};
  int rc;
  if (an_config_check_lines(path, err, errlen) != 0)
    return AN_ECONFIG;
  rc = ini_parse(path, an_ini_handler, &ctx);
  if (rc == -1) {
    snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
    return AN_ECONFIG;
  }
  if (rc == -2) {
    snprintf(err, errlen, "out of memory reading %s", path);
    return AN_ECONFIG;
  }
  if (rc > 0) {
    snprintf(err, errlen, "%s:%d: %s", path, rc, ctx.err[0] ? ctx.err : "syntax error");
    return AN_ECONFIG;
  }
  return 0;
}

enum { AN_FLAG_HELP = 'h', AN_FLAG_CONFIG = 1000, AN_FLAG_FIRST = 2000 };

int an_config_parse(const an_command_spec_t *spec, void *settings, int argc, char **argv,
                    int *first_arg, FILE *out, char *err, size_t errlen) {
  struct option *longopts = NULL;
  struct { int index; const char *value; } *flags = NULL;
  const char *config_path = NULL;
  size_t n_flags = 0, n = spec->n_options;
  int rc = AN_ECONFIG, c;

  err[0] = '\0';
  longopts = calloc(n + 3, sizeof *longopts);
  flags = calloc((size_t)argc + 1, sizeof *flags);
  if (!longopts || !flags) {
    snprintf(err, errlen, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    longopts[i].name = spec->options[i].name;
    longopts[i].has_arg =
        spec->options[i].type == AN_OPT_BOOL ? optional_argument : required_argument;
    longopts[i].val = AN_FLAG_FIRST + (int)i;
  }
  longopts[n] = (struct option){"help", no_argument, NULL, AN_FLAG_HELP};
  if (spec->section)
    longopts[n + 1] = (struct option){"config", required_argument, NULL, AN_FLAG_CONFIG};

  /* Pass 1: collect flags; they are applied after the defaults and the file. */
  optind = 0; /* full re-initialisation (GNU), so parse can run more than once */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    if (c == AN_FLAG_HELP) {
      an_config_print_help(spec, out);
      rc = AN_CONFIG_HELP;
      goto done;
    } else if (c == AN_FLAG_CONFIG) {
      config_path = optarg;
    } else if (c >= AN_FLAG_FIRST) {
      flags[n_flags].index = c - AN_FLAG_FIRST;
      flags[n_flags].value = optarg ? optarg : "true"; /* bare boolean flag */
      n_flags++;
    } else if (c == ':') {
      snprintf(err, errlen, "option '%s' needs a value", argv[optind - 1]);
      goto done;
    } else {
      if (optopt)
        snprintf(err, errlen, "unknown option '-%c'", optopt);
      else
        snprintf(err, errlen, "unknown option '%s'", argv[optind - 1]);
      goto done;
    }
  }
  *first_arg = optind;

  for (size_t i = 0; i < n; i++) {
    const an_option_t *opt = &spec->options[i];
    if (opt->def && an_config_set(opt, settings, opt->def, err, errlen) != 0)
      goto done; /* a bad default is a programming error, reported all the same */
  }
  if (config_path && an_config_read_file(spec, settings, config_path, err, errlen) != 0)
    goto done;
  for (size_t i = 0; i < n_flags; i++)
    if (an_config_set(&spec->options[flags[i].index], settings, flags[i].value, err, errlen))
      goto done;
  rc = 0;
done:
  free(longopts);
  free(flags);
  return rc;
}

void an_config_free(const an_command_spec_t *spec, void *settings) {
  for (size_t i = 0; i < spec->n_options; i++) {
    if (spec->options[i].type == AN_OPT_STR) {
      char **field = an_opt_field(&spec->options[i], settings);
      free(*field);
      *field = NULL;
    }
  }
}

void an_config_print_help(const an_command_spec_t *spec, FILE *out) {
  fprintf(out, "Usage: %s%s%s [OPTIONS]%s%s\n\n", spec->program, spec->command ? " " : "",
          spec->command ? spec->command : "", spec->args ? " " : "",
          spec->args ? spec->args : "");
  if (spec->summary)
    fprintf(out, "%s\n\n", spec->summary);
  fprintf(out, "Options:\n");
  for (size_t i = 0; i < spec->n_options; i++) {
    const an_option_t *opt = &spec->options[i];
    char left[64];
    if (opt->type == AN_OPT_BOOL)
      snprintf(left, sizeof left, "--%s[=BOOL]", opt->name);
    else
      snprintf(left, sizeof left, "--%s=%s", opt->name, opt->metavar ? opt->metavar : "VALUE");
    fprintf(out, "  %-28s %s", left, opt->help ? opt->help : "");
    if (opt->def && opt->def[0])
      fprintf(out, " (default: %s)", opt->def);
    fputc('\n', out);
  }
  if (spec->section)
    fprintf(out,
            "  %-28s read options from an INI file, section [%s];\n"
            "  %-28s flags given on the command line win\n",
            "--config=FILE", spec->section, "");
  fprintf(out, "  %-28s show this help\n", "-h, --help");
}
