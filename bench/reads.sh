#!/bin/bash
# Lookups at 50 ms API latency (the emulator's --latency-ms): N identities
# fetched one after another with dfend_get_identity, against one
# dfend_get_identities call with the array; then a view over USERS users
# that calls dfend_get_identity per row, against the same view written with
# one array call joined back (README, "Fast pattern for a view over many
# users"). Prints the median of RUNS runs of each.
#   bench/reads.sh [N=50] [USERS=212] [RUNS=3] [LATENCY_MS=50]
# Takes the host lock, as test/run-some.sh does: it installs into the host's
# PostgreSQL.
source "$(dirname "${BASH_SOURCE[0]}")/../test/lib.sh"
cd "$DFEND_ROOT"
N=${1:-50} USERS=${2:-212} RUNS=${3:-3} LATENCY_MS=${4:-50}
exec 9>/tmp/dfend-host.lock
flock 9
ensure_packages "$DFEND_PG_PACKAGES"
build_and_install
make_run_dir
trap 'stop_emulators; rm -rf "$DFEND_RUN_DIR"' EXIT
start_emulator bench --key sk_bench --latency-ms "$LATENCY_MS"
URL="http://127.0.0.1:$EMULATOR_PORT"
write_key_file "$DFEND_RUN_DIR/key" sk_bench

cat > "$DFEND_RUN_DIR/reads.sql" <<'SQL'
CREATE EXTENSION dfend;
SET client_min_messages = warning;
-- Milliseconds one statement takes.
CREATE FUNCTION pg_temp.ms(statement text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE started timestamptz := clock_timestamp();
BEGIN
    EXECUTE statement;
    RETURN extract(epoch FROM clock_timestamp() - started) * 1000;
END $$;
CREATE TABLE users (id bigint PRIMARY KEY, dfend_id text);
INSERT INTO users SELECT g FROM generate_series(1, greatest(:n, :users)) AS g;
-- Registered concurrently, so the set-up takes seconds, not minutes.
CALL dfend_backfill('users', user_id_column => 'id', id_column => 'dfend_id');
CREATE VIEW per_row AS
    SELECT u.id, dfend_get_identity(u.id) AS identity FROM users AS u WHERE u.id <= :users;
CREATE VIEW one_call AS
    SELECT u.id, i.identity FROM users AS u
    JOIN dfend_get_identities((SELECT array_agg(id) FROM users WHERE id <= :users)) AS i
      ON i.user_id = u.id;
CREATE TEMP TABLE timings (what int, label text, ms float8);
INSERT INTO timings
SELECT w.what, w.label, pg_temp.ms(w.statement)
FROM generate_series(1, :runs) AS run,
     LATERAL (VALUES
        (1, :n || ' lookups, one dfend_get_identity call after another',
         format('SELECT count(dfend_get_identity(g::bigint)) FROM generate_series(1, %s) AS g', :n)),
        (2, :n || ' lookups, one dfend_get_identities call',
         format('SELECT count(identity) FROM dfend_get_identities(ARRAY(SELECT g::bigint FROM generate_series(1, %s) AS g))', :n)),
        (3, 'count() of a view over ' || :users || ' users, one call per row',
         'SELECT count(identity) FROM per_row'),
        (4, 'count() of a view over ' || :users || ' users, one array call',
         'SELECT count(identity) FROM one_call')) AS w(what, label, statement);
SELECT format('%-58s %6s ms', label, round(percentile_disc(0.5) WITHIN GROUP (ORDER BY ms)::numeric))
FROM timings GROUP BY what, label ORDER BY what;
SQL

export SQL_FILE="$DFEND_RUN_DIR/reads.sql" N USERS RUNS
pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/key" \
    psql -XAtq -v ON_ERROR_STOP=1 -v n="$N" -v users="$USERS" -v runs="$RUNS" -f "$SQL_FILE"
echo "(median of $RUNS runs each; the emulator answers after $LATENCY_MS ms)"
