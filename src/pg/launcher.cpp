// The launcher: one background worker for the whole server (registered in
// _PG_init when preloaded) that starts one outbox worker per database where
// dfend is installed. TimescaleDB's launcher and per-database scheduler are
// the model. PostgreSQL-style only.
//
// - The launcher connects to no database: it reads pg_database (a shared
//   catalog) and so blocks no DROP DATABASE. It lists the databases that
//   allow connections, are not templates and that dfend.worker_databases
//   admits ("*", the default: all), and starts a dynamic worker for each by
//   OID. It looks again every kRescanMs, when a worker ends, and when a
//   backend pokes it.
// - A worker that finds dfend not installed in its database ends at once
//   (exit 0, never restarted by the postmaster); the launcher tries that
//   database again only when CREATE or ALTER EXTENSION dfend commits there
//   (the ProcessUtility hook below pokes it) or when the launcher restarts.
// - A worker that ends by an error is started again after kRestartMs; one
//   whose database was dropped is not (the database is no longer listed).
// - DROP DATABASE, ALTER DATABASE RENAME / SET TABLESPACE and CREATE
//   DATABASE ... TEMPLATE wait for other sessions in the database to leave
//   (CountOtherDBBackends: it signals autovacuum only, and gives up after
//   5 s). Like autovacuum, dfend's worker steps aside: the hook in the
//   backend running the statement asks it to leave, waits for it, and
//   keeps it out until that transaction ends; then the launcher starts it
//   again (under the new name, or not at all if the database is gone).
// - With no free background worker slot (max_worker_processes), the
//   launcher logs a WARNING at most once per kWarningIntervalMs and tries
//   again at the next scan.
#include "launcher.hpp"

#include "worker_slots.hpp"

#include <algorithm>

#include "postgres.hpp"

extern "C" {
#include "access/heapam.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "nodes/parsenodes.h"
#include "utils/hsearch.h"
}

namespace dfend::pg {

namespace {

constexpr long kRescanMs = 5000;
constexpr long kRestartMs = 5000;
constexpr long kWarningIntervalMs = 60000;
constexpr int kLauncherRestartSeconds = 10;

enum class Status {
    Start,        // start a worker when allowed (start_after, not paused)
    Running,      // a worker was registered (or found running)
    NotInstalled, // its last worker found no dfend: wait for a probe
};

struct Database {
    Oid oid; // hash key
    Status status;
    BackgroundWorkerHandle *handle;
    TimestampTz start_after;
    bool listed;
    NameData name;
    // CREATE or ALTER EXTENSION dfend committed while a worker was still
    // running: it may have looked for dfend just before and be on its way
    // out as NotInstalled, so that exit starts another worker at once.
    bool probed_while_running;
};

HTAB *databases = nullptr;
TimestampTz last_warning = 0;

struct Listed {
    Oid oid;
    NameData name;
};

// The databases a worker may serve, read from pg_database like autovacuum's
// launcher does. In the caller's memory context.
List *list_databases()
{
    List *result = NIL;
    MemoryContext caller = CurrentMemoryContext;
    StartTransactionCommand();
    (void) GetTransactionSnapshot();
    Relation relation = table_open(DatabaseRelationId, AccessShareLock);
    TableScanDesc scan = table_beginscan_catalog(relation, 0, nullptr);
    HeapTuple tuple;
    while (HeapTupleIsValid(tuple = heap_getnext(scan, ForwardScanDirection))) {
        Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);
        if (!form->datallowconn || form->datistemplate)
            continue;
#ifdef DATCONNLIMIT_INVALID_DB
        // Half dropped (DROP DATABASE interrupted): no connection possible.
        if (form->datconnlimit == DATCONNLIMIT_INVALID_DB)
            continue;
#endif
        if (!worker_database_allowed(NameStr(form->datname)))
            continue;
        MemoryContext previous = MemoryContextSwitchTo(caller);
        Listed *listed = (Listed *) palloc(sizeof(Listed));
        listed->oid = form->oid;
        listed->name = form->datname;
        result = lappend(result, listed);
        MemoryContextSwitchTo(previous);
    }
    table_endscan(scan);
    table_close(relation, AccessShareLock);
    CommitTransactionCommand();
    return result;
}

// At most once per kWarningIntervalMs: the launcher retries every scan.
bool warning_due()
{
    TimestampTz now = GetCurrentTimestamp();
    if (last_warning != 0 && !TimestampDifferenceExceeds(last_warning, now, kWarningIntervalMs))
        return false;
    last_warning = now;
    return true;
}

void warn_no_worker_slot(const Database *database)
{
    if (!warning_due())
        return;
    ereport(WARNING,
            (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
             errmsg("dfend could not start a worker for database \"%s\"",
                    NameStr(database->name)),
             errdetail("No background worker slot is free (max_worker_processes is %d).",
                       max_worker_processes),
             errhint("Each database where dfend is installed needs one, and the dfend launcher "
                     "one more; parallel query needs some too. Raise max_worker_processes and "
                     "restart the server, or narrow dfend.worker_databases. This message is "
                     "repeated at most once a minute.")));
}

void start_worker(Database *database)
{
    if (!prepare_worker_slot(database->oid)) {
        if (warning_due())
            ereport(WARNING, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                              errmsg("dfend could not start a worker for database \"%s\"",
                                     NameStr(database->name)),
                              errdetail("All %d of dfend's worker slots are taken.",
                                        kWorkerSlots)));
        database->start_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kRescanMs);
        return;
    }
    BackgroundWorker worker = {};
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = BGW_NEVER_RESTART; // the launcher decides
    strlcpy(worker.bgw_library_name, "dfend", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "dfend_worker_main", BGW_MAXLEN);
    snprintf(worker.bgw_name, BGW_MAXLEN, "dfend worker for database %s",
             NameStr(database->name));
    strlcpy(worker.bgw_type, "dfend worker", BGW_MAXLEN);
    worker.bgw_main_arg = ObjectIdGetDatum(database->oid);
    worker.bgw_notify_pid = MyProcPid;
    BackgroundWorkerHandle *handle = nullptr;
    MemoryContext previous = MemoryContextSwitchTo(TopMemoryContext);
    bool registered = RegisterDynamicBackgroundWorker(&worker, &handle);
    MemoryContextSwitchTo(previous);
    if (!registered) {
        launcher_set_state(database->oid,
                           "not running: no free background worker slot (max_worker_processes)");
        warn_no_worker_slot(database);
        database->start_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kRescanMs);
        return;
    }
    database->handle = handle;
    database->status = Status::Running;
    database->probed_while_running = false; // this worker looks for dfend itself
}

// A worker registered by this launcher has ended: why, and what next.
void worker_ended(Database *database, const SlotView &view)
{
    if (database->handle) {
        pfree(database->handle);
        database->handle = nullptr;
    }
    TimestampTz now = GetCurrentTimestamp();
    switch (view.exit) {
    case WorkerExit::NotInstalled:
        database->status = database->probed_while_running ? Status::Start : Status::NotInstalled;
        database->start_after = now;
        break;
    case WorkerExit::SteppedAside:
    case WorkerExit::Excluded:
        database->status = Status::Start;
        database->start_after = now;
        break;
    case WorkerExit::Unexpected:
        launcher_set_state(database->oid, "stopped: restarts in a few seconds after an error");
        database->status = Status::Start;
        database->start_after = TimestampTzPlusMilliseconds(now, kRestartMs);
        break;
    }
}

// Whether a worker (registered by this launcher or by a previous one) is
// there for the database.
bool worker_running(Database *database, const SlotView &view)
{
    if (view.pid != 0)
        return true;
    if (!database->handle)
        return false;
    pid_t pid;
    return GetBackgroundWorkerPid(database->handle, &pid) != BGWH_STOPPED;
}

void scan()
{
    MemoryContext scan_context =
        AllocSetContextCreate(CurrentMemoryContext, "dfend launcher scan", ALLOCSET_SMALL_SIZES);
    MemoryContext previous = MemoryContextSwitchTo(scan_context);
    List *listed = list_databases();
    MemoryContextSwitchTo(scan_context); // the transaction ended in TopMemoryContext

    HASH_SEQ_STATUS sequence;
    Database *database;
    hash_seq_init(&sequence, databases);
    while ((database = (Database *) hash_seq_search(&sequence)) != nullptr)
        database->listed = false;
    ListCell *cell;
    foreach (cell, listed) {
        Listed *entry = (Listed *) lfirst(cell);
        bool found = false;
        database = (Database *) hash_search(databases, &entry->oid, HASH_ENTER, &found);
        if (!found) {
            database->status = Status::Start;
            database->handle = nullptr;
            database->start_after = 0;
            database->probed_while_running = false;
        }
        database->name = entry->name; // follows ALTER DATABASE RENAME
        database->listed = true;
    }

    TimestampTz now = GetCurrentTimestamp();
    hash_seq_init(&sequence, databases);
    while ((database = (Database *) hash_seq_search(&sequence)) != nullptr) {
        SlotView view = launcher_view(database->oid);
        bool running = worker_running(database, view);
        if (!running && database->status == Status::Running)
            worker_ended(database, view);
        if (!database->listed) {
            // Dropped, made a template, or no longer in dfend.worker_databases.
            if (running)
                ask_worker_to_leave(database->oid);
            else {
                forget_database(database->oid);
                (void) hash_search(databases, &database->oid, HASH_REMOVE, nullptr);
            }
            continue;
        }
        if (view.probe && running)
            database->probed_while_running = true;
        if (view.probe && database->status == Status::NotInstalled) {
            database->status = Status::Start;
            database->start_after = now;
        }
        if (database->status == Status::NotInstalled && !running)
            forget_database(database->oid);
        if (running && database->status != Status::NotInstalled)
            database->status = Status::Running; // a previous launcher's worker
        if (database->status == Status::Start && !running && !view.paused &&
            now >= database->start_after)
            start_worker(database);
    }
    MemoryContextSwitchTo(previous);
    MemoryContextDelete(scan_context);
}

// When the next scan is due: at most kRescanMs, sooner for a restart.
long next_scan_ms()
{
    long wait = kRescanMs;
    TimestampTz now = GetCurrentTimestamp();
    HASH_SEQ_STATUS sequence;
    Database *database;
    hash_seq_init(&sequence, databases);
    while ((database = (Database *) hash_seq_search(&sequence)) != nullptr)
        if (database->status == Status::Start && database->start_after > now)
            wait = std::min(wait, TimestampDifferenceMilliseconds(now, database->start_after) + 1);
    return std::max(wait, 1L);
}

Oid database_named(const char *name)
{
    return name ? get_database_oid(name, true) : InvalidOid;
}

bool names_dfend(const char *name) { return name && strcmp(name, "dfend") == 0; }

bool drops_dfend(DropStmt *drop)
{
    if (drop->removeType != OBJECT_EXTENSION)
        return false;
    ListCell *cell;
    foreach (cell, drop->objects) {
        Node *object = (Node *) lfirst(cell);
        if (IsA(object, String) && names_dfend(strVal(object)))
            return true;
    }
    return false;
}

} // namespace

void register_launcher()
{
    BackgroundWorker worker = {};
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    // Not on a standby: the outbox cannot be written there.
    worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = kLauncherRestartSeconds;
    strlcpy(worker.bgw_library_name, "dfend", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, "dfend_launcher_main", BGW_MAXLEN);
    strlcpy(worker.bgw_name, "dfend launcher", BGW_MAXLEN);
    strlcpy(worker.bgw_type, "dfend launcher", BGW_MAXLEN);
    RegisterBackgroundWorker(&worker);
}

void before_utility_statement(Node *statement)
{
    if (!statement || !worker_slots_ready())
        return;
    switch (nodeTag(statement)) {
    case T_DropdbStmt:
        make_worker_step_aside(database_named(((DropdbStmt *) statement)->dbname));
        break;
    case T_RenameStmt: {
        RenameStmt *rename = (RenameStmt *) statement;
        if (rename->renameType == OBJECT_DATABASE)
            make_worker_step_aside(database_named(rename->subname));
        break;
    }
    case T_CreatedbStmt: {
        // The template, named or template1, must have no other session.
        const char *name = "template1";
        ListCell *cell;
        foreach (cell, ((CreatedbStmt *) statement)->options) {
            DefElem *option = (DefElem *) lfirst(cell);
            if (strcmp(option->defname, "template") == 0 && option->arg)
                name = defGetString(option);
        }
        make_worker_step_aside(database_named(name));
        break;
    }
    case T_AlterDatabaseStmt: {
        AlterDatabaseStmt *alter = (AlterDatabaseStmt *) statement;
        ListCell *cell;
        foreach (cell, alter->options) {
            DefElem *option = (DefElem *) lfirst(cell);
            if (strcmp(option->defname, "tablespace") == 0)
                make_worker_step_aside(database_named(alter->dbname));
        }
        break;
    }
    case T_CreateExtensionStmt:
        if (names_dfend(((CreateExtensionStmt *) statement)->extname))
            note_extension_changed(true);
        break;
    case T_AlterExtensionStmt:
        if (names_dfend(((AlterExtensionStmt *) statement)->extname))
            note_extension_changed(true);
        break;
    case T_DropStmt:
        if (drops_dfend((DropStmt *) statement))
            note_extension_changed(false);
        break;
    default:
        break;
    }
}

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PGDLLEXPORT void dfend_launcher_main(Datum argument);

void dfend_launcher_main(Datum)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, SignalHandlerForShutdownRequest); // ends quietly
    BackgroundWorkerUnblockSignals();
    BackgroundWorkerInitializeConnection(nullptr, nullptr, 0); // shared catalogs only
    pgstat_report_appname("dfend launcher");
    claim_launcher();

    HASHCTL control = {};
    control.keysize = sizeof(Oid);
    control.entrysize = sizeof(Database);
    control.hcxt = TopMemoryContext;
    databases = hash_create("dfend launcher databases", 64, &control,
                            HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
    ereport(LOG, (errmsg("dfend launcher started")));
    while (!ShutdownRequestPending) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        scan();
        int events = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                               next_scan_ms(), PG_WAIT_EXTENSION);
        if (events & WL_LATCH_SET)
            ResetLatch(MyLatch);
    }
    // Exit code 1: the postmaster starts the launcher again after
    // kLauncherRestartSeconds unless the server is shutting down.
    proc_exit(1);
}

} // extern "C"
