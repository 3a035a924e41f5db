#include "common/arena.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct an_arena_block {
  an_arena_block_t *next;
  size_t size; /* usable bytes in data[] */
  size_t used;
  alignas(max_align_t) unsigned char data[];
};

#define AN_ARENA_ALIGN alignof(max_align_t)

void an_arena_init(an_arena_t *a, size_t block_size, size_t cap) {
  memset(a, 0, sizeof *a);
  a->block_size = block_size ? block_size : 16 * 1024;
  a->cap = cap;
  a->pb.alloc = NULL; /* filled lazily by an_arena_protobuf_allocator */
}

static void an_arena_free_chain(an_arena_block_t *b) {
  while (b) {
    an_arena_block_t *next = b->next;
    free(b);
    b = next;
  }
}

void an_arena_destroy(an_arena_t *a) {
  an_arena_free_chain(a->head);
  free(a->spare);
  a->spare = NULL;
  a->head = NULL;
  a->used_total = 0;
}

void *an_arena_alloc(an_arena_t *a, size_t size) {
  an_arena_block_t *b = a->head;
  size_t rounded;

  if (size == 0)
    size = 1;
  if (size > SIZE_MAX - AN_ARENA_ALIGN)
    return NULL;
  rounded = (size + AN_ARENA_ALIGN - 1) & ~(AN_ARENA_ALIGN - 1);
  if (a->cap && (rounded > a->cap || a->used_total > a->cap - rounded))
    return NULL;

  if (!b || b->size - b->used < rounded) {
    size_t bsize = rounded > a->block_size ? rounded : a->block_size;
    if (bsize > SIZE_MAX - sizeof *b)
      return NULL;
    if (a->spare && a->spare->size >= bsize) {
      b = a->spare; /* the last use's big block: no malloc, no page faults */
      a->spare = NULL;
    } else if (!(b = malloc(sizeof *b + bsize))) {
      return NULL;
    } else {
      b->size = bsize;
    }
    b->used = 0;
    b->next = a->head;
    a->head = b;
  }
  void *p = b->data + b->used;
  b->used += rounded;
  a->used_total += rounded;
  return p;
}

char *an_arena_strdup(an_arena_t *a, const char *s) {
  size_t n = strlen(s) + 1;
  char *p = an_arena_alloc(a, n);
  if (p)
    memcpy(p, s, n);
  return p;
}

void an_arena_reset(an_arena_t *a) {
  an_arena_block_t *keep = a->head;
  /* A spare the use that just ended did not take is not needed: free it. */
  free(a->spare);
  a->spare = NULL;
  if (!keep)
    return;
  /* Keep the oldest block: it is normal-sized, while newer ones may be
   * one-off big blocks we do not want to pin in memory. The biggest of
   * those is kept aside one more use, though: a stream of big messages (an
   * upload's chunks) then reuses one block instead of allocating each. */
  an_arena_block_t *prev = NULL, *biggest = NULL, **biggest_at = NULL;
  for (an_arena_block_t **at = &a->head; (*at)->next; at = &(*at)->next)
    if ((*at)->size > a->block_size && (!biggest || (*at)->size > biggest->size)) {
      biggest = *at;
      biggest_at = at;
    }
  if (biggest) {
    *biggest_at = biggest->next;
    biggest->next = NULL;
    a->spare = biggest;
    keep = a->head;
  }
  while (keep->next) {
    prev = keep;
    keep = keep->next;
  }
  if (prev) {
    prev->next = NULL;
    an_arena_free_chain(a->head);
  }
  keep->used = 0;
  keep->next = NULL;
  a->head = keep;
  a->used_total = 0;
}

static void *an_arena_pb_alloc(void *data, size_t size) {
  return an_arena_alloc(data, size);
}

static void an_arena_pb_free(void *data, void *ptr) {
  (void)data;
  (void)ptr; /* released with the arena */
}

ProtobufCAllocator *an_arena_protobuf_allocator(an_arena_t *a) {
  a->pb.alloc = an_arena_pb_alloc;
  a->pb.free = an_arena_pb_free;
  a->pb.allocator_data = a;
  return &a->pb;
}
