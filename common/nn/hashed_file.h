/* The pieces shared by common/nn's checksummed files (weights, training
 * checkpoints): little-endian integers, and reads and writes that feed a
 * SHA-256 as they go. Internal to common/nn. */
#ifndef AN_NN_HASHED_FILE_H
#define AN_NN_HASHED_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>

#include "common/atomic_file.h"

void an__put_u32(uint8_t *p, uint32_t v);
void an__put_u64(uint8_t *p, uint64_t v);
/* An n-byte little-endian unsigned integer. */
uint64_t an__get_le(const uint8_t *p, int n);

/* Hashes then writes; the files' floats are little-endian, as is x86-64. */
int an__write_hashed(an_atomic_file_t *f, EVP_MD_CTX *md, const void *p, size_t n, char *err,
                     size_t errlen);
/* Reads exactly n bytes into p (in chunks) and hashes them; -1 if short. */
int an__read_hashed(FILE *f, EVP_MD_CTX *md, void *p, size_t n);

#endif
