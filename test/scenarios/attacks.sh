#!/bin/bash
# Attacks on the worker by roles dfend does not trust (SECURITY.md), with
# pg_stat_statements preloaded before dfend:
#   1. a database owner sets search_path (and other settings) for the
#      worker's database and plants operators for it;
#   5. one owner's table tries to stall everyone: a trigger raising 57014,
#      a trigger that sleeps, a row held FOR UPDATE, a table held ACCESS
#      EXCLUSIVE with bulk rows queued, a user id too long for a btree
#      entry, an advisory lock on the backfill's old lock key.
# Each must fail or do nothing: no role becomes superuser, the server does
# not restart, the worker keeps its PID, and the other tables get their ids.
# Last, the pg_regress attacks file (sql/attacks.sql) runs in the same
# cluster, so every attack also runs with pg_stat_statements loaded.
source "$(dirname "$0")/../lib.sh"
start_scenario

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=pg_stat_statements,dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o dfend.worker_databases=appdb -o dfend.retry_base_delay=10ms \
    -o dfend.table_timeout=1s -o dfend.worker_poll_interval=1s bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    # This script'"'"'s own sessions are superusers too: they must not take the
    # settings the database owner plants below.
    export PGOPTIONS="-c search_path=public,pg_catalog -c lock_timeout=0 -c default_transaction_read_only=off"
    emu() { "$DFEND_ROOT/test/emu" "$@"; }
    as_alice() { sql "SET ROLE alice; $1"; }
    # A crash restarts the checkpointer, not the postmaster.
    checkpointer() { sql "SELECT backend_start FROM pg_stat_activity WHERE backend_type = \$\$checkpointer\$\$"; }
    started=$(checkpointer)
    sql "CREATE ROLE alice" >/dev/null
    sql "CREATE DATABASE appdb OWNER alice" >/dev/null
    export PGDATABASE=appdb
    sql "CREATE EXTENSION dfend" >/dev/null
    sql "CREATE EXTENSION pg_stat_statements" >/dev/null
    sql "GRANT CREATE ON SCHEMA public TO alice" >/dev/null
    worker_pid() { sql "SELECT pid FROM pg_stat_activity WHERE backend_type = \$\$dfend worker\$\$ AND datname = \$\$appdb\$\$"; }
    worker_up() { [ -n "$(worker_pid)" ]; }
    wait_until 30 worker_up || fail "the worker runs"
    alice_super() { sql "SELECT rolsuper FROM pg_roles WHERE rolname = \$\$alice\$\$"; }

    # A table of another owner, whose rows must keep getting their ids.
    sql "CREATE TABLE b_users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "SELECT dfend_attach(\$\$public.b_users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
    next_b=0
    b_gets_ids() { # b_gets_ids SECONDS: a new row of b_users gets its id in time
        next_b=$((next_b + 1))
        sql "INSERT INTO b_users VALUES ($next_b, \$\$b$next_b@example.com\$\$)" >/dev/null
        has() { [ "$(sql "SELECT dfend_id IS NOT NULL FROM b_users WHERE id = $next_b")" = t ]; }
        wait_until "$1" has
    }

    # 1. The database owner plants an operator and points the database at it.
    as_alice "CREATE TABLE public.escalations (who name, at timestamptz DEFAULT now())" >/dev/null
    as_alice "GRANT INSERT ON public.escalations TO PUBLIC" >/dev/null
    as_alice "CREATE SCHEMA evil" >/dev/null
    for type in text bigint oid regclass timestamptz; do
        as_alice "CREATE FUNCTION evil.eq(a $type, b $type) RETURNS boolean LANGUAGE plpgsql AS \$f\$
            BEGIN
                IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                    INSERT INTO public.escalations (who) VALUES (current_user);
                    EXECUTE \$\$ALTER ROLE alice SUPERUSER\$\$;
                END IF;
                RETURN a OPERATOR(pg_catalog.=) b;
            END \$f\$" >/dev/null
        as_alice "CREATE OPERATOR evil.= (LEFTARG = $type, RIGHTARG = $type, FUNCTION = evil.eq)" >/dev/null
        as_alice "CREATE OPERATOR evil.<= (LEFTARG = $type, RIGHTARG = $type, FUNCTION = evil.eq)" >/dev/null
    done
    as_alice "ALTER DATABASE appdb SET search_path = evil, pg_catalog, public" >/dev/null
    as_alice "ALTER DATABASE appdb SET lock_timeout = \$\$1ms\$\$" >/dev/null
    as_alice "ALTER DATABASE appdb SET default_transaction_read_only = on" >/dev/null
    old_pid=$(worker_pid)
    sql "SELECT pg_terminate_backend($old_pid)" >/dev/null
    restarted() { local p; p=$(worker_pid); [ -n "$p" ] && [ "$p" != "$old_pid" ]; }
    if wait_until 30 restarted; then pass "the worker restarted under the database owner'"'"'s settings"; else fail "the worker restarted"; fi
    if b_gets_ids 15; then pass "the worker still stores ids"; else fail "the worker still stores ids"; fi
    expect "the database owner did not become superuser" "$(alice_super)" f
    expect "the planted operator never ran as a superuser" "$(sql "SELECT count(*) FROM public.escalations")" 0
    sql "ALTER DATABASE appdb RESET ALL" >/dev/null
    worker=$(worker_pid)

    # 5. A trigger raising 57014 itself, and one that sleeps, on one owner'"'"'s
    # tables: their entries wait; other tables are not held up.
    as_alice "CREATE TABLE public.p_users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    as_alice "CREATE TABLE public.s_users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    as_alice "CREATE FUNCTION public.poison() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN RAISE EXCEPTION \$\$poisoned\$\$ USING ERRCODE = \$\$57014\$\$; END \$f\$" >/dev/null
    as_alice "CREATE FUNCTION public.slow() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN PERFORM pg_sleep(60); RETURN NEW; END \$f\$" >/dev/null
    as_alice "CREATE TRIGGER poison BEFORE UPDATE ON public.p_users FOR EACH ROW EXECUTE FUNCTION public.poison()" >/dev/null
    as_alice "CREATE TRIGGER slow BEFORE UPDATE ON public.s_users FOR EACH ROW EXECUTE FUNCTION public.slow()" >/dev/null
    for t in p_users s_users; do
        sql "SELECT dfend_attach(\$\$public.$t\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
        as_alice "INSERT INTO public.$t VALUES (1, \$\$$t@example.com\$\$)" >/dev/null
    done
    failed_on() { sql "SELECT last_error FROM dfend_outbox WHERE table_name = \$\$$1\$\$::regclass"; }
    has_error() { [ -n "$(failed_on "$1")" ]; }
    wait_until 20 has_error p_users || true
    expect_match "a trigger raising 57014 fails only its own table" "$(failed_on p_users)" "poisoned"
    wait_until 20 has_error s_users || true
    expect_match "a trigger that sleeps is cut off by dfend.table_timeout" "$(failed_on s_users)" "dfend.table_timeout"
    if b_gets_ids 10; then pass "other tables get their ids meanwhile"; else fail "other tables get their ids meanwhile"; fi
    expect "the worker did not restart" "$(worker_pid)" "$worker"
    for t in p_users s_users; do sql "SELECT dfend_detach(\$\$public.$t\$\$)" >/dev/null; done

    # A session holds one pending row FOR UPDATE.
    sql "CREATE TABLE l_users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "INSERT INTO l_users VALUES (1, \$\$l1@example.com\$\$), (2, \$\$l2@example.com\$\$)" >/dev/null
    sql "SELECT dfend_attach(\$\$public.l_users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
    psql -XAtq -c "BEGIN" -c "SELECT 1 FROM l_users WHERE id = 1 FOR UPDATE" \
        -c "SELECT pg_sleep(60) /* holding */" >/dev/null 2>&1 &
    holder=$!
    holding() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$%/* holding */\$\$ AND state = \$\$active\$\$")" = 1 ]; }
    wait_until 10 holding || fail "the lock holder started"
    expect "both rows queued" "$(sql "SELECT dfend_enqueue_backfill(\$\$public.l_users\$\$)")" 2
    unlocked_done() { [ "$(sql "SELECT dfend_id IS NOT NULL FROM l_users WHERE id = 2")" = t ]; }
    if wait_until 10 unlocked_done; then pass "the row that is not locked gets its id"; else fail "the row that is not locked gets its id"; fi
    if b_gets_ids 10; then pass "a row held FOR UPDATE holds up no other table"; else fail "a row held FOR UPDATE holds up no other table"; fi
    expect_match "the locked row waits, with a reason" "$(sql "SELECT last_error FROM dfend_outbox WHERE table_name = \$\$l_users\$\$::regclass")" "locked"
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE \$\$%/* holding */\$\$ AND pid <> pg_backend_pid()" >/dev/null
    wait "$holder" 2>/dev/null || true
    locked_done() { [ "$(sql "SELECT dfend_id IS NOT NULL FROM l_users WHERE id = 1")" = t ]; }
    if wait_until 30 locked_done; then pass "once released, the locked row gets its id"; else fail "once released, the locked row gets its id"; fi
    expect "the worker did not restart" "$(worker_pid)" "$worker"

    # Bulk rows (a red-team review of 0.5.0). An owner inserts 100 rows
    # (one bulk row) and holds their table ACCESS EXCLUSIVE in the same open
    # transaction, so it also holds dfend_outbox_bulk: the worker expands and
    # stores other tables'"'"' bulk rows meanwhile. A user id too long for a
    # btree entry, which DFend refuses, goes dead without failing the batch.
    as_alice "CREATE TABLE public.k_users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    as_alice "CREATE TABLE public.t_users (id text, email text, dfend_id text)" >/dev/null
    as_alice "CREATE TABLE public.gate (x int)" >/dev/null
    for t in k_users t_users; do
        sql "SELECT dfend_attach(\$\$public.$t\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null 2>&1
    done
    # The gate: while this session holds it, the holder below keeps its
    # transaction open; ending it lets the holder commit.
    psql -XAtq -c "BEGIN" -c "LOCK TABLE public.gate" -c "SELECT pg_sleep(60) /* gate */" >/dev/null 2>&1 &
    gate=$!
    gated() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$%/* gate */\$\$ AND state = \$\$active\$\$")" = 1 ]; }
    wait_until 10 gated || fail "the gate started"
    psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE alice" -c "BEGIN" \
        -c "INSERT INTO public.k_users SELECT g, \$\$k\$\$ || g || \$\$@example.com\$\$ FROM generate_series(1, 100) g" \
        -c "LOCK TABLE public.k_users IN ACCESS EXCLUSIVE MODE" \
        -c "SELECT count(*) /* bulk holder */ FROM public.gate" -c "COMMIT" >"$OUT/bulk-holder.out" 2>&1 &
    bulk_holder=$!
    bulk_holding() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$%/* bulk holder */%\$\$ AND wait_event_type = \$\$Lock\$\$")" = 1 ]; }
    wait_until 10 bulk_holding || fail "the table lock holder started"
    expect "the holder holds dfend_outbox_bulk" "$(sql "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.relation = \$\$dfend_outbox_bulk\$\$::regclass AND l.granted AND l.mode = \$\$RowExclusiveLock\$\$ AND a.query LIKE \$\$%/* bulk holder */%\$\$ AND a.wait_event_type = \$\$Lock\$\$")" 1
    as_alice "INSERT INTO public.t_users SELECT CASE WHEN g = 1 THEN (SELECT string_agg(md5(i::text), \$\$\$\$) FROM generate_series(1, 300) i) ELSE \$\$t\$\$ || g END, \$\$not an email\$\$ FROM generate_series(1, 100) g" >/dev/null
    sql "INSERT INTO b_users SELECT g, \$\$b\$\$ || g || \$\$@example.com\$\$ FROM generate_series(1001, 1100) g" >/dev/null
    bulk_done() { [ "$(sql "SELECT count(*) FROM b_users WHERE id > 1000 AND dfend_id IS NOT NULL")" = 100 ]; }
    if wait_until 30 bulk_done; then pass "a transaction holding its table and dfend_outbox_bulk holds up no other table'"'"'s bulk rows"; else fail "a transaction holding its table and dfend_outbox_bulk holds up no other table'"'"'s bulk rows"; fi
    long_dead() { [ "$(sql "SELECT count(*) FROM dfend_dead_letters WHERE table_name = \$\$t_users\$\$::regclass AND length(user_id) = 9600")" = 1 ]; }
    if wait_until 30 long_dead; then pass "a user id too long for a btree entry becomes a dead letter"; else fail "a user id too long for a btree entry becomes a dead letter"; fi
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE \$\$%/* gate */\$\$ AND pid <> pg_backend_pid()" >/dev/null
    wait "$gate" 2>/dev/null || true
    wait "$bulk_holder" || fail "the holder committed ($(cat "$OUT/bulk-holder.out"))"
    held_done() { [ "$(sql "SELECT count(dfend_id) FROM k_users")" = 100 ]; }
    if wait_until 30 held_done; then pass "once committed, the held table'"'"'s rows get their ids"; else fail "once committed, the held table'"'"'s rows get their ids"; fi
    expect "the worker did not restart" "$(worker_pid)" "$worker"
    for t in k_users t_users; do sql "SELECT dfend_detach(\$\$public.$t\$\$)" >/dev/null; done

    # The backfill'"'"'s old advisory lock key no longer blocks it.
    sql "CREATE TABLE bf_users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "INSERT INTO bf_users SELECT g, \$\$bf\$\$ || g || \$\$@example.com\$\$ FROM generate_series(1, 50) g" >/dev/null
    # 0.1.0 took pg_advisory_xact_lock((x'"'"'64666e64'"'"'::bigint << 32) | table oid).
    psql -XAtq -v ON_ERROR_STOP=1 -c "SET ROLE alice" \
        -c "SELECT pg_advisory_lock((1684434532::bigint << 32) | \$\$public.bf_users\$\$::regclass::oid::bigint)" \
        -c "SELECT pg_sleep(60) /* advisory */" >/dev/null 2>&1 &
    advisory=$!
    advising() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$%/* advisory */\$\$ AND state = \$\$active\$\$")" = 1 ]; }
    wait_until 10 advising || fail "the advisory lock holder started"
    expect "another role holds the old advisory key" "$(sql "SELECT count(*) FROM pg_locks WHERE locktype = \$\$advisory\$\$ AND granted AND objid = \$\$public.bf_users\$\$::regclass::oid")" 1
    if out=$(PGOPTIONS="$PGOPTIONS -c statement_timeout=30s" psql -XAtq -v ON_ERROR_STOP=1 -c "CALL dfend_backfill(\$\$public.bf_users\$\$, user_id_column => \$\$id\$\$, id_column => \$\$dfend_id\$\$, email_column => \$\$email\$\$)" 2>&1); then
        pass "a role holding an advisory lock cannot make a backfill wait"
    else
        fail "a backfill despite an advisory lock ($out)"
    fi
    expect "the backfill stored every id" "$(sql "SELECT count(*) FROM bf_users WHERE dfend_id IS NULL")" 0
    sql "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE \$\$%/* advisory */\$\$ AND pid <> pg_backend_pid()" >/dev/null
    wait "$advisory" 2>/dev/null || true

    # Every pg_regress attack again, with pg_stat_statements loaded.
    if PGOPTIONS= make -s -C "$DFEND_ROOT" installcheck REGRESS="setup attacks" \
            >"$OUT/attacks-regress.log" 2>&1; then
        pass "sql/attacks.sql with pg_stat_statements preloaded"
    else
        fail "sql/attacks.sql with pg_stat_statements preloaded"
        cat "$OUT/attacks-regress.log"; head -100 "$DFEND_ROOT/regression.diffs" 2>/dev/null
    fi
    expect "pg_stat_statements is readable" "$(sql "SELECT count(*) > 0 FROM pg_stat_statements")" t
    expect "alice is still not a superuser" "$(alice_super)" f
    expect "the server never restarted (checkpointer start time)" "$(checkpointer)" "$started"
    exit $SCENARIO_FAILED
'
