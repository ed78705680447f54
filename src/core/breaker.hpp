// A circuit breaker for systemic failures: when DFend cannot be reached at
// all (connection refused, DNS, TLS), rejects the key, or answers a storm of
// 5xx, sending every queued request only spends their attempts. The breaker
// opens; while open, one probe request at a time finds out whether DFend is
// back (half-open); a success closes it. The outbox worker and
// dfend_process_queue consult it between batches (src/pg/outbox.cpp); what
// an outcome tells it is decided in outbox_policy.hpp.
//
// Same rules as RateState: BreakerState is a plain, trivially copyable
// struct for shared memory, updated under a lock the caller holds, and time
// is passed in.
#pragma once
#include "pure.hpp"

#include "error.hpp"
#include "retry.hpp"

#include <chrono>
#include <cstdint>
#include <type_traits>

namespace dfend {

using BreakerClock = std::chrono::steady_clock;

struct BreakerSettings {
    int failure_threshold = 5;   // consecutive systemic failures that open it
    Millis open_for{500};        // first wait before a probe
    Millis max_open_for{4000};   // the wait doubles per failed probe up to this
    Millis probe_timeout{15000}; // a probe unanswered this long: another may go

    bool operator==(const BreakerSettings &o) const
    {
        return failure_threshold == o.failure_threshold && open_for == o.open_for &&
               max_open_for == o.max_open_for && probe_timeout == o.probe_timeout;
    }
    bool operator!=(const BreakerSettings &o) const { return !(*this == o); }
};

enum class BreakerMode : std::uint8_t { Closed, Open, HalfOpen };

struct BreakerState {
    BreakerMode mode = BreakerMode::Closed;
    bool probe_in_flight = false;
    std::uint32_t consecutive_failures = 0;
    std::int64_t open_until_ns = 0;   // Open: no request before this
    std::int64_t probe_sent_ns = 0;   // HalfOpen: when the probe went
    std::int64_t open_for_ms = 0;     // the current wait, doubled per failed probe
    std::uint64_t opened = 0;         // times it opened, for visibility
};
static_assert(std::is_trivially_copyable_v<BreakerState>, "BreakerState goes to shared memory");
static_assert(std::is_standard_layout_v<BreakerState>, "BreakerState goes to shared memory");

// What one outcome says about DFend as a whole.
enum class BreakerEvent {
    Success,      // any answer that shows DFend works (2xx, and 4xx about a row)
    Failure,      // 5xx, timeout, a broken connection: systemic when many in a row
    HardFailure,  // refused, DNS, TLS, a rejected key: systemic at once
    Neutral,      // says nothing about DFend's health (429, cancelled)
};

// The event a failed request stands for (a 2xx is BreakerEvent::Success).
BreakerEvent breaker_event_for(ErrorKind kind) noexcept;

// What changed, so the caller can log "opened" and "closed" (rate-limiting
// those lines is the caller's job).
enum class BreakerChange { None, Opened, Closed };

// May a request go now? Closed: yes. Open: no until the wait is over, then
// the breaker turns half-open and this request is the probe. HalfOpen: no
// while the probe is out (unless it has been out longer than probe_timeout).
bool breaker_allow(BreakerState &state, const BreakerSettings &settings,
                   BreakerClock::time_point now);

BreakerChange breaker_on_event(BreakerState &state, const BreakerSettings &settings,
                               BreakerClock::time_point now, BreakerEvent event);

const char *breaker_mode_name(BreakerMode mode) noexcept;

} // namespace dfend
