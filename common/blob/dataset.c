#include "common/blob/dataset.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <uv.h>
#include <zlib.h>

#include "common/blob/cifar.h"
#include "common/blob/idx.h"
#include "common/blob/npy.h"
#include "common/error.h"
#include "common/nn/rng.h"

/* Sanity limits for untrusted headers: far above MNIST (47 MB) and CIFAR-10
 * (150 MB), far below what would hurt the machine. */
#define AN_DATASET_MAX_BYTES ((size_t)4 << 30)       /* the images of one split */
#define AN_DATASET_MAX_IMAGE_BYTES ((size_t)1 << 24) /* one image, C * H * W */
#define AN_DATASET_PATH 4096
#define AN_DATASET_HASH_CHUNK ((size_t)1 << 16)

#define AN_CIFAR_SUBDIR "cifar-10-batches-bin"
#define AN_CIFAR_TRAIN_BATCHES 5

static const char *const an_idx_names[2][2] = {
    [AN_DATASET_TRAIN] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
    [AN_DATASET_TEST] = {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"},
};
static const char *const an_npy_prefix[2] = {[AN_DATASET_TRAIN] = "train",
                                              [AN_DATASET_TEST] = "test"};

/* ---- paths and the digest -------------------------------------------- */

static int an_join(char *out, const char *dir, const char *name, const char *suffix) {
  int n = snprintf(out, AN_DATASET_PATH, "%s/%s%s", dir, name, suffix);
  return n > 0 && n < AN_DATASET_PATH ? 0 : -1;
}

static int an_is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* dir/name or, failing that, dir/name.gz into `out`; 1 if either exists. */
static int an_find_idx(const char *dir, const char *name, char *out) {
  if (an_join(out, dir, name, "") == 0 && an_is_file(out))
    return 1;
  return an_join(out, dir, name, ".gz") == 0 && an_is_file(out);
}

/* Feeds a whole file, as stored (a .gz stays compressed), to the digest. */
static int an_hash_file(EVP_MD_CTX *md, const char *path, char *err, size_t errlen) {
  uint8_t *buf = malloc(AN_DATASET_HASH_CHUNK);
  FILE *f = NULL;
  size_t got;
  int rc = 0;

  if (!buf) {
    snprintf(err, errlen, "%s: out of memory", path);
    return UV_ENOMEM;
  }
  if (!(f = fopen(path, "rb"))) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-rc));
    goto done;
  }
  while ((got = fread(buf, 1, AN_DATASET_HASH_CHUNK, f)) > 0) {
    if (EVP_DigestUpdate(md, buf, got) != 1) {
      snprintf(err, errlen, "%s: SHA-256 failed", path);
      rc = UV_ENOMEM; /* the only way a software digest update fails */
      goto done;
    }
  }
  if (ferror(f)) {
    rc = errno ? -errno : UV_EIO;
    snprintf(err, errlen, "%s: read failed while hashing", path);
  }
done:
  if (f)
    fclose(f);
  free(buf);
  return rc;
}

static int an_hash_finish(EVP_MD_CTX *md, char hex[65], char *err, size_t errlen) {
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  if (EVP_DigestFinal_ex(md, digest, &len) != 1 || len != 32) {
    snprintf(err, errlen, "SHA-256 failed");
    return UV_ENOMEM;
  }
  for (unsigned i = 0; i < len; i++)
    snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  return 0;
}

/* ---- MNIST / Fashion-MNIST idx ---------------------------------------- */

/* The item count in an idx header (whose magic an_idx_read has already
 * checked). Read separately because an_idx_read stops at `limit` items, and
 * images and labels must agree in the files, not just in what we keep. */
static int an_idx_count(const char *path, uint32_t *n) {
  uint8_t h[8];
  gzFile f = gzopen(path, "rb");
  int ok;
  if (!f)
    return -1;
  ok = gzread(f, h, sizeof h) == (int)sizeof h;
  gzclose(f);
  *n = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
  return ok ? 0 : -1;
}

static int an_load_idx(const char *dir, an_dataset_split_t split, size_t limit,
                       an_dataset_t *out, EVP_MD_CTX *md, char *err, size_t errlen) {
  char img_path[AN_DATASET_PATH], lbl_path[AN_DATASET_PATH];
  an_idx_t img = {0}, lbl = {0};
  uint32_t max_items = limit > UINT32_MAX ? 0 : (uint32_t)limit, n_img, n_lbl;
  int rc;

  for (int i = 0; i < 2; i++) {
    if (!an_find_idx(dir, an_idx_names[split][i], i == 0 ? img_path : lbl_path)) {
      snprintf(err, errlen, "%s: %s[.gz] is missing (the folder holds other MNIST idx files)",
               dir, an_idx_names[split][i]);
      return UV_ENOENT;
    }
  }
  if ((rc = an_idx_read(img_path, max_items, &img, err, errlen)) != 0 ||
      (rc = an_idx_read(lbl_path, max_items, &lbl, err, errlen)) != 0)
    goto done;
  rc = AN_EFORMAT;
  if (img.ndim != 3) {
    snprintf(err, errlen, "%s: holds labels, not images", img_path);
    goto done;
  }
  if (lbl.ndim != 1) {
    snprintf(err, errlen, "%s: holds images, not labels", lbl_path);
    goto done;
  }
  if (an_idx_count(img_path, &n_img) != 0 || an_idx_count(lbl_path, &n_lbl) != 0) {
    snprintf(err, errlen, "%s: cannot read the headers again", dir);
    goto done;
  }
  if (n_img != n_lbl) {
    snprintf(err, errlen, "%s holds %u images but %s holds %u labels", img_path, n_img,
             lbl_path, n_lbl);
    goto done;
  }
  for (uint32_t i = 0; i < lbl.dims[0]; i++) {
    if (lbl.data[i] >= 10) {
      snprintf(err, errlen, "%s: label %u of item %u is out of range (10 classes)", lbl_path,
               lbl.data[i], i);
      goto done;
    }
  }
  if ((size_t)img.dims[1] * img.dims[2] > AN_DATASET_MAX_IMAGE_BYTES) {
    snprintf(err, errlen, "%s: %ux%u images are over the %zu-byte limit", img_path, img.dims[1],
             img.dims[2], AN_DATASET_MAX_IMAGE_BYTES);
    rc = AN_ETOOBIG;
    goto done;
  }
  if ((rc = an_hash_file(md, img_path, err, errlen)) != 0 ||
      (rc = an_hash_file(md, lbl_path, err, errlen)) != 0)
    goto done;
  out->format = "idx";
  out->n = img.dims[0];
  out->c = 1;
  out->h = (int)img.dims[1];
  out->w = (int)img.dims[2];
  out->n_classes = 10;
  out->images = img.data; /* ownership moves to the dataset */
  out->labels = lbl.data;
  img.data = lbl.data = NULL;
  rc = 0;
done:
  an_idx_free(&img);
  an_idx_free(&lbl);
  return rc;
}

/* ---- CIFAR-10 binary batches ------------------------------------------ */

/* The batches of one split, in the order their records are concatenated. */
static size_t an_cifar_batches(an_dataset_split_t split, char names[][32]) {
  if (split == AN_DATASET_TEST) {
    snprintf(names[0], 32, "test_batch.bin");
    return 1;
  }
  for (int i = 0; i < AN_CIFAR_TRAIN_BATCHES; i++)
    snprintf(names[i], 32, "data_batch_%d.bin", i + 1);
  return AN_CIFAR_TRAIN_BATCHES;
}

static int an_load_cifar(const char *base, an_dataset_split_t split, size_t limit,
                         an_dataset_t *out, EVP_MD_CTX *md, char *err, size_t errlen) {
  char names[AN_CIFAR_TRAIN_BATCHES][32], path[AN_DATASET_PATH];
  size_t n_files = an_cifar_batches(split, names), count[AN_CIFAR_TRAIN_BATCHES], total = 0;
  size_t done_n = 0;
  int rc;

  for (size_t i = 0; i < n_files; i++) {
    if (an_join(path, base, names[i], "") != 0 || !an_is_file(path)) {
      snprintf(err, errlen, "%s: %s is missing (the folder holds other CIFAR-10 batches)", base,
               names[i]);
      return UV_ENOENT;
    }
    if ((rc = an_cifar_count(path, &count[i], err, errlen)) != 0)
      return rc;
    total += count[i];
  }
  out->n = limit && limit < total ? limit : total;
  if (out->n > AN_DATASET_MAX_BYTES / AN_CIFAR_IMAGE_BYTES) {
    snprintf(err, errlen, "%s: %zu images are over the %zu-byte limit", base, out->n,
             AN_DATASET_MAX_BYTES);
    return AN_ETOOBIG;
  }
  out->images = malloc(out->n * AN_CIFAR_IMAGE_BYTES);
  out->labels = malloc(out->n);
  if (!out->images || !out->labels) {
    snprintf(err, errlen, "%s: out of memory for %zu images", base, out->n);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < n_files; i++) {
    size_t take = count[i] < out->n - done_n ? count[i] : out->n - done_n;
    if (an_join(path, base, names[i], "") != 0)
      return UV_ENAMETOOLONG; /* cannot happen: the same join worked above */
    if ((rc = an_cifar_read(path, take, out->images + done_n * AN_CIFAR_IMAGE_BYTES,
                            out->labels + done_n, err, errlen)) != 0 ||
        (rc = an_hash_file(md, path, err, errlen)) != 0)
      return rc;
    done_n += take;
  }
  out->format = "cifar10";
  out->c = AN_CIFAR_CHANNELS;
  out->h = out->w = AN_CIFAR_SIDE;
  out->n_classes = AN_CIFAR_CLASSES;
  return 0;
}

/* ---- NumPy ------------------------------------------------------------ */

static int an_load_npy(const char *dir, an_dataset_split_t split, size_t limit,
                       an_dataset_t *out, EVP_MD_CTX *md, char *err, size_t errlen) {
  char x_path[AN_DATASET_PATH], y_path[AN_DATASET_PATH], x_name[16], y_name[16];
  an_npy_t x = {0}, y = {0};
  size_t n_file, image_bytes;
  int rc, max_label = -1;

  snprintf(x_name, sizeof x_name, "%s_x.npy", an_npy_prefix[split]);
  snprintf(y_name, sizeof y_name, "%s_y.npy", an_npy_prefix[split]);
  if (an_join(x_path, dir, x_name, "") != 0 || an_join(y_path, dir, y_name, "") != 0) {
    snprintf(err, errlen, "%s: path too long", dir);
    return UV_ENAMETOOLONG;
  }
  for (int i = 0; i < 2; i++) {
    if (!an_is_file(i == 0 ? x_path : y_path)) {
      snprintf(err, errlen, "%s: %s is missing (the folder holds other NumPy files)", dir,
               i == 0 ? x_name : y_name);
      return UV_ENOENT;
    }
  }
  if ((rc = an_npy_read(x_path, AN_DATASET_MAX_BYTES, &x, err, errlen)) != 0 ||
      (rc = an_npy_read(y_path, AN_DATASET_MAX_BYTES, &y, err, errlen)) != 0)
    goto done;
  rc = AN_EUNSUPPORTED;
  if (x.dtype != AN_NPY_U8) {
    snprintf(err, errlen, "%s: images must be uint8", x_path);
    goto done;
  }
  if (y.dtype != AN_NPY_U8 && y.dtype != AN_NPY_I64) {
    snprintf(err, errlen, "%s: labels must be uint8 or int64", y_path);
    goto done;
  }
  rc = AN_EFORMAT;
  if (x.ndim != 3 && x.ndim != 4) {
    snprintf(err, errlen, "%s: images must be N x C x H x W or N x H x W, not %d-dimensional",
             x_path, x.ndim);
    goto done;
  }
  if (y.ndim != 1) {
    snprintf(err, errlen, "%s: labels must be one-dimensional, not %d-dimensional", y_path,
             y.ndim);
    goto done;
  }
  n_file = (size_t)x.shape[0];
  if (n_file == 0) {
    snprintf(err, errlen, "%s: holds no images", x_path);
    goto done;
  }
  if ((size_t)y.shape[0] != n_file) {
    snprintf(err, errlen, "%s holds %zu images but %s holds %lld labels", x_path, n_file,
             y_path, (long long)y.shape[0]);
    goto done;
  }
  out->c = x.ndim == 4 ? (int)x.shape[1] : 1;
  image_bytes = x.nbytes / n_file; /* npy checked the product against max_bytes */
  if (image_bytes == 0 || image_bytes > AN_DATASET_MAX_IMAGE_BYTES || n_file > UINT32_MAX) {
    snprintf(err, errlen, "%s: %s", x_path,
             image_bytes == 0 ? "images are empty" : "absurd dimensions");
    rc = image_bytes == 0 ? AN_EFORMAT : AN_ETOOBIG;
    goto done;
  }
  out->h = (int)x.shape[x.ndim - 2];
  out->w = (int)x.shape[x.ndim - 1];
  out->n = limit && limit < n_file ? limit : n_file;
  if (!(out->labels = malloc(out->n))) {
    snprintf(err, errlen, "%s: out of memory", y_path);
    rc = UV_ENOMEM;
    goto done;
  }
  for (size_t i = 0; i < n_file; i++) { /* every label, kept or not, must be valid */
    int64_t v = y.dtype == AN_NPY_U8 ? ((const uint8_t *)y.data)[i] : ((const int64_t *)y.data)[i];
    if (v < 0 || v > 255) {
      snprintf(err, errlen, "%s: label %lld of item %zu is out of range (0..255)", y_path,
               (long long)v, i);
      goto done;
    }
    if (i < out->n)
      out->labels[i] = (uint8_t)v;
    if ((int)v > max_label)
      max_label = (int)v;
  }
  if ((rc = an_hash_file(md, x_path, err, errlen)) != 0 ||
      (rc = an_hash_file(md, y_path, err, errlen)) != 0)
    goto done;
  out->format = "npy";
  out->n_classes = max_label + 1;
  out->images = x.data; /* ownership moves; the first n images lead the buffer */
  x.data = NULL;
  if (out->n < n_file) {
    uint8_t *shrunk = realloc(out->images, out->n * image_bytes);
    if (shrunk) /* keeping the larger block is harmless */
      out->images = shrunk;
  }
  rc = 0;
done:
  an_npy_free(&x);
  an_npy_free(&y);
  return rc;
}

/* ---- which format ----------------------------------------------------- */

typedef enum an_dataset_kind { AN_KIND_NONE, AN_KIND_IDX, AN_KIND_CIFAR, AN_KIND_NPY } an_kind_t;

/* Recognises the folder by any file of either split, so that a missing
 * companion file is reported by name rather than as "no dataset". For
 * CIFAR-10, `cifar_base` is set to the folder that holds the batches. */
static an_kind_t an_dataset_detect(const char *dir, char *cifar_base) {
  char path[AN_DATASET_PATH];
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < 2; i++)
      if (an_find_idx(dir, an_idx_names[s][i], path))
        return AN_KIND_IDX;
  for (int sub = 0; sub < 2; sub++) {
    int len = snprintf(cifar_base, AN_DATASET_PATH, sub ? "%s/" AN_CIFAR_SUBDIR : "%s", dir);
    if (len < 0 || len >= AN_DATASET_PATH)
      continue;
    for (int b = 1; b <= AN_CIFAR_TRAIN_BATCHES; b++) {
      char name[32];
      snprintf(name, sizeof name, "data_batch_%d.bin", b);
      if (an_join(path, cifar_base, name, "") == 0 && an_is_file(path))
        return AN_KIND_CIFAR;
    }
    if (an_join(path, cifar_base, "test_batch.bin", "") == 0 && an_is_file(path))
      return AN_KIND_CIFAR;
  }
  for (int s = 0; s < 2; s++)
    for (int i = 0; i < 2; i++) {
      char name[16];
      snprintf(name, sizeof name, "%s_%c.npy", an_npy_prefix[s], i == 0 ? 'x' : 'y');
      if (an_join(path, dir, name, "") == 0 && an_is_file(path))
        return AN_KIND_NPY;
    }
  return AN_KIND_NONE;
}

int an_dataset_load(const char *dir, an_dataset_split_t split, size_t limit, an_dataset_t *out,
                    char *err, size_t errlen) {
  char cifar_base[AN_DATASET_PATH];
  EVP_MD_CTX *md = NULL;
  struct stat st;
  int rc;

  memset(out, 0, sizeof *out);
  if (split != AN_DATASET_TRAIN && split != AN_DATASET_TEST) {
    snprintf(err, errlen, "unknown dataset split %d", (int)split);
    return UV_EINVAL;
  }
  if (stat(dir, &st) != 0) {
    rc = -errno;
    snprintf(err, errlen, "%s: cannot open the dataset folder: %s", dir, strerror(-rc));
    return rc;
  }
  if (!S_ISDIR(st.st_mode)) {
    snprintf(err, errlen, "%s: not a folder", dir);
    return UV_ENOTDIR;
  }
  if (strlen(dir) + 64 >= AN_DATASET_PATH) {
    snprintf(err, errlen, "%s: path too long", dir);
    return UV_ENAMETOOLONG;
  }
  if (!(md = EVP_MD_CTX_new()) || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
    snprintf(err, errlen, "out of memory for SHA-256");
    rc = UV_ENOMEM;
    goto done;
  }
  switch (an_dataset_detect(dir, cifar_base)) {
  case AN_KIND_IDX:
    rc = an_load_idx(dir, split, limit, out, md, err, errlen);
    break;
  case AN_KIND_CIFAR:
    rc = an_load_cifar(cifar_base, split, limit, out, md, err, errlen);
    break;
  case AN_KIND_NPY:
    rc = an_load_npy(dir, split, limit, out, md, err, errlen);
    break;
  default:
    snprintf(err, errlen,
             "%s: no dataset found; looked for MNIST idx files (train-images-idx3-ubyte, "
             "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or "
             ".gz), CIFAR-10 batches (data_batch_1.bin .. data_batch_5.bin, test_batch.bin, "
             "here or in " AN_CIFAR_SUBDIR "/) and NumPy files (train_x.npy, train_y.npy, "
             "test_x.npy, test_y.npy)",
             dir);
    rc = UV_ENOENT;
    break;
  }
  if (rc == 0)
    rc = an_hash_finish(md, out->digest, err, errlen);
done:
  EVP_MD_CTX_free(md);
  if (rc != 0)
    an_dataset_free(out);
  return rc;
}

void an_dataset_free(an_dataset_t *d) {
  if (!d)
    return;
  free(d->images);
  free(d->labels);
  memset(d, 0, sizeof *d);
}

/* ---- the train / validation split ------------------------------------- */

int an_dataset_split(size_t n, double val_fraction, uint64_t seed, uint32_t *order,
                     size_t *n_train) {
  an_rng_t rng;
  size_t n_val;

  if (!(val_fraction >= 0.0 && val_fraction < 1.0) || n > UINT32_MAX)
    return UV_EINVAL;
  n_val = (size_t)llround((double)n * val_fraction);
  if (val_fraction > 0.0 && n >= 2 && n_val == 0)
    n_val = 1;
  if (n > 0 && n_val >= n) /* training keeps at least one image */
    n_val = n - 1;
  for (size_t i = 0; i < n; i++)
    order[i] = (uint32_t)i;
  an_rng_seed(&rng, seed);
  an_rng_shuffle(&rng, order, n);
  *n_train = n - n_val;
  return 0;
}
