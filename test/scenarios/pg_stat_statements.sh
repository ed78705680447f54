#!/bin/bash
# pg_stat_statements preloaded before and after dfend: a long multi-statement
# string that tries to set the key neither crashes the server (dfend used to
# rewrite the text that pg_stat_statements reads at the statement's original
# offsets) nor puts the key in pg_stat_statements.
source "$(dirname "$0")/../lib.sh"
make_run_dir
trap 'rm -rf "$DFEND_RUN_DIR"' EXIT
export KEY=sk_pgss_key_9e1f27
export COMMENT="/* $(head -c 3000 /dev/zero | tr '\0' x) */"
export DFEND_RUN_DIR

cat > "$DFEND_RUN_DIR/inner.sh" <<'INNER'
source "$DFEND_ROOT/test/lib.sh"
order=$1
sql "CREATE EXTENSION pg_stat_statements" >/dev/null
sql "SELECT pg_stat_statements_reset()" >/dev/null
started=$(sql "SELECT pg_postmaster_start_time()")
key_rows() { sql "SELECT count(*) FROM pg_stat_statements WHERE strpos(query, '${KEY:0:6}' || '${KEY:6}') > 0"; }
# One session: its pid before and after the statements.
out=$(psql -XAt -c "SELECT 'pid ' || pg_backend_pid()" \
    -c "SELECT 1 $COMMENT; SET dfend.api_key = '$KEY'; SELECT 2" \
    -c "SELECT 1 $COMMENT; SELECT set_config('dfend.api_key', '$KEY', false); SELECT 2" \
    -c "SELECT 1 $COMMENT; ALTER SYSTEM SET dfend.api_key = '$KEY'" \
    -c "DO \$\$ BEGIN PERFORM 1; EXECUTE 'SET dfend.api_key = ''$KEY'''; END \$\$" \
    -c "SELECT 'pid ' || pg_backend_pid()" 2>&1)
pids=$(grep -E '^pid [0-9]+$' <<<"$out" | sort -u | wc -l)
expect "$order: both pid lines were printed" "$(grep -cE '^pid [0-9]+$' <<<"$out")" 2
expect "$order: the session survives every attempt (one backend pid)" "$pids" 1
expect "$order: every attempt is refused" "$(grep -c 'ERROR' <<<"$out")" 4
printf 'SELECT set_config($$dfend.api_key$$, $$%s$$, false);\n' "$KEY" > "$DFEND_RUN_DIR/extended.sql"
expect_match "$order: the extended protocol is refused too" \
    "$(pgbench -n -t 1 -M extended -f "$DFEND_RUN_DIR/extended.sql" 2>&1)" "cannot be changed now"
expect "$order: the server did not restart" "$(sql "SELECT pg_postmaster_start_time()")" "$started"
expect "$order: pg_stat_statements is readable" \
    "$(sql "SELECT count(*) > 0 FROM (SELECT query FROM pg_stat_statements) s")" "t"
expect "$order: the statement before the refusal is recorded with its own text" \
    "$(sql "SELECT count(*) FROM pg_stat_statements WHERE query = 'SELECT \$1 $COMMENT'")" 1
expect "$order: pg_stat_statements never holds the key" "$(key_rows)" 0
# What dfend cannot reach: a utility statement that succeeds is stored as
# typed (pg_stat_statements.track_utility), e.g. a DO block that swallows
# dfend's refusal. With track_utility off it is not stored.
sql "DO \$\$ BEGIN EXECUTE 'SET dfend.api_key = ''$KEY'''; EXCEPTION WHEN OTHERS THEN NULL; END \$\$" >/dev/null
expect "$order: a DO block that swallows the refusal is stored as typed (the limit)" "$(key_rows)" 1
sql "SELECT pg_stat_statements_reset()" >/dev/null
psql -XAtq -c "SET pg_stat_statements.track_utility = off" \
    -c "DO \$\$ BEGIN EXECUTE 'SET dfend.api_key = ''$KEY'''; EXCEPTION WHEN OTHERS THEN NULL; END \$\$" >/dev/null
expect "$order: ... and not with pg_stat_statements.track_utility = off" "$(key_rows)" 0
expect "$order: the server did not restart (end)" "$(sql "SELECT pg_postmaster_start_time()")" "$started"
INNER

for order in pg_stat_statements,dfend dfend,pg_stat_statements; do
    pg_virtualenv -t -v "$DFEND_PG_VERSION" -o "shared_preload_libraries=$order" -o pg_stat_statements.track=all \
        -o pg_stat_statements.track_utility=on -o log_statement=all \
        bash "$DFEND_RUN_DIR/inner.sh" "$order" | tee "$DFEND_RUN_DIR/inner.out"
    grep -q '^not ok' "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
done
exit $SCENARIO_FAILED
