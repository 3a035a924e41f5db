/* MNIST-style idx files (plain or gzip-compressed): unsigned-byte images
 * (magic 0x00000803, N x H x W) and labels (0x00000801, N). Files are
 * untrusted: magic, dimensions and length are all checked, and errors name
 * the file and the problem. */
#ifndef AN_IDX_H
#define AN_IDX_H

#include <stddef.h>
#include <stdint.h>

typedef struct an_idx {
  int ndim;         /* 1 (labels) or 3 (images) */
  uint32_t dims[3]; /* N, then H, W for images */
  uint8_t *data;    /* N * H * W bytes; owned, freed by an_idx_free */
  size_t size;
} an_idx_t;

/* Reads a whole idx file. `max_items` caps N (0 = no cap beyond a sanity
 * limit), so a corrupt header cannot make us allocate gigabytes. */
int an_idx_read(const char *path, uint32_t max_items, an_idx_t *out, char *err, size_t errlen);
void an_idx_free(an_idx_t *idx);

#endif
