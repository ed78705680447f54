#!/bin/bash
# ALTER EXTENSION dfend UPDATE from 0.1.0, 0.2.0, 0.3.0 and 0.4.0 (their install
# scripts are kept in sql/ unchanged): attachments, pending entries and dead letters survive, the
# updated objects are exactly those of a fresh install of the new version,
# the attached tables' triggers are those dfend_attach makes now, and the
# queue still drains.
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
    expect_match "and the bulk rows of the outbox" "$fresh_dumped" "(^|,)dfend_outbox_bulk(,|$)"
    expect_match "with their sequence" "$fresh_dumped" "(^|,)dfend_outbox_bulk_bulk_id_seq(,|$)"

    # The insert triggers dfend_attach makes now, on the tables the loop
    # attaches (the update triggers of 0.1.0 attachments keep their own WHEN).
    attach_tables() {
        sql "CREATE TABLE users (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
        sql "SELECT dfend_attach(\$\$users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
        sql "CREATE TABLE members (id text PRIMARY KEY, email text, dfend_id text)" >/dev/null
        sql "SELECT dfend_attach(\$\$members\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$, mode => \$\$sync\$\$)" >/dev/null
        sql "CREATE TABLE parted (id int PRIMARY KEY, email text, dfend_id text) PARTITION BY RANGE (id)" >/dev/null
        sql "CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100)" >/dev/null
        sql "SELECT dfend_attach(\$\$parted\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
        sql "CREATE TABLE quiet (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
        sql "SELECT dfend_attach(\$\$quiet\$\$, \$\$id\$\$, \$\$dfend_id\$\$, \$\$email\$\$)" >/dev/null
        sql "ALTER TABLE quiet DISABLE TRIGGER dfend_insert" >/dev/null
    }
    triggers="SELECT string_agg(tgrelid::regclass::text || \$\$ \$\$ || tgenabled::text || \$\$ \$\$ || pg_get_triggerdef(oid), chr(10) ORDER BY tgrelid::regclass::text, tgname)
              FROM pg_trigger WHERE tgname = \$\$dfend_insert\$\$"
    PGDATABASE=fresh attach_tables
    fresh_triggers=$(PGDATABASE=fresh sql "$triggers")
    expect_match "a fresh dfend_attach makes a statement trigger reading the inserted rows" "$fresh_triggers" \
        "users O CREATE TRIGGER dfend_insert AFTER INSERT ON public.users REFERENCING NEW TABLE AS dfend_inserted FOR EACH STATEMENT "
    expect_match "and a row trigger on a partitioned table, which its partitions clone" "$fresh_triggers" \
        "parted_low O CREATE TRIGGER dfend_insert AFTER INSERT ON public.parted_low FOR EACH ROW "

    target=$(sed -n "s/^default_version = .\(.*\).$/\1/p" "$DFEND_ROOT/dfend.control")
    for from in 0.1.0 0.2.0 0.3.0 0.4.0; do
    # 0.3.0 and later attach with invalid_fields => drop (the invalid email
    # is left out, no dead letter) and make sync triggers that fire AFTER the
    # row is written; older versions reject the row and fire BEFORE.
    if [ "$from" = 0.3.0 ] || [ "$from" = 0.4.0 ]; then
        dead_before=0 invalid_fields=drop stored_after=4 sync_timing=AFTER
    else
        dead_before=1 invalid_fields=reject stored_after=3 sync_timing=BEFORE
    fi
    sql "DROP DATABASE IF EXISTS upgrade_from" >/dev/null
    sql "CREATE DATABASE upgrade_from" >/dev/null
    export PGDATABASE=upgrade_from
    sql "CREATE EXTENSION dfend VERSION \$\$$from\$\$" >/dev/null
    expect "$from installs from its own script" "$(sql "SELECT extversion FROM pg_extension WHERE extname = \$\$dfend\$\$")" "$from"
    attach_tables
    sql "INSERT INTO users VALUES (1, \$\$not-an-email\$\$), (4, \$\$four@example.com\$\$)" >/dev/null
    sql "SELECT dfend_process_queue()" >/dev/null
    # This library with the old objects, before ALTER EXTENSION UPDATE.
    expect "$from: before: this library stores ids" "$(sql "SELECT dfend_id IS NOT NULL FROM users WHERE id = 4")" t
    sql "CREATE TABLE others (id int PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "INSERT INTO others VALUES (1, \$\$o1@example.com\$\$)" >/dev/null
    sql "CALL dfend_backfill(\$\$others\$\$, user_id_column => \$\$id\$\$, id_column => \$\$dfend_id\$\$, email_column => \$\$email\$\$)" >/dev/null 2>&1
    expect "$from: before: and backfills" "$(sql "SELECT count(dfend_id) FROM others")" 1
    sql "INSERT INTO users VALUES (2, \$\$two@example.com\$\$), (3, \$\$three@example.com\$\$)" >/dev/null
    sql "INSERT INTO members VALUES (\$\$m-0\$\$, \$\$m0@example.com\$\$)" >/dev/null
    expect "$from: before the update, the new library registers through the old $sync_timing row trigger" \
        "$(sql "SELECT dfend_id LIKE \$\$idn_%\$\$ FROM members WHERE id = \$\$m-0\$\$")" t
    expect "$from: before: $dead_before dead letter(s)" "$(sql "SELECT count(*) FROM dfend_dead_letters")" "$dead_before"
    expect "$from: before: two pending entries" "$(sql "SELECT count(*) FROM dfend_outbox WHERE state = \$\$pending\$\$")" 2
    sql "INSERT INTO parted VALUES (5, \$\$five@example.com\$\$)" >/dev/null
    sql "INSERT INTO parted_low VALUES (6, \$\$six@example.com\$\$)" >/dev/null
    expect "$from: before: the partitioned table queues rows, inserted through it or not" \
        "$(sql "SELECT count(*) FROM dfend_outbox WHERE table_name = \$\$parted\$\$::regclass")" 2
    sql "DELETE FROM dfend_outbox WHERE table_name = \$\$parted\$\$::regclass" >/dev/null
    if [ "$from" = 0.4.0 ]; then
        expect "$from: before: the triggers are those of a fresh dfend_attach" "$(sql "$triggers")" "$fresh_triggers"
    else
        expect "$from: before: every dfend trigger is a row trigger" \
            "$(sql "SELECT count(*) FROM pg_trigger WHERE tgname LIKE \$\$dfend%\$\$ AND tgtype & 1 = 0")" 0
    fi

    # In one session: a 100-row INSERT before the update (no
    # dfend_outbox_bulk yet: an entry per row), the update, and the same
    # after it (the trigger finds the new table: one bulk row).
    psql -XAtq -v ON_ERROR_STOP=1 \
        -c "INSERT INTO users SELECT i, format(\$\$u%s@example.com\$\$, i) FROM generate_series(1000, 1099) AS i" \
        -c "ALTER EXTENSION dfend UPDATE" \
        -c "INSERT INTO users SELECT i, format(\$\$u%s@example.com\$\$, i) FROM generate_series(1100, 1199) AS i" >/dev/null
    expect "$from: before the update, 100 rows of one INSERT have an entry each" \
        "$(sql "SELECT count(*) FROM dfend_outbox WHERE table_name = \$\$users\$\$::regclass AND user_id::int BETWEEN 1000 AND 1099")" 100
    expect "$from: after it, in the same session, the next 100 make one bulk row" \
        "$(sql "SELECT count(*) || \$\$ \$\$ || min(user_ids[1]) || \$\$ \$\$ || sum(cardinality(user_ids)) FROM dfend_outbox_bulk")" "1 1100 100"
    expect "$from: the queue status counts both" "$(sql "SELECT pending FROM dfend_queue_status")" 202
    sql "DELETE FROM dfend_outbox WHERE table_name = \$\$users\$\$::regclass AND user_id::int >= 1000" >/dev/null
    sql "DELETE FROM dfend_outbox_bulk" >/dev/null
    sql "DELETE FROM users WHERE id >= 1000" >/dev/null
    expect "$from: ALTER EXTENSION dfend UPDATE reaches $target" "$(sql "SELECT extversion FROM pg_extension WHERE extname = \$\$dfend\$\$")" "$target"
    updated=$(sql "$describe")
    if [ "$updated" = "$fresh" ]; then
        pass "$from: the updated objects are those of a fresh $target install"
    else
        fail "$from: the updated objects differ from a fresh $target install"
        diff <(echo "$fresh") <(echo "$updated") | head -20
    fi
    expect "$from: the same tables are dumped as by a fresh install" "$(sql "$dumped")" "$fresh_dumped"
    expect "$from: the attachments survived" "$(sql "SELECT count(*) FROM dfend_attachments")" 4
    expect "$from: it keeps its invalid_fields" "$(sql "SELECT invalid_fields FROM dfend_attachments WHERE table_name = \$\$users\$\$::regclass")" "$invalid_fields"
    expect "$from: the dead letters survived" "$(sql "SELECT count(*) FROM dfend_dead_letters")" "$dead_before"
    expect "$from: the pending entries drain" "$(sql "SELECT dfend_process_queue()")" 2
    expect "$from: their rows got ids" "$(sql "SELECT count(*) FROM users WHERE dfend_id IS NOT NULL")" "$stored_after"
    updated_triggers=$(sql "$triggers")
    if [ "$updated_triggers" = "$fresh_triggers" ]; then
        pass "$from: the attached tables now have the triggers a fresh dfend_attach makes (a disabled one stays disabled)"
    else
        fail "$from: the attached tables have other triggers than a fresh dfend_attach makes"
        diff <(echo "$fresh_triggers") <(echo "$updated_triggers") | head -20 || true
    fi
    sql "INSERT INTO users SELECT i, format(\$\$u%s@example.com\$\$, i) FROM generate_series(10, 19) AS i" >/dev/null
    expect "$from: the statement trigger queues each row of a multi-row INSERT once" \
        "$(sql "SELECT count(*) || \$\$ \$\$ || count(DISTINCT user_id) FROM dfend_outbox WHERE table_name = \$\$users\$\$::regclass AND user_id::int >= 10")" "10 10"
    expect "$from: and they drain" "$(sql "SELECT dfend_process_queue()")" 10
    sql "INSERT INTO users SELECT i, format(\$\$u%s@example.com\$\$, i) FROM generate_series(100, 199) AS i" >/dev/null
    expect "$from: 100 rows of one INSERT are one bulk row" \
        "$(sql "SELECT count(*) || \$\$ \$\$ || sum(cardinality(user_ids)) FROM dfend_outbox_bulk WHERE table_name = \$\$users\$\$::regclass")" "1 100"
    expect "$from: which drains" "$(sql "SELECT dfend_process_queue()")" 100
    expect "$from: every one of them got its id" "$(sql "SELECT count(dfend_id) FROM users WHERE id BETWEEN 100 AND 199")" 100
    sql "INSERT INTO parted VALUES (7, \$\$seven@example.com\$\$)" >/dev/null
    sql "INSERT INTO parted_low VALUES (8, \$\$eight@example.com\$\$)" >/dev/null
    expect "$from: the partitioned table still queues rows, inserted through it or not" \
        "$(sql "SELECT string_agg(user_id, \$\$,\$\$ ORDER BY user_id) FROM dfend_outbox WHERE table_name = \$\$parted\$\$::regclass")" "7,8"
    sql "DELETE FROM dfend_outbox WHERE table_name = \$\$parted\$\$::regclass" >/dev/null
    sql "INSERT INTO quiet VALUES (1, \$\$q@example.com\$\$)" >/dev/null
    expect "$from: the disabled trigger queues nothing" \
        "$(sql "SELECT count(*) FROM dfend_outbox WHERE table_name = \$\$quiet\$\$::regclass")" 0
    sql "INSERT INTO members SELECT format(\$\$m-%s\$\$, i), format(\$\$m%s@example.com\$\$, i) FROM generate_series(2, 4) AS i" >/dev/null
    expect "$from: COMMIT registers each row of a multi-row INSERT into a sync table" \
        "$(sql "SELECT count(*) FROM members WHERE id IN (\$\$m-2\$\$, \$\$m-3\$\$, \$\$m-4\$\$) AND dfend_id LIKE \$\$idn_%\$\$")" 3
    sql "INSERT INTO members VALUES (\$\$m-1\$\$, \$\$m1@example.com\$\$)" >/dev/null
    expect "$from: and COMMIT registers a new row of it" "$(sql "SELECT dfend_id LIKE \$\$idn_%\$\$ FROM members WHERE id = \$\$m-1\$\$")" t
    sql "UPDATE users SET email = \$\$one@example.com\$\$ WHERE id = 1" >/dev/null
    expect "$from: a new change is queued by the row trigger on UPDATE" "$(sql "SELECT dfend_process_queue()")" 1
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
