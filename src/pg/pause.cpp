// The outbox's circuit breaker, per backend (see pause.hpp).
#include "pause.hpp"
#include "settings.hpp"

#include <algorithm>
#include <cstring>

#include "postgres.hpp"
#include "sqlstates.hpp"

extern "C" {
#include "commands/dbcommands.h"
}

namespace dfend::pg {

namespace {


BreakerState state;
const BreakerSettings settings; // 5 failures in a row; waits of 0.5 s doubling to 4 s
char last_error[512];           // what failed most recently, for the LOG line
bool logged_open = false;
TimestampTz logged_at = 0;

std::int64_t ns_until(std::int64_t when_ns)
{
    std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                           BreakerClock::now().time_since_epoch())
                           .count();
    return std::max<std::int64_t>(0, when_ns - now);
}

} // namespace

PauseGate pause_gate(bool probe_now) noexcept
{
    if (probe_now && state.mode != BreakerMode::Closed) {
        state.open_until_ns = 0;
        state.probe_in_flight = false;
    }
    if (!breaker_allow(state, settings, BreakerClock::now())) {
        std::int64_t wait_ns = state.mode == BreakerMode::Open
                                   ? ns_until(state.open_until_ns)
                                   : ns_until(state.probe_sent_ns +
                                              settings.probe_timeout.count() * 1'000'000);
        return PauseGate{false, false, static_cast<long>(wait_ns / 1'000'000) + 1};
    }
    return PauseGate{true, state.mode == BreakerMode::HalfOpen, 0};
}

void pause_hear(BreakerEvent event, const char *error) noexcept
{
    if ((event == BreakerEvent::Failure || event == BreakerEvent::HardFailure) && error)
        strlcpy(last_error, error, sizeof last_error);
    breaker_on_event(state, settings, BreakerClock::now(), event);
}

void pause_round_done() noexcept
{
    if (state.mode == BreakerMode::HalfOpen && state.probe_in_flight)
        breaker_on_event(state, settings, BreakerClock::now(), BreakerEvent::Neutral);
}

BreakerMode pause_mode() noexcept { return state.mode; }
std::uint64_t pause_opened() noexcept { return state.opened; }

void log_pause_changes()
{
    // At most one "pauses" line a minute; the "resumes" line that ends it
    // comes at once, so the log says when sending went on.
    // Only the worker: it is the one backend per database whose breaker
    // lives across batches. Sessions calling dfend_process_queue each have
    // their own, and would each log; log_systemic_failures covers them.
    if (MyBackendType != B_BG_WORKER)
        return;
    bool open = state.mode != BreakerMode::Closed;
    TimestampTz now = GetCurrentTimestamp();
    if (open == logged_open ||
        (open && logged_at != 0 && !TimestampDifferenceExceeds(logged_at, now, log_interval_ms())))
        return;
    logged_open = open;
    if (open)
        logged_at = now;
    const char *name = IsTransactionState() ? get_database_name(MyDatabaseId) : nullptr;
    char *database = name ? pstrdup(name) : psprintf("%u", MyDatabaseId);
    size_t length = strlen(last_error);
    const char *stop = length > 0 && last_error[length - 1] == '.' ? "" : ".";
    if (open)
        ereport(LOG, (errcode(ERRCODE_DFEND_UNAVAILABLE),
                      errmsg("dfend pauses sending the outbox of database \"%s\": DFend is "
                             "unreachable",
                             database),
                      errdetail("The last error was: %s%s Entries spend no attempt meanwhile; one "
                                "at a time probes whether DFend is back.",
                                length > 0 ? last_error : "unknown", stop)));
    else
        ereport(LOG, (errmsg("dfend resumes sending the outbox of database \"%s\": DFend "
                             "answers again",
                             database)));
}

} // namespace dfend::pg
