// Migration 5: an audit trail nobody can rewrite.
//
// - The application role loses UPDATE and DELETE on `chat.privacy_audit`: it inserts records, and changes a job's
//   record only through `chat.audit_update`, a SECURITY DEFINER function of the owner that touches only unfinished
//   records of the caller's tenant, for privacy roles, and only as a job moves on: counts only grow, and a finished
//   record never changes again.
// - Each tenant's trail is a hash chain, `chat.privacy_audit_chain`: every insert and every change of an audit record
//   appends an entry (by trigger, as the owner) with the record's new state, its digest, and the hash of (previous
//   entry's hash, digest, position, record id). The trigger refuses a change that does not come through
//   `chat.audit_update`, and any DELETE, whoever asks: the superuser has to switch the triggers off to edit the
//   trail, and then the edit is not in the chain.
// - `chat.verify_audit_chain()` recomputes the chain, checks that each change of a record is one a job can make
//   (fixed fields unchanged, counts growing, nothing after the record finished), and compares each record with its
//   newest entry: an edited, deleted or reordered record or entry is found. The newest entry's hash, kept outside the
//   database, also catches a chain recomputed from scratch.
// - Existing records are chained in (started_at, id) order, with row-level security not forced for the backfill.
let migration0005 = #"""
    REVOKE UPDATE, DELETE ON chat.privacy_audit FROM chat_app;

    CREATE TABLE chat.privacy_audit_chain (
        tenant_id uuid NOT NULL,
        seq bigint NOT NULL CHECK (seq > 0),
        audit_id uuid NOT NULL,
        state jsonb NOT NULL,
        digest bytea NOT NULL,
        prev_hash bytea NOT NULL,
        hash bytea NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, seq)
    );
    CREATE INDEX privacy_audit_chain_by_record ON chat.privacy_audit_chain (tenant_id, audit_id, seq DESC);
    ALTER TABLE chat.privacy_audit_chain ENABLE ROW LEVEL SECURITY;
    ALTER TABLE chat.privacy_audit_chain FORCE ROW LEVEL SECURITY;
    -- The application reads its tenant's chain (privacy roles only) and cannot write it at all; the owner, whose
    -- trigger is the only writer, appends for whichever tenant the audit record belongs to.
    CREATE POLICY tenant_isolation ON chat.privacy_audit_chain AS PERMISSIVE FOR ALL
        USING (tenant_id = chat.current_tenant()) WITH CHECK (tenant_id = chat.current_tenant());
    CREATE POLICY privacy_roles ON chat.privacy_audit_chain AS RESTRICTIVE FOR ALL TO chat_app
        USING (chat.privacy_role()) WITH CHECK (chat.privacy_role());
    DO $$
    BEGIN
        EXECUTE format('CREATE POLICY chain_writer ON chat.privacy_audit_chain AS PERMISSIVE FOR ALL TO %I '
                       'USING (true) WITH CHECK (true)', current_user);
    END
    $$;
    GRANT SELECT ON chat.privacy_audit_chain TO chat_app;

    -- A record's state, every column (jsonb renders an object the same way every time), and its digest.
    CREATE FUNCTION chat.audit_state(a chat.privacy_audit) RETURNS jsonb
        LANGUAGE sql STABLE
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT jsonb_build_object(
                'tenant_id', a.tenant_id, 'id', a.id, 'kind', a.kind, 'actor_id', a.actor_id,
                'actor_role', a.actor_role, 'learner_id', a.learner_id,
                'started_us', (extract(epoch FROM a.started_at) * 1000000)::int8,
                'finished_us', (extract(epoch FROM a.finished_at) * 1000000)::int8,
                'removed_threads', a.removed_threads, 'removed_messages', a.removed_messages,
                'removed_message_edits', a.removed_message_edits, 'removed_read_cursors', a.removed_read_cursors,
                'removed_outbox_payloads', a.removed_outbox_payloads, 'exported_records', a.exported_records,
                'outcome', a.outcome, 'reason', a.reason)
        $$;

    CREATE FUNCTION chat.audit_digest(state jsonb) RETURNS bytea
        LANGUAGE sql IMMUTABLE
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT sha256(convert_to(state::text, 'UTF8')) $$;

    -- Why going from `before` to `after` is not a change a job makes; NULL when it is.
    CREATE FUNCTION chat.audit_transition_problem(before jsonb, after jsonb) RETURNS text
        LANGUAGE sql IMMUTABLE
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT CASE
                WHEN before IS NULL THEN NULL
                WHEN before -> 'finished_us' <> 'null'::jsonb THEN 'the record changed after it had finished'
                WHEN EXISTS (SELECT 1 FROM unnest(ARRAY['tenant_id', 'id', 'kind', 'actor_id', 'actor_role',
                                                        'learner_id', 'started_us', 'reason']) f
                             WHERE before -> f IS DISTINCT FROM after -> f)
                    THEN 'a fixed field of the record changed'
                WHEN EXISTS (SELECT 1 FROM unnest(ARRAY['removed_threads', 'removed_messages', 'removed_message_edits',
                                                        'removed_read_cursors', 'removed_outbox_payloads',
                                                        'exported_records']) f
                             WHERE (after ->> f)::bigint < (before ->> f)::bigint)
                    THEN 'a count of the record went down'
            END
        $$;

    CREATE FUNCTION chat.audit_chain_hash(prev bytea, digest bytea, entry bigint, audit_id uuid) RETURNS bytea
        LANGUAGE sql IMMUTABLE
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT sha256(prev || digest || int8send(entry) || uuid_send(audit_id)) $$;

    CREATE FUNCTION chat.audit_chain_append() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            last_seq bigint;
            last_hash bytea;
            state jsonb;
            digest bytea;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                RAISE EXCEPTION 'audit records are never deleted' USING ERRCODE = '42501';
            END IF;
            IF TG_OP = 'UPDATE' AND current_setting('chat.audit_update', true) IS DISTINCT FROM 'on' THEN
                RAISE EXCEPTION 'audit records change only through chat.audit_update' USING ERRCODE = '42501';
            END IF;
            -- One appender per tenant at a time, to its commit.
            PERFORM pg_advisory_xact_lock(hashtext('chat.audit_chain'), hashtext(NEW.tenant_id::text));
            SELECT c.seq, c.hash INTO last_seq, last_hash FROM chat.privacy_audit_chain c
            WHERE c.tenant_id = NEW.tenant_id ORDER BY c.seq DESC LIMIT 1;
            last_seq := coalesce(last_seq, 0) + 1;
            last_hash := coalesce(last_hash, decode(repeat('00', 32), 'hex'));
            state := chat.audit_state(NEW);
            digest := chat.audit_digest(state);
            INSERT INTO chat.privacy_audit_chain (tenant_id, seq, audit_id, state, digest, prev_hash, hash)
            VALUES (NEW.tenant_id, last_seq, NEW.id, state, digest, last_hash,
                    chat.audit_chain_hash(last_hash, digest, last_seq, NEW.id));
            RETURN NULL;
        END
        $$;

    -- Existing records, chained in order.
    ALTER TABLE chat.privacy_audit NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.privacy_audit_chain NO FORCE ROW LEVEL SECURITY;
    DO $$
    DECLARE
        r chat.privacy_audit;
        entry bigint;
        previous bytea;
        current_tenant uuid;
        state jsonb;
        digest bytea;
    BEGIN
        FOR r IN SELECT * FROM chat.privacy_audit ORDER BY tenant_id, started_at, id LOOP
            IF current_tenant IS DISTINCT FROM r.tenant_id THEN
                current_tenant := r.tenant_id;
                entry := 0;
                previous := decode(repeat('00', 32), 'hex');
            END IF;
            entry := entry + 1;
            state := chat.audit_state(r);
            digest := chat.audit_digest(state);
            INSERT INTO chat.privacy_audit_chain (tenant_id, seq, audit_id, state, digest, prev_hash, hash)
            VALUES (r.tenant_id, entry, r.id, state, digest, previous,
                    chat.audit_chain_hash(previous, digest, entry, r.id));
            previous := chat.audit_chain_hash(previous, digest, entry, r.id);
        END LOOP;
    END
    $$;
    ALTER TABLE chat.privacy_audit FORCE ROW LEVEL SECURITY;
    ALTER TABLE chat.privacy_audit_chain FORCE ROW LEVEL SECURITY;

    CREATE TRIGGER audit_chain AFTER INSERT OR UPDATE ON chat.privacy_audit
        FOR EACH ROW EXECUTE FUNCTION chat.audit_chain_append();
    CREATE TRIGGER audit_never_deleted BEFORE DELETE ON chat.privacy_audit
        FOR EACH ROW EXECUTE FUNCTION chat.audit_chain_append();

    -- The one way the application changes an audit record: an unfinished record of its tenant, as a job moves on.
    CREATE FUNCTION chat.audit_update(
        audit_id uuid,
        exported bigint DEFAULT NULL,
        add_threads bigint DEFAULT 0,
        add_messages bigint DEFAULT 0,
        add_edits bigint DEFAULT 0,
        add_cursors bigint DEFAULT 0,
        add_payloads bigint DEFAULT 0,
        new_outcome text DEFAULT NULL,
        finish boolean DEFAULT false
    ) RETURNS SETOF chat.privacy_audit
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            IF NOT chat.privacy_role() THEN
                RAISE EXCEPTION 'only privacy roles change audit records' USING ERRCODE = '42501';
            END IF;
            IF least(coalesce(exported, 0), add_threads, add_messages, add_edits, add_cursors, add_payloads) < 0 THEN
                RAISE EXCEPTION 'audit counts only grow' USING ERRCODE = '22023';
            END IF;
            PERFORM set_config('chat.audit_update', 'on', true);
            RETURN QUERY
            UPDATE chat.privacy_audit a
            SET exported_records = greatest(a.exported_records, coalesce(exported, a.exported_records)),
                removed_threads = a.removed_threads + add_threads,
                removed_messages = a.removed_messages + add_messages,
                removed_message_edits = a.removed_message_edits + add_edits,
                removed_read_cursors = a.removed_read_cursors + add_cursors,
                removed_outbox_payloads = a.removed_outbox_payloads + add_payloads,
                outcome = coalesce(new_outcome, a.outcome),
                finished_at = CASE WHEN finish THEN now() ELSE a.finished_at END
            WHERE a.tenant_id = chat.current_tenant() AND a.id = audit_update.audit_id AND a.finished_at IS NULL
            RETURNING a.*;
            PERFORM set_config('chat.audit_update', 'off', true);
        END
        $$;
    REVOKE ALL ON FUNCTION chat.audit_update(uuid, bigint, bigint, bigint, bigint, bigint, bigint, text, boolean)
        FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION chat.audit_update(uuid, bigint, bigint, bigint, bigint, bigint, bigint, text, boolean)
        TO chat_app;

    -- Recomputes the tenant's chain: every problem found, none when it is intact.
    CREATE FUNCTION chat.verify_audit_chain() RETURNS TABLE (seq bigint, audit_id uuid, problem text)
        LANGUAGE plpgsql STABLE
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            e chat.privacy_audit_chain;
            expected bigint := 0;
            previous bytea := decode(repeat('00', 32), 'hex');
        BEGIN
            FOR e IN SELECT * FROM chat.privacy_audit_chain c WHERE c.tenant_id = chat.current_tenant() ORDER BY c.seq
            LOOP
                expected := expected + 1;
                IF e.seq <> expected THEN
                    seq := e.seq; audit_id := e.audit_id;
                    problem := format('entry %s follows entry %s: an entry was removed or moved', e.seq, expected - 1);
                    RETURN NEXT;
                    expected := e.seq;
                END IF;
                IF e.prev_hash <> previous THEN
                    seq := e.seq; audit_id := e.audit_id;
                    problem := 'does not follow the previous entry (the chain was cut or reordered)';
                    RETURN NEXT;
                END IF;
                IF e.hash <> chat.audit_chain_hash(e.prev_hash, e.digest, e.seq, e.audit_id)
                   OR e.digest <> chat.audit_digest(e.state) THEN
                    seq := e.seq; audit_id := e.audit_id;
                    problem := 'the entry was altered (its hash does not match)';
                    RETURN NEXT;
                END IF;
                previous := e.hash;
            END LOOP;
            -- Each change of a record is one a job makes.
            RETURN QUERY
            SELECT t.seq, t.audit_id, t.problem FROM (
                SELECT c.seq, c.audit_id,
                       chat.audit_transition_problem(lag(c.state) OVER (PARTITION BY c.audit_id ORDER BY c.seq),
                                                     c.state) AS problem
                FROM chat.privacy_audit_chain c WHERE c.tenant_id = chat.current_tenant()
            ) t
            WHERE t.problem IS NOT NULL;
            -- Each record's current state is its newest entry's.
            RETURN QUERY
            SELECT latest.seq, a.id,
                   CASE WHEN latest.seq IS NULL THEN 'the record is not in the chain (inserted around it)'
                        ELSE 'the record was altered after its newest chain entry' END
            FROM chat.privacy_audit a
            LEFT JOIN LATERAL (
                SELECT c.seq, c.digest FROM chat.privacy_audit_chain c
                WHERE c.tenant_id = a.tenant_id AND c.audit_id = a.id ORDER BY c.seq DESC LIMIT 1
            ) latest ON true
            WHERE a.tenant_id = chat.current_tenant()
              AND (latest.seq IS NULL OR latest.digest <> chat.audit_digest(chat.audit_state(a)));
            -- Every chained record still exists.
            RETURN QUERY
            SELECT max(c.seq), c.audit_id, 'the record was deleted'::text
            FROM chat.privacy_audit_chain c
            WHERE c.tenant_id = chat.current_tenant()
              AND NOT EXISTS (SELECT 1 FROM chat.privacy_audit a WHERE a.tenant_id = c.tenant_id AND a.id = c.audit_id)
            GROUP BY c.audit_id;
        END
        $$;
    GRANT EXECUTE ON FUNCTION chat.verify_audit_chain() TO chat_app;
    """#
