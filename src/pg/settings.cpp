#include "settings.hpp"

#include "../core/validation.hpp"

#include <cstdlib>
#include <cstring>

#include "postgres.hpp"

namespace dfend::pg {

namespace {

// What SHOW, current_setting() and pg_settings display instead of a key.
constexpr const char *kMask = "********";

char *api_url = nullptr;
char *api_key_shown = nullptr; // always kMask or empty; the key lives in ApiKey
char *api_key_file = nullptr;
char *ca_file = nullptr;
int connect_timeout_ms = 5000;
int request_timeout_ms = 10000;
int max_retries = 3;
int retry_base_delay_ms = 100;
int retry_max_delay_ms = 5000;
bool preloaded = false;
char *worker_database_list = nullptr;
int worker_concurrency = 16;
int worker_batch_size = 256;
int max_attempts = 10;
double max_rate = 0;
int worker_poll_interval_ms = 10000;
int table_timeout = 5000;
int sync_timeout = 500;
int missing_row_timeout = 86400;
int log_interval = 60000;
int dead_letter_after = 86400;

// The real key travels as the setting's "extra", which PostgreSQL keeps with
// the displayed value, so the displayed value can be a constant mask. A
// constant mask also means a reload never logs "parameter changed to <key>":
// the value PostgreSQL compares before and after is the mask. The setting is
// PGC_SIGHUP: only postgresql.conf (or the server's command line) sets it;
// statements that would carry it are refused in statements.cpp.
struct ApiKey {
    GucSource source;
    char key[FLEXIBLE_ARRAY_MEMBER];
};
const ApiKey *api_key = nullptr;

bool check_api_key(char **newval, void **extra, GucSource source)
{
    const char *value = *newval ? *newval : "";
    if (value[0] != '\0') {
        // Role, database and function settings live in catalogs that every
        // role can read (pg_db_role_setting, pg_proc.proconfig).
        if (source == PGC_S_TEST || source == PGC_S_GLOBAL || source == PGC_S_DATABASE ||
            source == PGC_S_USER || source == PGC_S_DATABASE_USER) {
            GUC_check_errcode(ERRCODE_INSUFFICIENT_PRIVILEGE);
            GUC_check_errmsg("dfend.api_key cannot be stored as a role, database or "
                             "function setting");
            GUC_check_errdetail("Such settings are kept in catalogs that every role can "
                                "read.");
            GUC_check_errhint("Put the key in the file named by dfend.api_key_file, or "
                              "set dfend.api_key in postgresql.conf and reload.");
            return false;
        }
        char problem[256] = "";
        if (auto why = api_key_problem(value)) // gone before any GUC_check_* call
            strlcpy(problem, why->c_str(), sizeof problem);
        if (problem[0]) {
            // Our own message: PostgreSQL's default one would quote the value.
            GUC_check_errmsg("invalid value for parameter \"dfend.api_key\"");
            GUC_check_errdetail("%s", problem);
            return false;
        }
    }
    std::size_t length = strlen(value);
    auto *stored = static_cast<ApiKey *>(compat::guc_alloc(offsetof(ApiKey, key) + length + 1));
    char *shown = compat::guc_string(length ? kMask : "");
    if (!stored || !shown) {
        compat::guc_release(stored);
        compat::guc_release(shown);
        GUC_check_errcode(ERRCODE_OUT_OF_MEMORY);
        GUC_check_errmsg("out of memory");
        return false;
    }
    stored->source = source;
    memcpy(stored->key, value, length + 1);
    explicit_bzero(*newval, length);
    compat::guc_release(*newval);
    *newval = shown;
    *extra = stored;
    return true;
}

void assign_api_key(const char *, void *extra)
{
    api_key = static_cast<const ApiKey *>(extra);
}

bool check_api_url(char **newval, void **, GucSource)
{
    char problem[256] = "";
    if (auto why = api_url_problem(*newval ? *newval : "")) // gone before GUC_check_errdetail
        strlcpy(problem, why->c_str(), sizeof problem);
    if (problem[0]) {
        GUC_check_errdetail("%s", problem);
        return false;
    }
    return true;
}

} // namespace


OutboxSettings current_outbox_settings()
{
    return OutboxSettings{worker_concurrency, worker_batch_size, max_attempts, max_rate,
                          worker_poll_interval_ms};
}

int sync_timeout_ms() { return sync_timeout; }
int table_timeout_ms() { return table_timeout; }
int missing_row_timeout_s() { return missing_row_timeout; }
int log_interval_ms() { return log_interval; }
int dead_letter_after_s() { return dead_letter_after; }

const char *worker_databases() { return worker_database_list ? worker_database_list : ""; }
void note_loaded_at_startup(bool value) { preloaded = value; }

void define_settings()
{
    DefineCustomStringVariable(
        "dfend.api_url", "Sets the base URL of the DFend API.",
        "Requests go to this URL followed by /identity. Plain http is accepted only "
        "for loopback hosts.",
        &api_url, "https://api.dfend.app", PGC_SUSET, 0, check_api_url, nullptr, nullptr);
    DefineCustomStringVariable(
        "dfend.api_key", "Sets the DFend secret API key sent as x-api-key.",
        "Shown masked. Set in postgresql.conf only; prefer dfend.api_key_file. When set, "
        "this takes precedence.",
        &api_key_shown, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
        check_api_key, assign_api_key, nullptr);
    DefineCustomStringVariable(
        "dfend.api_key_file", "Sets the path of a file holding the DFend secret API key.",
        "The file must be readable by the server's operating system user only.",
        &api_key_file, "", PGC_SUSET, GUC_SUPERUSER_ONLY, nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "dfend.ca_file", "Sets a file of CA certificates to verify DFend's TLS certificate.",
        "Empty means the system's trust store. Verification is always on.", &ca_file, "",
        PGC_SUSET, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.connect_timeout",
                            "Sets the time allowed to connect to DFend.", nullptr,
                            &connect_timeout_ms, 5000, 1, 600000, PGC_USERSET, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.request_timeout",
                            "Sets the time allowed for one request to DFend, connecting "
                            "included.",
                            nullptr, &request_timeout_ms, 10000, 1, 3600000, PGC_USERSET,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.max_retries",
                            "Sets how many times a request is retried after a transient "
                            "failure.",
                            "Transport errors, timeouts, 429 and 5xx are retried.",
                            &max_retries, 3, 0, 100, PGC_USERSET, 0, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("dfend.retry_base_delay",
                            "Sets the first backoff delay between retries.",
                            "Each retry doubles it, up to dfend.retry_max_delay, with "
                            "jitter.",
                            &retry_base_delay_ms, 100, 1, 600000, PGC_USERSET, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.retry_max_delay",
                            "Sets the longest wait before a retry.",
                            "A Retry-After longer than this makes the call fail at once.",
                            &retry_max_delay_ms, 5000, 1, 3600000, PGC_USERSET, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomStringVariable(
        "dfend.worker_databases", "Sets the databases whose outbox a background worker drains.",
        "* (every database where dfend is installed) or comma-separated names. Needs "
        "shared_preload_libraries.",
        &worker_database_list, "*", PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.worker_concurrency",
                            "Sets how many requests the outbox worker keeps in flight.", nullptr,
                            &worker_concurrency, 16, 1, 1024, PGC_SIGHUP, 0, nullptr, nullptr,
                            nullptr);
    DefineCustomIntVariable("dfend.worker_batch_size",
                            "Sets how many outbox entries one worker transaction takes.",
                            nullptr, &worker_batch_size, 256, 1, 100000, PGC_SIGHUP, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("dfend.max_attempts",
                            "Sets how many failed attempts an outbox entry needs before it can "
                            "become dead.",
                            "A transient failure dead-letters the entry only once it has failed "
                            "this many times and is older than dfend.dead_letter_after. "
                            "Failures of the row's own data are dead at once.",
                            &max_attempts, 10, 1, 1000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomRealVariable("dfend.max_rate",
                             "Sets the most requests per second the outbox worker sends.",
                             "0 means no cap.", &max_rate, 0, 0, 1e6, PGC_SIGHUP, 0, nullptr,
                             nullptr, nullptr);
    DefineCustomIntVariable("dfend.worker_poll_interval",
                            "Sets how often the worker looks for due entries when nothing wakes "
                            "it.",
                            "Commits that enqueue wake the worker at once; this is a fallback.",
                            &worker_poll_interval_ms, 10000, 10, 3600000, PGC_SIGHUP, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    // SIGHUP, not a database or role setting: one table's owner must not be
    // able to lift the bound that keeps their table from stalling the others.
    DefineCustomIntVariable("dfend.table_timeout",
                            "Sets how long the worker's statements on one user table may run.",
                            "Reading rows and storing ids of one table in one batch; past it "
                            "that table's entries are retried later. 0 means no limit.",
                            &table_timeout, 5000, 0, 3600000, PGC_SIGHUP, GUC_UNIT_MS, nullptr,
                            nullptr, nullptr);
    // A user setting: it only shortens the caller's own COMMIT; what does not
    // finish in time goes to the outbox, never lost.
    DefineCustomIntVariable("dfend.sync_timeout",
                            "Sets how long COMMIT may wait for DFend to register a sync "
                            "table's new rows.",
                            "Covers every request and retry of the transaction's rows; rows "
                            "not registered in time stay in the outbox for the background "
                            "worker. 0 leaves every row to the worker.",
                            &sync_timeout, 500, 0, 60000, PGC_USERSET, GUC_UNIT_MS, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("dfend.log_interval",
                            "Sets how often dfend may repeat a LOG line about DFend failing.",
                            "The lines when a systemic failure starts or ends, and when the "
                            "worker pauses or resumes sending, per database.",
                            &log_interval, 60000, 1000, 86400000, PGC_SIGHUP, GUC_UNIT_MS,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.missing_row_timeout",
                            "Sets how long an outbox entry whose row is not visible is kept.",
                            "A row may be invisible because a restore or a long transaction "
                            "has not committed it yet; after this long the row counts as "
                            "deleted and its entry is removed.",
                            &missing_row_timeout, 86400, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
                            nullptr, nullptr, nullptr);
    DefineCustomIntVariable("dfend.dead_letter_after",
                            "Sets how long after it was queued an outbox entry whose requests "
                            "keep failing becomes dead.",
                            "Measured from the entry's enqueued_at; the entry must also have "
                            "failed dfend.max_attempts times. Failures while DFend is "
                            "unreachable as a whole cost no attempt.",
                            &dead_letter_after, 86400, 0, INT_MAX, PGC_SIGHUP, GUC_UNIT_S,
                            nullptr, nullptr, nullptr);
    MarkGUCPrefixReserved("dfend");
}

ClientSettings current_client_settings(KeyFileCache &key_files)
{
    ClientSettings settings;
    settings.api_url = api_url ? api_url : "";
    settings.ca_file = ca_file ? ca_file : "";
    settings.connect_timeout_ms = connect_timeout_ms;
    settings.request_timeout_ms = request_timeout_ms;
    settings.retry.max_retries = max_retries;
    settings.retry.base_delay = Millis(retry_base_delay_ms);
    settings.retry.max_delay = Millis(retry_max_delay_ms);

    if (api_key && api_key->key[0] != '\0') {
        // Without preloading, a postgresql.conf value sat in an unprotected
        // placeholder that any role could SHOW until this library loaded.
        bool server_wide = api_key->source == PGC_S_FILE || api_key->source == PGC_S_ARGV;
        if (server_wide && !preloaded)
            throw Error(ErrorKind::Configuration,
                        "dfend.api_key is set in the server configuration but dfend is not "
                        "in shared_preload_libraries",
                        "Until the library is loaded, any role can read the value with "
                        "SHOW, so it is not used.",
                        "Add dfend to shared_preload_libraries and restart, or use "
                        "dfend.api_key_file.");
        settings.api_key = api_key->key;
    } else if (api_key_file && api_key_file[0] != '\0') {
        settings.api_key = key_files.get(api_key_file);
    }
    return settings;
}

} // namespace dfend::pg
