/* The frame decoder: byte-at-a-time, random splits, truncation, oversize
 * and garbage. Expected payloads are the ones the test built itself. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/arena.h"
#include "common/error.h"
#include "common/net/frame.h"
#include "common/net/wire.h"
#include "tests/support/testutil.h"

typedef struct stream {
  uint8_t *bytes;
  size_t len;
  size_t n_frames;
  size_t *sizes;     /* payload size of each frame */
  size_t *offsets;   /* payload offset of each frame within bytes */
} stream_t;

typedef struct seen {
  const stream_t *expect;
  size_t n;          /* frames delivered so far */
  int mismatches;
  int stop_after;    /* return 99 after this many frames (0 = never) */
} seen_t;

/* Builds n frames whose sizes cycle through interesting values and whose
 * bytes are a function of (frame, position). */
static stream_t make_stream(size_t n, uint64_t seed) {
  static const size_t sizes[] = {0, 1, 3, 4, 5, 255, 4096, 65535, 65536, 70001, 300000};
  stream_t s = {0};
  size_t total = 0;
  s.n_frames = n;
  s.sizes = calloc(n, sizeof *s.sizes);
  s.offsets = calloc(n, sizeof *s.offsets);
  ck_assert_ptr_nonnull(s.sizes);
  ck_assert_ptr_nonnull(s.offsets);
  for (size_t i = 0; i < n; i++) {
    s.sizes[i] = sizes[(i + seed) % (sizeof sizes / sizeof sizes[0])];
    total += AN_FRAME_HEADER_SIZE + s.sizes[i];
  }
  s.bytes = malloc(total);
  ck_assert_ptr_nonnull(s.bytes);
  for (size_t i = 0; i < n; i++) {
    an_frame_put_header(s.bytes + s.len, (uint32_t)s.sizes[i]);
    s.offsets[i] = s.len + AN_FRAME_HEADER_SIZE;
    for (size_t j = 0; j < s.sizes[i]; j++)
      s.bytes[s.offsets[i] + j] = (uint8_t)(i * 31 + j * 7 + seed);
    s.len += AN_FRAME_HEADER_SIZE + s.sizes[i];
  }
  return s;
}

static void free_stream(stream_t *s) {
  free(s->bytes);
  free(s->sizes);
  free(s->offsets);
}

static int on_frame(void *ctx, const uint8_t *payload, size_t len) {
  seen_t *seen = ctx;
  const stream_t *s = seen->expect;
  if (seen->n >= s->n_frames || len != s->sizes[seen->n] ||
      (len && memcmp(payload, s->bytes + s->offsets[seen->n], len) != 0))
    seen->mismatches++;
  seen->n++;
  if (seen->stop_after && (int)seen->n == seen->stop_after)
    return 99;
  return 0;
}

START_TEST(test_one_byte_at_a_time) {
  stream_t s = make_stream(23, 1);
  seen_t seen = {.expect = &s};
  an_frame_decoder_t d;
  an_frame_decoder_init(&d, 1 << 20);
  for (size_t i = 0; i < s.len; i++)
    ck_assert_int_eq(an_frame_decoder_feed(&d, s.bytes + i, 1, on_frame, &seen), 0);
  ck_assert_uint_eq(seen.n, s.n_frames);
  ck_assert_int_eq(seen.mismatches, 0);
  ck_assert(!an_frame_decoder_mid_frame(&d));
  an_frame_decoder_destroy(&d);
  free_stream(&s);
}
END_TEST

START_TEST(test_random_splits) {
  uint64_t rng = 42 + (uint64_t)_i;
  stream_t s = make_stream(40, (uint64_t)_i);
  seen_t seen = {.expect = &s};
  an_frame_decoder_t d;
  an_frame_decoder_init(&d, 1 << 20);
  for (size_t off = 0; off < s.len;) {
    /* Mix tiny splits (inside headers) with big ones (several frames). */
    size_t chunk = an_test_rand(&rng) % 4 == 0 ? 1 + an_test_rand(&rng) % 7
                                               : 1 + an_test_rand(&rng) % 200000;
    if (chunk > s.len - off)
      chunk = s.len - off;
    ck_assert_int_eq(an_frame_decoder_feed(&d, s.bytes + off, chunk, on_frame, &seen), 0);
    off += chunk;
  }
  ck_assert_uint_eq(seen.n, s.n_frames);
  ck_assert_int_eq(seen.mismatches, 0);
  an_frame_decoder_destroy(&d);
  free_stream(&s);
}
END_TEST

START_TEST(test_whole_stream_in_one_feed) {
  stream_t s = make_stream(11, 3);
  seen_t seen = {.expect = &s};
  an_frame_decoder_t d;
  an_frame_decoder_init(&d, 1 << 20);
  ck_assert_int_eq(an_frame_decoder_feed(&d, s.bytes, s.len, on_frame, &seen), 0);
  ck_assert_uint_eq(seen.n, 11);
  ck_assert_int_eq(seen.mismatches, 0);
  /* Every frame arrived whole: the fast path needs no reassembly buffer. */
  ck_assert_ptr_null(d.buf);
  an_frame_decoder_destroy(&d);
  free_stream(&s);
}
END_TEST

START_TEST(test_truncated) {
  stream_t s = make_stream(5, 4);
  an_frame_decoder_t d;
  /* Cut at every position inside the last frame, header included. */
  size_t last_start = s.offsets[4] - AN_FRAME_HEADER_SIZE;
  for (size_t cut = last_start + 1; cut < s.len; cut++) {
    seen_t seen = {.expect = &s};
    an_frame_decoder_init(&d, 1 << 20);
    ck_assert_int_eq(an_frame_decoder_feed(&d, s.bytes, cut, on_frame, &seen), 0);
    ck_assert_uint_eq(seen.n, 4);
    ck_assert_int_eq(seen.mismatches, 0);
    ck_assert_msg(an_frame_decoder_mid_frame(&d), "cut at %zu not seen as mid-frame", cut);
    an_frame_decoder_destroy(&d);
  }
  /* Cut exactly at a frame boundary: not mid-frame. */
  seen_t seen = {.expect = &s};
  an_frame_decoder_init(&d, 1 << 20);
  ck_assert_int_eq(an_frame_decoder_feed(&d, s.bytes, last_start, on_frame, &seen), 0);
  ck_assert(!an_frame_decoder_mid_frame(&d));
  an_frame_decoder_destroy(&d);
  free_stream(&s);
}
END_TEST

START_TEST(test_over_limit_refused_before_allocation) {
  uint8_t hdr[AN_FRAME_HEADER_SIZE];
  an_frame_decoder_t d;
  seen_t seen = {0};
  an_frame_decoder_init(&d, 1024);
  an_frame_put_header(hdr, 0xFFFFFFFFu);
  ck_assert_int_eq(an_frame_decoder_feed(&d, hdr, sizeof hdr, on_frame, &seen), AN_ETOOBIG);
  ck_assert_ptr_null(d.buf);
  ck_assert_uint_eq(d.buf_cap, 0);
  ck_assert_uint_eq(seen.n, 0);
  /* Sticky: the stream cannot be resynchronised. */
  ck_assert_int_eq(an_frame_decoder_feed(&d, (const uint8_t *)"x", 1, on_frame, &seen),
                   AN_ETOOBIG);
  an_frame_decoder_destroy(&d);

  /* One byte over the limit is refused; exactly the limit is accepted. */
  an_frame_decoder_init(&d, 1024);
  an_frame_put_header(hdr, 1025);
  ck_assert_int_eq(an_frame_decoder_feed(&d, hdr, sizeof hdr, on_frame, &seen), AN_ETOOBIG);
  an_frame_decoder_destroy(&d);
  an_frame_decoder_init(&d, 1024);
  an_frame_put_header(hdr, 1024);
  ck_assert_int_eq(an_frame_decoder_feed(&d, hdr, sizeof hdr, on_frame, &seen), 0);
  an_frame_decoder_destroy(&d);
}
END_TEST

START_TEST(test_announced_size_not_reserved) {
  /* A peer announcing a maximal frame and sending 10 bytes costs little. */
  uint8_t bytes[AN_FRAME_HEADER_SIZE + 10] = {0};
  an_frame_decoder_t d;
  seen_t seen = {0};
  an_frame_decoder_init(&d, 256u << 20);
  an_frame_put_header(bytes, 256u << 20);
  ck_assert_int_eq(an_frame_decoder_feed(&d, bytes, sizeof bytes, on_frame, &seen), 0);
  ck_assert_uint_le(d.buf_cap, 64 * 1024);
  ck_assert(an_frame_decoder_mid_frame(&d));
  an_frame_decoder_destroy(&d);
}
END_TEST

START_TEST(test_callback_stops_feed) {
  stream_t s = make_stream(6, 5);
  seen_t seen = {.expect = &s, .stop_after = 2};
  an_frame_decoder_t d;
  an_frame_decoder_init(&d, 1 << 20);
  ck_assert_int_eq(an_frame_decoder_feed(&d, s.bytes, s.len, on_frame, &seen), 99);
  ck_assert_uint_eq(seen.n, 2);
  an_frame_decoder_destroy(&d);
  free_stream(&s);
}
END_TEST

static int count_frame(void *ctx, const uint8_t *payload, size_t len) {
  (void)payload;
  (void)len;
  ++*(int *)ctx;
  return 0;
}

/* The reassembly buffer stays while big frames keep coming in pieces, and
 * goes at the first trim after a read that did not need it. */
START_TEST(test_trim_keeps_a_buffer_in_use) {
  an_frame_decoder_t d;
  size_t len = 300000;
  uint8_t *frame = calloc(1, AN_FRAME_HEADER_SIZE + len), small[AN_FRAME_HEADER_SIZE + 3] = {0};
  int frames = 0;
  ck_assert_ptr_nonnull(frame);
  an_frame_put_header(frame, (uint32_t)len);
  an_frame_put_header(small, 3);
  an_frame_decoder_init(&d, 1 << 20);
  /* A big frame in two reads, trimmed after each as the connection does. */
  ck_assert_int_eq(an_frame_decoder_feed(&d, frame, 1000, count_frame, &frames), 0);
  an_frame_decoder_trim(&d, 65536);
  ck_assert_int_eq(an_frame_decoder_feed(&d, frame + 1000, AN_FRAME_HEADER_SIZE + len - 1000,
                                         count_frame, &frames),
                   0);
  ck_assert_int_eq(frames, 1);
  uint8_t *buf = d.buf;
  ck_assert_ptr_nonnull(buf);
  an_frame_decoder_trim(&d, 65536);
  ck_assert_ptr_eq(d.buf, buf); /* used in that read: kept */
  /* A small frame whole in one read: the buffer was not needed. */
  ck_assert_int_eq(an_frame_decoder_feed(&d, small, sizeof small, count_frame, &frames), 0);
  ck_assert_int_eq(frames, 2);
  an_frame_decoder_trim(&d, 65536);
  ck_assert_ptr_null(d.buf);
  an_frame_decoder_destroy(&d);
  free(frame);
}
END_TEST

static int unpack_garbage(void *ctx, const uint8_t *payload, size_t len) {
  an_arena_t *arena = ctx;
  /* Whatever the bytes, decoding yields an Envelope or NULL, never a crash. */
  Archnet__Envelope *env = an_wire_unpack(arena, payload, len);
  uint64_t id = 0;
  int peeked = an_wire_peek_request_id(payload, len, &id);
  if (env) {
    (void)an_wire_body_name(env);
    /* What protobuf-c parsed, the peek reads the same way. */
    ck_assert_int_eq(peeked, 0);
    ck_assert_uint_eq(id, env->request_id);
  }
  an_arena_reset(arena);
  return 0;
}

/* The request id read off the wire bytes equals what protobuf-c packed,
 * whatever the body, and cut-short bytes never read past their end. */
START_TEST(test_peek_request_id) {
  static const uint64_t ids[] = {0, 1, 127, 128, 300, 1ull << 32, UINT64_MAX};
  uint8_t *data = calloc(1, 1 << 20);
  ck_assert_ptr_nonnull(data);
  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    for (int body = 0; body < 3; body++) {
      Archnet__Envelope env = ARCHNET__ENVELOPE__INIT;
      Archnet__Ping ping = ARCHNET__PING__INIT;
      Archnet__PutBlobChunk pc = ARCHNET__PUT_BLOB_CHUNK__INIT;
      env.request_id = ids[i];
      if (body == 1) {
        ping.nonce = 0xfeedfacecafebeefull;
        env.body_case = ARCHNET__ENVELOPE__BODY_PING;
        env.ping = &ping;
      } else if (body == 2) {
        pc.sha256 = "ab";
        pc.offset = 5;
        pc.data.data = data;
        pc.data.len = 1 << 20;
        env.body_case = ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK;
        env.put_blob_chunk = &pc;
      }
      size_t len = archnet__envelope__get_packed_size(&env);
      uint8_t *packed = malloc(len);
      ck_assert_ptr_nonnull(packed);
      archnet__envelope__pack(&env, packed);
      uint64_t got = 7;
      ck_assert_int_eq(an_wire_peek_request_id(packed, len, &got), 0);
      ck_assert_uint_eq(got, ids[i]);
      /* Every cut of the small ones, and a few of the big one (ASan
       * watches the reads). */
      for (size_t cut = 0; cut < len; cut += len > 4096 ? 4093 : 1) {
        uint8_t *copy = malloc(cut ? cut : 1);
        ck_assert_ptr_nonnull(copy);
        memcpy(copy, packed, cut);
        int rc = an_wire_peek_request_id(copy, cut, &got);
        ck_assert(rc == 0 || rc == AN_EPROTO);
        free(copy);
      }
      free(packed);
    }
  }
  free(data);
}
END_TEST

START_TEST(test_garbage) {
  uint64_t rng = 7;
  size_t len = 1 << 20;
  uint8_t *junk = malloc(len);
  an_arena_t arena;
  ck_assert_ptr_nonnull(junk);
  an_arena_init(&arena, 0, 1 << 20);
  for (int round = 0; round < 200; round++) {
    an_frame_decoder_t d;
    int rc;
    for (size_t i = 0; i < 4096; i++)
      junk[i] = (uint8_t)an_test_rand(&rng);
    /* Small length prefixes so some frames complete and reach protobuf. */
    if (round % 2)
      for (size_t i = 0; i < 4096; i += 64)
        junk[i] = junk[i + 1] = junk[i + 2] = 0;
    an_frame_decoder_init(&d, 64 * 1024);
    rc = an_frame_decoder_feed(&d, junk, 4096, unpack_garbage, &arena);
    ck_assert(rc == 0 || rc == AN_ETOOBIG);
    an_frame_decoder_destroy(&d);
  }
  an_arena_destroy(&arena);
  free(junk);
}
END_TEST

static Suite *frame_suite(void) {
  Suite *s = suite_create("frame");
  TCase *tc = tcase_create("decoder");
  tcase_add_test(tc, test_one_byte_at_a_time);
  tcase_add_loop_test(tc, test_random_splits, 0, 8);
  tcase_add_test(tc, test_whole_stream_in_one_feed);
  tcase_add_test(tc, test_truncated);
  tcase_add_test(tc, test_over_limit_refused_before_allocation);
  tcase_add_test(tc, test_announced_size_not_reserved);
  tcase_add_test(tc, test_callback_stops_feed);
  tcase_add_test(tc, test_garbage);
  tcase_add_test(tc, test_trim_keeps_a_buffer_in_use);
  tcase_add_test(tc, test_peek_request_id);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(frame_suite)
