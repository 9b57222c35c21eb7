// Migration 7: a bounded outbox.
//
// The outbox is the resume window of WatchInbox and SubscribeEvents. `chat.trim_outbox(window_seconds, batch)`
// deletes up to `batch` events older than the window, of every tenant, for the sweeper inside chatd: a SECURITY
// DEFINER function of the owner role (NOBYPASSRLS: row-level security applies to it too), through SELECT and
// DELETE policies for the owner alone, acting as a tenant-wide role for the statement so that the learner-scope
// policy admits every row (no FOR UPDATE: that would need an UPDATE policy; two sweepers at once delete a row once,
// the second DELETE of it affecting nothing). It returns a count and touches nothing else.
//
// `chat.outbox_horizon` keeps, per tenant, the commit position of the newest event trimmed: a cursor at or before
// it may have lost events, and is answered OUT_OF_RANGE (readable by the application role, under the tenant
// policy). An index by age serves the trim.
let migration0007 = #"""
    CREATE INDEX outbox_by_age ON chat.outbox (occurred_at);

    CREATE TABLE chat.outbox_horizon (
        tenant_id uuid PRIMARY KEY,
        tx_id xid8 NOT NULL,
        id bigint NOT NULL,
        trimmed_at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE chat.outbox_horizon ENABLE ROW LEVEL SECURITY;
    ALTER TABLE chat.outbox_horizon FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON chat.outbox_horizon AS PERMISSIVE FOR SELECT
        USING (tenant_id = chat.current_tenant());
    GRANT SELECT ON chat.outbox_horizon TO chat_app;

    DO $$
    BEGIN
        EXECUTE format('CREATE POLICY trim ON chat.outbox_horizon AS PERMISSIVE FOR ALL TO %I '
                       'USING (true) WITH CHECK (true)', current_user);
        EXECUTE format('CREATE POLICY trim_read ON chat.outbox AS PERMISSIVE FOR SELECT TO %I USING (true)',
                       current_user);
        EXECUTE format('CREATE POLICY trim_delete ON chat.outbox AS PERMISSIVE FOR DELETE TO %I USING (true)',
                       current_user);
    END
    $$;

    CREATE FUNCTION chat.trim_outbox(window_seconds integer, batch integer) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            removed bigint;
            saved text := current_setting('app.role', true);
        BEGIN
            IF window_seconds < 1 OR batch < 1 THEN
                RAISE EXCEPTION 'window_seconds and batch: at least 1' USING ERRCODE = '22023';
            END IF;
            -- The learner-scope policy admits tenant-wide roles; the owner acts as one for this statement only.
            PERFORM set_config('app.role', 'privacy_officer', true);
            WITH old AS (
                SELECT tenant_id, id FROM chat.outbox
                WHERE occurred_at < now() - make_interval(secs => window_seconds)
                ORDER BY occurred_at LIMIT batch
            ), deleted AS (
                DELETE FROM chat.outbox o USING old WHERE o.tenant_id = old.tenant_id AND o.id = old.id
                RETURNING o.tenant_id, o.tx_id, o.id
            ), newest AS (
                SELECT DISTINCT ON (tenant_id) tenant_id, tx_id, id FROM deleted
                ORDER BY tenant_id, tx_id DESC, id DESC
            ), horizon AS (
                INSERT INTO chat.outbox_horizon AS h (tenant_id, tx_id, id)
                SELECT tenant_id, tx_id, id FROM newest
                ON CONFLICT (tenant_id) DO UPDATE SET tx_id = excluded.tx_id, id = excluded.id, trimmed_at = now()
                    WHERE (excluded.tx_id, excluded.id) > (h.tx_id, h.id)
                RETURNING 1
            )
            SELECT count(*) INTO removed FROM deleted;
            PERFORM set_config('app.role', coalesce(saved, ''), true);
            RETURN removed;
        END
        $$;
    REVOKE ALL ON FUNCTION chat.trim_outbox(integer, integer) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION chat.trim_outbox(integer, integer) TO chat_app;
    """#
