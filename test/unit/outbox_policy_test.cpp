// The outbox's failure policy: classification, what the breaker hears, and
// when a transient failure dead-letters its entry.
#include "core/outbox_policy.hpp"

#include <gtest/gtest.h>

using namespace dfend;

TEST(OutboxPolicy, ClassifiesRowTransientSystemic)
{
    EXPECT_EQ(classify_failure(ErrorKind::InvalidArgument, false), Fault::Row);
    EXPECT_EQ(classify_failure(ErrorKind::Upstream, true), Fault::Row);
    for (ErrorKind k : {ErrorKind::Upstream, ErrorKind::ConnectFailed, ErrorKind::Timeout,
                        ErrorKind::ConnectionLost, ErrorKind::RateLimited})
        EXPECT_EQ(classify_failure(k, false), Fault::Transient);
    for (ErrorKind k : {ErrorKind::Unauthorized, ErrorKind::TlsVerification,
                        ErrorKind::BadResponse, ErrorKind::Configuration})
        EXPECT_EQ(classify_failure(k, false), Fault::Systemic);
}

TEST(OutboxPolicy, LocalValidationSaysNothingToTheBreaker)
{
    EXPECT_EQ(breaker_event_for_outcome(false, ErrorKind::InvalidArgument, 0),
              BreakerEvent::Neutral);
    EXPECT_EQ(breaker_event_for_outcome(false, ErrorKind::InvalidArgument, 1),
              BreakerEvent::Success); // DFend answered about the row
    EXPECT_EQ(breaker_event_for_outcome(true, ErrorKind::Internal, 1), BreakerEvent::Success);
    EXPECT_EQ(breaker_event_for_outcome(false, ErrorKind::ConnectFailed, 3),
              BreakerEvent::HardFailure);
    EXPECT_EQ(breaker_event_for_outcome(false, ErrorKind::Upstream, 4), BreakerEvent::Failure);
}

TEST(OutboxPolicy, OnlyAnOpenBreakerHoldsFailures)
{
    EXPECT_FALSE(held_by_breaker(BreakerMode::Closed, BreakerEvent::Failure));
    EXPECT_TRUE(held_by_breaker(BreakerMode::Open, BreakerEvent::Failure));
    EXPECT_TRUE(held_by_breaker(BreakerMode::HalfOpen, BreakerEvent::HardFailure));
    EXPECT_FALSE(held_by_breaker(BreakerMode::Open, BreakerEvent::Neutral));
    EXPECT_FALSE(held_by_breaker(BreakerMode::Open, BreakerEvent::Success));
}

TEST(OutboxPolicy, ABackfillBatchMeansDownOnlyWhenNothingGotThrough)
{
    EXPECT_TRUE(batch_means_down(0, 0, true));
    EXPECT_TRUE(batch_means_down(0, kTransientFailuresThatMeanDown, false));
    EXPECT_FALSE(batch_means_down(0, kTransientFailuresThatMeanDown - 1, false));
    EXPECT_FALSE(batch_means_down(1, 100, true)); // some rows got ids: not down
}
