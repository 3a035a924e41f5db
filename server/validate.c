/* The validation sandbox (see validate.h): the parent's side drives a child
 * process on the broker's loop; the child's side (`archnet-broker score`)
 * confines itself, loads the untrusted model and prints one line.
 *
 * Why the child sets its own limits: libuv's uv_spawn has no hook between
 * fork and exec, so the parent passes the limits as flags and the child
 * applies them before it opens anything the worker sent. The wall clock is
 * enforced by the parent, which the child cannot outlive or ignore. */
#include "server/validate.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "common/blob/npy.h"
#include "common/cli.h"
#include "common/config.h"
#include "common/error.h"
#include "common/nn/onnx/onnx.h"

/* AddressSanitizer reserves terabytes of address space for its shadow
 * memory at start-up, so a sanitized child under RLIMIT_AS cannot even
 * start. There (test builds only) the address-space limit is skipped and
 * memory is bounded by the ONNX runtime's own max_memory accounting, which
 * the child always applies as well; every other limit stays. */
#if defined(__SANITIZE_ADDRESS__)
#define AN_VALIDATE_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AN_VALIDATE_UNDER_ASAN 1
#endif
#endif
#ifndef AN_VALIDATE_UNDER_ASAN
#define AN_VALIDATE_UNDER_ASAN 0
#endif

#define AN_DEFAULT_MEMORY ((uint64_t)4 << 30)
#define AN_DEFAULT_CPU_SECONDS 600.0
#define AN_DEFAULT_WALL_SECONDS 900.0

/* The child's result is one short line; anything longer is not ours. */
#define AN_SCORE_LINE_MAX 512
/* The start of the child's stderr, for the reason of a crash. */
#define AN_SCORE_STDERR_MAX 4096
/* Descriptors the child may hold: stdio, the model, X, Y, and whatever the
 * math libraries open to look at the CPU. */
#define AN_SCORE_MAX_FILES 32
/* Images per run (a model with a fixed batch dimension gets its own), and
 * the most input one run may take. */
#define AN_SCORE_BATCH 256
#define AN_SCORE_BATCH_BYTES ((size_t)64 << 20)

/* ------------------------------------------------------------------------ */
/* The parent: one scoring child on the loop                                */
/* ------------------------------------------------------------------------ */

typedef struct an_scoring {
  uv_process_t proc;
  uv_pipe_t out, err;
  uv_timer_t timer;
  int handles;          /* initialised and not yet closed */
  int pid;              /* the child's, also its process group's id */
  int spawned;          /* 0: uv_spawn failed, the callback is never called */
  int exited, out_done, err_done;
  int64_t exit_status;
  int term_signal;
  int timed_out;        /* we killed it at the wall-clock limit */
  int overflow;         /* we killed it for printing too much */
  char failure[128];    /* our own trouble watching it, if any */
  double wall_seconds, cpu_seconds;
  an_validate_cb cb;
  void *arg;
  char line[AN_SCORE_LINE_MAX + 1];
  size_t line_len;
  char stderr_head[AN_SCORE_STDERR_MAX + 1];
  size_t stderr_len;
  char read_buf[4096]; /* both pipes read here, then copy what they keep */
} an_scoring_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void an_reason(an_validate_result_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->reason, sizeof r->reason, fmt, ap);
  va_end(ap);
}

/* The first line the child wrote to stderr (its own message, or the
 * headline of a sanitizer or runtime report), or "". */
static void an_stderr_first_line(an_scoring_t *s, char *out, size_t len) {
  size_t i = 0, n = 0;
  while (i < s->stderr_len && (s->stderr_head[i] == '\n' || s->stderr_head[i] == '\r'))
    i++;
  for (; i < s->stderr_len && s->stderr_head[i] != '\n' && n + 1 < len; i++)
    out[n++] = (unsigned char)s->stderr_head[i] < 0x20 ? ' ' : s->stderr_head[i];
  out[n] = '\0';
}

/* Reads the child's one line: "ok ACCURACY IMAGES\n" or "rejected REASON\n". */
static void an_parse_line(an_scoring_t *s, an_validate_result_t *r) {
  double accuracy = 0;
  long long images = 0;
  int used = -1;
  char *nl = memchr(s->line, '\n', s->line_len);

  if (s->line_len == 0) {
    an_reason(r, "the scorer printed no result");
  } else if (!nl || (size_t)(nl - s->line) + 1 != s->line_len ||
             memchr(s->line, '\0', s->line_len)) {
    an_reason(r, "the scorer's output is not one line");
  } else {
    *nl = '\0';
    /* The reason ends up in logs and in the state database: printable only. */
    for (char *c = s->line; *c; c++)
      if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
        *c = ' ';
    if (strncmp(s->line, "rejected ", 9) == 0) {
      an_reason(r, "%s", s->line + 9);
    } else if (sscanf(s->line, "ok %lf %lld%n", &accuracy, &images, &used) == 2 &&
               used == (int)strlen(s->line) && isfinite(accuracy) && accuracy >= 0 &&
               accuracy <= 1 && images > 0) {
      r->ok = 1;
      r->accuracy = accuracy;
      r->images = images;
    } else {
      an_reason(r, "unreadable result from the scorer: \"%.160s\"", s->line);
    }
  }
}

/* Everything is closed: say what happened, once, and free. */
static void an_scoring_finish(an_scoring_t *s) {
  an_validate_result_t r;
  char first[160];

  memset(&r, 0, sizeof r);
  an_stderr_first_line(s, first, sizeof first);
  if (s->failure[0])
    an_reason(&r, "%s", s->failure);
  else if (s->timed_out)
    an_reason(&r, "timed out after %.0f s", s->wall_seconds);
  else if (s->overflow)
    an_reason(&r, "the scorer printed more than %d bytes", AN_SCORE_LINE_MAX);
  else if (s->term_signal == SIGXCPU)
    /* The soft RLIMIT_CPU's signal; the scorer does not catch it. */
    an_reason(&r, "CPU time limit of %.0f s exceeded", s->cpu_seconds);
  else if (s->term_signal != 0)
    an_reason(&r, "killed by signal %d (%s)%s%s", s->term_signal, strsignal(s->term_signal),
              first[0] ? ": " : "", first);
  else if (s->exit_status != 0)
    an_reason(&r, "the scorer exited with status %" PRId64 "%s%s", s->exit_status,
              first[0] ? ": " : "", first);
  else
    an_parse_line(s, &r);
  if (s->spawned)
    s->cb(&r, s->arg);
  free(s);
}

static void an_scoring_closed(uv_handle_t *h) {
  an_scoring_t *s = h->data;
  if (--s->handles == 0)
    an_scoring_finish(s);
}

static void an_scoring_close(an_scoring_t *s, uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, an_scoring_closed);
}

/* Kills the child and everything in its process group, unless it has
 * been reaped already (its pid may belong to someone else then). */
static void an_scoring_kill(an_scoring_t *s) {
  if (!s->exited && uv_kill(-s->pid, SIGKILL) != 0)
    uv_process_kill(&s->proc, SIGKILL);
}

/* Once the child is gone and both pipes have ended, the timer goes last. */
static void an_scoring_maybe_done(an_scoring_t *s) {
  if (s->exited && s->out_done && s->err_done) {
    uv_timer_stop(&s->timer);
    an_scoring_close(s, (uv_handle_t *)&s->timer);
  }
}

static void an_on_exit(uv_process_t *p, int64_t exit_status, int term_signal) {
  an_scoring_t *s = p->data;
  s->exited = 1;
  s->exit_status = exit_status;
  s->term_signal = term_signal;
  an_scoring_close(s, (uv_handle_t *)p);
  an_scoring_maybe_done(s);
}

static void an_on_timeout(uv_timer_t *t) {
  an_scoring_t *s = t->data;
  if (!s->exited) {
    /* The exit and the pipes' ends follow. */
    s->timed_out = 1;
    an_scoring_kill(s);
  } else {
    /* Gone, yet its pipes are held open by something it left behind, in
     * its process group (which, having a live member, still names only
     * it): end that too, and stop waiting for the pipes. */
    uv_kill(-s->pid, SIGKILL);
    s->out_done = s->err_done = 1;
    an_scoring_close(s, (uv_handle_t *)&s->out);
    an_scoring_close(s, (uv_handle_t *)&s->err);
    an_scoring_maybe_done(s);
  }
}

static void an_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  an_scoring_t *s = h->data;
  (void)suggested;
  *buf = uv_buf_init(s->read_buf, sizeof s->read_buf);
}

static void an_pipe_ended(an_scoring_t *s, uv_stream_t *pipe) {
  if (pipe == (uv_stream_t *)&s->out)
    s->out_done = 1;
  else
    s->err_done = 1;
  an_scoring_close(s, (uv_handle_t *)pipe);
  an_scoring_maybe_done(s);
}

static void an_on_stdout(uv_stream_t *pipe, ssize_t n, const uv_buf_t *buf) {
  an_scoring_t *s = pipe->data;
  if (n < 0) {
    an_pipe_ended(s, pipe);
  } else if ((size_t)n > AN_SCORE_LINE_MAX - s->line_len) {
    /* Not the one short line a scorer prints: stop it now rather than read
     * an unbounded stream. */
    s->overflow = 1;
    an_scoring_kill(s);
    an_pipe_ended(s, pipe);
  } else {
    memcpy(s->line + s->line_len, buf->base, (size_t)n);
    s->line_len += (size_t)n;
  }
}

static void an_on_stderr(uv_stream_t *pipe, ssize_t n, const uv_buf_t *buf) {
  an_scoring_t *s = pipe->data;
  if (n < 0) {
    an_pipe_ended(s, pipe);
  } else {
    /* The head is kept, the rest drained so that the child never blocks. */
    size_t keep = AN_SCORE_STDERR_MAX - s->stderr_len;
    keep = keep < (size_t)n ? keep : (size_t)n;
    memcpy(s->stderr_head + s->stderr_len, buf->base, keep);
    s->stderr_len += keep;
  }
}

/* Gives up on a scoring whose start failed: the handles initialised so far
 * (out, err, timer, proc, in that order) close on the loop, then it is
 * freed without a callback. */
static void an_scoring_abandon(an_scoring_t *s) {
  uv_handle_t *order[] = {(uv_handle_t *)&s->out, (uv_handle_t *)&s->err,
                          (uv_handle_t *)&s->timer, (uv_handle_t *)&s->proc};
  int n = s->handles;
  if (n == 0)
    free(s);
  for (int i = 0; i < n; i++)
    an_scoring_close(s, order[i]);
}

int an_validate_start(uv_loop_t *loop, const an_validate_params_t *p, an_validate_cb cb,
                      void *arg) {
  an_scoring_t *s = NULL;
  char mem[32], cpu[32], c[32], h[32], w[32], k[32];
  uv_process_options_t opt;
  uv_stdio_container_t stdio[3];
  int rc = 0;

  if (!p || !cb || !p->exe || !p->model_path || !p->x_path || !p->y_path || p->input_c <= 0 ||
      p->input_h <= 0 || p->input_w <= 0 || p->classes <= 0 || !(p->max_cpu_seconds >= 0) ||
      !(p->max_wall_seconds >= 0)) {
    rc = UV_EINVAL;
    goto done;
  }
  if (!(s = calloc(1, sizeof *s))) {
    rc = UV_ENOMEM;
    goto done;
  }
  s->cb = cb;
  s->arg = arg;
  s->wall_seconds = p->max_wall_seconds > 0 ? p->max_wall_seconds : AN_DEFAULT_WALL_SECONDS;
  s->cpu_seconds = p->max_cpu_seconds > 0 ? p->max_cpu_seconds : AN_DEFAULT_CPU_SECONDS;
  snprintf(mem, sizeof mem, "%" PRIu64,
           p->max_memory_bytes > 0 ? p->max_memory_bytes : AN_DEFAULT_MEMORY);
  snprintf(cpu, sizeof cpu, "%.3f", s->cpu_seconds);
  snprintf(c, sizeof c, "%" PRId64, p->input_c);
  snprintf(h, sizeof h, "%" PRId64, p->input_h);
  snprintf(w, sizeof w, "%" PRId64, p->input_w);
  snprintf(k, sizeof k, "%" PRId64, p->classes);
  /* uv_spawn execs before it returns, so these need not outlive the call;
   * "--" keeps a path starting with '-' from being read as a flag. */
  char *argv[] = {(char *)p->exe, "score", "--max-memory", mem, "--max-cpu", cpu, "--",
                  (char *)p->model_path, (char *)p->x_path, (char *)p->y_path, c, h, w, k,
                  NULL};

  s->proc.data = s->out.data = s->err.data = s->timer.data = s;
  if ((rc = uv_pipe_init(loop, &s->out, 0)) != 0)
    goto done;
  s->handles++;
  if ((rc = uv_pipe_init(loop, &s->err, 0)) != 0)
    goto done;
  s->handles++;
  if ((rc = uv_timer_init(loop, &s->timer)) != 0)
    goto done;
  s->handles++;

  memset(&opt, 0, sizeof opt);
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&s->out;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&s->err;
  opt.file = p->exe;
  opt.args = argv;
  opt.exit_cb = an_on_exit;
  opt.stdio = stdio;
  opt.stdio_count = 3;
  /* Its own process group: a terminal's Ctrl-C reaches the broker only, and
   * the kill at the deadline reaches everything the scorer started. */
  opt.flags = UV_PROCESS_DETACHED;
  rc = uv_spawn(loop, &s->proc, &opt);
  s->handles++; /* initialised even when the spawn fails, so it is closed too */
  if (rc != 0)
    goto done;
  s->spawned = 1;
  s->pid = s->proc.pid;
  if ((rc = uv_read_start((uv_stream_t *)&s->out, an_on_alloc, an_on_stdout)) != 0 ||
      (rc = uv_read_start((uv_stream_t *)&s->err, an_on_alloc, an_on_stderr)) != 0 ||
      (rc = uv_timer_start(&s->timer, an_on_timeout, (uint64_t)(s->wall_seconds * 1000.0), 0)) !=
          0) {
    /* Running but unwatched: stop it; its exit still ends the scoring, with
     * this as the reason, and the callback comes as promised. */
    snprintf(s->failure, sizeof s->failure, "cannot watch the scorer: %s", uv_strerror(rc));
    an_scoring_kill(s);
    s->out_done = s->err_done = 1;
    an_scoring_close(s, (uv_handle_t *)&s->out);
    an_scoring_close(s, (uv_handle_t *)&s->err);
    rc = 0;
  }
done:
  if (rc != 0 && s)
    an_scoring_abandon(s);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The child: `archnet-broker score`                                        */
/* ------------------------------------------------------------------------ */

typedef struct score_settings {
  uint64_t max_memory;
  double max_cpu;
} score_settings_t;

static const an_option_t score_options[] = {
    {"max-memory", AN_OPT_SIZE, offsetof(score_settings_t, max_memory), "4G", 16777216,
     1125899906842624.0, "BYTES",
     "address-space limit (RLIMIT_AS), also the ONNX runtime's memory limit"},
    {"max-cpu", AN_OPT_DOUBLE, offsetof(score_settings_t, max_cpu), "600", 0.001, 1e7, "S",
     "CPU-time limit (RLIMIT_CPU)"},
};

static const an_command_spec_t score_spec = {
    .program = "archnet-broker",
    .command = "score",
    .args = "MODEL X Y C H W K",
    .summary = "Score an ONNX model on a validation set (X: N x C x H x W float32, float16 or\n"
               "uint8 .npy; Y: N labels, uint8 or int64) under resource limits, and print\n"
               "one line: 'ok ACCURACY IMAGES' or 'rejected REASON'. The broker runs this\n"
               "itself, in a child process, for every model a worker returns; the line\n"
               "goes to a pipe, as the sandbox forbids writing files.",
    .options = score_options,
    .n_options = sizeof score_options / sizeof score_options[0],
};

/* What to score, from the command line. */
typedef struct an_score_job {
  const char *model_path, *x_path, *y_path;
  int64_t c, h, w, classes;
  size_t chw;          /* floats per image */
  uint64_t max_memory;
} an_score_job_t;

/* Lowers a limit (soft and hard) to at most the values given; a process
 * may lower its hard limits but never raise them, so an already lower
 * limit is kept. */
static int an_lower_limit(int resource, const char *name, rlim_t soft, rlim_t hard, char *err,
                          size_t errlen) {
  struct rlimit cur, want;
  int rc = 0;
  if (getrlimit(resource, &cur) != 0) {
    rc = -errno;
    goto done;
  }
  want.rlim_max = cur.rlim_max != RLIM_INFINITY && cur.rlim_max < hard ? cur.rlim_max : hard;
  want.rlim_cur = soft < want.rlim_max ? soft : want.rlim_max;
  if (setrlimit(resource, &want) != 0)
    rc = -errno;
done:
  if (rc != 0)
    snprintf(err, errlen, "cannot set %s: %s", name, uv_strerror(rc));
  return rc;
}

/* The sandbox, applied by the child to itself before it opens anything
 * the worker sent (see the top of this file for why not by the parent). */
static int an_confine(const score_settings_t *set, char *err, size_t errlen) {
  rlim_t cpu = (rlim_t)ceil(set->max_cpu);
  int rc = 0;

  /* Die with the broker rather than run on as an orphan; never gain
   * privileges. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    rc = -errno;
    snprintf(err, errlen, "prctl: %s", uv_strerror(rc));
    goto done;
  }
  if (!AN_VALIDATE_UNDER_ASAN &&
      (rc = an_lower_limit(RLIMIT_AS, "RLIMIT_AS", (rlim_t)set->max_memory,
                           (rlim_t)set->max_memory, err, errlen)) != 0)
    goto done;
  /* SIGXCPU at the soft limit ends the process (not caught here); the hard
   * limit's SIGKILL a second later is the backstop. */
  if ((rc = an_lower_limit(RLIMIT_CPU, "RLIMIT_CPU", cpu, cpu + 1, err, errlen)) != 0 ||
      (rc = an_lower_limit(RLIMIT_CORE, "RLIMIT_CORE", 0, 0, err, errlen)) != 0 ||
      (rc = an_lower_limit(RLIMIT_FSIZE, "RLIMIT_FSIZE", 0, 0, err, errlen)) != 0 ||
      (rc = an_lower_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", AN_SCORE_MAX_FILES,
                           AN_SCORE_MAX_FILES, err, errlen)) != 0)
    goto done;
  /* glibc reserves 64 MiB of address space per malloc arena, up to eight
   * per core: on a big machine the scorer's threads alone would use up
   * RLIMIT_AS. Two arenas are plenty for a few inference threads. */
  mallopt(M_ARENA_MAX, 2);
  /* oneDNN's verbose mode would print to stdout, which carries the result. */
  unsetenv("DNNL_VERBOSE");
  unsetenv("ONEDNN_VERBOSE");
done:
  return rc;
}

/* A positive dimension from the command line. */
static int an_parse_dim(const char *text, int64_t *out) {
  char *end = NULL;
  long long v;
  int rc = 0;
  errno = 0;
  v = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v <= 0 || v > (1LL << 30))
    rc = UV_EINVAL;
  else
    *out = v;
  return rc;
}

static int an_parse_job(int argc, char **argv, const score_settings_t *set, an_score_job_t *job) {
  int rc = 0;
  if (argc != 7) {
    rc = UV_EINVAL;
    goto done;
  }
  job->model_path = argv[0];
  job->x_path = argv[1];
  job->y_path = argv[2];
  job->max_memory = set->max_memory;
  if ((rc = an_parse_dim(argv[3], &job->c)) != 0 || (rc = an_parse_dim(argv[4], &job->h)) != 0 ||
      (rc = an_parse_dim(argv[5], &job->w)) != 0 ||
      (rc = an_parse_dim(argv[6], &job->classes)) != 0)
    goto done;
  /* Images over 2^28 floats are over the runtime's tensor limit anyway. */
  if (job->c * job->h > (1LL << 28) || job->c * job->h * job->w > (1LL << 28)) {
    rc = UV_EINVAL;
    goto done;
  }
  job->chw = (size_t)(job->c * job->h * job->w);
done:
  return rc;
}

/* The model must take one float N x C x H x W input and give N x K float
 * scores first. *fixed_batch = its batch size if it fixes one, else 0. */
static int an_check_model(const an_onnx_t *m, const an_score_job_t *job, int64_t *fixed_batch,
                          char *reason, size_t len) {
  int64_t dims[AN_ONNX_MAX_DIMS];
  int dtype = 0, ndim = 0, rc = AN_EMODEL;

  if (an_onnx_input_count(m) != 1 || an_onnx_output_count(m) < 1) {
    snprintf(reason, len, "the model has %zu inputs and %zu outputs; it must take one image batch",
             an_onnx_input_count(m), an_onnx_output_count(m));
    goto done;
  }
  if (an_onnx_input_shape(m, 0, &dtype, &ndim, dims) != 0 || dtype != AN_ONNX_FLOAT ||
      ndim != 4 || dims[1] != job->c || dims[2] != job->h || dims[3] != job->w ||
      dims[0] == 0) {
    snprintf(reason, len,
             "wrong input: the model must take float32 N x %" PRId64 " x %" PRId64 " x %" PRId64,
             job->c, job->h, job->w);
    goto done;
  }
  *fixed_batch = dims[0] > 0 ? dims[0] : 0;
  if (*fixed_batch > 1 &&
      (uint64_t)*fixed_batch > AN_SCORE_BATCH_BYTES / sizeof(float) / job->chw) {
    snprintf(reason, len, "the model's fixed batch of %" PRId64 " images is too large",
             *fixed_batch);
    goto done;
  }
  /* An output shape known only at run time (ndim -1) is checked then. */
  if (an_onnx_output_shape(m, 0, &dtype, &ndim, dims) != 0 || dtype != AN_ONNX_FLOAT ||
      (ndim >= 0 && (ndim != 2 || (dims[1] >= 0 && dims[1] != job->classes)))) {
    snprintf(reason, len, "wrong output: the model must give float32 N x %" PRId64 " scores",
             job->classes);
    goto done;
  }
  rc = 0;
done:
  return rc;
}

/* X: N x C x H x W of float32, float16 or uint8; Y: N labels in [0, K). */
static int an_check_data(const an_npy_t *x, const an_npy_t *y, const an_score_job_t *job,
                         char *reason, size_t len) {
  int rc = AN_EFORMAT;
  if ((x->dtype != AN_NPY_F32 && x->dtype != AN_NPY_F16 && x->dtype != AN_NPY_U8) ||
      x->ndim != 4 || x->shape[1] != job->c || x->shape[2] != job->h || x->shape[3] != job->w ||
      x->shape[0] < 1) {
    snprintf(reason, len,
             "validation set: X must be N x %" PRId64 " x %" PRId64 " x %" PRId64
             " float32, float16 or uint8, N >= 1",
             job->c, job->h, job->w);
    goto done;
  }
  if ((y->dtype != AN_NPY_U8 && y->dtype != AN_NPY_I64) || y->ndim != 1 ||
      y->shape[0] != x->shape[0]) {
    snprintf(reason, len, "validation set: Y must hold %" PRId64 " uint8 or int64 labels",
             x->shape[0]);
    goto done;
  }
  rc = 0;
done:
  return rc;
}

static int64_t an_label(const an_npy_t *y, int64_t i) {
  int64_t v;
  if (y->dtype == AN_NPY_U8)
    v = ((const uint8_t *)y->data)[i];
  else
    memcpy(&v, (const uint8_t *)y->data + 8 * i, 8); /* the mapping may be unaligned */
  return v;
}

/* Scores images [first, first + n) held in `in` (batch images, the rest
 * padding for a fixed-batch model); adds the correct ones to *correct. */
static int an_score_batch(an_onnx_t *m, const an_score_job_t *job, const an_npy_t *y,
                          float *in, int64_t batch, int64_t first, int64_t n, int64_t *correct,
                          char *reason, size_t len) {
  an_onnx_tensor_t input = {.dtype = AN_ONNX_FLOAT, .ndim = 4,
                            .dims = {batch, job->c, job->h, job->w}, .data = in};
  size_t n_out = an_onnx_output_count(m);
  an_onnx_tensor_t *out = calloc(n_out, sizeof *out);
  char err[300]; /* shorter than the reason it goes into */
  int rc = 0;

  if (!out) {
    rc = UV_ENOMEM;
    snprintf(reason, len, "out of memory");
    goto done;
  }
  if ((rc = an_onnx_run(m, &input, 1, out, n_out, err, sizeof err)) != 0) {
    snprintf(reason, len, "the model failed on images %" PRId64 " to %" PRId64 ": %s", first,
             first + n - 1, err);
    goto done;
  }
  if (out[0].dtype != AN_ONNX_FLOAT || out[0].ndim != 2 || out[0].dims[0] != batch ||
      out[0].dims[1] != job->classes) {
    rc = AN_EMODEL;
    snprintf(reason, len, "wrong output: the model gave a %d-dimensional %s tensor, not %" PRId64
             " x %" PRId64 " float32 scores",
             out[0].ndim, out[0].dtype == AN_ONNX_FLOAT ? "float32" : "non-float", batch,
             job->classes);
    goto done;
  }
  for (int64_t i = 0; i < n; i++) {
    const float *row = (const float *)out[0].data + i * job->classes;
    int64_t best = 0, label = an_label(y, first + i);
    for (int64_t k = 0; k < job->classes; k++) {
      if (!isfinite(row[k])) {
        rc = AN_EMODEL;
        snprintf(reason, len, "non-finite score (%g) for image %" PRId64, (double)row[k],
                 first + i);
        goto done;
      }
      if (row[k] > row[best]) /* ties go to the first, as numpy's argmax */
        best = k;
    }
    *correct += best == label;
  }
done:
  for (size_t i = 0; out && i < n_out; i++)
    an_onnx_tensor_free(&out[i]);
  free(out);
  return rc;
}

/* Scores the model; 0 with the accuracy, or an error with the reason. */
static int an_score(const an_score_job_t *job, double *accuracy, int64_t *images, char *reason,
                    size_t len) {
  an_onnx_limits_t lim;
  an_onnx_t *m = NULL;
  an_npy_t x = {0}, y = {0};
  float *in = NULL;
  int64_t fixed = 0, batch, n_images, correct = 0;
  char err[300]; /* shorter than the reason it goes into */
  int rc;

  /* The runtime's own accounting bounds live tensors by the same figure as
   * RLIMIT_AS (and alone under ASan); time is bounded by RLIMIT_CPU and the
   * parent's clock, so no per-run limit here. */
  an_onnx_default_limits(&lim);
  lim.max_memory_bytes = job->max_memory;
  lim.max_seconds = 0;
  if ((rc = an_onnx_load_file(job->model_path, &lim, &m, err, sizeof err)) != 0) {
    snprintf(reason, len, "model refused: %s", err);
    goto done;
  }
  if ((rc = an_check_model(m, job, &fixed, reason, len)) != 0)
    goto done;
  if ((rc = an_npy_map(job->x_path, &x, err, sizeof err)) != 0 ||
      (rc = an_npy_map(job->y_path, &y, err, sizeof err)) != 0) {
    snprintf(reason, len, "validation set: %s", err);
    goto done;
  }
  if ((rc = an_check_data(&x, &y, job, reason, len)) != 0)
    goto done;
  n_images = x.shape[0];
  batch = fixed;
  if (batch == 0) {
    batch = (int64_t)(AN_SCORE_BATCH_BYTES / sizeof(float) / job->chw);
    batch = batch < 1 ? 1 : batch > AN_SCORE_BATCH ? AN_SCORE_BATCH : batch;
    batch = batch > n_images ? n_images : batch;
  }
  if (!(in = calloc((size_t)batch * job->chw, sizeof *in))) {
    rc = UV_ENOMEM;
    snprintf(reason, len, "out of memory for a batch of %" PRId64 " images", batch);
    goto done;
  }
  for (int64_t first = 0; first < n_images; first += batch) {
    int64_t n = n_images - first < batch ? n_images - first : batch;
    size_t count = (size_t)n * job->chw;
    for (int64_t i = 0; i < n; i++) {
      int64_t label = an_label(&y, first + i);
      if (label < 0 || label >= job->classes) {
        rc = AN_EFORMAT;
        snprintf(reason, len, "validation set: label %" PRId64 " of image %" PRId64
                 " is not a class below %" PRId64, label, first + i, job->classes);
        goto done;
      }
    }
    if ((rc = an_npy_to_f32(&x, (size_t)first * job->chw, count, in)) != 0) {
      snprintf(reason, len, "validation set: cannot read images %" PRId64, first);
      goto done;
    }
    for (size_t i = 0; i < count; i++) {
      if (!isfinite(in[i])) {
        rc = AN_EFORMAT;
        snprintf(reason, len, "validation set: image %" PRId64 " holds a non-finite value",
                 first + (int64_t)(i / job->chw));
        goto done;
      }
    }
    /* A fixed-batch model's last batch is padded with zeros, not scored. */
    memset(in + count, 0, ((size_t)batch * job->chw - count) * sizeof *in);
    if ((rc = an_score_batch(m, job, &y, in, batch, first, n, &correct, reason, len)) != 0)
      goto done;
  }
  *accuracy = (double)correct / (double)n_images;
  *images = n_images;
done:
  free(in);
  an_npy_free(&x);
  an_npy_free(&y);
  an_onnx_free(m);
  return rc;
}

/* One printable line of at most `max` characters, for the result. */
static void an_one_line(char *s, size_t max) {
  size_t i = 0;
  for (; s[i] && i < max; i++)
    if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
      s[i] = ' ';
  s[i] = '\0';
}

int an_validate_score_main(int argc, char **argv) {
  score_settings_t set = {0};
  an_score_job_t job = {0};
  char reason[512] = "", err[512];
  double accuracy = 0;
  int64_t images = 0;
  int first, status;

  if ((status = an_cli_parse(&score_spec, &set, argc, argv, &first)) >= 0)
    goto done;
  status = AN_EXIT_USAGE;
  if (an_parse_job(argc - first, argv + first, &set, &job) != 0) {
    fprintf(stderr, "archnet-broker score: expected MODEL X Y C H W K (positive sizes); "
                    "see --help\n");
    goto done;
  }
  status = AN_EXIT_FAIL;
  if (an_confine(&set, err, sizeof err) != 0) {
    fprintf(stderr, "archnet-broker score: %s\n", err);
    goto done;
  }
  if (an_score(&job, &accuracy, &images, reason, sizeof reason) == 0) {
    printf("ok %.17g %" PRId64 "\n", accuracy, images);
  } else {
    /* The parent reads one line of bounded length. */
    an_one_line(reason, 300);
    printf("rejected %s\n", reason);
  }
  if (fflush(stdout) != 0 || ferror(stdout)) {
    fprintf(stderr, "archnet-broker score: cannot write the result: %s\n", strerror(errno));
    goto done;
  }
  status = AN_EXIT_OK;
done:
  an_config_free(&score_spec, &set);
  return status;
}
