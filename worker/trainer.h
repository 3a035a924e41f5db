/* Training a classifier on an encoded dataset, the worker's private part:
 * the built-in trainer (common/nn) or an external command. Either way the
 * result is an ONNX file taking N x C x H x W float32 and giving N x K
 * scores; how it was trained never leaves the worker. */
#ifndef AN_WORKER_TRAINER_H
#define AN_WORKER_TRAINER_H

#include <stddef.h>
#include <stdint.h>

/* Called now and then while training with the fraction done; a non-zero
 * return stops training (the task was cancelled, or the worker is asked
 * to stop). */
typedef int (*an_trainer_progress)(double fraction, void *arg);

/* Input standardisation (common/nn/normalize.h): none, each channel's mean,
 * or the mean image; either way divided by each channel's std. */
typedef enum an_train_norm {
  AN_TRAIN_NORM_NONE = 0,
  AN_TRAIN_NORM_CHANNEL,
  AN_TRAIN_NORM_IMAGE
} an_train_norm_t;

typedef struct an_train_job {
  const char *x_path, *y_path; /* the task's train_x.npy and train_y.npy */
  int64_t c, h, w, classes;    /* what the model must take and give */
  const char *out_path;        /* where the ONNX model goes */
  /* Built-in trainer settings. */
  const char *preset;          /* "cnn-small" (default), "cnn-small-bn" or "resnet18" */
  int epochs, batch;
  double lr;
  int sgd;                     /* SGD with momentum 0.9 instead of Adam */
  int shift;                   /* augmentation: random translation by up to this many
                                  pixels (zero fill) of each training sample; 0 = none */
  int normalize;               /* an_train_norm_t: standardise the inputs with the training
                                  set's statistics; the export takes the codes as stored */
  int cosine;                  /* cosine-anneal the learning rate to 0 over the run */
  uint64_t seed;
  int bf16;
  /* External trainer: a shell command run with X, Y and OUT as $1..$3 and
   * in the environment (ARCHNET_X, ARCHNET_Y, ARCHNET_OUT, ARCHNET_CLASSES). */
  const char *command;
  an_trainer_progress progress;
  void *arg;
} an_train_job_t;

/* Trains with common/nn and exports the model. Returns 0, 1 if stopped by
 * the progress callback, or an error with a sentence in `err`. */
int an_trainer_builtin(const an_train_job_t *job, char *err, size_t errlen);

/* Runs job->command and waits for it, calling progress (with 0.5) every
 * few seconds so the lease stays alive; a non-zero return kills the
 * command. Returns 0 once the command exited 0 and left OUT; 1 if stopped;
 * or an error. */
int an_trainer_exec(const an_train_job_t *job, char *err, size_t errlen);

#endif
