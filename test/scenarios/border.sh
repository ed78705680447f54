#!/bin/bash
# pg_call (src/pg/border.hpp) with a callable that throws a C++ exception:
# the exception comes out after PG_END_TRY, PostgreSQL's error stack is
# intact, later errors still work, and the backend survives (no restart).
# Uses a test-only module, test/border, installed for this run only.
source "$(dirname "$0")/../lib.sh"
make_run_dir
BORDER_DIR="$DFEND_ROOT/test/border"
trap 'make -C "$BORDER_DIR" -s uninstall >/dev/null 2>&1; make -C "$BORDER_DIR" -s clean >/dev/null 2>&1; rm -rf "$DFEND_RUN_DIR"' EXIT
make -C "$BORDER_DIR" -s -j2 >/dev/null
make -C "$BORDER_DIR" -s install >/dev/null

pg_virtualenv -t -v "$DFEND_PG_VERSION" bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    psql -XAtq -v ON_ERROR_STOP=1 -f "$DFEND_ROOT/test/border/dfend_border_test.sql" >/dev/null
    started=$(sql "SELECT pg_postmaster_start_time()")
    # One session: the pid before, a throwing round, a plain error, the pid after.
    out=$(psql -XAtq -c "SELECT pg_backend_pid()" -c "SELECT border_test_throw(1)" \
        -c "SELECT 1/0" -c "SELECT pg_backend_pid()" 2>&1)
    echo "$out" | sed "s/^/# /"
    expect_match "the C++ exception comes out of pg_call and the final ereport reaches the client" \
        "$out" "ERROR:  border test done: 1 rounds, 1 later errors caught"
    expect_match "with the exception'\''s own words, and the ereport inside pg_call as a PostgreSQL error" \
        "$out" "DETAIL:  The C\+\+ exception said \"thrown inside pg_call\"; the ereport said \"raised inside pg_call\"."
    expect_match "a later ordinary error in the same session works" "$out" "ERROR:  division by zero"
    pids=$(echo "$out" | grep -E "^[0-9]+$" | sort -u | wc -l)
    expect "the same backend served every statement (it survived)" "$pids" "1"
    # Many rounds, each in a subtransaction that the error rolls back.
    out=$(sql "DO \$\$
        DECLARE caught int := 0;
        BEGIN
            FOR i IN 1..200 LOOP
                BEGIN
                    PERFORM border_test_throw(50);
                EXCEPTION WHEN raise_exception THEN
                    caught := caught + 1;
                END;
            END LOOP;
            RAISE NOTICE '\''caught %'\'', caught;
        END \$\$")
    expect "10,000 throwing rounds in 200 subtransactions, every error caught" "$out" "NOTICE:  caught 200"
    expect "the server never restarted" "$(sql "SELECT pg_postmaster_start_time()")" "$started"
    expect "it still answers" "$(sql "SELECT 40 + 2")" "42"
' | tee "$DFEND_RUN_DIR/inner.out"
grep -q "^ok - " "$DFEND_RUN_DIR/inner.out" || SCENARIO_FAILED=1
grep -q "^not ok" "$DFEND_RUN_DIR/inner.out" && SCENARIO_FAILED=1
exit $SCENARIO_FAILED
