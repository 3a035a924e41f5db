/* The paper's figure 7 as a PNG: test accuracy per epoch of the classifier
 * trained on the original images (AO), on the ArchNet codes (AE) and on the
 * RC4 ciphertext, one panel per dataset, from paper_train's CSV curves.
 *
 *   paper_plot --out FILE.png LABEL AO.csv AE.csv RC4.csv [LABEL AO.csv AE.csv RC4.csv ...]
 *
 * Drawn with nothing but a pixel buffer and a 5x7 bitmap font (Debian's
 * Python here has no matplotlib), written by publisher/image_grid.c. */
#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/error.h"
#include "publisher/image_grid.h"

#define MAX_EPOCHS 1000
#define SERIES 3

enum {
  PANEL_W = 480, PANEL_H = 340,     /* one dataset */
  MARGIN_L = 70, MARGIN_R = 20,     /* plot area inside the panel */
  MARGIN_T = 44, MARGIN_B = 56,
  TEXT_SCALE = 2,                   /* font pixels per glyph pixel */
  GLYPH_ADVANCE = 6 * TEXT_SCALE,
  GLYPH_HEIGHT = 7 * TEXT_SCALE,
};

typedef struct rgb {
  float r, g, b;
} rgb_t;

/* An RGB picture as three float planes, which an_image_grid_png takes. */
typedef struct canvas {
  int w, h;
  float *px; /* 3 x h x w */
} canvas_t;

typedef struct curve {
  int n;                        /* points */
  double epoch[MAX_EPOCHS + 1];
  double accuracy[MAX_EPOCHS + 1];
} curve_t;

typedef struct glyph {
  char c;
  uint8_t rows[7]; /* bit 4 is the leftmost pixel */
} glyph_t;

static const glyph_t font[] = {
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}}, {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}}, {'3', {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}}, {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}}, {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}}, {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}}, {'B', {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E}},
    {'C', {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E}}, {'D', {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C}},
    {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}}, {'F', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'H', {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}}, {'J', {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'K', {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11}}, {'L', {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F}},
    {'M', {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11}}, {'N', {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'Q', {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D}}, {'R', {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11}},
    {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}}, {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}},
    {'U', {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'W', {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A}}, {'X', {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11}},
    {'Y', {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04}}, {'Z', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F}},
    {' ', {0, 0, 0, 0, 0, 0, 0}},                      {'.', {0, 0, 0, 0, 0, 0x0C, 0x0C}},
    {'-', {0, 0, 0, 0x1F, 0, 0, 0}},                   {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}}, {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'/', {0, 0x01, 0x02, 0x04, 0x08, 0x10, 0}},       {':', {0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0}},
    {'=', {0, 0, 0x1F, 0, 0x1F, 0, 0}},
};

/* Any other character is drawn as a box. */
static const glyph_t unknown_glyph = {'?', {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F}};

static const rgb_t black = {0, 0, 0}, grid_grey = {0.88f, 0.88f, 0.88f};
static const rgb_t series_colour[SERIES] = {
    {0.12f, 0.47f, 0.71f}, /* AO: blue */
    {1.00f, 0.50f, 0.05f}, /* AE: orange */
    {0.50f, 0.50f, 0.50f}, /* RC4: grey */
};
static const char *const series_name[SERIES] = {"AO", "AE", "RC4"};

static void put(canvas_t *cv, int x, int y, rgb_t c) {
  if (x < 0 || y < 0 || x >= cv->w || y >= cv->h)
    return;
  size_t plane = (size_t)cv->w * (size_t)cv->h, at = (size_t)y * (size_t)cv->w + (size_t)x;
  cv->px[at] = c.r;
  cv->px[plane + at] = c.g;
  cv->px[2 * plane + at] = c.b;
}

static void fill_rect(canvas_t *cv, int x0, int y0, int w, int h, rgb_t c) {
  for (int y = y0; y < y0 + h; y++)
    for (int x = x0; x < x0 + w; x++)
      put(cv, x, y, c);
}

/* A line `thick` pixels wide, stamped along its length. */
static void line(canvas_t *cv, double x0, double y0, double x1, double y1, int thick, rgb_t c) {
  double len = fmax(fabs(x1 - x0), fabs(y1 - y0));
  int steps = (int)ceil(len) + 1;
  for (int i = 0; i <= steps; i++) {
    double t = (double)i / steps;
    int x = (int)lround(x0 + (x1 - x0) * t), y = (int)lround(y0 + (y1 - y0) * t);
    fill_rect(cv, x - thick / 2, y - thick / 2, thick, thick, c);
  }
}

static const glyph_t *glyph_for(char ch) {
  char up = (char)toupper((unsigned char)ch);
  for (size_t i = 0; i < sizeof font / sizeof font[0]; i++)
    if (font[i].c == up)
      return &font[i];
  return &unknown_glyph;
}

static int text_width(const char *s) {
  return (int)strlen(s) * GLYPH_ADVANCE - TEXT_SCALE;
}

/* Text with its top-left corner at (x, y), upper case. */
static void text(canvas_t *cv, int x, int y, const char *s, rgb_t c) {
  for (; *s; s++, x += GLYPH_ADVANCE) {
    const glyph_t *g = glyph_for(*s);
    for (int row = 0; row < 7; row++)
      for (int col = 0; col < 5; col++)
        if (g->rows[row] & (0x10 >> col))
          fill_rect(cv, x + col * TEXT_SCALE, y + row * TEXT_SCALE, TEXT_SCALE, TEXT_SCALE, c);
  }
}

/* Reads paper_train's CSV: a header, then epoch,loss,train_acc,test_acc,seconds. */
static int read_curve(const char *path, curve_t *cv, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  char line_buf[256];
  if (!f) {
    snprintf(err, errlen, "cannot read %s", path);
    return AN_EFORMAT;
  }
  cv->n = 0;
  int rc = 0;
  if (!fgets(line_buf, sizeof line_buf, f))
    rc = AN_EFORMAT;
  while (rc == 0 && fgets(line_buf, sizeof line_buf, f)) {
    int epoch;
    double loss, train_acc, test_acc, seconds;
    if (sscanf(line_buf, "%d,%lf,%lf,%lf,%lf", &epoch, &loss, &train_acc, &test_acc,
               &seconds) != 5 || cv->n > MAX_EPOCHS) {
      rc = AN_EFORMAT;
      break;
    }
    cv->epoch[cv->n] = epoch;
    cv->accuracy[cv->n] = test_acc;
    cv->n++;
  }
  fclose(f);
  if (rc == 0 && cv->n == 0)
    rc = AN_EFORMAT;
  if (rc != 0)
    snprintf(err, errlen, "%s: not a paper_train curve", path);
  return rc;
}

/* One panel: axes from epoch 0 to the last, accuracy 0 to 100 %. */
static void draw_panel(canvas_t *cv, int left, const char *title, const curve_t curves[SERIES]) {
  int x0 = left + MARGIN_L, y0 = MARGIN_T, w = PANEL_W - MARGIN_L - MARGIN_R,
      h = PANEL_H - MARGIN_T - MARGIN_B;
  double last = 1;
  for (int s = 0; s < SERIES; s++)
    last = fmax(last, curves[s].epoch[curves[s].n - 1]);
  char label[32];

  char heading[160];
  snprintf(heading, sizeof heading, "%s: test accuracy (%%)", title);
  text(cv, left + (PANEL_W - text_width(heading)) / 2, 12, heading, black);
  for (int pct = 0; pct <= 100; pct += 20) {
    int y = y0 + h - (int)lround(h * pct / 100.0);
    line(cv, x0, y, x0 + w, y, 1, grid_grey);
    snprintf(label, sizeof label, "%d", pct);
    text(cv, x0 - 8 - text_width(label), y - GLYPH_HEIGHT / 2, label, black);
  }
  int step = last > 10 ? (int)ceil(last / 10) : 1;
  for (int e = 0; e <= (int)last; e += step) {
    int x = x0 + (int)lround(w * e / last);
    line(cv, x, y0 + h, x, y0 + h + 5, 1, black);
    snprintf(label, sizeof label, "%d", e);
    text(cv, x - text_width(label) / 2, y0 + h + 10, label, black);
  }
  line(cv, x0, y0, x0, y0 + h, 2, black);
  line(cv, x0, y0 + h, x0 + w, y0 + h, 2, black);
  text(cv, x0 + (w - text_width("epoch")) / 2, y0 + h + 10 + GLYPH_HEIGHT + 6, "epoch", black);

  for (int s = 0; s < SERIES; s++) {
    const curve_t *c = &curves[s];
    double px = 0, py = 0;
    for (int i = 0; i < c->n; i++) {
      double x = x0 + w * c->epoch[i] / last, y = y0 + h - h * c->accuracy[i] / 100.0;
      if (i > 0)
        line(cv, px, py, x, y, 3, series_colour[s]);
      fill_rect(cv, (int)lround(x) - 3, (int)lround(y) - 3, 7, 7, series_colour[s]);
      px = x;
      py = y;
    }
  }
  /* Legend, mid-height at the right, where no curve runs. */
  int ly = y0 + h / 2 - 30;
  for (int s = 0; s < SERIES; s++, ly += GLYPH_HEIGHT + 8) {
    int lx = x0 + w - 110;
    line(cv, lx, ly + GLYPH_HEIGHT / 2, lx + 24, ly + GLYPH_HEIGHT / 2, 3, series_colour[s]);
    text(cv, lx + 32, ly, series_name[s], black);
  }
}

typedef struct settings {
  char *out;
} settings_t;

static const an_option_t options[] = {
    {"out", AN_OPT_STR, offsetof(settings_t, out), NULL, 0, 0, "FILE.png", "where the figure goes"},
};

static const an_command_spec_t spec = {
    .program = "paper_plot",
    .args = "LABEL AO.csv AE.csv RC4.csv [LABEL AO.csv AE.csv RC4.csv ...]",
    .summary = "Draw the paper's figure 7 (test accuracy per epoch on original, ArchNet-encoded\n"
               "and RC4-encrypted data) from paper_train's curves, one panel per dataset.",
    .options = options,
    .n_options = sizeof options / sizeof options[0],
};

int main(int argc, char **argv) {
  settings_t st = {0};
  canvas_t cv = {0};
  curve_t *curves = NULL;
  char err[1024] = "";
  int first_arg, rc;

  rc = an_config_parse(&spec, &st, argc, argv, &first_arg, stdout, err, sizeof err);
  if (rc == AN_CONFIG_HELP) {
    an_config_free(&spec, &st);
    return 0;
  }
  int args = argc - first_arg, panels = args / (SERIES + 1);
  if (rc == 0 && (!st.out || args == 0 || args % (SERIES + 1) != 0 || panels > 16)) {
    rc = AN_ECONFIG;
    snprintf(err, sizeof err, "give --out and 1 to 16 groups of LABEL AO.csv AE.csv RC4.csv");
  }
  if (rc == 0) {
    cv.w = PANEL_W * panels;
    cv.h = PANEL_H;
    if (!(curves = calloc((size_t)panels * SERIES, sizeof *curves)) ||
        !(cv.px = malloc(3 * (size_t)cv.w * (size_t)cv.h * sizeof *cv.px))) {
      rc = AN_ETOOBIG;
      snprintf(err, sizeof err, "out of memory");
    }
  }
  for (int p = 0; rc == 0 && p < panels; p++)
    for (int s = 0; rc == 0 && s < SERIES; s++)
      rc = read_curve(argv[first_arg + p * (SERIES + 1) + 1 + s], &curves[p * SERIES + s], err,
                      sizeof err);
  if (rc == 0) {
    for (size_t i = 0; i < 3 * (size_t)cv.w * (size_t)cv.h; i++)
      cv.px[i] = 1.0f;
    for (int p = 0; p < panels; p++)
      draw_panel(&cv, p * PANEL_W, argv[first_arg + p * (SERIES + 1)], &curves[p * SERIES]);
    rc = an_image_grid_png(st.out, cv.px, 1, 3, cv.h, cv.w, 1, err, sizeof err);
  }
  if (rc != 0)
    fprintf(stderr, "paper_plot: %s\n", err[0] ? err : an_strerror(rc));
  free(cv.px);
  free(curves);
  an_config_free(&spec, &st);
  return rc == 0 ? 0 : 1;
}
