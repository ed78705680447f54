#include "queue.hpp"

#include "values.hpp"

#include "postgres.hpp"

namespace dfend::pg {

namespace {

struct WorkerSlot {
    Oid database;
    int pid;
    Latch *latch;
    char state[64];
    TimestampTz last_batch_at;
    TimestampTz started_at;
    int64 registered;
    int64 failed;
};

struct QueueShared {
    slock_t mutex;
    WorkerSlot slots[kMaxWorkerDatabases];
};

QueueShared *shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;
bool enqueued_in_transaction = false;
int my_slot = -1;

void request_shared_memory()
{
    if (previous_request_hook)
        previous_request_hook();
    RequestAddinShmemSpace(MAXALIGN(sizeof(QueueShared)));
}

void attach_shared_memory()
{
    if (previous_startup_hook)
        previous_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    shared = static_cast<QueueShared *>(ShmemInitStruct("dfend queue", sizeof(QueueShared), &found));
    if (!found) {
        memset(shared, 0, sizeof(QueueShared));
        SpinLockInit(&shared->mutex);
    }
    LWLockRelease(AddinShmemInitLock);
}

void wake_worker(Oid database)
{
    if (!shared)
        return;
    Latch *latch = nullptr;
    SpinLockAcquire(&shared->mutex);
    for (auto &slot : shared->slots)
        if (slot.database == database && slot.pid != 0)
            latch = slot.latch;
    SpinLockRelease(&shared->mutex);
    if (latch)
        SetLatch(latch);
}

void on_transaction_end(XactEvent event, void *)
{
    switch (event) {
    case XACT_EVENT_COMMIT:
    case XACT_EVENT_PARALLEL_COMMIT:
        if (enqueued_in_transaction)
            wake_worker(MyDatabaseId);
        enqueued_in_transaction = false;
        break;
    case XACT_EVENT_ABORT:
    case XACT_EVENT_PARALLEL_ABORT:
        enqueued_in_transaction = false;
        break;
    default:
        break;
    }
}

void release_slot(int, Datum)
{
    if (!shared || my_slot < 0)
        return;
    SpinLockAcquire(&shared->mutex);
    shared->slots[my_slot].pid = 0;
    shared->slots[my_slot].latch = nullptr;
    strlcpy(shared->slots[my_slot].state, "stopped", sizeof shared->slots[my_slot].state);
    SpinLockRelease(&shared->mutex);
}

} // namespace

void note_enqueued() { enqueued_in_transaction = true; }

void install_queue_hooks(bool preloaded)
{
    if (preloaded) {
        previous_request_hook = shmem_request_hook;
        shmem_request_hook = request_shared_memory;
        previous_startup_hook = shmem_startup_hook;
        shmem_startup_hook = attach_shared_memory;
    }
    RegisterXactCallback(on_transaction_end, nullptr);
}

bool claim_worker_slot(int slot_index)
{
    if (!shared || slot_index < 0 || slot_index >= kMaxWorkerDatabases)
        return false;
    SpinLockAcquire(&shared->mutex);
    WorkerSlot &slot = shared->slots[slot_index];
    slot.database = MyDatabaseId;
    slot.pid = MyProcPid;
    slot.latch = MyLatch;
    slot.started_at = GetCurrentTimestamp();
    strlcpy(slot.state, "starting", sizeof slot.state);
    SpinLockRelease(&shared->mutex);
    my_slot = slot_index;
    on_shmem_exit(release_slot, 0);
    return true;
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

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PG_FUNCTION_INFO_V1(dfend_internal_note_enqueued);
Datum dfend_internal_note_enqueued(PG_FUNCTION_ARGS)
{
    note_enqueued();
    PG_RETURN_VOID();
}

// The worker serving the current database: one row, NULLs when none.
PG_FUNCTION_INFO_V1(dfend_worker_status);
Datum dfend_worker_status(PG_FUNCTION_ARGS)
{
    TupleDesc result_type = composite_result_type(fcinfo);
    Datum values[6] = {};
    bool nulls[6] = {true, false, true, true, true, true};
    WorkerSlot found = {};
    bool have = false;
    if (shared) {
        SpinLockAcquire(&shared->mutex);
        for (auto &slot : shared->slots)
            if (slot.database == MyDatabaseId && (slot.pid != 0 || !have)) {
                found = slot;
                have = true;
            }
        SpinLockRelease(&shared->mutex);
    }
    if (!shared)
        values[1] = CStringGetTextDatum("not running: dfend is not in shared_preload_libraries");
    else if (!have)
        values[1] = CStringGetTextDatum("not running: database not in dfend.worker_databases");
    else {
        values[1] = CStringGetTextDatum(found.pid ? found.state : "stopped");
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
