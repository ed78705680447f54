// The outbox's link to the background workers: shared memory with one slot
// per database that has (or is about to have) a worker, keyed by the
// database's OID; commit-time wake-ups; the workers' status; and the
// requests that backends make of the launcher and the workers (start a
// worker after CREATE EXTENSION, step aside while a database is dropped,
// renamed or copied). See launcher.cpp for the life cycle.
#pragma once

#include <cstdint>

namespace dfend::pg {

// Slots in shared memory: databases with a worker running, starting,
// stopped with a status worth showing, or paused. Far more than any
// max_worker_processes leaves for dfend.
constexpr int kWorkerSlots = 128;

// Why a worker ended, as the worker leaves it in its slot for the launcher.
enum class WorkerExit : int {
    Unexpected = 0, // an error (or the worker never claimed its slot)
    NotInstalled,   // dfend is not installed in its database
    SteppedAside,   // a backend drops, renames or copies the database
    Excluded,       // the launcher asked (dfend.worker_databases changed)
};

// PostgreSQL-style. Marks the current transaction as having added pending
// outbox entries: when it commits, the worker serving this database is woken
// at once (a latch), so entries need no polling. Costs one flag per call; the
// commit callback is registered once per backend, not per transaction.
void note_enqueued();

// From _PG_init: the shared memory hooks (only when preloaded) and the
// commit callback.
void install_worker_slot_hooks(bool preloaded);

// Whether the worker slots' shared memory exists (dfend is preloaded).
bool worker_slots_ready();

// PostgreSQL-style: whether dfend.worker_databases lets the database named
// `name` have a worker ("*", the default, or a list naming it).
bool worker_database_allowed(const char *name);

// --- Backends ----------------------------------------------------------------

// PostgreSQL-style. Keeps the worker of `database` out until the current
// transaction ends, and waits (bounded) until it has left.
void make_worker_step_aside(unsigned int database);

// Marks the current transaction as having created or updated (installed =
// true) or dropped the extension: at commit this database's worker looks
// again, and after CREATE / ALTER the launcher starts one if none runs.
void note_extension_changed(bool installed);

// --- Workers -----------------------------------------------------------------

enum class Claim { Claimed, Paused, Taken, NoSlot };
// Before connecting: takes the slot of `database` for this process, unless
// a backend keeps the worker out or another worker has it.
Claim claim_worker_slot(unsigned int database);
// Whether a backend (SteppedAside) or the launcher (Excluded) asked this
// worker to leave; Unexpected when nobody did.
WorkerExit worker_asked_to_leave();
// Records why the worker ends, and what dfend_worker_status shows meanwhile.
void report_worker_exit(WorkerExit why, const char *state);
void report_worker_state(const char *state);
void report_worker_batch(std::int64_t registered, std::int64_t failed);

// --- The launcher -----------------------------------------------------------

void claim_launcher();
// What the launcher needs to know about one database's slot.
struct SlotView {
    bool exists;
    int pid;          // the worker's, 0 when none runs
    bool paused;      // a live backend keeps the worker out
    bool probe;       // CREATE / ALTER EXTENSION dfend committed there
    WorkerExit exit;  // why the last worker ended
};
// Reads (and clears the probe request of) the slot of `database`; clears a
// pause whose backend is gone.
SlotView launcher_view(unsigned int database);
// Before starting a worker: a slot exists, shows "starting", and backends
// that pause the database wait for the worker to come and go. False when no
// slot is free.
bool prepare_worker_slot(unsigned int database);
// The start failed (or the worker stopped): the slot shows `state`.
void launcher_set_state(unsigned int database, const char *state);
// dfend.worker_databases no longer names the database: its worker leaves.
void ask_worker_to_leave(unsigned int database);
// The database is gone or no longer served: frees its slot (unless paused).
void forget_database(unsigned int database);

} // namespace dfend::pg
