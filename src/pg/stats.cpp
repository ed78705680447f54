#include "stats.hpp"
#include "settings.hpp"

#include "border.hpp"
#include "sqlstates.hpp"
#include "values.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "postgres.hpp"

extern "C" {
#include "commands/dbcommands.h"
}

namespace dfend::pg {

namespace {

// Rows: kTrackedDatabases databases, then one for every database that
// found the table full (datid NULL in dfend_stats).
constexpr int kTrackedDatabases = 64;
constexpr int kSources = 4;
const char *const kSourceNames[kSources] = {"sql", "trigger", "worker", "backfill"};

// How a request ended; one counter each, so requests = their sum.
enum Outcome {
    kStatus2xx,
    kStatusRejected,     // 400, 409, 413, 422: DFend refused the data
    kStatusUnauthorized, // 401, 403: the key
    kStatusNotFound,     // 404
    kStatusRateLimited,  // 429
    kStatus5xx,
    kStatusOther,        // 3xx, 405, 408, ...
    kTransportError,     // no complete answer: DNS, refused, TLS, broken, too large
    kTimeout,            // dfend.connect_timeout or dfend.request_timeout
    kCancelled,          // the caller, a shutdown or a time budget stopped it
    kOutcomes
};

// Latency histogram: upper bounds in microseconds; one more bucket above.
constexpr std::int64_t kBucketBounds[] = {
    250,      500,      1000,     2000,      3000,      5000,      7500,      10000,
    15000,    20000,    30000,    50000,     75000,     100000,    150000,    200000,
    300000,   500000,   750000,   1000000,   1500000,   2000000,   3000000,   5000000,
    7500000,  10000000, 15000000, 30000000,  60000000,  120000000, 300000000, 600000000,
    3600000000};
constexpr int kBuckets = sizeof kBucketBounds / sizeof kBucketBounds[0] + 1;

constexpr std::size_t kErrorText = 256;
constexpr std::size_t kMessageText = 256;
constexpr std::size_t kDetailText = 768;

struct SourceStats {
    pg_atomic_uint64 outcomes[kOutcomes];
    pg_atomic_uint64 retries;
    pg_atomic_uint64 latency[kBuckets];
    pg_atomic_uint64 bytes_sent;
    pg_atomic_uint64 bytes_received;
    slock_t error_lock; // last_error, last_error_at
    TimestampTz last_error_at;
    char last_error[kErrorText];
};

// Systemic failures, for the LOG lines.
enum HealthKind { kKeyRejected, kTls, kConnect, kHealthKinds };

struct Health {
    pg_atomic_uint32 failing; // written under health_lock, read without
    bool logged_failing;      // what the last LOG line said
    TimestampTz logged_at;    // 0: never
    char text[kErrorText];    // the error that started it
};

struct DatabaseStats {
    pg_atomic_uint32 database; // 0: free; claimed under StatsShared::lock
    SourceStats sources[kSources];
    slock_t health_lock;
    Health health[kHealthKinds];
};

struct FailedRequest {
    TimestampTz at;
    Oid database;
    int source;
    int status; // 0: no HTTP answer
    int sqlstate;
    char message[kMessageText];
    char detail[kDetailText];
};

struct StatsShared {
    slock_t lock; // claiming rows, reset_at
    TimestampTz reset_at;
    DatabaseStats databases[kTrackedDatabases + 1];
    slock_t log_lock; // the failed-request log
    std::uint64_t log_written;
};


StatsShared *shared = nullptr;
FailedRequest *failed_log = nullptr; // failed_request_log_size entries
int failed_request_log_size = 100;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

Size failed_log_bytes() { return mul_size(sizeof(FailedRequest), failed_request_log_size); }

void request_shared_memory()
{
    if (previous_request_hook)
        previous_request_hook();
    RequestAddinShmemSpace(add_size(MAXALIGN(sizeof(StatsShared)), MAXALIGN(failed_log_bytes())));
}

void zero_source(SourceStats &source)
{
    for (auto &counter : source.outcomes)
        pg_atomic_write_u64(&counter, 0);
    for (auto &counter : source.latency)
        pg_atomic_write_u64(&counter, 0);
    pg_atomic_write_u64(&source.retries, 0);
    pg_atomic_write_u64(&source.bytes_sent, 0);
    pg_atomic_write_u64(&source.bytes_received, 0);
    SpinLockAcquire(&source.error_lock);
    source.last_error_at = 0;
    source.last_error[0] = '\0';
    SpinLockRelease(&source.error_lock);
}

void attach_shared_memory()
{
    if (previous_startup_hook)
        previous_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    shared = static_cast<StatsShared *>(ShmemInitStruct("dfend stats", sizeof(StatsShared), &found));
    bool log_found = false;
    failed_log = failed_request_log_size > 0
                     ? static_cast<FailedRequest *>(ShmemInitStruct(
                           "dfend failed requests", failed_log_bytes(), &log_found))
                     : nullptr;
    if (!found) {
        memset(shared, 0, sizeof(StatsShared));
        SpinLockInit(&shared->lock);
        SpinLockInit(&shared->log_lock);
        shared->reset_at = GetCurrentTimestamp();
        for (auto &row : shared->databases) {
            pg_atomic_init_u32(&row.database, 0);
            SpinLockInit(&row.health_lock);
            for (auto &health : row.health)
                pg_atomic_init_u32(&health.failing, 0);
            for (auto &source : row.sources) {
                for (auto &counter : source.outcomes)
                    pg_atomic_init_u64(&counter, 0);
                for (auto &counter : source.latency)
                    pg_atomic_init_u64(&counter, 0);
                pg_atomic_init_u64(&source.retries, 0);
                pg_atomic_init_u64(&source.bytes_sent, 0);
                pg_atomic_init_u64(&source.bytes_received, 0);
                SpinLockInit(&source.error_lock);
            }
        }
    }
    if (failed_log && !log_found)
        memset(failed_log, 0, failed_log_bytes());
    LWLockRelease(AddinShmemInitLock);
}

// The row of `database`, or nullptr when it has none (claim = false).
// Lock-free when the row exists; claiming one takes the lock, so two
// backends never claim two rows for one database.
DatabaseStats *row_for(Oid database, bool claim) noexcept
{
    if (!shared)
        return nullptr;
    for (int i = 0; i < kTrackedDatabases; ++i)
        if (pg_atomic_read_u32(&shared->databases[i].database) == database)
            return &shared->databases[i];
    if (!claim)
        return nullptr;
    DatabaseStats *row = &shared->databases[kTrackedDatabases]; // the table is full
    SpinLockAcquire(&shared->lock);
    for (int i = 0; i < kTrackedDatabases; ++i)
        if (pg_atomic_read_u32(&shared->databases[i].database) == database) {
            row = &shared->databases[i];
            break;
        }
    if (row == &shared->databases[kTrackedDatabases])
        for (int i = 0; i < kTrackedDatabases; ++i)
            if (pg_atomic_read_u32(&shared->databases[i].database) == InvalidOid) {
                pg_atomic_write_u32(&shared->databases[i].database, database);
                row = &shared->databases[i];
                break;
            }
    SpinLockRelease(&shared->lock);
    return row;
}

Outcome outcome_for_status(long status) noexcept
{
    if (status >= 200 && status < 300)
        return kStatus2xx;
    switch (status) {
    case 400: case 409: case 413: case 422: return kStatusRejected;
    case 401: case 403: return kStatusUnauthorized;
    case 404: return kStatusNotFound;
    case 429: return kStatusRateLimited;
    default: return status >= 500 && status < 600 ? kStatus5xx : kStatusOther;
    }
}

int bucket_for(std::chrono::microseconds latency) noexcept
{
    const std::int64_t us = latency.count();
    int i = 0;
    while (i < kBuckets - 1 && us > kBucketBounds[i])
        ++i;
    return i;
}

// Copies UTF-8 `a`, then ": " and `b` when both are set, cut at a character
// boundary so that it fits in `size` bytes with its NUL.
void copy_utf8(char *target, std::size_t size, const std::string &a, const std::string &b = {})
{
    std::size_t length = 0;
    bool cut_inside_character = false;
    bool full = false;
    auto append = [&](const char *text, std::size_t n) {
        if (full)
            return;
        std::size_t fits = std::min(n, size - 1 - length);
        memcpy(target + length, text, fits);
        length += fits;
        if (fits < n) {
            full = true;
            cut_inside_character = (static_cast<unsigned char>(text[fits]) & 0xC0) == 0x80;
        }
    };
    append(a.data(), a.size());
    if (!a.empty() && !b.empty()) {
        append(": ", 2);
        append(b.data(), b.size());
    }
    // Never a broken character: drop what was copied of the one cut.
    if (cut_inside_character) {
        while (length > 0 && (static_cast<unsigned char>(target[length - 1]) & 0xC0) == 0x80)
            --length;
        if (length > 0)
            --length; // its first byte
    }
    target[length] = '\0';
}

int health_for(ErrorKind kind) noexcept
{
    switch (kind) {
    case ErrorKind::Unauthorized: return kKeyRejected;
    case ErrorKind::TlsVerification: return kTls;
    case ErrorKind::ConnectFailed: return kConnect;
    default: return -1;
    }
}

class StatsObserver final : public RequestObserver {
  public:
    explicit constexpr StatsObserver(StatsSource source) : source_(static_cast<int>(source)) {}

    void on_response(long status, std::chrono::microseconds latency, std::size_t sent,
                     std::size_t received) noexcept override
    {
        DatabaseStats *row = row_for(MyDatabaseId, true);
        if (!row)
            return;
        SourceStats &stats = row->sources[source_];
        Outcome outcome = outcome_for_status(status);
        pg_atomic_fetch_add_u64(&stats.outcomes[outcome], 1);
        pg_atomic_fetch_add_u64(&stats.latency[bucket_for(latency)], 1);
        pg_atomic_fetch_add_u64(&stats.bytes_sent, sent);
        pg_atomic_fetch_add_u64(&stats.bytes_received, received);
        // Any answer proves the connection and TLS work; these answers
        // prove the key does.
        bool key_works = outcome == kStatus2xx || outcome == kStatusRejected ||
                         outcome == kStatusNotFound;
        for (int kind = 0; kind < kHealthKinds; ++kind)
            if ((kind != kKeyRejected || key_works) &&
                pg_atomic_read_u32(&row->health[kind].failing))
                set_failing(*row, kind, false, nullptr);
    }

    void on_transport_error(ErrorKind kind) noexcept override
    {
        DatabaseStats *row = row_for(MyDatabaseId, true);
        if (!row)
            return;
        Outcome outcome = kind == ErrorKind::Timeout     ? kTimeout
                          : kind == ErrorKind::Cancelled ? kCancelled
                                                         : kTransportError;
        pg_atomic_fetch_add_u64(&row->sources[source_].outcomes[outcome], 1);
    }

    void on_retry() noexcept override
    {
        if (DatabaseStats *row = row_for(MyDatabaseId, true))
            pg_atomic_fetch_add_u64(&row->sources[source_].retries, 1);
    }

    void on_failure(const Error &error) noexcept override
    {
        DatabaseStats *row = row_for(MyDatabaseId, true);
        if (!row || error.kind() == ErrorKind::Cancelled)
            return;
        TimestampTz now = GetCurrentTimestamp();
        SourceStats &stats = row->sources[source_];
        char text[kErrorText];
        copy_utf8(text, sizeof text, error.message(), error.detail());
        SpinLockAcquire(&stats.error_lock);
        memcpy(stats.last_error, text, sizeof text);
        stats.last_error_at = now;
        SpinLockRelease(&stats.error_lock);
        int kind = health_for(error.kind());
        if (kind >= 0 && row != &shared->databases[kTrackedDatabases] &&
            !pg_atomic_read_u32(&row->health[kind].failing))
            set_failing(*row, kind, true, text);
        log_failure(error, now);
    }

  private:
    static void set_failing(DatabaseStats &row, int kind, bool failing, const char *text) noexcept
    {
        Health &health = row.health[kind];
        SpinLockAcquire(&row.health_lock);
        pg_atomic_write_u32(&health.failing, failing ? 1 : 0);
        if (text)
            strlcpy(health.text, text, sizeof health.text);
        SpinLockRelease(&row.health_lock);
    }

    void log_failure(const Error &error, TimestampTz now) noexcept
    {
        if (!failed_log)
            return;
        FailedRequest entry;
        entry.at = now;
        entry.database = MyDatabaseId;
        entry.source = source_;
        entry.status = static_cast<int>(error.http_status());
        entry.sqlstate = sqlstate_for(error.kind(), error.http_status());
        copy_utf8(entry.message, sizeof entry.message, error.message());
        copy_utf8(entry.detail, sizeof entry.detail, error.detail());
        SpinLockAcquire(&shared->log_lock);
        failed_log[shared->log_written % failed_request_log_size] = entry;
        shared->log_written++;
        SpinLockRelease(&shared->log_lock);
    }

    int source_;
};

StatsObserver observers[kSources] = {StatsObserver(StatsSource::Sql),
                                     StatsObserver(StatsSource::Trigger),
                                     StatsObserver(StatsSource::Worker),
                                     StatsObserver(StatsSource::Backfill)};

void notice_not_preloaded()
{
    ereport(NOTICE, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                     errmsg("dfend collects no request statistics"),
                     errdetail("dfend is not in shared_preload_libraries."),
                     errhint("Add dfend to shared_preload_libraries and restart the server.")));
}

// The upper bound, in milliseconds, of the bucket that holds the q-th
// quantile; Infinity above the last bound.
Datum percentile(const std::uint64_t *counts, std::uint64_t total, double q, bool *isnull)
{
    *isnull = total == 0;
    if (total == 0)
        return (Datum) 0;
    auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total)));
    rank = std::max<std::uint64_t>(rank, 1);
    std::uint64_t seen = 0;
    for (int i = 0; i < kBuckets - 1; ++i) {
        seen += counts[i];
        if (seen >= rank)
            return Float8GetDatum(static_cast<double>(kBucketBounds[i]) / 1000.0);
    }
    return Float8GetDatum(std::numeric_limits<double>::infinity());
}

Datum text_or_null(const char *utf8, bool *isnull)
{
    *isnull = utf8[0] == '\0';
    return *isnull ? (Datum) 0
                   : CStringGetTextDatum(to_server_lossy(utf8, static_cast<int>(strlen(utf8))));
}

const char *health_words[kHealthKinds][2] = {
    // {started, stopped}
    {"DFend rejected the API key for requests from database \"%s\"",
     "DFend accepts the API key for requests from database \"%s\" again"},
    {"could not verify the TLS certificate of DFend for requests from database \"%s\"",
     "TLS connections to DFend from database \"%s\" work again"},
    {"could not connect to DFend for requests from database \"%s\"",
     "connections to DFend from database \"%s\" work again"},
};

} // namespace

void install_stats(bool preloaded)
{
    if (!preloaded)
        return;
    DefineCustomIntVariable("dfend.failed_request_log_size",
                            "Sets how many recent failed requests dfend_failed_requests keeps.",
                            "Kept in shared memory for the whole cluster; the oldest is "
                            "overwritten. 0 keeps none.",
                            &failed_request_log_size, 100, 0, 10000, PGC_POSTMASTER, 0, nullptr,
                            nullptr, nullptr);
    previous_request_hook = shmem_request_hook;
    shmem_request_hook = request_shared_memory;
    previous_startup_hook = shmem_startup_hook;
    shmem_startup_hook = attach_shared_memory;
}

RequestObserver *request_observer(StatsSource source) noexcept
{
    return &observers[static_cast<int>(source)];
}

void log_systemic_failures()
{
    DatabaseStats *row = row_for(MyDatabaseId, false);
    if (!row)
        return;
    TimestampTz now = GetCurrentTimestamp();
    for (int kind = 0; kind < kHealthKinds; ++kind) {
        Health &health = row->health[kind];
        bool emit = false;
        bool started = false;
        char text[kErrorText];
        SpinLockAcquire(&row->health_lock);
        bool failing = pg_atomic_read_u32(&health.failing) != 0;
        if (failing != health.logged_failing &&
            (health.logged_at == 0 ||
             TimestampDifferenceExceeds(health.logged_at, now, log_interval_ms()))) {
            emit = true;
            started = failing;
            health.logged_failing = failing;
            health.logged_at = now;
            memcpy(text, health.text, sizeof text);
        }
        SpinLockRelease(&row->health_lock);
        if (!emit)
            continue;
        const char *name = IsTransactionState() ? get_database_name(MyDatabaseId) : nullptr;
        char *database = name ? pstrdup(name) : psprintf("%u", MyDatabaseId);
        if (started)
            ereport(LOG, (errcode(kind == kKeyRejected ? ERRCODE_DFEND_KEY_REJECTED
                                                       : ERRCODE_DFEND_UNAVAILABLE),
                          errmsg(health_words[kind][0], database),
                          errdetail("The error was: %s",
                                    to_server_lossy(text, static_cast<int>(strlen(text)))),
                          errhint("Requests from this database fail until this is fixed; a "
                                  "LOG line says when they work again.")));
        else
            ereport(LOG, (errmsg(health_words[kind][1], database)));
    }
}

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PG_FUNCTION_INFO_V1(dfend_internal_stats);
Datum dfend_internal_stats(PG_FUNCTION_ARGS)
{
    InitMaterializedSRF(fcinfo, 0);
    auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    if (!shared) {
        notice_not_preloaded();
        PG_RETURN_NULL();
    }
    SpinLockAcquire(&shared->lock);
    TimestampTz reset_at = shared->reset_at;
    SpinLockRelease(&shared->lock);
    for (int r = 0; r <= kTrackedDatabases; ++r) {
        DatabaseStats &row = shared->databases[r];
        Oid database = pg_atomic_read_u32(&row.database);
        if (r < kTrackedDatabases && database == InvalidOid)
            continue;
        for (int s = 0; s < kSources; ++s) {
            SourceStats &stats = row.sources[s];
            std::uint64_t outcomes[kOutcomes];
            std::uint64_t requests = 0;
            for (int i = 0; i < kOutcomes; ++i)
                requests += outcomes[i] = pg_atomic_read_u64(&stats.outcomes[i]);
            std::uint64_t latency[kBuckets];
            std::uint64_t answered = 0;
            for (int i = 0; i < kBuckets; ++i)
                answered += latency[i] = pg_atomic_read_u64(&stats.latency[i]);
            char last_error[kErrorText];
            SpinLockAcquire(&stats.error_lock);
            memcpy(last_error, stats.last_error, sizeof last_error);
            TimestampTz last_error_at = stats.last_error_at;
            SpinLockRelease(&stats.error_lock);
            std::uint64_t retries = pg_atomic_read_u64(&stats.retries);
            if (requests == 0 && retries == 0 && last_error_at == 0)
                continue;

            Datum values[22];
            bool nulls[22] = {};
            values[0] = ObjectIdGetDatum(database);
            nulls[0] = r == kTrackedDatabases;
            values[1] = CStringGetTextDatum(kSourceNames[s]);
            values[2] = Int64GetDatum(static_cast<int64>(requests));
            for (int i = 0; i < kOutcomes; ++i)
                values[3 + i] = Int64GetDatum(static_cast<int64>(outcomes[i]));
            values[13] = Int64GetDatum(static_cast<int64>(retries));
            values[14] = percentile(latency, answered, 0.50, &nulls[14]);
            values[15] = percentile(latency, answered, 0.95, &nulls[15]);
            values[16] = percentile(latency, answered, 0.99, &nulls[16]);
            values[17] = Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&stats.bytes_sent)));
            values[18] =
                Int64GetDatum(static_cast<int64>(pg_atomic_read_u64(&stats.bytes_received)));
            values[19] = text_or_null(last_error, &nulls[19]);
            values[20] = TimestampTzGetDatum(last_error_at);
            nulls[20] = last_error_at == 0;
            values[21] = TimestampTzGetDatum(reset_at);
            tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
        }
    }
    PG_RETURN_NULL();
}

// Newest first.
PG_FUNCTION_INFO_V1(dfend_internal_failed_requests);
Datum dfend_internal_failed_requests(PG_FUNCTION_ARGS)
{
    InitMaterializedSRF(fcinfo, 0);
    auto *result = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    if (!shared) {
        notice_not_preloaded();
        PG_RETURN_NULL();
    }
    if (!failed_log)
        PG_RETURN_NULL();
    SpinLockAcquire(&shared->log_lock);
    std::uint64_t written = shared->log_written;
    SpinLockRelease(&shared->log_lock);
    std::uint64_t kept = std::min<std::uint64_t>(written, failed_request_log_size);
    for (std::uint64_t n = 0; n < kept; ++n) {
        FailedRequest entry;
        SpinLockAcquire(&shared->log_lock);
        // Entries written meanwhile took the oldest places: stop before them.
        bool overwritten = shared->log_written - written >= failed_request_log_size - n;
        if (!overwritten)
            entry = failed_log[(written - 1 - n) % failed_request_log_size];
        SpinLockRelease(&shared->log_lock);
        if (overwritten)
            break;
        Datum values[7];
        bool nulls[7] = {};
        values[0] = TimestampTzGetDatum(entry.at);
        values[1] = ObjectIdGetDatum(entry.database);
        values[2] = CStringGetTextDatum(kSourceNames[entry.source]);
        values[3] = Int32GetDatum(entry.status);
        nulls[3] = entry.status == 0;
        values[4] = CStringGetTextDatum(unpack_sql_state(entry.sqlstate));
        values[5] = text_or_null(entry.message, &nulls[5]);
        values[6] = text_or_null(entry.detail, &nulls[6]);
        tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
    }
    PG_RETURN_NULL();
}

// Zeroes every counter and empties the failed-request log; the rows of
// databases that no longer exist are freed for others.
PG_FUNCTION_INFO_V1(dfend_stats_reset);
Datum dfend_stats_reset(PG_FUNCTION_ARGS)
{
    if (!shared) {
        notice_not_preloaded();
        PG_RETURN_VOID();
    }
    for (int r = 0; r <= kTrackedDatabases; ++r) {
        DatabaseStats &row = shared->databases[r];
        Oid database = pg_atomic_read_u32(&row.database);
        if (r < kTrackedDatabases && database == InvalidOid)
            continue;
        for (auto &source : row.sources)
            zero_source(source);
        if (r < kTrackedDatabases &&
            !SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(database))) {
            SpinLockAcquire(&row.health_lock);
            for (auto &health : row.health) {
                pg_atomic_write_u32(&health.failing, 0);
                health.logged_failing = false;
                health.logged_at = 0;
            }
            SpinLockRelease(&row.health_lock);
            SpinLockAcquire(&shared->lock);
            pg_atomic_write_u32(&row.database, InvalidOid);
            SpinLockRelease(&shared->lock);
        }
    }
    // Readers look at no more than log_written entries.
    SpinLockAcquire(&shared->log_lock);
    shared->log_written = 0;
    SpinLockRelease(&shared->log_lock);
    TimestampTz now = GetCurrentTimestamp();
    SpinLockAcquire(&shared->lock);
    shared->reset_at = now;
    SpinLockRelease(&shared->lock);
    PG_RETURN_VOID();
}

} // extern "C"
