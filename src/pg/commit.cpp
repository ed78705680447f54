// Commit-time registration for sync tables.
//
// The trigger writes an outbox entry for each new or changed row, as in
// async mode, and notes its id here. Just before the transaction commits
// (XACT_EVENT_PRE_COMMIT: after every deferred constraint has been checked,
// so a failing one sends nothing), the transaction's own entries are
// registered concurrently, within dfend.sync_timeout, and their ids stored
// and entries removed as part of the same transaction. Whatever does not
// finish in time stays pending for the worker: the entry commits with the
// row, so nothing is lost either way.
//
// Entries of a rolled-back savepoint are gone from the outbox, so their ids
// here find nothing; no subtransaction bookkeeping is needed.
#include "commit.hpp"

#include "backend.hpp"
#include "outbox.hpp"
#include "settings.hpp"

#include "postgres.hpp"

namespace dfend::pg {

namespace {

// The transaction's entry ids, in TopTransactionContext (gone at its end).
int64 *own_entries = nullptr;
int own_count = 0;
int own_capacity = 0;
bool callback_registered = false;

void forget_entries()
{
    own_entries = nullptr;
    own_count = own_capacity = 0;
}

// Before COMMIT completes: an error here still aborts the transaction, and
// the owner's code may run (the id writes fire the owner's triggers, as the
// owner, in a security-restricted operation).
void register_before_commit()
{
    if (own_count == 0)
        return;
    int64 *entries = own_entries;
    int count = own_count;
    forget_entries(); // whatever happens next, not twice
    long budget_ms = sync_timeout_ms();
    // Never past statement_timeout: a COMMIT that hits it rolls back the rows.
    long statement_ms = statement_deadline_ms();
    if (statement_ms >= 0)
        budget_ms = std::min(budget_ms, std::max(0L, statement_ms - 100));
    if (budget_ms <= 0)
        return; // all of them are the worker's
    PushActiveSnapshot(GetTransactionSnapshot());
    pgstat_report_wait_start(PG_WAIT_EXTENSION);
    register_own_entries(entries, count, budget_ms);
    pgstat_report_wait_end();
    PopActiveSnapshot();
    // Nothing is left for COMMIT's deferred triggers (already fired): the id
    // writes run in a security-restricted operation, where PostgreSQL
    // refuses to queue a deferred trigger event at all.
}

void on_transaction_event(XactEvent event, void *)
{
    switch (event) {
    case XACT_EVENT_PRE_COMMIT:
        register_before_commit();
        break;
    case XACT_EVENT_PARALLEL_PRE_COMMIT:
        break;
    default:
        // Commit, abort, PREPARE TRANSACTION (its entries wait for the worker
        // after COMMIT PREPARED): forget this transaction's list.
        forget_entries();
        break;
    }
}

} // namespace

void register_at_commit(std::int64_t entry_id)
{
    if (!callback_registered) {
        RegisterXactCallback(on_transaction_event, nullptr);
        callback_registered = true;
    }
    if (own_count == own_capacity) {
        int capacity = own_capacity == 0 ? 64 : own_capacity * 2;
        own_entries = own_entries
                          ? (int64 *) repalloc(own_entries, sizeof(int64) * capacity)
                          : (int64 *) MemoryContextAlloc(TopTransactionContext,
                                                         sizeof(int64) * capacity);
        own_capacity = capacity;
    }
    own_entries[own_count++] = entry_id;
}

} // namespace dfend::pg
