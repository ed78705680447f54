#!/bin/bash
# A dump restored into a database whose worker is running loses no pending
# entry: pg_restore commits dfend_outbox before the users table's data, and
# the worker, which sees entries whose rows are not there yet, keeps them
# instead of dropping them. 200,000 users, 2,000 of them pending: 1,990
# queued by one INSERT (two rows of dfend_outbox_bulk, which the restore
# brings back and the worker expands) and 10 with an entry each.
source "$(dirname "$0")/../lib.sh"
start_scenario

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend -o "dfend.api_url=$DFEND_EMULATOR_URL" \
    -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" -o dfend.worker_databases=postgres \
    -o dfend.worker_poll_interval=1s -o dfend.retry_base_delay=10ms ${RESTORE_EXTRA:-} bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    # The source: no worker serves it, so its new users stay pending.
    sql "CREATE DATABASE source" >/dev/null
    export PGDATABASE=source
    sql "CREATE EXTENSION dfend" >/dev/null
    sql "CREATE TABLE users (id bigint PRIMARY KEY, email text, dfend_id text)" >/dev/null
    sql "INSERT INTO users SELECT i, \$\$u\$\$ || i || \$\$@example.com\$\$, \$\$idn_old_\$\$ || i FROM generate_series(1, 198000) i" >/dev/null
    sql "SELECT dfend_attach(\$\$users\$\$, \$\$id\$\$, \$\$dfend_id\$\$, email_column => \$\$email\$\$)" >/dev/null
    sql "INSERT INTO users (id, email) SELECT i, \$\$u\$\$ || i || \$\$@example.com\$\$ FROM generate_series(198001, 199990) i" >/dev/null
    sql "INSERT INTO users (id, email) SELECT i, \$\$u\$\$ || i || \$\$@example.com\$\$ FROM generate_series(199991, 200000) i" >/dev/null
    expect "the source has 2,000 pending users" "$(sql "SELECT pending FROM dfend_queue_status")" 2000
    expect "1,990 of them in two bulk rows" "$(sql "SELECT count(*) || \$\$ \$\$ || sum(cardinality(user_ids)) FROM dfend_outbox_bulk")" "2 1990"
    pg_dump -Fc -f "$OUT/source.dump" source
    pass "pg_dump of the source"

    # The target: database postgres, whose worker starts with CREATE
    # EXTENSION (the restore'"'"'s pre-data section).
    export PGDATABASE=postgres
    worker_up() { [ -n "$(sql "SELECT pid FROM pg_stat_activity WHERE backend_type = \$\$dfend worker\$\$ AND datname = \$\$postgres\$\$")" ]; }
    # The worst order pg_restore can take, made certain: the outbox data is
    # committed, the worker looks at every entry while the users table is
    # still empty, and only then is the users data loaded.
    pg_restore -l "$OUT/source.dump" >"$OUT/all.list"
    grep -E "TABLE DATA public users " "$OUT/all.list" >"$OUT/users.list"
    grep -vE "TABLE DATA public users " "$OUT/all.list" >"$OUT/rest.list"
    restored=true
    pg_restore --section=pre-data -d postgres "$OUT/source.dump" 2>>"$OUT/restore.err" || restored=false
    if wait_until 30 worker_up; then pass "the target database'"'"'s worker runs"; else fail "the target database'"'"'s worker runs"; fi
    pg_restore --section=data -L "$OUT/rest.list" -d postgres "$OUT/source.dump" 2>>"$OUT/restore.err" || restored=false
    # The worker may have expanded the bulk rows already: either form counts.
    expect "the outbox is restored before the users" "$(sql "SELECT pending FROM dfend_queue_status").$(sql "SELECT count(*) FROM users")" "2000.0"
    sql "SELECT dfend_internal_note_enqueued()" >/dev/null # wake the worker, as a commit would
    all_seen() { [ "$(sql "SELECT (SELECT count(*) FROM dfend_outbox WHERE missing_since IS NULL) + (SELECT count(*) FROM dfend_outbox_bulk)")" = 0 ]; }
    if wait_until 60 all_seen; then pass "the worker looked at every entry while its row was missing"; else fail "the worker looked at every entry while its row was missing"; fi
    expect "and kept them all" "$(sql "SELECT count(*) FROM dfend_outbox WHERE state = \$\$pending\$\$")" 2000
    pg_restore --section=data -L "$OUT/users.list" -d postgres "$OUT/source.dump" 2>>"$OUT/restore.err" || restored=false
    pg_restore --section=post-data -d postgres "$OUT/source.dump" 2>>"$OUT/restore.err" || restored=false
    if $restored; then
        pass "pg_restore into the running database"
    else
        fail "pg_restore into the running database: $(head -3 "$OUT/restore.err")"
    fi
    expect "every user is restored" "$(sql "SELECT count(*) FROM users")" 200000
    all_stored() { [ "$(sql "SELECT count(*) FROM users WHERE dfend_id IS NULL")" = 0 ]; }
    if wait_until 120 all_stored; then
        pass "every pending user got its id after the restore"
    else
        fail "every pending user got its id after the restore ($(sql "SELECT count(*) FROM users WHERE dfend_id IS NULL") without one, $(sql "SELECT count(*) FROM dfend_outbox") entries left)"
    fi
    drained() { [ "$(sql "SELECT count(*) FROM dfend_outbox")" = 0 ]; }
    if wait_until 30 drained; then pass "the outbox is empty"; else fail "the outbox is empty"; fi
    expect "the attachment came along" \
        "$(sql "SELECT count(*) FROM dfend_attachments")" 1
    expect "ids already stored before the dump are kept" \
        "$(sql "SELECT count(*) FROM users WHERE dfend_id LIKE \$\$idn_old_%\$\$")" 198000
    exit $SCENARIO_FAILED
'
