#include "common/nn/rng.h"

#include <math.h>

static uint64_t an_splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void an_rng_seed(an_rng_t *r, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    r->s[i] = an_splitmix64(&seed);
}

static uint64_t an_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t an_rng_next(an_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t result = an_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = an_rotl(s[3], 45);
  return result;
}

double an_rng_uniform(an_rng_t *r) { return (double)(an_rng_next(r) >> 11) * 0x1.0p-53; }

double an_rng_normal(an_rng_t *r) {
  double u1 = an_rng_uniform(r), u2 = an_rng_uniform(r);
  if (u1 < 1e-300)
    u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t an_rng_below(an_rng_t *r, uint64_t n) {
  /* Rejection sampling: no modulo bias. */
  uint64_t limit = UINT64_MAX - UINT64_MAX % n, v;
  do
    v = an_rng_next(r);
  while (v >= limit);
  return v % n;
}

void an_rng_shuffle(an_rng_t *r, uint32_t *idx, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)an_rng_below(r, i);
    uint32_t t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}
