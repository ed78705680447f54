#include "retry.hpp"

#include <algorithm>

namespace dfend {

Millis backoff_delay(const RetryPolicy &policy, int retry, long retry_after_seconds,
                     std::mt19937_64 &rng)
{
    const std::int64_t base = std::max<std::int64_t>(policy.base_delay.count(), 1);
    const std::int64_t cap = std::max<std::int64_t>(policy.max_delay.count(), base);
    std::int64_t step = base;
    for (int i = 0; i < retry && step < cap; ++i)
        step *= 2;
    step = std::min(step, cap);
    std::uniform_int_distribution<std::int64_t> jitter(0, step / 2);
    std::int64_t delay = step - step / 2 + jitter(rng);
    if (retry_after_seconds >= 0) {
        // Clamped first: a hostile Retry-After must not overflow.
        const std::int64_t seconds = std::min<std::int64_t>(retry_after_seconds, INT64_MAX / 1000);
        delay = std::max<std::int64_t>(delay, seconds * 1000);
    }
    return Millis(delay);
}

bool retry_after_exceeds_policy(const RetryPolicy &policy, long retry_after_seconds)
{
    // Divides instead of multiplying, so that huge values cannot overflow.
    return retry_after_seconds >= 0 &&
           retry_after_seconds > std::max<std::int64_t>(policy.max_delay.count(), 0) / 1000;
}

} // namespace dfend
