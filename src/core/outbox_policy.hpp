// How a failed outbox entry ends a round, and a failed backfill row its
// batch: one policy for every caller (the worker, dfend_process_queue, a
// COMMIT's own entries, dfend_backfill_batch), so the SQL that records it
// holds no policy of its own. Pure, unit-tested
// (test/unit/outbox_policy_test.cpp).
#pragma once
#include "pure.hpp"

#include "breaker.hpp"
#include "error.hpp"

#include <cstdint>

namespace dfend {

// Whose fault a failure is.
enum class Fault : std::uint8_t {
    Row,       // the row's own data (DFend's 400/409/413/422, local validation)
    Transient, // this request may succeed a moment later (5xx, timeout, 429)
    Systemic,  // the same for every row: a rejected key, TLS, a bad reply
};

// `permanent` is the engine's verdict (JobOutcome::permanent).
Fault classify_failure(ErrorKind kind, bool permanent) noexcept;

// A backfill batch that stored nothing, with a systemic failure or this
// many transient ones, says DFend is down or misconfigured: the run stops
// instead of walking the rest of the table (a handful of stubborn rows in a
// later pass does not stop it).
constexpr int kTransientFailuresThatMeanDown = 10;
bool batch_means_down(int succeeded, int transient_failures, bool systemic) noexcept;

// What the breaker learns from one outcome. `requests` is how many HTTP
// requests the job sent: a job refused by local validation sent none and
// says nothing about DFend.
BreakerEvent breaker_event_for_outcome(bool succeeded, ErrorKind kind,
                                       int requests) noexcept;

// Whether a transient failure is held by the breaker: when the breaker is
// open after the round, every failure that fed it (BreakerEvent Failure or
// HardFailure) was DFend's, not the entry's, and costs no attempt.
bool held_by_breaker(BreakerMode mode_after_round, BreakerEvent event) noexcept;

// The numbers the settling statement (settle in src/pg/outbox.cpp) is
// given; the literals live here. A transient failure dead-letters its entry
// only when both hold: it has failed max_attempts times, and it was enqueued
// longer than dead_letter_after ago. The horizon keeps an outage from burning
// every entry's attempts; the count keeps an entry that waited long (a
// stopped worker) from dying at its first failure.
struct DeadLetterPolicy {
    int max_attempts = 10;                 // dfend.max_attempts
    std::int64_t dead_letter_after_s = 86400; // dfend.dead_letter_after
    double backoff_base_s = 1;             // first wait after a transient failure
    double backoff_cap_s = 300;            // the wait doubles up to this
    double systemic_retry_s = 30;          // a systemic failure the breaker did not hold
};

} // namespace dfend
