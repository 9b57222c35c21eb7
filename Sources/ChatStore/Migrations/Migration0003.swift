// Migration 3: privacy.
//
// - The privacy tables (audit trail, retention policies, legal holds) are for privacy officers and tenant admins
//   only: service principals lose the access migration 1 gave them, so the database agrees with the handlers.
// - `chat.retention_schedule()` lists the tenants that have a retention policy, for the sweeper inside chatd. It is
//   the one cross-tenant read there is: a SECURITY DEFINER function of the owner role (which is NOBYPASSRLS, so
//   row-level security applies to it too) returns tenant ids and day counts and nothing else, through a SELECT
//   policy that applies to the owner role only (the table's privacy-role policy lets the owner through as well).
//   Everything the sweeper then does runs under each tenant's context.
// - An index of the outbox events that still hold content, by age, for retention.
let migration0003 = #"""
    CREATE OR REPLACE FUNCTION chat.privacy_role() RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$ SELECT chat.current_role_name() IN ('tenant_admin', 'privacy_officer') $$;

    DO $$
    BEGIN
        EXECUTE format('CREATE POLICY retention_schedule ON chat.retention_policies AS PERMISSIVE FOR SELECT TO %I '
                       'USING (true)', current_user);
        DROP POLICY privacy_roles ON chat.retention_policies;
        EXECUTE format('CREATE POLICY privacy_roles ON chat.retention_policies AS RESTRICTIVE FOR ALL '
                       'USING (chat.privacy_role() OR current_user = %L) '
                       'WITH CHECK (chat.privacy_role() OR current_user = %L)', current_user, current_user);
    END
    $$;

    CREATE FUNCTION chat.retention_schedule() RETURNS TABLE (tenant_id uuid, message_retention_days integer)
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$
            SELECT p.tenant_id, p.message_retention_days FROM chat.retention_policies p
            WHERE p.message_retention_days > 0 ORDER BY p.tenant_id
        $$;
    REVOKE ALL ON FUNCTION chat.retention_schedule() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION chat.retention_schedule() TO chat_app;

    CREATE INDEX outbox_content_by_age ON chat.outbox (tenant_id, occurred_at)
        WHERE NOT erased AND type BETWEEN 1 AND 6;
    """#
