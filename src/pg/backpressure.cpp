// Shared memory for backpressure (see backpressure.hpp). PostgreSQL-style,
// but every function a C++ frame calls (the limiter) only takes a spinlock
// and does arithmetic: no ereport, no palloc, no exception.
#include "backpressure.hpp"

#include "../core/rate.hpp"

#include <cstring>
#include <memory>

#include "postgres.hpp"

extern "C" {
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
}

#include "backend.hpp"
#include "border.hpp"
#include "settings.hpp"

namespace dfend::pg {

namespace {

// Accounts with a rate of their own. More than one server's settings ever
// name at once (a database may point at another URL or key); the least
// recently used is reused.
constexpr int kAccounts = 8;
// Databases whose worker publishes its breaker (as many as worker slots).
constexpr int kBreakers = 128;
constexpr int kUrlBytes = 200;

struct AccountRate {
    std::uint64_t account;      // hash of URL and key; 0 = free
    char api_url[kUrlBytes];    // for display (truncated)
    std::int64_t last_used_ns;
    RateState rate;
};

struct BreakerView {
    Oid database;
    BreakerMode mode;
};

struct BackpressureShared {
    slock_t lock;
    AccountRate accounts[kAccounts];
    BreakerView breakers[kBreakers];
};

BackpressureShared *shared = nullptr;
shmem_request_hook_type previous_request_hook = nullptr;
shmem_startup_hook_type previous_startup_hook = nullptr;

// The shared rate has no hard cap: max_rate stays each engine's own.
const RateSettings kSharedRate{};

void request_shared_memory()
{
    if (previous_request_hook)
        previous_request_hook();
    RequestAddinShmemSpace(MAXALIGN(sizeof(BackpressureShared)));
}

void attach_shared_memory()
{
    if (previous_startup_hook)
        previous_startup_hook();
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    bool found = false;
    shared = static_cast<BackpressureShared *>(
        ShmemInitStruct("dfend backpressure", sizeof(BackpressureShared), &found));
    if (!found) {
        memset(static_cast<void *>(shared), 0, sizeof(BackpressureShared));
        SpinLockInit(&shared->lock);
    }
    LWLockRelease(AddinShmemInitLock);
}

// FNV-1a: stable across processes of one build, unlike nothing in std.
std::uint64_t account_hash(const std::string &api_url, const std::string &api_key) noexcept
{
    std::uint64_t hash = 14695981039346656037ull;
    auto mix = [&](const std::string &text) {
        for (unsigned char c : text) {
            hash ^= c;
            hash *= 1099511628211ull;
        }
        hash ^= 0xff; // separator: ("ab", "c") differs from ("a", "bc")
        hash *= 1099511628211ull;
    };
    mix(api_url);
    mix(api_key);
    return hash ? hash : 1;
}

std::int64_t to_ns(RateClock::time_point t) noexcept
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Under the lock: the account's entry, claimed (and initialised) if needed.
AccountRate &account_entry(std::uint64_t account, const char *api_url,
                           RateClock::time_point now) noexcept
{
    AccountRate *oldest = &shared->accounts[0];
    for (AccountRate &entry : shared->accounts) {
        if (entry.account == account)
            return entry;
        if (entry.account == 0 || (oldest->account != 0 && entry.last_used_ns < oldest->last_used_ns))
            oldest = &entry;
    }
    oldest->account = account;
    strlcpy(oldest->api_url, api_url, sizeof(oldest->api_url));
    oldest->last_used_ns = to_ns(now);
    rate_init(oldest->rate, kSharedRate, now);
    return *oldest;
}

class SharedRateLimiter final : public RateLimiter {
  public:
    SharedRateLimiter(std::uint64_t account, const std::string &api_url) : account_(account)
    {
        strlcpy(api_url_, api_url.c_str(), sizeof(api_url_));
    }
    std::uint64_t account() const noexcept { return account_; }

    RateClock::time_point reserve(RateClock::time_point now) noexcept override
    {
        SpinLockAcquire(&shared->lock);
        AccountRate &entry = account_entry(account_, api_url_, now);
        entry.last_used_ns = to_ns(now);
        RateClock::time_point slot = rate_reserve(entry.rate, kSharedRate, now);
        SpinLockRelease(&shared->lock);
        return slot;
    }

    void on_answer(RateClock::time_point sent_at, RateClock::time_point now,
                   RateSignal signal) noexcept override
    {
        SpinLockAcquire(&shared->lock);
        AccountRate &entry = account_entry(account_, api_url_, now);
        rate_on_answer(entry.rate, kSharedRate, sent_at, now, signal);
        SpinLockRelease(&shared->lock);
    }

  private:
    std::uint64_t account_;
    char api_url_[kUrlBytes];
};

// The backend's limiter, kept as long as the settings name the same account.
SharedRateLimiter *backend_limiter = nullptr;

} // namespace

void install_backpressure(bool preloaded)
{
    if (!preloaded)
        return;
    previous_request_hook = shmem_request_hook;
    shmem_request_hook = request_shared_memory;
    previous_startup_hook = shmem_startup_hook;
    shmem_startup_hook = attach_shared_memory;
}

RateLimiter *shared_rate_limiter(const std::string &api_url, const std::string &api_key) noexcept
{
    if (!shared)
        return nullptr;
    const std::uint64_t account = account_hash(api_url, api_key);
    if (backend_limiter && backend_limiter->account() == account)
        return backend_limiter;
    // Engines made for the old account are made anew with the new limiter
    // (backend.cpp compares the limiter too), so the old one may go. Plain
    // new/delete: no exception may leave, and std::nothrow says so.
    auto *limiter = new (std::nothrow) SharedRateLimiter(account, api_url);
    if (!limiter)
        return nullptr;
    delete backend_limiter;
    backend_limiter = limiter;
    return backend_limiter;
}

void publish_breaker(BreakerMode mode) noexcept
{
    if (!shared)
        return;
    SpinLockAcquire(&shared->lock);
    BreakerView *free_view = nullptr;
    BreakerView *mine = nullptr;
    for (BreakerView &view : shared->breakers) {
        if (view.database == MyDatabaseId) {
            mine = &view;
            break;
        }
        if (!free_view && view.database == InvalidOid)
            free_view = &view;
    }
    if (!mine && free_view && mode != BreakerMode::Closed) {
        mine = free_view;
        mine->database = MyDatabaseId;
    }
    if (mine) {
        mine->mode = mode;
        if (mode == BreakerMode::Closed)
            mine->database = InvalidOid; // closed is what no entry means
    }
    SpinLockRelease(&shared->lock);
}

} // namespace dfend::pg

using namespace dfend;
using namespace dfend::pg;

extern "C" {

// dfend_internal_rate(OUT api_url text, OUT current boolean, OUT rate float8,
//     OUT rate_limited_share float8, OUT requests bigint, OUT rate_limited bigint,
//     OUT last_request_at timestamptz) RETURNS SETOF record: the shared rate of
// each account in use; `current` marks the one this session's settings reach.
PG_FUNCTION_INFO_V1(dfend_internal_rate);
Datum dfend_internal_rate(PG_FUNCTION_ARGS)
{
    ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
    InitMaterializedSRF(fcinfo, 0);
    if (!shared)
        PG_RETURN_VOID();
    // The account this session's settings reach; none when they name no
    // key (a monitoring view must not fail for that).
    std::uint64_t current = 0;
    cpp_call([&] {
        try {
            ClientSettings client = current_client_settings(backend_context().key_files);
            current = account_hash(client.api_url, client.api_key);
        } catch (const Error &) {
        }
    });
    AccountRate copies[kAccounts];
    SpinLockAcquire(&shared->lock);
    memcpy(copies, shared->accounts, sizeof copies);
    SpinLockRelease(&shared->lock);
    const std::int64_t now_ns = to_ns(RateClock::now());
    const TimestampTz now = GetCurrentTimestamp();
    for (const AccountRate &entry : copies) {
        if (entry.account == 0)
            continue;
        Datum values[7];
        bool nulls[7] = {};
        values[0] = CStringGetTextDatum(entry.api_url);
        values[1] = BoolGetDatum(entry.account == current);
        values[2] = Float8GetDatum(rate_current(entry.rate, kSharedRate));
        values[3] = Float8GetDatum(entry.rate.throttled_share);
        values[4] = Int64GetDatum((int64) entry.rate.sent);
        values[5] = Int64GetDatum((int64) entry.rate.throttled);
        values[6] = TimestampTzGetDatum(now - (now_ns - entry.last_used_ns) / 1000);
        tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
    }
    PG_RETURN_VOID();
}

}

extern "C" {

// dfend_internal_breaker() RETURNS text: the circuit breaker of this
// database's worker (closed, open, half-open); NULL when not preloaded.
PG_FUNCTION_INFO_V1(dfend_internal_breaker);
Datum dfend_internal_breaker(PG_FUNCTION_ARGS)
{
    if (!shared)
        PG_RETURN_NULL();
    BreakerMode mode = BreakerMode::Closed;
    SpinLockAcquire(&shared->lock);
    for (const BreakerView &view : shared->breakers)
        if (view.database == MyDatabaseId)
            mode = view.mode;
    SpinLockRelease(&shared->lock);
    PG_RETURN_TEXT_P(cstring_to_text(breaker_mode_name(mode)));
}

}
