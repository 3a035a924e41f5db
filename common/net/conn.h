/* A framed TLS connection on a libuv TCP handle.
 *
 * Bytes travel: socket -> uv read (the read buffer) -> an_tls_feed -> an_tls_read
 * (plaintext, into the same buffer) -> an_frame_decoder_feed -> on_frame.
 * And back: an_conn_write_frame -> an_tls_write -> ciphertext taken from the
 * TLS engine into one uv_write request per flush.
 *
 * Lifetime: the connection owns its TCP handle and one timer. It is closed
 * with an_conn_close (never freed directly); on_close is the last callback,
 * made from the handles' close callbacks, and the connection is freed right
 * after it returns. Calling an_conn_close from inside on_frame is safe: the
 * read path checks for it and stops. */
#ifndef AN_CONN_H
#define AN_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/net/tls.h"

typedef struct an_conn an_conn_t;

typedef struct an_conn_callbacks {
  /* The TLS handshake finished; frames can flow. Optional. */
  void (*on_ready)(an_conn_t *c);
  /* One complete frame's payload, valid during the call. Return 0, or an
   * error code to close the connection with that status. */
  int (*on_frame)(an_conn_t *c, const uint8_t *payload, size_t len);
  /* The last callback. status: 0 after a clean close (ours, or the peer's
   * close_notify between frames); UV_EOF if the peer vanished between frames
   * without close_notify; AN_ETRUNC if it went away mid-frame; AN_ETLS or
   * AN_EPIN for TLS failures; UV_ETIMEDOUT; or the code given to
   * an_conn_close. The connection is freed when this returns. */
  void (*on_close)(an_conn_t *c, int status);
  /* The peer sent bytes that cannot be framed (a frame over max_frame).
   * Called once, before the connection closes with that status, so the
   * upper layer can queue a last frame explaining why. Optional. */
  void (*on_bad_input)(an_conn_t *c, int status);
} an_conn_callbacks_t;

typedef struct an_conn_params {
  uint32_t max_frame;            /* largest frame accepted; 0 = 16 MiB */
  uint64_t handshake_timeout_ms; /* 0 = 10 s */
  uint64_t idle_timeout_ms;      /* close after this long without input; 0 = never */
  uint64_t close_timeout_ms;     /* how long a close waits to flush; 0 = 5 s */
  /* Keep the handshake deadline running after TLS until the upper layer
   * calls an_conn_established (the broker: once Hello arrived), so a peer
   * cannot hold a slot by finishing TLS and then saying nothing. */
  int await_established;
  /* Back-pressure for servers: stop reading while more than this many bytes
   * of output are queued, resume below a quarter of it; 0 = never pause. A
   * peer that sends requests without reading replies then stalls itself
   * instead of growing our memory. (Not for both ends of one connection:
   * two peers that each wait for the other to read would deadlock.) */
  size_t pause_reads_at;
  /* AN_CONN_READ_BUFFER bytes to read into, shared by every connection on
   * one loop (borrowed; outlives them), or NULL for a buffer of its own.
   * Sharing is safe because a loop delivers one read at a time and a read
   * leaves nothing in the buffer; a server holding thousands of idle
   * sessions saves 64 KiB on each. */
  uint8_t *read_buffer;
} an_conn_params_t;

#define AN_CONN_READ_BUFFER (64u * 1024)

#define AN_CONN_DEFAULT_MAX_FRAME (16u * 1024 * 1024)

/* Accepts a pending connection on `server` (call from its connection
 * callback) and starts the server-side handshake. `tls` must outlive the
 * connection. On failure nothing is leaked and no callback is made. */
int an_conn_accept(uv_stream_t *server, an_tls_ctx_t *tls, const an_conn_params_t *params,
                   const an_conn_callbacks_t *cb, void *data, an_conn_t **out);

/* Connects to `addr` and starts the client-side handshake. Success means the
 * attempt started: the outcome arrives as on_ready or on_close. */
int an_conn_connect(uv_loop_t *loop, const struct sockaddr *addr, an_tls_ctx_t *tls,
                    const an_conn_params_t *params, const an_conn_callbacks_t *cb, void *data,
                    an_conn_t **out);

/* Sends one frame (the header is added here). Before the handshake ends the
 * frame is queued and goes out right after it. Returns 0, AN_ETOOBIG,
 * AN_ECLOSED if the connection is closing, or a TLS/uv error (in which case
 * the connection is being closed with it). */
int an_conn_write_frame(an_conn_t *c, const uint8_t *payload, size_t len);

/* Sends raw plaintext bytes inside the TLS stream, bypassing framing. Only
 * tests need this (to send a partial frame). */
int an_conn_write_raw(an_conn_t *c, const uint8_t *data, size_t len);

/* Starts closing: a close_notify goes out, queued data is flushed (bounded
 * by close_timeout_ms), and on_close(c, status) follows. Idempotent: the
 * first status wins. */
void an_conn_close(an_conn_t *c, int status);

/* Holds the connection's output: frames written from now on wait,
 * encrypted, until an_conn_release, and a close meanwhile waits too (the
 * connection stays alive for the holder). The broker holds a reply until
 * the state it acknowledges is committed. Returns 1 if this call started
 * the hold (the caller then owes exactly one release), 0 if the
 * connection was already held, closing or not connected (nothing owed). */
int an_conn_hold(an_conn_t *c);
/* Ends the hold. discard = 0: the held output goes out (and a close that
 * came meanwhile proceeds). discard != 0: the held output is thrown away
 * unsent and the connection closed at once with `status` (what it
 * acknowledged was lost, so the peer must not read it). */
void an_conn_release(an_conn_t *c, int discard, int status);

/* Stops (on != 0) or resumes reading from the peer, for the upper layer:
 * the broker stops a connection whose requests wait for work in flight
 * (chunks being written) until some of it is done. What the current read
 * already brought is still delivered. */
void an_conn_throttle(an_conn_t *c, int on);

/* The peer passed the upper layer's admission (see await_established): the
 * handshake deadline gives way to the idle timeout. */
void an_conn_established(an_conn_t *c);

void *an_conn_data(const an_conn_t *c);
void an_conn_set_data(an_conn_t *c, void *data);
uv_loop_t *an_conn_loop(const an_conn_t *c);
/* Bytes handed to libuv and not yet written to the socket: back-pressure. */
size_t an_conn_write_queue_bytes(const an_conn_t *c);
/* "127.0.0.1:52312", or "?" if unknown. */
const char *an_conn_peer(const an_conn_t *c);
/* The TLS engine's last error text, for logs. */
const char *an_conn_tls_error(const an_conn_t *c);
int an_conn_is_closing(const an_conn_t *c);

#endif
