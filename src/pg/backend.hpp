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
    // open; made anew when the settings change.
    RequestEngine &engine_for(const ClientSettings &client, const EngineSettings &engine);

  private:
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
