/* "host:port" addresses as people write them: 127.0.0.1:7443,
 * localhost:7443, [::1]:7443. */
#ifndef AN_ADDR_H
#define AN_ADDR_H

#include <stddef.h>

#include <uv.h>

/* Resolves `text` (blocking: for start-up and CLI tools, not for a running
 * loop). Port 0 is allowed, for listening on an ephemeral port. */
int an_addr_resolve(const char *text, struct sockaddr_storage *out, char *err, size_t errlen);

/* Formats an IPv4/IPv6 socket address as "1.2.3.4:5" or "[::1]:5". */
void an_addr_format(const struct sockaddr *sa, char *out, size_t len);

#endif
