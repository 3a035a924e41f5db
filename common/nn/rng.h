/* Seeded random numbers for initialisation, shuffling and dropout:
 * xoshiro256** seeded through splitmix64, so one 64-bit seed reproduces a
 * whole run on any machine. */
#ifndef AN_NN_RNG_H
#define AN_NN_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct an_rng {
  uint64_t s[4];
} an_rng_t;

void an_rng_seed(an_rng_t *r, uint64_t seed);
uint64_t an_rng_next(an_rng_t *r);
/* Uniform in [0, 1). */
double an_rng_uniform(an_rng_t *r);
/* Standard normal (Box-Muller). */
double an_rng_normal(an_rng_t *r);
/* Uniform integer in [0, n). */
uint64_t an_rng_below(an_rng_t *r, uint64_t n);
/* Fisher-Yates shuffle of an index array. */
void an_rng_shuffle(an_rng_t *r, uint32_t *idx, size_t n);

#endif
