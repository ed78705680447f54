// Lookups that scale: dfend_get_identities (many GET /identity at once
// through the concurrent engine, one row per array element, in order) and
// the overloads that take user ids of type bigint, integer and uuid.
// PostgreSQL-style except inside cpp_call (see border.hpp).
//
// Failure policy, the same as a backfill's (stops_the_run in backfill.cpp):
// a failure that belongs to one lookup (its value fails local validation,
// DFend refuses it, or it stays rate limited, unavailable or unreachable
// after the retries) is reported on that element's row, in `error` and
// `sqlstate`, and the other rows keep their answers: one flaky request must
// not throw away the 199 identities a view over 200 users has already
// fetched, and a NULL identity alone could not tell "not found" from
// "failed". A failure that no lookup could escape (the key rejected, TLS
// verification, a reply that is not what DFend documents, the settings, a
// cancel or statement_timeout) raises for the whole call, with the SQLSTATE
// dfend_get_identity raises: a view must not quietly show every user as
// failed because the key is wrong.
#include "../core/engine.hpp"
#include "backend.hpp"
#include "border.hpp"
#include "settings.hpp"
#include "stats.hpp"
#include "values.hpp"

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "postgres.hpp"

namespace dfend::pg {

namespace {

// One call looks up at most this many elements (NULLs and duplicates
// included): a mistake such as array_agg over a whole table must not spend a
// million requests of the account's quota in one statement.
constexpr int kMaxLookups = 10000;
// Lookups in flight at once; the engine's default, polite to DFend's limits.
constexpr int kLookupConcurrency = 16;

// Plain data, filled inside cpp_call: the answer for one distinct value.
struct Answer {
    bool failed;
    bool found;
    Jsonb *identity;   // palloc'd; nullptr unless found
    char *error;       // server encoding, palloc'd; set when failed
    int sqlstate;      // set when failed
};

// Where each column of a result row goes; -1 when the variant has none.
struct Columns {
    int key, ordinality, found, id, identity, error, sqlstate;
};
constexpr Columns kByUserId{0, 1, 2, 3, 4, 5, 6};
constexpr Columns kById{0, 1, 2, -1, 3, 4, 5};

// Kinds that say nothing about one lookup but about the whole setup: the
// call raises instead of reporting every row as failed (see the top).
bool stops_the_call(ErrorKind kind)
{
    return kind != ErrorKind::InvalidArgument && !is_transient(kind);
}


// PostgreSQL-style: a value of any type as the text DFend gets, by the type's
// output function: the same text the trigger and backfills send for a
// column of that type (42, 9f1c...-..., never a locale's spelling).
char *value_text(Oid type, Datum value)
{
    Oid output;
    bool varlena;
    getTypeOutputInfo(type, &output, &varlena);
    return OidOutputFunctionCall(output, value);
}

// C++-style: gives each distinct value one lookup (`distinct_of[i]` is its
// index in `answers`, -1 for NULL), runs them all, and fills `answers`.
void look_up(LookupKey key, char **values, int count, int *distinct_of, Answer *answers)
{
    std::unordered_map<std::string_view, int> seen;
    BackendContext &backend = backend_context();
    ClientSettings client = current_client_settings(backend.key_files);
    EngineSettings settings;
    settings.concurrency = kLookupConcurrency;
    RequestEngine &engine = backend.engine_for(client, settings);
    int distinct = 0;
    for (int i = 0; i < count; ++i) {
        distinct_of[i] = -1;
        if (!values[i])
            continue;
        auto [at, added] = seen.try_emplace(values[i], distinct);
        distinct_of[i] = at->second;
        if (!added)
            continue;
        Job job;
        job.tag = static_cast<std::uint64_t>(distinct++);
        job.lookup = Lookup{key, values[i]};
        engine.submit(std::move(job));
    }
    if (distinct == 0)
        return;
    RunOptions options;
    options.observer = request_observer(StatsSource::Sql);
    options.paced = false; // a query waits for these (see RunOptions::paced)
    std::vector<JobOutcome> outcomes = engine.run(&interrupt_pending, options);
    for (const JobOutcome &outcome : outcomes)
        if (outcome.error && stops_the_call(outcome.error->kind()))
            throw *outcome.error;
    for (JobOutcome &outcome : outcomes) {
        if (outcome.tag >= static_cast<std::uint64_t>(distinct))
            throw Error(ErrorKind::Internal, "request engine returned an unknown job");
        Answer &answer = answers[outcome.tag];
        if (outcome.error) {
            answer.failed = true;
            // Already through safe_reply_text (Error::redact) in the engine.
            answer.error = server_text(outcome.error->text());
            answer.sqlstate = sqlstate_for(outcome.error->kind(), outcome.error->http_status());
            continue;
        }
        if (outcome.not_found)
            continue;
        // The same path as dfend_get_identity's reply: re-serialized by the
        // core with the key redacted in decoded form, then converted without
        // failing ('?' for a character the server encoding lacks).
        char *text = server_text(*outcome.identity);
        outcome.identity.reset();
        answer.found = true;
        answer.identity = pg_call([text] {
            return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
        });
    }
}

// PostgreSQL-style: the identity's "id" when it is a string, else nullptr.
char *identity_id(Jsonb *identity)
{
    JsonbValue *id = getKeyJsonValueFromContainer(&identity->root, "id", 2, nullptr);
    if (!id || id->type != jbvString)
        return nullptr;
    return pnstrdup(id->val.string.val, id->val.string.len);
}

void put_row(ReturnSetInfo *result, const Columns &columns, Datum key, bool key_null,
             int position, const Answer *answer)
{
    Datum values[7] = {};
    bool nulls[7];
    for (bool &null : nulls)
        null = true;
    values[columns.key] = key;
    nulls[columns.key] = key_null;
    values[columns.ordinality] = Int64GetDatum(position);
    nulls[columns.ordinality] = false;
    if (answer && answer->failed) {
        values[columns.error] = CStringGetTextDatum(answer->error);
        nulls[columns.error] = false;
        values[columns.sqlstate] = CStringGetTextDatum(unpack_sql_state(answer->sqlstate));
        nulls[columns.sqlstate] = false;
    } else if (answer) {
        values[columns.found] = BoolGetDatum(answer->found);
        nulls[columns.found] = false;
        if (answer->found) {
            values[columns.identity] = JsonbPGetDatum(answer->identity);
            nulls[columns.identity] = false;
            char *id = columns.id >= 0 ? identity_id(answer->identity) : nullptr;
            if (id) {
                values[columns.id] = CStringGetTextDatum(id);
                nulls[columns.id] = false;
            }
        }
    }
    tuplestore_putvalues(result->setResult, result->setDesc, values, nulls);
}

// PostgreSQL-style: the body of both set-returning variants.
void get_identities(FunctionCallInfo fcinfo, LookupKey key, const Columns &columns)
{
    const char *noun = key == LookupKey::UserId ? "user ids" : "DFend ids";
    InitMaterializedSRF(fcinfo, 0);
    auto *result = (ReturnSetInfo *) fcinfo->resultinfo;
    ArrayType *array = PG_GETARG_ARRAYTYPE_P(0); // STRICT: never NULL
    if (ARR_NDIM(array) > 1)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("the array of %s must have one dimension", noun)));
    int count = ArrayGetNItems(ARR_NDIM(array), ARR_DIMS(array));
    if (count > kMaxLookups)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("cannot look up more than %d identities in one call",
                               kMaxLookups),
                        errdetail("The array has %d elements.", count),
                        errhint("Split the array into several calls; NULL and duplicate "
                                "elements count too.")));
    if (count == 0)
        return;

    Oid type = ARR_ELEMTYPE(array);
    int16 length;
    bool by_value;
    char align;
    get_typlenbyvalalign(type, &length, &by_value, &align);
    Datum *elements;
    bool *element_nulls;
    deconstruct_array(array, type, length, by_value, align, &elements, &element_nulls, &count);
    // The key column has the input's element type, so the result joins back
    // to the users table without a cast.
    if (TupleDescAttr(result->setDesc, columns.key)->atttypid != type)
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("array element type %s does not match the function's result",
                               format_type_be(type))));

    auto **values = (char **) palloc(sizeof(char *) * count);
    for (int i = 0; i < count; ++i)
        values[i] = element_nulls[i] ? nullptr : utf8_string(value_text(type, elements[i]));
    auto *distinct_of = (int *) palloc(sizeof(int) * count);
    auto *answers = (Answer *) palloc0(sizeof(Answer) * count);

    pgstat_report_wait_start(PG_WAIT_EXTENSION);
    cpp_call([&] { look_up(key, values, count, distinct_of, answers); });
    pgstat_report_wait_end();

    for (int i = 0; i < count; ++i)
        put_row(result, columns, elements[i], element_nulls[i], i + 1,
                distinct_of[i] >= 0 ? &answers[distinct_of[i]] : nullptr);
}

} // namespace

} // namespace dfend::pg

using namespace dfend;
using namespace dfend::pg;

extern "C" {

// Defined in functions.cpp.
PGDLLEXPORT Datum dfend_get_identity(PG_FUNCTION_ARGS);

// dfend_get_identity(user_id bigint | integer | uuid): the value as text,
// handed to the text function, so every overload behaves exactly alike.
PG_FUNCTION_INFO_V1(dfend_get_identity_typed);
Datum dfend_get_identity_typed(PG_FUNCTION_ARGS)
{
    if (PG_ARGISNULL(0))
        ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                        errmsg("user_id must not be null")));
    char *text = value_text(get_fn_expr_argtype(fcinfo->flinfo, 0), PG_GETARG_DATUM(0));

    LOCAL_FCINFO(call, 2);
    InitFunctionCallInfoData(*call, fcinfo->flinfo, 2, InvalidOid, nullptr, nullptr);
    call->args[0].value = CStringGetTextDatum(text);
    call->args[0].isnull = false;
    call->args[1].value = (Datum) 0;
    call->args[1].isnull = true;
    Datum identity = dfend_get_identity(call);
    if (call->isnull)
        PG_RETURN_NULL();
    return identity;
}

PG_FUNCTION_INFO_V1(dfend_get_identities);
Datum dfend_get_identities(PG_FUNCTION_ARGS)
{
    get_identities(fcinfo, LookupKey::UserId, kByUserId);
    return (Datum) 0;
}

PG_FUNCTION_INFO_V1(dfend_get_identities_by_id);
Datum dfend_get_identities_by_id(PG_FUNCTION_ARGS)
{
    get_identities(fcinfo, LookupKey::Id, kById);
    return (Datum) 0;
}

} // extern "C"
