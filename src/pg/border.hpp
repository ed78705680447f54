// The border between PostgreSQL-style code (may ereport, palloc; owns no
// object with a destructor) and C++-style code (may throw; RAII). It is the
// only way the two call each other:
//
//   cpp_call(fn)  PostgreSQL code runs C++ code. Every exception is caught and
//                 copied into a plain struct; the C++ scope closes; only then is
//                 the error raised with ereport and its mapped SQLSTATE.
//   pg_call(fn)   C++ code runs PostgreSQL code (palloc, jsonb_in, ...). An
//                 ereport(ERROR) is caught with PG_TRY and thrown on as a C++
//                 exception, so it unwinds C++ frames properly; cpp_call then
//                 re-raises it unchanged. A C++ exception from `fn` is caught
//                 inside PG_TRY and rethrown only after PG_END_TRY, so
//                 PG_exception_stack never points at a dead frame
//                 (test/border, test/scenarios/border.sh).
//
// So no exception ever reaches PostgreSQL, and no longjmp ever crosses a
// frame that owns a destructor.
#pragma once

#include "../core/error.hpp"

#include <exception>
#include <type_traits>

#include "postgres.hpp"

namespace dfend::pg {

// A PostgreSQL error travelling through C++ frames.
class PostgresError : public std::exception {
  public:
    explicit PostgresError(ErrorData *data) noexcept : data_(data) {}
    const char *what() const noexcept override { return data_->message; }
    ErrorData *data() const noexcept { return data_; }

  private:
    ErrorData *data_;
};

// Plain data, so it outlives the C++ scope that filled it without a destructor.
struct CapturedError {
    ErrorKind kind;
    ErrorData *postgres_error; // set when a PostgresError was caught
    long http_status;          // DFend's HTTP status, or 0
    long long retry_wait_ms;   // Error::retry_wait_ms(), or -1
    char message[512];
    char detail[1024];
    char hint[512];
};

// Only inside a catch block: classifies the exception being handled.
void capture_current_exception(CapturedError *out) noexcept;
// PostgreSQL-style: raises the captured error. Never returns.
[[noreturn]] void raise_captured(const CapturedError *error);
// The SQLSTATE documented for each kind of core error (src/pg/sqlstates.hpp).
// `http_status` tells DFend's verdict on the data (ID422) from dfend's own
// (22023).
int sqlstate_for(ErrorKind kind, long http_status) noexcept;

template <typename Fn>
auto cpp_call(Fn &&fn) -> decltype(fn())
{
    using Result = decltype(fn());
    static_assert(std::is_void_v<Result> || std::is_trivially_destructible_v<Result>,
                  "cpp_call may only hand back plain values or pointers");
    CapturedError error;
    try {
        if constexpr (std::is_void_v<Result>) {
            fn();
            return;
        } else {
            return fn();
        }
    } catch (...) {
        capture_current_exception(&error);
    }
    raise_captured(&error);
}

// Like cpp_call, for callers that decide what to do with a failure: returns
// false and leaves the error in `error` instead of raising it. The caller
// must raise it (raise_captured) when it is a cancellation.
template <typename Fn>
bool cpp_try(Fn &&fn, CapturedError *error)
{
    static_assert(std::is_void_v<decltype(fn())>, "cpp_try runs void callables");
    try {
        fn();
        return true;
    } catch (...) {
        capture_current_exception(error);
    }
    return false;
}

template <typename Fn>
auto pg_call(Fn &&fn) -> decltype(fn())
{
    using Result = decltype(fn());
    static_assert(std::is_void_v<Result> || std::is_scalar_v<Result>,
                  "pg_call may only hand back scalars or pointers");
    MemoryContext caller_context = CurrentMemoryContext;
    ErrorData *volatile caught = nullptr;
    std::conditional_t<std::is_void_v<Result>, int, Result> volatile result{};
    // A C++ exception must not leave the PG_TRY body: it would skip
    // PG_END_TRY, leaving PG_exception_stack (and error_context_stack) on
    // this dead frame, so the next ereport would longjmp into it. It waits
    // here until PG_END_TRY has run. Not volatile, yet safe: it is only set
    // when `fn` threw, and then no longjmp follows.
    std::exception_ptr thrown;
    PG_TRY();
    {
        try {
            if constexpr (std::is_void_v<Result>)
                fn();
            else
                result = fn();
        } catch (...) {
            thrown = std::current_exception();
        }
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_context);
        caught = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (thrown)
        std::rethrow_exception(thrown);
    if (caught)
        throw PostgresError(caught);
    if constexpr (!std::is_void_v<Result>)
        return result;
}

} // namespace dfend::pg
