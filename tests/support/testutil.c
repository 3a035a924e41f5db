#include "tests/support/testutil.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

uint64_t an_test_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static char *an_test_slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (!f)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n + 1)) != NULL) {
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
  }
  fclose(f);
  return buf;
}

int an_test_run(char *const argv[], char **out, char **err) {
  char out_path[] = "/tmp/an-test-out-XXXXXX", err_path[] = "/tmp/an-test-err-XXXXXX";
  int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path), status = -1;
  posix_spawn_file_actions_t fa;
  pid_t pid;

  if (out_fd < 0 || err_fd < 0)
    goto done;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0) {
    int ws;
    while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
    }
    status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  }
  posix_spawn_file_actions_destroy(&fa);
done:
  if (out)
    *out = an_test_slurp(out_path);
  if (err)
    *err = an_test_slurp(err_path);
  if (out_fd >= 0) {
    close(out_fd);
    unlink(out_path);
  }
  if (err_fd >= 0) {
    close(err_fd);
    unlink(err_path);
  }
  return status;
}

pid_t an_test_spawn(char *const argv[], const char *log_path) {
  posix_spawn_file_actions_t fa;
  pid_t pid = -1;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
    pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

static void an_test_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int an_test_wait(pid_t pid, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    int ws;
    pid_t r = waitpid(pid, &ws, WNOHANG);
    if (r == pid)
      return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
    if (r < 0)
      return -1;
    an_test_sleep_ms(10);
  }
  return -1;
}

int an_test_read_line_when_ready(const char *path, char *buf, size_t len, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    FILE *f = fopen(path, "r");
    if (f) {
      int ok = fgets(buf, (int)len, f) != NULL;
      fclose(f);
      if (ok) {
        buf[strcspn(buf, "\n")] = '\0';
        return 0;
      }
    }
    an_test_sleep_ms(10);
  }
  return -1;
}

char *an_test_tmpdir(void) {
  char tmpl[] = "/tmp/an-test-XXXXXX";
  char *dir = mkdtemp(tmpl);
  return dir ? strdup(dir) : NULL;
}

void an_test_rmtree(const char *path) {
  char *argv[] = {"/bin/rm", "-rf", (char *)path, NULL};
  an_test_run(argv, NULL, NULL);
}

/* The fixture's directory: Check's fixtures take no argument, and each
 * test runs in its own process. */
static char *an_test_scratch_dir;

void an_test_scratch_make(void) {
  an_test_scratch_dir = an_test_tmpdir();
  ck_assert_ptr_nonnull(an_test_scratch_dir);
}

void an_test_scratch_remove(void) {
  if (an_test_scratch_dir)
    an_test_rmtree(an_test_scratch_dir);
  free(an_test_scratch_dir);
  an_test_scratch_dir = NULL;
}

const char *an_test_scratch(void) {
  ck_assert_ptr_nonnull(an_test_scratch_dir);
  return an_test_scratch_dir;
}

char *an_test_scratch_path(const char *name) {
  const char *dir = an_test_scratch();
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  ck_assert_ptr_nonnull(p);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

char *an_test_python(const char *script, const char *arg) {
  char *argv[] = {"/usr/bin/python3", "-c", (char *)script, (char *)arg, NULL};
  char *out = NULL, *err = NULL;
  int status = an_test_run(argv, &out, &err);
  ck_assert_msg(status == 0,
                "/usr/bin/python3 failed (exit %d; python3-numpy and python3-torch are test "
                "dependencies, installed by ./archnet setup): %s",
                status, err ? err : "");
  free(err);
  ck_assert_ptr_nonnull(out);
  return out;
}

void an_test_expect_run(char *const argv[], int status, const char *in_out, const char *in_err) {
  char *out = NULL, *err = NULL;
  int rc = an_test_run(argv, &out, &err);
  ck_assert_msg(rc == status, "%s %s: exit %d, want %d; stderr: %s", argv[0], argv[1], rc,
                status, err ? err : "");
  if (in_out)
    ck_assert_msg(out && strstr(out, in_out), "stdout lacks '%s': %s", in_out, out);
  if (in_err)
    ck_assert_msg(err && strstr(err, in_err), "stderr lacks '%s': %s", in_err, err);
  free(out);
  free(err);
}
