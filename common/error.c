#include "common/error.h"

#include <uv.h>

static const struct {
  const char *name;
  const char *text;
} an_errors[] = {
  [-(AN_EPROTO - AN_ERR_BASE)] = {"AN_EPROTO", "protocol violation by peer"},
  [-(AN_ETOOBIG - AN_ERR_BASE)] = {"AN_ETOOBIG", "size exceeds the configured limit"},
  [-(AN_EAUTH - AN_ERR_BASE)] = {"AN_EAUTH", "authentication failed"},
  [-(AN_EDB - AN_ERR_BASE)] = {"AN_EDB", "state database error"},
  [-(AN_EMODEL - AN_ERR_BASE)] = {"AN_EMODEL", "model refused"},
  [-(AN_ETLS - AN_ERR_BASE)] = {"AN_ETLS", "TLS error"},
  [-(AN_EPIN - AN_ERR_BASE)] = {"AN_EPIN", "peer certificate does not match the pinned key"},
  [-(AN_ETRUNC - AN_ERR_BASE)] = {"AN_ETRUNC", "connection closed in the middle of a frame"},
  [-(AN_ECONFIG - AN_ERR_BASE)] = {"AN_ECONFIG", "invalid configuration"},
  [-(AN_EVERSION - AN_ERR_BASE)] = {"AN_EVERSION", "no protocol version in common with peer"},
  [-(AN_EREMOTE - AN_ERR_BASE)] = {"AN_EREMOTE", "peer reported an error"},
  [-(AN_EFORMAT - AN_ERR_BASE)] = {"AN_EFORMAT", "malformed file"},
  [-(AN_ECLOSED - AN_ERR_BASE)] = {"AN_ECLOSED", "connection is closing"},
  [-(AN_EUNSUPPORTED - AN_ERR_BASE)] = {"AN_EUNSUPPORTED", "feature not supported"},
  [-(AN_ENOTFOUND - AN_ERR_BASE)] = {"AN_ENOTFOUND", "not found"},
  [-(AN_ESTATE - AN_ERR_BASE)] = {"AN_ESTATE", "not allowed in the current state"},
  [-(AN_EFORBIDDEN - AN_ERR_BASE)] = {"AN_EFORBIDDEN", "forbidden"},
  [-(AN_EFUNDS - AN_ERR_BASE)] = {"AN_EFUNDS", "insufficient credits"},
  [-(AN_ENOSPACE - AN_ERR_BASE)] = {"AN_ENOSPACE", "not enough free disk space"},
};

static int an_is_project_code(int code) {
  return code < AN_ERR_BASE && code > AN_ERR_LAST;
}

const char *an_strerror(int code) {
  if (code == 0)
    return "success";
  if (an_is_project_code(code))
    return an_errors[-(code - AN_ERR_BASE)].text;
  if (code <= AN_ERR_BASE)
    return "unknown error";
  /* uv_strerror handles negated errno values and UV_* codes alike. */
  return uv_strerror(code);
}

const char *an_err_name(int code) {
  if (code == 0)
    return "OK";
  if (an_is_project_code(code))
    return an_errors[-(code - AN_ERR_BASE)].name;
  if (code <= AN_ERR_BASE)
    return "UNKNOWN";
  return uv_err_name(code);
}
