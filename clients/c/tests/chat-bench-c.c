/*
 * libchat's side of `scripts/bench --c`: unary Health.Check calls per second from N threads on one connection, or
 * messages per second from N WatchThread streams replaying a long thread (reopened at its end). Prints one JSON
 * line: {"client": "c", "mode", "concurrency", "per_second", "p50_ms", "p99_ms", "round"}.
 *
 *   chat-bench-c --address H:P --ca CA --token JWT --mode unary|stream --concurrency N --duration S
 *                [--thread ID] [--round R]
 */
#include "chat.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static chat_client *client;
static const char *mode = "unary", *thread_id;
static atomic_bool measuring, done;
static atomic_long counted, failures;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct worker {
    pthread_t id;
    double *latencies;
    size_t n, cap;
} worker;

static void record(worker *w, double seconds) {
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 65536;
        w->latencies = realloc(w->latencies, w->cap * sizeof *w->latencies);
    }
    w->latencies[w->n++] = seconds;
}

static void *unary_worker(void *arg) {
    worker *w = arg;
    Chat__V1__HealthCheckRequest req = CHAT__V1__HEALTH_CHECK_REQUEST__INIT;
    uint8_t *resp = NULL;
    size_t len = 0;
    chat_status st = {0};
    while (!atomic_load(&done)) {
        double start = now_s();
        uint8_t packed[16];
        size_t plen = chat__v1__health_check_request__pack(&req, packed);
        chat_code code = chat_unary_bytes(client, &chat_method_health_service_check, packed, plen, NULL, &resp, &len,
                                          &st);
        free(resp);
        if (code != CHAT_OK) { atomic_fetch_add(&failures, 1); continue; }
        if (atomic_load(&measuring)) {
            atomic_fetch_add(&counted, 1);
            record(w, now_s() - start);
        }
    }
    chat_status_clear(&st);
    return NULL;
}

static void *stream_worker(void *arg) {
    (void)arg;
    chat_status st = {0};
    while (!atomic_load(&done)) {
        Chat__V1__WatchThreadRequest req = CHAT__V1__WATCH_THREAD_REQUEST__INIT;
        req.thread_id = (char *)thread_id;
        chat_stream *s = chat_stream_open(client, &chat_method_live_service_watch_thread, &req.base, NULL, &st);
        if (s == NULL) { atomic_fetch_add(&failures, 1); continue; }
        uint64_t head = 0;
        for (;;) {
            uint8_t *bytes = NULL;
            size_t len = 0;
            if (chat_stream_next_bytes(s, 10000, &bytes, &len, &st) != CHAT_NEXT_MESSAGE) break;
            Chat__V1__WatchThreadResponse *r = chat__v1__watch_thread_response__unpack(NULL, len, bytes);
            free(bytes);
            if (r == NULL) break;
            Chat__V1__WatchEvent *e = r->event;
            bool end = false;
            if (e && e->event_case == CHAT__V1__WATCH_EVENT__EVENT_HEAD) head = e->head->head_seq;
            else if (e && e->event_case == CHAT__V1__WATCH_EVENT__EVENT_MESSAGE) {
                if (atomic_load(&measuring)) atomic_fetch_add(&counted, 1);
                end = e->seq >= head;
            }
            chat__v1__watch_thread_response__free_unpacked(r, NULL);
            if (end || atomic_load(&done)) break;
        }
        chat_stream_free(s);
    }
    chat_status_clear(&st);
    return NULL;
}

static int compare(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *address = NULL, *ca = NULL, *token = NULL;
    int concurrency = 1, round = 0;
    double duration = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--address")) address = argv[i + 1];
        else if (!strcmp(argv[i], "--ca")) ca = argv[i + 1];
        else if (!strcmp(argv[i], "--token")) token = argv[i + 1];
        else if (!strcmp(argv[i], "--mode")) mode = argv[i + 1];
        else if (!strcmp(argv[i], "--concurrency")) concurrency = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--thread")) thread_id = argv[i + 1];
        else if (!strcmp(argv[i], "--round")) round = atoi(argv[i + 1]);
    }
    bool stream = strcmp(mode, "stream") == 0;
    if (address == NULL || strrchr(address, ':') == NULL || concurrency < 1 || (stream && thread_id == NULL)) {
        fprintf(stderr, "usage: chat-bench-c --address H:P --ca CA --token JWT --mode unary|stream "
                        "--concurrency N --duration S [--thread ID] [--round R]\n");
        return 2;
    }
    char host[256];
    const char *colon = strrchr(address, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
    chat_options o;
    chat_options_init(&o);
    o.host = host;
    o.port = (uint16_t)atoi(colon + 1);
    o.ca_file = ca;
    o.token = token;
    chat_status st = {0};
    client = chat_client_new(&o, &st);
    if (client == NULL || chat_client_connect(client, &st) != CHAT_OK) {
        fprintf(stderr, "chat-bench-c: %s\n", st.message);
        return 1;
    }
    worker *ws = calloc((size_t)concurrency, sizeof *ws);
    for (int i = 0; i < concurrency; i++)
        pthread_create(&ws[i].id, NULL, stream ? stream_worker : unary_worker, &ws[i]);
    struct timespec warm = {1, 0};
    nanosleep(&warm, NULL);
    double start = now_s();
    atomic_store(&measuring, true);
    struct timespec span = {(time_t)duration, (long)((duration - (double)(time_t)duration) * 1e9)};
    nanosleep(&span, NULL);
    atomic_store(&measuring, false);
    double elapsed = now_s() - start;
    long n = atomic_load(&counted);
    atomic_store(&done, true);
    for (int i = 0; i < concurrency; i++) pthread_join(ws[i].id, NULL);
    size_t total = 0;
    for (int i = 0; i < concurrency; i++) total += ws[i].n;
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (int i = 0; i < concurrency; i++) {
        memcpy(all + k, ws[i].latencies, ws[i].n * sizeof *all);
        k += ws[i].n;
        free(ws[i].latencies);
    }
    qsort(all, total, sizeof *all, compare);
    double p50 = total ? all[total / 2] * 1000 : 0, p99 = total ? all[(size_t)((double)total * 0.99)] * 1000 : 0;
    printf("{\"client\": \"c\", \"mode\": \"%s\", \"concurrency\": %d, \"per_second\": %.1f, \"p50_ms\": %.3f, "
           "\"p99_ms\": %.3f, \"failures\": %ld, \"round\": %d}\n",
           mode, concurrency, (double)n / elapsed, p50, p99, atomic_load(&failures), round);
    free(all);
    free(ws);
    chat_status_clear(&st);
    chat_client_free(client);
    return 0;
}
