/* Small helpers shared by the Check suites. */
#ifndef AN_TESTUTIL_H
#define AN_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>

/* Deterministic PRNG (splitmix64) so a failing case can be replayed. */
uint64_t an_test_rand(uint64_t *state);

/* Runs argv to completion; stdout and stderr are captured into heap strings
 * (caller frees) when the pointers are non-NULL. Returns the exit status, or
 * -1 if the program could not be run or died of a signal. */
int an_test_run(char *const argv[], char **out, char **err);

/* Runs argv and checks, with Check assertions, its exit status and that
 * stdout / stderr contain the given texts (NULL: not checked). */
void an_test_expect_run(char *const argv[], int status, const char *in_out, const char *in_err);

/* Starts argv in the background with stdout and stderr appended to
 * `log_path`. Returns the pid, or -1. */
pid_t an_test_spawn(char *const argv[], const char *log_path);

/* Waits up to `timeout_ms` for pid to exit; returns its exit status, or -1
 * (timeout or signal). */
int an_test_wait(pid_t pid, int timeout_ms);

/* Waits up to `timeout_ms` for a file to exist and be non-empty, then reads
 * its first line into buf (newline stripped). Returns 0 or -1. */
int an_test_read_line_when_ready(const char *path, char *buf, size_t len, int timeout_ms);

/* Makes a fresh temporary directory; returns a heap path (caller frees). */
char *an_test_tmpdir(void);

/* Removes a directory tree made by the test (best effort). */
void an_test_rmtree(const char *path);

/* A scratch directory for the running test, as a Check checked fixture:
 * tcase_add_checked_fixture(tc, an_test_scratch_make, an_test_scratch_remove).
 * Check runs each test in a process of its own, so one per process is one
 * per test. an_test_scratch() is its path between the two calls;
 * an_test_scratch_path(name) is a heap path inside it (caller frees). */
void an_test_scratch_make(void);
void an_test_scratch_remove(void);
const char *an_test_scratch(void);
char *an_test_scratch_path(const char *name);

/* Runs Debian's Python (/usr/bin/python3, which has NumPy and PyTorch) on
 * `script` with `arg` as sys.argv[1]; a failure fails the test with
 * Python's stderr. Returns stdout (caller frees). */
char *an_test_python(const char *script, const char *arg);

/* main() for a test program holding one Check suite. */
#define AN_TEST_MAIN(suite_fn)                                                \
  int main(void) {                                                            \
    SRunner *sr = srunner_create(suite_fn());                                 \
    int failed;                                                               \
    signal(SIGPIPE, SIG_IGN); /* as the programs do: EPIPE, not a signal */   \
    srunner_run_all(sr, CK_NORMAL);                                           \
    failed = srunner_ntests_failed(sr);                                       \
    srunner_free(sr);                                                         \
    return failed == 0 ? 0 : 1;                                               \
  }

#endif
