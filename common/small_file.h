/* Small whole files: reading a text file with a size cap, and writing a
 * JSON document atomically (the manifests, credentials and reports the
 * programs keep). */
#ifndef AN_SMALL_FILE_H
#define AN_SMALL_FILE_H

#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/* The file's contents, NUL-terminated (malloc'ed; caller frees), or NULL
 * if it cannot be read or is over `limit` bytes (errno tells which). */
char *an_small_file_read(const char *path, size_t limit);

/* Writes `j` as indented JSON (keys in insertion order) plus a newline to
 * `path` atomically, with `mode`. `j` stays the caller's. */
int an_json_write_file(const char *path, const json_t *j, mode_t mode, char *err, size_t errlen);

#endif
