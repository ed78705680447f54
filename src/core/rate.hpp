// The request rate of an account: a pacing token bucket whose rate adapts to
// 429 answers, as a congestion signal rather than a stop. The request engine
// takes every send slot from a RateLimiter: LocalRateLimiter below for one
// engine, or (src/pg/rate_shared.cpp) one RateState in PostgreSQL shared
// memory for every worker and backfill of a server that use the same
// account, so they divide its limit instead of fighting over it.
//
// Shape for shared memory: RateState is a plain, trivially copyable struct of
// numbers (no pointers, no containers).
// The functions below read and write it and must run under a lock the caller
// holds (an LWLock or spinlock there, a mutex in tests). Time is always passed
// in, never read, so tests drive the controller with a simulated clock.
#pragma once
#include "pure.hpp"

#include "retry.hpp"

#include <chrono>
#include <cstdint>
#include <type_traits>

namespace dfend {

using RateClock = std::chrono::steady_clock;

struct RateSettings {
    double max_rate = 0;       // hard cap in requests per second, 0 = none
    // Where a fresh state starts (capped by max_rate): high enough that an
    // account without a limit is never paced; the first 429s bring it down
    // to what was actually sent (see close_epoch).
    double initial_rate = 2000;
    double min_rate = 0.5;     // never slower than this, so probing goes on

    bool operator==(const RateSettings &o) const
    {
        return max_rate == o.max_rate && initial_rate == o.initial_rate &&
               min_rate == o.min_rate;
    }
    bool operator!=(const RateSettings &o) const { return !(*this == o); }
};

// Everything the controller remembers. Times are steady-clock nanoseconds
// (CLOCK_MONOTONIC is one clock for every process of the machine).
struct RateState {
    double rate = 0;                   // allowed requests per second now
    double tokens = 0;                 // pacing bucket; below 0 = slots reserved ahead
    std::int64_t tokens_at_ns = 0;     // when `tokens` was last brought up to date
    std::int64_t epoch_start_ns = 0;   // answers to requests sent before this are old news
    std::uint32_t epoch_sent = 0;      // send slots handed out in this epoch
    std::uint32_t epoch_answers = 0;   // accepted + throttled answers in this epoch
    std::uint32_t epoch_throttled = 0; // 429s among them
    // How long (in 100 ms epochs) the callers have kept sending at the rate
    // without a 429 since the last epoch that had any: the fast growth
    // waits for it (see close_epoch).
    double clean_length = 0;
    double throttled_share = 0;        // smoothed share of 429s, for visibility
    std::uint64_t sent = 0;            // totals, for visibility
    std::uint64_t throttled = 0;
};
static_assert(std::is_trivially_copyable_v<RateState>, "RateState goes to shared memory");
static_assert(std::is_standard_layout_v<RateState>, "RateState goes to shared memory");

// What one answer says about the rate. Anything but 2xx and 429 (5xx,
// transport failures, 4xx for the row's data) is Neutral here: systemic
// failures are the circuit breaker's business, not the rate's.
enum class RateSignal { Accepted, Throttled, Neutral };

void rate_init(RateState &state, const RateSettings &settings, RateClock::time_point now);

// Reserves the next send slot and returns when the request may go (now or
// later): a token bucket at the current rate, at most 10 ms of burst. Call it
// when a request is ready to go, not earlier, so slots are not spent on
// requests that wait for something else.
RateClock::time_point rate_reserve(RateState &state, const RateSettings &settings,
                                   RateClock::time_point now);

// Feeds one answer back. `sent_at` is the time the request went out (the
// slot rate_reserve gave it). Adjusts the rate at the end of each epoch.
void rate_on_answer(RateState &state, const RateSettings &settings,
                    RateClock::time_point sent_at, RateClock::time_point now,
                    RateSignal signal);

// The rate after the hard cap, for display.
double rate_current(const RateState &state, const RateSettings &settings);

// Where the engine takes its send slots and reports answers. Implementations
// must be cheap and must not throw: the engine calls them per request.
class RateLimiter {
  public:
    virtual ~RateLimiter() = default;
    // rate_reserve: when the next request may go.
    virtual RateClock::time_point reserve(RateClock::time_point now) noexcept = 0;
    // rate_on_answer for a request sent at `sent_at`.
    virtual void on_answer(RateClock::time_point sent_at, RateClock::time_point now,
                           RateSignal signal) noexcept = 0;
};

// A RateState of one's own (one engine, or a unit test).
class LocalRateLimiter final : public RateLimiter {
  public:
    explicit LocalRateLimiter(RateSettings settings = {},
                              RateClock::time_point now = RateClock::now());
    RateClock::time_point reserve(RateClock::time_point now) noexcept override;
    void on_answer(RateClock::time_point sent_at, RateClock::time_point now,
                   RateSignal signal) noexcept override;
    const RateState &state() const noexcept { return state_; }

  private:
    RateSettings settings_;
    RateState state_;
};

// When a request answered 429 (or a transient failure) may be tried again:
// never before its own Retry-After (seconds, -1 when absent), never before the
// backoff step. Only this request waits; the others go on at the adjusted
// rate. At that time it takes a send slot through rate_reserve like any other.
RateClock::time_point retry_not_before(RateClock::time_point now, long retry_after_seconds,
                                       Millis backoff);

} // namespace dfend
