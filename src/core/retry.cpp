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
    if (retry_after_seconds >= 0)
        delay = std::max<std::int64_t>(delay, retry_after_seconds * 1000);
    return Millis(delay);
}

bool retry_after_exceeds_policy(const RetryPolicy &policy, long retry_after_seconds)
{
    return retry_after_seconds >= 0 &&
           retry_after_seconds * 1000 > static_cast<long>(policy.max_delay.count());
}

} // namespace dfend
