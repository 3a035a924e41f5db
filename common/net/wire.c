#include "common/net/wire.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/error.h"

int an_wire_send(an_conn_t *c, const Archnet__Envelope *env) {
  uint8_t small[4096];
  size_t len = protobuf_c_message_get_packed_size(&env->base);
  uint8_t *buf = len <= sizeof small ? small : malloc(len);
  int rc;
  if (!buf)
    return UV_ENOMEM;
  protobuf_c_message_pack(&env->base, buf);
  rc = an_conn_write_frame(c, buf, len);
  if (buf != small)
    free(buf);
  return rc;
}

int an_wire_send_error(an_conn_t *c, uint64_t request_id, Archnet__Error__Code code,
                       const char *fmt, ...) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
  Archnet__Error error = ARCHNET__ERROR__INIT;
  char message[512];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(message, sizeof message, fmt, ap);
  va_end(ap);
  error.code = code;
  error.message = message;
  env.request_id = request_id;
  env.body_case = ARCHNET__ENVELOPE__BODY_ERROR;
  env.error = &error;
  return an_wire_send(c, &env);
}

Archnet__Envelope *an_wire_unpack(an_arena_t *arena, const uint8_t *payload, size_t len) {
  return archnet__envelope__unpack(an_arena_protobuf_allocator(arena), len, payload);
}

const char *an_wire_body_name(const Archnet__Envelope *env) {
  const ProtobufCFieldDescriptor *f;
  if (env->body_case == ARCHNET__ENVELOPE__BODY__NOT_SET)
    return "none";
  f = protobuf_c_message_descriptor_get_field(&archnet__envelope__descriptor,
                                              (unsigned)env->body_case);
  return f ? f->name : "unknown";
}

const char *an_wire_error_name(Archnet__Error__Code code) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&archnet__error__code__descriptor, (int)code);
  return v ? v->name : "UNKNOWN";
}
