/*
 * libchat against a real chatd over real TLS (run by Tests/ChatIntegrationTests/CClientTests.swift, under
 * AddressSanitizer and LeakSanitizer there). The environment says where:
 *   LIBCHAT_TEST_ADDRESS   host:port of a chatd the harness started
 *   LIBCHAT_TEST_CA        the test CA (PEM); server.pem and server.key beside it serve a hostile TLS peer of the
 *                          tests' own
 *   LIBCHAT_TEST_TOKEN     a tenant admin's JWT
 *   LIBCHAT_TEST_LEARNER   a learner of that tenant
 *   LIBCHAT_TEST_CHATD     a file with the command line of another chatd on the same database, one argument per
 *                          line, without --listen: the tests start, drain, kill and restart instances of it
 * Prints one line per test ("ok - name" or "not ok - name: why") and "N passed, M failed"; exits 1 on a failure.
 */
#define _GNU_SOURCE
#include "chat.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/ssl.h>

extern char **environ;

static int passed, failed;
static char failure[1024];

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            snprintf(failure, sizeof failure, __VA_ARGS__);                                \
            return false;                                                                  \
        }                                                                                  \
    } while (0)

static void run(const char *name, bool (*test)(void)) {
    failure[0] = '\0';
    if (test()) {
        passed++;
        printf("ok - %s\n", name);
    } else {
        failed++;
        printf("not ok - %s: %s\n", name, failure);
    }
    fflush(stdout);
}

static const char *env(const char *name) {
    const char *v = getenv(name);
    if (v == NULL) {
        fprintf(stderr, "%s is not set\n", name);
        exit(2);
    }
    return v;
}

/* Every call of the tests has a deadline: a client that stalls fails a test instead of hanging the run. */
static const chat_call_options bounded = {.timeout_ms = 20000};

static char host[256];
static uint16_t port;
static const char *ca, *token, *learner;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static chat_client *client_for(uint16_t p, const char *jwt) {
    chat_options o;
    chat_options_init(&o);
    o.host = host;
    o.port = p;
    o.ca_file = ca;
    o.token = jwt;
    chat_status st = {0};
    chat_client *c = chat_client_new(&o, &st);
    if (c == NULL) fprintf(stderr, "chat_client_new: %s\n", st.message);
    chat_status_clear(&st);
    return c;
}

/* ---- helpers over the generated messages ---- */

static char *create_thread(chat_client *c, const char *title, chat_status *st) {
    Chat__V1__CreateThreadRequest req = CHAT__V1__CREATE_THREAD_REQUEST__INIT;
    req.learner_id = (char *)learner;
    req.title = (char *)title;
    ProtobufCMessage *out = NULL;
    if (chat_unary(c, &chat_method_thread_service_create_thread, &req.base, &bounded, &out, st) != CHAT_OK) return NULL;
    Chat__V1__CreateThreadResponse *resp = (Chat__V1__CreateThreadResponse *)out;
    char *id = strdup(resp->thread->id);
    protobuf_c_message_free_unpacked(out, NULL);
    return id;
}

static uint64_t send_message(chat_client *c, const char *thread, const char *body, chat_status *st) {
    Chat__V1__SendMessageRequest req = CHAT__V1__SEND_MESSAGE_REQUEST__INIT;
    req.thread_id = (char *)thread;
    req.body = (char *)body;
    ProtobufCMessage *out = NULL;
    if (chat_unary(c, &chat_method_message_service_send_message, &req.base, &bounded, &out, st) != CHAT_OK) return 0;
    uint64_t seq = ((Chat__V1__SendMessageResponse *)out)->message->seq;
    protobuf_c_message_free_unpacked(out, NULL);
    return seq;
}

static chat_stream *watch(chat_client *c, const char *thread, uint64_t after, chat_status *st) {
    Chat__V1__WatchThreadRequest req = CHAT__V1__WATCH_THREAD_REQUEST__INIT;
    req.thread_id = (char *)thread;
    req.after_seq = after;
    return chat_stream_open(c, &chat_method_live_service_watch_thread, &req.base, NULL, st);
}

/* The next message event's body on a WatchThread stream (head and heartbeats skipped); its seq in *seq. */
static chat_next next_body(chat_stream *s, int timeout_ms, char *body, size_t cap, uint64_t *seq, chat_status *st) {
    for (;;) {
        ProtobufCMessage *m = NULL;
        chat_next r = chat_stream_next(s, timeout_ms, &m, st);
        if (r != CHAT_NEXT_MESSAGE) return r;
        Chat__V1__WatchEvent *e = ((Chat__V1__WatchThreadResponse *)m)->event;
        bool is_message = e != NULL && e->event_case == CHAT__V1__WATCH_EVENT__EVENT_MESSAGE;
        if (is_message) {
            snprintf(body, cap, "%s", e->message->message->body);
            *seq = e->seq;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (is_message) return CHAT_NEXT_MESSAGE;
    }
}

/* ---- chatd instances of the tests' own ---- */

typedef struct instance {
    pid_t pid;
    uint16_t port;
    char log[128];
} instance;

static char **chatd_argv(const char *extra[], size_t n_extra, uint16_t p) {
    FILE *f = fopen(env("LIBCHAT_TEST_CHATD"), "r");
    if (f == NULL) return NULL;
    char **argv = calloc(256, sizeof *argv);
    size_t n = 0;
    char line[4096];
    while (n < 240 && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (line[0]) argv[n++] = strdup(line);
    }
    fclose(f);
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", p);
    argv[n++] = strdup("--listen");
    argv[n++] = strdup(listen);
    argv[n++] = strdup("--admin-listen");
    argv[n++] = strdup("127.0.0.1:0");
    for (size_t i = 0; i < n_extra; i++) argv[n++] = strdup(extra[i]);
    return argv;
}

static uint16_t free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static bool listening(uint16_t p) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(p);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static bool instance_start(instance *in, const char *extra[], size_t n_extra) {
    if (in->port == 0) in->port = free_port();
    snprintf(in->log, sizeof in->log, "/tmp/libchat-test-chatd-%d-%u.log", (int)getpid(), in->port);
    char **argv = chatd_argv(extra, n_extra, in->port);
    if (argv == NULL) return false;
    pid_t pid = fork();
    if (pid == 0) {
        int log = open(in->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(log, 1);
        dup2(log, 2);
        close_range(3, ~0U, 0);
        /* chatd refuses CHATD_* variables it does not know. */
        for (char **e = environ; *e;) {
            if (strncmp(*e, "CHATD_", 6) == 0) {
                char name[256];
                snprintf(name, sizeof name, "%.*s", (int)(strcspn(*e, "=")), *e);
                unsetenv(name);
            } else {
                e++;
            }
        }
        execv(argv[0], argv);
        _exit(127);
    }
    for (size_t i = 0; argv[i]; i++) free(argv[i]);
    free(argv);
    in->pid = pid;
    double until = now_s() + 60;
    while (now_s() < until) {
        if (listening(in->port)) return true;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return false;
        sleep_ms(50);
    }
    return false;
}

static int instance_stop(instance *in, int sig) {
    kill(in->pid, sig);
    int status = 0;
    waitpid(in->pid, &status, 0);
    return status;
}

/* ---- the tests ---- */

static bool test_unary_calls(void) {
    chat_client *c = client_for(port, token);
    CHECK(c != NULL, "no client");
    chat_status st = {0};
    CHECK(chat_client_connect(c, &st) == CHAT_OK, "connect: %s", st.message);
    Chat__V1__HealthCheckRequest hreq = CHAT__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    CHECK(chat_unary(c, &chat_method_health_service_check, &hreq.base, NULL, &out, &st) == CHAT_OK, "health: %s",
          st.message);
    CHECK(((Chat__V1__HealthCheckResponse *)out)->status == CHAT__V1__SERVING_STATUS__SERVING_STATUS_SERVING,
          "not serving");
    protobuf_c_message_free_unpacked(out, NULL);

    char *thread = create_thread(c, "from C", &st);
    CHECK(thread != NULL, "create: %s %s", chat_code_name(st.code), st.message);
    uint64_t seq = send_message(c, thread, "hello from libchat", &st);
    CHECK(seq == 1, "send: seq %llu %s", (unsigned long long)seq, st.message);

    Chat__V1__GetMessageRequest g = CHAT__V1__GET_MESSAGE_REQUEST__INIT;
    g.thread_id = thread;
    g.seq = 1;
    CHECK(chat_unary(c, &chat_method_message_service_get_message, &g.base, NULL, &out, &st) == CHAT_OK, "get: %s",
          st.message);
    CHECK(strcmp(((Chat__V1__GetMessageResponse *)out)->message->body, "hello from libchat") == 0, "body differs");
    protobuf_c_message_free_unpacked(out, NULL);

    /* The bytes API: a binding's own protobuf. */
    Chat__V1__GetThreadRequest t = CHAT__V1__GET_THREAD_REQUEST__INIT;
    t.thread_id = thread;
    uint8_t req[128];
    size_t len = chat__v1__get_thread_request__pack(&t, req);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    CHECK(chat_unary_bytes(c, &chat_method_thread_service_get_thread, req, len, NULL, &resp, &resp_len, &st) ==
              CHAT_OK, "get thread (bytes): %s", st.message);
    Chat__V1__GetThreadResponse *gt = chat__v1__get_thread_response__unpack(NULL, resp_len, resp);
    CHECK(gt != NULL && strcmp(gt->thread->title, "from C") == 0, "thread bytes do not decode");
    chat__v1__get_thread_response__free_unpacked(gt, NULL);
    free(resp);

    /* The generated table knows every method. */
    bool found = false;
    for (size_t i = 0; i < CHAT_METHOD_COUNT; i++)
        if (strcmp(chat_methods[i]->path, "/chat.v1.MessageService/SendMessage") == 0 && !chat_methods[i]->idempotent)
            found = true;
    CHECK(found, "SendMessage missing from chat_methods, or not a mutation");
    CHECK(chat_client_connections(c) == 1, "%llu connections", (unsigned long long)chat_client_connections(c));
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    return true;
}

static bool test_errors_with_details(void) {
    chat_client *c = client_for(port, token);
    CHECK(c != NULL, "no client");
    chat_status st = {0};
    char *thread = create_thread(c, "errors", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    /* An empty body: INVALID_ARGUMENT naming the field. */
    CHECK(send_message(c, thread, "", &st) == 0 && st.code == CHAT_INVALID_ARGUMENT, "empty body: %s %s",
          chat_code_name(st.code), st.message);
    const Chat__V1__FieldViolation *v = chat_status_field_violation(&st, 0);
    CHECK(v != NULL && strcmp(v->field, "body") == 0, "no field violation for body");
    CHECK(chat_status_field_violation(&st, 1) == NULL, "a second violation");
    CHECK(st.details != NULL && strlen(st.message) > 0, "no details or message");
    /* A thread that does not exist. */
    Chat__V1__GetThreadRequest g = CHAT__V1__GET_THREAD_REQUEST__INIT;
    g.thread_id = "00000000-0000-4000-8000-000000000000";
    ProtobufCMessage *out = NULL;
    CHECK(chat_unary(c, &chat_method_thread_service_get_thread, &g.base, NULL, &out, &st) == CHAT_NOT_FOUND,
          "missing thread: %s", chat_code_name(st.code));
    CHECK(out == NULL, "a response with an error");
    /* A token that is not one: UNAUTHENTICATED, not processed, and not retried. */
    chat_client *bad = client_for(port, "not-a-jwt");
    CHECK(chat_unary(bad, &chat_method_thread_service_get_thread, &g.base, NULL, &out, &st) == CHAT_UNAUTHENTICATED,
          "bad token: %s", chat_code_name(st.code));
    CHECK(st.not_processed, "a refused call not marked not_processed");
    CHECK(chat_client_retries(bad) == 0, "an UNAUTHENTICATED call was retried");
    chat_client_free(bad);
    /* Bad input of the caller's: said locally, nothing sent. */
    chat_metadata md = {"Bad Key", (const uint8_t *)"x", 1};
    chat_call_options o = {0};
    o.metadata = &md;
    o.metadata_count = 1;
    CHECK(chat_unary(c, &chat_method_thread_service_get_thread, &g.base, &o, &out, &st) == CHAT_INVALID_ARGUMENT,
          "bad metadata key: %s", chat_code_name(st.code));
    Chat__V1__HealthCheckRequest h = CHAT__V1__HEALTH_CHECK_REQUEST__INIT;
    CHECK(chat_unary(c, &chat_method_thread_service_get_thread, &h.base, NULL, &out, &st) == CHAT_INVALID_ARGUMENT,
          "a request of another method: %s", chat_code_name(st.code));
    CHECK(chat_stream_open(c, &chat_method_thread_service_get_thread, &g.base, NULL, &st) == NULL &&
              st.code == CHAT_INVALID_ARGUMENT, "a unary method as a stream");
    /* A server that is not there: UNAVAILABLE, not processed. */
    chat_client *none = client_for(free_port(), token);
    CHECK(chat_unary(none, &chat_method_health_service_check, &h.base, NULL, &out, &st) == CHAT_UNAVAILABLE,
          "no server: %s", chat_code_name(st.code));
    CHECK(st.not_processed && strstr(st.message, "connect") != NULL, "no server: %s", st.message);
    chat_client_free(none);
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    return true;
}

static bool test_deadline_and_cancel(void) {
    chat_client *c = client_for(port, token);
    chat_status st = {0};
    char *thread = create_thread(c, "deadlines", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    /* A stream with a deadline ends DEADLINE_EXCEEDED (the server's clock or ours). */
    Chat__V1__WatchThreadRequest w = CHAT__V1__WATCH_THREAD_REQUEST__INIT;
    w.thread_id = thread;
    chat_call_options o = {0};
    o.timeout_ms = 300;
    chat_stream *s = chat_stream_open(c, &chat_method_live_service_watch_thread, &w.base, &o, &st);
    CHECK(s != NULL, "open: %s", st.message);
    double start = now_s();
    ProtobufCMessage *m = NULL;
    chat_next r;
    while ((r = chat_stream_next(s, 5000, &m, &st)) == CHAT_NEXT_MESSAGE) protobuf_c_message_free_unpacked(m, NULL);
    CHECK(r == CHAT_NEXT_END && st.code == CHAT_DEADLINE_EXCEEDED, "deadline: %d %s", r, chat_code_name(st.code));
    CHECK(now_s() - start < 4, "the deadline took %.1f s", now_s() - start);
    /* After the end, the same end again. */
    CHECK(chat_stream_next(s, 0, &m, &st) == CHAT_NEXT_END && st.code == CHAT_DEADLINE_EXCEEDED, "end not kept");
    chat_stream_free(s);
    /* A quiet stream times out without ending; cancel ends it CANCELLED. */
    s = watch(c, thread, 0, &st);
    CHECK(s != NULL, "open: %s", st.message);
    CHECK(chat_stream_next(s, 5000, &m, &st) == CHAT_NEXT_MESSAGE, "no head");
    protobuf_c_message_free_unpacked(m, NULL);
    CHECK(chat_stream_next(s, 100, &m, &st) == CHAT_NEXT_TIMEOUT, "a quiet stream did not time out");
    chat_stream_cancel(s);
    CHECK(chat_stream_next(s, 1000, &m, &st) == CHAT_NEXT_END && st.code == CHAT_CANCELLED, "cancel: %s",
          chat_code_name(st.code));
    chat_stream_free(s);
    /* Freeing an open stream cancels it; the connection goes on. */
    s = watch(c, thread, 0, &st);
    chat_stream_free(s);
    CHECK(send_message(c, thread, "after the cancels", &st) == 1, "send after cancels: %s", st.message);
    CHECK(chat_client_connections(c) == 1, "cancels cost a connection");
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    return true;
}

/* A slow consumer: the client holds at most the stream window; nothing is lost. */
static bool test_slow_consumer(void) {
    chat_client *c = client_for(port, token);
    chat_client *sender = client_for(port, token);
    chat_status st = {0};
    char *thread = create_thread(c, "slow consumer", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    chat_stream *s = watch(c, thread, 0, &st);
    CHECK(s != NULL, "open: %s", st.message);
    char body[4001];
    memset(body, 'x', 4000);
    body[4000] = '\0';
    enum { N = 300 }; /* 1.2 MB of events against a 256 KiB window */
    for (int i = 0; i < N; i++) {
        snprintf(body, 12, "%08d", i);
        body[8] = 'x';
        CHECK(send_message(sender, thread, body, &st) == (uint64_t)i + 1, "send %d: %s", i, st.message);
    }
    sleep_ms(300);
    size_t buffered = chat_stream_buffered(s);
    CHECK(buffered <= 256 * 1024 + 8192, "the client buffered %zu bytes for one stream", buffered);
    CHECK(buffered > 0, "nothing buffered");
    char got[4100];
    uint64_t seq = 0;
    for (int i = 0; i < N; i++) {
        chat_next r = next_body(s, 10000, got, sizeof got, &seq, &st);
        CHECK(r == CHAT_NEXT_MESSAGE, "event %d: %d %s", i, r, st.message);
        char want[9];
        snprintf(want, sizeof want, "%08d", i);
        CHECK(strncmp(got, want, 8) == 0 && strlen(got) == 4000, "event %d out of order: %.8s", i, got);
        CHECK(chat_stream_buffered(s) <= 256 * 1024 + 8192, "buffered %zu", chat_stream_buffered(s));
    }
    chat_stream_free(s);
    free(thread);
    chat_status_clear(&st);
    chat_client_free(sender);
    chat_client_free(c);
    return true;
}

/* A response larger than the stream window (the client credits it as it arrives). */
static bool test_large_response(void) {
    chat_client *c = client_for(port, token);
    chat_status st = {0};
    char *thread = create_thread(c, "large", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    char body[4097];
    memset(body, 'y', 4096);
    body[4096] = '\0';
    for (int i = 0; i < 120; i++) CHECK(send_message(c, thread, body, &st) > 0, "send: %s", st.message);
    Chat__V1__ListMessagesRequest l = CHAT__V1__LIST_MESSAGES_REQUEST__INIT;
    Chat__V1__PageRequest page = CHAT__V1__PAGE_REQUEST__INIT;
    page.page_size = 200;
    l.thread_id = thread;
    l.page = &page;
    ProtobufCMessage *out = NULL;
    CHECK(chat_unary(c, &chat_method_message_service_list_messages, &l.base, &bounded, &out, &st) == CHAT_OK, "list: %s",
          st.message);
    Chat__V1__ListMessagesResponse *r = (Chat__V1__ListMessagesResponse *)out;
    CHECK(r->n_messages == 120, "%zu messages", r->n_messages);
    size_t size = protobuf_c_message_get_packed_size(out);
    CHECK(size > 256 * 1024, "the response is only %zu bytes", size);
    protobuf_c_message_free_unpacked(out, NULL);
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    return true;
}

/* Several threads share one connection. */
typedef struct worker {
    chat_client *client;
    const char *thread;
    int index, ok;
    char error[256];
} worker;

static void *work(void *arg) {
    worker *w = arg;
    chat_status st = {0};
    for (int i = 0; i < 40; i++) {
        char body[64];
        snprintf(body, sizeof body, "worker %d message %d", w->index, i);
        if (send_message(w->client, w->thread, body, &st) > 0) {
            w->ok++;
        } else {
            snprintf(w->error, sizeof w->error, "%s %s", chat_code_name(st.code), st.message);
        }
        Chat__V1__HealthCheckRequest h = CHAT__V1__HEALTH_CHECK_REQUEST__INIT;
        ProtobufCMessage *out = NULL;
        if (chat_unary(w->client, &chat_method_health_service_check, &h.base, NULL, &out, &st) == CHAT_OK) {
            protobuf_c_message_free_unpacked(out, NULL);
            w->ok++;
        }
    }
    chat_status_clear(&st);
    return NULL;
}

static bool test_threads_share_a_connection(void) {
    chat_client *c = client_for(port, token);
    chat_status st = {0};
    char *thread = create_thread(c, "threads", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    chat_stream *s = watch(c, thread, 0, &st);
    CHECK(s != NULL, "open: %s", st.message);
    enum { T = 8 };
    pthread_t ids[T];
    worker ws[T];
    for (int i = 0; i < T; i++) {
        ws[i] = (worker){c, thread, i, 0, ""};
        pthread_create(&ids[i], NULL, work, &ws[i]);
    }
    /* The stream reads while the workers write, on the same connection. */
    int seen[T] = {0};
    char got[256];
    uint64_t seq = 0, last = 0;
    for (int n = 0; n < T * 40; n++) {
        chat_next r = next_body(s, 20000, got, sizeof got, &seq, &st);
        CHECK(r == CHAT_NEXT_MESSAGE, "event %d: %s", n, st.message);
        CHECK(seq == last + 1, "seq %llu after %llu", (unsigned long long)seq, (unsigned long long)last);
        last = seq;
        int wi = -1, mi = -1;
        CHECK(sscanf(got, "worker %d message %d", &wi, &mi) == 2 && wi >= 0 && wi < T, "body %s", got);
        CHECK(mi == seen[wi], "worker %d: message %d after %d", wi, mi, seen[wi] - 1);
        seen[wi]++;
    }
    for (int i = 0; i < T; i++) {
        pthread_join(ids[i], NULL);
        CHECK(ws[i].ok == 80, "worker %d: %d of 80 (%s)", i, ws[i].ok, ws[i].error);
    }
    CHECK(chat_client_connections(c) == 1, "%llu connections", (unsigned long long)chat_client_connections(c));
    chat_stream_free(s);
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    return true;
}

/* The token comes from a callback, once per attempt. */
static int token_calls;
static int token_cb(void *ctx, char *buf, size_t cap) {
    token_calls++;
    return snprintf(buf, cap, "%s", (const char *)ctx);
}

static bool test_token_callback(void) {
    chat_options o;
    chat_options_init(&o);
    o.host = host;
    o.port = port;
    o.ca_file = ca;
    o.token_fn = token_cb;
    o.token_context = (void *)token;
    chat_status st = {0};
    chat_client *c = chat_client_new(&o, &st);
    CHECK(c != NULL, "client: %s", st.message);
    char *thread = create_thread(c, "token callback", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    CHECK(token_calls == 1, "%d token calls", token_calls);
    free(thread);
    chat_client_free(c);
    /* A missing CA file is an error value. */
    o.ca_file = "/nonexistent/ca.pem";
    CHECK(chat_client_new(&o, &st) == NULL && st.code == CHAT_INVALID_ARGUMENT, "a missing CA: %s",
          chat_code_name(st.code));
    chat_status_clear(&st);
    return true;
}

/* A chatd of the test's own: drained (SIGTERM) and killed (SIGKILL) mid-stream, restarted on the same port; the
 * stream resumes from the last seq it saw, every message once; the client reconnects by itself. */
static bool test_restart_mid_stream(void) {
    instance in = {0};
    CHECK(instance_start(&in, NULL, 0), "chatd did not start (%s)", in.log);
    chat_client *c = client_for(in.port, token);
    chat_status st = {0};
    char *thread = create_thread(c, "restarts", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    chat_stream *s = watch(c, thread, 0, &st);
    CHECK(s != NULL, "open: %s", st.message);
    uint64_t last = 0, seq = 0;
    int sent = 0;
    char got[64];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 10; i++) {
            char body[32];
            snprintf(body, sizeof body, "m%d", sent + 1);
            CHECK(send_message(c, thread, body, &st) == (uint64_t)sent + 1, "send %d: %s %s", sent + 1,
                  chat_code_name(st.code), st.message);
            sent++;
        }
        while (last < (uint64_t)sent) {
            CHECK(next_body(s, 10000, got, sizeof got, &seq, &st) == CHAT_NEXT_MESSAGE, "event: %s", st.message);
            char want[32];
            snprintf(want, sizeof want, "m%llu", (unsigned long long)last + 1);
            CHECK(seq == last + 1 && strcmp(got, want) == 0, "got %s at %llu after %llu", got,
                  (unsigned long long)seq, (unsigned long long)last);
            last = seq;
        }
        if (round == 2) break;
        /* Round 0: a drain; round 1: kill -9. */
        instance_stop(&in, round == 0 ? SIGTERM : SIGKILL);
        chat_next r = next_body(s, 30000, got, sizeof got, &seq, &st);
        CHECK(r == CHAT_NEXT_END && st.code == CHAT_UNAVAILABLE, "the stream did not end UNAVAILABLE: %d %s", r,
              chat_code_name(st.code));
        if (round == 0)
            CHECK(st.has_resume_info && st.resume_after_seq == last, "a drain without ResumeInfo at %llu (%llu)",
                  (unsigned long long)last, (unsigned long long)st.resume_after_seq);
        chat_stream_free(s);
        CHECK(instance_start(&in, NULL, 0), "chatd did not restart (%s)", in.log);
        s = watch(c, thread, last, &st);
        CHECK(s != NULL, "reopen: %s", st.message);
    }
    /* Nothing more than what was sent: the stream is quiet now. */
    CHECK(next_body(s, 300, got, sizeof got, &seq, &st) == CHAT_NEXT_TIMEOUT, "an extra event %s", got);
    CHECK(chat_client_connections(c) == 3, "%llu connections for 3 instances",
          (unsigned long long)chat_client_connections(c));
    chat_stream_free(s);
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    instance_stop(&in, SIGTERM);
    unlink(in.log);
    return true;
}

/* A rate limit refuses calls not processed with a RetryInfo: the client waits and sends them again. */
typedef struct limited_sender {
    chat_client *client;
    const char *thread;
    int index, ok;
} limited_sender;

static void *send_limited(void *arg) {
    limited_sender *w = arg;
    chat_status st = {0};
    for (int i = 0; i < 10; i++) {
        char body[32];
        snprintf(body, sizeof body, "limited %d-%d", w->index, i);
        if (send_message(w->client, w->thread, body, &st) > 0) w->ok++;
    }
    chat_status_clear(&st);
    return NULL;
}

static bool test_retries_not_processed(void) {
    instance in = {0};
    const char *limits[] = {"--rate-per-user", "5"};
    CHECK(instance_start(&in, limits, 2), "chatd did not start (%s)", in.log);
    chat_options o;
    chat_options_init(&o);
    o.host = host;
    o.port = in.port;
    o.ca_file = ca;
    o.token = token;
    o.max_attempts = 50;
    chat_status st = {0};
    chat_client *c = chat_client_new(&o, &st);
    char *thread = create_thread(c, "retries", &st);
    CHECK(thread != NULL, "create: %s", st.message);
    /* 40 sends from 4 threads at once against 5 a second (burst 10): most are refused at first, then sent again
     * after their RetryInfo; each has one effect. */
    enum { T = 4 };
    pthread_t ids[T];
    limited_sender ws[T];
    for (int i = 0; i < T; i++) {
        ws[i] = (limited_sender){c, thread, i, 0};
        pthread_create(&ids[i], NULL, send_limited, &ws[i]);
    }
    for (int i = 0; i < T; i++) pthread_join(ids[i], NULL);
    for (int i = 0; i < T; i++) CHECK(ws[i].ok == 10, "sender %d: %d of 10 sent", i, ws[i].ok);
    CHECK(chat_client_retries(c) > 0, "no retries under a rate limit");
    Chat__V1__ListMessagesRequest l = CHAT__V1__LIST_MESSAGES_REQUEST__INIT;
    Chat__V1__PageRequest page = CHAT__V1__PAGE_REQUEST__INIT;
    page.page_size = 100;
    l.thread_id = thread;
    l.page = &page;
    ProtobufCMessage *out = NULL;
    CHECK(chat_unary(c, &chat_method_message_service_list_messages, &l.base, &bounded, &out, &st) == CHAT_OK,
          "list: %s", st.message);
    size_t listed = ((Chat__V1__ListMessagesResponse *)out)->n_messages;
    protobuf_c_message_free_unpacked(out, NULL);
    CHECK(listed == 40, "%zu messages stored for 40 sends", listed);
    /* Without retries, the refusal itself: RESOURCE_EXHAUSTED, not processed, with RetryInfo. */
    o.max_attempts = 1;
    chat_client *once = chat_client_new(&o, &st);
    bool refused = false;
    for (int i = 0; i < 100 && !refused; i++) {
        if (send_message(once, thread, "limited", &st) == 0) {
            CHECK(st.code == CHAT_RESOURCE_EXHAUSTED && st.not_processed && st.retry_after_ms >= 0,
                  "refusal: %s %d %lld", chat_code_name(st.code), st.not_processed, (long long)st.retry_after_ms);
            refused = true;
        }
    }
    CHECK(refused, "100 sends at once were never refused");
    CHECK(chat_client_retries(once) == 0, "retried with max_attempts 1");
    chat_client_free(once);
    free(thread);
    chat_status_clear(&st);
    chat_client_free(c);
    instance_stop(&in, SIGTERM);
    unlink(in.log);
    return true;
}


/* A hostile peer: completes the TLS handshake, offers the largest windows, reads none of a 12 MiB request, and
 * resets the connection while the client waits to write the rest. The client's first read after the reset takes
 * the error; its next write would raise SIGPIPE, whose default action ends the process. This program does not
 * ignore SIGPIPE, so the test passes only if the library keeps it from being raised. */
typedef struct rogue {
    int listen_fd;
    uint16_t port;
    SSL_CTX *ctx;
    bool ping_flood; /* instead of waiting: PINGs without end, reading none of the answers */
} rogue;

static int rogue_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                      unsigned int inlen, void *arg) {
    (void)ssl; (void)in; (void)inlen; (void)arg;
    *out = (const unsigned char *)"chat/1";
    *outlen = 6;
    return SSL_TLSEXT_ERR_OK;
}

static void *rogue_main(void *arg) {
    rogue *r = arg;
    /* The peer's own writes to a connection the client closed must not end the program: only the library's are
     * under test. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    int fd = accept(r->listen_fd, NULL, NULL);
    if (fd < 0) return NULL;
    SSL *ssl = SSL_new(r->ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) == 1) {
        /* SETTINGS: INITIAL_WINDOW_SIZE, CONNECTION_WINDOW and MAX_MESSAGE_SIZE as large as they go. */
        uint8_t f[9 + 18] = {0, 0, 18, 7, 0, 0, 0, 0, 0,
                             0, 2, 0x7f, 0xff, 0xff, 0xff, 0, 7, 0x7f, 0xff, 0xff, 0xff, 0, 4, 0x01, 0, 0, 0};
        SSL_write(ssl, f, sizeof f);
        if (r->ping_flood) {
            /* First the call: read the client's frames until one on a stream (its HEADERS), so that the flood meets
             * a call in flight whatever the timing. */
            uint8_t in[65536];
            size_t have = 0;
            bool call = false;
            while (!call) {
                int n = SSL_read(ssl, in + have, (int)(sizeof in - have));
                if (n <= 0) break;
                have += (size_t)n;
                size_t at = 8; /* after the preface (docs/PROTOCOL.md 3) */
                while (!call && at + 9 <= have) {
                    size_t length = (size_t)in[at] << 16 | (size_t)in[at + 1] << 8 | in[at + 2];
                    uint32_t stream = (uint32_t)in[at + 5] << 24 | (uint32_t)in[at + 6] << 16 |
                                      (uint32_t)in[at + 7] << 8 | in[at + 8];
                    if (at + 9 + length > have) break;
                    if ((stream & 0x7fffffff) != 0) call = true;
                    at += 9 + length;
                }
            }
            /* 1,000 PINGs a write, until the client gives up (its answers fill the socket buffers unread). */
            enum { PINGS = 1000 };
            static uint8_t pings[PINGS * 17];
            for (int i = 0; i < PINGS; i++) {
                uint8_t *q = pings + i * 17;
                memset(q, 0, 17);
                q[2] = 8;
                q[3] = 5;
            }
            for (int sent = 0; sent < 2000 && SSL_write(ssl, pings, sizeof pings) > 0; sent++) {
            }
        } else {
            /* Read nothing: the client's request fills the socket buffers and its writes wait for room. */
            struct timespec pause = {0, 500 * 1000000L};
            nanosleep(&pause, NULL);
        }
    }
    struct linger reset = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    close(fd);
    SSL_free(ssl);
    return NULL;
}

/* Starts the rogue peer `r` (its mode set) on a loopback port of the kernel's choosing, in a thread of its own, and
 * a client for it that makes one attempt (the peer takes one connection). */
static bool rogue_start(rogue *r, pthread_t *thread, chat_client **client) {
    char cert[512], key[512];
    int dir = (int)(strrchr(ca, '/') ? strrchr(ca, '/') - ca : 1);
    snprintf(cert, sizeof cert, "%.*s/server.pem", dir, ca);
    snprintf(key, sizeof key, "%.*s/server.key", dir, ca);
    r->ctx = SSL_CTX_new(TLS_server_method());
    CHECK(SSL_CTX_use_certificate_chain_file(r->ctx, cert) == 1 &&
              SSL_CTX_use_PrivateKey_file(r->ctx, key, SSL_FILETYPE_PEM) == 1, "the test's server certificate");
    SSL_CTX_set_alpn_select_cb(r->ctx, rogue_alpn, NULL);
    r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(r->listen_fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(r->listen_fd, 1) == 0 &&
              getsockname(r->listen_fd, (struct sockaddr *)&a, &len) == 0, "listen");
    r->port = ntohs(a.sin_port);
    pthread_create(thread, NULL, rogue_main, r);
    chat_options o;
    chat_options_init(&o);
    o.host = host;
    o.port = r->port;
    o.ca_file = ca;
    o.token = token;
    o.max_attempts = 1;
    chat_status st = {0};
    *client = chat_client_new(&o, &st);
    CHECK(*client != NULL, "client: %s", st.message);
    return true;
}

static bool test_reset_mid_write(void) {
    rogue r = {0};
    pthread_t thread;
    chat_client *c = NULL;
    if (!rogue_start(&r, &thread, &c)) return false;
    chat_status st = {0};
    /* Connected, with the peer's SETTINGS (a MAX_MESSAGE_SIZE of 16 MiB) read before the call. */
    CHECK(chat_client_connect(c, &st) == CHAT_OK, "connect: %s", st.message);
    sleep_ms(100);
    enum { SIZE = 12 * 1024 * 1024 };
    uint8_t *request = calloc(1, SIZE);
    uint8_t *response = NULL;
    size_t response_len = 0;
    chat_call_options once = {.timeout_ms = 20000};
    chat_code code = chat_unary_bytes(c, &chat_method_health_service_check, request, SIZE, &once, &response,
                                      &response_len, &st);
    free(request);
    free(response);
    pthread_join(thread, NULL);
    close(r.listen_fd);
    SSL_CTX_free(r.ctx);
    CHECK(code == CHAT_UNAVAILABLE, "a reset mid-request: %s %s", chat_code_name(code), st.message);
    chat_status_clear(&st);
    chat_client_free(c);
    return true;
}

/* A hostile peer that floods PINGs and reads none of the answers: the library ends the connection (GOAWAY
 * ENHANCE_YOUR_CALM) once 4,096 answers wait unsent, instead of queueing them without end. */
static bool test_ping_flood(void) {
    rogue r = {0};
    r.ping_flood = true;
    pthread_t thread;
    chat_client *c = NULL;
    if (!rogue_start(&r, &thread, &c)) return false;
    chat_status st = {0};
    CHECK(chat_client_connect(c, &st) == CHAT_OK, "connect: %s", st.message);
    /* A call waits on the flooded connection: it ends with the connection, long before its deadline. */
    uint8_t *response = NULL;
    size_t response_len = 0;
    chat_call_options once = {.timeout_ms = 30000};
    chat_code code = chat_unary_bytes(c, &chat_method_health_service_check, NULL, 0, &once, &response,
                                      &response_len, &st);
    free(response);
    bool flooded = code == CHAT_UNAVAILABLE && st.message != NULL && strstr(st.message, "PINGs faster") != NULL;
    char seen[300];
    snprintf(seen, sizeof seen, "%s %s", chat_code_name(code), st.message ? st.message : "");
    chat_status_clear(&st);
    chat_client_free(c);
    pthread_join(thread, NULL);
    close(r.listen_fd);
    SSL_CTX_free(r.ctx);
    CHECK(flooded, "a PING flood: %s", seen);
    return true;
}

int main(void) {
    /* No SIGPIPE handling here: the library keeps writes to closed connections from raising it. */
    const char *address = env("LIBCHAT_TEST_ADDRESS");
    const char *colon = strrchr(address, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    port = (uint16_t)atoi(colon + 1);
    ca = env("LIBCHAT_TEST_CA");
    token = env("LIBCHAT_TEST_TOKEN");
    learner = env("LIBCHAT_TEST_LEARNER");
    run("unary calls, the bytes API, the method table", test_unary_calls);
    run("errors with details, refusals, local validation", test_errors_with_details);
    run("deadlines, timeouts, cancel", test_deadline_and_cancel);
    run("a slow consumer holds one window, loses nothing", test_slow_consumer);
    run("a response larger than the stream window", test_large_response);
    run("eight threads on one connection beside a stream", test_threads_share_a_connection);
    run("a token callback", test_token_callback);
    run("drain and kill -9 mid-stream: reconnect and resume, every message once", test_restart_mid_stream);
    run("rate-limited calls retried after RetryInfo, one effect each", test_retries_not_processed);
    run("a peer that resets the connection mid-request: UNAVAILABLE, and no SIGPIPE", test_reset_mid_write);
    run("a peer that floods PINGs and reads no answer: the connection ends, the queue stays bounded", test_ping_flood);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
