#include "backend.hpp"

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

BackendContext &backend_state()
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

CallControl call_control(long deadline_ms)
{
    CallControl control;
    control.should_abort = &interrupt_pending;
    if (deadline_ms >= 0)
        control.deadline = Clock::now() + Millis(deadline_ms);
    return control;
}

} // namespace dfend::pg
