// The outbox's circuit breaker (src/core/breaker.hpp) as the worker and
// dfend_process_queue use it: while DFend is unreachable as a whole, no
// batch is claimed and one entry at a time probes whether it is back.
//
// The state is per backend, kept across batches: the worker is the one
// backend per database that drains continuously, so per backend is per
// database for it, and no shared memory layout (which other features extend)
// has to change. A session calling dfend_process_queue has its own, and its
// call may always probe at once. A COMMIT registering its own rows neither
// consults nor feeds it: it has its own time budget.
#pragma once

#include "../core/breaker.hpp"

#include <cstdint>

namespace dfend::pg {

struct PauseGate {
    bool allowed;   // a batch may be claimed now
    bool probe;     // ... of ONE entry: the breaker is half-open
    long wait_ms;   // when not allowed: until the next probe may go
};

// Either style. `probe_now`: an explicit call (dfend_process_queue) probes
// without waiting for the breaker's timer.
PauseGate pause_gate(bool probe_now) noexcept;

// Either style: what one request's outcome says; `error` (may be null) is
// its message, already free of the key, kept for the LOG line.
void pause_hear(BreakerEvent event, const char *error) noexcept;

// Either style, after a round: a probe whose batch sent nothing frees the
// way for the next one.
void pause_round_done() noexcept;

BreakerMode pause_mode() noexcept;
std::uint64_t pause_opened() noexcept;

// PostgreSQL-style, in the worker only (elsewhere nothing): a LOG line when
// the breaker opened since the last line (at most one a minute, and there is
// one worker per database), and one when it closed after a logged opening.
void log_pause_changes();

} // namespace dfend::pg
