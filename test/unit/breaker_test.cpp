// The circuit breaker on a simulated clock.
#include "core/breaker.hpp"

#include <gtest/gtest.h>

using namespace dfend;

namespace {
using TP = BreakerClock::time_point;
TP ms(long long n) { return TP(std::chrono::milliseconds(n)); }
} // namespace

TEST(Breaker, OpensAfterConsecutiveFailuresOnly)
{
    BreakerSettings s; // 5 in a row, 500 ms first wait
    BreakerState st;
    for (int i = 0; i < 4; ++i)
        EXPECT_EQ(breaker_on_event(st, s, ms(i), BreakerEvent::Failure), BreakerChange::None);
    EXPECT_EQ(breaker_on_event(st, s, ms(5), BreakerEvent::Success), BreakerChange::None);
    EXPECT_EQ(breaker_on_event(st, s, ms(6), BreakerEvent::Neutral), BreakerChange::None);
    for (int i = 0; i < 4; ++i)
        breaker_on_event(st, s, ms(10 + i), BreakerEvent::Failure);
    EXPECT_EQ(st.mode, BreakerMode::Closed);
    EXPECT_TRUE(breaker_allow(st, s, ms(14)));
    EXPECT_EQ(breaker_on_event(st, s, ms(20), BreakerEvent::Failure), BreakerChange::Opened);
    EXPECT_EQ(st.mode, BreakerMode::Open);
    // Late failures of requests already in flight report nothing new.
    EXPECT_EQ(breaker_on_event(st, s, ms(21), BreakerEvent::Failure), BreakerChange::None);
    EXPECT_EQ(st.opened, 1u);
}

TEST(Breaker, HardFailureOpensAtOnce)
{
    BreakerSettings s;
    BreakerState st;
    EXPECT_EQ(breaker_on_event(st, s, ms(0), breaker_event_for(ErrorKind::ConnectFailed)),
              BreakerChange::Opened);
    EXPECT_FALSE(breaker_allow(st, s, ms(1)));
}

TEST(Breaker, HalfOpenLetsOneProbeAtATimeAndSuccessCloses)
{
    BreakerSettings s;
    BreakerState st;
    breaker_on_event(st, s, ms(1000), BreakerEvent::HardFailure);
    EXPECT_FALSE(breaker_allow(st, s, ms(1499)));
    EXPECT_TRUE(breaker_allow(st, s, ms(1500))); // the probe
    EXPECT_EQ(st.mode, BreakerMode::HalfOpen);
    EXPECT_FALSE(breaker_allow(st, s, ms(1501))); // one at a time
    EXPECT_FALSE(breaker_allow(st, s, ms(5000)));
    // The probe fails: open again, the wait doubles.
    EXPECT_EQ(breaker_on_event(st, s, ms(1600), BreakerEvent::Failure), BreakerChange::None);
    EXPECT_EQ(st.mode, BreakerMode::Open);
    EXPECT_FALSE(breaker_allow(st, s, ms(2599)));
    EXPECT_TRUE(breaker_allow(st, s, ms(2600)));
    EXPECT_EQ(breaker_on_event(st, s, ms(2650), BreakerEvent::Success), BreakerChange::Closed);
    EXPECT_EQ(st.mode, BreakerMode::Closed);
    for (int i = 0; i < 10; ++i)
        EXPECT_TRUE(breaker_allow(st, s, ms(2700 + i)));
}

TEST(Breaker, WaitIsCappedAndAStuckProbeIsReplaced)
{
    BreakerSettings s;
    BreakerState st;
    long long now = 0;
    breaker_on_event(st, s, ms(now), BreakerEvent::HardFailure);
    for (int i = 0; i < 20; ++i) { // DFend stays down: probes keep failing
        now = st.open_until_ns / 1'000'000;
        ASSERT_TRUE(breaker_allow(st, s, ms(now)));
        breaker_on_event(st, s, ms(now + 10), BreakerEvent::Failure);
    }
    EXPECT_EQ(st.open_until_ns / 1'000'000 - (now + 10), 4000); // max_open_for
    EXPECT_EQ(st.opened, 1u);
    now = st.open_until_ns / 1'000'000;
    ASSERT_TRUE(breaker_allow(st, s, ms(now)));
    EXPECT_FALSE(breaker_allow(st, s, ms(now + 14999)));
    EXPECT_TRUE(breaker_allow(st, s, ms(now + 15000))); // probe_timeout passed
}

TEST(Breaker, WhatCountsAsSystemic)
{
    EXPECT_EQ(breaker_event_for(ErrorKind::ConnectFailed), BreakerEvent::HardFailure);
    EXPECT_EQ(breaker_event_for(ErrorKind::TlsVerification), BreakerEvent::HardFailure);
    EXPECT_EQ(breaker_event_for(ErrorKind::Unauthorized), BreakerEvent::HardFailure);
    EXPECT_EQ(breaker_event_for(ErrorKind::Upstream), BreakerEvent::Failure);
    EXPECT_EQ(breaker_event_for(ErrorKind::Timeout), BreakerEvent::Failure);
    EXPECT_EQ(breaker_event_for(ErrorKind::RateLimited), BreakerEvent::Neutral);
    EXPECT_EQ(breaker_event_for(ErrorKind::InvalidArgument), BreakerEvent::Success);
    EXPECT_STREQ(breaker_mode_name(BreakerMode::HalfOpen), "half-open");
}

TEST(Breaker, NeutralProbeFreesTheWayForTheNext)
{
    BreakerSettings s;
    BreakerState st;
    breaker_on_event(st, s, ms(0), BreakerEvent::HardFailure);
    ASSERT_TRUE(breaker_allow(st, s, ms(600))); // the probe
    EXPECT_FALSE(breaker_allow(st, s, ms(601)));
    EXPECT_EQ(breaker_on_event(st, s, ms(602), BreakerEvent::Neutral), BreakerChange::None);
    EXPECT_EQ(st.mode, BreakerMode::HalfOpen);
    EXPECT_TRUE(breaker_allow(st, s, ms(603))); // another probe, without probe_timeout
    EXPECT_EQ(breaker_on_event(st, s, ms(604), BreakerEvent::Success), BreakerChange::Closed);
}
