/* A real broker for integration tests: its own data directory, started on
 * a free loopback port (restarts keep the port: credentials name it), the
 * operator's commands, nodes enrolled through their programs, and a small
 * encoded dataset with a classifier for it. Failures are Check assertions. */
#ifndef AN_TEST_BROKER_FIXTURE_H
#define AN_TEST_BROKER_FIXTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct an_test_broker {
  char *dir;                       /* scratch folder, removed by _free */
  char data[600], log[600], ready[600], address[64], pin[128];
  pid_t pid;
} an_test_broker_t;

/* A program's path from the environment meson sets (ARCHNET_BROKER...). */
const char *an_test_bin(const char *var);
/* Runs argv, asserts exit status 0, returns stdout (caller frees). */
char *an_test_run_ok(char *const argv[]);

void an_test_broker_init(an_test_broker_t *b);
void an_test_broker_start(an_test_broker_t *b);
void an_test_broker_stop(an_test_broker_t *b, int sig);
void an_test_broker_free(an_test_broker_t *b);

/* `archnet-broker CMD --data-dir DIR [A1 [A2]]`; returns stdout. */
char *an_test_broker_admin(an_test_broker_t *b, const char *cmd, const char *a1,
                           const char *a2);
/* Enrolls `name` with `role` through its program; its credentials file
 * path goes to `cred`. */
void an_test_broker_enroll(an_test_broker_t *b, const char *role, const char *name, char *cred,
                           size_t len);
/* A node's balance, by name, from `archnet-broker nodes`. */
int64_t an_test_broker_balance(an_test_broker_t *b, const char *name);
/* Asserts `archnet-broker ledger --check` passes. */
void an_test_broker_ledger_ok(an_test_broker_t *b);

/* An encoded dataset in `dir` (train 96 and validation 40 codes of 3x8x8,
 * float32, labels 0..9, encoding.json) and, if model_path is not NULL, an
 * untrained cnn-small classifier for it exported as ONNX. `train_rows`
 * makes the training set larger (for slow downloads); 0 = 96. */
void an_test_encoded_dataset(const char *dir, const char *model_path, int train_rows);

#endif
