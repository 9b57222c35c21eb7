/*
 * chat-send: send a message to a thread, or watch a thread live, with libchat.
 *
 *   chat-send --address HOST:PORT --ca CA.pem send THREAD_ID "the message"
 *   chat-send --address HOST:PORT --ca CA.pem watch THREAD_ID [AFTER_SEQ]
 *
 * The token (a JWT) comes from the CHAT_TOKEN environment variable. `watch` prints one line per message event and
 * resumes by itself after a drain, a restart or a lost connection, from the last event it printed (the ResumeInfo
 * the server sends, or the last seq seen), so no event is printed twice or missed. It ends on Ctrl-C, when the
 * thread is deleted, or on an error a retry would not cure.
 */
#include "chat.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int usage(void) {
    fprintf(stderr, "usage: chat-send --address HOST:PORT [--ca CA.pem] send THREAD_ID TEXT\n"
                    "       chat-send --address HOST:PORT [--ca CA.pem] watch THREAD_ID [AFTER_SEQ]\n"
                    "(the token comes from $CHAT_TOKEN)\n");
    return 2;
}

static int send_one(chat_client *client, const char *thread, const char *text) {
    Chat__V1__SendMessageRequest req = CHAT__V1__SEND_MESSAGE_REQUEST__INIT;
    req.thread_id = (char *)thread;
    req.body = (char *)text;
    ProtobufCMessage *out = NULL;
    chat_status status = {0};
    chat_call_options options = {0};
    options.timeout_ms = 10000;
    /* A mutation: the library gives it an idempotency key, so that its retries have one effect. */
    if (chat_unary(client, &chat_method_message_service_send_message, &req.base, &options, &out, &status) !=
        CHAT_OK) {
        fprintf(stderr, "send: %s: %s\n", chat_code_name(status.code), status.message);
        const Chat__V1__FieldViolation *v;
        for (size_t i = 0; (v = chat_status_field_violation(&status, i)) != NULL; i++)
            fprintf(stderr, "  %s: %s\n", v->field, v->description);
        chat_status_clear(&status);
        return 1;
    }
    Chat__V1__Message *m = ((Chat__V1__SendMessageResponse *)out)->message;
    printf("sent %s seq %llu\n", m->id, (unsigned long long)m->seq);
    protobuf_c_message_free_unpacked(out, NULL);
    return 0;
}

static int watch(chat_client *client, const char *thread, uint64_t after) {
    int failures = 0;
    while (!stop) {
        Chat__V1__WatchThreadRequest req = CHAT__V1__WATCH_THREAD_REQUEST__INIT;
        req.thread_id = (char *)thread;
        req.after_seq = after;
        chat_status status = {0};
        chat_stream *stream = chat_stream_open(client, &chat_method_live_service_watch_thread, &req.base, NULL,
                                               &status);
        chat_next next = CHAT_NEXT_END;
        while (stream != NULL && !stop) {
            ProtobufCMessage *out = NULL;
            next = chat_stream_next(stream, 500, &out, &status);
            if (next == CHAT_NEXT_TIMEOUT) continue; /* to look at `stop` */
            if (next == CHAT_NEXT_END) break;
            failures = 0;
            Chat__V1__WatchEvent *e = ((Chat__V1__WatchThreadResponse *)out)->event;
            if (e != NULL && e->event_case == CHAT__V1__WATCH_EVENT__EVENT_MESSAGE && e->message->message) {
                const char *kinds[] = {"?", "created", "edited", "deleted"};
                int kind = e->message->kind >= 0 && e->message->kind <= 3 ? e->message->kind : 0;
                printf("%llu %s %s\n", (unsigned long long)e->message->message->seq, kinds[kind],
                       e->message->message->body);
                fflush(stdout);
                after = e->seq;
            } else if (e != NULL && e->event_case == CHAT__V1__WATCH_EVENT__EVENT_THREAD) {
                after = e->seq;
                if (e->thread->kind == CHAT__V1__THREAD_EVENT__KIND__KIND_DELETED) printf("thread deleted\n");
            }
            protobuf_c_message_free_unpacked(out, NULL);
        }
        chat_stream_free(stream);
        if (stop) {
            chat_status_clear(&status);
            break;
        }
        if (status.code == CHAT_OK) { /* the thread was deleted */
            chat_status_clear(&status);
            return 0;
        }
        /* Resumable endings: a drain or restart (UNAVAILABLE), a slow reader (RESOURCE_EXHAUSTED). */
        bool resumable = status.code == CHAT_UNAVAILABLE || status.code == CHAT_RESOURCE_EXHAUSTED;
        if (!resumable || ++failures > 20) {
            fprintf(stderr, "watch: %s: %s\n", chat_code_name(status.code), status.message);
            chat_status_clear(&status);
            return 1;
        }
        if (status.has_resume_info) after = status.resume_after_seq;
        fprintf(stderr, "watch: %s (%s); resuming after %llu\n", chat_code_name(status.code), status.message,
                (unsigned long long)after);
        long ms = status.retry_after_ms > 0 ? (long)status.retry_after_ms : 100L * failures;
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        chat_status_clear(&status);
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *address = NULL, *ca = NULL;
    int i = 1;
    for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (strcmp(argv[i], "--address") == 0) address = argv[i + 1];
        else if (strcmp(argv[i], "--ca") == 0) ca = argv[i + 1];
        else return usage();
    }
    if (address == NULL || i + 1 >= argc || strrchr(address, ':') == NULL) return usage();
    const char *command = argv[i], *thread = argv[i + 1];
    char host[256];
    const char *colon = strrchr(address, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);

    chat_options options;
    chat_options_init(&options);
    options.host = host;
    options.port = (uint16_t)atoi(colon + 1);
    options.ca_file = ca;
    options.token = getenv("CHAT_TOKEN");
    chat_status status = {0};
    chat_client *client = chat_client_new(&options, &status);
    if (client == NULL) {
        fprintf(stderr, "chat-send: %s\n", status.message);
        chat_status_clear(&status);
        return 1;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    /* No SIGPIPE handling here: the library keeps writes to closed connections from raising it. */
    int rc;
    if (strcmp(command, "send") == 0 && i + 2 < argc) rc = send_one(client, thread, argv[i + 2]);
    else if (strcmp(command, "watch") == 0) rc = watch(client, thread, i + 2 < argc ? strtoull(argv[i + 2], NULL, 10) : 0);
    else rc = usage();
    chat_client_free(client);
    return rc;
}
