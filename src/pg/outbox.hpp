// Draining the outbox (shared by the worker and dfend_process_queue).
#pragma once

#include <cstdint>

namespace dfend::pg {

struct OutboxResult {
    std::int64_t claimed;    // entries taken in this batch
    std::int64_t registered; // user ids whose rows got their id
    std::int64_t failed;     // entries that failed (retry later, or dead)
    std::int64_t settled;    // entries with nothing to send (row gone, id set, detached)
    double next_due_ms;      // when nothing was due: until the next entry is, or -1
    long paused_ms;          // the breaker held the batch back: until its next probe, or -1
};

// PostgreSQL-style; call inside a transaction. Processes at most max_rows due
// entries and returns what happened. Raises on interrupts and SPI errors.
// While the breaker (pause.hpp) finds DFend unreachable, claims nothing
// (paused_ms says until when), or one entry as its probe; `probe_now`
// probes at once instead of waiting for the breaker's timer.
OutboxResult process_outbox(int max_rows, bool probe_now = false);

// User ids per row of dfend_outbox_bulk at most (trigger.cpp writes them).
constexpr int kBulkKeys = 1000;

// PostgreSQL-style; call inside a transaction, before process_outbox. Turns
// the oldest rows of dfend_outbox_bulk (at least one, about max_keys user
// ids) into ordinary pending entries of dfend_outbox, due since the bulk
// row was queued, and deletes them, in one statement; returns the entries
// made. Rows another session is expanding are skipped.
std::int64_t expand_bulk_entries(int max_keys);
// PostgreSQL-style; in a transaction with an active snapshot. Whether
// dfend_outbox_bulk holds a row visible now: a scan that stops at the first
// one, far cheaper than planning expand_bulk_entries's statement, which the
// worker therefore runs only then.
bool bulk_entries_waiting();

// PostgreSQL-style; from COMMIT (see commit.cpp). Registers the committing
// transaction's own pending entries of sync tables, spending at most
// budget_ms on requests, and stores their ids. What does not finish stays
// pending for the worker (a WARNING says how many); a failure of a table
// attached with on_error 'error' raises, which fails the COMMIT.
void register_own_entries(const std::int64_t *entry_ids, int count, long budget_ms);

// The extension's schema, quoted, or nullptr when dfend is not installed in
// this database. Cached for the backend's life.
const char *outbox_schema();
// The extension's schema, or InvalidOid (typed as unsigned int here so this
// header needs no PostgreSQL include).
unsigned int outbox_namespace();
// The extension's owner, or InvalidOid.
unsigned int outbox_owner();

} // namespace dfend::pg
