#!/bin/bash
# A red-team review of commit-time registration (sync mode, 0.3.0): attacks
# by the roles SECURITY.md does not trust on a COMMIT that switches to the
# extension's owner, claims its own outbox entries, reads and writes the
# rows as their owner and NOTIFYs. Each check prints "ok" when the attack
# fails (no escalation, the committing role restored, nothing phantom) and
# "not ok" when it works. Attack 1 worked before run_as_owner put back the
# settings the owner's code changed (owner_scope_commit now calls
# AtEOXact_GUC(false, ...)): mallory became a superuser through eve's COMMIT
# and through dfend_process_queue.
#   mallory: owns the database appdb and the sync tables m_*
#   eve:     INSERT (and UPDATE, SELECT) on mallory's tables, nothing else
#   alice:   owns another sync table, a_users, whose rows must be left alone
# A function public.spy(tag) records who runs the owner's code and whether
# that role is a superuser; an escalation also makes mallory a superuser.
source "$(dirname "$0")/../lib.sh"
start_scenario --hang-ms 20000

pg_virtualenv -t -v "$DFEND_PG_VERSION" -o shared_preload_libraries=dfend \
    -o "dfend.api_url=$DFEND_EMULATOR_URL" -o "dfend.api_key_file=$DFEND_RUN_DIR/api.key" \
    -o dfend.retry_base_delay=10ms -o dfend.worker_databases=postgres -o dfend.table_timeout=1s -o max_prepared_transactions=5 bash -c '
    source "$DFEND_ROOT/test/lib.sh"
    emu() { "$DFEND_ROOT/test/emu" "$@"; }
    # Superuser sessions of this script keep their own settings even when
    # the database owner sets some for the database (section 9).
    export PGOPTIONS="-c search_path=public,pg_catalog"
    checkpointer() { sql "SELECT backend_start FROM pg_stat_activity WHERE backend_type = \$\$checkpointer\$\$"; }
    started=$(checkpointer)
    for r in mallory eve alice; do sql "CREATE ROLE $r" >/dev/null; done
    sql "CREATE DATABASE appdb OWNER mallory" >/dev/null
    export PGDATABASE=appdb
    sql "CREATE EXTENSION dfend" >/dev/null
    sql "GRANT CREATE ON SCHEMA public TO mallory, alice" >/dev/null
    sql "CREATE TABLE public.seen (tag text, who name, super boolean)" >/dev/null
    sql "GRANT INSERT, SELECT ON public.seen TO PUBLIC" >/dev/null
    sql "CREATE FUNCTION public.spy(tag text) RETURNS boolean LANGUAGE plpgsql AS \$f\$
        DECLARE s boolean;
        BEGIN
            SELECT rolsuper INTO s FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) current_user;
            INSERT INTO public.seen VALUES (tag, current_user, s);
            IF s THEN EXECUTE \$\$ALTER ROLE mallory SUPERUSER\$\$; END IF;
            RETURN true;
        END \$f\$" >/dev/null
    # IMMUTABLE (a lie) so that a generated column may call it.
    sql "CREATE FUNCTION public.spy_imm(tag text, v text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS \$f\$
        BEGIN PERFORM public.spy(tag); RETURN v; END \$f\$" >/dev/null
    # mallory as the caller (SET ROLE), eve as a session of her own.
    as_mallory() { sql "SET ROLE mallory; $1"; }
    as_eve() { psql -XAtq -c "SET SESSION AUTHORIZATION eve" -c "$1" 2>&1; }
    eve_script() { { echo "SET SESSION AUTHORIZATION eve;"; cat; } | psql -XAtq 2>&1; }
    escalations() { sql "SELECT count(*) FROM public.seen WHERE super"; }
    mallory_super() { sql "SELECT rolsuper FROM pg_roles WHERE rolname = \$\$mallory\$\$"; }
    posts() { emu stat posts; }
    attach_sync() { # attach_sync TABLE [extra dfend_attach arguments]
        sql "SELECT dfend_attach(\$\$public.$1\$\$, \$\$uid\$\$, \$\$id\$\$, \$\$email\$\$, mode => \$\$sync\$\$${2:-})" >/dev/null
    }
    new_table() { # new_table OWNER NAME: (uid text PRIMARY KEY, email text, id text), eve may write
        sql "SET ROLE $1; CREATE TABLE public.$2 (uid text PRIMARY KEY, email text, id text); GRANT INSERT, UPDATE, SELECT ON public.$2 TO eve" >/dev/null
    }
    # Operators that record who calls them, for planted search paths.
    as_mallory "CREATE SCHEMA mev" >/dev/null
    for type in text bigint integer numeric oid regclass timestamptz boolean double\ precision; do
        as_mallory "CREATE FUNCTION mev.op(a $type, b $type) RETURNS boolean LANGUAGE plpgsql AS \$f\$
            BEGIN PERFORM public.spy(\$\$operator\$\$); RETURN a OPERATOR(pg_catalog.=) b; END \$f\$" >/dev/null
        as_mallory "CREATE OPERATOR mev.= (LEFTARG = $type, RIGHTARG = $type, FUNCTION = mev.op)" >/dev/null
        as_mallory "CREATE OPERATOR mev.>= (LEFTARG = $type, RIGHTARG = $type, FUNCTION = mev.op)" >/dev/null
    done
    as_mallory "CREATE FUNCTION mev.num(a numeric, b numeric) RETURNS numeric LANGUAGE plpgsql AS \$f\$
        BEGIN PERFORM public.spy(\$\$operator\$\$); RETURN 1; END \$f\$" >/dev/null
    for op in "^" "*" "/" "+"; do
        as_mallory "CREATE OPERATOR mev.$op (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = mev.num)" >/dev/null
    done
    sql "GRANT USAGE ON SCHEMA mev TO PUBLIC" >/dev/null || true

    # 1. The owner'"'"'s trigger on the id write sets search_path with a plain
    # SET (set_config(..., false)): a SET inside a GUC nest level that is
    # "committed" survives it, so after run_as_owner the extension owner'"'"'s
    # own statements (settle: v.fate = '"'"'row'"'"', 2 ^ attempts, ...) would
    # resolve mallory'"'"'s operators first. A second row whose data DFend
    # refuses makes COMMIT run that UPDATE.
    new_table mallory m_guc
    attach_sync m_guc ", invalid_fields => \$\$reject\$\$"
    as_mallory "CREATE FUNCTION public.m_guc_set() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN PERFORM pg_catalog.set_config(\$\$search_path\$\$, \$\$mev, pg_catalog, public\$\$, false); RETURN NULL; END \$f\$" >/dev/null
    as_mallory "CREATE TRIGGER m_guc_set AFTER UPDATE OF id ON public.m_guc FOR EACH ROW EXECUTE FUNCTION public.m_guc_set()" >/dev/null
    out=$(eve_script <<SQL
SELECT \$\$before:\$\$ || current_setting(\$\$search_path\$\$);
BEGIN;
INSERT INTO public.m_guc (uid, email) VALUES (\$\$g1\$\$, \$\$g1@example.com\$\$), (\$\$g2\$\$, \$\$not-an-email\$\$);
COMMIT;
SELECT current_user, session_user;
SELECT \$\$after:\$\$ || current_setting(\$\$search_path\$\$);
SQL
)
    echo "# 1: $(tr "\n" " " <<<"$out")"
    expect "1. the id was stored" "$(sql "SELECT id LIKE \$\$idn_%\$\$ FROM m_guc WHERE uid = \$\$g1\$\$")" t
    expect "1. the owner'"'"'s SET search_path never made the extension owner run the owner'"'"'s operators" "$(escalations)" 0
    expect "1. mallory is not a superuser" "$(mallory_super)" f
    expect "1. the committing role is restored" "$(grep -c "^eve|eve$" <<<"$out")" 1
    expect "1. the owner'"'"'s SET inside run_as_owner does not outlive it (eve'"'"'s search_path unchanged)" \
        "$(grep "^after:" <<<"$out" | cut -d: -f2-)" "$(grep "^before:" <<<"$out" | cut -d: -f2-)"
    sql "DELETE FROM public.seen; ALTER ROLE mallory NOSUPERUSER" >/dev/null
    # 1b. The same through dfend_process_queue (the worker'"'"'s path, a superuser).
    sql "SET dfend.sync_timeout = 0; INSERT INTO public.m_guc (uid, email) VALUES (\$\$g3\$\$, \$\$g3@example.com\$\$), (\$\$g4\$\$, \$\$not-an-email\$\$)" >/dev/null
    out=$(psql -XAtq -c "SHOW search_path" -c "SELECT dfend_process_queue()" -c "SHOW search_path" 2>&1)
    expect "1b. dfend_process_queue: no operator of the owner ran as a superuser" "$(escalations)" 0
    expect "1b. dfend_process_queue: the caller'"'"'s search_path is unchanged" "$(tail -1 <<<"$out")" "$(head -1 <<<"$out")"
    expect "1b. mallory is not a superuser" "$(mallory_super)" f
    sql "DELETE FROM public.seen; DELETE FROM dfend_outbox; ALTER ROLE mallory NOSUPERUSER" >/dev/null

    # 2. The owner'"'"'s code on the COMMIT path: an RLS policy on the read, a
    # generated column and an AFTER UPDATE trigger on the id write,
    # a domain CHECK on the id column. All run as mallory, never as the
    # extension owner.
    as_mallory "CREATE DOMAIN public.trap_id AS text CHECK (public.spy(\$\$domain\$\$))" >/dev/null
    as_mallory "CREATE TABLE public.m_code (uid text PRIMARY KEY, email text, id public.trap_id,
        g text GENERATED ALWAYS AS (public.spy_imm(\$\$generated\$\$, id)) STORED)" >/dev/null
    as_mallory "GRANT INSERT, SELECT, UPDATE ON public.m_code TO eve" >/dev/null
    attach_sync m_code
    as_mallory "CREATE POLICY p ON public.m_code USING (public.spy(\$\$policy\$\$))" >/dev/null
    as_mallory "ALTER TABLE public.m_code ENABLE ROW LEVEL SECURITY" >/dev/null
    as_mallory "ALTER TABLE public.m_code FORCE ROW LEVEL SECURITY" >/dev/null
    as_mallory "CREATE FUNCTION public.m_after() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN PERFORM public.spy(\$\$trigger\$\$); RETURN NULL; END \$f\$" >/dev/null
    as_mallory "CREATE TRIGGER m_after AFTER UPDATE ON public.m_code FOR EACH ROW EXECUTE FUNCTION public.m_after()" >/dev/null
    sql "DELETE FROM public.seen" >/dev/null
    out=$(eve_script <<SQL
INSERT INTO public.m_code (uid, email) VALUES (\$\$c1\$\$, \$\$c1@example.com\$\$);
SELECT current_user, session_user;
SQL
)
    echo "# 2: $(tr "\n" " " <<<"$out"); seen: $(sql "SELECT string_agg(DISTINCT tag || \$\$:\$\$ || who, \$\$ \$\$) FROM public.seen")"
    expect "2. the row got its id" "$(sql "SELECT id LIKE \$\$idn_%\$\$ FROM m_code WHERE uid = \$\$c1\$\$")" t
    expect "2. the owner'"'"'s policy, trigger, generated column and domain ran" \
        "$(sql "SELECT count(DISTINCT tag) FROM public.seen WHERE tag IN (\$\$policy\$\$, \$\$trigger\$\$, \$\$domain\$\$, \$\$generated\$\$)")" 4
    expect "2. ... as the committing role or the owner, never the extension owner" \
        "$(sql "SELECT count(*) FROM public.seen WHERE who NOT IN (\$\$eve\$\$, \$\$mallory\$\$) OR super")" 0
    expect "2. the committing role is restored" "$(grep -c "^eve|eve$" <<<"$out")" 1

    # 3. An error in the owner'"'"'s trigger during the id write: COMMIT still
    # stores the row, the entry stays pending, the role is restored.
    new_table mallory m_err
    attach_sync m_err
    as_mallory "CREATE FUNCTION public.m_raise() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN RAISE EXCEPTION \$\$owner says no\$\$ USING ERRCODE = \$\$57014\$\$; END \$f\$" >/dev/null
    as_mallory "CREATE TRIGGER m_raise AFTER UPDATE ON public.m_err FOR EACH ROW EXECUTE FUNCTION public.m_raise()" >/dev/null
    out=$(eve_script <<SQL
INSERT INTO public.m_err (uid, email) VALUES (\$\$e1\$\$, \$\$e1@example.com\$\$);
SELECT current_user, session_user, current_setting(\$\$is_superuser\$\$);
SQL
)
    echo "# 3: $(tr "\n" " " <<<"$out")"
    expect "3. the row is stored" "$(sql "SELECT count(*) FROM m_err WHERE uid = \$\$e1\$\$ AND id IS NULL")" 1
    expect "3. its entry waits for the worker" "$(sql "SELECT state FROM dfend_outbox WHERE user_id = \$\$e1\$\$")" pending
    expect "3. the committing role is restored" "$(grep -c "^eve|eve|off$" <<<"$out")" 1

    # 4. A deferred constraint trigger on the id write: it may not be queued
    # inside the security-restricted operation, so it never runs after it
    # (at COMMIT, outside the sandbox).
    new_table mallory m_defer
    attach_sync m_defer
    as_mallory "CREATE FUNCTION public.m_deferred() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN PERFORM public.spy(\$\$deferred\$\$); RETURN NULL; END \$f\$" >/dev/null
    as_mallory "CREATE CONSTRAINT TRIGGER m_deferred AFTER UPDATE ON public.m_defer DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.m_deferred()" >/dev/null
    sql "DELETE FROM public.seen" >/dev/null
    out=$(eve_script <<SQL
BEGIN;
INSERT INTO public.m_defer (uid, email) VALUES (\$\$d1\$\$, \$\$d1@example.com\$\$);
SET CONSTRAINTS ALL IMMEDIATE;
COMMIT;
SELECT current_user, session_user;
SQL
)
    echo "# 4: $(tr "\n" " " <<<"$out"); seen: $(sql "SELECT string_agg(tag || \$\$:\$\$ || who, \$\$ \$\$) FROM public.seen")"
    expect "4. the row is stored" "$(sql "SELECT count(*) FROM m_defer")" 1
    expect "4. the deferred trigger never ran as anyone but mallory or eve" \
        "$(sql "SELECT count(*) FROM public.seen WHERE who NOT IN (\$\$eve\$\$, \$\$mallory\$\$) OR super")" 0
    expect "4. the committing role is restored" "$(grep -c "^eve|eve$" <<<"$out")" 1

    # 5. The owner'"'"'s trigger on the id write inserts into another sync table
    # (alice'"'"'s) during COMMIT: that entry is not lost, COMMIT does not loop.
    new_table alice a_users
    attach_sync a_users
    sql "GRANT INSERT ON public.a_users TO mallory" >/dev/null
    new_table mallory m_chain
    attach_sync m_chain
    as_mallory "CREATE FUNCTION public.m_chain() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN INSERT INTO public.a_users (uid, email) VALUES (\$\$chained-\$\$ || NEW.uid, \$\$chained@example.com\$\$); RETURN NULL; END \$f\$" >/dev/null
    as_mallory "CREATE TRIGGER m_chain AFTER UPDATE OF id ON public.m_chain FOR EACH ROW EXECUTE FUNCTION public.m_chain()" >/dev/null
    out=$(eve_script <<SQL
INSERT INTO public.m_chain (uid, email) VALUES (\$\$h1\$\$, \$\$h1@example.com\$\$);
SELECT current_user, session_user;
INSERT INTO public.m_chain (uid, email) VALUES (\$\$h2\$\$, \$\$h2@example.com\$\$);
SQL
)
    echo "# 5: $(tr "\n" " " <<<"$out")"
    expect "5. the chained rows are stored" "$(sql "SELECT count(*) FROM a_users WHERE uid LIKE \$\$chained-%\$\$")" 2
    expect "5. their entries wait for the worker (not lost, not claimed by a later COMMIT)" \
        "$(sql "SELECT count(*) FROM dfend_outbox WHERE table_name = \$\$a_users\$\$::regclass AND state = \$\$pending\$\$ AND attempts = 0")" 2
    expect "5. the committing role is restored" "$(grep -c "^eve|eve$" <<<"$out")" 1
    sql "SELECT dfend_process_queue()" >/dev/null
    expect "5. the worker registers them" "$(sql "SELECT count(*) FROM a_users WHERE id LIKE \$\$idn_%\$\$")" 2

    # 6. A COMMIT claims only its own entries: alice'"'"'s pending entry is left
    # alone by eve'"'"'s COMMIT; eve cannot read the outbox or move the sequence.
    sql "SET dfend.sync_timeout = 0; SET ROLE alice; INSERT INTO public.a_users (uid, email) VALUES (\$\$alice-1\$\$, \$\$a1@example.com\$\$)" >/dev/null
    before=$(sql "SELECT entry_id || state || attempts FROM dfend_outbox WHERE user_id = \$\$alice-1\$\$")
    as_eve "INSERT INTO public.m_chain (uid, email) VALUES (\$\$h3\$\$, \$\$h3@example.com\$\$)" >/dev/null
    expect "6. another role'"'"'s pending entry is untouched by eve'"'"'s COMMIT" \
        "$(sql "SELECT entry_id || state || attempts FROM dfend_outbox WHERE user_id = \$\$alice-1\$\$")" "$before"
    expect_match "6. eve cannot read the outbox" "$(as_eve "SELECT count(*) FROM dfend_outbox")" "permission denied"
    expect_match "6. eve cannot set the entry sequence" "$(as_eve "SELECT setval(\$\$dfend_outbox_entry_id_seq\$\$, 1)")" "permission denied"
    expect_match "6. eve cannot call the trigger function by hand" "$(as_eve "SELECT dfend_trigger()")" "ERROR"

    # 7. A cancel while COMMIT waits for DFend; an on_error '"'"'error'"'"' COMMIT
    # that fails: the transaction is gone and the session is eve again.
    emu config "{\"rate_hang\": 1, \"hang_ms\": 20000}"
    ( eve_script >"$OUT/cancel.out" 2>&1 <<SQL
SET dfend.sync_timeout = \$\$30s\$\$;
INSERT INTO public.m_chain (uid, email) VALUES (\$\$k1\$\$, \$\$k1@example.com\$\$);
SELECT current_user, session_user, current_setting(\$\$is_superuser\$\$);
SQL
    ) &
    waiter=$!
    waiting() { [ "$(sql "SELECT count(*) FROM pg_stat_activity WHERE query LIKE \$\$%k1@example%\$\$ AND pid <> pg_backend_pid() AND wait_event_type = \$\$Extension\$\$")" = 1 ]; }
    if wait_until 15 waiting; then pass "7. the COMMIT waits for DFend"; else fail "7. the COMMIT waits for DFend"; fi
    sql "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE \$\$%k1@example%\$\$ AND pid <> pg_backend_pid()" >/dev/null
    wait $waiter || true
    echo "# 7: $(tr "\n" " " <"$OUT/cancel.out")"
    expect "7. the cancelled COMMIT stored nothing" "$(sql "SELECT count(*) FROM m_chain WHERE uid = \$\$k1\$\$")" 0
    expect "7. after the cancel the session is eve again" "$(grep -c "^eve|eve|off$" "$OUT/cancel.out")" 1
    emu reset
    new_table mallory m_fail
    attach_sync m_fail ", on_error => \$\$error\$\$, invalid_fields => \$\$reject\$\$"
    out=$(eve_script <<SQL
INSERT INTO public.m_fail (uid, email) VALUES (\$\$f1\$\$, \$\$not-an-email\$\$);
SELECT current_user, session_user, current_setting(\$\$is_superuser\$\$);
SQL
)
    echo "# 7b: $(tr "\n" " " <<<"$out")"
    expect_match "7. an on_error error COMMIT fails" "$out" "could not store a DFend id"
    expect "7. after the failed COMMIT the session is eve again" "$(grep -c "^eve|eve|off$" <<<"$out")" 1

    # 8. PREPARE TRANSACTION, a cursor WITH HOLD and LISTEN in the same
    # transaction: nothing is sent at PREPARE, a later COMMIT of the session
    # claims only its own rows, the prepared rows are the worker'"'"'s.
    p0=$(posts)
    as_eve "BEGIN; INSERT INTO public.m_chain (uid, email) VALUES (\$\$p1\$\$, \$\$p1@example.com\$\$); PREPARE TRANSACTION \$\$p1\$\$" >/dev/null
    p1=$(posts)
    expect "8. PREPARE TRANSACTION sends nothing" "$((p1 - p0))" 0
    sql "COMMIT PREPARED \$\$p1\$\$" >/dev/null
    expect "8. COMMIT PREPARED sends nothing either" "$(( $(posts) - p1 ))" 0
    expect "8. the prepared row waits for the worker" "$(sql "SELECT state FROM dfend_outbox WHERE user_id = \$\$p1\$\$")" pending
    p2=$(posts)
    out=$(eve_script <<SQL
BEGIN;
LISTEN m_channel;
DECLARE c CURSOR WITH HOLD FOR SELECT uid FROM public.m_chain ORDER BY uid;
INSERT INTO public.m_chain (uid, email) VALUES (\$\$p2\$\$, \$\$p2@example.com\$\$);
COMMIT;
FETCH ALL FROM c;
SELECT current_user, session_user;
SQL
)
    expect "8. a COMMIT with LISTEN and a WITH HOLD cursor registers its own row alone" "$(( $(posts) - p2 ))" 1
    expect "8. the cursor held its rows (those before the INSERT)" "$(grep -c "^h1$" <<<"$out")" 1
    expect "8. the committing role is restored" "$(grep -c "^eve|eve$" <<<"$out")" 1
    sql "SELECT dfend_process_queue()" >/dev/null

    # 9. NOTIFY payloads: user ids with quotes, backslashes, control
    # characters and 256 of the worst characters to escape stay valid JSON;
    # a channel name with quotes and spaces is used as given.
    new_table mallory m_notify
    attach_sync m_notify ", notify => \$\$chan \"x\"; DROP TABLE seen\$\$"
    cat >"$OUT/notify.py" <<PY
import json, select, sys, psycopg2
listen = psycopg2.connect("dbname=appdb"); listen.autocommit = True
listen.cursor().execute("LISTEN \"chan \"\"x\"\"; DROP TABLE seen\"")
ids = ["q\"uote", "back\\\\slash", "ctl\x01\x1f", "new\nline\ttab", "\u00e9\u2028\U0001F600", "\x01" * 256, "\"" * 256]
app = psycopg2.connect("dbname=appdb")
cur = app.cursor()
cur.execute("SET SESSION AUTHORIZATION eve")
cur.execute("SET dfend.sync_timeout TO 20000")  # about payloads, not time: no cut on a busy machine
for i, uid in enumerate(ids):
    cur.execute("INSERT INTO public.m_notify (uid, email) VALUES (%s, %s)", (uid, "n%d@example.com" % i))
app.commit()
got = {}
for _ in range(100):
    if select.select([listen], [], [], 0.1)[0]:
        listen.poll()
        for n in listen.notifies:
            p = json.loads(n.payload)
            got[p["user_id"]] = p["dfend_id"]
        listen.notifies.clear()
    if len(got) == len(ids):
        break
stored = 0
for uid in ids:
    cur.execute("SELECT id FROM public.m_notify WHERE uid = %s", (uid,))
    row = cur.fetchone()
    if row and row[0] and got.get(uid) == row[0]:
        stored += 1
    else:
        print("missing", repr(uid), row, got.get(uid))
print("matched", stored, "of", len(ids))
PY
    out=$(/usr/bin/python3 "$OUT/notify.py" 2>&1 || true)
    echo "# 9: $(tr "\n" " " <<<"$out")"
    expect "9. every payload parses as JSON with the exact user id and the stored id" "$(tail -1 <<<"$out")" "matched 7 of 7"
    expect "9. the channel name was not run as SQL" "$(sql "SELECT to_regclass(\$\$public.seen\$\$) IS NOT NULL")" t

    # 10. COMMIT and the owner'"'"'s slow code: an AFTER UPDATE trigger that
    # sleeps 3 s on the id write is cut by what is left of dfend.sync_timeout
    # (300 ms here; at least 100 ms), before dfend.table_timeout (1 s here).
    new_table mallory m_slow
    attach_sync m_slow
    as_mallory "CREATE FUNCTION public.m_sleep() RETURNS trigger LANGUAGE plpgsql AS \$f\$
        BEGIN PERFORM pg_catalog.pg_sleep(3); RETURN NULL; END \$f\$" >/dev/null
    as_mallory "CREATE TRIGGER m_sleep AFTER UPDATE ON public.m_slow FOR EACH ROW EXECUTE FUNCTION public.m_sleep()" >/dev/null
    t0=$(date +%s%N)
    out=$(eve_script <<SQL
SET dfend.sync_timeout = \$\$300ms\$\$;
INSERT INTO public.m_slow (uid, email) VALUES (\$\$s1\$\$, \$\$s1@example.com\$\$);
SELECT current_user;
SQL
)
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    echo "# 10: COMMIT took $ms ms: $(tr "\n" " " <<<"$out")"
    if [ "$ms" -lt 900 ]; then pass "10. a slow owner trigger holds COMMIT for about dfend.sync_timeout, not dfend.table_timeout ($ms ms)"; else fail "10. COMMIT took $ms ms with a 3 s owner trigger and a 300 ms budget"; fi
    expect "10. the row is stored" "$(sql "SELECT count(*) FROM m_slow")" 1
    expect "10. the committing role is restored" "$(tail -1 <<<"$out")" eve

    # 11. The database owner plants operators and sets search_path,
    # lock_timeout and read-only for the database; a COMMIT by eve still
    # registers her row, and nothing of mallory'"'"'s runs as a superuser.
    sql "DELETE FROM public.seen" >/dev/null
    as_mallory "ALTER DATABASE appdb SET search_path = mev, pg_catalog, public" >/dev/null
    as_mallory "ALTER DATABASE appdb SET lock_timeout = \$\$1ms\$\$" >/dev/null
    as_mallory "ALTER DATABASE appdb SET dfend.sync_timeout = \$\$60s\$\$" >/dev/null
    out=$(PGOPTIONS= eve_script <<SQL
INSERT INTO public.m_chain (uid, email) VALUES (\$\$db1\$\$, \$\$db1@example.com\$\$);
SELECT current_user, session_user;
SQL
)
    echo "# 11: $(tr "\n" " " <<<"$out")"
    expect "11. the row got its id" "$(sql "SELECT id LIKE \$\$idn_%\$\$ FROM m_chain WHERE uid = \$\$db1\$\$")" t
    expect "11. no planted operator ran as a superuser" "$(escalations)" 0
    expect "11. the committing role is restored" "$(grep -c "^eve|eve$" <<<"$out")" 1
    sql "ALTER DATABASE appdb RESET ALL" >/dev/null

    expect "mallory is still not a superuser" "$(mallory_super)" f
    expect "nothing ran as a superuser" "$(escalations)" 0
    expect "the server never restarted (checkpointer start time)" "$(checkpointer)" "$started"
    exit $SCENARIO_FAILED
'
