#include "outbox_policy.hpp"

namespace dfend {

Fault classify_failure(ErrorKind kind, bool permanent) noexcept
{
    if (permanent || kind == ErrorKind::InvalidArgument)
        return Fault::Row;
    return is_transient(kind) ? Fault::Transient : Fault::Systemic;
}

bool batch_means_down(int succeeded, int transient_failures, bool systemic) noexcept
{
    return succeeded == 0 && (systemic || transient_failures >= kTransientFailuresThatMeanDown);
}

BreakerEvent breaker_event_for_outcome(bool succeeded, ErrorKind kind, int requests) noexcept
{
    if (requests <= 0)
        return BreakerEvent::Neutral; // decided locally: nothing was sent
    return succeeded ? BreakerEvent::Success : breaker_event_for(kind);
}

bool held_by_breaker(BreakerMode mode_after_round, BreakerEvent event) noexcept
{
    return mode_after_round != BreakerMode::Closed &&
           (event == BreakerEvent::Failure || event == BreakerEvent::HardFailure);
}

} // namespace dfend
