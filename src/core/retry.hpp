// When to try again. Pure arithmetic, so the policy is unit-tested without a
// clock or a network.
#pragma once
#include "pure.hpp"

#include <chrono>
#include <cstdint>
#include <random>

namespace dfend {

using Millis = std::chrono::milliseconds;

struct RetryPolicy {
    int max_retries = 3;         // attempts after the first
    Millis base_delay{100};      // first backoff step
    Millis max_delay{5000};      // cap on a backoff step and on Retry-After

    bool operator==(const RetryPolicy &o) const
    {
        return max_retries == o.max_retries && base_delay == o.base_delay &&
               max_delay == o.max_delay;
    }
    bool operator!=(const RetryPolicy &o) const { return !(*this == o); }
};

// Exponential backoff with equal jitter: a step of base * 2^retry (capped),
// half of it fixed and half random, so that many clients that failed
// together do not retry together. A Retry-After (seconds, -1 when absent) is
// a floor: we never come back earlier than the server asked.
Millis backoff_delay(const RetryPolicy &policy, int retry, long retry_after_seconds,
                     std::mt19937_64 &rng);

// The wait to tell a caller that gives up: the step dfend's own backoff
// would take next (base * 2^retry, capped), without jitter so that callers
// can rely on it, and never less than the server's Retry-After (seconds,
// -1 when absent). The jittered backoff_delay is never longer than this.
Millis suggested_wait(const RetryPolicy &policy, int retry, long retry_after_seconds);

// True when the server asked for a longer wait than the policy allows, so the
// caller should give up now instead of sleeping.
bool retry_after_exceeds_policy(const RetryPolicy &policy, long retry_after_seconds);

} // namespace dfend
