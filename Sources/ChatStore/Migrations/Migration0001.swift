// Migration 1: the application role, the schema, and row-level security on every table with tenant data.
//
// Policies: every tenant table has a permissive `tenant_isolation` policy (USING and WITH CHECK on tenant_id) and,
// where rows belong to a learner, a restrictive `learner_scope` policy; privacy tables also have a restrictive
// `privacy_roles` policy. With no context set, `chat.current_tenant()` is NULL and every policy fails closed.
let migration0001 = #"""
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'chat_app') THEN
            CREATE ROLE chat_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        -- Another database on this cluster created it at the same moment.
        NULL;
    END
    $$;

    CREATE SCHEMA chat;
    GRANT USAGE ON SCHEMA chat TO chat_app;

    -- The context that every tenant transaction installs with set_config(..., true).
    CREATE FUNCTION chat.current_tenant() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

    CREATE FUNCTION chat.current_role_name() RETURNS text
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$ SELECT coalesce(current_setting('app.role', true), '') $$;

    -- True when the transaction may see rows of this learner: roles that see the whole tenant, or a learner in scope.
    CREATE FUNCTION chat.learner_in_scope(learner uuid) RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT chat.current_role_name() IN ('tenant_admin', 'service', 'privacy_officer')
                OR coalesce(learner = ANY (nullif(current_setting('app.learner_scope', true), '')::uuid[]), false)
        $$;

    CREATE FUNCTION chat.privacy_role() RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$ SELECT chat.current_role_name() IN ('tenant_admin', 'privacy_officer', 'service') $$;

    CREATE TABLE chat.threads (
        tenant_id uuid NOT NULL,
        id uuid NOT NULL DEFAULT gen_random_uuid(),
        learner_id uuid NOT NULL,
        title text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200),
        state smallint NOT NULL DEFAULT 1 CHECK (state IN (1, 2)),
        last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        created_by text NOT NULL,
        created_by_role text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now(),
        last_activity_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, id)
    );
    CREATE INDEX threads_by_learner_activity ON chat.threads (tenant_id, learner_id, last_activity_at DESC, id DESC);
    CREATE INDEX threads_by_activity ON chat.threads (tenant_id, last_activity_at DESC, id DESC);

    CREATE TABLE chat.messages (
        tenant_id uuid NOT NULL,
        thread_id uuid NOT NULL,
        seq bigint NOT NULL CHECK (seq > 0),
        id uuid NOT NULL DEFAULT gen_random_uuid(),
        learner_id uuid NOT NULL,
        author_id text NOT NULL,
        author_role text NOT NULL,
        body text NOT NULL CHECK (octet_length(body) <= 4096),
        idempotency_key text NOT NULL CHECK (octet_length(idempotency_key) BETWEEN 1 AND 64),
        created_at timestamptz NOT NULL DEFAULT now(),
        edited_at timestamptz,
        edit_count integer NOT NULL DEFAULT 0,
        deleted_at timestamptz,
        deleted_by text,
        deleted_by_role text,
        PRIMARY KEY (tenant_id, thread_id, seq),
        UNIQUE (tenant_id, id),
        CONSTRAINT messages_idempotency UNIQUE (tenant_id, author_id, idempotency_key),
        FOREIGN KEY (tenant_id, thread_id) REFERENCES chat.threads (tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX messages_by_learner ON chat.messages (tenant_id, learner_id, created_at);
    CREATE INDEX messages_by_age ON chat.messages (tenant_id, created_at);

    CREATE TABLE chat.message_edits (
        tenant_id uuid NOT NULL,
        thread_id uuid NOT NULL,
        seq bigint NOT NULL,
        revision integer NOT NULL CHECK (revision > 0),
        learner_id uuid NOT NULL,
        body text NOT NULL,
        edited_by text NOT NULL,
        edited_by_role text NOT NULL,
        edited_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, thread_id, seq, revision),
        FOREIGN KEY (tenant_id, thread_id, seq) REFERENCES chat.messages (tenant_id, thread_id, seq) ON DELETE CASCADE
    );
    CREATE INDEX message_edits_by_learner ON chat.message_edits (tenant_id, learner_id);

    CREATE TABLE chat.read_cursors (
        tenant_id uuid NOT NULL,
        user_id text NOT NULL,
        thread_id uuid NOT NULL,
        learner_id uuid NOT NULL,
        read_seq bigint NOT NULL DEFAULT 0 CHECK (read_seq >= 0),
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, user_id, thread_id),
        FOREIGN KEY (tenant_id, thread_id) REFERENCES chat.threads (tenant_id, id) ON DELETE CASCADE
    );
    CREATE INDEX read_cursors_by_thread ON chat.read_cursors (tenant_id, thread_id);
    CREATE INDEX read_cursors_by_learner ON chat.read_cursors (tenant_id, learner_id);

    -- The events outbox. tx_id orders events by commit for consumers (read only below the oldest running
    -- transaction, so an event that commits late is never skipped); see the live-delivery design.
    CREATE TABLE chat.outbox (
        tenant_id uuid NOT NULL,
        id bigint GENERATED ALWAYS AS IDENTITY,
        type smallint NOT NULL,
        learner_id uuid,
        thread_id uuid,
        seq bigint,
        payload jsonb,
        erased boolean NOT NULL DEFAULT false,
        occurred_at timestamptz NOT NULL DEFAULT now(),
        tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
        PRIMARY KEY (tenant_id, id)
    );
    CREATE INDEX outbox_by_commit ON chat.outbox (tenant_id, tx_id, id);
    CREATE INDEX outbox_by_learner ON chat.outbox (tenant_id, learner_id);

    CREATE TABLE chat.privacy_audit (
        tenant_id uuid NOT NULL,
        id uuid NOT NULL DEFAULT gen_random_uuid(),
        kind smallint NOT NULL,
        actor_id text NOT NULL,
        actor_role text NOT NULL,
        learner_id uuid,
        started_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz,
        removed_threads bigint NOT NULL DEFAULT 0,
        removed_messages bigint NOT NULL DEFAULT 0,
        removed_message_edits bigint NOT NULL DEFAULT 0,
        removed_read_cursors bigint NOT NULL DEFAULT 0,
        removed_outbox_payloads bigint NOT NULL DEFAULT 0,
        exported_records bigint NOT NULL DEFAULT 0,
        outcome text NOT NULL DEFAULT 'running',
        reason text NOT NULL DEFAULT '' CHECK (octet_length(reason) <= 512),
        PRIMARY KEY (tenant_id, id)
    );
    CREATE INDEX privacy_audit_by_time ON chat.privacy_audit (tenant_id, started_at DESC, id);
    CREATE INDEX privacy_audit_by_learner ON chat.privacy_audit (tenant_id, learner_id, started_at DESC);

    CREATE TABLE chat.retention_policies (
        tenant_id uuid NOT NULL PRIMARY KEY,
        message_retention_days integer NOT NULL CHECK (message_retention_days BETWEEN 0 AND 36500),
        updated_by text NOT NULL,
        updated_by_role text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE chat.legal_holds (
        tenant_id uuid NOT NULL,
        learner_id uuid NOT NULL,
        reason text NOT NULL CHECK (octet_length(reason) BETWEEN 1 AND 512),
        placed_by text NOT NULL,
        placed_by_role text NOT NULL,
        placed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, learner_id)
    );

    -- Row-level security: enabled and forced (the owner is subject to it too) on every table with tenant data.
    DO $$
    DECLARE
        t text;
    BEGIN
        FOREACH t IN ARRAY ARRAY['threads', 'messages', 'message_edits', 'read_cursors', 'outbox', 'privacy_audit',
                                 'retention_policies', 'legal_holds']
        LOOP
            EXECUTE format('ALTER TABLE chat.%I ENABLE ROW LEVEL SECURITY', t);
            EXECUTE format('ALTER TABLE chat.%I FORCE ROW LEVEL SECURITY', t);
            EXECUTE format('CREATE POLICY tenant_isolation ON chat.%I AS PERMISSIVE FOR ALL '
                           'USING (tenant_id = chat.current_tenant()) WITH CHECK (tenant_id = chat.current_tenant())', t);
        END LOOP;
        FOREACH t IN ARRAY ARRAY['threads', 'messages', 'message_edits', 'read_cursors', 'outbox', 'privacy_audit',
                                 'legal_holds']
        LOOP
            EXECUTE format('CREATE POLICY learner_scope ON chat.%I AS RESTRICTIVE FOR ALL '
                           'USING (chat.learner_in_scope(learner_id)) WITH CHECK (chat.learner_in_scope(learner_id))', t);
        END LOOP;
        FOREACH t IN ARRAY ARRAY['privacy_audit', 'retention_policies', 'legal_holds']
        LOOP
            EXECUTE format('CREATE POLICY privacy_roles ON chat.%I AS RESTRICTIVE FOR ALL '
                           'USING (chat.privacy_role()) WITH CHECK (chat.privacy_role())', t);
        END LOOP;
    END
    $$;

    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA chat TO chat_app;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA chat TO chat_app;
    REVOKE ALL ON SCHEMA chat_meta FROM PUBLIC;
    """#
