/* Losses: each returns the mean loss over the batch and writes
 * d(loss)/d(prediction) into `grad` (same size as the prediction), so the
 * caller passes an_model_output_grad(model) and then runs backward. */
#ifndef AN_NN_LOSS_H
#define AN_NN_LOSS_H

#include <stddef.h>
#include <stdint.h>

/* Mean squared error over all n values (PyTorch's MSELoss, mean). */
double an_loss_mse(const float *pred, const float *target, size_t n, float *grad);

/* Binary cross-entropy of logits against targets in [0, 1], the paper's
 * equation 4 on sigmoid outputs, computed stably from the logits
 * (PyTorch's BCEWithLogitsLoss, mean). */
double an_loss_bce_logits(const float *logits, const float *target, size_t n, float *grad);

/* Softmax cross-entropy of logits [batch x classes] against integer labels
 * (PyTorch's CrossEntropyLoss, mean). Labels outside [0, classes) are
 * rejected: the return value is then NAN. `correct` (optional) receives the
 * number of top-1 hits. */
double an_loss_softmax_ce(const float *logits, const uint8_t *labels, int batch, int classes,
                          float *grad, int *correct);

#endif
