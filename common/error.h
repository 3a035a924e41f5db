/* Error codes shared by every ArchNet module.
 *
 * Functions return 0 on success and a negative code on failure. libuv's codes
 * (negated errno values, UV_EOF, ...) pass through unchanged; the project's
 * own codes live below AN_ERR_BASE, far from anything libuv or errno uses, so
 * one an_strerror() describes both. */
#ifndef AN_ERROR_H
#define AN_ERROR_H

#define AN_ERR_BASE (-20000)

enum an_error {
  AN_EPROTO = AN_ERR_BASE - 1,  /* peer broke the wire protocol */
  AN_ETOOBIG = AN_ERR_BASE - 2, /* a size over its configured limit */
  AN_EAUTH = AN_ERR_BASE - 3,   /* authentication failed */
  AN_EDB = AN_ERR_BASE - 4,     /* the state database failed */
  AN_EMODEL = AN_ERR_BASE - 5,  /* an ONNX or nn model was refused */
  AN_ETLS = AN_ERR_BASE - 6,    /* TLS handshake or record error */
  AN_EPIN = AN_ERR_BASE - 7,    /* peer certificate does not match the pin */
  AN_ETRUNC = AN_ERR_BASE - 8,  /* stream ended in the middle of a frame */
  AN_ECONFIG = AN_ERR_BASE - 9, /* bad configuration value or flag */
  AN_EVERSION = AN_ERR_BASE - 10, /* no protocol version in common */
  AN_EREMOTE = AN_ERR_BASE - 11,  /* the peer answered with an Error */
  AN_EFORMAT = AN_ERR_BASE - 12,  /* a file's contents are malformed */
  AN_ECLOSED = AN_ERR_BASE - 13,  /* operation on a closing connection */
  AN_EUNSUPPORTED = AN_ERR_BASE - 14, /* valid input using a feature we lack */
  AN_ENOTFOUND = AN_ERR_BASE - 15,    /* no such task, lease, node or blob */
  AN_ESTATE = AN_ERR_BASE - 16,       /* not allowed in the object's current state */
  AN_EFORBIDDEN = AN_ERR_BASE - 17,   /* authenticated, but not this node's to do */
  AN_EFUNDS = AN_ERR_BASE - 18,       /* a balance would go below zero */
  AN_ENOSPACE = AN_ERR_BASE - 19,     /* the disk's free-space floor would be crossed */
  AN_ERR_LAST = AN_ERR_BASE - 20
};

/* A static, human-readable description of `code`: a project code, a libuv
 * code, or a negated errno. Never NULL; unknown codes get a generic text. */
const char *an_strerror(int code);

/* The symbolic name ("AN_EPROTO", "ECONNREFUSED", ...) for logs and tests. */
const char *an_err_name(int code);

#endif
