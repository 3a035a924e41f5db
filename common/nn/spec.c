#include "common/nn/spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

#define AN_SPEC_MAX_TOKENS 16

static const struct {
  const char *name;
  an_op_kind_t kind;
} an_spec_kinds[] = {
    {"conv", AN_OP_CONV},       {"convt", AN_OP_CONVT},         {"linear", AN_OP_LINEAR},
    {"relu", AN_OP_RELU},       {"leakyrelu", AN_OP_LEAKY_RELU}, {"sigmoid", AN_OP_SIGMOID},
    {"tanh", AN_OP_TANH},       {"maxpool", AN_OP_MAXPOOL},     {"avgpool", AN_OP_AVGPOOL},
    {"gap", AN_OP_GAP},         {"batchnorm", AN_OP_BATCHNORM}, {"dropout", AN_OP_DROPOUT},
    {"flatten", AN_OP_FLATTEN}, {"reshape", AN_OP_RESHAPE},     {"add", AN_OP_ADD},
};

static int an_parse_int(const char *s, int lo, int hi, int *out) {
  char *end;
  long v;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return -1;
  *out = (int)v;
  return 0;
}

static int an_parse_float(const char *s, float *out) {
  char *end;
  errno = 0;
  *out = strtof(s, &end);
  return errno || end == s || *end || !isfinite(*out) ? -1 : 0;
}

/* Splits a line in place into whitespace-separated tokens. */
static int an_tokenize(char *line, char **tok) {
  int n = 0;
  for (char *p = strtok(line, " \t\r"); p; p = strtok(NULL, " \t\r")) {
    if (n == AN_SPEC_MAX_TOKENS)
      return -1;
    tok[n++] = p;
  }
  return n;
}

/* Fills a layer desc from "kind positional... key=value..." tokens. */
static int an_parse_layer(char **tok, int n, an_layer_desc_t *d, char *why, size_t whylen) {
  int kind = -1, npos = 0;
  memset(d, 0, sizeof *d);
  for (size_t i = 0; i < sizeof an_spec_kinds / sizeof an_spec_kinds[0]; i++)
    if (strcmp(tok[0], an_spec_kinds[i].name) == 0)
      kind = (int)an_spec_kinds[i].kind;
  if (kind < 0) {
    snprintf(why, whylen, "unknown layer '%s'", tok[0]);
    return -1;
  }
  d->kind = (an_op_kind_t)kind;
  if (kind == AN_OP_DROPOUT)
    d->alpha = 0.5f;
  for (int i = 1; i < n; i++) {
    char *eq = strchr(tok[i], '=');
    if (!eq) { /* positional */
      int v;
      if (kind == AN_OP_ADD && npos == 0) {
        d->with = tok[i];
      } else if ((kind == AN_OP_CONV || kind == AN_OP_CONVT || kind == AN_OP_LINEAR) &&
                 npos == 0 && an_parse_int(tok[i], 1, 1 << 24, &v) == 0) {
        d->out = v;
      } else if (kind == AN_OP_RESHAPE && npos < 3 &&
                 an_parse_int(tok[i], 1, 1 << 24, &v) == 0) {
        d->shape[npos] = v;
      } else {
        snprintf(why, whylen, "unexpected argument '%s' for %s", tok[i], tok[0]);
        return -1;
      }
      npos++;
      continue;
    }
    *eq = '\0';
    const char *key = tok[i], *val = eq + 1;
    int ok = -1, v;
    if (strcmp(key, "k") == 0)
      ok = an_parse_int(val, 1, 64, &d->k);
    else if (strcmp(key, "s") == 0)
      ok = an_parse_int(val, 1, 64, &d->s);
    else if (strcmp(key, "p") == 0 && kind == AN_OP_DROPOUT)
      ok = an_parse_float(val, &d->alpha);
    else if (strcmp(key, "p") == 0)
      ok = an_parse_int(val, 0, 63, &d->p);
    else if (strcmp(key, "bias") == 0 && an_parse_int(val, 0, 1, &v) == 0)
      d->no_bias = !v, ok = 0;
    else if (strcmp(key, "alpha") == 0 || strcmp(key, "eps") == 0)
      ok = an_parse_float(val, &d->alpha);
    else if (strcmp(key, "momentum") == 0)
      ok = an_parse_float(val, &d->momentum);
    else if (strcmp(key, "from") == 0)
      d->from = val, ok = 0;
    if (ok != 0) {
      snprintf(why, whylen, "bad option '%s=%s' for %s", key, val, tok[0]);
      return -1;
    }
  }
  if ((kind == AN_OP_CONV || kind == AN_OP_CONVT || kind == AN_OP_LINEAR) && !d->out) {
    snprintf(why, whylen, "%s needs an output size", tok[0]);
    return -1;
  }
  if ((kind == AN_OP_CONV || kind == AN_OP_CONVT || kind == AN_OP_MAXPOOL ||
       kind == AN_OP_AVGPOOL) && !d->k) {
    snprintf(why, whylen, "%s needs k=", tok[0]);
    return -1;
  }
  if ((kind == AN_OP_CONV || kind == AN_OP_CONVT) && !d->s)
    d->s = 1;
  if (kind == AN_OP_RESHAPE && npos != 3) {
    snprintf(why, whylen, "reshape needs C H W");
    return -1;
  }
  if (kind == AN_OP_ADD && !d->with) {
    snprintf(why, whylen, "add needs the label of the layer to add");
    return -1;
  }
  return 0;
}

int an_model_parse(const char *text, an_model_t **out, char *err, size_t errlen) {
  an_model_t *m = NULL;
  const char *p = text;
  int lineno = 0, rc = AN_EMODEL;
  char line[512], why[256];

  *out = NULL;
  while (*p) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    char *tok[AN_SPEC_MAX_TOKENS], *hash, *label = NULL;
    int n;
    lineno++;
    if (len >= sizeof line) {
      snprintf(err, errlen, "line %d: longer than %zu characters", lineno, sizeof line - 1);
      goto fail;
    }
    memcpy(line, p, len);
    line[len] = '\0';
    p = nl ? nl + 1 : p + len;
    if ((hash = strchr(line, '#')))
      *hash = '\0';
    if ((n = an_tokenize(line, tok)) < 0) {
      snprintf(err, errlen, "line %d: too many words", lineno);
      goto fail;
    }
    if (n == 0)
      continue;
    size_t tl = strlen(tok[0]);
    if (tl > 1 && tok[0][tl - 1] == ':') { /* "label:" */
      tok[0][tl - 1] = '\0';
      label = tok[0];
      if (tl - 1 >= 32) {
        snprintf(err, errlen, "line %d: label longer than 31 characters", lineno);
        goto fail;
      }
      memmove(tok, tok + 1, (size_t)--n * sizeof *tok);
      if (n == 0) {
        snprintf(err, errlen, "line %d: a label needs a layer after it", lineno);
        goto fail;
      }
    }
    if (!m) {
      int c, h, w;
      if (strcmp(tok[0], "input") != 0 || n != 4 || an_parse_int(tok[1], 1, 65536, &c) ||
          an_parse_int(tok[2], 1, 65536, &h) || an_parse_int(tok[3], 1, 65536, &w)) {
        snprintf(err, errlen, "line %d: a spec starts with 'input C H W'", lineno);
        goto fail;
      }
      if ((rc = an_model_new(c, h, w, &m)) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
      }
      rc = AN_EMODEL;
      continue;
    }
    an_layer_desc_t d;
    if (an_parse_layer(tok, n, &d, why, sizeof why) != 0) {
      snprintf(err, errlen, "line %d: %s", lineno, why);
      goto fail;
    }
    d.label = label;
    if (an_model_add(m, &d, why, sizeof why) != 0) {
      snprintf(err, errlen, "line %d: %s", lineno, why);
      goto fail;
    }
  }
  if (!m || an_model_layer_count(m) == 0) {
    snprintf(err, errlen, "the spec has no layers");
    goto fail;
  }
  *out = m;
  return 0;
fail:
  an_model_free(m);
  return rc;
}

int an_model_to_spec(const an_model_t *m, char *buf, size_t len) {
  size_t used = 0;
  int chw[3], n;
#define AN_EMIT(...)                                                                       \
  do {                                                                                     \
    n = snprintf(buf + used, len - used, __VA_ARGS__);                                     \
    if (n < 0 || (size_t)n >= len - used)                                                  \
      return AN_ETOOBIG;                                                                   \
    used += (size_t)n;                                                                     \
  } while (0)
  an_model_input_shape(m, chw);
  AN_EMIT("input %d %d %d\n", chw[0], chw[1], chw[2]);
  for (int i = 0; i < an_model_layer_count(m); i++) {
    an_layer_info_t li;
    const an_layer_desc_t *d = &li.desc;
    an_model_layer_info(m, i, &li);
    if (d->label && d->label[0])
      AN_EMIT("%s: ", d->label);
    AN_EMIT("%s", an_op_name(d->kind));
    switch (d->kind) {
    case AN_OP_CONV:
    case AN_OP_CONVT:
      AN_EMIT(" %d k=%d s=%d p=%d", d->out, d->k, d->s, d->p);
      break;
    case AN_OP_LINEAR:
      AN_EMIT(" %d", d->out);
      break;
    case AN_OP_MAXPOOL:
    case AN_OP_AVGPOOL:
      AN_EMIT(" k=%d s=%d p=%d", d->k, d->s, d->p);
      break;
    case AN_OP_LEAKY_RELU:
      AN_EMIT(" alpha=%.9g", d->alpha);
      break;
    case AN_OP_DROPOUT:
      AN_EMIT(" p=%.9g", d->alpha);
      break;
    case AN_OP_BATCHNORM:
      AN_EMIT(" eps=%.9g momentum=%.9g", d->alpha, d->momentum);
      break;
    case AN_OP_RESHAPE:
      AN_EMIT(" %d %d %d", d->shape[0], d->shape[1], d->shape[2]);
      break;
    case AN_OP_ADD:
      AN_EMIT(" %s", d->with);
      break;
    default:
      break;
    }
    if ((d->kind == AN_OP_CONV || d->kind == AN_OP_CONVT || d->kind == AN_OP_LINEAR) &&
        d->no_bias)
      AN_EMIT(" bias=0");
    if (d->from && d->from[0])
      AN_EMIT(" from=%s", d->from);
    AN_EMIT("\n");
  }
#undef AN_EMIT
  return 0;
}
