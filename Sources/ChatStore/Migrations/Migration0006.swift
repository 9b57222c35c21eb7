// Migration 6: the schema version, readable by the application role.
//
// `chat.schema_version()` returns the newest migration applied (from `chat_meta.schema_migrations`, which only the
// owner may read): a SECURITY DEFINER function of the owner, so that chatd's readiness can tell a database whose
// schema is behind the binary (a deployment that skipped `chatd migrate`) from a current one.
let migration0006 = #"""
    CREATE FUNCTION chat.schema_version() RETURNS integer
        LANGUAGE sql STABLE SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT coalesce(max(version), 0) FROM chat_meta.schema_migrations $$;
    REVOKE ALL ON FUNCTION chat.schema_version() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION chat.schema_version() TO chat_app;
    """#
