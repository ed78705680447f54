#include "backend.hpp"

#include "backpressure.hpp"
#include "border.hpp"

#include <memory>

#include "postgres.hpp"

namespace dfend::pg {

namespace {

std::unique_ptr<BackendContext> state;

void release_state(int, Datum)
{
    state.reset(); // destructors only free memory and close sockets
}

} // namespace

BackendContext &backend_context()
{
    if (!state) {
        state = std::make_unique<BackendContext>();
        // Registering cannot fail in practice; its ereport path would be a bug.
        static bool registered = false;
        if (!registered) {
            registered = true;
            pg_call([] { on_proc_exit(release_state, 0); });
        }
    }
    return *state;
}

void BackendContext::drop_unfinished() noexcept
{
    if (engine_ && engine_->unfinished() > 0) {
        engine_->drop_unfinished();
        ++engine_generation_;
    }
}

RequestEngine &BackendContext::engine_for(const ClientSettings &client,
                                          const EngineSettings &engine, bool keep_carried)
{
    if (!keep_carried)
        drop_unfinished();
    // The server-wide rate of the account these settings reach (nullptr
    // when not preloaded: the engine keeps a rate of its own).
    RateLimiter *limiter = shared_rate_limiter(client.api_url, client.api_key);
    if (!engine_ || client != engine_client_ || engine != engine_settings_ ||
        limiter != engine_limiter_) {
        engine_.reset();
        ++engine_generation_;
        engine_ = std::make_unique<RequestEngine>(client, engine, limiter);
        engine_client_ = client;
        engine_settings_ = engine;
        engine_limiter_ = limiter;
    }
    return *engine_;
}

bool interrupt_pending() noexcept
{
    return QueryCancelPending || ProcDiePending;
}

long statement_deadline_ms()
{
    if (StatementTimeout <= 0)
        return -1;
    TimestampTz started = GetCurrentStatementStartTimestamp();
    long elapsed_ms = (long) ((GetCurrentTimestamp() - started) / 1000);
    long remaining = (long) StatementTimeout - elapsed_ms;
    return remaining > 0 ? remaining : 0;
}

CallControl call_control(long deadline_ms, RequestObserver *observer)
{
    CallControl control;
    control.should_abort = &interrupt_pending;
    control.observer = observer;
    if (deadline_ms >= 0)
        control.deadline = Clock::now() + Millis(deadline_ms);
    return control;
}

} // namespace dfend::pg
