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


def wait_for_dfend_id(conn, table, user_id, timeout=10.0):
    """The user's DFend id once it is stored, or None after `timeout` s."""
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    with conn.cursor() as cur:
        cur.execute("LISTEN dfend_ids")
        # The id may have been stored before LISTEN: look once, after it.
        cur.execute(sql.SQL("SELECT dfend_id FROM {} WHERE id = %s")
                    .format(sql.Identifier(table)), (user_id,))
        row = cur.fetchone()
        if row and row[0]:
            return row[0]
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([conn], [], [], left) == ([], [], []):
            break
        conn.poll()
        while conn.notifies:
            payload = json.loads(conn.notifies.pop(0).payload)
            # {"table": "public.users", "user_id": "42", "dfend_id": "idn_..."}
            if payload["user_id"] == str(user_id):
                return payload["dfend_id"]
    return None


if __name__ == "__main__":
    dsn, table, user_id = sys.argv[1:4]
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 10.0
    with psycopg2.connect(dsn) as connection:
        found = wait_for_dfend_id(connection, table, user_id, timeout)
    print(found or "timeout", flush=True)
