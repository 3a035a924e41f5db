/* `archnet-publisher baseline rc4`: the paper's comparison point. The
 * dataset's pixels are encrypted with RC4 and written in the layout `encode`
 * writes (train_x/train_y, val_x/val_y, and test_x/test_y), so that the same
 * workers can try to learn from ciphertext.
 *
 * Two modes, because the paper does not say which one it used:
 *   stream     one keystream over the whole dataset (train split, then test
 *              split, images in file order): every pixel is XORed with a
 *              different keystream byte, which leaves nothing to learn;
 *   per-image  the keystream restarts for every image: pixel (c, y, x) of
 *              every image is XORed with the same byte, a fixed per-position
 *              substitution that keeps which pixels are equal to which.
 * docs/PUBLISHER.md discusses which one the paper's figure matches. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <uv.h>

#include "common/blob/dataset.h"
#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/error.h"
#include "common/nn/tensor.h"
#include "publisher/commands.h"

#define RC4_PREFIX "archnet-publisher baseline rc4: "
#define RC4_MIN_KEY 5
#define RC4_MAX_KEY 256
#define RC4_CHUNK ((size_t)1 << 30) /* EVP_EncryptUpdate takes an int length */

typedef struct rc4_settings {
  char *data;
  char *out;
  char *key;
  char *mode;
  char *dtype;
  double val_fraction;
  int64_t limit;
  int64_t seed;
} rc4_settings_t;

static int rc4_check_key(const char *value, char *err, size_t errlen) {
  size_t n = strlen(value);
  if (n % 2 != 0 || n < 2 * RC4_MIN_KEY || n > 2 * RC4_MAX_KEY) {
    snprintf(err, errlen, "the key must be %d to %d bytes written as an even number of hex digits",
             RC4_MIN_KEY, RC4_MAX_KEY);
    return AN_ECONFIG;
  }
  for (size_t i = 0; i < n; i++) {
    char c = value[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      snprintf(err, errlen, "'%c' at position %zu is not a hex digit", c, i + 1);
      return AN_ECONFIG;
    }
  }
  return 0;
}

static int rc4_check_mode(const char *value, char *err, size_t errlen) {
  if (strcmp(value, "stream") == 0 || strcmp(value, "per-image") == 0)
    return 0;
  snprintf(err, errlen, "unknown mode '%s' (expected stream or per-image)", value);
  return AN_ECONFIG;
}

static int rc4_check_dtype(const char *value, char *err, size_t errlen) {
  if (strcmp(value, "f16") == 0 || strcmp(value, "f32") == 0 || strcmp(value, "u8") == 0)
    return 0;
  snprintf(err, errlen, "unknown dtype '%s' (expected f16, f32 or u8)", value);
  return AN_ECONFIG;
}

#define RC4_OPT(f) offsetof(rc4_settings_t, f)

static const an_option_t rc4_options[] = {
    {"data", AN_OPT_STR, RC4_OPT(data), NULL, 0, 0, "DIR",
     "dataset folder: MNIST/Fashion-MNIST idx (plain or .gz), CIFAR-10 batches or .npy"},
    {"out", AN_OPT_STR, RC4_OPT(out), NULL, 0, 0, "DIR",
     "where the .npy files go (created if missing)"},
    {"key", AN_OPT_STR, RC4_OPT(key), NULL, 0, 0, "HEX", "RC4 key, 5 to 256 bytes in hex",
     rc4_check_key},
    {"mode", AN_OPT_STR, RC4_OPT(mode), "stream", 0, 0, "MODE",
     "stream (one keystream for the dataset) or per-image (restarted for each image)",
     rc4_check_mode},
    {"dtype", AN_OPT_STR, RC4_OPT(dtype), "f16", 0, 0, "TYPE",
     "f16 or f32 (ciphertext byte / 255) or u8 (the ciphertext bytes)", rc4_check_dtype},
    {"val-fraction", AN_OPT_DOUBLE, RC4_OPT(val_fraction), "0.1", 0, 0.99, "F",
     "share of the training images kept apart for validation"},
    {"limit", AN_OPT_INT, RC4_OPT(limit), "0", 0, 4294967295.0, "N",
     "use only the first N images of each split (0 = all)"},
    {"seed", AN_OPT_INT, RC4_OPT(seed), "1", 0, 9007199254740992.0, "N",
     "seed of the train/validation split (the one `encode` uses)"},
};

static const an_command_spec_t rc4_spec = {
    .program = "archnet-publisher",
    .command = "baseline rc4",
    .summary =
        "Encrypt a dataset's images with RC4 (OpenSSL's legacy provider) and write them as\n"
        "`encode` does: OUT/train_x.npy (N x C x H x W), train_y.npy (uint8), val_x.npy,\n"
        "val_y.npy, and test_x.npy, test_y.npy from the dataset's test split. This is the\n"
        "paper's RC4 baseline: train a classifier on it to see what ciphertext leaves.\n"
        "--mode stream runs one keystream through the train split then the test split;\n"
        "--mode per-image restarts it for every image, so equal pixels at equal positions\n"
        "stay equal. The key is given on the command line: use a throwaway key.",
    .options = rc4_options,
    .n_options = sizeof rc4_options / sizeof rc4_options[0],
};

/* ---- RC4 through OpenSSL --------------------------------------------- */

/* RC4 lives in OpenSSL 3's legacy provider. It is loaded into a library
 * context of our own, so the default context (SHA-256 for the dataset
 * digest, TLS elsewhere) keeps its implicit default provider. */
typedef struct rc4_engine {
  OSSL_LIB_CTX *libctx;
  OSSL_PROVIDER *legacy;
  EVP_CIPHER *cipher;
  EVP_CIPHER_CTX *ctx;
} rc4_engine_t;

static void rc4_engine_destroy(rc4_engine_t *e) {
  EVP_CIPHER_CTX_free(e->ctx);
  EVP_CIPHER_free(e->cipher);
  if (e->legacy)
    OSSL_PROVIDER_unload(e->legacy);
  OSSL_LIB_CTX_free(e->libctx);
  memset(e, 0, sizeof *e);
}

/* Ready to produce the keystream of `key` from its first byte. */
static int rc4_engine_init(rc4_engine_t *e, const uint8_t *key, size_t key_len, char *err,
                           size_t errlen) {
  memset(e, 0, sizeof *e);
  if (!(e->libctx = OSSL_LIB_CTX_new()) || !(e->ctx = EVP_CIPHER_CTX_new())) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  if (!(e->legacy = OSSL_PROVIDER_load(e->libctx, "legacy")) ||
      !(e->cipher = EVP_CIPHER_fetch(e->libctx, "RC4", NULL))) {
    const char *why = ERR_reason_error_string(ERR_peek_last_error());
    snprintf(err, errlen,
             "RC4 is unavailable: OpenSSL's legacy provider could not be loaded (%s); it "
             "ships with OpenSSL 3 as ossl-modules/legacy.so, and OPENSSL_MODULES can point "
             "to its folder",
             why ? why : "no reason given");
    goto fail;
  }
  /* RC4's key length is variable: set it before the key. */
  if (EVP_EncryptInit_ex2(e->ctx, e->cipher, NULL, NULL, NULL) != 1 ||
      EVP_CIPHER_CTX_set_key_length(e->ctx, (int)key_len) != 1 ||
      EVP_EncryptInit_ex2(e->ctx, NULL, key, NULL, NULL) != 1) {
    snprintf(err, errlen, "RC4 refused a %zu-byte key", key_len);
    goto fail;
  }
  ERR_clear_error();
  return 0;
fail:
  ERR_clear_error();
  rc4_engine_destroy(e);
  return -1;
}

/* XORs the next len bytes of the keystream into buf. */
static int rc4_apply(rc4_engine_t *e, uint8_t *buf, size_t len) {
  while (len > 0) {
    int chunk = (int)(len < RC4_CHUNK ? len : RC4_CHUNK), outl = 0;
    if (EVP_EncryptUpdate(e->ctx, buf, &outl, buf, chunk) != 1 || outl != chunk)
      return -1;
    buf += chunk;
    len -= (size_t)chunk;
  }
  return 0;
}

/* ---- output ----------------------------------------------------------- */

typedef struct rc4_output {
  const char *dir;
  an_npy_dtype_t dtype;
  size_t elem; /* bytes per value in the output */
  uint64_t total_bytes;
  float f32[256]; /* ciphertext byte -> value, computed once */
  uint16_t f16[256];
} rc4_output_t;

/* Writes images order[0..n) (or 0..n when order is NULL) of `d` as
 * DIR/NAME_x.npy and their labels as DIR/NAME_y.npy. */
static int rc4_write_part(rc4_output_t *o, const an_dataset_t *d, const uint32_t *order,
                          size_t n, const char *name, char *err, size_t errlen) {
  size_t image = (size_t)d->c * (size_t)d->h * (size_t)d->w;
  int64_t x_shape[4] = {(int64_t)n, d->c, d->h, d->w}, y_shape[1] = {(int64_t)n};
  uint8_t *x = malloc(n * image * o->elem + 1), *y = malloc(n + 1);
  char path[4096];
  struct stat st;
  int rc = UV_ENOMEM;

  if (!x || !y) {
    snprintf(err, errlen, "out of memory for the %s part (%zu images)", name, n);
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    size_t k = order ? order[i] : i;
    const uint8_t *src = d->images + k * image;
    uint8_t *dst = x + i * image * o->elem;
    y[i] = d->labels[k];
    if (o->dtype == AN_NPY_U8)
      memcpy(dst, src, image);
    else if (o->dtype == AN_NPY_F32)
      for (size_t j = 0; j < image; j++)
        memcpy(dst + 4 * j, &o->f32[src[j]], 4);
    else
      for (size_t j = 0; j < image; j++)
        memcpy(dst + 2 * j, &o->f16[src[j]], 2);
  }
  for (int part = 0; part < 2; part++) {
    if (snprintf(path, sizeof path, "%s/%s_%c.npy", o->dir, name, part ? 'y' : 'x') >=
        (int)sizeof path) {
      snprintf(err, errlen, "%s: path too long", o->dir);
      rc = UV_ENAMETOOLONG;
      goto done;
    }
    rc = part ? an_npy_write(path, AN_NPY_U8, 1, y_shape, y, err, errlen)
              : an_npy_write(path, o->dtype, 4, x_shape, x, err, errlen);
    if (rc != 0)
      goto done;
    if (stat(path, &st) == 0)
      o->total_bytes += (uint64_t)st.st_size;
  }
done:
  free(x);
  free(y);
  return rc;
}

static void rc4_output_init(rc4_output_t *o, const char *dir, const char *dtype) {
  memset(o, 0, sizeof *o);
  o->dir = dir;
  o->dtype = strcmp(dtype, "u8") == 0 ? AN_NPY_U8 : strcmp(dtype, "f32") == 0 ? AN_NPY_F32
                                                                              : AN_NPY_F16;
  o->elem = o->dtype == AN_NPY_U8 ? 1 : o->dtype == AN_NPY_F32 ? 4 : 2;
  for (int b = 0; b < 256; b++) {
    o->f32[b] = (float)b / 255.0f;
    o->f16[b] = an_f16_from_f32(o->f32[b]);
  }
}

/* ---- the command ------------------------------------------------------ */

static void rc4_parse_hex(const char *hex, uint8_t *out, size_t *len) {
  *len = strlen(hex) / 2;
  for (size_t i = 0; i < *len; i++) {
    unsigned v = 0;
    sscanf(hex + 2 * i, "%2x", &v); /* rc4_check_key admitted only hex digits */
    out[i] = (uint8_t)v;
  }
}

/* Encrypts the images of the train split and then of the test split (which
 * may be empty) as --mode says. */
static int rc4_encrypt(rc4_engine_t *e, bool per_image, an_dataset_t *train, an_dataset_t *test,
                       char *err, size_t errlen) {
  size_t image = (size_t)train->c * (size_t)train->h * (size_t)train->w;
  an_dataset_t *parts[2] = {train, test};
  uint8_t *keystream = NULL;

  if (!per_image) {
    for (int p = 0; p < 2; p++)
      if (parts[p]->n && rc4_apply(e, parts[p]->images, parts[p]->n * image) != 0)
        goto fail;
    return 0;
  }
  /* Restarting the cipher with the same key gives the same bytes every
   * time: compute them once and XOR them into each image. */
  if (!(keystream = calloc(image, 1))) {
    snprintf(err, errlen, "out of memory");
    return UV_ENOMEM;
  }
  if (rc4_apply(e, keystream, image) != 0)
    goto fail;
  for (int p = 0; p < 2; p++)
    for (size_t i = 0; i < parts[p]->n; i++)
      for (size_t j = 0; j < image; j++)
        parts[p]->images[i * image + j] ^= keystream[j];
  free(keystream);
  return 0;
fail:
  free(keystream);
  snprintf(err, errlen, "RC4 encryption failed");
  return AN_EFORMAT;
}

static int an_publisher_baseline_rc4(int argc, char **argv) {
  rc4_settings_t s = {0};
  rc4_engine_t engine = {0};
  rc4_output_t out;
  an_dataset_t train = {0}, test = {0};
  uint8_t key[RC4_MAX_KEY];
  uint32_t *order = NULL;
  size_t key_len = 0, n_train = 0, image;
  char err[1024];
  int first, status, rc;
  bool have_test;

  if ((status = an_cli_parse(&rc4_spec, &s, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (first < argc) {
    fprintf(stderr, RC4_PREFIX "unexpected argument '%s'\n", argv[first]);
    goto done;
  }
  if (!s.key || !s.data || !s.out) {
    fprintf(stderr, RC4_PREFIX "give --%s (see --help)\n",
            !s.key ? "key HEX (5 to 256 bytes)" : !s.data ? "data DIR" : "out DIR");
    goto done;
  }
  status = AN_EXIT_FAIL;
  rc4_parse_hex(s.key, key, &key_len);
  if (rc4_engine_init(&engine, key, key_len, err, sizeof err) != 0) {
    fprintf(stderr, RC4_PREFIX "%s\n", err);
    goto done;
  }
  if (an_dataset_load(s.data, AN_DATASET_TRAIN, (size_t)s.limit, &train, err, sizeof err) != 0) {
    fprintf(stderr, RC4_PREFIX "%s\n", err);
    goto done;
  }
  rc = an_dataset_load(s.data, AN_DATASET_TEST, (size_t)s.limit, &test, err, sizeof err);
  have_test = rc == 0;
  if (rc == UV_ENOENT) { /* a folder of training files only: say so and go on */
    fprintf(stderr, RC4_PREFIX "no test split (%s); writing train and validation only\n", err);
  } else if (rc != 0) {
    fprintf(stderr, RC4_PREFIX "%s\n", err);
    goto done;
  } else if (test.c != train.c || test.h != train.h || test.w != train.w) {
    fprintf(stderr, RC4_PREFIX "%s: test images are %dx%dx%d, training images %dx%dx%d\n",
            s.data, test.c, test.h, test.w, train.c, train.h, train.w);
    goto done;
  }
  if (!(order = malloc(train.n * sizeof *order))) {
    fprintf(stderr, RC4_PREFIX "out of memory\n");
    goto done;
  }
  if (an_dataset_split(train.n, s.val_fraction, (uint64_t)s.seed, order, &n_train) != 0) {
    fprintf(stderr, RC4_PREFIX "cannot split %zu images\n", train.n);
    goto done;
  }
  if (rc4_encrypt(&engine, strcmp(s.mode, "per-image") == 0, &train, &test, err, sizeof err)) {
    fprintf(stderr, RC4_PREFIX "%s\n", err);
    goto done;
  }
  if (mkdir(s.out, 0755) != 0 && errno != EEXIST) {
    fprintf(stderr, RC4_PREFIX "cannot create %s: %s\n", s.out, strerror(errno));
    goto done;
  }
  rc4_output_init(&out, s.out, s.dtype);
  if (rc4_write_part(&out, &train, order, n_train, "train", err, sizeof err) != 0 ||
      rc4_write_part(&out, &train, order + n_train, train.n - n_train, "val", err,
                     sizeof err) != 0 ||
      (have_test && rc4_write_part(&out, &test, NULL, test.n, "test", err, sizeof err) != 0)) {
    fprintf(stderr, RC4_PREFIX "%s\n", err);
    goto done;
  }
  image = (size_t)train.c * (size_t)train.h * (size_t)train.w;
  printf("rc4 %s: %zu train, %zu validation, %zu test images of %dx%dx%d (%s, sha256 %.16s)\n",
         s.mode, n_train, train.n - n_train, test.n, train.c, train.h, train.w, train.format,
         train.digest);
  printf("bytes per image: %zu (%s)\n", image * out.elem, s.dtype);
  printf("total: %llu bytes in %s\n", (unsigned long long)out.total_bytes, s.out);
  status = AN_EXIT_OK;
done:
  OPENSSL_cleanse(key, sizeof key);
  free(order);
  an_dataset_free(&train);
  an_dataset_free(&test);
  rc4_engine_destroy(&engine);
  an_config_free(&rc4_spec, &s);
  return status;
}

/* `baseline` groups the paper's comparison points; RC4 is the only one. */
int an_publisher_baseline(int argc, char **argv) {
  static const char usage[] = "Usage: archnet-publisher baseline rc4 [OPTIONS]\n\n"
                              "Baselines from the paper, written in the layout `encode` writes:\n"
                              "  rc4    images encrypted with RC4 (stream or per-image keystream)\n"
                              "\nSee 'archnet-publisher baseline rc4 --help'.\n";
  if (argc >= 2 && strcmp(argv[1], "rc4") == 0)
    return an_publisher_baseline_rc4(argc - 1, argv + 1);
  if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
    fputs(usage, stdout);
    return AN_EXIT_OK;
  }
  if (argc >= 2)
    fprintf(stderr, "archnet-publisher baseline: unknown baseline '%s'\n", argv[1]);
  fputs(usage, stderr);
  return AN_EXIT_USAGE;
}
