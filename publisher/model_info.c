/* `archnet-publisher model-info`: each layer of a preset or spec file with its
 * output shape and parameter count, the total on the last line. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/nn/model.h"
#include "common/nn/spec.h"
#include "common/small_file.h"
#include "publisher/commands.h"

typedef struct info_settings {
  char *preset;
  char *spec;
  char *input;
  int64_t classes;
  bool print_spec;
} info_settings_t;

#define INFO_OPT(f) offsetof(info_settings_t, f)

static const an_option_t info_options[] = {
    {"preset", AN_OPT_STR, INFO_OPT(preset), NULL, 0, 0, "NAME",
     "archnet-mnist, archnet-cifar10, cnn-small or resnet18"},
    {"spec", AN_OPT_STR, INFO_OPT(spec), NULL, 0, 0, "FILE", "a model spec file instead"},
    {"input", AN_OPT_STR, INFO_OPT(input), NULL, 0, 0, "CxHxW",
     "input shape for the classifier presets (e.g. 10x56x56)"},
    {"classes", AN_OPT_INT, INFO_OPT(classes), "10", 1, 65536, "N",
     "outputs of the classifier presets"},
    {"print-spec", AN_OPT_BOOL, INFO_OPT(print_spec), "false", 0, 0, NULL,
     "print the preset's spec text instead (a starting point for --spec)"},
};

static const an_command_spec_t info_spec = {
    .program = "archnet-publisher",
    .command = "model-info",
    .summary = "Show a model layer by layer: output shape and parameters of each layer, and\n"
               "the total as 'params: N' on the last line.",
    .options = info_options,
    .n_options = sizeof info_options / sizeof info_options[0],
};

int an_publisher_model_info(int argc, char **argv) {
  info_settings_t s = {0};
  an_model_t *m = NULL;
  char err[512], *text = NULL, specbuf[8192];
  int first, status, chw[3] = {0, 0, 0};

  if ((status = an_cli_parse(&info_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (!s.preset == !s.spec) {
    fprintf(stderr, "archnet-publisher model-info: give exactly one of --preset or --spec\n");
    goto done;
  }
  if (s.input && (sscanf(s.input, "%dx%dx%d", &chw[0], &chw[1], &chw[2]) != 3 || chw[0] <= 0 ||
                  chw[1] <= 0 || chw[2] <= 0)) {
    fprintf(stderr, "archnet-publisher model-info: --input '%s' is not CxHxW\n", s.input);
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (s.preset && s.print_spec) {
    if (an_preset_spec(s.preset, chw, (int)s.classes, specbuf, sizeof specbuf, err,
                       sizeof err) != 0) {
      fprintf(stderr, "archnet-publisher model-info: %s\n", err);
      goto done;
    }
    fputs(specbuf, stdout);
    status = AN_EXIT_OK;
    goto done;
  }
  if (s.preset) {
    if (an_model_preset(s.preset, chw, (int)s.classes, &m, err, sizeof err) != 0) {
      fprintf(stderr, "archnet-publisher model-info: %s\n", err);
      goto done;
    }
  } else {
    if (!(text = an_small_file_read(s.spec, 1 << 20))) {
      fprintf(stderr, "archnet-publisher model-info: cannot read %s (missing, unreadable or "
                      "over 1 MiB)\n",
              s.spec);
      goto done;
    }
    if (an_model_parse(text, &m, err, sizeof err) != 0) {
      fprintf(stderr, "archnet-publisher model-info: %s: %s\n", s.spec, err);
      goto done;
    }
  }
  an_model_describe(m, stdout);
  status = AN_EXIT_OK;
done:
  an_model_free(m);
  free(text);
  an_config_free(&info_spec, &s);
  return status;
}
