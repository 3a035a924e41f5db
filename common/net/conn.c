#include "common/net/conn.h"

#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/net/addr.h"
#include "common/net/frame.h"

#define AN_CONN_RBUF AN_CONN_READ_BUFFER

/* Frames up to this size are sealed in one TLS record with their header. */
#define AN_CONN_COALESCE (16 * 1024 - AN_FRAME_HEADER_SIZE)

struct an_conn {
  uv_tcp_t tcp;
  uv_timer_t timer; /* handshake, idle or close deadline, one at a time */
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  an_tls_t *tls;
  an_frame_decoder_t decoder;
  an_conn_callbacks_t cb;
  an_conn_params_t params;
  void *data;
  int connected;       /* TCP established (accepted or connect succeeded) */
  int ready;           /* TLS handshake complete */
  int closing;         /* an_conn_close was called */
  int handles_closing; /* uv_close issued on both handles */
  int handles_open;    /* handles whose close_cb has not run yet */
  int close_status;
  int in_read;         /* inside on_read: writes are flushed once at its end */
  int read_paused;     /* reading stopped for back-pressure */
  int throttled;       /* reading stopped by the upper layer (an_conn_throttle) */
  int established;     /* the upper layer accepted the peer (see params) */
  int held;            /* an_conn_hold: output waits in the TLS engine */
  int close_deferred;  /* an_conn_close came while held: finish it on release */
  size_t write_queue;  /* ciphertext bytes inside uv_write requests */
  uint8_t *pending;    /* framed plaintext queued before the handshake ended */
  size_t pending_len, pending_cap;
  char peer[64];
  uint8_t *rbuf;       /* ciphertext from uv, then plaintext from TLS: AN_CONN_RBUF bytes,
                        * params.read_buffer (shared) or own_rbuf */
  uint8_t *own_rbuf;
};

typedef struct an_conn_write_req {
  uv_write_t req;
  an_conn_t *conn;
  size_t len;
  uint8_t data[];
} an_conn_write_req_t;

static void an_conn_close_handles(an_conn_t *c);

static void an_conn_on_handle_closed(uv_handle_t *h) {
  an_conn_t *c = h->data;
  if (--c->handles_open > 0)
    return;
  if (c->cb.on_close)
    c->cb.on_close(c, c->close_status);
  an_tls_free(c->tls);
  an_frame_decoder_destroy(&c->decoder);
  free(c->pending);
  free(c->own_rbuf);
  free(c);
}

static void an_conn_close_handles(an_conn_t *c) {
  if (c->handles_closing)
    return;
  c->handles_closing = 1;
  uv_close((uv_handle_t *)&c->tcp, an_conn_on_handle_closed);
  uv_close((uv_handle_t *)&c->timer, an_conn_on_handle_closed);
}

static void an_conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void an_conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Reading runs unless back-pressure or the upper layer stopped it; called
 * when one of the two lets go (so reading was stopped). */
static void an_conn_resume_reading(an_conn_t *c) {
  if (c->closing || c->read_paused || c->throttled)
    return;
  if (uv_read_start((uv_stream_t *)&c->tcp, an_conn_on_alloc, an_conn_on_read) < 0)
    an_conn_close(c, UV_EIO);
}

static void an_conn_on_write(uv_write_t *req, int status) {
  an_conn_write_req_t *w = (an_conn_write_req_t *)req;
  an_conn_t *c = w->conn;
  c->write_queue -= w->len;
  free(w);
  if (status < 0 && !c->closing) {
    an_conn_close(c, status);
    return;
  }
  if (c->read_paused && !c->closing && c->write_queue <= c->params.pause_reads_at / 4) {
    c->read_paused = 0;
    an_conn_resume_reading(c);
  }
}

/* Moves all ciphertext the TLS engine produced into one uv_write. */
static int an_conn_flush(an_conn_t *c) {
  size_t n = an_tls_pending(c->tls);
  an_conn_write_req_t *w;
  uv_buf_t buf;
  int rc;

  if (n == 0 || !c->connected || c->handles_closing || c->held)
    return 0;
  w = malloc(sizeof *w + n);
  if (!w)
    return UV_ENOMEM;
  w->conn = c;
  w->len = an_tls_take(c->tls, w->data, n);
  buf = uv_buf_init((char *)w->data, (unsigned)w->len);
  rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, an_conn_on_write);
  if (rc < 0) {
    free(w);
    return rc;
  }
  c->write_queue += w->len;
  return 0;
}

static void an_conn_on_timer(uv_timer_t *t) {
  an_conn_t *c = t->data;
  if (c->closing)
    an_conn_close_handles(c); /* the peer would not take our last bytes */
  else
    an_conn_close(c, UV_ETIMEDOUT);
}

static void an_conn_arm(an_conn_t *c, uint64_t ms) {
  if (ms)
    uv_timer_start(&c->timer, an_conn_on_timer, ms, 0);
  else
    uv_timer_stop(&c->timer);
}

static void an_conn_close_flush(an_conn_t *c);

static void an_conn_on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  an_conn_close_handles(req->data);
}

void an_conn_close(an_conn_t *c, int status) {
  if (c->closing)
    return;
  c->closing = 1;
  c->close_status = status;
  if (!c->connected) {
    an_conn_close_handles(c);
    return;
  }
  uv_read_stop((uv_stream_t *)&c->tcp);
  if (c->ready)
    an_tls_shutdown(c->tls);
  if (c->held) {
    /* Held output must not leave before its release; nor may the
     * connection go away under the holder. */
    c->close_deferred = 1;
    uv_timer_stop(&c->timer);
    return;
  }
  an_conn_close_flush(c);
}

/* The second half of a close: what is queued goes out, then FIN. */
static void an_conn_close_flush(an_conn_t *c) {
  /* Best effort: queued frames, an Error frame, a TLS alert, close_notify. */
  an_conn_flush(c);
  an_conn_arm(c, c->params.close_timeout_ms);
  c->shutdown_req.data = c;
  if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, an_conn_on_shutdown) < 0)
    an_conn_close_handles(c);
}

static int an_conn_on_decoded(void *ctx, const uint8_t *payload, size_t len) {
  an_conn_t *c = ctx;
  int rc = c->cb.on_frame ? c->cb.on_frame(c, payload, len) : 0;
  if (rc == 0 && c->closing)
    rc = AN_ECLOSED; /* the handler closed us: stop delivering frames */
  return rc;
}

static void an_conn_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  an_conn_t *c = h->data;
  (void)suggested;
  /* One buffer per connection suffices: a stream has one read at a time,
   * and the bytes are copied into the TLS engine before the next. */
  *buf = uv_buf_init((char *)c->rbuf, AN_CONN_RBUF);
}

static int an_conn_finish_handshake(an_conn_t *c) {
  int rc = an_tls_handshake(c->tls);
  if (rc <= 0)
    return rc;
  c->ready = 1;
  /* With await_established the handshake deadline keeps running until the
   * upper layer accepts the peer (the broker: after Hello). */
  if (!c->params.await_established)
    an_conn_arm(c, c->params.idle_timeout_ms);
  if (c->pending_len) {
    rc = an_tls_write(c->tls, c->pending, c->pending_len);
    free(c->pending);
    c->pending = NULL;
    c->pending_len = c->pending_cap = 0;
    if (rc)
      return rc;
  }
  return 1;
}

/* The end of input, mapped to the status reported to on_close. */
static int an_conn_eof_status(an_conn_t *c, int close_notify) {
  if (!c->ready)
    return AN_ETLS; /* gone during the handshake */
  if (an_frame_decoder_mid_frame(&c->decoder))
    return AN_ETRUNC;
  return close_notify ? 0 : UV_EOF;
}

static void an_conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  an_conn_t *c = s->data;
  long n;
  int rc;

  (void)buf;
  if (nread == 0 || c->closing)
    return;
  if (nread < 0) {
    an_conn_close(c, nread == UV_EOF ? an_conn_eof_status(c, 0) : (int)nread);
    return;
  }
  if ((rc = an_tls_feed(c->tls, c->rbuf, (size_t)nread)) != 0)
    goto fail;
  if (!c->ready) {
    rc = an_conn_finish_handshake(c);
    if (rc < 0)
      goto fail;
    if (rc == 0) {
      rc = an_conn_flush(c);
      if (rc < 0)
        goto fail;
      return;
    }
    if (c->cb.on_ready)
      c->cb.on_ready(c);
    if (c->closing)
      return;
  } else if (c->params.idle_timeout_ms && (c->established || !c->params.await_established)) {
    an_conn_arm(c, c->params.idle_timeout_ms);
  }

  c->in_read = 1;
  while ((n = an_tls_read(c->tls, c->rbuf, AN_CONN_RBUF)) > 0) {
    rc = an_frame_decoder_feed(&c->decoder, c->rbuf, (size_t)n, an_conn_on_decoded, c);
    if (rc == AN_ECLOSED && c->closing)
      goto out;
    if (rc == AN_ETOOBIG && c->cb.on_bad_input)
      c->cb.on_bad_input(c, rc);
    if (rc != 0)
      goto fail;
  }
  if (n == UV_EOF) {
    rc = an_conn_eof_status(c, 1);
    goto fail;
  }
  if (n < 0) {
    rc = (int)n;
    goto fail;
  }
  c->in_read = 0;
  /* All replies to this read leave in one write. */
  if ((rc = an_conn_flush(c)) < 0)
    goto fail;
  /* A big frame's buffer stays only while big frames keep coming. */
  an_frame_decoder_trim(&c->decoder, AN_CONN_RBUF);
  /* Output held for a commit counts too: it is memory all the same. */
  if (c->params.pause_reads_at &&
      c->write_queue + an_tls_pending(c->tls) > c->params.pause_reads_at && !c->read_paused) {
    c->read_paused = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
  return;
fail:
  c->in_read = 0;
  an_conn_close(c, rc);
  return;
out:
  c->in_read = 0;
}

static int an_conn_new(uv_loop_t *loop, an_tls_ctx_t *tls, const an_conn_params_t *params,
                       const an_conn_callbacks_t *cb, void *data, an_conn_t **out) {
  an_conn_t *c = calloc(1, sizeof *c);
  int rc;
  if (!c)
    return UV_ENOMEM;
  if (params)
    c->params = *params;
  c->rbuf = c->params.read_buffer;
  if (!c->rbuf && !(c->rbuf = c->own_rbuf = malloc(AN_CONN_RBUF))) {
    free(c);
    return UV_ENOMEM;
  }
  if ((rc = an_tls_new(tls, &c->tls)) != 0) {
    free(c->own_rbuf);
    free(c);
    return rc;
  }
  if (!c->params.max_frame)
    c->params.max_frame = AN_CONN_DEFAULT_MAX_FRAME;
  if (!c->params.handshake_timeout_ms)
    c->params.handshake_timeout_ms = 10000;
  if (!c->params.close_timeout_ms)
    c->params.close_timeout_ms = 5000;
  c->cb = *cb;
  c->data = data;
  an_frame_decoder_init(&c->decoder, c->params.max_frame);
  snprintf(c->peer, sizeof c->peer, "?");
  /* Neither init can fail on a valid loop; both handles are live from here
   * and the struct is freed only by their close callbacks. */
  uv_tcp_init(loop, &c->tcp);
  uv_timer_init(loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles_open = 2;
  *out = c;
  return 0;
}

static void an_conn_fill_peer(an_conn_t *c) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
    an_addr_format((struct sockaddr *)&ss, c->peer, sizeof c->peer);
}

static int an_conn_start(an_conn_t *c) {
  int rc;
  c->connected = 1;
  an_conn_fill_peer(c);
  uv_tcp_nodelay(&c->tcp, 1);
  an_conn_arm(c, c->params.handshake_timeout_ms);
  if ((rc = uv_read_start((uv_stream_t *)&c->tcp, an_conn_on_alloc, an_conn_on_read)) < 0)
    return rc;
  /* The client speaks first (ClientHello); for a server this is a no-op. */
  rc = an_tls_handshake(c->tls);
  if (rc < 0)
    return rc;
  return an_conn_flush(c);
}

int an_conn_accept(uv_stream_t *server, an_tls_ctx_t *tls, const an_conn_params_t *params,
                   const an_conn_callbacks_t *cb, void *data, an_conn_t **out) {
  an_conn_t *c = NULL;
  int rc = an_conn_new(server->loop, tls, params, cb, data, &c);
  if (rc)
    return rc;
  if ((rc = uv_accept(server, (uv_stream_t *)&c->tcp)) < 0 || (rc = an_conn_start(c)) < 0) {
    c->cb.on_close = NULL; /* the caller hears of it from our return value */
    c->connected = 0;
    an_conn_close(c, rc);
    return rc;
  }
  *out = c;
  return 0;
}

static void an_conn_on_connect(uv_connect_t *req, int status) {
  an_conn_t *c = req->data;
  int rc;
  if (c->closing)
    return;
  if (status < 0) {
    an_conn_close(c, status);
    return;
  }
  if ((rc = an_conn_start(c)) < 0)
    an_conn_close(c, rc);
}

int an_conn_connect(uv_loop_t *loop, const struct sockaddr *addr, an_tls_ctx_t *tls,
                    const an_conn_params_t *params, const an_conn_callbacks_t *cb, void *data,
                    an_conn_t **out) {
  an_conn_t *c = NULL;
  int rc = an_conn_new(loop, tls, params, cb, data, &c);
  if (rc)
    return rc;
  c->connect_req.data = c;
  if ((rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, an_conn_on_connect)) < 0) {
    c->cb.on_close = NULL;
    an_conn_close(c, rc);
    return rc;
  }
  an_conn_arm(c, c->params.handshake_timeout_ms);
  *out = c;
  return 0;
}

static int an_conn_queue_pending(an_conn_t *c, const uint8_t *data, size_t len) {
  if (c->pending_cap - c->pending_len < len) {
    size_t cap = c->pending_cap ? c->pending_cap : 4096;
    while (cap - c->pending_len < len)
      cap *= 2;
    uint8_t *grown = realloc(c->pending, cap);
    if (!grown)
      return UV_ENOMEM;
    c->pending = grown;
    c->pending_cap = cap;
  }
  memcpy(c->pending + c->pending_len, data, len);
  c->pending_len += len;
  return 0;
}

int an_conn_write_raw(an_conn_t *c, const uint8_t *data, size_t len) {
  int rc;
  if (c->closing)
    return AN_ECLOSED;
  if (!c->ready)
    return an_conn_queue_pending(c, data, len);
  if ((rc = an_tls_write(c->tls, data, len)) == 0 && (c->in_read || (rc = an_conn_flush(c)) == 0))
    return 0;
  an_conn_close(c, rc);
  return rc;
}

int an_conn_write_frame(an_conn_t *c, const uint8_t *payload, size_t len) {
  uint8_t small[AN_FRAME_HEADER_SIZE + AN_CONN_COALESCE];
  int rc;

  if (c->closing)
    return AN_ECLOSED;
  if (len > AN_FRAME_MAX_LIMIT)
    return AN_ETOOBIG;
  an_frame_put_header(small, (uint32_t)len);
  if (!c->ready) {
    if ((rc = an_conn_queue_pending(c, small, AN_FRAME_HEADER_SIZE)) != 0 ||
        (rc = an_conn_queue_pending(c, payload, len)) != 0)
      return rc;
    return 0;
  }
  if (len <= AN_CONN_COALESCE) {
    if (len)
      memcpy(small + AN_FRAME_HEADER_SIZE, payload, len);
    rc = an_tls_write(c->tls, small, AN_FRAME_HEADER_SIZE + len);
  } else {
    rc = an_tls_write(c->tls, small, AN_FRAME_HEADER_SIZE);
    if (rc == 0)
      rc = an_tls_write(c->tls, payload, len);
  }
  if (rc == 0 && (c->in_read || (rc = an_conn_flush(c)) == 0))
    return 0;
  an_conn_close(c, rc);
  return rc;
}

int an_conn_hold(an_conn_t *c) {
  if (c->held || c->closing || !c->connected)
    return 0;
  c->held = 1;
  return 1;
}

void an_conn_release(an_conn_t *c, int discard, int status) {
  if (!c->held)
    return;
  c->held = 0;
  if (discard) {
    /* What the held frames acknowledged did not happen: they must never
     * reach the peer. Closing the handles drops them with the TLS engine. */
    if (!c->closing) {
      c->closing = 1;
      c->close_status = status;
      uv_read_stop((uv_stream_t *)&c->tcp);
    }
    c->close_deferred = 0;
    an_conn_close_handles(c);
    return;
  }
  if (c->close_deferred) {
    c->close_deferred = 0;
    an_conn_close_flush(c);
    return;
  }
  int rc = an_conn_flush(c);
  if (rc < 0)
    an_conn_close(c, rc);
}

void an_conn_throttle(an_conn_t *c, int on) {
  on = on != 0;
  if (on == c->throttled)
    return;
  c->throttled = on;
  if (on)
    uv_read_stop((uv_stream_t *)&c->tcp);
  else
    an_conn_resume_reading(c);
}

void an_conn_established(an_conn_t *c) {
  if (c->established || c->closing)
    return;
  c->established = 1;
  an_conn_arm(c, c->params.idle_timeout_ms);
}

void *an_conn_data(const an_conn_t *c) { return c->data; }
void an_conn_set_data(an_conn_t *c, void *data) { c->data = data; }
uv_loop_t *an_conn_loop(const an_conn_t *c) { return c->tcp.loop; }
size_t an_conn_write_queue_bytes(const an_conn_t *c) { return c->write_queue; }
const char *an_conn_peer(const an_conn_t *c) { return c->peer; }
const char *an_conn_tls_error(const an_conn_t *c) { return an_tls_last_error(c->tls); }
int an_conn_is_closing(const an_conn_t *c) { return c->closing; }
