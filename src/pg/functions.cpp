// SQL-callable functions. Each is PostgreSQL-style: it reads arguments, then
// hands the C++ work to cpp_call, then builds the result. See border.hpp.
#include "../core/identity_client.hpp"
#include "backend.hpp"
#include "border.hpp"
#include "settings.hpp"
#include "stats.hpp"
#include "values.hpp"

#include "postgres.hpp"

namespace dfend::pg {

namespace {

// Text argument converted to UTF-8 (what JSON and DFend speak); nullptr for NULL.
char *utf8_argument(FunctionCallInfo fcinfo, int n)
{
    return PG_ARGISNULL(n) ? nullptr : utf8_string(text_to_cstring(PG_GETARG_TEXT_PP(n)));
}

struct RegisterOutcome {
    char *id;
    bool created;
    bool merged;
};

} // namespace

} // namespace dfend::pg

using namespace dfend;
using namespace dfend::pg;

extern "C" {

PG_FUNCTION_INFO_V1(dfend_register_identity);
Datum dfend_register_identity(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("user_id must not be null")));
    TupleDesc result_type = composite_result_type(fcinfo);

    char *user_id = utf8_argument(fcinfo, 0);
    char *email = utf8_argument(fcinfo, 1);
    char *phone = utf8_argument(fcinfo, 2);
    bool merge = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
    char *metadata = nullptr;
    if (!PG_ARGISNULL(4)) {
        Jsonb *value = PG_GETARG_JSONB_P(4);
        metadata = utf8_string(JsonbToCString(nullptr, &value->root, VARSIZE(value)));
    }
    long deadline_ms = statement_deadline_ms();

    pgstat_report_wait_start(PG_WAIT_EXTENSION);
    RegisterOutcome *outcome = cpp_call([&] {
        RegisterRequest request = make_register_request(user_id, email, phone, metadata, merge);
        BackendContext &state = backend_context();
        ClientSettings settings = current_client_settings(state.key_files);
        RegisterResult result =
            state.client.register_identity(request, settings, call_control(deadline_ms, request_observer(StatsSource::Sql)));
        char *id = server_string(result.id); // printable ASCII: exact in any encoding
        auto *out = pg_call([] { return (RegisterOutcome *) palloc(sizeof(RegisterOutcome)); });
        *out = RegisterOutcome{id, result.created, result.merged};
        return out;
    });
    pgstat_report_wait_end();

    Datum values[3] = {CStringGetTextDatum(outcome->id), BoolGetDatum(outcome->created),
                       BoolGetDatum(outcome->merged)};
    bool nulls[3] = {false, false, false};
    PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(result_type, values, nulls)));
}

PG_FUNCTION_INFO_V1(dfend_get_identity);
Datum dfend_get_identity(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0) == PG_ARGISNULL(1))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("exactly one of user_id and id must be given"),
                        errhint("Call dfend_get_identity(user_id => ...) or "
                                "dfend_get_identity(id => ...).")));
    LookupKey key = PG_ARGISNULL(0) ? LookupKey::Id : LookupKey::UserId;
    char *value = utf8_argument(fcinfo, PG_ARGISNULL(0) ? 1 : 0);
    long deadline_ms = statement_deadline_ms();

    pgstat_report_wait_start(PG_WAIT_EXTENSION);
    Jsonb *identity = cpp_call([&]() -> Jsonb * {
        BackendContext &state = backend_context();
        ClientSettings settings = current_client_settings(state.key_files);
        std::optional<std::string> body =
            state.client.get_identity(key, value, settings, call_control(deadline_ms, request_observer(StatsSource::Sql)));
        if (!body)
            return nullptr;
        // Re-serialized by the core with the key redacted in decoded form;
        // a character the server encoding lacks becomes '?', not an error.
        char *text = server_text(*body);
        return pg_call([text] {
            return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
        });
    });
    pgstat_report_wait_end();

    if (!identity)
        PG_RETURN_NULL();
    PG_RETURN_JSONB_P(identity);
}

} // extern "C"
