// Backpressure state shared by every backend of the server (when dfend is
// preloaded): one adaptive request rate per DFend account (src/core/rate.hpp),
// so every database's worker, every backfill and every other engine of the
// server divide the account's limit instead of fighting over it; and each
// worker's circuit breaker mode, published for dfend_queue_status.
#pragma once

#include "../core/breaker.hpp"
#include "../core/rate.hpp"

#include <cstdint>
#include <string>

namespace dfend::pg {

// From _PG_init: the shared memory hooks, only when preloaded.
void install_backpressure(bool preloaded);

// Either style, never throws: the limiter of the account these settings
// reach (DFend's URL and the key; the key is only hashed, never stored), or
// nullptr when dfend is not preloaded (the engine then keeps its own). The
// pointer lives as long as the backend.
RateLimiter *shared_rate_limiter(const std::string &api_url, const std::string &api_key) noexcept;

// Either style: the worker of the current database publishes its breaker.
void publish_breaker(BreakerMode mode) noexcept;

} // namespace dfend::pg
