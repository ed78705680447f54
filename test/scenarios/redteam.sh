#!/bin/bash
# Attacks that a red-team review of 0.2.0 found working, by roles dfend does
# not trust (SECURITY.md), kept as tests now that each is fixed. Each check
# prints "ok" when the attack fails and "not ok" when it succeeds.
#   1. A table owner crashes the server during a superuser's backfill by
#      changing the user id column from text to bigint between
#      dfend_backfill_batch's catalog read and its SELECT (the key datums
#      are then packed into an array of the old type: a bigint is
#      dereferenced as a pointer).
#   2. A table owner adds a trigger of their own on the attached table with
#      dfend_attach's exact arguments, for every UPDATE (no WHEN, no column
#      list): dfend_trigger() accepted it, so updates of unmapped columns
#      queued registrations the attachment never would. It now also checks
#      the trigger's name, events and UPDATE OF columns.
#   3. A role with INSERT on an attached table with a float8 user id lowers
#      extra_float_digits: the outbox stores a rounded key, and the worker
#      reads and registers another user's row instead of theirs.
source "$(dirname "$0")/../lib.sh"
start_scenario

pg_virtualenv -t -v "$DFEND_PG_VERSION" \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o dfend.retry_base_delay=10ms bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    emu() { "$DFEND_ROOT/test/emu" "$@"; }
    as_mallory() { sql "SET ROLE mallory; $1"; }
    sql "CREATE ROLE mallory" >/dev/null
    sql "CREATE ROLE eve" >/dev/null
    sql "CREATE EXTENSION dfend" >/dev/null
    sql "GRANT CREATE ON SCHEMA public TO mallory" >/dev/null

    # 2. A forged trigger with the attachment'"'"'s own arguments.
    as_mallory "CREATE TABLE public.fu (uid text PRIMARY KEY, email text, last_seen int DEFAULT 0, id text)" >/dev/null
    sql "SELECT dfend_attach(\$\$public.fu\$\$, \$\$uid\$\$, \$\$id\$\$, \$\$email\$\$)" >/dev/null
    as_mallory "INSERT INTO public.fu (uid, email) VALUES (\$\$u1\$\$, \$\$u1@example.com\$\$)" >/dev/null
    sql "SELECT dfend_process_queue()" >/dev/null
    expect "the row got its id" "$(sql "SELECT id IS NOT NULL FROM fu")" t
    out=$(as_mallory "CREATE TRIGGER zz_touch AFTER UPDATE ON public.fu FOR EACH ROW EXECUTE FUNCTION public.dfend_trigger(\$\$async\$\$, \$\$uid\$\$, \$\$id\$\$, \$\$email\$\$, \$\$\$\$, \$\$\$\$, \$\$f\$\$, \$\$queue\$\$)")
    for i in 1 2 3 4 5; do as_mallory "UPDATE public.fu SET last_seen = last_seen + 1" >/dev/null 2>&1 || true; done
    queued=$(sql "SELECT count(*) FROM dfend_outbox WHERE table_name = \$\$fu\$\$::regclass")
    before=$(emu stat requests 2>/dev/null || echo 0)
    sql "SELECT dfend_process_queue()" >/dev/null
    after=$(emu stat requests 2>/dev/null || echo 0)
    echo "# forged trigger: $out; queued $queued entries; requests $before -> $after"
    expect "updates of an unmapped column queue nothing, even through a trigger the owner made" "$queued" 0

    # 3. A float8 user id and extra_float_digits.
    sql "CREATE TABLE public.ft (uid float8 PRIMARY KEY, email text, id text)" >/dev/null
    sql "GRANT INSERT ON public.ft TO eve" >/dev/null
    sql "SELECT dfend_attach(\$\$public.ft\$\$, \$\$uid\$\$, \$\$id\$\$, \$\$email\$\$)" >/dev/null
    sql "INSERT INTO public.ft (uid, email) VALUES (1, \$\$victim@example.com\$\$)" >/dev/null
    sql "SELECT dfend_process_queue()" >/dev/null
    sql "UPDATE public.ft SET id = NULL" >/dev/null   # e.g. a restore, or a row still waiting
    sql "DELETE FROM dfend_outbox" >/dev/null
    sql "SET ROLE eve; SET extra_float_digits = -15; INSERT INTO public.ft (uid, email) VALUES (1.00000000001, \$\$eve@example.com\$\$)" >/dev/null
    expect "the outbox holds eve'"'"'s own key" "$(sql "SELECT user_id FROM dfend_outbox WHERE table_name = \$\$ft\$\$::regclass")" "1.00000000001"
    sql "SELECT dfend_process_queue()" >/dev/null
    expect "eve'"'"'s row got an id" "$(sql "SELECT id IS NOT NULL FROM ft WHERE uid = 1.00000000001")" t
    expect "the victim'"'"'s row was not registered because of eve'"'"'s entry" "$(sql "SELECT id IS NULL FROM ft WHERE uid = 1")" t

    # 1. The backfill race: a table owner crashes the server.
    # pg_postmaster_start_time() survives a crash restart; the checkpointer does not.
    checkpointer() { sql "SELECT backend_start FROM pg_stat_activity WHERE backend_type = \$\$checkpointer\$\$"; }
    started=$(checkpointer)
    as_mallory "CREATE TABLE public.mt (uid text PRIMARY KEY, email text, id text)" >/dev/null
    as_mallory "INSERT INTO public.mt (uid, email) VALUES (\$\$1\$\$, \$\$m1@example.com\$\$)" >/dev/null
    # A slow policy (the owner'"'"'s own, as FORCE RLS lets them) widens the window
    # between the backfill'"'"'s count and its first batch.
    as_mallory "CREATE FUNCTION public.slow() RETURNS boolean LANGUAGE sql VOLATILE AS \$f\$ SELECT pg_sleep(1.5) IS NOT NULL \$f\$" >/dev/null
    as_mallory "CREATE FUNCTION public.slow_int(t text) RETURNS bigint LANGUAGE sql VOLATILE AS \$f\$ SELECT pg_sleep(2); SELECT t::bigint \$f\$" >/dev/null
    as_mallory "CREATE POLICY p ON public.mt USING (public.slow())" >/dev/null
    as_mallory "ALTER TABLE public.mt ENABLE ROW LEVEL SECURITY" >/dev/null
    as_mallory "ALTER TABLE public.mt FORCE ROW LEVEL SECURITY" >/dev/null
    # The superuser runs an ordinary backfill.
    ( PGOPTIONS="-c statement_timeout=60s" psql -XAtq -c "CALL dfend_backfill(\$\$public.mt\$\$, user_id_column => \$\$uid\$\$, id_column => \$\$id\$\$, email_column => \$\$email\$\$)" \
        >"$OUT/backfill.out" 2>&1; echo "rc=$?" >>"$OUT/backfill.out" ) &
    backfill=$!
    counting() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$CALL dfend_backfill%\$\$ AND wait_event = \$\$PgSleep\$\$")" -ge 1 ]; }
    wait_until 10 counting || echo "# the backfill did not start counting"
    # Meanwhile the owner changes the column: the ALTER waits for the count,
    # then holds the table while the first batch reads the old catalog.
    as_mallory "ALTER TABLE public.mt ALTER COLUMN uid TYPE bigint USING public.slow_int(uid)" >"$OUT/alter.out" 2>&1 || true
    wait "$backfill" || true
    echo "# backfill: $(tr "\n" " " <"$OUT/backfill.out")"
    echo "# alter: $(tr "\n" " " <"$OUT/alter.out")"
    if grep -q "server closed the connection\|terminated abnormally\|crash" "$OUT/backfill.out"; then
        fail "a table owner crashed the server during a backfill"
    else
        pass "a table owner cannot crash the server during a backfill"
    fi
    sleep 2
    expect "the server never restarted (checkpointer start time)" "$(checkpointer)" "$started"
    expect "mallory is still not a superuser" "$(sql "SELECT rolsuper FROM pg_roles WHERE rolname = \$\$mallory\$\$")" f
    exit $SCENARIO_FAILED
'
