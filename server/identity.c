#include "server/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <uv.h>

#include "common/error.h"

int an_identity_path(const char *dir, const char *name, char *out, size_t len) {
  int n = snprintf(out, len, "%s/%s", dir, name);
  return n < 0 || (size_t)n >= len ? AN_ETOOBIG : 0;
}

/* Writes `text` to PATH.tmp (created with its final mode, never wider),
 * fsyncs it and renames it over PATH, so a file is never half-written and a
 * key is never readable by others, even for a moment. */
static int an_write_new_file(const char *path, const char *text, mode_t mode, bool replace,
                             char *err, size_t errlen) {
  size_t len = strlen(text), off = 0;
  char tmp[4200];
  int fd, n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
  struct stat st;
  if (n < 0 || (size_t)n >= sizeof tmp) {
    snprintf(err, errlen, "path too long: %s", path);
    return AN_ECONFIG;
  }
  if (!replace && stat(path, &st) == 0) {
    snprintf(err, errlen, "%s already exists", path);
    return UV_EEXIST;
  }
  unlink(tmp); /* a leftover from an interrupted run */
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
    return -errno;
  }
  while (off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      break;
    off += (size_t)w;
  }
  if (off < len || fsync(fd) != 0) {
    snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return UV_EIO;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    unlink(tmp);
    return -errno;
  }
  return 0;
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
