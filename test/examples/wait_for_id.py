"""Waits for dfend to store a user's DFend id, with LISTEN (the README's
example; test/scenarios/notify.sh runs it).

The table was attached with  dfend_attach(..., notify => 'dfend_ids').
Usage: wait_for_id.py DSN TABLE USER_ID [TIMEOUT_SECONDS]
"""
import json
import select
import sys
import time

import psycopg2
import psycopg2.extensions
from psycopg2 import sql


def stored_id(conn, table, user_id):
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT dfend_id FROM {} WHERE id = %s")
                    .format(sql.Identifier(table)), (user_id,))
        row = cur.fetchone()
        return row[0] if row else None


def wait_for_dfend_id(conn, table, user_id, timeout=10.0):
    """The user's DFend id once it is stored, or None after `timeout` s."""
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    with conn.cursor() as cur:
        cur.execute("LISTEN dfend_ids")
    deadline = time.monotonic() + timeout
    while True:
        # The table is the truth, a notification only a wake-up: the id may
        # have been stored before LISTEN took effect, and a notification
        # from a transaction that was committing just then can be missed.
        found = stored_id(conn, table, user_id)
        if found:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        # Sleep until a notification arrives, or look again within 1 s.
        if not conn.notifies:
            select.select([conn], [], [], min(left, 1.0))
        conn.poll()
        while conn.notifies:
            payload = json.loads(conn.notifies.pop(0).payload)
            # {"table": "public.users", "user_id": "42", "dfend_id": "idn_..."}
            if payload["user_id"] == str(user_id):
                return payload["dfend_id"]


if __name__ == "__main__":
    dsn, table, user_id = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    with psycopg2.connect(dsn) as connection:
        found = wait_for_dfend_id(connection, table, user_id, timeout)
    print(found or "timeout", flush=True)
