// The launcher (launcher.cpp): one background worker for the whole server
// that starts one outbox worker per database where dfend is installed, and
// the ProcessUtility step that makes a worker leave a database being
// dropped, renamed or copied.
#pragma once

struct Node;

namespace dfend::pg {

// From _PG_init when preloaded: the launcher, a static background worker.
void register_launcher();

// PostgreSQL-style, from the ProcessUtility hook before a statement runs.
// DROP DATABASE, ALTER DATABASE ... RENAME / SET TABLESPACE and CREATE
// DATABASE ... TEMPLATE (of any database) fail while another session is
// connected to the database they act on: the worker of that database leaves
// and is kept out until the current transaction ends. CREATE / ALTER / DROP
// EXTENSION dfend: when the transaction commits, the launcher and this
// database's worker look again.
void before_utility_statement(Node *statement);

} // namespace dfend::pg
