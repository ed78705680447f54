// C++ state that lives as long as the backend: one reused HTTP client (so
// consecutive calls share a connection) and the key file cache.
#pragma once

#include "../core/engine.hpp"
#include "../core/identity_client.hpp"
#include "../core/key_file.hpp"

#include <memory>

namespace dfend::pg {

struct BackendContext {
    IdentityClient client;
    KeyFileCache key_files;

    // The concurrent engine, kept between batches so its connections stay
    // open; made anew when the settings change. A backfill may leave jobs
    // in it between batches (RunOptions::carry_at_most) and pass
    // `keep_carried` to get them back; any other caller gets an engine
    // without them, so it never sees another caller's outcomes.
    RequestEngine &engine_for(const ClientSettings &client, const EngineSettings &engine,
                              bool keep_carried = false);
    // Drops the jobs left in the engine, if any.
    void drop_unfinished() noexcept;
    // Changes whenever jobs left in the engine are dropped or the engine is
    // made anew: what a backfill carried is gone then.
    std::uint64_t engine_generation() const noexcept { return engine_generation_; }

  private:
    std::uint64_t engine_generation_ = 0;
    std::unique_ptr<RequestEngine> engine_;
    ClientSettings engine_client_;
    EngineSettings engine_settings_;
    RateLimiter *engine_limiter_ = nullptr;
};

// C++-style: creates the state on first use (may throw).
BackendContext &backend_context();

// Polls PostgreSQL's interrupt flags; safe inside libcurl callbacks.
bool interrupt_pending() noexcept;

// PostgreSQL-style: the deadline that statement_timeout sets for the
// current statement, as milliseconds from now; -1 when there is none.
long statement_deadline_ms();

// C++-style: the call control for a blocking call in this backend.
CallControl call_control(long deadline_ms, RequestObserver *observer = nullptr);

} // namespace dfend::pg
