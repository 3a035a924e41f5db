#include "common/net/wire.h"

#include <stdarg.h>
#include <stdbool.h>
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

/* A base-128 varint at *p (at most 10 bytes, within end); false if cut. */
static bool an_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 70 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return true;
  }
  return false;
}

int an_wire_peek_request_id(const uint8_t *payload, size_t len, uint64_t *id) {
  const uint8_t *p = payload, *end = payload + len;
  *id = 0;
  while (p < end) {
    uint64_t key, v;
    if (!an_varint(&p, end, &key))
      return AN_EPROTO;
    switch (key & 7) { /* the wire type */
    case 0:
      if (!an_varint(&p, end, &v))
        return AN_EPROTO;
      if (key >> 3 == 1)
        *id = v; /* the last one wins, as protobuf's own parsers do */
      break;
    case 1:
      if (end - p < 8)
        return AN_EPROTO;
      p += 8;
      break;
    case 2:
      if (!an_varint(&p, end, &v) || v > (uint64_t)(end - p))
        return AN_EPROTO;
      p += v;
      break;
    case 5:
      if (end - p < 4)
        return AN_EPROTO;
      p += 4;
      break;
    default:
      return AN_EPROTO;
    }
  }
  return 0;
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
