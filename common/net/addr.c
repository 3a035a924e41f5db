#include "common/net/addr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

static int an_addr_split(const char *text, char *host, size_t hostlen, char *port,
                         size_t portlen) {
  const char *colon;
  size_t hlen;

  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (!close || close[1] != ':')
      return AN_ECONFIG;
    hlen = (size_t)(close - text - 1);
    text++;
    colon = close + 1;
  } else {
    colon = strrchr(text, ':');
    if (!colon || strchr(text, ':') != colon)
      return AN_ECONFIG; /* bare IPv6 needs brackets */
    hlen = (size_t)(colon - text);
  }
  if (hlen == 0 || hlen >= hostlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
    return AN_ECONFIG;
  memcpy(host, text, hlen);
  host[hlen] = '\0';
  strcpy(port, colon + 1);
  for (const char *p = port; *p; p++)
    if (*p < '0' || *p > '9')
      return AN_ECONFIG;
  if (atol(port) > 65535)
    return AN_ECONFIG;
  return 0;
}

int an_addr_resolve(const char *text, struct sockaddr_storage *out, char *err, size_t errlen) {
  char host[256], port[16];
  struct addrinfo hints, *res = NULL;
  uv_getaddrinfo_t req;
  uv_loop_t loop;
  int rc;

  if (an_addr_split(text, host, sizeof host, port, sizeof port) != 0) {
    snprintf(err, errlen, "'%s' is not HOST:PORT (examples: 127.0.0.1:7443, [::1]:7443)", text);
    return AN_ECONFIG;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  if ((rc = uv_loop_init(&loop)) != 0) {
    snprintf(err, errlen, "cannot resolve %s: %s", text, uv_strerror(rc));
    return rc;
  }
  /* Without a callback uv_getaddrinfo runs synchronously. */
  rc = uv_getaddrinfo(&loop, &req, NULL, host, port, &hints);
  if (rc == 0) {
    res = req.addrinfo;
    if (res->ai_addrlen <= sizeof *out)
      memcpy(out, res->ai_addr, res->ai_addrlen);
    else
      rc = UV_EINVAL;
    uv_freeaddrinfo(res);
  }
  uv_loop_close(&loop);
  if (rc != 0)
    snprintf(err, errlen, "cannot resolve %s: %s", text, uv_strerror(rc));
  return rc;
}

void an_addr_format(const struct sockaddr *sa, char *out, size_t len) {
  char host[64] = "?";
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
    uv_ip4_name(a, host, sizeof host);
    snprintf(out, len, "%s:%d", host, ntohs(a->sin_port));
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
    uv_ip6_name(a, host, sizeof host);
    snprintf(out, len, "[%s]:%d", host, ntohs(a->sin6_port));
  } else {
    snprintf(out, len, "?");
  }
}
