/* Intrusive circular doubly-linked list (the shape of libuv's queue.h):
 * the links live inside the listed object, so linking never allocates. */
#ifndef AN_LIST_H
#define AN_LIST_H

#include <stddef.h>

typedef struct an_list {
  struct an_list *prev, *next;
} an_list_t;

#define AN_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void an_list_init(an_list_t *head) { head->prev = head->next = head; }
static inline int an_list_empty(const an_list_t *head) { return head->next == head; }

static inline void an_list_push(an_list_t *head, an_list_t *item) {
  item->prev = head->prev;
  item->next = head;
  head->prev->next = item;
  head->prev = item;
}

static inline void an_list_remove(an_list_t *item) {
  item->prev->next = item->next;
  item->next->prev = item->prev;
  item->prev = item->next = item;
}

#endif
