/* The audit's second attacker: a decoder trained from scratch on the k
 * known (encoding, image) pairs, with common/nn.
 *
 * The attacker is assumed to know the architecture (it is published), not
 * the weights: the network has the layout of ArchNet's L-decoder (a strided
 * convolution back to the image's size, then 3x3 convolutions of 30, 10,
 * 10, 10 channels, ReLU, 5 and 3 channels, ReLU, and the image's channels),
 * PyTorch's default initialisation, Adam at lr 1e-3 and MSE against the
 * images. Inputs are standardised per channel with the mean and standard
 * deviation of the k encodings, which an attacker holding them can compute. */
#ifndef AN_PUBLISHER_LEARNED_DECODER_H
#define AN_PUBLISHER_LEARNED_DECODER_H

#include <stddef.h>
#include <stdint.h>

typedef struct an_learned_decoder an_learned_decoder_t;

typedef struct an_learned_decoder_params {
  int epochs;      /* passes over the k pairs, each at least 500 samples */
  int batch;       /* 0 = 32; with fewer pairs, a batch holds some twice */
  float lr;        /* 0 = 1e-3 */
  uint64_t seed;   /* initialisation and shuffling */
  /* Called after each epoch with the epoch's mean training loss; may be NULL. */
  void (*progress)(void *ctx, int epoch, int epochs, double loss);
  void *progress_ctx;
} an_learned_decoder_params_t;

/* Trains a decoder from `codes` (k x code_chw, float32) to `images`
 * (k x image_chw, values in [0, 1]); both borrowed for the call. The code's
 * height and width must be the image's times a whole factor (1 for a code of
 * the image's size, 2 for ArchNet's 10x56x56 MNIST codes). Returns 0 with
 * *out owned by the caller (an_learned_decoder_free); AN_EMODEL when the
 * shapes do not fit the layout, or the training diverged; UV_ENOMEM. `err`
 * says why. */
int an_learned_decoder_train(const float *codes, const float *images, size_t k,
                             const int code_chw[3], const int image_chw[3],
                             const an_learned_decoder_params_t *params,
                             an_learned_decoder_t **out, char *err, size_t errlen);

/* Decodes n codes into n images (n x image_chw float32, not clamped).
 * Returns 0, or a negative code with `err` saying why. */
int an_learned_decoder_run(an_learned_decoder_t *ld, const float *codes, size_t n, float *images,
                           char *err, size_t errlen);

/* The final epoch's mean training loss (MSE). */
double an_learned_decoder_loss(const an_learned_decoder_t *ld);

void an_learned_decoder_free(an_learned_decoder_t *ld);

#endif
