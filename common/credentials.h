/* A node's credentials, as `enroll` saves them for the publisher and the
 * worker: which broker (address and key pin), and the node id and secret
 * it enrolled with. One JSON file, mode 0600: whoever reads it can act as
 * the node. */
#ifndef AN_CREDENTIALS_H
#define AN_CREDENTIALS_H

#include <stddef.h>
#include <stdint.h>

#include "common/net/client.h"

typedef struct an_credentials {
  char broker[256]; /* HOST:PORT */
  char pin[128];    /* sha256//... */
  uint64_t node_id;
  char secret[65];
  int role;         /* Archnet__Role */
  char name[64];
} an_credentials_t;

int an_credentials_write(const char *path, const an_credentials_t *c, char *err, size_t errlen);
/* Reads and checks a credentials file (errors name the file and field). */
int an_credentials_read(const char *path, an_credentials_t *c, char *err, size_t errlen);

/* Connects as the node (TLS with the pin, Hello with the credentials).
 * `software` as for an_client_params_t. */
int an_credentials_connect(const an_credentials_t *c, const char *software, uint64_t timeout_ms,
                           an_client_t **out, char *err, size_t errlen);

#endif
