#include "worker_slots.hpp"

#include "settings.hpp"
#include "values.hpp"

#include "postgres.hpp"

extern "C" {
#include "commands/dbcommands.h"
#include "storage/procarray.h"
}

namespace dfend::pg {

namespace {

// How long a backend waits for a worker to leave its database: first by
// asking (the worker leaves between batches), then with SIGTERM (which
// aborts transfers in flight). PostgreSQL itself then waits up to 5 s more.
constexpr long kGentleWaitMs = 2000;
constexpr long kTotalWaitMs = 8000;

struct WorkerSlot {
    Oid database; // InvalidOid: the slot is free
    int pid;      // the worker's, 0 when none runs
    Latch *latch;
    char state[64];
    TimestampTz last_batch_at;
    TimestampTz started_at;
    int64 registered;
    int64 failed;
    // Requests and the launcher's bookkeeping.
    bool launching;     // the launcher registered a worker that has not claimed yet
    bool leave;         // the launcher asks the worker to leave
    int paused_by;      // a backend dropping, renaming or copying the database
    Latch *paused_latch; // ... woken when the worker has left
    bool probe;         // CREATE / ALTER EXTENSION dfend committed here
    WorkerExit exit;    // why the last worker ended
    bool for_pause_only; // taken by a backend's pause; freed with it
};

struct SlotsShared {
    slock_t mutex;
    int launcher_pid;
    Latch *launcher_latch;
    WorkerSlot slots[kWorkerSlots];
};

SlotsShared *shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;
bool enqueued_in_transaction = false;
bool extension_changed_in_transaction = false;
bool extension_installed_in_transaction = false;
bool pauses_held = false;
bool pause_exit_callback = false;
int my_slot = -1;

void request_shared_memory()
{
    if (previous_request_hook)
        previous_request_hook();
    RequestAddinShmemSpace(MAXALIGN(sizeof(SlotsShared)));
}

void attach_shared_memory()
{
    if (previous_startup_hook)
        previous_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    shared = static_cast<SlotsShared *>(ShmemInitStruct("dfend worker slots", sizeof(SlotsShared), &found));
    if (!found) {
        memset(shared, 0, sizeof(SlotsShared));
        SpinLockInit(&shared->mutex);
    }
    LWLockRelease(AddinShmemInitLock);
}

// Under the mutex.
WorkerSlot *find_slot(Oid database)
{
    for (auto &slot : shared->slots)
        if (slot.database == database)
            return &slot;
    return nullptr;
}

// Under the mutex: the slot of `database`, taking a free one if needed.
WorkerSlot *find_or_add_slot(Oid database)
{
    if (WorkerSlot *slot = find_slot(database))
        return slot;
    for (auto &slot : shared->slots)
        if (slot.database == InvalidOid) {
            memset(&slot, 0, sizeof slot);
            slot.database = database;
            return &slot;
        }
    return nullptr;
}

void wake_worker(Oid database)
{
    if (!shared)
        return;
    Latch *latch = nullptr;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_slot(database); slot && slot->pid != 0)
        latch = slot->latch;
    SpinLockRelease(&shared->mutex);
    if (latch)
        SetLatch(latch);
}

void wake_launcher()
{
    Latch *latch = nullptr;
    SpinLockAcquire(&shared->mutex);
    if (shared->launcher_pid != 0)
        latch = shared->launcher_latch;
    SpinLockRelease(&shared->mutex);
    if (latch)
        SetLatch(latch);
}

// The extension was created, updated or dropped here: the launcher starts a
// worker if none runs, and a running worker checks at once.
void announce_extension_change(bool installed)
{
    if (!shared)
        return;
    wake_worker(MyDatabaseId);
    if (!installed)
        return;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_or_add_slot(MyDatabaseId))
        slot->probe = true;
    SpinLockRelease(&shared->mutex);
    wake_launcher();
}

// At the end of the transaction (or of the backend): the databases this
// backend kept its workers out of get them back.
void release_pauses()
{
    if (!shared || !pauses_held)
        return;
    SpinLockAcquire(&shared->mutex);
    for (auto &slot : shared->slots)
        if (slot.database != InvalidOid && slot.paused_by == MyProcPid) {
            slot.paused_by = 0;
            slot.paused_latch = nullptr;
            // A database no worker serves (template1 for CREATE DATABASE).
            if (slot.for_pause_only && slot.pid == 0 && !slot.launching && !slot.probe)
                memset(&slot, 0, sizeof slot);
        }
    SpinLockRelease(&shared->mutex);
    pauses_held = false;
    wake_launcher();
}

void release_pauses_at_exit(int, Datum) { release_pauses(); }

void on_transaction_end(XactEvent event, void *)
{
    switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
        if (enqueued_in_transaction)
            wake_worker(MyDatabaseId);
        if (extension_changed_in_transaction)
            announce_extension_change(extension_installed_in_transaction);
        enqueued_in_transaction = false;
        extension_changed_in_transaction = extension_installed_in_transaction = false;
        release_pauses();
        break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
        enqueued_in_transaction = false;
        extension_changed_in_transaction = extension_installed_in_transaction = false;
        release_pauses();
        break;
    default:
        break;
    }
}

void release_slot(int, Datum)
{
    if (!shared || my_slot < 0)
        return;
    Latch *waiter = nullptr;
    SpinLockAcquire(&shared->mutex);
    WorkerSlot &slot = shared->slots[my_slot];
    if (slot.pid == MyProcPid) {
        slot.pid = 0;
        slot.latch = nullptr;
        slot.leave = false;
        if (slot.exit == WorkerExit::Unexpected)
            strlcpy(slot.state, "stopped", sizeof slot.state);
        waiter = slot.paused_latch;
    }
    SpinLockRelease(&shared->mutex);
    my_slot = -1;
    if (waiter)
        SetLatch(waiter);
}

// Whether the worker `pid` of `database` is still there.
bool worker_present(Oid database, int pid)
{
    bool present = false;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_slot(database))
        present = slot->launching || (slot->pid != 0);
    SpinLockRelease(&shared->mutex);
    // Out of the slot is not yet out of the process array, which is what
    // PostgreSQL counts.
    return present || (pid != 0 && BackendPidGetProc(pid) != nullptr);
}

bool allowed_databases_contains(const char *list, const char *name)
{
    // "*" or a comma-separated list of names; blanks around names ignored.
    const char *at = list;
    for (;;) {
        while (*at == ' ' || *at == '\t')
            ++at;
        const char *end = at;
        while (*end && *end != ',')
            ++end;
        const char *last = end;
        while (last > at && (last[-1] == ' ' || last[-1] == '\t'))
            --last;
        size_t length = last - at;
        if ((length == 1 && *at == '*') || (length == strlen(name) && strncmp(at, name, length) == 0))
            return true;
        if (*end == '\0')
            return false;
        at = end + 1;
    }
}

} // namespace

void note_enqueued() { enqueued_in_transaction = true; }
void note_extension_changed(bool installed)
{
    extension_changed_in_transaction = true;
    // CREATE then DROP in one transaction: nothing to start. A database
    // dfend.worker_databases leaves out: nothing either. (Looked up now: the
    // commit callback cannot read catalogs.)
    const char *name = get_database_name(MyDatabaseId);
    extension_installed_in_transaction = installed && name && worker_database_allowed(name);
}
bool worker_slots_ready() { return shared != nullptr; }

bool worker_database_allowed(const char *name)
{
    return allowed_databases_contains(worker_databases(), name);
}

void install_worker_slot_hooks(bool preloaded)
{
    if (preloaded) {
        previous_request_hook = shmem_request_hook;
        shmem_request_hook = request_shared_memory;
        previous_startup_hook = shmem_startup_hook;
        shmem_startup_hook = attach_shared_memory;
    }
    RegisterXactCallback(on_transaction_end, nullptr);
}

void make_worker_step_aside(unsigned int database)
{
    if (!shared || database == InvalidOid)
        return;
    int pid = 0;
    Latch *latch = nullptr;
    bool paused = false;
    SpinLockAcquire(&shared->mutex);
    WorkerSlot *existing = find_slot(database);
    if (WorkerSlot *slot = existing ? existing : find_or_add_slot(database)) {
        if (!existing)
            slot->for_pause_only = true;
        paused = true;
        slot->paused_by = MyProcPid;
        slot->paused_latch = MyLatch;
        pid = slot->pid;
        latch = slot->latch;
    }
    SpinLockRelease(&shared->mutex);
    if (!paused)
        return; // no slot free, so no worker there either
    pauses_held = true;
    if (!pause_exit_callback) {
        on_shmem_exit(release_pauses_at_exit, 0);
        pause_exit_callback = true;
    }
    if (latch)
        SetLatch(latch);
    TimestampTz started = GetCurrentTimestamp();
    bool terminated = false;
    while (worker_present(database, pid)) {
        CHECK_FOR_INTERRUPTS();
        long waited = TimestampDifferenceMilliseconds(started, GetCurrentTimestamp());
        if (waited >= kTotalWaitMs)
            break; // PostgreSQL reports the database as in use
        if (waited >= kGentleWaitMs && !terminated) {
            // Busy with a batch: transfers in flight are aborted, their
            // entries stay pending.
            SpinLockAcquire(&shared->mutex);
            WorkerSlot *slot = find_slot(database);
            int current = slot ? slot->pid : 0;
            SpinLockRelease(&shared->mutex);
            if (current != 0)
                kill(current, SIGTERM);
            terminated = true;
        }
        (void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
                         PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        SpinLockAcquire(&shared->mutex);
        if (WorkerSlot *slot = find_slot(database); slot && slot->pid != 0)
            pid = slot->pid;
        SpinLockRelease(&shared->mutex);
    }
}

Claim claim_worker_slot(unsigned int database)
{
    if (!shared)
        return Claim::NoSlot;
    Claim claim = Claim::Claimed;
    SpinLockAcquire(&shared->mutex);
    WorkerSlot *slot = find_or_add_slot(database);
    if (!slot)
        claim = Claim::NoSlot;
    else {
        slot->launching = false;
        if (slot->paused_by != 0) {
            claim = Claim::Paused;
            slot->exit = WorkerExit::SteppedAside;
        } else if (slot->pid != 0 && slot->pid != MyProcPid) {
            claim = Claim::Taken;
        } else {
            slot->for_pause_only = false;
            slot->pid = MyProcPid;
            slot->latch = MyLatch;
            slot->leave = false;
            slot->exit = WorkerExit::Unexpected;
            slot->started_at = GetCurrentTimestamp();
            strlcpy(slot->state, "starting", sizeof slot->state);
            my_slot = (int) (slot - shared->slots);
        }
    }
    Latch *waiter = slot && claim != Claim::Claimed ? slot->paused_latch : nullptr;
    SpinLockRelease(&shared->mutex);
    if (waiter)
        SetLatch(waiter);
    if (claim == Claim::Claimed)
        on_shmem_exit(release_slot, 0);
    return claim;
}

WorkerExit worker_asked_to_leave()
{
    if (!shared || my_slot < 0)
        return WorkerExit::Unexpected;
    SpinLockAcquire(&shared->mutex);
    const WorkerSlot &slot = shared->slots[my_slot];
    WorkerExit why = slot.paused_by != 0 ? WorkerExit::SteppedAside
                     : slot.leave        ? WorkerExit::Excluded
                                         : WorkerExit::Unexpected;
    SpinLockRelease(&shared->mutex);
    return why;
}

void report_worker_exit(WorkerExit why, const char *state)
{
    if (!shared || my_slot < 0)
        return;
    SpinLockAcquire(&shared->mutex);
    shared->slots[my_slot].exit = why;
    strlcpy(shared->slots[my_slot].state, state, sizeof shared->slots[my_slot].state);
    SpinLockRelease(&shared->mutex);
}

void report_worker_state(const char *state)
{
    if (!shared || my_slot < 0)
        return;
    SpinLockAcquire(&shared->mutex);
    strlcpy(shared->slots[my_slot].state, state, sizeof shared->slots[my_slot].state);
    SpinLockRelease(&shared->mutex);
}

void report_worker_batch(std::int64_t registered, std::int64_t failed)
{
    if (!shared || my_slot < 0)
        return;
    TimestampTz now = GetCurrentTimestamp();
    SpinLockAcquire(&shared->mutex);
    shared->slots[my_slot].registered += registered;
    shared->slots[my_slot].failed += failed;
    shared->slots[my_slot].last_batch_at = now;
    SpinLockRelease(&shared->mutex);
}

// --- The launcher -----------------------------------------------------------

void clear_launcher(int, Datum)
{
    SpinLockAcquire(&shared->mutex);
    if (shared->launcher_pid == MyProcPid) {
        shared->launcher_pid = 0;
        shared->launcher_latch = nullptr;
    }
    SpinLockRelease(&shared->mutex);
}

void claim_launcher()
{
    SpinLockAcquire(&shared->mutex);
    shared->launcher_pid = MyProcPid;
    shared->launcher_latch = MyLatch;
    SpinLockRelease(&shared->mutex);
    on_shmem_exit(clear_launcher, 0);
}

SlotView launcher_view(unsigned int database)
{
    SlotView view = {};
    int paused_by = 0;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_slot(database)) {
        view.exists = true;
        view.pid = slot->pid;
        view.probe = slot->probe;
        view.exit = slot->exit;
        paused_by = slot->paused_by;
        slot->probe = false;
    }
    SpinLockRelease(&shared->mutex);
    if (paused_by != 0) {
        // A backend that died without its callbacks (it crashed: then the
        // whole server restarted) cannot hold a pause; this is cheap safety.
        if (BackendPidGetProc(paused_by) != nullptr)
            view.paused = true;
        else {
            SpinLockAcquire(&shared->mutex);
            if (WorkerSlot *slot = find_slot(database); slot && slot->paused_by == paused_by) {
                slot->paused_by = 0;
                slot->paused_latch = nullptr;
            }
            SpinLockRelease(&shared->mutex);
        }
    }
    return view;
}

bool prepare_worker_slot(unsigned int database)
{
    bool ready = false;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_or_add_slot(database)) {
        slot->for_pause_only = false;
        slot->launching = true;
        slot->exit = WorkerExit::Unexpected;
        strlcpy(slot->state, "starting", sizeof slot->state);
        ready = true;
    }
    SpinLockRelease(&shared->mutex);
    return ready;
}

void launcher_set_state(unsigned int database, const char *state)
{
    Latch *waiter = nullptr;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_slot(database)) {
        if (slot->launching)
            waiter = slot->paused_latch;
        slot->launching = false;
        strlcpy(slot->state, state, sizeof slot->state);
    }
    SpinLockRelease(&shared->mutex);
    if (waiter)
        SetLatch(waiter);
}

void ask_worker_to_leave(unsigned int database)
{
    Latch *latch = nullptr;
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_slot(database)) {
        slot->leave = true;
        if (slot->pid != 0)
            latch = slot->latch;
    }
    SpinLockRelease(&shared->mutex);
    if (latch)
        SetLatch(latch);
}

void forget_database(unsigned int database)
{
    SpinLockAcquire(&shared->mutex);
    if (WorkerSlot *slot = find_slot(database);
        slot && slot->pid == 0 && slot->paused_by == 0 && !slot->probe)
        memset(slot, 0, sizeof *slot);
    SpinLockRelease(&shared->mutex);
}

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PG_FUNCTION_INFO_V1(dfend_internal_note_enqueued);
Datum dfend_internal_note_enqueued(PG_FUNCTION_ARGS)
{
    note_enqueued();
    PG_RETURN_VOID();
}

// The worker serving the current database: one row; NULLs but the state
// when none runs.
PG_FUNCTION_INFO_V1(dfend_worker_status);
Datum dfend_worker_status(PG_FUNCTION_ARGS)
{
    TupleDesc result_type = composite_result_type(fcinfo);
    Datum values[6] = {};
    bool nulls[6] = {true, false, true, true, true, true};
    WorkerSlot found = {};
    bool have = false;
    int launcher_pid = 0;
    if (shared) {
        SpinLockAcquire(&shared->mutex);
        if (WorkerSlot *slot = find_slot(MyDatabaseId)) {
            found = *slot;
            have = true;
        }
        launcher_pid = shared->launcher_pid;
        SpinLockRelease(&shared->mutex);
    }
    const char *not_running = nullptr;
    if (!shared)
        not_running = "not running: dfend is not in shared_preload_libraries";
    else if (RecoveryInProgress())
        not_running = "not running: server is a standby";
    else if (const char *name = get_database_name(MyDatabaseId);
             !name || !worker_database_allowed(name))
        not_running = "not running: database not in dfend.worker_databases";
    else if (!have || (found.pid == 0 && found.exit == WorkerExit::NotInstalled)) {
        // dfend is installed here (this function is part of it): the
        // launcher starts a worker as soon as it sees the commit.
        not_running = launcher_pid == 0 ? "not running: the dfend launcher is not running"
                                        : "starting";
    }
    if (not_running)
        values[1] = CStringGetTextDatum(not_running);
    else {
        values[1] = CStringGetTextDatum(found.state[0] ? found.state : "starting");
        if (found.pid) {
            values[0] = Int32GetDatum(found.pid);
            nulls[0] = false;
        }
        if (found.started_at) {
            values[2] = TimestampTzGetDatum(found.started_at);
            nulls[2] = false;
        }
        if (found.last_batch_at) {
            values[3] = TimestampTzGetDatum(found.last_batch_at);
            nulls[3] = false;
        }
        values[4] = Int64GetDatum(found.registered);
        values[5] = Int64GetDatum(found.failed);
        nulls[4] = nulls[5] = false;
    }
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(result_type, values, nulls)));
}

} // extern "C"
