# Shared by the scripts: a private PostgreSQL cluster, run as an unprivileged user on a Unix socket only.
# PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` system user.

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$dir" ] || { echo "no PostgreSQL server installed" >&2; return 1; }
    echo "$dir"
}

# Runs a command as the cluster's owner.
pg_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_cluster_start DIR: creates the cluster in DIR/data if it does not exist, starts it with its socket in DIR,
# and waits until it accepts connections. The bootstrap superuser is `postgres`. wal_level=logical: the outbox can be
# decoded through a replication slot (Debezium's prerequisite; docs/EVENTS.md), and a test does so.
pg_cluster_start() {
    local dir=$1 bin
    bin=$(pg_bindir) || return 1
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres:postgres "$dir"
    fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        pg_as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; return 1; }
    fi
    if pg_as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        return 0  # already running (another scripts/dev, say): reuse it
    fi
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c fsync=${CHAT_PG_FSYNC:-on} -c max_connections=1000 -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20" \
        start >/dev/null || { cat "$dir/server.log" >&2; return 1; }
}

# pg_cluster_stop DIR: stops the cluster (fast shutdown); quiet when it is not running.
pg_cluster_stop() {
    local dir=$1 bin
    bin=$(pg_bindir) || return 0
    [ -f "$dir/data/postmaster.pid" ] || return 0
    pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
}

# pg_conninfo DIR DATABASE USER: the libpq connection string for the cluster in DIR.
pg_conninfo() {
    echo "host=$1 port=5432 dbname=$2 user=$3"
}

# pg_bootstrap DIR DATABASE: as the bootstrap superuser, creates the owner role `chat_owner` (LOGIN, CREATEROLE,
# NOBYPASSRLS: it runs the migrations, which create the application role `chat_app`) and the database it owns.
# Idempotent.
pg_bootstrap() {
    local dir=$1 db=$2 bin
    bin=$(pg_bindir) || return 1
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$(pg_conninfo "$dir" postgres postgres)" <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'chat_owner') THEN
        CREATE ROLE chat_owner LOGIN CREATEROLE NOBYPASSRLS;
    END IF;
END
\$\$;
SELECT format('CREATE DATABASE %I OWNER chat_owner', '$db')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
SQL
}
