// Migration 4: idempotency keys.
//
// `chat.idempotency_keys` keeps, for each (tenant, caller, key), the method and a hash of the request the key was
// first used with and the outcome (the encoded `CallStatus` and, on success, the encoded response), until
// `expires_at`. The row is written in the same transaction as the mutation's effect, so a key's outcome is stored
// exactly when its effect committed; a failure that changed nothing is stored on its own. Row-level security: a
// caller sees its tenant's rows (`tenant_isolation`) and only its own keys (`key_owner`, on `app.user_id`, for the
// application role).
//
// `chat.claim_idempotency_key` inserts the row at the start of the mutation's transaction; a second attempt with the
// key waits there for the first transaction to end and then fails with SQLSTATE CH409 when the first committed (its
// outcome is then read and replayed). An expired row of the key is replaced.
//
// A stored outcome records the learner its mutation's events were about (`learner_id`, from the outbox rows of the
// same transaction): `chat.erase_idempotency_outcomes`, a SECURITY DEFINER function of the owner that only privacy
// roles may use, deletes a learner's stored outcomes of every caller of the tenant when the learner is erased (an
// outcome may hold content, such as a message's body).
//
// `chat.purge_idempotency_keys` deletes expired rows of every tenant, in batches, for the sweeper inside chatd: a
// SECURITY DEFINER function of the owner role with a DELETE/SELECT policy for the owner alone, as
// `chat.retention_schedule`; it returns a count and touches nothing else.
let migration0004 = #"""
    CREATE TABLE chat.idempotency_keys (
        tenant_id uuid NOT NULL,
        user_id text NOT NULL,
        key bytea NOT NULL CHECK (octet_length(key) BETWEEN 16 AND 64),
        method text NOT NULL,
        request_hash bytea NOT NULL CHECK (octet_length(request_hash) = 32),
        status bytea,
        response bytea,
        learner_id uuid,
        created_at timestamptz NOT NULL DEFAULT now(),
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (tenant_id, user_id, key)
    );
    CREATE INDEX idempotency_keys_by_expiry ON chat.idempotency_keys (expires_at);
    CREATE INDEX idempotency_keys_by_learner ON chat.idempotency_keys (tenant_id, learner_id)
        WHERE learner_id IS NOT NULL;

    ALTER TABLE chat.idempotency_keys ENABLE ROW LEVEL SECURITY;
    ALTER TABLE chat.idempotency_keys FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON chat.idempotency_keys AS PERMISSIVE FOR ALL
        USING (tenant_id = chat.current_tenant()) WITH CHECK (tenant_id = chat.current_tenant());
    CREATE POLICY key_owner ON chat.idempotency_keys AS RESTRICTIVE FOR ALL TO chat_app
        USING (user_id = current_setting('app.user_id', true))
        WITH CHECK (user_id = current_setting('app.user_id', true));
    DO $$
    BEGIN
        EXECUTE format('CREATE POLICY purge ON chat.idempotency_keys AS PERMISSIVE FOR ALL TO %I '
                       'USING (expires_at <= now())', current_user);
    END
    $$;
    GRANT SELECT, INSERT, UPDATE, DELETE ON chat.idempotency_keys TO chat_app;

    CREATE FUNCTION chat.claim_idempotency_key(claimed_key bytea, claimed_method text, claimed_hash bytea,
                                               window_seconds integer) RETURNS void
        LANGUAGE plpgsql
        SET search_path = pg_catalog, pg_temp
        AS $$
        BEGIN
            DELETE FROM chat.idempotency_keys
            WHERE tenant_id = chat.current_tenant() AND user_id = current_setting('app.user_id', true)
              AND key = claimed_key AND expires_at <= now();
            INSERT INTO chat.idempotency_keys (tenant_id, user_id, key, method, request_hash, expires_at)
            VALUES (chat.current_tenant(), current_setting('app.user_id', true), claimed_key, claimed_method,
                    claimed_hash, now() + window_seconds * interval '1 second');
        EXCEPTION WHEN unique_violation THEN
            RAISE EXCEPTION 'idempotency key already used' USING ERRCODE = 'CH409';
        END
        $$;

    CREATE FUNCTION chat.purge_idempotency_keys(batch integer) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            WITH expired AS (
                SELECT tenant_id, user_id, key FROM chat.idempotency_keys
                WHERE expires_at <= now() ORDER BY expires_at LIMIT batch FOR UPDATE SKIP LOCKED
            ), deleted AS (
                DELETE FROM chat.idempotency_keys k USING expired e
                WHERE k.tenant_id = e.tenant_id AND k.user_id = e.user_id AND k.key = e.key
                RETURNING 1
            )
            SELECT count(*) FROM deleted
        $$;
    REVOKE ALL ON FUNCTION chat.purge_idempotency_keys(integer) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION chat.purge_idempotency_keys(integer) TO chat_app;

    CREATE FUNCTION chat.erase_idempotency_outcomes(learner uuid) RETURNS bigint
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
        DECLARE
            removed bigint;
        BEGIN
            IF NOT chat.privacy_role() THEN
                RAISE EXCEPTION 'only privacy roles erase' USING ERRCODE = '42501';
            END IF;
            DELETE FROM chat.idempotency_keys WHERE tenant_id = chat.current_tenant() AND learner_id = learner;
            GET DIAGNOSTICS removed = ROW_COUNT;
            RETURN removed;
        END
        $$;
    REVOKE ALL ON FUNCTION chat.erase_idempotency_outcomes(uuid) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION chat.erase_idempotency_outcomes(uuid) TO chat_app;
    """#
