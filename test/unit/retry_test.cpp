// Backoff arithmetic, checked as properties over many seeded samples.
#include "core/retry.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <random>
#include <vector>

using namespace dfend;

namespace {

constexpr int kSamples = 2000;

struct Stats {
    std::int64_t min = INT64_MAX;
    std::int64_t max = INT64_MIN;
    double mean = 0;
};

Stats sample(const RetryPolicy &policy, int retry, long retry_after, std::mt19937_64 &rng)
{
    Stats s;
    double sum = 0;
    for (int i = 0; i < kSamples; ++i) {
        std::int64_t d = backoff_delay(policy, retry, retry_after, rng).count();
        s.min = std::min(s.min, d);
        s.max = std::max(s.max, d);
        sum += static_cast<double>(d);
    }
    s.mean = sum / kSamples;
    return s;
}

RetryPolicy policy(int base_ms, int max_ms, int retries = 3)
{
    RetryPolicy p;
    p.max_retries = retries;
    p.base_delay = Millis(base_ms);
    p.max_delay = Millis(max_ms);
    return p;
}

} // namespace

TEST(Backoff, WithinHalfStepAndStepAndJittered)
{
    std::mt19937_64 rng(12345);
    RetryPolicy p = policy(100, 5000);
    for (int retry = 0; retry < 10; ++retry) {
        std::int64_t step = std::min<std::int64_t>(100LL << retry, 5000);
        Stats s = sample(p, retry, -1, rng);
        EXPECT_GE(s.min, (step + 1) / 2) << "retry " << retry;
        EXPECT_LE(s.max, step) << "retry " << retry;
        // Jitter really spreads the delays over most of the half step.
        EXPECT_GT(s.max - s.min, step / 2 * 8 / 10) << "retry " << retry;
        // Roughly centred on 3/4 of the step.
        EXPECT_NEAR(s.mean, 0.75 * step, 0.05 * step) << "retry " << retry;
    }
}

TEST(Backoff, GrowsUntilTheCap)
{
    std::mt19937_64 rng(7);
    RetryPolicy p = policy(100, 5000);
    double previous = 0;
    for (int retry = 0; retry <= 5; ++retry) { // 100, 200, ..., 3200
        Stats s = sample(p, retry, -1, rng);
        EXPECT_GT(s.mean, previous * 1.8) << "retry " << retry;
        previous = s.mean;
    }
    // Step 6 would be 6400: capped at 5000 from here on.
    for (int retry : {6, 7, 20, 62, 63, 64, 1000, INT_MAX}) {
        Stats s = sample(p, retry, -1, rng);
        EXPECT_LE(s.max, 5000) << "retry " << retry;
        EXPECT_GE(s.min, 2500) << "retry " << retry;
    }
}

TEST(Backoff, MinimumStepIsStrictlyIncreasingBeforeTheCap)
{
    // Every delay of retry n+1 is at least every delay of retry n - (equal jitter
    // makes [step/2, step] then [step, 2 step]).
    std::mt19937_64 rng(99);
    RetryPolicy p = policy(50, 100000);
    for (int retry = 0; retry < 8; ++retry) {
        Stats now = sample(p, retry, -1, rng);
        Stats next = sample(p, retry + 1, -1, rng);
        EXPECT_GE(next.min, now.max) << "retry " << retry;
    }
}

TEST(Backoff, DegeneratePolicies)
{
    std::mt19937_64 rng(1);
    // A zero base still backs off a little and never returns a negative delay.
    for (int retry = 0; retry < 40; ++retry) {
        Stats s = sample(policy(0, 0), retry, -1, rng);
        EXPECT_GE(s.min, 1);
        EXPECT_LE(s.max, 1);
    }
    // A cap below the base: the base wins.
    Stats s = sample(policy(300, 100), 5, -1, rng);
    EXPECT_GE(s.min, 150);
    EXPECT_LE(s.max, 300);
    // Negative retry counts behave as the first retry.
    s = sample(policy(100, 5000), -3, -1, rng);
    EXPECT_GE(s.min, 50);
    EXPECT_LE(s.max, 100);
}

TEST(Backoff, RetryAfterIsAFloorNotAnAddition)
{
    std::mt19937_64 rng(2024);
    RetryPolicy p = policy(100, 5000);
    // Larger than any backoff step: exactly the server's wait.
    Stats s = sample(p, 0, 3, rng);
    EXPECT_EQ(s.min, 3000);
    EXPECT_EQ(s.max, 3000);
    // Smaller than the step: the step's own jittered delay.
    s = sample(p, 6, 1, rng); // step 5000, delays in [2500, 5000]
    EXPECT_GE(s.min, 2500);
    EXPECT_LE(s.max, 5000);
    EXPECT_GT(s.max - s.min, 1000);
    // Retry-After: 0 and absent (-1) change nothing.
    for (long ra : {0L, -1L}) {
        s = sample(p, 2, ra, rng);
        EXPECT_GE(s.min, 200);
        EXPECT_LE(s.max, 400);
    }
    // A mid-range floor clips the low end only.
    s = sample(p, 5, 2, rng); // step 3200: [1600, 3200] floored at 2000
    EXPECT_EQ(s.min, 2000);
    EXPECT_LE(s.max, 3200);
    EXPECT_GT(s.max, 2000);
}

TEST(Backoff, HugeRetryAfterDoesNotOverflow)
{
    std::mt19937_64 rng(3);
    RetryPolicy p = policy(100, 5000);
    for (long ra : {LONG_MAX, LONG_MAX / 1000 + 1, LONG_MAX / 10, 100000000000L}) {
        Millis d = backoff_delay(p, 0, ra, rng);
        EXPECT_GE(d.count(), 5000) << ra;
    }
}

TEST(Backoff, SameSeedSameDelays)
{
    std::mt19937_64 a(42), b(42), c(43);
    RetryPolicy p = policy(100, 5000);
    std::vector<std::int64_t> da, db, dc;
    for (int i = 0; i < 50; ++i) {
        da.push_back(backoff_delay(p, 4, -1, a).count());
        db.push_back(backoff_delay(p, 4, -1, b).count());
        dc.push_back(backoff_delay(p, 4, -1, c).count());
    }
    EXPECT_EQ(da, db);
    EXPECT_NE(da, dc);
}

TEST(SuggestedWait, IsTheStepWithoutJitterFlooredAtRetryAfter)
{
    std::mt19937_64 rng(7);
    RetryPolicy p = policy(100, 5000);
    for (int retry = 0; retry < 10; ++retry) {
        std::int64_t step = std::min<std::int64_t>(100LL << retry, 5000);
        EXPECT_EQ(suggested_wait(p, retry, -1).count(), step) << retry;
        EXPECT_EQ(suggested_wait(p, retry, 0).count(), step) << retry;
        // Never shorter than the wait dfend itself would take.
        EXPECT_GE(suggested_wait(p, retry, -1).count(), sample(p, retry, -1, rng).max);
    }
    EXPECT_EQ(suggested_wait(p, 0, 2).count(), 2000);
    EXPECT_EQ(suggested_wait(p, 5, 2).count(), 3200);
    // Longer than the policy's cap: the server's wait, as asked.
    EXPECT_EQ(suggested_wait(p, 0, 30).count(), 30000);
    EXPECT_GE(suggested_wait(p, 0, LONG_MAX).count(), 5000); // no overflow
}

TEST(RetryAfterExceedsPolicy, ComparesSecondsWithTheCap)
{
    RetryPolicy p = policy(100, 5000);
    EXPECT_FALSE(retry_after_exceeds_policy(p, -1));
    EXPECT_FALSE(retry_after_exceeds_policy(p, 0));
    EXPECT_FALSE(retry_after_exceeds_policy(p, 1));
    EXPECT_FALSE(retry_after_exceeds_policy(p, 5));
    EXPECT_TRUE(retry_after_exceeds_policy(p, 6));
    EXPECT_TRUE(retry_after_exceeds_policy(p, 3600));
    // A cap that is not a whole number of seconds.
    RetryPolicy q = policy(100, 2500);
    EXPECT_FALSE(retry_after_exceeds_policy(q, 2));
    EXPECT_TRUE(retry_after_exceeds_policy(q, 3));
    RetryPolicy none = policy(100, 0);
    EXPECT_FALSE(retry_after_exceeds_policy(none, 0));
    EXPECT_TRUE(retry_after_exceeds_policy(none, 1));
}

TEST(RetryAfterExceedsPolicy, HugeValuesExceed)
{
    RetryPolicy p = policy(100, 5000);
    // Values whose millisecond count overflows a long must still exceed.
    for (long ra : {LONG_MAX, LONG_MAX / 1000 + 1, LONG_MAX / 1000 + 12345, LONG_MAX / 2})
        EXPECT_TRUE(retry_after_exceeds_policy(p, ra)) << ra;
}
