/*
 * libchat: the chat/1 client (docs/PROTOCOL.md). See chat.h for the API and clients/c/README.md for the design.
 *
 * Threads: a connection's I/O thread owns its socket and SSL object; every other piece of a connection (its calls,
 * windows, the frames waiting to be written) is guarded by the connection's mutex, and callers wait on their
 * call's condition variable. Callers append frames to `conn.out`; the I/O thread takes the whole buffer at once and
 * writes it with one SSL_write (the frames of a turn coalesce into as few TLS records as fit).
 */
#define _GNU_SOURCE
#include "chat.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* ---- the protocol's constants (docs/PROTOCOL.md 3, 5) ---- */

enum { FRAME_DATA = 0, FRAME_HEADERS = 1, FRAME_TRAILERS = 2, FRAME_CANCEL = 3, FRAME_WINDOW_UPDATE = 4,
       FRAME_PING = 5, FRAME_GOAWAY = 6, FRAME_SETTINGS = 7 };
enum { FLAG_END_STREAM = 1, FLAG_ACK = 1 };
enum { ERR_NO_ERROR = 0, ERR_PROTOCOL = 1, ERR_INTERNAL = 2, ERR_FLOW_CONTROL = 3, ERR_STREAM_CLOSED = 5,
       ERR_FRAME_SIZE = 6, ERR_REFUSED_STREAM = 7, ERR_CANCEL = 8, ERR_ENHANCE_YOUR_CALM = 0xB };

/* PING answers queued while the I/O thread cannot write (the server does not read them) at most: past it the server
 * is flooding, and the connection ends instead of the queue growing. */
enum { MAX_QUEUED_PING_ACKS = 4096 };
enum { SET_MAX_CONCURRENT_STREAMS = 1, SET_INITIAL_WINDOW_SIZE = 2, SET_MAX_FRAME_SIZE = 3,
       SET_MAX_MESSAGE_SIZE = 4, SET_MAX_HEADER_SIZE = 5, SET_KEEPALIVE_MIN_INTERVAL_MS = 6,
       SET_CONNECTION_WINDOW = 7 };

#define FRAME_HEADER_SIZE 9
#define ENVELOPE_PREFIX 5
#define MAX_WINDOW 0x7fffffffLL
#define MAX_STREAM_ID 0x7fffffffU

/* What this client advertises (the Swift client's ChatSettings.client): a 256 KiB window per stream bounds what one
 * stream buffers; 16 MiB for the connection; no streams from the server. */
#define LOCAL_STREAM_WINDOW (256 * 1024)
#define LOCAL_CONNECTION_WINDOW (16 * 1024 * 1024)
#define LOCAL_MAX_FRAME 16384
#define LOCAL_MAX_MESSAGE (4 * 1024 * 1024)
#define LOCAL_MAX_HEADER 8192

static const uint8_t PREFACE[8] = {0x43, 0x48, 0x41, 0x54, 0x0D, 0x0A, 0x01, 0x0A};
static const uint8_t ALPN[] = {6, 'c', 'h', 'a', 't', '/', '1'};

/* ---- small helpers ---- */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static char *dup_string(const char *s) {
    if (s == NULL) return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d != NULL) memcpy(d, s, n + 1);
    return d;
}

typedef struct buf {
    uint8_t *data;
    size_t len, cap;
} buf;

static bool buf_reserve(buf *b, size_t extra) {
    if (b->cap - b->len >= extra) return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < extra) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (d == NULL) return false;
    b->data = d;
    b->cap = cap;
    return true;
}

static bool buf_append(buf *b, const void *p, size_t n) {
    if (!buf_reserve(b, n)) return false;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return true;
}

static void buf_free(buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* SIGPIPE: a write to a connection the server closed raises it, and its default action ends the process. The
 * library never asks its callers to ignore it (libpq's way): the I/O thread blocks it for good (a SIGPIPE raised by
 * its writes stays pending on it, and the write fails with EPIPE), and the handshake, which runs on the caller's
 * thread, blocks it for its duration and takes back a SIGPIPE it raised. */
static void sigpipe_block(sigset_t *saved, bool *was_pending) {
    sigset_t pipe, pending;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, saved);
    *was_pending = false;
    if (sigismember(saved, SIGPIPE) && sigpending(&pending) == 0) *was_pending = sigismember(&pending, SIGPIPE);
}

static void sigpipe_restore(const sigset_t *saved, bool was_pending) {
    sigset_t pending;
    if (!was_pending && sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        const struct timespec none = {0, 0};
        while (sigtimedwait(&pipe, NULL, &none) < 0 && errno == EINTR) {}
    }
    pthread_sigmask(SIG_SETMASK, saved, NULL);
}

/* ---- statuses ---- */

static const char *const CODE_NAMES[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *chat_code_name(chat_code code) {
    if ((int)code < 0 || (int)code > CHAT_UNAUTHENTICATED) return "UNKNOWN";
    return CODE_NAMES[code];
}

static void status_reset(chat_status *s) {
    memset(s, 0, sizeof *s);
    s->retry_after_ms = -1;
}

/* The message of an OK status: an OK status holds no allocation, so a caller that clears only failures leaks
 * nothing. */
static char ok_message[] = "";

void chat_status_clear(chat_status *s) {
    if (s == NULL) return;
    if (s->message != ok_message) free(s->message);
    free(s->resume_cursor);
    if (s->details != NULL) chat__v1__call_status__free_unpacked(s->details, NULL);
    status_reset(s);
}

/* A status the client makes itself. */
static chat_code status_set(chat_status *s, chat_code code, bool not_processed, const char *format, ...) {
    char text[512];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    chat_status_clear(s);
    s->code = code;
    s->not_processed = not_processed;
    s->message = dup_string(text);
    return code;
}

/* Fills `s` from an encoded CallStatus (a TRAILERS payload). */
static void status_from_trailers(chat_status *s, const uint8_t *p, size_t n) {
    chat_status_clear(s);
    Chat__V1__CallStatus *cs = chat__v1__call_status__unpack(NULL, n, p);
    if (cs == NULL) {
        status_set(s, CHAT_INTERNAL, false, "the server sent TRAILERS that are not a CallStatus");
        return;
    }
    int code = (int)cs->code;
    s->code = (code >= 0 && code <= CHAT_UNAUTHENTICATED) ? (chat_code)code : CHAT_UNKNOWN;
    s->message = dup_string(cs->message ? cs->message : "");
    s->not_processed = cs->not_processed;
    for (size_t i = 0; i < cs->n_details; i++) {
        const Chat__V1__StatusDetail *d = cs->details[i];
        if (d->detail_case == CHAT__V1__STATUS_DETAIL__DETAIL_RETRY_INFO && d->retry_info != NULL) {
            s->retry_after_ms = (int64_t)(d->retry_info->retry_after_ms > INT64_MAX / 2
                                              ? INT64_MAX / 2 : d->retry_info->retry_after_ms);
        } else if (d->detail_case == CHAT__V1__STATUS_DETAIL__DETAIL_RESUME_INFO && d->resume_info != NULL) {
            s->has_resume_info = true;
            s->resume_after_seq = d->resume_info->after_seq;
            free(s->resume_cursor);
            s->resume_cursor = (d->resume_info->cursor && d->resume_info->cursor[0])
                                   ? dup_string(d->resume_info->cursor) : NULL;
        }
    }
    s->details = cs;
}

const Chat__V1__FieldViolation *chat_status_field_violation(const chat_status *s, size_t index) {
    if (s == NULL || s->details == NULL) return NULL;
    size_t seen = 0;
    for (size_t i = 0; i < s->details->n_details; i++) {
        const Chat__V1__StatusDetail *d = s->details->details[i];
        if (d->detail_case == CHAT__V1__STATUS_DETAIL__DETAIL_FIELD_VIOLATION && d->field_violation != NULL) {
            if (seen == index) return d->field_violation;
            seen++;
        }
    }
    return NULL;
}

/* ---- calls and connections ---- */

typedef struct msg {
    struct msg *next;
    size_t len;
    uint32_t credit; /* stream credit still owed when the message is consumed */
    uint8_t data[];
} msg;

enum call_state { CALL_QUEUED, CALL_OPEN, CALL_DONE };

typedef struct conn conn;

typedef struct call {
    conn *conn;
    struct call *bucket_next;  /* by stream id, while open */
    struct call *queue_next;   /* waiting for a stream slot */
    struct call *live_prev, *live_next;
    atomic_int refs;           /* the caller's, and the connection's until the call is done */
    uint32_t id;
    enum call_state state;
    bool unary;
    pthread_cond_t cv;
    /* the request */
    uint8_t *header;
    size_t header_len;
    uint8_t *request;          /* the envelope */
    size_t request_len, request_sent;
    int64_t send_window;
    /* the responses */
    msg *head, *tail;
    size_t messages;
    uint8_t prefix[ENVELOPE_PREFIX];
    size_t prefix_have;
    msg *partial;              /* the envelope being received, once its prefix is known */
    size_t partial_have;
    bool partial_large;        /* larger than our stream window: credited as its bytes arrive */
    uint32_t partial_credited;
    int64_t recv_window;       /* what the server may still send on this stream */
    int64_t unreturned;        /* credit owed to the server, sent in batches */
    size_t buffered;           /* response bytes held, not yet read by the caller */
    bool delivered_any;
    /* the end */
    chat_status status;
    uint8_t *trailers;         /* the encoded CallStatus, to copy the status for every chat_stream_next */
    size_t trailers_len;
} call;

#define BUCKETS 64

struct conn {
    pthread_mutex_t mu;
    atomic_int refs;
    int fd;
    SSL *ssl;
    int wake_fd;
    bool wake_pending;
    pthread_t thread;
    bool thread_started;
    struct conn *next; /* the client's list */
    bool dead;         /* the I/O thread has ended, or is ending, the connection */
    bool closing;      /* the client asked it to close */
    bool goaway;       /* the server sent GOAWAY: no new calls */
    char *reason;      /* why it stopped taking calls, for the statuses of calls refused afterwards */
    bool got_settings;
    uint32_t next_id;
    uint32_t active;
    /* the server's settings */
    uint32_t peer_max_streams, peer_max_frame, peer_max_message, peer_max_header;
    int64_t peer_initial_window;
    /* windows */
    int64_t send_window;
    int64_t recv_window;
    int64_t recv_unreturned;
    buf out;   /* frames waiting for the I/O thread */
    size_t ping_acks_queued; /* PING answers in out: reset when the I/O thread takes out to write it */
    buf in;    /* bytes read, not yet a whole frame (the I/O thread's, under the lock while parsed) */
    call *buckets[BUCKETS];
    call *queue_head, *queue_tail;
    call *live; /* every call not done */
};

struct chat_client {
    SSL_CTX *ctx;
    char *host, *server_name, *token;
    uint16_t port;
    chat_token_fn token_fn;
    void *token_context;
    chat_metadata *metadata;
    size_t metadata_count;
    int connect_timeout_ms;
    int max_attempts;
    pthread_mutex_t mu;
    pthread_mutex_t connect_mu;
    conn *current;
    conn *all;
    uint64_t rng;
    atomic_uint_fast64_t retries, connections;
};

struct chat_stream {
    chat_client *client;
    conn *conn;
    call *call;
    const chat_method *method;
    uint8_t *header;     /* to open it again when the server refused it unprocessed */
    size_t header_len;
    uint8_t *request;
    size_t request_len;
    int attempts;
    int64_t deadline_ns;
};

/* Drops the responses a call holds that were not read. */
static void free_messages(call *c) {
    for (msg *m = c->head; m != NULL;) {
        msg *next = m->next;
        free(m);
        m = next;
    }
    c->head = c->tail = NULL;
}

static void call_unref(call *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    free_messages(c);
    free(c->partial);
    free(c->header);
    free(c->request);
    free(c->trailers);
    chat_status_clear(&c->status);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static void conn_unref(conn *c) {
    if (atomic_fetch_sub(&c->refs, 1) != 1) return;
    if (c->ssl != NULL) SSL_free(c->ssl);
    if (c->fd >= 0) close(c->fd);
    if (c->wake_fd >= 0) close(c->wake_fd);
    buf_free(&c->out);
    buf_free(&c->in);
    free(c->reason);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Wakes the I/O thread (frames to write, or a state to act on). Under the lock. */
static void conn_wake(conn *c) {
    if (c->wake_pending) return;
    c->wake_pending = true;
    uint64_t one = 1;
    ssize_t ignored = write(c->wake_fd, &one, sizeof one);
    (void)ignored;
}

/* Appends a frame to the output. Under the lock. False when out of memory. */
static bool frame(conn *c, uint8_t type, uint8_t flags, uint32_t stream, const void *payload, size_t len) {
    if (!buf_reserve(&c->out, FRAME_HEADER_SIZE + len)) return false;
    uint8_t *h = c->out.data + c->out.len;
    h[0] = (uint8_t)(len >> 16); h[1] = (uint8_t)(len >> 8); h[2] = (uint8_t)len;
    h[3] = type; h[4] = flags;
    put32(h + 5, stream & MAX_STREAM_ID);
    c->out.len += FRAME_HEADER_SIZE;
    if (len) buf_append(&c->out, payload, len);
    return true;
}

static void frame_u32(conn *c, uint8_t type, uint32_t stream, uint32_t value) {
    uint8_t p[4];
    put32(p, value);
    frame(c, type, 0, stream, p, 4);
}

static call *find_call(conn *c, uint32_t id) {
    for (call *k = c->buckets[(id >> 1) % BUCKETS]; k != NULL; k = k->bucket_next)
        if (k->id == id) return k;
    return NULL;
}

static void unlink_bucket(conn *c, call *k) {
    call **p = &c->buckets[(k->id >> 1) % BUCKETS];
    while (*p != NULL && *p != k) p = &(*p)->bucket_next;
    if (*p == k) *p = k->bucket_next;
}

static void open_queued(conn *c);

/* Ends a call with `status` (moved from the argument). Under the lock. */
static void call_finish(conn *c, call *k, chat_status *status) {
    if (k->state == CALL_DONE) {
        chat_status_clear(status);
        return;
    }
    if (k->state == CALL_OPEN) {
        unlink_bucket(c, k);
        c->active--;
    } else {
        call **p = &c->queue_head;
        while (*p != NULL && *p != k) p = &(*p)->queue_next;
        if (*p == k) {
            *p = k->queue_next;
            if (c->queue_tail == k) {
                c->queue_tail = NULL;
                for (call *q = c->queue_head; q != NULL; q = q->queue_next) c->queue_tail = q;
            }
        }
    }
    if (k->live_prev) k->live_prev->live_next = k->live_next; else c->live = k->live_next;
    if (k->live_next) k->live_next->live_prev = k->live_prev;
    k->live_prev = k->live_next = NULL;
    k->state = CALL_DONE;
    if (k->partial != NULL) k->buffered -= k->partial_have;
    free(k->partial);
    k->partial = NULL;
    chat_status_clear(&k->status);
    k->status = *status;
    status_reset(status);
    pthread_cond_broadcast(&k->cv);
    call_unref(k); /* the connection's reference */
    if (!c->dead) open_queued(c);
}

static void call_fail(conn *c, call *k, chat_code code, bool not_processed, const char *format, ...) {
    char text[512];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    chat_status s;
    status_reset(&s);
    status_set(&s, code, not_processed, "%s", text);
    call_finish(c, k, &s);
}

/* Sends as much of a call's request as the windows allow. Under the lock. */
static void pump_request(conn *c, call *k) {
    while (k->state == CALL_OPEN && k->request_sent < k->request_len) {
        int64_t n = (int64_t)(k->request_len - k->request_sent);
        if (n > c->peer_max_frame) n = c->peer_max_frame;
        if (n > k->send_window) n = k->send_window;
        if (n > c->send_window) n = c->send_window;
        if (n <= 0) return;
        bool last = k->request_sent + (size_t)n == k->request_len;
        frame(c, FRAME_DATA, last ? FLAG_END_STREAM : 0, k->id, k->request + k->request_sent, (size_t)n);
        k->request_sent += (size_t)n;
        k->send_window -= n;
        c->send_window -= n;
    }
    if (k->request_sent == k->request_len && k->request != NULL) {
        free(k->request);
        k->request = NULL;
    }
}

/* Gives a queued call a stream id and sends it. Under the lock. */
static void open_call(conn *c, call *k) {
    if (c->next_id > MAX_STREAM_ID) {
        c->goaway = true;
        call_fail(c, k, CHAT_UNAVAILABLE, true, "the connection ran out of stream ids");
        return;
    }
    k->id = c->next_id;
    c->next_id += 2;
    k->state = CALL_OPEN;
    k->send_window = c->peer_initial_window;
    k->recv_window = LOCAL_STREAM_WINDOW;
    call **bucket = &c->buckets[(k->id >> 1) % BUCKETS];
    k->bucket_next = *bucket;
    *bucket = k;
    c->active++;
    frame(c, FRAME_HEADERS, 0, k->id, k->header, k->header_len);
    free(k->header);
    k->header = NULL;
    pump_request(c, k);
    conn_wake(c);
}

static void open_queued(conn *c) {
    while (c->queue_head != NULL && c->active < c->peer_max_streams && !c->goaway && !c->dead) {
        call *k = c->queue_head;
        c->queue_head = k->queue_next;
        if (c->queue_head == NULL) c->queue_tail = NULL;
        k->queue_next = NULL;
        open_call(c, k);
    }
}

/* Every call not done ends with `code` (the connection is gone). Under the lock. */
static void fail_all(conn *c, chat_code code, const char *why) {
    while (c->live != NULL) {
        call *k = c->live;
        /* A queued call never reached the server. */
        bool unsent = k->state == CALL_QUEUED;
        call_fail(c, k, code, unsent, "%s", why);
    }
}

/* The connection is over: calls end, the I/O thread stops. Under the lock. */
static void conn_kill(conn *c, chat_code code, const char *why) {
    if (c->dead) return;
    c->dead = true;
    c->goaway = true;
    if (c->reason == NULL) c->reason = dup_string(why);
    fail_all(c, code, why);
    conn_wake(c);
}

/* A connection error of the server's making: GOAWAY with the code, then close. Under the lock. */
static void connection_error(conn *c, uint32_t code, const char *why) {
    size_t n = strlen(why);
    if (n > 256) n = 256;
    uint8_t p[8 + 256];
    put32(p, 0);
    put32(p + 4, code);
    memcpy(p + 8, why, n);
    frame(c, FRAME_GOAWAY, 0, 0, p, 8 + n);
    char text[320];
    snprintf(text, sizeof text, "the server broke the protocol: %s", why);
    conn_kill(c, CHAT_UNAVAILABLE, text);
}

/* Returns credit for a stream once a quarter window is owed. Under the lock. */
static void flush_stream_credit(conn *c, call *k, bool force) {
    if (k->state != CALL_OPEN || k->unreturned <= 0) return;
    if (!force && k->unreturned < LOCAL_STREAM_WINDOW / 4) return;
    frame_u32(c, FRAME_WINDOW_UPDATE, k->id, (uint32_t)k->unreturned);
    k->recv_window += k->unreturned;
    k->unreturned = 0;
    conn_wake(c);
}

/* DATA for an open call: envelopes into messages. Under the lock. */
static void deliver(conn *c, call *k, const uint8_t *p, size_t n) {
    while (n > 0 && k->state == CALL_OPEN) {
        if (k->partial == NULL) {
            size_t take = ENVELOPE_PREFIX - k->prefix_have;
            if (take > n) take = n;
            memcpy(k->prefix + k->prefix_have, p, take);
            k->prefix_have += take;
            p += take;
            n -= take;
            if (k->prefix_have < ENVELOPE_PREFIX) return;
            uint32_t len = get32(k->prefix + 1);
            if (k->prefix[0] & 1) {
                frame_u32(c, FRAME_CANCEL, k->id, ERR_PROTOCOL);
                call_fail(c, k, CHAT_INTERNAL, false, "the server sent a compressed message (not in chat/1)");
                return;
            }
            if (len > LOCAL_MAX_MESSAGE) {
                frame_u32(c, FRAME_CANCEL, k->id, ERR_PROTOCOL);
                call_fail(c, k, CHAT_RESOURCE_EXHAUSTED, false,
                          "the server sent a message of %u bytes, over this client's limit of %d", len,
                          LOCAL_MAX_MESSAGE);
                return;
            }
            msg *m = malloc(sizeof *m + (len ? len : 1));
            if (m == NULL) {
                frame_u32(c, FRAME_CANCEL, k->id, ERR_INTERNAL);
                call_fail(c, k, CHAT_RESOURCE_EXHAUSTED, false, "out of memory for a message of %u bytes", len);
                return;
            }
            m->next = NULL;
            m->len = len;
            m->credit = 0;
            k->partial = m;
            k->partial_have = 0;
            k->partial_credited = 0;
            /* A message larger than the window could never arrive if its credit waited for it to be consumed:
             * its bytes are credited as they come (docs/PROTOCOL.md 6). */
            k->partial_large = (int64_t)len + ENVELOPE_PREFIX > LOCAL_STREAM_WINDOW;
            if (k->partial_large) {
                k->unreturned += ENVELOPE_PREFIX;
                k->partial_credited = ENVELOPE_PREFIX;
            }
        }
        msg *m = k->partial;
        size_t take = m->len - k->partial_have;
        if (take > n) take = n;
        memcpy(m->data + k->partial_have, p, take);
        k->partial_have += take;
        k->buffered += take;
        p += take;
        n -= take;
        if (k->partial_large) {
            k->unreturned += (int64_t)take;
            k->partial_credited += (uint32_t)take;
            flush_stream_credit(c, k, false);
        }
        if (k->partial_have == m->len) {
            m->credit = (uint32_t)(m->len + ENVELOPE_PREFIX - k->partial_credited);
            if (k->tail) k->tail->next = m; else k->head = m;
            k->tail = m;
            k->messages++;
            k->partial = NULL;
            k->prefix_have = 0;
            if (k->unary && k->messages > 1) {
                frame_u32(c, FRAME_CANCEL, k->id, ERR_PROTOCOL);
                call_fail(c, k, CHAT_INTERNAL, false, "the server sent more than one response to a unary call");
                return;
            }
            pthread_cond_broadcast(&k->cv);
        }
    }
}

static int64_t clamp_window(int64_t w) { return w > MAX_WINDOW ? MAX_WINDOW : w; }

static void settings_received(conn *c, const uint8_t *p, size_t n) {
    int64_t old_initial = c->peer_initial_window;
    int64_t conn_window = -1;
    for (size_t i = 0; i + 6 <= n; i += 6) {
        uint16_t id = (uint16_t)((p[i] << 8) | p[i + 1]);
        uint32_t v = get32(p + i + 2);
        bool bad = false;
        switch (id) {
        case SET_MAX_CONCURRENT_STREAMS: bad = v > MAX_STREAM_ID; c->peer_max_streams = v; break;
        case SET_INITIAL_WINDOW_SIZE: bad = v > MAX_STREAM_ID; c->peer_initial_window = v; break;
        case SET_MAX_FRAME_SIZE: bad = v < 16384 || v > 16777215; c->peer_max_frame = v; break;
        case SET_MAX_MESSAGE_SIZE: bad = v < 1024 || v > MAX_STREAM_ID; c->peer_max_message = v; break;
        case SET_MAX_HEADER_SIZE: bad = v < 1024 || v > 65536; c->peer_max_header = v; break;
        case SET_KEEPALIVE_MIN_INTERVAL_MS: bad = v > MAX_STREAM_ID; break;
        case SET_CONNECTION_WINDOW: bad = v < 65535 || v > MAX_STREAM_ID; conn_window = v; break;
        default: break;
        }
        if (bad) {
            connection_error(c, ERR_PROTOCOL, "a SETTINGS value out of range");
            return;
        }
    }
    if (c->peer_max_header > c->peer_max_frame) c->peer_max_header = c->peer_max_frame;
    /* Windows so far assumed the defaults; what was sent against them still counts. */
    if (conn_window >= 0) c->send_window = clamp_window(c->send_window + (conn_window - 65535));
    int64_t delta = c->peer_initial_window - old_initial;
    for (call *k = c->live; k != NULL; k = k->live_next)
        if (k->state == CALL_OPEN) k->send_window = clamp_window(k->send_window + delta);
    frame(c, FRAME_SETTINGS, FLAG_ACK, 0, NULL, 0);
    for (call *k = c->live; k != NULL; k = k->live_next)
        if (k->state == CALL_OPEN) pump_request(c, k);
    open_queued(c);
    conn_wake(c);
}

/* One whole frame from the server. Under the lock. */
static void frame_received(conn *c, uint8_t type, uint8_t flags, uint32_t id, const uint8_t *p, size_t n) {
    if (!c->got_settings) {
        if (type != FRAME_SETTINGS || (flags & FLAG_ACK)) {
            connection_error(c, ERR_PROTOCOL, "the first frame was not SETTINGS");
            return;
        }
    }
    bool stream_level = type <= FRAME_WINDOW_UPDATE && type != FRAME_WINDOW_UPDATE;
    if (stream_level && id == 0) {
        connection_error(c, ERR_PROTOCOL, "a stream frame on stream 0");
        return;
    }
    if ((type == FRAME_PING || type == FRAME_GOAWAY || type == FRAME_SETTINGS) && id != 0) {
        connection_error(c, ERR_PROTOCOL, "a connection frame on a stream");
        return;
    }
    switch (type) {
    case FRAME_DATA: {
        if ((int64_t)n > c->recv_window) {
            connection_error(c, ERR_FLOW_CONTROL, "DATA beyond the connection window");
            return;
        }
        c->recv_window -= (int64_t)n;
        c->recv_unreturned += (int64_t)n;
        if (c->recv_unreturned >= LOCAL_CONNECTION_WINDOW / 4) {
            frame_u32(c, FRAME_WINDOW_UPDATE, 0, (uint32_t)c->recv_unreturned);
            c->recv_window += c->recv_unreturned;
            c->recv_unreturned = 0;
            conn_wake(c);
        }
        call *k = find_call(c, id);
        if (k == NULL) return;
        if ((int64_t)n > k->recv_window) {
            connection_error(c, ERR_FLOW_CONTROL, "DATA beyond the stream window");
            return;
        }
        k->recv_window -= (int64_t)n;
        k->delivered_any = true;
        deliver(c, k, p, n);
        return;
    }
    case FRAME_TRAILERS: {
        call *k = find_call(c, id);
        if (k == NULL) return;
        chat_status s;
        status_reset(&s);
        status_from_trailers(&s, p, n);
        if (s.code == CHAT_OK && (k->partial != NULL || k->prefix_have > 0))
            status_set(&s, CHAT_INTERNAL, false, "the stream ended inside a message");
        free(k->trailers);
        k->trailers = malloc(n ? n : 1);
        if (k->trailers != NULL) {
            memcpy(k->trailers, p, n);
            k->trailers_len = n;
        }
        call_finish(c, k, &s);
        return;
    }
    case FRAME_CANCEL: {
        if (n != 4) { connection_error(c, ERR_FRAME_SIZE, "CANCEL not 4 bytes"); return; }
        call *k = find_call(c, id);
        if (k == NULL) return;
        uint32_t code = get32(p);
        if (code == ERR_REFUSED_STREAM)
            call_fail(c, k, CHAT_UNAVAILABLE, true, "the server refused the call; it was not processed");
        else
            call_fail(c, k, CHAT_UNAVAILABLE, false, "the server cancelled the call (error code %u)", code);
        return;
    }
    case FRAME_WINDOW_UPDATE: {
        if (n != 4) { connection_error(c, ERR_FRAME_SIZE, "WINDOW_UPDATE not 4 bytes"); return; }
        int64_t inc = get32(p) & MAX_STREAM_ID;
        if (inc == 0) { connection_error(c, ERR_PROTOCOL, "WINDOW_UPDATE of 0"); return; }
        if (id == 0) {
            if (c->send_window + inc > MAX_WINDOW) {
                connection_error(c, ERR_FLOW_CONTROL, "the connection window overflowed");
                return;
            }
            c->send_window += inc;
            for (call *k = c->live; k != NULL && c->send_window > 0; k = k->live_next)
                if (k->state == CALL_OPEN && k->request != NULL) pump_request(c, k);
        } else {
            call *k = find_call(c, id);
            if (k == NULL) return;
            if (k->send_window + inc > MAX_WINDOW) {
                connection_error(c, ERR_FLOW_CONTROL, "a stream window overflowed");
                return;
            }
            k->send_window += inc;
            if (k->request != NULL) pump_request(c, k);
        }
        conn_wake(c);
        return;
    }
    case FRAME_PING:
        if (n != 8) { connection_error(c, ERR_FRAME_SIZE, "PING not 8 bytes"); return; }
        if (!(flags & FLAG_ACK)) {
            if (++c->ping_acks_queued > MAX_QUEUED_PING_ACKS) {
                connection_error(c, ERR_ENHANCE_YOUR_CALM, "PINGs faster than it reads the answers");
                return;
            }
            frame(c, FRAME_PING, FLAG_ACK, 0, p, 8);
            conn_wake(c);
        }
        return;
    case FRAME_GOAWAY: {
        if (n < 8 || n > 264) { connection_error(c, ERR_FRAME_SIZE, "GOAWAY of a wrong size"); return; }
        uint32_t last = get32(p) & MAX_STREAM_ID;
        uint32_t code = get32(p + 4);
        char text[400];
        snprintf(text, sizeof text, "the server is going away (GOAWAY code %u%s%.*s)", code, n > 8 ? ": " : "",
                 (int)(n - 8), (const char *)(p + 8));
        c->goaway = true;
        if (c->reason == NULL) c->reason = dup_string(text);
        call *k = c->live;
        while (k != NULL) {
            call *next = k->live_next;
            if (k->state == CALL_QUEUED || k->id > last)
                call_fail(c, k, CHAT_UNAVAILABLE, true, "%s; the call was not processed", text);
            k = next;
        }
        conn_wake(c);
        return;
    }
    case FRAME_SETTINGS:
        if (flags & FLAG_ACK) {
            if (n != 0) connection_error(c, ERR_FRAME_SIZE, "SETTINGS ACK with a payload");
            return;
        }
        if (c->got_settings) { connection_error(c, ERR_PROTOCOL, "a second SETTINGS"); return; }
        if (n % 6 != 0 || n > 96) { connection_error(c, ERR_FRAME_SIZE, "SETTINGS of a wrong size"); return; }
        c->got_settings = true;
        settings_received(c, p, n);
        return;
    default:
        return; /* HEADERS from a server, and unknown types, are ignored */
    }
}

/* Parses the frames in `c->in`. Under the lock. */
static void frames_received(conn *c) {
    size_t off = 0;
    while (!c->dead && c->in.len - off >= FRAME_HEADER_SIZE) {
        const uint8_t *h = c->in.data + off;
        size_t len = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
        if (len > LOCAL_MAX_FRAME) {
            connection_error(c, ERR_FRAME_SIZE, "a frame over MAX_FRAME_SIZE");
            break;
        }
        if (c->in.len - off < FRAME_HEADER_SIZE + len) break;
        frame_received(c, h[3], h[4], get32(h + 5) & MAX_STREAM_ID, h + FRAME_HEADER_SIZE, len);
        off += FRAME_HEADER_SIZE + len;
    }
    if (off > 0) {
        memmove(c->in.data, c->in.data + off, c->in.len - off);
        c->in.len -= off;
    }
}

/* ---- the I/O thread ---- */

static void ssl_error_text(char *out, size_t cap, const char *what) {
    unsigned long e = ERR_get_error();
    if (e != 0) {
        char text[256];
        ERR_error_string_n(e, text, sizeof text);
        snprintf(out, cap, "%s: %s", what, text);
    } else if (errno != 0) {
        snprintf(out, cap, "%s: %s", what, strerror(errno));
    } else {
        snprintf(out, cap, "%s", what);
    }
    ERR_clear_error();
}

static void *io_main(void *arg) {
    conn *c = arg;
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    uint8_t *rb = malloc(65536);
    buf w = {0};
    size_t woff = 0;
    bool want_read_for_write = false, clean = false;
    char why[400] = "";
    if (rb == NULL) {
        pthread_mutex_lock(&c->mu);
        conn_kill(c, CHAT_UNAVAILABLE, "out of memory");
        pthread_mutex_unlock(&c->mu);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&c->mu);
        c->wake_pending = false;
        if (c->closing && !c->dead) {
            clean = true;
            conn_kill(c, CHAT_CANCELLED, "the client was closed");
        }
        if (!c->dead && c->goaway && c->live == NULL) {
            clean = true;
            conn_kill(c, CHAT_UNAVAILABLE, c->reason ? c->reason : "the server is going away");
        }
        if (woff == w.len && c->out.len > 0) {
            buf t = w;
            w = c->out;
            c->out = t;
            c->out.len = 0;
            c->ping_acks_queued = 0;
            woff = 0;
        }
        bool dead = c->dead;
        pthread_mutex_unlock(&c->mu);

        /* Write what there is (after death too, once: a GOAWAY or close_notify we owe). */
        while (woff < w.len) {
            ERR_clear_error();
            errno = 0;
            int r = SSL_write(c->ssl, w.data + woff, (int)(w.len - woff > 1 << 30 ? 1 << 30 : w.len - woff));
            if (r > 0) {
                woff += (size_t)r;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE) break;
            if (e == SSL_ERROR_WANT_READ) { want_read_for_write = true; break; }
            ssl_error_text(why, sizeof why, "writing to the server failed");
            pthread_mutex_lock(&c->mu);
            conn_kill(c, CHAT_UNAVAILABLE, why);
            pthread_mutex_unlock(&c->mu);
            dead = true;
            woff = w.len;
            break;
        }
        if (woff == w.len) {
            w.len = 0;
            woff = 0;
        }
        if (dead) break;

        struct pollfd fds[2] = {{c->fd, POLLIN, 0}, {c->wake_fd, POLLIN, 0}};
        if (woff < w.len && !want_read_for_write) fds[0].events |= POLLOUT;
        int pr = poll(fds, 2, -1);
        if (pr < 0 && errno != EINTR) {
            pthread_mutex_lock(&c->mu);
            conn_kill(c, CHAT_UNAVAILABLE, "poll failed");
            pthread_mutex_unlock(&c->mu);
            break;
        }
        if (fds[1].revents & POLLIN) {
            uint64_t count;
            ssize_t ignored = read(c->wake_fd, &count, sizeof count);
            (void)ignored;
        }
        if (fds[0].revents & (POLLIN | POLLERR | POLLHUP)) {
            want_read_for_write = false;
            for (;;) {
                ERR_clear_error();
                errno = 0;
                int r = SSL_read(c->ssl, rb, 65536);
                if (r > 0) {
                    pthread_mutex_lock(&c->mu);
                    if (!buf_append(&c->in, rb, (size_t)r)) conn_kill(c, CHAT_UNAVAILABLE, "out of memory");
                    else frames_received(c);
                    bool gone = c->dead;
                    pthread_mutex_unlock(&c->mu);
                    if (gone) break;
                    continue;
                }
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
                if (e == SSL_ERROR_ZERO_RETURN)
                    snprintf(why, sizeof why, "the server closed the connection");
                else
                    ssl_error_text(why, sizeof why, "the connection was lost (no close_notify)");
                pthread_mutex_lock(&c->mu);
                conn_kill(c, CHAT_UNAVAILABLE, why);
                pthread_mutex_unlock(&c->mu);
                break;
            }
        }
    }
    /* A last try at what is owed (a GOAWAY of ours), then close_notify when the end is ours. */
    pthread_mutex_lock(&c->mu);
    if (c->out.len > 0) {
        ERR_clear_error();
        (void)SSL_write(c->ssl, c->out.data, (int)c->out.len);
        c->out.len = 0;
    }
    pthread_mutex_unlock(&c->mu);
    if (clean) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl);
    }
    ERR_clear_error();
    shutdown(c->fd, SHUT_RDWR);
    buf_free(&w);
    free(rb);
    /* OpenSSL's per-thread error state. */
    OPENSSL_thread_stop();
    return NULL;
}

/* ---- connecting ---- */

static bool wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = (deadline - now_ns()) / 1000000;
        if (left <= 0) return false;
        struct pollfd p = {fd, events, 0};
        int r = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (r > 0) return true;
        if (r < 0 && errno != EINTR) return false;
    }
}

static int tcp_connect(const chat_client *cl, int64_t deadline, char *why, size_t cap) {
    char port[8];
    snprintf(port, sizeof port, "%u", cl->port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    int g = getaddrinfo(cl->host, port, &hints, &res);
    if (g != 0) {
        snprintf(why, cap, "cannot resolve %s: %s", cl->host, gai_strerror(g));
        return -1;
    }
    int fd = -1;
    snprintf(why, cap, "cannot connect to %s:%u", cl->host, cl->port);
    for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) continue;
        int r = connect(fd, a->ai_addr, a->ai_addrlen);
        if (r < 0 && errno == EINPROGRESS) {
            if (wait_fd(fd, POLLOUT, deadline)) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                r = err == 0 ? 0 : -1;
                errno = err;
            } else {
                errno = ETIMEDOUT;
            }
        }
        if (r == 0) break;
        snprintf(why, cap, "cannot connect to %s:%u: %s", cl->host, cl->port, strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static bool is_ip_address(const char *s) {
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

/* A new connection, handshaken, its preface and SETTINGS queued, its I/O thread running. NULL with `why`. */
static conn *conn_new(chat_client *cl, char *why, size_t cap) {
    int64_t deadline = now_ns() + (int64_t)cl->connect_timeout_ms * 1000000LL;
    int fd = tcp_connect(cl, deadline, why, cap);
    if (fd < 0) return NULL;
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->wake_fd = -1;
    atomic_init(&c->refs, 1);
    pthread_mutex_init(&c->mu, NULL);
    c->next_id = 1;
    c->peer_max_streams = 100;
    c->peer_initial_window = 65535;
    c->peer_max_frame = 16384;
    c->peer_max_message = 4194304;
    c->peer_max_header = 8192;
    c->send_window = 65535;
    c->recv_window = LOCAL_CONNECTION_WINDOW;
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    ERR_clear_error();
    c->ssl = SSL_new(cl->ctx);
    if (c->wake_fd < 0 || c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        ssl_error_text(why, cap, "cannot set up TLS");
        conn_unref(c);
        return NULL;
    }
    const char *name = cl->server_name ? cl->server_name : cl->host;
    sigset_t saved_mask;
    bool sigpipe_was_pending;
    if (!is_ip_address(name)) {
        SSL_set_tlsext_host_name(c->ssl, name);
        SSL_set1_host(c->ssl, name);
    } else {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
    }
    sigpipe_block(&saved_mask, &sigpipe_was_pending);
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int r = SSL_connect(c->ssl);
        if (r == 1) break;
        int e = SSL_get_error(c->ssl, r);
        short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (ev == 0) {
            long v = SSL_get_verify_result(c->ssl);
            if (v != X509_V_OK) {
                snprintf(why, cap, "TLS handshake with %s:%u failed: the certificate: %s", cl->host, cl->port,
                         X509_verify_cert_error_string(v));
                ERR_clear_error();
            } else {
                char text[300];
                snprintf(text, sizeof text, "TLS handshake with %s:%u failed", cl->host, cl->port);
                ssl_error_text(why, cap, text);
            }
            sigpipe_restore(&saved_mask, sigpipe_was_pending);
            conn_unref(c);
            return NULL;
        }
        if (!wait_fd(fd, ev, deadline)) {
            snprintf(why, cap, "TLS handshake with %s:%u timed out", cl->host, cl->port);
            sigpipe_restore(&saved_mask, sigpipe_was_pending);
            conn_unref(c);
            return NULL;
        }
    }
    sigpipe_restore(&saved_mask, sigpipe_was_pending);
    const unsigned char *proto = NULL;
    unsigned int proto_len = 0;
    SSL_get0_alpn_selected(c->ssl, &proto, &proto_len);
    if (proto_len != 6 || memcmp(proto, "chat/1", 6) != 0) {
        snprintf(why, cap, "%s:%u did not agree to ALPN chat/1", cl->host, cl->port);
        conn_unref(c);
        return NULL;
    }
    uint8_t settings[6 * 7];
    static const uint16_t ids[7] = {SET_MAX_CONCURRENT_STREAMS, SET_INITIAL_WINDOW_SIZE, SET_MAX_FRAME_SIZE,
                                    SET_MAX_MESSAGE_SIZE, SET_MAX_HEADER_SIZE, SET_KEEPALIVE_MIN_INTERVAL_MS,
                                    SET_CONNECTION_WINDOW};
    const uint32_t values[7] = {0, LOCAL_STREAM_WINDOW, LOCAL_MAX_FRAME, LOCAL_MAX_MESSAGE, LOCAL_MAX_HEADER,
                                10000, LOCAL_CONNECTION_WINDOW};
    for (int i = 0; i < 7; i++) {
        settings[i * 6] = (uint8_t)(ids[i] >> 8);
        settings[i * 6 + 1] = (uint8_t)ids[i];
        put32(settings + i * 6 + 2, values[i]);
    }
    if (!buf_append(&c->out, PREFACE, sizeof PREFACE) || !frame(c, FRAME_SETTINGS, 0, 0, settings, sizeof settings)) {
        snprintf(why, cap, "out of memory");
        conn_unref(c);
        return NULL;
    }
    if (pthread_create(&c->thread, NULL, io_main, c) != 0) {
        snprintf(why, cap, "cannot start the connection's thread");
        conn_unref(c);
        return NULL;
    }
    c->thread_started = true;
    return c;
}

/* Closes a connection and waits for its thread. The client's reference is released. */
static void conn_close(conn *c) {
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    conn_wake(c);
    pthread_mutex_unlock(&c->mu);
    if (c->thread_started) pthread_join(c->thread, NULL);
    conn_unref(c);
}

/* A connection that takes calls, with a reference for the caller; NULL with `status` UNAVAILABLE, not processed. */
static conn *get_conn(chat_client *cl, chat_status *status) {
    pthread_mutex_lock(&cl->mu);
    conn *c = cl->current;
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        bool ok = !c->goaway && !c->dead;
        pthread_mutex_unlock(&c->mu);
        if (ok) {
            atomic_fetch_add(&c->refs, 1);
            pthread_mutex_unlock(&cl->mu);
            return c;
        }
    }
    pthread_mutex_unlock(&cl->mu);

    pthread_mutex_lock(&cl->connect_mu);
    pthread_mutex_lock(&cl->mu);
    c = cl->current;
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        bool ok = !c->goaway && !c->dead;
        pthread_mutex_unlock(&c->mu);
        if (ok) {
            atomic_fetch_add(&c->refs, 1);
            pthread_mutex_unlock(&cl->mu);
            pthread_mutex_unlock(&cl->connect_mu);
            return c;
        }
    }
    /* Connections that are over are joined and dropped; those with calls still open stay until they end. */
    conn **p = &cl->all;
    while (*p != NULL) {
        conn *old = *p;
        pthread_mutex_lock(&old->mu);
        bool over = old->dead;
        pthread_mutex_unlock(&old->mu);
        if (over) {
            *p = old->next;
            if (cl->current == old) cl->current = NULL;
            pthread_mutex_unlock(&cl->mu);
            if (old->thread_started) pthread_join(old->thread, NULL);
            old->thread_started = false;
            conn_unref(old);
            pthread_mutex_lock(&cl->mu);
            p = &cl->all;
        } else {
            p = &old->next;
        }
    }
    pthread_mutex_unlock(&cl->mu);

    char why[512];
    c = conn_new(cl, why, sizeof why);
    if (c == NULL) {
        pthread_mutex_unlock(&cl->connect_mu);
        status_set(status, CHAT_UNAVAILABLE, true, "%s", why);
        return NULL;
    }
    atomic_fetch_add(&cl->connections, 1);
    pthread_mutex_lock(&cl->mu);
    c->next = cl->all;
    cl->all = c;
    cl->current = c;
    atomic_fetch_add(&c->refs, 1); /* the caller's; the list holds the first */
    pthread_mutex_unlock(&cl->mu);
    pthread_mutex_unlock(&cl->connect_mu);
    return c;
}

/* ---- the client ---- */

void chat_options_init(chat_options *o) {
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 10000;
    o->max_attempts = 4;
}

static bool valid_metadata(const chat_metadata *m, size_t n, chat_status *status) {
    for (size_t i = 0; i < n; i++) {
        size_t len = m[i].key ? strlen(m[i].key) : 0;
        if (len == 0 || len > 64) {
            status_set(status, CHAT_INVALID_ARGUMENT, true, "metadata key %zu: 1 to 64 bytes", i);
            return false;
        }
        for (size_t j = 0; j < len; j++) {
            char ch = m[i].key[j];
            if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || ch == '_' || ch == '.' || ch == '-')) {
                status_set(status, CHAT_INVALID_ARGUMENT, true, "metadata key \"%s\": only [0-9a-z_.-]", m[i].key);
                return false;
            }
        }
        if (m[i].value_len > 4096) {
            status_set(status, CHAT_INVALID_ARGUMENT, true, "metadata value of \"%s\": at most 4096 bytes",
                       m[i].key);
            return false;
        }
    }
    return true;
}

chat_client *chat_client_new(const chat_options *o, chat_status *status) {
    if (status == NULL) return NULL;
    chat_status_clear(status);
    if (o == NULL || o->host == NULL || o->host[0] == '\0' || o->port == 0) {
        status_set(status, CHAT_INVALID_ARGUMENT, true, "options: host and port are required");
        return NULL;
    }
    if ((o->cert_file == NULL) != (o->key_file == NULL)) {
        status_set(status, CHAT_INVALID_ARGUMENT, true, "options: cert_file and key_file go together");
        return NULL;
    }
    if (!valid_metadata(o->metadata, o->metadata_count, status)) return NULL;
    chat_client *cl = calloc(1, sizeof *cl);
    if (cl == NULL) {
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&cl->mu, NULL);
    pthread_mutex_init(&cl->connect_mu, NULL);
    cl->port = o->port;
    cl->host = dup_string(o->host);
    cl->server_name = dup_string(o->server_name);
    cl->token = dup_string(o->token);
    cl->token_fn = o->token_fn;
    cl->token_context = o->token_context;
    cl->connect_timeout_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 10000;
    cl->max_attempts = o->max_attempts > 0 ? o->max_attempts : 4;
    if (RAND_bytes((unsigned char *)&cl->rng, sizeof cl->rng) != 1 || cl->rng == 0) cl->rng = 0x9E3779B97F4A7C15ULL;
    if (o->metadata_count > 0) {
        cl->metadata = calloc(o->metadata_count, sizeof *cl->metadata);
        if (cl->metadata == NULL) goto oom;
        cl->metadata_count = o->metadata_count;
        for (size_t i = 0; i < o->metadata_count; i++) {
            cl->metadata[i].key = dup_string(o->metadata[i].key);
            uint8_t *v = malloc(o->metadata[i].value_len ? o->metadata[i].value_len : 1);
            if (v == NULL || cl->metadata[i].key == NULL) { free(v); goto oom; }
            if (o->metadata[i].value_len) memcpy(v, o->metadata[i].value, o->metadata[i].value_len);
            cl->metadata[i].value = v;
            cl->metadata[i].value_len = o->metadata[i].value_len;
        }
    }
    if (cl->host == NULL || (o->server_name && !cl->server_name) || (o->token && !cl->token)) goto oom;
    ERR_clear_error();
    cl->ctx = SSL_CTX_new(TLS_client_method());
    if (cl->ctx == NULL) goto tls;
    SSL_CTX_set_min_proto_version(cl->ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(cl->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(cl->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_PEER, NULL);
    if (SSL_CTX_set_alpn_protos(cl->ctx, ALPN, sizeof ALPN) != 0) goto tls;
    if (o->ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(cl->ctx, o->ca_file, NULL) != 1) goto tls;
    } else if (SSL_CTX_set_default_verify_paths(cl->ctx) != 1) {
        goto tls;
    }
    if (o->cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(cl->ctx, o->cert_file) != 1) goto tls;
        if (SSL_CTX_use_PrivateKey_file(cl->ctx, o->key_file, SSL_FILETYPE_PEM) != 1) goto tls;
        if (SSL_CTX_check_private_key(cl->ctx) != 1) goto tls;
    }
    return cl;
tls: {
    char why[400];
    ssl_error_text(why, sizeof why, "TLS configuration");
    status_set(status, CHAT_INVALID_ARGUMENT, true, "%s", why);
    chat_client_free(cl);
    return NULL;
}
oom:
    status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
    chat_client_free(cl);
    return NULL;
}

void chat_client_free(chat_client *cl) {
    if (cl == NULL) return;
    pthread_mutex_lock(&cl->mu);
    conn *list = cl->all;
    cl->all = NULL;
    cl->current = NULL;
    pthread_mutex_unlock(&cl->mu);
    while (list != NULL) {
        conn *next = list->next;
        conn_close(list);
        list = next;
    }
    if (cl->ctx != NULL) SSL_CTX_free(cl->ctx);
    for (size_t i = 0; i < cl->metadata_count; i++) {
        free((char *)cl->metadata[i].key);
        free((uint8_t *)cl->metadata[i].value);
    }
    free(cl->metadata);
    free(cl->host);
    free(cl->server_name);
    free(cl->token);
    pthread_mutex_destroy(&cl->mu);
    pthread_mutex_destroy(&cl->connect_mu);
    free(cl);
}

chat_code chat_client_connect(chat_client *cl, chat_status *status) {
    if (status == NULL) return CHAT_INVALID_ARGUMENT;
    chat_status_clear(status);
    conn *c = get_conn(cl, status);
    if (c == NULL) {
        chat_code code = status->code;
            return code;
    }
    conn_unref(c);
    return CHAT_OK;
}

uint64_t chat_client_retries(const chat_client *cl) { return atomic_load(&((chat_client *)cl)->retries); }
uint64_t chat_client_connections(const chat_client *cl) { return atomic_load(&((chat_client *)cl)->connections); }

/* A random number (xorshift64*), under the client's lock. */
static uint64_t client_random(chat_client *cl) {
    pthread_mutex_lock(&cl->mu);
    uint64_t x = cl->rng;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    cl->rng = x;
    pthread_mutex_unlock(&cl->mu);
    return x * 0x2545F4914F6CDD1DULL;
}

/* The encoded CallHeader of an attempt. NULL with `status` when it cannot be made. */
static uint8_t *make_header(chat_client *cl, const chat_method *method, const chat_call_options *o,
                            const uint8_t *key, size_t key_len, uint32_t attempt, int64_t deadline,
                            size_t *out_len, chat_status *status) {
    Chat__V1__CallHeader h = CHAT__V1__CALL_HEADER__INIT;
    h.method = (char *)method->path;
    if (deadline > 0) {
        int64_t left = (deadline - now_ns()) / 1000;
        h.timeout_us = (uint64_t)(left > 0 ? left : 1);
    }
    char token[LOCAL_MAX_HEADER + 1];
    const char *jwt = NULL;
    if (o && o->token) {
        jwt = o->token;
    } else if (cl->token_fn != NULL) {
        int n = cl->token_fn(cl->token_context, token, sizeof token);
        if (n < 0 || (size_t)n >= sizeof token) {
            status_set(status, CHAT_UNAUTHENTICATED, true, "the token callback gave no token");
            return NULL;
        }
        token[n] = '\0';
        jwt = token;
    } else {
        jwt = cl->token;
    }
    char *authorization = NULL;
    if (jwt != NULL && jwt[0] != '\0') {
        size_t n = strlen(jwt);
        authorization = malloc(n + 8);
        if (authorization == NULL) {
            status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
            return NULL;
        }
        memcpy(authorization, "Bearer ", 7);
        memcpy(authorization + 7, jwt, n + 1);
        h.authorization = authorization;
    }
    h.idempotency_key.data = (uint8_t *)key;
    h.idempotency_key.len = key_len;
    h.attempt = attempt;
    size_t call_md = o ? o->metadata_count : 0;
    size_t total = cl->metadata_count + call_md;
    Chat__V1__MetadataEntry entries[64];
    Chat__V1__MetadataEntry *pointers[64];
    if (total > 32) {
        free(authorization);
        status_set(status, CHAT_INVALID_ARGUMENT, true, "metadata: at most 32 entries");
        return NULL;
    }
    for (size_t i = 0; i < total; i++) {
        const chat_metadata *m = i < cl->metadata_count ? &cl->metadata[i] : &o->metadata[i - cl->metadata_count];
        Chat__V1__MetadataEntry e = CHAT__V1__METADATA_ENTRY__INIT;
        e.key = (char *)m->key;
        e.value.data = (uint8_t *)m->value;
        e.value.len = m->value_len;
        entries[i] = e;
        pointers[i] = &entries[i];
    }
    h.n_metadata = total;
    h.metadata = total ? pointers : NULL;
    size_t len = chat__v1__call_header__get_packed_size(&h);
    uint8_t *out = malloc(len ? len : 1);
    if (out == NULL) {
        free(authorization);
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return NULL;
    }
    chat__v1__call_header__pack(&h, out);
    free(authorization);
    *out_len = len;
    return out;
}

/* Starts a call on a connection: queued or opened. The call gets two references (caller, connection). */
static call *start_call(conn *c, uint8_t *header, size_t header_len, uint8_t *request, size_t request_len,
                        bool unary, chat_status *status) {
    call *k = calloc(1, sizeof *k);
    if (k == NULL) {
        free(header);
        free(request);
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return NULL;
    }
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&k->cv, &attr);
    pthread_condattr_destroy(&attr);
    atomic_init(&k->refs, 2);
    status_reset(&k->status);
    k->conn = c;
    k->unary = unary;
    k->header = header;
    k->header_len = header_len;
    k->request = request;
    k->request_len = request_len;
    k->state = CALL_QUEUED;
    pthread_mutex_lock(&c->mu);
    if (c->dead || c->goaway) {
        pthread_mutex_unlock(&c->mu);
        status_set(status, CHAT_UNAVAILABLE, true, "%s", c->reason ? c->reason : "the connection closed");
        atomic_store(&k->refs, 1);
        call_unref(k);
        return NULL;
    }
    if (header_len > c->peer_max_header) {
        pthread_mutex_unlock(&c->mu);
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "the call header is %zu bytes, over the server's %u",
                   header_len, c->peer_max_header);
        atomic_store(&k->refs, 1);
        call_unref(k);
        return NULL;
    }
    if (request_len - ENVELOPE_PREFIX > c->peer_max_message) {
        pthread_mutex_unlock(&c->mu);
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "the request is %zu bytes, over the server's %u",
                   request_len - ENVELOPE_PREFIX, c->peer_max_message);
        atomic_store(&k->refs, 1);
        call_unref(k);
        return NULL;
    }
    k->live_next = c->live;
    if (c->live) c->live->live_prev = k;
    c->live = k;
    if (c->active < c->peer_max_streams && c->queue_head == NULL) {
        open_call(c, k);
    } else {
        if (c->queue_tail) c->queue_tail->queue_next = k; else c->queue_head = k;
        c->queue_tail = k;
    }
    pthread_mutex_unlock(&c->mu);
    return k;
}

/* The caller gives up on a call (cancel, deadline). Under the lock. */
static void call_cancel(conn *c, call *k, chat_code code, const char *why) {
    if (k->state == CALL_DONE) return;
    /* What was not read is not wanted. */
    free_messages(k);
    k->buffered = 0;
    if (k->state == CALL_OPEN) {
        frame_u32(c, FRAME_CANCEL, k->id, ERR_CANCEL);
        conn_wake(c);
    }
    call_fail(c, k, code, false, "%s", why);
}

/* Waits, under the lock, until `ready` holds or the deadline (0: none) passes. False on timeout. */
static bool wait_call(conn *c, call *k, int64_t deadline, bool (*ready)(const call *)) {
    while (!ready(k)) {
        if (deadline <= 0) {
            pthread_cond_wait(&k->cv, &c->mu);
        } else {
            int64_t t = deadline;
            struct timespec ts = {(time_t)(t / 1000000000LL), (long)(t % 1000000000LL)};
            if (now_ns() >= deadline) return false;
            pthread_cond_timedwait(&k->cv, &c->mu, &ts);
        }
    }
    return true;
}

static bool call_done(const call *k) { return k->state == CALL_DONE; }
static bool call_has_message(const call *k) { return k->head != NULL || k->state == CALL_DONE; }

static uint8_t *make_envelope(const uint8_t *request, size_t len, size_t *out_len, chat_status *status) {
    uint8_t *e = malloc(ENVELOPE_PREFIX + len);
    if (e == NULL) {
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return NULL;
    }
    e[0] = 0;
    put32(e + 1, (uint32_t)len);
    if (len) memcpy(e + ENVELOPE_PREFIX, request, len);
    *out_len = ENVELOPE_PREFIX + len;
    return e;
}

/* How long to wait before attempt `attempt` (1 = the first retry): full jitter on an exponential backoff, never
 * shorter than the server's RetryInfo. */
static int64_t retry_delay_ms(chat_client *cl, int attempt, int64_t retry_after_ms) {
    int64_t cap = 25LL << (attempt > 7 ? 7 : attempt - 1);
    if (cap > 2000) cap = 2000;
    int64_t jitter = (int64_t)(client_random(cl) % (uint64_t)(cap + 1));
    return retry_after_ms > jitter ? retry_after_ms + jitter / 4 : jitter;
}

/* Whether a failed attempt may be sent again without a second effect. */
static bool retryable(const chat_method *method, bool keyed, const chat_status *s) {
    bool safe = method->idempotent || keyed;
    switch (s->code) {
    case CHAT_UNAVAILABLE: return s->not_processed || safe;
    case CHAT_RESOURCE_EXHAUSTED: return s->retry_after_ms >= 0 && (s->not_processed || safe);
    case CHAT_ABORTED: return s->retry_after_ms >= 0 && safe;
    default: return false;
    }
}

static void sleep_ms(int64_t ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

chat_code chat_unary_bytes(chat_client *cl, const chat_method *method, const uint8_t *request, size_t request_len,
                           const chat_call_options *o, uint8_t **response, size_t *response_len,
                           chat_status *status) {
    if (status == NULL) return CHAT_INVALID_ARGUMENT;
    chat_status_clear(status);
    *response = NULL;
    *response_len = 0;
    if (cl == NULL || method == NULL || method->server_streaming) {
        return status_set(status, CHAT_INVALID_ARGUMENT, true, "chat_unary: a unary method is required");
    }
    if (o && o->idempotency_key && (o->idempotency_key_len < 16 || o->idempotency_key_len > 64))
        return status_set(status, CHAT_INVALID_ARGUMENT, true, "idempotency_key: 16 to 64 bytes");
    if (o && !valid_metadata(o->metadata, o->metadata_count, status)) return status->code;
    int64_t deadline = (o && o->timeout_ms > 0) ? now_ns() + o->timeout_ms * 1000000LL : 0;
    uint8_t made_key[16];
    const uint8_t *key = o ? o->idempotency_key : NULL;
    size_t key_len = o ? o->idempotency_key_len : 0;
    if (key == NULL && !method->idempotent) {
        if (RAND_bytes(made_key, sizeof made_key) != 1)
            return status_set(status, CHAT_INTERNAL, true, "no randomness for an idempotency key");
        key = made_key;
        key_len = sizeof made_key;
    }
    for (int attempt = 0;; attempt++) {
        chat_status_clear(status);
        size_t header_len = 0, envelope_len = 0;
        uint8_t *header = make_header(cl, method, o, key, key_len, (uint32_t)attempt, deadline, &header_len, status);
        if (header == NULL) break;
        uint8_t *envelope = make_envelope(request, request_len, &envelope_len, status);
        if (envelope == NULL) { free(header); break; }
        conn *c = get_conn(cl, status);
        if (c == NULL) {
            free(header);
            free(envelope);
        } else {
            call *k = start_call(c, header, header_len, envelope, envelope_len, true, status);
            if (k != NULL) {
                pthread_mutex_lock(&c->mu);
                conn_wake(c);
                if (!wait_call(c, k, deadline, call_done))
                    call_cancel(c, k, CHAT_DEADLINE_EXCEEDED, "the deadline passed");
                chat_status_clear(status);
                *status = k->status;
                status_reset(&k->status);
                msg *m = k->head;
                if (status->code == CHAT_OK && m == NULL)
                    status_set(status, CHAT_INTERNAL, false, "the server sent no response to a unary call");
                if (status->code == CHAT_OK) {
                    k->head = NULL;
                    k->tail = NULL;
                }
                pthread_mutex_unlock(&c->mu);
                call_unref(k);
                conn_unref(c);
                if (status->code == CHAT_OK) {
                    chat_status_clear(status);
                    status->message = ok_message;
                    uint8_t *out = malloc(m->len ? m->len : 1);
                    if (out == NULL) {
                        free(m);
                        return status_set(status, CHAT_RESOURCE_EXHAUSTED, false, "out of memory");
                    }
                    memcpy(out, m->data, m->len);
                    *response = out;
                    *response_len = m->len;
                    free(m);
                    return CHAT_OK;
                }
            } else {
                conn_unref(c);
            }
        }
        if (attempt + 1 >= cl->max_attempts || !retryable(method, key != NULL, status)) break;
        int64_t delay = retry_delay_ms(cl, attempt + 1, status->retry_after_ms);
        if (deadline > 0 && now_ns() + delay * 1000000LL >= deadline) break;
        sleep_ms(delay);
        atomic_fetch_add(&cl->retries, 1);
    }
    chat_code code = status->code;
    return code;
}

chat_code chat_unary(chat_client *cl, const chat_method *method, const ProtobufCMessage *request,
                     const chat_call_options *o, ProtobufCMessage **response, chat_status *status) {
    if (status == NULL) return CHAT_INVALID_ARGUMENT;
    *response = NULL;
    if (method == NULL || request == NULL || request->descriptor != method->request) {
        chat_status_clear(status);
        return status_set(status, CHAT_INVALID_ARGUMENT, true, "chat_unary: the request is not %s's",
                          method ? method->path : "the method");
    }
    size_t len = protobuf_c_message_get_packed_size(request);
    uint8_t *bytes = malloc(len ? len : 1);
    if (bytes == NULL) {
        chat_status_clear(status);
        return status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
    }
    protobuf_c_message_pack(request, bytes);
    uint8_t *out = NULL;
    size_t out_len = 0;
    chat_code code = chat_unary_bytes(cl, method, bytes, len, o, &out, &out_len, status);
    free(bytes);
    if (code == CHAT_OK) {
        *response = protobuf_c_message_unpack(method->response, NULL, out_len, out);
        free(out);
        if (*response == NULL)
            code = status_set(status, CHAT_INTERNAL, false, "the response is not a %s", method->response->name);
    }
    return code;
}

/* ---- streams ---- */

static bool stream_start(chat_stream *st, int attempt, chat_status *status) {
    uint8_t *header = NULL;
    size_t header_len = st->header_len;
    if (attempt == 0) {
        header = malloc(header_len ? header_len : 1);
        if (header) memcpy(header, st->header, header_len);
    } else {
        /* The same header, with its attempt counted. */
        Chat__V1__CallHeader *h = chat__v1__call_header__unpack(NULL, st->header_len, st->header);
        if (h != NULL) {
            h->attempt = (uint32_t)attempt;
            if (st->deadline_ns > 0) {
                int64_t left = (st->deadline_ns - now_ns()) / 1000;
                h->timeout_us = (uint64_t)(left > 0 ? left : 1);
            }
            header_len = chat__v1__call_header__get_packed_size(h);
            header = malloc(header_len ? header_len : 1);
            if (header) chat__v1__call_header__pack(h, header);
            chat__v1__call_header__free_unpacked(h, NULL);
        }
    }
    uint8_t *request = malloc(st->request_len);
    if (header == NULL || request == NULL) {
        free(header);
        free(request);
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return false;
    }
    memcpy(request, st->request, st->request_len);
    conn *c = get_conn(st->client, status);
    if (c == NULL) {
        free(header);
        free(request);
        return false;
    }
    call *k = start_call(c, header, header_len, request, st->request_len, false, status);
    if (k == NULL) {
        conn_unref(c);
        return false;
    }
    pthread_mutex_lock(&c->mu);
    conn_wake(c);
    pthread_mutex_unlock(&c->mu);
    st->conn = c;
    st->call = k;
    return true;
}

chat_stream *chat_stream_open_bytes(chat_client *cl, const chat_method *method, const uint8_t *request,
                                    size_t request_len, const chat_call_options *o, chat_status *status) {
    if (status == NULL) return NULL;
    chat_status_clear(status);
    if (cl == NULL || method == NULL || !method->server_streaming) {
        status_set(status, CHAT_INVALID_ARGUMENT, true, "chat_stream_open: a server-streaming method is required");
        return NULL;
    }
    if (o && !valid_metadata(o->metadata, o->metadata_count, status)) return NULL;
    chat_stream *st = calloc(1, sizeof *st);
    if (st == NULL) {
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return NULL;
    }
    st->client = cl;
    st->method = method;
    st->deadline_ns = (o && o->timeout_ms > 0) ? now_ns() + o->timeout_ms * 1000000LL : 0;
    st->header = make_header(cl, method, o, o ? o->idempotency_key : NULL, o ? o->idempotency_key_len : 0, 0,
                             st->deadline_ns, &st->header_len, status);
    if (st->header != NULL) st->request = make_envelope(request, request_len, &st->request_len, status);
    if (st->header == NULL || st->request == NULL) {
        chat_stream_free(st);
        return NULL;
    }
    for (int attempt = 0;; attempt++) {
        if (stream_start(st, attempt, status)) {
            st->attempts = attempt + 1;
            return st;
        }
        if (attempt + 1 >= cl->max_attempts || !(status->code == CHAT_UNAVAILABLE && status->not_processed)) break;
        int64_t delay = retry_delay_ms(cl, attempt + 1, status->retry_after_ms);
        if (st->deadline_ns > 0 && now_ns() + delay * 1000000LL >= st->deadline_ns) break;
        sleep_ms(delay);
        atomic_fetch_add(&cl->retries, 1);
    }
    chat_stream_free(st);
    return NULL;
}

chat_stream *chat_stream_open(chat_client *cl, const chat_method *method, const ProtobufCMessage *request,
                              const chat_call_options *o, chat_status *status) {
    if (status == NULL) return NULL;
    if (method == NULL || request == NULL || request->descriptor != method->request) {
        chat_status_clear(status);
        status_set(status, CHAT_INVALID_ARGUMENT, true, "chat_stream_open: the request is not %s's",
                   method ? method->path : "the method");
        return NULL;
    }
    size_t len = protobuf_c_message_get_packed_size(request);
    uint8_t *bytes = malloc(len ? len : 1);
    if (bytes == NULL) {
        chat_status_clear(status);
        status_set(status, CHAT_RESOURCE_EXHAUSTED, true, "out of memory");
        return NULL;
    }
    protobuf_c_message_pack(request, bytes);
    chat_stream *st = chat_stream_open_bytes(cl, method, bytes, len, o, status);
    free(bytes);
    return st;
}

/* A copy of a finished call's status for the caller (each chat_stream_next after the end gets its own). */
static void copy_status(const call *k, chat_status *out) {
    chat_status_clear(out);
    if (k->status.code == CHAT_OK) {
        out->message = ok_message;
        return;
    }
    if (k->trailers != NULL && k->status.details != NULL) {
        status_from_trailers(out, k->trailers, k->trailers_len);
        if (out->code != k->status.code) { /* the client changed the code (a message cut short) */
            chat_status_clear(out);
            status_set(out, k->status.code, k->status.not_processed, "%s", k->status.message);
        }
        return;
    }
    status_set(out, k->status.code, k->status.not_processed, "%s", k->status.message ? k->status.message : "");
    out->retry_after_ms = k->status.retry_after_ms;
}

chat_next chat_stream_next_bytes(chat_stream *st, int timeout_ms, uint8_t **message, size_t *message_len,
                                 chat_status *status) {
    if (status == NULL) return CHAT_NEXT_END;
    *message = NULL;
    *message_len = 0;
    int64_t deadline = timeout_ms < 0 ? 0 : now_ns() + (int64_t)timeout_ms * 1000000LL;
    for (;;) {
        conn *c = st->conn;
        call *k = st->call;
        pthread_mutex_lock(&c->mu);
        bool ready = timeout_ms == 0 ? call_has_message(k) : wait_call(c, k, deadline, call_has_message);
        if (!ready) {
            pthread_mutex_unlock(&c->mu);
            return CHAT_NEXT_TIMEOUT;
        }
        msg *m = k->head;
        if (m != NULL) {
            k->head = m->next;
            if (k->head == NULL) k->tail = NULL;
            k->buffered -= m->len;
            k->unreturned += m->credit;
            flush_stream_credit(c, k, false);
            pthread_mutex_unlock(&c->mu);
            /* The message's bytes are handed over in the block they came in: the payload moves to its start. */
            size_t len = m->len;
            memmove(m, m->data, len);
            *message = (uint8_t *)m;
            *message_len = len;
            return CHAT_NEXT_MESSAGE;
        }
        /* Ended. Refused before the server took it, and nothing delivered: opened again (a new connection). */
        bool refused = k->status.code == CHAT_UNAVAILABLE && k->status.not_processed && !k->delivered_any;
        if (refused && st->attempts < st->client->max_attempts &&
            (st->deadline_ns == 0 || now_ns() < st->deadline_ns)) {
            pthread_mutex_unlock(&c->mu);
            chat_status s;
            status_reset(&s);
            int64_t delay = retry_delay_ms(st->client, st->attempts, -1);
            sleep_ms(delay);
            atomic_fetch_add(&st->client->retries, 1);
            call *old = st->call;
            conn *oldc = st->conn;
            if (stream_start(st, st->attempts, &s)) {
                st->attempts++;
                call_unref(old);
                conn_unref(oldc);
                chat_status_clear(&s);
                continue;
            }
            st->call = old;
            st->conn = oldc;
            st->attempts = st->client->max_attempts;
            chat_status_clear(status);
            *status = s;
            return CHAT_NEXT_END;
        }
        copy_status(k, status);
        pthread_mutex_unlock(&c->mu);
        return CHAT_NEXT_END;
    }
}

chat_next chat_stream_next(chat_stream *st, int timeout_ms, ProtobufCMessage **message, chat_status *status) {
    uint8_t *bytes = NULL;
    size_t len = 0;
    *message = NULL;
    chat_next r = chat_stream_next_bytes(st, timeout_ms, &bytes, &len, status);
    if (r != CHAT_NEXT_MESSAGE) return r;
    *message = protobuf_c_message_unpack(st->method->response, NULL, len, bytes);
    free(bytes);
    if (*message == NULL) {
        chat_stream_cancel(st);
        if (status != NULL) {
            chat_status_clear(status);
            status_set(status, CHAT_INTERNAL, false, "a response is not a %s", st->method->response->name);
        }
        return CHAT_NEXT_END;
    }
    return CHAT_NEXT_MESSAGE;
}

size_t chat_stream_buffered(const chat_stream *st) {
    if (st == NULL || st->conn == NULL) return 0;
    pthread_mutex_lock(&st->conn->mu);
    size_t n = st->call->buffered;
    pthread_mutex_unlock(&st->conn->mu);
    return n;
}

void chat_stream_cancel(chat_stream *st) {
    if (st == NULL || st->conn == NULL) return;
    conn *c = st->conn;
    pthread_mutex_lock(&c->mu);
    call_cancel(c, st->call, CHAT_CANCELLED, "the call was cancelled");
    pthread_mutex_unlock(&c->mu);
}

void chat_stream_free(chat_stream *st) {
    if (st == NULL) return;
    if (st->conn != NULL) {
        chat_stream_cancel(st);
        call_unref(st->call);
        conn_unref(st->conn);
    }
    free(st->header);
    free(st->request);
    free(st);
}
