/* Length-prefixed frames: a 4-byte big-endian payload length, then payload.
 *
 * The decoder is incremental: feed it whatever bytes arrived, in any split,
 * and it calls back once per complete frame. The claimed length is checked
 * against the limit before anything is allocated, so a peer cannot make us
 * reserve memory by announcing a huge frame. A frame that arrives whole in one
 * feed is handed out in place, without a copy. */
#ifndef AN_FRAME_H
#define AN_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define AN_FRAME_HEADER_SIZE 4
/* The format's own ceiling (the length field is 32 bits). */
#define AN_FRAME_MAX_LIMIT 0xFFFFFFFFu

/* Called per complete frame. The payload is valid only during the call.
 * Return 0 to go on; any other value stops the feed and is returned by it. */
typedef int (*an_frame_cb)(void *ctx, const uint8_t *payload, size_t len);

typedef struct an_frame_decoder {
  uint32_t max_frame;  /* largest payload accepted */
  uint8_t header[AN_FRAME_HEADER_SIZE];
  size_t header_have;  /* header bytes collected so far */
  uint8_t *buf;        /* partial payload; owned, reused between frames */
  size_t buf_cap;
  size_t need;         /* payload length of the frame in progress */
  size_t have;         /* payload bytes collected so far */
  int error;           /* sticky: once set, every feed returns it */
  int reassembled;     /* buf was used since the last trim */
} an_frame_decoder_t;

void an_frame_decoder_init(an_frame_decoder_t *d, uint32_t max_frame);
void an_frame_decoder_destroy(an_frame_decoder_t *d);

/* Consumes all `len` bytes. Returns 0; AN_ETOOBIG for a frame over the limit;
 * UV_ENOMEM; or the non-zero value a callback returned. After an error the
 * decoder refuses further input (the stream cannot be resynchronised). */
int an_frame_decoder_feed(an_frame_decoder_t *d, const uint8_t *data, size_t len,
                          an_frame_cb cb, void *ctx);

/* True when a frame has been started but not finished: a stream that ends
 * now was truncated. */
int an_frame_decoder_mid_frame(const an_frame_decoder_t *d);

/* Frees the reassembly buffer if it grew past `keep` bytes and was not
 * used since the last trim, so one big frame does not pin its memory for
 * the rest of a long connection, while a stream of them (an upload) does
 * not allocate and grow a buffer again for each. */
void an_frame_decoder_trim(an_frame_decoder_t *d, size_t keep);

/* Writes the header for a payload of `len` bytes. */
void an_frame_put_header(uint8_t out[AN_FRAME_HEADER_SIZE], uint32_t len);

#endif
