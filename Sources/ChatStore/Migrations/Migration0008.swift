// Migration 8: the outbox as Debezium's outbox event router reads it, and insert-only.
//
// Every row gets the router's columns, filled by a trigger from the row's type and ids (one mapping, here):
// `event_id` (a random uuid, the de-duplication id), `aggregate_type` (the topic: thread, message, privacy,
// legal_hold, retention), `aggregate_id` (the Kafka key: `<tenant>/<thread>/<seq>` for a message, `<tenant>/<thread>`
// for a thread, `<tenant>/<learner>` for privacy and legal holds, `<tenant>` for retention) and `event_type` (the
// event's name, `message.created`...). Names and aggregates are the contract's EventType values; a type without a
// name is refused, so a new type needs a migration that names it.
//
// The application role may no longer UPDATE the outbox: the router rejects updates, and logical decoding would
// carry them. Erasure and retention replace an event by its tombstone instead: the row is deleted (the router
// ignores deletes) and a row at the same position (same id and transaction id), erased, without payload, with a new
// event_id and the same aggregate_id, is inserted, which the router turns into a Kafka tombstone for that key.
//
// Existing rows are backfilled with row-level security not forced (the owner sees every tenant's rows), forced again
// before the transaction commits.
let migration0008 = #"""
    CREATE FUNCTION chat.outbox_event_name(event_type smallint) RETURNS text
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
        SELECT CASE event_type
            WHEN 1 THEN 'thread.created' WHEN 2 THEN 'thread.updated' WHEN 3 THEN 'thread.deleted'
            WHEN 4 THEN 'message.created' WHEN 5 THEN 'message.edited' WHEN 6 THEN 'message.deleted'
            WHEN 7 THEN 'privacy.export_requested' WHEN 8 THEN 'privacy.export_completed'
            WHEN 9 THEN 'privacy.erasure_requested' WHEN 10 THEN 'privacy.erasure_completed'
            WHEN 11 THEN 'legal_hold.placed' WHEN 12 THEN 'legal_hold.released'
            WHEN 13 THEN 'retention.run_completed'
        END
        $$;

    -- The Kafka key of an event of `aggregate_type`: one definition, for the trigger and the backfill.
    CREATE FUNCTION chat.outbox_aggregate_id(aggregate_type text, tenant uuid, thread uuid, seq bigint, learner uuid)
        RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
        SELECT CASE aggregate_type
            WHEN 'message' THEN tenant::text || '/' || thread::text || '/' || seq::text
            WHEN 'thread' THEN tenant::text || '/' || thread::text
            WHEN 'retention' THEN tenant::text
            ELSE tenant::text || '/' || learner::text
        END
        $$;

    CREATE FUNCTION chat.outbox_route() RETURNS trigger
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            NEW.event_type := chat.outbox_event_name(NEW.type);
            IF NEW.event_type IS NULL THEN
                RAISE EXCEPTION 'outbox: event type % has no name', NEW.type USING ERRCODE = '22023';
            END IF;
            NEW.event_id := gen_random_uuid();
            NEW.aggregate_type := split_part(NEW.event_type, '.', 1);
            NEW.aggregate_id := chat.outbox_aggregate_id(NEW.aggregate_type, NEW.tenant_id, NEW.thread_id, NEW.seq,
                                                         NEW.learner_id);
            IF NEW.aggregate_id IS NULL THEN
                RAISE EXCEPTION 'outbox: a % event without the ids of its aggregate', NEW.event_type
                    USING ERRCODE = '23502';
            END IF;
            RETURN NEW;
        END
        $$;

    ALTER TABLE chat.outbox NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.outbox
        ADD COLUMN event_id uuid,
        ADD COLUMN aggregate_type text,
        ADD COLUMN aggregate_id text,
        ADD COLUMN event_type text;
    UPDATE chat.outbox SET event_id = gen_random_uuid(), event_type = chat.outbox_event_name(type);
    UPDATE chat.outbox SET aggregate_type = split_part(event_type, '.', 1);
    UPDATE chat.outbox SET aggregate_id = chat.outbox_aggregate_id(aggregate_type, tenant_id, thread_id, seq, learner_id);
    ALTER TABLE chat.outbox
        ALTER COLUMN event_id SET NOT NULL,
        ALTER COLUMN aggregate_type SET NOT NULL,
        ALTER COLUMN aggregate_id SET NOT NULL,
        ALTER COLUMN event_type SET NOT NULL;
    ALTER TABLE chat.outbox FORCE ROW LEVEL SECURITY;

    CREATE TRIGGER outbox_route BEFORE INSERT ON chat.outbox FOR EACH ROW EXECUTE FUNCTION chat.outbox_route();
    REVOKE UPDATE ON chat.outbox FROM chat_app;
    """#
