/* Credentials files (see credentials.h), in JSON with jansson. */
#include "common/credentials.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <uv.h>

#include "common/error.h"
#include "common/small_file.h"

int an_credentials_write(const char *path, const an_credentials_t *c, char *err, size_t errlen) {
  int rc = UV_ENOMEM;
  json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:i, s:s}", "broker", c->broker, "pin", c->pin,
                        "node_id", (json_int_t)c->node_id, "secret", c->secret, "role", c->role,
                        "name", c->name);
  if (!j)
    snprintf(err, errlen, "out of memory");
  else
    rc = an_json_write_file(path, j, 0600, err, errlen);
  json_decref(j);
  return rc;
}

static int an_copy(json_t *j, const char *key, char *dst, size_t cap) {
  const char *v = json_string_value(json_object_get(j, key));
  if (!v || !v[0] || strlen(v) >= cap)
    return -1;
  memcpy(dst, v, strlen(v) + 1);
  return 0;
}

int an_credentials_read(const char *path, an_credentials_t *c, char *err, size_t errlen) {
  json_error_t je;
  json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
  const char *bad = NULL;
  memset(c, 0, sizeof *c);
  if (!j) {
    snprintf(err, errlen, "%s: %s%s", path, je.text,
             je.line < 0 ? " (enroll first: see 'enroll --help')" : "");
    return je.line < 0 ? UV_ENOENT : AN_EFORMAT;
  }
  json_int_t id = json_integer_value(json_object_get(j, "node_id"));
  if (an_copy(j, "broker", c->broker, sizeof c->broker))
    bad = "broker";
  else if (an_copy(j, "pin", c->pin, sizeof c->pin))
    bad = "pin";
  else if (an_copy(j, "secret", c->secret, sizeof c->secret))
    bad = "secret";
  else if (id <= 0)
    bad = "node_id";
  c->node_id = (uint64_t)id;
  c->role = (int)json_integer_value(json_object_get(j, "role"));
  an_copy(j, "name", c->name, sizeof c->name);
  json_decref(j);
  if (bad) {
    snprintf(err, errlen, "%s: missing or invalid '%s'", path, bad);
    return AN_EFORMAT;
  }
  return 0;
}

int an_credentials_connect(const an_credentials_t *c, const char *software, uint64_t timeout_ms,
                           an_client_t **out, char *err, size_t errlen) {
  an_client_params_t p = {
      .broker = c->broker,
      .pin = c->pin,
      .role = (Archnet__Role)c->role,
      .node_name = c->name,
      .software = software,
      .timeout_ms = timeout_ms,
      .node_id = c->node_id,
      .secret = c->secret,
  };
  return an_client_connect(&p, out, err, errlen);
}
