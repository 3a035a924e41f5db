/* Raw image datasets as the publisher reads them: a folder holding
 *
 *   - MNIST or Fashion-MNIST idx files, plain or .gz:
 *     train-images-idx3-ubyte, train-labels-idx1-ubyte,
 *     t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte;
 *   - CIFAR-10 binary batches, in the folder or in its cifar-10-batches-bin/
 *     subfolder: data_batch_1.bin .. data_batch_5.bin (train) and
 *     test_batch.bin (test); each record is 1 label byte then 3 x 32 x 32
 *     bytes (R plane, G plane, B plane);
 *   - NumPy: train_x.npy / train_y.npy and test_x.npy / test_y.npy, X uint8
 *     N x C x H x W or N x H x W, Y uint8 or int64 N.
 *
 * Everything is untrusted: bad magic, truncated files, image/label count
 * mismatch, labels out of range and absurd dimensions are errors that name
 * the file and the problem. */
#ifndef AN_DATASET_H
#define AN_DATASET_H

#include <stddef.h>
#include <stdint.h>

typedef enum an_dataset_split { AN_DATASET_TRAIN, AN_DATASET_TEST } an_dataset_split_t;

typedef struct an_dataset {
  const char *format;  /* "idx", "cifar10" or "npy" (static string) */
  size_t n;            /* images */
  int c, h, w;         /* per image */
  uint8_t *images;     /* n * c * h * w bytes, N x C x H x W; owned */
  uint8_t *labels;     /* n bytes, each < n_classes; owned */
  int n_classes;       /* 10 for MNIST, Fashion-MNIST and CIFAR-10; max label + 1 for npy */
  char digest[65];     /* SHA-256 (hex) over the split's whole files as stored (a .gz
                          stays compressed), images file then labels file, CIFAR-10
                          batches in order; the same whatever `limit` */
} an_dataset_t;

/* Loads one split of the dataset in `dir` into `out` (release with
 * an_dataset_free, also safe after a failure). `limit` keeps only the first
 * `limit` images (0 = all); headers are still checked against the whole
 * files, so a count mismatch is an error whatever the limit. The format is
 * recognised by any file of either split (idx first, then CIFAR-10, then
 * npy), so a missing companion file is named rather than reported as "no
 * dataset". Reads the disk: run it off any event loop.
 *
 * Returns 0; AN_EFORMAT for a malformed file; AN_EUNSUPPORTED for a valid
 * .npy of another dtype; UV_ENOENT when the folder holds no known dataset
 * (the message lists what was looked for) or lacks one of the split's files
 * (the message names it); AN_ETOOBIG for absurd sizes; UV_ENOMEM; or a
 * negated errno (UV_ENOTDIR when `dir` is not a folder). */
int an_dataset_load(const char *dir, an_dataset_split_t split, size_t limit, an_dataset_t *out,
                    char *err, size_t errlen);
void an_dataset_free(an_dataset_t *d);

/* The train/validation split shared by `encode` and `baseline rc4`: a
 * seeded permutation of 0..n-1 written to `order` (n entries), of which the
 * first *n_train are the training images and the rest validation.
 * n_val = round(n * val_fraction), at least 1 when 0 < val_fraction and
 * n >= 2, and at most n - 1 so that training keeps an image. The same
 * (n, val_fraction, seed) always gives the same split, on any machine: the
 * permutation is a Fisher-Yates shuffle driven by common/nn/rng.h
 * (xoshiro256** seeded through splitmix64). Returns 0, or UV_EINVAL when
 * val_fraction is outside [0, 1) or n is over UINT32_MAX. */
int an_dataset_split(size_t n, double val_fraction, uint64_t seed, uint32_t *order,
                     size_t *n_train);

#endif
