#include <check.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/arena.h"
#include "proto/archnet.pb-c.h"
#include "tests/support/testutil.h"

START_TEST(test_alignment_and_independence) {
  an_arena_t a;
  an_arena_init(&a, 256, 0);
  uint8_t *prev = NULL;
  for (size_t size = 1; size < 2000; size += 37) {
    uint8_t *p = an_arena_alloc(&a, size);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq((uintptr_t)p % alignof(max_align_t), 0);
    memset(p, (int)(size & 0xff), size); /* ASan flags any overlap or overrun */
    if (prev)
      ck_assert_ptr_ne(p, prev);
    prev = p;
  }
  an_arena_destroy(&a);
}
END_TEST

START_TEST(test_cap_enforced) {
  an_arena_t a;
  an_arena_init(&a, 1024, 4096);
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 3000));
  ck_assert_ptr_null(an_arena_alloc(&a, 2000)); /* 3008 + 2000 > 4096 */
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 1000));
  ck_assert_ptr_null(an_arena_alloc(&a, SIZE_MAX)); /* no overflow in rounding */
  /* ... nor in the page padding of big allocations, with a cap or without. */
  for (size_t back = 4090; back <= 4120; back++)
    ck_assert_ptr_null(an_arena_alloc(&a, SIZE_MAX - back));
  an_arena_t open;
  an_arena_init(&open, 0, 0);
  for (size_t back = 4090; back <= 4120; back++)
    ck_assert_ptr_null(an_arena_alloc(&open, SIZE_MAX - back));
  an_arena_destroy(&open);
  an_arena_reset(&a);
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 4000)); /* the cap counts since reset */
  an_arena_destroy(&a);
}
END_TEST

START_TEST(test_reset_reuses_first_block) {
  an_arena_t a;
  an_arena_init(&a, 4096, 0);
  void *first = an_arena_alloc(&a, 16);
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 100000)); /* a one-off big block */
  an_arena_reset(&a);
  ck_assert_ptr_eq(an_arena_alloc(&a, 16), first);
  ck_assert_str_eq(an_arena_strdup(&a, "lease"), "lease");
  an_arena_destroy(&a);
}
END_TEST

/* A run of big uses (an upload's chunks) reuses one big block; a small use
 * in between lets it go. */
START_TEST(test_big_block_kept_for_the_next_use_only) {
  an_arena_t a;
  an_arena_init(&a, 4096, 0);
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 16));
  uint8_t *big = an_arena_alloc(&a, 100000);
  ck_assert_ptr_nonnull(big);
  memset(big, 0xab, 100000);
  an_arena_reset(&a);
  ck_assert_ptr_nonnull(a.spare);
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 16));
  ck_assert_ptr_eq(an_arena_alloc(&a, 90000), big); /* the same block, no malloc */
  an_arena_reset(&a);
  ck_assert_ptr_nonnull(a.spare);
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 16)); /* a small use: the spare is not taken */
  an_arena_reset(&a);
  ck_assert_ptr_null(a.spare);
  /* A spare too small for the request is not used (and is freed later). */
  ck_assert_ptr_nonnull(an_arena_alloc(&a, 50000));
  an_arena_reset(&a);
  uint8_t *bigger = an_arena_alloc(&a, 200000);
  ck_assert_ptr_nonnull(bigger);
  memset(bigger, 1, 200000);
  an_arena_destroy(&a);
}
END_TEST

START_TEST(test_protobuf_unpack_in_arena) {
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT, *out;
  Archnet__Hello hello = ARCHNET__HELLO__INIT;
  uint8_t buf[256];
  an_arena_t a;
  hello.protocol_version = 7;
  hello.node_name = "worker-3";
  env.request_id = 99;
  env.body_case = ARCHNET__ENVELOPE__BODY_HELLO;
  env.hello = &hello;
  size_t n = archnet__envelope__pack(&env, buf);

  an_arena_init(&a, 0, 0);
  out = archnet__envelope__unpack(an_arena_protobuf_allocator(&a), n, buf);
  ck_assert_ptr_nonnull(out);
  ck_assert_uint_eq(out->request_id, 99);
  ck_assert_uint_eq(out->hello->protocol_version, 7);
  ck_assert_str_eq(out->hello->node_name, "worker-3");
  /* Freed with the arena, not with __free_unpacked: ASan checks the leak. */
  an_arena_destroy(&a);

  /* A cap too small for the message makes unpack fail cleanly. */
  an_arena_init(&a, 0, 32);
  ck_assert_ptr_null(archnet__envelope__unpack(an_arena_protobuf_allocator(&a), n, buf));
  an_arena_destroy(&a);
}
END_TEST

/* Big allocations start on a 4 KiB page, after small ones, in a reused
 * spare block, and as protobuf-c's copy of a chunk's bytes. */
START_TEST(test_big_allocations_page_aligned) {
  an_arena_t a;
  an_arena_init(&a, 0, 0);
  for (int round = 0; round < 3; round++) {
    char *small = an_arena_alloc(&a, 10);
    uint8_t *big = an_arena_alloc(&a, 100 * 1024 + round);
    char *small2 = an_arena_alloc(&a, 10);
    ck_assert_ptr_nonnull(small);
    ck_assert_ptr_nonnull(big);
    ck_assert_uint_eq((uintptr_t)big % 4096, 0);
    memset(big, 0xab, 100 * 1024 + (size_t)round); /* ASan: all of it is ours */
    ck_assert_ptr_nonnull(small2);
    ck_assert_uint_eq((uintptr_t)small2 % alignof(max_align_t), 0);
    an_arena_reset(&a);
  }
  /* protobuf-c's bytes field. */
  size_t len = 1 << 20;
  uint8_t *data = malloc(len), *packed = malloc(len + 256);
  ck_assert(data && packed);
  for (size_t i = 0; i < len; i++)
    data[i] = (uint8_t)(i * 7);
  Archnet__Envelope env = ARCHNET__ENVELOPE__INIT, *out;
  Archnet__PutBlobChunk pc = ARCHNET__PUT_BLOB_CHUNK__INIT;
  pc.sha256 = "x";
  pc.data.data = data;
  pc.data.len = len;
  env.body_case = ARCHNET__ENVELOPE__BODY_PUT_BLOB_CHUNK;
  env.put_blob_chunk = &pc;
  size_t n = archnet__envelope__pack(&env, packed);
  out = archnet__envelope__unpack(an_arena_protobuf_allocator(&a), n, packed);
  ck_assert_ptr_nonnull(out);
  ck_assert_uint_eq(out->put_blob_chunk->data.len, len);
  ck_assert_uint_eq((uintptr_t)out->put_blob_chunk->data.data % 4096, 0);
  ck_assert(memcmp(out->put_blob_chunk->data.data, data, len) == 0);
  an_arena_destroy(&a);
  free(data);
  free(packed);
}
END_TEST

static Suite *arena_suite(void) {
  Suite *s = suite_create("arena");
  TCase *tc = tcase_create("arena");
  tcase_add_test(tc, test_alignment_and_independence);
  tcase_add_test(tc, test_cap_enforced);
  tcase_add_test(tc, test_reset_reuses_first_block);
  tcase_add_test(tc, test_big_block_kept_for_the_next_use_only);
  tcase_add_test(tc, test_protobuf_unpack_in_arena);
  tcase_add_test(tc, test_big_allocations_page_aligned);
  suite_add_tcase(s, tc);
  return s;
}

AN_TEST_MAIN(arena_suite)
