// The outbox's link to the background workers: shared memory with one slot
// per served database, commit-time wake-ups, and the workers' status.
#pragma once

#include <cstdint>

namespace dfend::pg {

// PostgreSQL-style. Marks the current transaction as having added pending
// outbox entries: when it commits, the worker serving this database is woken
// at once (a latch), so entries need no polling. Costs one flag per call; the
// commit callback is registered once per backend, not per transaction.
void note_enqueued();

// From _PG_init: the shared memory hooks (only when preloaded) and the
// commit callback.
void install_queue_hooks(bool preloaded);

// Worker side. Claims the slot for this database; false when none is free.
bool claim_worker_slot(int slot_index);
void report_worker_state(const char *state);
void report_worker_batch(std::int64_t registered, std::int64_t failed);

// From _PG_init when preloaded: one background worker per database named in
// dfend.worker_databases.
void register_workers();

// Number of worker slots, and so of databases a cluster's workers can serve.
constexpr int kMaxWorkerDatabases = 16;

} // namespace dfend::pg
