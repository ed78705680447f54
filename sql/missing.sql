-- An outbox entry whose row the worker cannot see is kept, not dropped on
-- sight: a restore commits dfend_outbox before the users table's COPY, and a
-- long transaction may still be writing the row. Only after
-- dfend.missing_row_timeout (1 day) does the row count as deleted.
SET client_min_messages = warning;
CREATE TABLE later_users (id int PRIMARY KEY, email text, dfend_id text);
SELECT dfend_attach('later_users', 'id', 'dfend_id', email_column => 'email');
SHOW dfend.missing_row_timeout;

-- An entry whose row is not there yet, as a restore leaves it.
INSERT INTO dfend_outbox (table_name, user_id, reason) VALUES ('later_users', '7', 'insert');
SELECT dfend_process_queue();
SELECT user_id, state, attempts, missing_since IS NOT NULL AS missing,
       next_attempt_at > now() AS waits, last_error
FROM dfend_outbox WHERE table_name = 'later_users'::regclass;
-- The row arrives, without the trigger (as pg_restore loads data before
-- it creates triggers): the kept entry registers it.
ALTER TABLE later_users DISABLE TRIGGER dfend_insert;
INSERT INTO later_users VALUES (7, 'seven@example.com');
ALTER TABLE later_users ENABLE TRIGGER dfend_insert;
UPDATE dfend_outbox SET next_attempt_at = now()
WHERE table_name = 'later_users'::regclass; -- skip the wait
SELECT dfend_process_queue();
SELECT dfend_id LIKE 'idn_%' AS has_id FROM later_users WHERE id = 7;
SELECT count(*) AS outbox FROM dfend_outbox WHERE table_name = 'later_users'::regclass;

-- A row deleted for good: its entry waits, then goes after the timeout
-- (simulated by moving missing_since back two days).
INSERT INTO later_users VALUES (8, 'eight@example.com');
DELETE FROM later_users WHERE id = 8;
SELECT dfend_process_queue();
SELECT user_id, state, missing_since IS NOT NULL AS missing FROM dfend_outbox
WHERE table_name = 'later_users'::regclass;
UPDATE dfend_outbox SET next_attempt_at = now(), missing_since = now() - interval '1 hour'
WHERE table_name = 'later_users'::regclass;
SELECT dfend_process_queue();
SELECT count(*) AS still_kept_after_an_hour FROM dfend_outbox
WHERE table_name = 'later_users'::regclass;
UPDATE dfend_outbox SET next_attempt_at = now(), missing_since = now() - interval '2 days'
WHERE table_name = 'later_users'::regclass;
SELECT dfend_process_queue();
SELECT count(*) AS outbox FROM dfend_outbox WHERE table_name = 'later_users'::regclass;

SELECT dfend_detach('later_users');
DROP TABLE later_users;
