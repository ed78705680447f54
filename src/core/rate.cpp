#include "rate.hpp"

#include <algorithm>
#include <cmath>

namespace dfend {

// Why this algorithm. The three candidates of issue 8:
//  - Google's client-side throttling (SRE book) drops requests locally with
//    probability (requests - K*accepts)/(requests + 1). It sheds load from an
//    overloaded backend, but it does not pace: with K = 2 up to half of the
//    requests may still be answered 429, far above our 5% budget.
//  - The AWS SDKs' adaptive mode (CUBIC) cuts the rate by 30% on each 429
//    and grows back along a cubic curve. One random 429 then costs 30%, and
//    1% random 429s at 1,000/s (ten per second) pin the rate to the floor.
//  - AIMD as in TCP Reno: a fixed cut of 30-50% gives a saw tooth averaging
//    85% of the limit at best, with the same weakness for random 429s.
// So we use AIMD in the form DCTCP gives it: once per epoch (at least
// 100 ms, and only answers to requests sent in that epoch, so one overshoot
// is not punished twice when answers come late), the rate drops by the
// share of 429s it caused:
//     rate <- rate * (1 - share) + increase
// Against a token-bucket limit L, rate * (1 - share) is exactly what the
// account accepted, so one epoch takes the rate back to L; a random 1% of
// 429s is a 1% cut, which the increase outweighs. The additive increase is
// b*sqrt(rate) per 100 ms of epoch: independent of the epoch's length, and
// smaller in proportion for a larger rate, which is what makes two clients
// that share one account (separate servers, no coordinator) converge to
// equal shares (Chiu and Jain: the cut is the same proportion for both, the
// increase is a larger proportion for the smaller one). At equilibrium the
// rate sits b*sqrt(L) above L: at L = 400 that is 2-4% of requests answered
// 429 while 100% of the limit is used. The price is paid at small limits
// (at L = 20 about a quarter of requests are 429s, 5 a second), which is
// also where they matter least. An epoch without any 429 also grows the
// rate by 5% per 100 ms, to find a high limit quickly, but never beyond
// twice what the callers actually sent (an idle client learns nothing).
//
// That fast growth waits for a plateau, as CUBIC's does near the rate that
// last drew 429s: only after 500 ms of epochs that sent at the rate without
// a 429 since the last cut. Right after a cut, a clean epoch is no news: an
// account's token bucket refills whenever the callers pause (the worker
// commits a batch every few hundred rows, a backfill every thousand) or run
// below the limit, and its burst then absorbs the excess of a rate above
// the limit for a few epochs. Growing 5% per epoch through them took the
// rate 25-40% past the limit before the 429s came, and the outbox worker
// had 4.5-5% of its requests answered 429 against a 400/s account (burst
// 40), as much as the whole budget of issue 8; with the plateau it is 2-3%
// (RateConvergence.PausesDoNotRestartTheFastGrowth). Epochs that sent well
// below the rate (a pause) do not count towards the plateau.
namespace {

constexpr std::int64_t kEpochNs = 100'000'000;       // 100 ms
constexpr std::int64_t kLongEpochNs = 1'000'000'000; // close with few answers after 1 s
constexpr std::uint32_t kEpochAnswers = 10;          // answers for a meaningful share
constexpr double kSqrtGain = 0.4;                    // b, per 100 ms
constexpr double kCleanGrowth = 0.05;                // per 100 ms without a 429
constexpr double kPlateau = 5;                       // epochs of 100 ms before that
constexpr double kBurstSeconds = 0.01;               // pacing bucket depth
constexpr double kMaxCut = 0.5;                      // at most halve per epoch
constexpr double kShareSmoothing = 0.2;

std::int64_t to_ns(RateClock::time_point t)
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

RateClock::time_point from_ns(std::int64_t ns)
{
    return RateClock::time_point(
        std::chrono::duration_cast<RateClock::duration>(std::chrono::nanoseconds(ns)));
}

double clamp_rate(double rate, const RateSettings &settings)
{
    const double floor = std::max(settings.min_rate, 1e-3);
    rate = std::max(rate, floor);
    if (settings.max_rate > 0)
        rate = std::min(rate, std::max(settings.max_rate, floor));
    return rate;
}

void refill(RateState &state, const RateSettings &settings, std::int64_t now_ns)
{
    const double rate = clamp_rate(state.rate, settings);
    const double elapsed = static_cast<double>(now_ns - state.tokens_at_ns) / 1e9;
    if (elapsed > 0) {
        const double burst = std::max(1.0, rate * kBurstSeconds);
        state.tokens = std::min(burst, state.tokens + elapsed * rate);
        state.tokens_at_ns = now_ns;
    }
}

void close_epoch(RateState &state, const RateSettings &settings, std::int64_t now_ns)
{
    const double length = static_cast<double>(now_ns - state.epoch_start_ns) / kEpochNs;
    const double share =
        static_cast<double>(state.epoch_throttled) / static_cast<double>(state.epoch_answers);
    double rate = clamp_rate(state.rate, settings);
    // An epoch closes by itself after a second of answers; a longer one
    // spanned an idle spell, which says nothing about the account (after
    // five idle seconds, one 429 added 50 epochs' worth of increase).
    const double increase =
        kSqrtGain * std::sqrt(rate) * std::min(length, static_cast<double>(kLongEpochNs / kEpochNs));
    if (state.epoch_throttled == 0) {
        const double sent_rate =
            static_cast<double>(state.epoch_sent) * 1e9 / static_cast<double>(now_ns - state.epoch_start_ns);
        if (sent_rate >= 0.5 * rate) // not a pause
            state.clean_length = std::min(state.clean_length + length, 1e6);
        const double growth = state.clean_length >= kPlateau ? kCleanGrowth * length : 0;
        double grown = rate * (1 + growth) + increase;
        // Application-limited: do not grow past twice what was asked for.
        rate = std::max(rate, std::min(grown, 2 * sent_rate));
    } else {
        // The cut applies to the allowed rate, never to what one epoch
        // happened to send: a backfill sends nothing while it commits a
        // batch, and a random 429 in such an epoch must not take the rate
        // down to that lull. A fresh state's high start halves per epoch.
        rate = rate * (1 - std::min(share, kMaxCut)) + increase;
        state.clean_length = 0;
    }
    state.rate = clamp_rate(rate, settings);
    state.throttled_share += kShareSmoothing * (share - state.throttled_share);
    state.epoch_start_ns = now_ns;
    state.epoch_sent = 0;
    state.epoch_answers = 0;
    state.epoch_throttled = 0;
}

} // namespace

void rate_init(RateState &state, const RateSettings &settings, RateClock::time_point now)
{
    state = RateState{};
    state.rate = clamp_rate(settings.initial_rate, settings);
    state.tokens = 1;
    state.tokens_at_ns = to_ns(now);
    state.epoch_start_ns = to_ns(now);
}

RateClock::time_point rate_reserve(RateState &state, const RateSettings &settings,
                                   RateClock::time_point now)
{
    const std::int64_t now_ns = to_ns(now);
    refill(state, settings, now_ns);
    state.tokens -= 1;
    ++state.epoch_sent;
    ++state.sent;
    if (state.tokens >= 0)
        return now;
    const double wait_s = -state.tokens / clamp_rate(state.rate, settings);
    return from_ns(now_ns + static_cast<std::int64_t>(std::ceil(wait_s * 1e9)));
}

void rate_on_answer(RateState &state, const RateSettings &settings,
                    RateClock::time_point sent_at, RateClock::time_point now,
                    RateSignal signal)
{
    if (signal == RateSignal::Neutral)
        return;
    if (signal == RateSignal::Throttled)
        ++state.throttled;
    const std::int64_t now_ns = to_ns(now);
    if (to_ns(sent_at) < state.epoch_start_ns)
        return; // sent at a rate we have already corrected
    ++state.epoch_answers;
    if (signal == RateSignal::Throttled)
        ++state.epoch_throttled;
    const std::int64_t length = now_ns - state.epoch_start_ns;
    if ((length >= kEpochNs && state.epoch_answers >= kEpochAnswers) || length >= kLongEpochNs)
        close_epoch(state, settings, now_ns);
}

double rate_current(const RateState &state, const RateSettings &settings)
{
    return clamp_rate(state.rate, settings);
}

LocalRateLimiter::LocalRateLimiter(RateSettings settings, RateClock::time_point now)
    : settings_(settings)
{
    rate_init(state_, settings_, now);
}

RateClock::time_point LocalRateLimiter::reserve(RateClock::time_point now) noexcept
{
    return rate_reserve(state_, settings_, now);
}

void LocalRateLimiter::on_answer(RateClock::time_point sent_at, RateClock::time_point now,
                                 RateSignal signal) noexcept
{
    rate_on_answer(state_, settings_, sent_at, now, signal);
}

RateClock::time_point retry_not_before(RateClock::time_point now, long retry_after_seconds,
                                       Millis backoff)
{
    Millis wait = std::max(backoff, Millis(0));
    if (retry_after_seconds >= 0) {
        // Clamped first: a hostile Retry-After must not overflow.
        const long long seconds = std::min<long long>(retry_after_seconds, 86400LL * 365);
        wait = std::max(wait, Millis(seconds * 1000));
    }
    return now + wait;
}

} // namespace dfend
