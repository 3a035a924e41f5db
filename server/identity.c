#include "server/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <uv.h>

#include "common/atomic_file.h"
#include "common/error.h"

int an_identity_path(const char *dir, const char *name, char *out, size_t len) {
  int n = snprintf(out, len, "%s/%s", dir, name);
  return n < 0 || (size_t)n >= len ? AN_ETOOBIG : 0;
}

/* Writes a whole identity file; refuses to replace one unless asked. */
static int an_write_new_file(const char *path, const char *text, mode_t mode, bool replace,
                             char *err, size_t errlen) {
  an_atomic_file_t f;
  struct stat st;
  int rc;
  if (!replace && stat(path, &st) == 0) {
    snprintf(err, errlen, "%s already exists", path);
    return UV_EEXIST;
  }
  if ((rc = an_atomic_file_open(&f, path, mode, err, errlen)) != 0)
    return rc;
  if ((rc = an_atomic_file_write(&f, text, strlen(text), err, errlen)) != 0) {
    an_atomic_file_abort(&f);
    return rc;
  }
  return an_atomic_file_commit(&f, err, errlen);
}

int an_identity_create(const char *dir, const char *common_name, int days, bool force,
                       char pin[AN_TLS_PIN_LEN], char *err, size_t errlen) {
  char cert_path[4096], key_path[4096];
  char *cert_pem = NULL, *key_pem = NULL;
  struct stat st;
  int rc;

  if (an_identity_path(dir, AN_IDENTITY_CERT, cert_path, sizeof cert_path) != 0 ||
      an_identity_path(dir, AN_IDENTITY_KEY, key_path, sizeof key_path) != 0) {
    snprintf(err, errlen, "data directory path is too long");
    return AN_ECONFIG;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, errlen, "cannot create data directory %s: %s", dir, strerror(errno));
    return -errno;
  }
  if (!force && (stat(key_path, &st) == 0 || stat(cert_path, &st) == 0)) {
    snprintf(err, errlen,
             "%s already holds a broker identity; pass --force to replace it (every client "
             "must then be given the new pin)",
             dir);
    return UV_EEXIST;
  }
  if ((rc = an_tls_generate_identity(common_name, days, &cert_pem, &key_pem, err, errlen)) != 0)
    goto done;
  /* The key first: a certificate without its key would be useless. */
  if ((rc = an_write_new_file(key_path, key_pem, 0600, force, err, errlen)) != 0 ||
      (rc = an_write_new_file(cert_path, cert_pem, 0644, force, err, errlen)) != 0)
    goto done;
  rc = an_tls_pin_from_pem(cert_pem, pin, err, errlen);
done:
  if (key_pem)
    OPENSSL_cleanse(key_pem, strlen(key_pem)); /* no copies of the key linger */
  free(key_pem);
  free(cert_pem);
  return rc;
}

int an_identity_load_key(const char *path, EVP_PKEY **out, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  *out = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
  if (f)
    fclose(f);
  if (!*out) {
    ERR_clear_error();
    snprintf(err, errlen, "%s: cannot read the private key", path);
    return AN_ETLS;
  }
  return 0;
}
