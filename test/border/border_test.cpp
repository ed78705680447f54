// A test-only module (never installed by `make install`): it drives
// src/pg/border.hpp from SQL so that test/scenarios/border.sh can show that a
// C++ exception thrown inside pg_call leaves PostgreSQL's error machinery
// intact. Built and installed only by that scenario.
#include "pg/border.hpp"

#include <stdexcept>
#include <string>

#include "pg/postgres.hpp"

using namespace dfend::pg;

namespace {

// PostgreSQL-style: fails the statement unless PG_TRY's globals are back
// where they were. Restores them first, so the report itself is safe.
void expect_stacks(sigjmp_buf *exception_stack, ErrorContextCallback *context_stack,
                   const char *after)
{
    if (PG_exception_stack == exception_stack && error_context_stack == context_stack)
        return;
    PG_exception_stack = exception_stack;
    error_context_stack = context_stack;
    ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                    errmsg("PG_exception_stack points at a dead frame after %s", after)));
}

// PostgreSQL-style: an ereport that PG_TRY in this frame catches.
bool later_error_caught(int round)
{
    bool caught = false;
    PG_TRY();
    {
        ereport(ERROR, (errcode(ERRCODE_DIVISION_BY_ZERO), errmsg("later error %d", round)));
    }
    PG_CATCH();
    {
        FlushErrorState();
        caught = true;
    }
    PG_END_TRY();
    return caught;
}

} // namespace

extern "C" {

PG_MODULE_MAGIC;

// border_test_throw(rounds int) returns text. Each round: pg_call with a
// callable that throws a C++ exception (caught by cpp_try), pg_call with one
// that ereports (a PostgresError), then an ereport caught by PG_TRY. Ends
// with an ereport that reaches the client: with PG_exception_stack on a dead
// frame, that longjmp would crash the backend.
PG_FUNCTION_INFO_V1(border_test_throw);
Datum border_test_throw(PG_FUNCTION_ARGS)
{
    int rounds = PG_GETARG_INT32(0);
    sigjmp_buf *exception_stack = PG_exception_stack;
    ErrorContextCallback *context_stack = error_context_stack;
    CapturedError thrown;
    CapturedError reported;
    int later = 0;
    for (int round = 1; round <= rounds; ++round) {
        bool ok = cpp_try([] { pg_call([]() -> int { throw std::runtime_error("thrown inside pg_call"); }); },
                          &thrown);
        expect_stacks(exception_stack, context_stack, "a C++ exception");
        if (ok || thrown.postgres_error || strcmp(thrown.detail, "thrown inside pg_call") != 0)
            ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                            errmsg("the C++ exception did not come out of pg_call")));
        ok = cpp_try([] { pg_call([] { elog(ERROR, "raised inside pg_call"); }); }, &reported);
        expect_stacks(exception_stack, context_stack, "an ereport");
        if (ok || !reported.postgres_error)
            ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR),
                            errmsg("the ereport did not come out of pg_call")));
        later += later_error_caught(round);
        expect_stacks(exception_stack, context_stack, "a later error");
    }
    ereport(ERROR, (errcode(ERRCODE_RAISE_EXCEPTION),
                    errmsg("border test done: %d rounds, %d later errors caught", rounds, later),
                    errdetail("The C++ exception said \"%s\"; the ereport said \"%s\".",
                              thrown.detail,
                              reported.postgres_error ? reported.postgres_error->message : "")));
    PG_RETURN_NULL();
}

} // extern "C"
