/* Named models. The ArchNet layouts follow the paper's Table 2 with the
 * kernels of ../shared/reference/archnet_torch.py (every conv 3x3 padding 1,
 * except the 2x2 stride-2 transposed conv that doubles the size and the
 * decoder's 2x2 stride-2 conv that halves it), which reproduce the paper's
 * parameter counts: 122,960,821 (MNIST) and 14,961 (CIFAR-10). The label
 * `code` marks the H-encoder's output; the L-decoder is what follows. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/nn/spec.h"

const char *const an_preset_names[] = {"archnet-mnist", "archnet-cifar10", "cnn-small",
                                       "cnn-small-bn", "cnn-patch", "cnn-patch-dropout",
                                       "resnet18", NULL};

static const char an_archnet_mnist_encoder[] =
    "input 1 28 28\n"
    "# H-encoder: 1x28x28 -> 10x56x56\n"
    "conv 3 k=3 p=1\n"
    "conv 10 k=3 p=1\n"
    "conv 10 k=3 p=1\n"
    "linear 15680\n"
    "relu\n"
    "reshape 20 28 28\n"
    "conv 20 k=3 p=1\n"
    "code: convt 10 k=2 s=2\n";

static const char an_archnet_cifar10_encoder[] =
    "input 3 32 32\n"
    "# H-encoder: 3x32x32 -> 10x64x64, convolutions only\n"
    "conv 3 k=3 p=1\n"
    "conv 10 k=3 p=1\n"
    "conv 20 k=3 p=1\n"
    "conv 20 k=3 p=1\n"
    "code: convt 10 k=2 s=2\n";

/* The L-decoder of both variants; %d is the image's channel count. */
static const char an_archnet_decoder[] =
    "# L-decoder: back to the image's size and channels\n"
    "conv 10 k=2 s=2\n"
    "conv 30 k=3 p=1\n"
    "conv 10 k=3 p=1\n"
    "conv 10 k=3 p=1\n"
    "conv 10 k=3 p=1\n"
    "relu\n"
    "conv 5 k=3 p=1\n"
    "conv 3 k=3 p=1\n"
    "relu\n"
    "conv %d k=3 p=1\n";

static int an_append(char *buf, size_t len, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int an_append(char *buf, size_t len, size_t *used, const char *fmt, ...) {
  va_list ap;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(buf + *used, len - *used, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= len - *used)
    return AN_ETOOBIG;
  *used += (size_t)n;
  return 0;
}

/* The base model of ../shared/reference: conv32-pool-conv64-pool-fc128-fc. */
static int an_cnn_small(const int chw[3], int classes, char *buf, size_t len) {
  size_t used = 0;
  return an_append(buf, len, &used,
                   "input %d %d %d\n"
                   "conv 32 k=3 p=1\nrelu\nmaxpool k=2\n"
                   "conv 64 k=3 p=1\nrelu\nmaxpool k=2\n"
                   "linear 128\nrelu\nlinear %d\n",
                   chw[0], chw[1], chw[2], classes);
}

/* cnn-small with batch norm after each convolution (bias-free, as usual
 * before batch norm): the same widths and cost, steadier training. */
static int an_cnn_small_bn(const int chw[3], int classes, char *buf, size_t len) {
  size_t used = 0;
  return an_append(buf, len, &used,
                   "input %d %d %d\n"
                   "conv 32 k=3 p=1 bias=0\nbatchnorm\nrelu\nmaxpool k=2\n"
                   "conv 64 k=3 p=1 bias=0\nbatchnorm\nrelu\nmaxpool k=2\n"
                   "linear 128\nrelu\nlinear %d\n",
                   chw[0], chw[1], chw[2], classes);
}

/* A small CNN whose first layer is a 2x2 stride-2 convolution (a "patch"
 * stem, as in patch-embedding networks): it reads each 2x2 block of the
 * input as one position. ArchNet's H-encoder ends with a 2x2 stride-2
 * transposed convolution, so each 2x2 block of a code is one linear map of
 * the features at one image position; the stem reads it back in one piece,
 * where a stride-1 3x3 kernel would slide across blocks of different
 * phase. cnn-patch-dropout adds dropout (p = 0.5) before the last layer. */
static int an_cnn_patch(const int chw[3], int classes, int dropout, char *buf, size_t len) {
  size_t used = 0;
  return an_append(buf, len, &used,
                   "input %d %d %d\n"
                   "conv 32 k=2 s=2\nrelu\n"
                   "conv 64 k=3 p=1\nrelu\nmaxpool k=2\n"
                   "conv 64 k=3 p=1\nrelu\nmaxpool k=2\n"
                   "linear 128\nrelu\n%slinear %d\n",
                   chw[0], chw[1], chw[2], dropout ? "dropout p=0.5\n" : "", classes);
}

/* ResNet-18 for small images (3x3 stem, no stem pooling), as is usual for
 * CIFAR-sized inputs: 4 stages of 2 basic blocks, 64-128-256-512 channels. */
static int an_resnet18(const int chw[3], int classes, char *buf, size_t len) {
  static const int widths[4] = {64, 128, 256, 512};
  size_t used = 0;
  int rc = an_append(buf, len, &used,
                     "input %d %d %d\nconv 64 k=3 p=1 bias=0\nbatchnorm\ns0: relu\n", chw[0],
                     chw[1], chw[2]);
  int block = 0, in_w = 64;
  for (int stage = 0; stage < 4 && !rc; stage++) {
    for (int b = 0; b < 2 && !rc; b++) {
      int w = widths[stage], stride = (stage > 0 && b == 0) ? 2 : 1;
      char src[16], shortcut[16];
      snprintf(src, sizeof src, "s%d", block);
      snprintf(shortcut, sizeof shortcut, "%s", src);
      rc = an_append(buf, len, &used,
                     "conv %d k=3 s=%d p=1 bias=0 from=%s\nbatchnorm\nrelu\n"
                     "conv %d k=3 p=1 bias=0\nm%d: batchnorm\n",
                     w, stride, src, w, block + 1);
      if (!rc && (stride != 1 || in_w != w)) {
        /* Projection shortcut: 1x1 conv + batch norm on the block input. */
        snprintf(shortcut, sizeof shortcut, "d%d", block + 1);
        rc = an_append(buf, len, &used,
                       "conv %d k=1 s=%d bias=0 from=%s\nd%d: batchnorm\n", w, stride, src,
                       block + 1);
        if (!rc)
          rc = an_append(buf, len, &used, "add m%d from=%s\n", block + 1, shortcut);
      } else if (!rc) {
        rc = an_append(buf, len, &used, "add %s\n", shortcut);
      }
      if (!rc)
        rc = an_append(buf, len, &used, "s%d: relu\n", block + 1);
      block++;
      in_w = w;
    }
  }
  if (!rc)
    rc = an_append(buf, len, &used, "gap\nlinear %d\n", classes);
  return rc;
}

int an_preset_spec(const char *name, const int chw[3], int classes, char *buf, size_t len,
                   char *err, size_t errlen) {
  static const int mnist[3] = {1, 28, 28}, cifar[3] = {3, 32, 32};
  int shape[3];
  int rc;
  if (strcmp(name, "archnet-mnist") == 0 || strcmp(name, "archnet-cifar10") == 0) {
    int mnist_variant = name[8] == 'm';
    size_t used = 0;
    rc = an_append(buf, len, &used, "%s",
                   mnist_variant ? an_archnet_mnist_encoder : an_archnet_cifar10_encoder);
    if (!rc)
      rc = an_append(buf, len, &used, an_archnet_decoder, mnist_variant ? 1 : 3);
    return rc;
  }
  if (classes <= 0)
    classes = 10;
  if (classes > 65536) {
    snprintf(err, errlen, "%d classes is too many", classes);
    return AN_EMODEL;
  }
  if (chw && chw[0] > 0)
    memcpy(shape, chw, sizeof shape);
  else
    memcpy(shape, strcmp(name, "resnet18") == 0 ? cifar : mnist, sizeof shape);
  if (strcmp(name, "cnn-small") == 0)
    rc = an_cnn_small(shape, classes, buf, len);
  else if (strcmp(name, "cnn-small-bn") == 0)
    rc = an_cnn_small_bn(shape, classes, buf, len);
  else if (strcmp(name, "cnn-patch") == 0)
    rc = an_cnn_patch(shape, classes, 0, buf, len);
  else if (strcmp(name, "cnn-patch-dropout") == 0)
    rc = an_cnn_patch(shape, classes, 1, buf, len);
  else if (strcmp(name, "resnet18") == 0)
    rc = an_resnet18(shape, classes, buf, len);
  else {
    snprintf(err, errlen, "unknown preset '%s' (archnet-mnist, archnet-cifar10, cnn-small, "
                          "cnn-small-bn, cnn-patch, cnn-patch-dropout, resnet18)",
             name);
    return AN_EMODEL;
  }
  if (rc)
    snprintf(err, errlen, "preset spec does not fit its buffer");
  return rc;
}

int an_model_preset(const char *name, const int chw[3], int classes, an_model_t **out,
                    char *err, size_t errlen) {
  char spec[8192];
  int rc = an_preset_spec(name, chw, classes, spec, sizeof spec, err, errlen);
  if (rc)
    return rc;
  rc = an_model_parse(spec, out, err, errlen);
  if (rc) {
    /* A preset that does not fit the given input shape. */
    char why[512];
    snprintf(why, sizeof why, "preset %s: %s", name, err);
    snprintf(err, errlen, "%s", why);
  }
  return rc;
}
