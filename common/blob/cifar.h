/* CIFAR-10 binary batches (data_batch_1.bin .. data_batch_5.bin,
 * test_batch.bin): a file is a sequence of 3,073-byte records, each one label
 * byte (0..9) then a 32 x 32 colour image as three planes, R then G then B,
 * each row-major. Files are untrusted: the size must be a whole number of
 * records and every label read must be below 10; errors name the file and
 * the problem. */
#ifndef AN_CIFAR_H
#define AN_CIFAR_H

#include <stddef.h>
#include <stdint.h>

#define AN_CIFAR_CHANNELS 3
#define AN_CIFAR_SIDE 32
#define AN_CIFAR_IMAGE_BYTES (AN_CIFAR_CHANNELS * AN_CIFAR_SIDE * AN_CIFAR_SIDE) /* 3072 */
#define AN_CIFAR_RECORD_BYTES (1 + AN_CIFAR_IMAGE_BYTES)                           /* 3073 */
#define AN_CIFAR_CLASSES 10

/* Number of records in the batch file at `path`, from its size, which must be
 * a positive multiple of AN_CIFAR_RECORD_BYTES. Returns 0; AN_EFORMAT for any
 * other size; or a negated errno when the file cannot be examined. */
int an_cifar_count(const char *path, size_t *n, char *err, size_t errlen);

/* Reads the first `n` records of the batch at `path` into caller-owned
 * buffers: `images` (n * AN_CIFAR_IMAGE_BYTES bytes; each record's planes are
 * already C x H x W, so they are copied as they are) and `labels` (n bytes).
 * The whole file is checked as an_cifar_count does, so a file cut short is
 * refused even when only its first records are wanted. Returns 0;
 * AN_EFORMAT for a bad size, fewer than `n` records or a label of 10 or more;
 * or a negated errno. On failure the buffers hold unspecified bytes. */
int an_cifar_read(const char *path, size_t n, uint8_t *images, uint8_t *labels, char *err,
                  size_t errlen);

#endif
