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
#define AN_ARENA_PAGE ((size_t)4096)

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

/* Bytes of padding that put `at` on an `align` boundary (a power of two). */
static size_t an_arena_pad(const unsigned char *at, size_t align) {
  return (size_t)(-(uintptr_t)at) & (align - 1);
}

void *an_arena_alloc(an_arena_t *a, size_t size) {
  an_arena_block_t *b = a->head;
  size_t rounded, align;

  if (size == 0)
    size = 1;
  /* Room for the rounding and the page padding below, without wrapping. */
  if (size > SIZE_MAX - 2 * AN_ARENA_PAGE)
    return NULL;
  /* Big allocations start on a page: an upload's chunk can then be written
   * with O_DIRECT straight from where protobuf-c unpacked it. */
  align = size >= AN_ARENA_PAGE_ALIGNED_FROM ? AN_ARENA_PAGE : AN_ARENA_ALIGN;
  rounded = (size + AN_ARENA_ALIGN - 1) & ~(AN_ARENA_ALIGN - 1);
  /* The cap counts the worst-case padding too. */
  size_t charged = rounded + (align > AN_ARENA_ALIGN ? align : 0);
  if (a->cap && (charged > a->cap || a->used_total > a->cap - charged))
    return NULL;

  if (!b || b->size - b->used < an_arena_pad(b->data + b->used, align) + rounded) {
    size_t bsize = charged > a->block_size ? charged : a->block_size;
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
  size_t pad = an_arena_pad(b->data + b->used, align);
  void *p = b->data + b->used + pad;
  b->used += pad + rounded;
  a->used_total += pad + rounded;
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
