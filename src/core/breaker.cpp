#include "breaker.hpp"

#include <algorithm>

namespace dfend {

namespace {

std::int64_t to_ns(BreakerClock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

BreakerChange open(BreakerState &state, const BreakerSettings &settings, std::int64_t now_ns,
                   bool after_probe)
{
    const std::int64_t first = std::max<std::int64_t>(settings.open_for.count(), 1);
    const std::int64_t cap = std::max<std::int64_t>(settings.max_open_for.count(), first);
    state.open_for_ms = after_probe ? std::min(cap, state.open_for_ms * 2) : first;
    state.open_until_ns = now_ns + state.open_for_ms * 1'000'000;
    state.probe_in_flight = false;
    const bool was_closed = state.mode == BreakerMode::Closed;
    state.mode = BreakerMode::Open;
    if (!was_closed)
        return BreakerChange::None; // still open: logged once already
    ++state.opened;
    return BreakerChange::Opened;
}

} // namespace

BreakerEvent breaker_event_for(ErrorKind kind) noexcept
{
    switch (kind) {
    case ErrorKind::ConnectFailed:
    case ErrorKind::TlsVerification:
    case ErrorKind::Unauthorized:
    case ErrorKind::Configuration:
        return BreakerEvent::HardFailure;
    case ErrorKind::Upstream:
    case ErrorKind::Timeout:
    case ErrorKind::ConnectionLost:
    case ErrorKind::BadResponse:
        return BreakerEvent::Failure;
    case ErrorKind::InvalidArgument:
        return BreakerEvent::Success; // DFend answered, about the row
    case ErrorKind::RateLimited:
    case ErrorKind::Cancelled:
    case ErrorKind::Internal:
        return BreakerEvent::Neutral;
    }
    return BreakerEvent::Neutral;
}

bool breaker_allow(BreakerState &state, const BreakerSettings &settings,
                   BreakerClock::time_point now)
{
    const std::int64_t now_ns = to_ns(now);
    switch (state.mode) {
    case BreakerMode::Closed:
        return true;
    case BreakerMode::Open:
        if (now_ns < state.open_until_ns)
            return false;
        state.mode = BreakerMode::HalfOpen;
        break;
    case BreakerMode::HalfOpen:
        if (state.probe_in_flight &&
            now_ns - state.probe_sent_ns < settings.probe_timeout.count() * 1'000'000)
            return false;
        break;
    }
    state.probe_in_flight = true;
    state.probe_sent_ns = now_ns;
    return true;
}

BreakerChange breaker_on_event(BreakerState &state, const BreakerSettings &settings,
                               BreakerClock::time_point now, BreakerEvent event)
{
    const std::int64_t now_ns = to_ns(now);
    switch (event) {
    case BreakerEvent::Neutral:
        // A probe that said nothing (a 429, a cancel, a job refused before
        // sending) frees the way for the next probe.
        if (state.mode == BreakerMode::HalfOpen)
            state.probe_in_flight = false;
        return BreakerChange::None;
    case BreakerEvent::Success: {
        // Any success, the probe's or a late answer's, shows DFend works.
        const bool was_closed = state.mode == BreakerMode::Closed;
        state = BreakerState{BreakerMode::Closed, false, 0, 0, 0, 0, state.opened};
        return was_closed ? BreakerChange::None : BreakerChange::Closed;
    }
    case BreakerEvent::Failure:
    case BreakerEvent::HardFailure:
        break;
    }
    if (state.mode == BreakerMode::HalfOpen && state.probe_in_flight)
        return open(state, settings, now_ns, true); // the probe failed: wait longer
    if (state.mode != BreakerMode::Closed)
        return BreakerChange::None; // late answers of requests sent before it opened
    ++state.consecutive_failures;
    if (event == BreakerEvent::HardFailure ||
        state.consecutive_failures >= static_cast<std::uint32_t>(std::max(settings.failure_threshold, 1)))
        return open(state, settings, now_ns, false);
    return BreakerChange::None;
}

const char *breaker_mode_name(BreakerMode mode) noexcept
{
    switch (mode) {
    case BreakerMode::Closed:
        return "closed";
    case BreakerMode::Open:
        return "open";
    case BreakerMode::HalfOpen:
        return "half-open";
    }
    return "closed";
}

} // namespace dfend
