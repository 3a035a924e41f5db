/* Arena allocator: many allocations, one release.
 *
 * Used per request: point protobuf-c's allocator at an arena (see
 * an_arena_protobuf_allocator) and an unpacked message dies with the request,
 * with no per-field frees. An arena can carry a byte cap so that a hostile
 * message cannot make the process allocate without bound. */
#ifndef AN_ARENA_H
#define AN_ARENA_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

typedef struct an_arena_block an_arena_block_t;

typedef struct an_arena {
  an_arena_block_t *head;  /* newest block; older ones chained behind it */
  an_arena_block_t *spare; /* a big block the last use needed, kept for the next */
  size_t block_size;       /* size of a normal block */
  size_t used_total;       /* bytes handed out since the last reset */
  size_t cap;              /* 0 = no cap; else total bytes allowed */
  ProtobufCAllocator pb;   /* adapter filled by an_arena_init */
} an_arena_t;

/* Embedded init. `block_size` 0 picks 16 KiB; `cap` 0 means unlimited. */
void an_arena_init(an_arena_t *a, size_t block_size, size_t cap);

/* Frees every block. The arena may be re-initialised afterwards. */
void an_arena_destroy(an_arena_t *a);

/* Allocations of at least this many bytes start on a 4 KiB boundary (for
 * O_DIRECT writes of what protobuf-c unpacked into them). */
#define AN_ARENA_PAGE_ALIGNED_FROM ((size_t)64 * 1024)

/* Returns `size` bytes aligned for any type (on a 4 KiB boundary from
 * AN_ARENA_PAGE_ALIGNED_FROM on), or NULL when out of memory or over the
 * cap. Memory stays valid until an_arena_reset or _destroy. */
void *an_arena_alloc(an_arena_t *a, size_t size);

/* Copies a NUL-terminated string into the arena. NULL on failure. */
char *an_arena_strdup(an_arena_t *a, const char *s);

/* Releases everything allocated so far but keeps the first block for reuse,
 * so a long-lived per-connection arena does not call malloc per request.
 * The biggest other block is kept aside until the next reset, and reused
 * if the use in between needs that much: a run of big messages (an
 * upload's chunks) costs one allocation, not one each. */
void an_arena_reset(an_arena_t *a);

/* protobuf-c allocator backed by this arena; frees are no-ops. The pointer is
 * valid as long as the arena is. */
ProtobufCAllocator *an_arena_protobuf_allocator(an_arena_t *a);

#endif
