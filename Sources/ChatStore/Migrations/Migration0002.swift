// Migration 2: event positions for live delivery.
//
// Every event of a thread (a message created, edited or deleted; the thread updated or deleted) takes the next value
// of `threads.event_seq`, allocated under the thread's row lock in the event's transaction, so within a thread the
// event positions are dense and in commit order. A message row keeps the position of its newest event
// (`messages.event_seq`), a thread row the position of its newest metadata change (`meta_event_seq`): a stream that
// resumes after position P reads the rows whose position is greater than P and misses nothing, however long ago P
// was. The outbox row of a thread event records its position too.
//
// Existing rows are numbered as if each message had had one event: RLS is not forced for the duration of the
// backfill, so that the owner sees every tenant's rows; it is forced again before the transaction commits.
let migration0002 = #"""
    ALTER TABLE chat.threads NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.messages NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.outbox NO FORCE ROW LEVEL SECURITY;

    ALTER TABLE chat.threads
        ADD COLUMN event_seq bigint NOT NULL DEFAULT 0 CHECK (event_seq >= 0),
        ADD COLUMN meta_event_seq bigint NOT NULL DEFAULT 0 CHECK (meta_event_seq >= 0);
    ALTER TABLE chat.messages ADD COLUMN event_seq bigint NOT NULL DEFAULT 0 CHECK (event_seq >= 0);
    ALTER TABLE chat.outbox ADD COLUMN event_seq bigint;

    UPDATE chat.threads SET event_seq = last_seq WHERE last_seq > 0;
    UPDATE chat.messages SET event_seq = seq;
    UPDATE chat.outbox SET event_seq = seq WHERE type = 4;

    ALTER TABLE chat.threads FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.messages FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.outbox FORCE ROW LEVEL SECURITY;

    CREATE INDEX messages_by_event ON chat.messages (tenant_id, thread_id, event_seq);
    """#
