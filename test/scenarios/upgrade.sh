#!/bin/bash
# ALTER EXTENSION dfend UPDATE from 0.1.0 and from 0.2.0 (their install
# scripts are kept in sql/ unchanged): attachments, pending entries and dead letters survive, the
# updated objects are exactly those of a fresh install of the new version,
# and the queue still drains.
source "$(dirname "$0")/../lib.sh"
start_scenario

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" -o dfend.retry_base_delay=10ms bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    # Every object of the extension, described by what defines it.
    describe="SELECT string_agg(x, chr(10) ORDER BY x) FROM (
        SELECT p.oid::regprocedure::text || \$\$ \$\$ || md5(p.prosrc) || \$\$ \$\$ ||
               coalesce(array_to_string(p.proconfig, \$\$,\$\$), \$\$\$\$) || \$\$ \$\$ ||
               p.prosecdef::text || \$\$ \$\$ || p.provolatile::text || \$\$ \$\$ || coalesce((SELECT string_agg(a::text, \$\$,\$\$ ORDER BY a::text) FROM unnest(p.proacl) a), \$\$\$\$) AS x
        FROM pg_proc p JOIN pg_depend d ON d.classid = \$\$pg_proc\$\$::regclass AND d.objid = p.oid
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = \$\$dfend\$\$
        UNION ALL
        SELECT c.oid::regclass::text || \$\$ \$\$ || c.relkind::text || \$\$ \$\$ || coalesce((SELECT string_agg(a::text, \$\$,\$\$ ORDER BY a::text) FROM unnest(c.relacl) a), \$\$\$\$) || \$\$ \$\$ ||
               coalesce(md5(pg_get_viewdef(c.oid)), \$\$\$\$) || \$\$ \$\$ ||
               (SELECT string_agg(a.attname || \$\$:\$\$ || format_type(a.atttypid, a.atttypmod), \$\$,\$\$ ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
        FROM pg_class c JOIN pg_depend d ON d.classid = \$\$pg_class\$\$::regclass AND d.objid = c.oid
        JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = \$\$dfend\$\$) s"

    sql "CREATE DATABASE fresh" >/dev/null
    PGDATABASE=fresh sql "CREATE EXTENSION dfend" >/dev/null
    fresh=$(PGDATABASE=fresh sql "$describe")
    dumped="SELECT string_agg(c::regclass::text, \$\$,\$\$ ORDER BY c::regclass::text) FROM pg_extension e, unnest(e.extconfig) c WHERE e.extname = \$\$dfend\$\$"
    fresh_dumped=$(PGDATABASE=fresh sql "$dumped")
    expect_match "a fresh install dumps the backfill history" "$fresh_dumped" "dfend_backfill_run,"

    target=$(sed -n "s/^default_version = .\(.*\).$/\1/p" "$DFEND_ROOT/dfend.control")
    for from in 0.1.0 0.2.0; do
    sql "DROP DATABASE IF EXISTS upgrade_from" >/dev/null
    sql "CREATE DATABASE upgrade_from" >/dev/null
    export PGDATABASE=upgrade_from
    sql "CREATE EXTENSION dfend VERSION \$\$$from\$\$" >/dev/null
    expect "$from installs from its own script" "$(sql "SELECT extversion FROM pg_extension WHERE extname = \$\$dfend\$\$")" "$from"
    sql "CREATE TABLE users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "SELECT dfend_attach(\$\$users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
    sql "INSERT INTO users VALUES (1, \$\$not-an-email\$\$), (4, \$\$four@example.com\$\$)" >/dev/null
    sql "SELECT dfend_process_queue()" >/dev/null
    # This library with the old objects, before ALTER EXTENSION UPDATE.
    expect "$from: before: this library stores ids" "$(sql "SELECT dfend_id IS NOT NULL FROM users WHERE id = 4")" t
    sql "CREATE TABLE others (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "INSERT INTO others VALUES (1, \$\$o1@example.com\$\$)" >/dev/null
    sql "CALL dfend_backfill(\$\$others\$\$, user_id_column => \$\$id\$\$, id_column => \$\$dfend_id\$\$, email_column => \$\$email\$\$)" >/dev/null 2>&1
    expect "$from: before: and backfills" "$(sql "SELECT count(dfend_id) FROM others")" 1
    sql "INSERT INTO users VALUES (2, \$\$two@example.com\$\$), (3, \$\$three@example.com\$\$)" >/dev/null
    sql "CREATE TABLE members (id text PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "SELECT dfend_attach(\$\$members\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$, mode => \$\$sync\$\$)" >/dev/null
    sql "INSERT INTO members VALUES (\$\$m-0\$\$, \$\$m0@example.com\$\$)" >/dev/null
    expect "$from: before the update, the new library registers through the old BEFORE trigger" \
        "$(sql "SELECT dfend_id LIKE \$\$idn_%\$\$ FROM members WHERE id = \$\$m-0\$\$")" t
    expect "$from: before: one dead letter" "$(sql "SELECT count(*) FROM dfend_dead_letters")" 1
    expect "$from: before: two pending entries" "$(sql "SELECT count(*) FROM dfend_outbox WHERE state = \$\$pending\$\$")" 2

    sql "ALTER EXTENSION dfend UPDATE" >/dev/null
    expect "$from: ALTER EXTENSION dfend UPDATE reaches $target" "$(sql "SELECT extversion FROM pg_extension WHERE extname = \$\$dfend\$\$")" "$target"
    updated=$(sql "$describe")
    if [ "$updated" = "$fresh" ]; then
        pass "$from: the updated objects are those of a fresh $target install"
    else
        fail "$from: the updated objects differ from a fresh $target install"
        diff <(echo "$fresh") <(echo "$updated") | head -20
    fi
    expect "$from: the same tables are dumped as by a fresh install" "$(sql "$dumped")" "$fresh_dumped"
    expect "$from: the attachments survived" "$(sql "SELECT count(*) FROM dfend_attachments")" 2
    expect "$from: it still rejects invalid fields" "$(sql "SELECT invalid_fields FROM dfend_attachments WHERE table_name = \$\$users\$\$::regclass")" reject
    expect "$from: the dead letter survived" "$(sql "SELECT count(*) FROM dfend_dead_letters")" 1
    expect "$from: the pending entries drain" "$(sql "SELECT dfend_process_queue()")" 2
    expect "$from: their rows got ids" "$(sql "SELECT count(*) FROM users WHERE dfend_id IS NOT NULL")" 3
    expect "$from: the triggers of a sync table now fire AFTER the row is written" \
        "$(sql "SELECT string_agg(tgname || \$\$:\$\$ || (tgtype & 2 = 0)::text, \$\$ \$\$ ORDER BY tgname) FROM pg_trigger WHERE tgrelid = \$\$members\$\$::regclass")" \
        "dfend_insert:true dfend_update:true"
    sql "INSERT INTO members VALUES (\$\$m-1\$\$, \$\$m1@example.com\$\$)" >/dev/null
    expect "$from: and COMMIT registers a new row of it" "$(sql "SELECT dfend_id LIKE \$\$idn_%\$\$ FROM members WHERE id = \$\$m-1\$\$")" t
    sql "UPDATE users SET email = \$\$one@example.com\$\$ WHERE id = 1" >/dev/null
    expect "$from: a new change is queued by the old trigger" "$(sql "SELECT dfend_process_queue()")" 1
    expect "$from: and stored" "$(sql "SELECT dfend_id IS NOT NULL FROM users WHERE id = 1")" t
    unset PGDATABASE
    done

    # A library meets SQL objects of a version it does not serve (as an older
    # build left in place after an update would): it refuses, and says how
    # to fix it, instead of running statements against unknown tables.
    export PGDATABASE=upgrade_from
    sql "UPDATE pg_extension SET extversion = \$\$9.9.9\$\$ WHERE extname = \$\$dfend\$\$" >/dev/null
    out=$(psql -X -v ON_ERROR_STOP=1 -c "INSERT INTO users VALUES (50, \$\$fifty@example.com\$\$)" 2>&1 || true)
    expect_match "the library refuses SQL objects of a version it does not serve" "$out" \
        "the dfend library $target does not serve version 9.9.9 of the extension"
    expect_match "and says what to do" "$out" "HINT:  Run ALTER EXTENSION dfend UPDATE"
    expect "nothing was written" "$(sql "SELECT count(*) FROM users WHERE id = 50")" 0
    sql "UPDATE pg_extension SET extversion = \$\$$target\$\$ WHERE extname = \$\$dfend\$\$" >/dev/null
    unset PGDATABASE
    exit $SCENARIO_FAILED
'
