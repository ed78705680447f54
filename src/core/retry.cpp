#include "retry.hpp"

#include <algorithm>

namespace dfend {

namespace {

std::int64_t backoff_step(const RetryPolicy &policy, int retry)
{
    const std::int64_t base = std::max<std::int64_t>(policy.base_delay.count(), 1);
    const std::int64_t cap = std::max<std::int64_t>(policy.max_delay.count(), base);
    std::int64_t step = base;
    for (int i = 0; i < retry && step < cap; ++i)
        step *= 2;
    return std::min(step, cap);
}

// A Retry-After (seconds, -1 when absent) as a floor on `delay` (ms).
std::int64_t at_least_retry_after(std::int64_t delay, long retry_after_seconds)
{
    if (retry_after_seconds < 0)
        return delay;
    // Clamped first: a hostile Retry-After must not overflow.
    const std::int64_t seconds = std::min<std::int64_t>(retry_after_seconds, INT64_MAX / 1000);
    return std::max<std::int64_t>(delay, seconds * 1000);
}

} // namespace

Millis backoff_delay(const RetryPolicy &policy, int retry, long retry_after_seconds,
                     std::mt19937_64 &rng)
{
    const std::int64_t step = backoff_step(policy, retry);
    std::uniform_int_distribution<std::int64_t> jitter(0, step / 2);
    return Millis(at_least_retry_after(step - step / 2 + jitter(rng), retry_after_seconds));
}

Millis suggested_wait(const RetryPolicy &policy, int retry, long retry_after_seconds)
{
    return Millis(at_least_retry_after(backoff_step(policy, retry), retry_after_seconds));
}

bool retry_after_exceeds_policy(const RetryPolicy &policy, long retry_after_seconds)
{
    // Divides instead of multiplying, so that huge values cannot overflow.
    return retry_after_seconds >= 0 &&
           retry_after_seconds > std::max<std::int64_t>(policy.max_delay.count(), 0) / 1000;
}

} // namespace dfend
