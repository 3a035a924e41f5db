/* Envelopes on a framed connection: pack/send and unpack/check. */
#ifndef AN_WIRE_H
#define AN_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/arena.h"
#include "common/net/conn.h"
#include "proto/archnet.pb-c.h"

/* Packs `env` and sends it as one frame. Returns an_conn_write_frame's code. */
int an_wire_send(an_conn_t *c, const Archnet__Envelope *env);

/* Sends an Error reply. The message is for a person; keep secrets out. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
int an_wire_send_error(an_conn_t *c, uint64_t request_id, Archnet__Error__Code code,
                       const char *fmt, ...);

/* Unpacks a frame into an Envelope allocated in `arena` (freed with it).
 * Returns NULL if the bytes are not a valid Envelope or exceed the arena's
 * cap; a NULL is the peer's fault, never a crash. */
Archnet__Envelope *an_wire_unpack(an_arena_t *arena, const uint8_t *payload, size_t len);

/* An Envelope's request_id (field 1) read straight off its wire bytes,
 * without unpacking the body (a megabyte chunk need not be copied to learn
 * whose reply it is). 0 with *id set (0 when absent); AN_EPROTO if the
 * top-level fields do not parse. Only the protobuf wire format is read:
 * the full an_wire_unpack still validates the message. */
int an_wire_peek_request_id(const uint8_t *payload, size_t len, uint64_t *id);

/* "hello", "ping", ... for logs; "none" when no body is set. */
const char *an_wire_body_name(const Archnet__Envelope *env);

/* The symbolic name of an Error code ("UNSUPPORTED_VERSION"). */
const char *an_wire_error_name(Archnet__Error__Code code);

#endif
