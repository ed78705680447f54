// The outbox worker: one background worker per database named in
// dfend.worker_databases. Woken by the latch that committing transactions
// set (see queue.cpp); drains continuously while entries are due; polls only
// as a fallback. SIGTERM aborts transfers in flight at once (the engine polls
// ProcDiePending); SIGHUP reloads settings. An unexpected error ends the
// worker and the postmaster restarts it after bgw_restart_time.
#include "outbox.hpp"
#include "queue.hpp"
#include "settings.hpp"

#include <string>
#include <vector>

#include "postgres.hpp"

extern "C" {
#include "commands/dbcommands.h"
}

namespace dfend::pg {

namespace {

constexpr int kRestartSeconds = 5;

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

std::vector<std::string> split_databases(const char *list)
{
    std::vector<std::string> names;
    std::string current;
    for (const char *p = list;; ++p) {
        if (*p == ',' || *p == '\0') {
            size_t first = current.find_first_not_of(" \t");
            size_t last = current.find_last_not_of(" \t");
            if (first != std::string::npos)
                names.push_back(current.substr(first, last - first + 1));
            current.clear();
            if (*p == '\0')
                break;
        } else {
            current += *p;
        }
    }
    return names;
}

bool extension_installed()
{
    return OidIsValid(get_extension_oid("dfend", true));
}

} // namespace

void register_workers()
{
    // Runs in the postmaster at start-up: a bad list is reported, and the
    // server starts anyway with the workers it can have.
    std::vector<std::string> names = split_databases(worker_databases());
    if ((int) names.size() > kMaxWorkerDatabases) {
        ereport(WARNING, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                          errmsg("dfend.worker_databases names more than %d databases",
                                 kMaxWorkerDatabases),
                          errdetail("Only the first %d get a worker.", kMaxWorkerDatabases)));
        names.resize(kMaxWorkerDatabases);
    }
    for (size_t i = 0; i < names.size(); ++i) {
        if (names[i].size() >= BGW_EXTRALEN) {
            ereport(WARNING, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                              errmsg("database name \"%s\" in dfend.worker_databases is too long",
                                     names[i].c_str()),
                              errdetail("No worker is started for it.")));
            continue;
        }
        BackgroundWorker worker = {};
        worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
        worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
        worker.bgw_restart_time = kRestartSeconds;
        strlcpy(worker.bgw_library_name, "dfend", BGW_MAXLEN);
        strlcpy(worker.bgw_function_name, "dfend_worker_main", BGW_MAXLEN);
        snprintf(worker.bgw_name, BGW_MAXLEN, "dfend worker for database %s", names[i].c_str());
        strlcpy(worker.bgw_type, "dfend worker", BGW_MAXLEN);
        strlcpy(worker.bgw_extra, names[i].c_str(), BGW_EXTRALEN);
        worker.bgw_main_arg = Int32GetDatum((int) i);
        RegisterBackgroundWorker(&worker);
    }
}

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PGDLLEXPORT void dfend_worker_main(Datum argument);

void dfend_worker_main(Datum argument)
{
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    char database[BGW_EXTRALEN];
    strlcpy(database, MyBgworkerEntry->bgw_extra, sizeof database);
    remember_server_settings();
    BackgroundWorkerInitializeConnection(database, nullptr, 0);
    claim_worker_slot(DatumGetInt32(argument));
    StartTransactionCommand(); // for the database name in the LOG line
    ignore_database_and_role_settings();
    CommitTransactionCommand();
    pgstat_report_appname("dfend worker");

    MemoryContext batch_context = AllocSetContextCreate(TopMemoryContext, "dfend worker batch",
                                                        ALLOCSET_DEFAULT_SIZES);
    ereport(LOG, (errmsg("dfend worker started for database \"%s\"", database)));
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            ProcessConfigFile(PGC_SIGHUP);
        }
        OutboxSettings settings = current_outbox_settings();
        long sleep_ms = settings.poll_interval_ms;
        bool more = false;

        MemoryContext previous = MemoryContextSwitchTo(batch_context);
        SetCurrentStatementStartTimestamp();
        StartTransactionCommand();
        PushActiveSnapshot(GetTransactionSnapshot());
        if (extension_installed()) {
            report_worker_state("sending");
            pgstat_report_activity(STATE_RUNNING, "dfend: draining the outbox");
            OutboxResult result = process_outbox(settings.batch_size);
            more = result.claimed > 0;
            if (!more && result.next_due_ms >= 0)
                sleep_ms = std::min<long>(sleep_ms, (long) result.next_due_ms + 1);
            if (more)
                report_worker_batch(result.registered, result.failed);
        } else {
            report_worker_state("waiting for CREATE EXTENSION dfend");
        }
        PopActiveSnapshot();
        CommitTransactionCommand();
        pgstat_report_stat(false);
        pgstat_report_activity(STATE_IDLE, nullptr);
        MemoryContextSwitchTo(previous);
        MemoryContextReset(batch_context);

        if (more)
            continue; // drain while work remains: no pause between batches
        report_worker_state("idle");
        int events = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                               std::max<long>(sleep_ms, 1), PG_WAIT_EXTENSION);
        if (events & WL_LATCH_SET)
            ResetLatch(MyLatch);
    }
}

} // extern "C"
