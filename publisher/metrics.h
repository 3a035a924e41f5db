/* How close reconstructed images are to their originals: the figures the
 * `audit` command reports for an attacker (and for the owner's L-decoder).
 *
 * Images are N x C x H x W float32 with values in [0, 1] (L = 1). The
 * reconstruction is clamped to [0, 1] before comparing, as it would be to
 * show it; the originals are taken as they are. All arrays are borrowed. */
#ifndef AN_PUBLISHER_METRICS_H
#define AN_PUBLISHER_METRICS_H

#include <stddef.h>

/* PSNR above which two images count as identical (mse below 1e-10). */
#define AN_METRICS_PSNR_MAX 100.0

/* Mean over the n images of each image's PSNR, 10 log10(1 / mse) in dB,
 * mse being the mean squared error over its `values` (C*H*W) pixels; an
 * image with mse under 1e-10 counts as AN_METRICS_PSNR_MAX. 0 for n = 0. */
double an_metrics_psnr(const float *original, const float *recon, size_t n, size_t values);

/* Side of SSIM's Gaussian window (sigma 1.5). */
#define AN_METRICS_SSIM_WINDOW 11

/* Mean SSIM over the n images, as Wang, Bovik, Sheikh and Simoncelli (2004)
 * define it and their reference code computes it: an 11x11 Gaussian window
 * (sigma 1.5, normalised), K1 = 0.01, K2 = 0.03, L = 1, weighted local
 * means, variances and covariance, the SSIM map over the positions where
 * the whole window fits inside the image ("valid"), no downsampling. A
 * colour image's SSIM is the mean of its channels' SSIM.
 * Returns 0; UV_EINVAL if h or w is smaller than the window; UV_ENOMEM. */
int an_metrics_ssim(const float *original, const float *recon, size_t n, int c, int h, int w,
                    double *mean_ssim);

/* Re-identification rate: the fraction of the n reconstructions whose
 * nearest original (Euclidean distance over the `values` pixels, among all
 * n originals; the lowest index wins a tie) is their own. Chance is 1/n.
 * Returns 0; UV_EINVAL for n = 0 or sizes over INT_MAX; UV_ENOMEM. */
int an_metrics_reid(const float *original, const float *recon, size_t n, size_t values,
                    double *rate);

#endif
