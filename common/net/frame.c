#include "common/net/frame.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/error.h"

void an_frame_decoder_init(an_frame_decoder_t *d, uint32_t max_frame) {
  memset(d, 0, sizeof *d);
  d->max_frame = max_frame;
}

void an_frame_decoder_destroy(an_frame_decoder_t *d) {
  free(d->buf);
  d->buf = NULL;
  d->buf_cap = 0;
}

int an_frame_decoder_mid_frame(const an_frame_decoder_t *d) {
  return d->header_have > 0;
}

void an_frame_decoder_trim(an_frame_decoder_t *d, size_t keep) {
  int used = d->reassembled;
  d->reassembled = 0;
  if (d->buf_cap > keep && d->have == 0 && !used) {
    free(d->buf);
    d->buf = NULL;
    d->buf_cap = 0;
  }
}

void an_frame_put_header(uint8_t out[AN_FRAME_HEADER_SIZE], uint32_t len) {
  out[0] = (uint8_t)(len >> 24);
  out[1] = (uint8_t)(len >> 16);
  out[2] = (uint8_t)(len >> 8);
  out[3] = (uint8_t)len;
}

static void an_frame_reset(an_frame_decoder_t *d) {
  d->header_have = 0;
  d->need = 0;
  d->have = 0;
}

int an_frame_decoder_feed(an_frame_decoder_t *d, const uint8_t *data, size_t len,
                          an_frame_cb cb, void *ctx) {
  int rc;

  if (d->error)
    return d->error;
  while (len > 0) {
    if (d->header_have < AN_FRAME_HEADER_SIZE) {
      size_t take = AN_FRAME_HEADER_SIZE - d->header_have;
      if (take > len)
        take = len;
      memcpy(d->header + d->header_have, data, take);
      d->header_have += take;
      data += take;
      len -= take;
      if (d->header_have < AN_FRAME_HEADER_SIZE)
        return 0;
      d->need = (size_t)d->header[0] << 24 | (size_t)d->header[1] << 16 |
                (size_t)d->header[2] << 8 | (size_t)d->header[3];
      /* The limit is checked before anything is allocated. */
      if (d->need > d->max_frame)
        return d->error = AN_ETOOBIG;
      d->have = 0;
      if (d->need == 0) {
        an_frame_reset(d);
        if ((rc = cb(ctx, NULL, 0)) != 0)
          return rc;
        continue;
      }
      if (len == 0)
        return 0; /* the header ended exactly at the end of this feed */
    }

    /* Fast path: the whole payload is in this feed and nothing is buffered. */
    if (d->have == 0 && len >= d->need) {
      const uint8_t *payload = data;
      size_t n = d->need;
      data += n;
      len -= n;
      an_frame_reset(d);
      if ((rc = cb(ctx, payload, n)) != 0)
        return rc;
      continue;
    }

    size_t take = d->need - d->have;
    if (take > len)
      take = len;
    /* Grow with the bytes that actually arrived (doubling, up to the frame
     * size) rather than reserving the announced size at once: a peer that
     * announces a big frame and sends nothing costs us nothing. */
    if (d->buf_cap < d->have + take) {
      size_t cap = d->buf_cap ? d->buf_cap * 2 : 64 * 1024;
      if (cap < d->have + take)
        cap = d->have + take;
      if (cap > d->need)
        cap = d->need;
      uint8_t *grown = realloc(d->buf, cap);
      if (!grown)
        return d->error = UV_ENOMEM;
      d->buf = grown;
      d->buf_cap = cap;
    }
    memcpy(d->buf + d->have, data, take);
    d->have += take;
    d->reassembled = 1;
    data += take;
    len -= take;
    if (d->have == d->need) {
      size_t n = d->need;
      an_frame_reset(d);
      if ((rc = cb(ctx, d->buf, n)) != 0)
        return rc;
    }
  }
  return 0;
}
