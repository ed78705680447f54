// The outbox worker: one dynamic background worker per database where dfend
// is installed, started by the launcher (launcher.cpp) with the database's
// OID. Woken by the latch that committing transactions set (see
// worker_slots.cpp); drains continuously while entries are due; polls only as
// a fallback.
// SIGTERM aborts transfers in flight at once (the engine polls
// ProcDiePending); SIGHUP reloads settings. It ends quietly (exit 0) when
// dfend is not installed in its database (or is dropped), and between
// batches when a backend needs the database to itself (DROP / RENAME /
// TEMPLATE) or dfend.worker_databases no longer names it; the launcher
// decides whether and when a worker starts again. An unexpected error ends
// the worker too, and the launcher starts another after a few seconds.
#include "backpressure.hpp"
#include "outbox.hpp"
#include "pause.hpp"
#include "worker_slots.hpp"
#include "settings.hpp"

#include <algorithm>

#include "postgres.hpp"

extern "C" {
#include "commands/dbcommands.h"
}

namespace dfend::pg {

namespace {

// Settings as the server configuration gives them, taken before connecting.
struct ServerSetting {
    const struct config_generic *record; // lives as long as the process
    char *value;
};
ServerSetting *server_settings = nullptr;
int server_setting_count = 0;

// Before connecting: what the server configuration (postgresql.conf, the
// command line, defaults) says for every setting a database or role could
// override.
void remember_server_settings()
{
    int count = 0;
    struct config_generic **settings = compat::all_settings(&count);
    server_settings = (ServerSetting *) MemoryContextAllocZero(
        TopMemoryContext, sizeof(ServerSetting) * std::max(count, 1));
    for (int i = 0; i < count; ++i) {
        const struct config_generic *setting = settings[i];
        if (setting->context != PGC_USERSET && setting->context != PGC_SUSET)
            continue;
        const char *value = GetConfigOption(setting->name, true, false);
        if (!value)
            continue;
        server_settings[server_setting_count++] =
            ServerSetting{setting, MemoryContextStrdup(TopMemoryContext, value)};
    }
}

// After connecting: the worker is a superuser, so it ignores what the
// database's owner (ALTER DATABASE ... SET) or a role's settings say, just as
// dfend's SQL never depends on them. Each such setting goes back to the server
// configuration's value.
void ignore_database_and_role_settings()
{
    StringInfoData ignored;
    initStringInfo(&ignored);
    for (int i = 0; i < server_setting_count; ++i) {
        const ServerSetting &setting = server_settings[i];
        GucSource source = setting.record->source;
        if (source != PGC_S_GLOBAL && source != PGC_S_DATABASE && source != PGC_S_USER &&
            source != PGC_S_DATABASE_USER)
            continue;
        if (set_config_option(setting.record->name, setting.value, PGC_SUSET, PGC_S_OVERRIDE,
                              GUC_ACTION_SET, true, DEBUG1, false) > 0)
            appendStringInfo(&ignored, "%s%s", ignored.len ? ", " : "", setting.record->name);
    }
    // Then the settings dfend's own statements rely on.
    SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
    SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET,
                    PGC_S_OVERRIDE);
    SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
    if (ignored.len > 0)
        ereport(LOG, (errmsg("dfend worker ignores settings of database \"%s\" or its role: %s",
                             get_database_name(MyDatabaseId), ignored.data),
                      errdetail("The worker runs as a superuser; it uses the server "
                                "configuration's values instead.")));
}

bool extension_installed()
{
    return OidIsValid(get_extension_oid("dfend", true));
}

char database_name[NAMEDATALEN];

// Ends the worker: `why` (for the launcher) and what dfend_worker_status
// shows until another starts. Outside a transaction.
[[noreturn]] void leave(WorkerExit why, const char *state, int elevel, const char *reason)
{
    report_worker_exit(why, state);
    publish_breaker(BreakerMode::Closed); // nobody is waiting for DFend here now
    ereport(elevel,
            (errmsg("dfend worker for database \"%s\" stops: %s", database_name, reason)));
    proc_exit(0);
}

} // namespace

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PGDLLEXPORT void dfend_worker_main(Datum argument);

void dfend_worker_main(Datum argument)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    Oid database = DatumGetObjectId(argument);
    // Before connecting: a backend dropping, renaming or copying the
    // database keeps the worker out; a previous launcher's worker may still
    // be there. Both end this one without a trace.
    switch (claim_worker_slot(database)) {
    case Claim::Claimed:
        break;
    case Claim::NoSlot:
        ereport(WARNING, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
                          errmsg("dfend worker found no free slot for database %u", database)));
        proc_exit(0);
    case Claim::Paused:
    case Claim::Taken:
        proc_exit(0);
    }
    remember_server_settings();
    BackgroundWorkerInitializeConnectionByOid(database, InvalidOid, 0);
    StartTransactionCommand(); // for the database name in the LOG line
    ignore_database_and_role_settings();
    strlcpy(database_name, get_database_name(MyDatabaseId), sizeof database_name);
    bool installed = extension_installed();
    CommitTransactionCommand();
    pgstat_report_appname("dfend worker");
    // The launcher starts a worker in every database it has not seen yet:
    // most have no dfend, and that is no news.
    if (!installed)
        leave(WorkerExit::NotInstalled, "stopped: dfend is not installed", DEBUG1,
              "dfend is not installed");

    MemoryContext batch_context = AllocSetContextCreate(TopMemoryContext, "dfend worker batch",
                                                        ALLOCSET_DEFAULT_SIZES);
    ereport(LOG, (errmsg("dfend worker started for database \"%s\"", database_name)));
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        switch (worker_asked_to_leave()) {
        case WorkerExit::SteppedAside:
            leave(WorkerExit::SteppedAside, "stopped: stepped aside", LOG,
                  "another session drops, renames or copies the database");
        case WorkerExit::Excluded:
            leave(WorkerExit::Excluded, "not running: database not in dfend.worker_databases",
                  LOG, "dfend.worker_databases no longer names the database");
        default:
            break;
        }
        OutboxSettings settings = current_outbox_settings();
        long sleep_ms = settings.poll_interval_ms;
        bool more = false;
        char waiting[64] = "";

        MemoryContext previous = MemoryContextSwitchTo(batch_context);
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        PushActiveSnapshot(GetTransactionSnapshot());
        installed = extension_installed();
        if (installed && bulk_entries_waiting()) {
            // Rows a bulk statement queued become entries first, whatever
            // the breaker says (local work), in a transaction of their own:
            // committed before the claim, so the status functions and
            // dfend_detach see entries at once and a failing batch does not
            // undo it. Checked first, so a round without bulk rows costs
            // no more than before.
            expand_bulk_entries(settings.batch_size);
            PopActiveSnapshot();
            CommitTransactionCommand();
            SetCurrentStatementStartTimestamp();
            StartTransactionCommand();
            PushActiveSnapshot(GetTransactionSnapshot());
        }
        if (installed) {
            report_worker_state("sending");
            pgstat_report_activity(STATE_RUNNING, "dfend: draining the outbox");
            OutboxResult result = process_outbox(settings.batch_size);
            more = result.claimed > 0;
            if (!more && result.next_due_ms >= 0)
                sleep_ms = std::min<long>(sleep_ms, (long) result.next_due_ms + 1);
            if (result.paused_ms >= 0) {
                // The breaker is open: nothing goes until its next probe.
                sleep_ms = std::min(sleep_ms, result.paused_ms);
                snprintf(waiting, sizeof waiting,
                         "waiting: DFend unreachable, breaker open (%llux), probe in %ld s",
                         (unsigned long long) pause_opened(), (result.paused_ms + 999) / 1000);
            }
            if (more)
                report_worker_batch(result.registered, result.failed);
            publish_breaker(pause_mode()); // for dfend_queue_status
        }
        PopActiveSnapshot();
        CommitTransactionCommand();
        pgstat_report_stat(false);
        pgstat_report_activity(STATE_IDLE, nullptr);
        MemoryContextSwitchTo(previous);
        MemoryContextReset(batch_context);
        if (!installed)
            leave(WorkerExit::NotInstalled, "stopped: dfend is not installed", LOG,
                  "dfend is no longer installed");

        if (more)
            continue; // drain while work remains: no pause between batches
        report_worker_state(waiting[0] ? waiting : "idle");
        int events = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                               std::max<long>(sleep_ms, 1), PG_WAIT_EXTENSION);
        if (events & WL_LATCH_SET)
            ResetLatch(MyLatch);
    }
}

} // extern "C"
