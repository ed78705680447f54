// Backfills: dfend_backfill_batch, one batch of CALL dfend_backfill, and
// dfend_enqueue_backfill. The loop, the COMMIT after each batch, the progress
// rows and the NOTICEs live in the PL/pgSQL procedure dfend_backfill
// (sql/dfend--0.1.0.sql); each call here handles one batch inside the
// procedure's current transaction:
//
//   1. select the next rows by key (keyset pagination: key > last key, never
//      OFFSET), skipping rows that already have an id or a dead letter;
//   2. register them with many requests in flight (RequestEngine), or only
//      validate them for a dry run. A batch that is not the last of its pass
//      returns once its last row was sent: the few rows still unanswered
//      (in flight, or waiting for a retry) stay in the engine, and the next
//      batch stores them with its own (see Carry), so the request window
//      stays full across the COMMIT between batches;
//   3. store the ids with one UPDATE of just those rows (AND id IS NULL, so a
//      concurrent writer is never overwritten), record the fields left out
//      of stored registrations (invalid_fields 'drop') in
//      dfend_dropped_field, and record rows DFend refused for good as dead
//      letters.
//
// Steps 2 and 3 are the batch pipeline the outbox worker uses too
// (batch.hpp): the same jobs, failure policy, conversions and store.
//
// Everything a batch allocates lives in SPI's per-call memory or in C++
// containers scoped to one cpp_call, so memory stays flat however large the
// table. PostgreSQL-style except inside cpp_call (see border.hpp).
#include "../core/codec.hpp"
#include "../core/engine.hpp"
#include "../core/outbox_policy.hpp"
#include "backend.hpp"
#include "batch.hpp"
#include "border.hpp"
#include "dropped.hpp"
#include "outbox.hpp"
#include "owner.hpp"
#include "worker_slots.hpp"
#include "settings.hpp"
#include "stats.hpp"
#include "values.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "postgres.hpp"

extern "C" {
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/datum.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
}

namespace dfend::pg {

namespace {

// One selected row, as plain palloc'd data.
struct BatchRow {
    Datum key;          // the user id column in its own type
    char *user_id;      // key::text in the server encoding (as the outbox stores it)
    BatchJob job;       // what DFend is sent (see prepare_job), when it needs a request
    bool duplicate;     // same user id as the row before: its request covers both
    bool skipped;       // a user id longer than kMaxFieldBytes: left alone
    char *too_large;    // why a field is too large to read: a dead letter, no request
    bool dead_letter;   // already a dead letter: left alone until dfend_retry_dead
    bool carried_in;    // an earlier batch's row whose request is still in the engine
};

// A row's outcome (batch.hpp). Fates here: None (no request), InEngine
// (sent, not answered yet: carried to the next batch), Stored (for a dry
// run: would be sent), RowFault (a dead letter), and any other failure,
// which a later pass retries.
using RowResult = BatchOutcome;

// Columns of one backfill, quoted for SQL.
struct Target {
    Oid table;
    char *table_sql;
    char *key_sql;
    char *key_equals;  // the key type's btree operators, qualified
    char *key_greater;
    char *key_greater_or_equal;
    char *id_sql;
    char *email_sql; // the column, or NULL
    char *phone_sql;
    char *metadata_sql;
    Oid owner;
    Oid key_type;
    int32 key_typmod;
    char *schema_sql; // the extension's schema, where dfend_outbox lives
};

const char *name_argument(FunctionCallInfo fcinfo, int n)
{
    return PG_ARGISNULL(n) ? nullptr : NameStr(*PG_GETARG_NAME(n));
}

// Checks a column exists; returns its number.
AttrNumber column_number(Oid table, const char *column)
{
    AttrNumber number = get_attnum(table, column);
    if (number == InvalidAttrNumber)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                        errmsg("column \"%s\" of relation \"%s\" does not exist", column,
                               get_rel_name(table))));
    return number;
}

// The schema of the calling function: the extension's schema.
char *own_schema(FunctionCallInfo fcinfo)
{
    Oid schema = get_func_namespace(fcinfo->flinfo->fn_oid);
    char *name = get_namespace_name(schema);
    if (!name)
        elog(ERROR, "could not find the schema of the dfend extension");
    return pstrdup(quote_identifier(name));
}

// The table is read and written as its owner, so the caller's own rights
// decide whether it may be backfilled at all: SELECT on every mapped column,
// and UPDATE on the id column when ids are to be stored.
void check_caller_rights(Oid table, const char *const *columns, int count, const char *id_column,
                         bool stores_ids)
{
    Oid caller = GetUserId();
    // Mode by mode: with several modes the aclcheck functions accept any one.
    if (pg_class_aclcheck(table, caller, ACL_SELECT) == ACLCHECK_OK &&
        (!stores_ids || pg_class_aclcheck(table, caller, ACL_UPDATE) == ACLCHECK_OK))
        return;
    for (int i = 0; i < count; ++i) {
        if (!columns[i])
            continue;
        bool stored_in = stores_ids && strcmp(columns[i], id_column) == 0;
        AttrNumber number = get_attnum(table, columns[i]);
        // A table-wide grant, or one on the column (pg_attribute_aclcheck
        // looks at the column's own ACL only).
        auto granted = [&](AclMode mode) {
            return pg_class_aclcheck(table, caller, mode) == ACLCHECK_OK ||
                   pg_attribute_aclcheck(table, number, caller, mode) == ACLCHECK_OK;
        };
        if (!granted(ACL_SELECT) || (stored_in && !granted(ACL_UPDATE)))
            ereport(ERROR,
                    (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                     errmsg("permission denied for table %s", get_rel_name(table)),
                     errdetail(stored_in
                                   ? "Storing DFend ids needs SELECT and UPDATE on column %s."
                                   : "Reading users needs SELECT on column %s.",
                               quote_identifier(columns[i]))));
    }
}

Target resolve_target(FunctionCallInfo fcinfo, Oid table, const char *user_id_column,
                      const char *id_column, const char *email_column, const char *phone_column,
                      const char *metadata_column, bool stores_ids)
{
    Target target;
    target.table = table;
    // Locked before its catalog entries are read, until the transaction
    // ends: the owner cannot change a column's type between the checks
    // below and the statements that rely on them (the keys of a batch are
    // handed back to PostgreSQL as values of the type read here).
    LockRelationOid(table, AccessShareLock);
    char *relname = get_rel_name(table);
    if (!relname)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation with OID %u does not exist", table)));
    target.table_sql =
        quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)), relname);
    // Checked again for every batch: the owner may change the table meanwhile.
    int sqlstate = 0;
    if (char *problem = check_mapping(table, user_id_column, id_column, email_column,
                                      phone_column, metadata_column, &sqlstate))
        ereport(ERROR, (errcode(sqlstate), errmsg_internal("%s", problem)));
    target.owner = relation_owner(table);
    const char *columns[] = {user_id_column, id_column, email_column, phone_column,
                             metadata_column};
    check_caller_rights(table, columns, 5, id_column, stores_ids);
    AttrNumber key = column_number(table, user_id_column);
    Oid collation;
    get_atttypetypmodcoll(table, key, &target.key_type, &target.key_typmod, &collation);
    column_number(table, id_column);
    target.key_sql = pstrdup(quote_identifier(user_id_column));
    // Keyset pagination needs the ordering ORDER BY uses: the type's default
    // btree operators, named with their schema so no search_path changes them.
    target.key_equals = btree_operator(target.key_type, BTEqualStrategyNumber);
    target.key_greater = btree_operator(target.key_type, BTGreaterStrategyNumber);
    target.key_greater_or_equal = btree_operator(target.key_type, BTGreaterEqualStrategyNumber);
    if (!target.key_equals || !target.key_greater || !target.key_greater_or_equal)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
                        errmsg("column \"%s\" has a type without a btree ordering",
                               user_id_column),
                        errdetail("Backfills walk the table in the order of the user id.")));
    target.id_sql = pstrdup(quote_identifier(id_column));
    target.email_sql = column_or_null(email_column);
    target.phone_sql = column_or_null(phone_column);
    target.metadata_sql = column_or_null(metadata_column);
    target.schema_sql = own_schema(fcinfo);
    return target;
}


bool needs_request(const BatchRow &row)
{
    return !row.duplicate && !row.skipped && !row.too_large && !row.dead_letter &&
           !row.carried_in;
}

// Rows a batch left in the engine for the next batch of the same run: the
// pipeline between batches. Kept in backend memory (a backfill's batches run
// in one backend, one transaction each). Only the next call of the same run
// (same table and columns, after_key the key this batch returned) takes them
// over; any other call, or any other use of the engine, drops them, and
// their rows simply keep no id (the next run sends them again; DFend answers
// an existing identity for a user it knows).
struct CarriedRow {
    std::uint64_t tag; // the engine job's
    Datum key;         // copied into Carry::context
    char *user_id;     // likewise
    std::uint64_t order; // place in the pass (batches go in key order)
};

struct Carry {
    MemoryContext context = nullptr; // the rows and their data
    CarriedRow *rows = nullptr;      // by tag, ascending
    int count = 0;
    // The run they belong to.
    Oid table = InvalidOid;
    Oid key_type = InvalidOid;
    NameData key_column, id_column;
    char *next_after_key = nullptr;  // in context
    std::uint64_t generation = 0;    // BackendContext::engine_generation after the batch
    bool in_use = false;             // a batch is using them (an error there voids them)
    // Engine tags, never reused in a backend.
    std::uint64_t next_tag = 1;
    // The pass: the place of the next batch's first row, and the earliest
    // row that failed for a transient reason (where the next pass starts).
    std::uint64_t next_order = 0;
    std::uint64_t first_transient_order = UINT64_MAX;
    char *first_transient_key = nullptr; // in TopMemoryContext
};

Carry carry;

// PostgreSQL-style: forgets the carried rows (not the pass).
void clear_carry()
{
    if (carry.context)
        MemoryContextDelete(carry.context);
    carry.context = nullptr;
    carry.rows = nullptr;
    carry.count = 0;
    carry.table = InvalidOid;
    carry.next_after_key = nullptr;
    carry.in_use = false;
}

// PostgreSQL-style: a new pass begins (a new run, or a later pass of one).
void start_pass()
{
    clear_carry();
    carry.next_order = 0;
    carry.first_transient_order = UINT64_MAX;
    if (carry.first_transient_key)
        pfree(carry.first_transient_key);
    carry.first_transient_key = nullptr;
}

// PostgreSQL-style: remembers the row at `order` that failed for a transient
// reason, if it is the pass's earliest so far.
void note_transient(std::uint64_t order, Oid key_type, Datum key)
{
    if (order >= carry.first_transient_order)
        return;
    Oid output;
    bool varlena;
    getTypeOutputInfo(key_type, &output, &varlena);
    char *text = OidOutputFunctionCall(output, key);
    if (carry.first_transient_key)
        pfree(carry.first_transient_key);
    carry.first_transient_key = MemoryContextStrdup(TopMemoryContext, text);
    carry.first_transient_order = order;
}

struct BatchSettings {
    bool merge;
    bool drop_invalid; // invalid_fields 'drop'
    bool dry_run;
    int concurrency;
    double max_rate;
    // Rows whose retry waits longer than kLongestWaitInBatch (a Retry-After)
    // are left to the next pass instead of holding up the batch (no batch
    // barrier). The procedure asks for it in every pass but the last.
    bool defer_retries;
    // Leave at most this many unanswered rows in the engine for the next
    // batch (0: wait for every answer).
    int carry_at_most;
};

// The rows of one batch: its own `count` rows, then the `carried` rows an
// earlier batch left in the engine. Engine tags: tag_base + i for its own
// rows, carry.rows[j].tag for carried row count + j.
struct BatchRows {
    BatchRow *rows;
    int count;
    int carried;
    std::uint64_t tag_base;
    bool carried_valid; // the engine still holds the carried rows' jobs
};

// C++-style: for a dry run's report, the fields a row's request would leave
// out, in the server encoding.
void keep_dropped(const std::vector<DroppedField> &fields, const BatchRow &row, RowResult &result)
{
    result.dropped_count = static_cast<int>(fields.size());
    if (fields.empty())
        return;
    result.dropped = pg_call(
        [&] { return (DroppedRow *) palloc0(sizeof(DroppedRow) * fields.size()); });
    for (std::size_t d = 0; d < fields.size(); ++d)
        result.dropped[d] = DroppedRow{row.user_id, server_text(fields[d].field),
                                       server_text(fields[d].reason)};
}

// C++-style: the row of `batch` an engine job belongs to.
int row_of(const BatchRows &batch, std::uint64_t tag)
{
    if (tag >= batch.tag_base && tag - batch.tag_base < static_cast<std::uint64_t>(batch.count))
        return static_cast<int>(tag - batch.tag_base);
    const CarriedRow *begin = carry.rows;
    const CarriedRow *end = begin + batch.carried;
    const CarriedRow *found = std::lower_bound(
        begin, end, tag, [](const CarriedRow &row, std::uint64_t t) { return row.tag < t; });
    if (found == end || found->tag != tag)
        throw Error(ErrorKind::Internal, "request engine returned an unknown job");
    return batch.count + static_cast<int>(found - begin);
}

// C++-style (runs inside cpp_call): registers or validates the rows and
// fills `results` (InEngine: left in the engine for the next batch).
// Throws to stop the run. `generation` receives the engine's generation
// after the run, which the next batch checks its carried rows against.
void handle_rows(const BatchRows &batch, RowResult *results, const BatchSettings &settings,
                 std::uint64_t *generation)
{
    const BatchRow *rows = batch.rows;
    if (settings.dry_run) {
        for (int i = 0; i < batch.count; ++i) {
            if (!needs_request(rows[i]))
                continue;
            const BatchJob &job = rows[i].job;
            try {
                RegisterRequest request =
                    make_register_request(job.user_id_utf8, job.email_utf8, job.phone_utf8,
                                          job.metadata_utf8, job.merge);
                if (settings.drop_invalid)
                    keep_dropped(drop_invalid_fields(request), rows[i], results[i]);
                encode_register(request);
                results[i].fate = BatchFate::Stored; // would be sent
            } catch (const Error &error) {
                results[i].fate = BatchFate::RowFault;
                results[i].dropped_count = 0;
                results[i].error = server_text(error.text());
            }
        }
        return;
    }

    BackendContext &backend = backend_context();
    const bool keep_carried = batch.carried > 0 && batch.carried_valid;
    // A 429 slows a backfill, never fails it.
    RequestEngine &engine =
        batch_engine(settings.concurrency, settings.max_rate, true, keep_carried);
    // The carried jobs are still there unless something dropped them or
    // made the engine anew (new settings) since the last batch. Lost ones
    // count as failed for a transient reason: the next pass sends them again.
    const bool carried_here = keep_carried && backend.engine_generation() == carry.generation &&
                              engine.unfinished() == static_cast<std::size_t>(batch.carried);
    if (!carried_here)
        backend.drop_unfinished();
    for (int j = 0; j < batch.carried; ++j)
        results[batch.count + j].fate = carried_here ? BatchFate::InEngine : BatchFate::Transient;
    std::vector<BatchJob> jobs;
    for (int i = 0; i < batch.count; ++i)
        if (needs_request(rows[i]))
            jobs.push_back(rows[i].job);
    *generation = backend.engine_generation();
    if (jobs.empty() && !carried_here)
        return;
    RunOptions options;
    options.observer = request_observer(StatsSource::Backfill);
    if (settings.carry_at_most > 0)
        options.carry_at_most = static_cast<std::size_t>(settings.carry_at_most);
    else if (settings.defer_retries)
        options.defer_waits_over = kLongestWaitInBatch;
    SendSummary sent = send_jobs(engine, jobs.data(), static_cast<int>(jobs.size()), options,
                                 [&](std::uint64_t tag) -> BatchOutcome & {
                                     return results[row_of(batch, tag)];
                                 });
    *generation = backend.engine_generation();
    // Nothing got through: a rejected key, a TLS or configuration problem,
    // replies that are not DFend's, or DFend down (see batch_means_down).
    if (batch_means_down(sent.stored, sent.failed, sent.first_systemic.has_value())) {
        Error stop = sent.first_systemic ? *sent.first_systemic : *sent.first_failure;
        stop.append_detail("Every request of a batch failed, so the backfill stopped; the ids "
                           "stored by earlier batches are kept. Run it again to continue.");
        throw stop;
    }
}

void execute(const char *query, int nargs, Oid *types, Datum *values, const char *nulls,
             int expected)
{
    int result = SPI_execute_with_args(query, nargs, types, values, nulls, false, 0);
    if (result != expected)
        elog(ERROR, "dfend backfill statement failed: %s", SPI_result_code_string(result));
}

void warn_oversized_keys(int count, const Target &target, const char *what_happened)
{
    if (count > 0)
        ereport(WARNING, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                          errmsg("%d rows of %s have a user id longer than %d bytes", count,
                                 target.table_sql, kMaxFieldBytes),
                          errdetail("%s", what_happened)));
}

// Marks the rows that already have a dead letter (the outbox is dfend's, so
// this is read as the caller, not as the table's owner). Rows of one user id
// follow each other, so a sorted merge finds them.
void skip_dead_letters(const Target &target, BatchRow *rows, int count)
{
    char **keys = (char **) palloc(sizeof(char *) * (count > 0 ? count : 1));
    int key_count = 0;
    for (int i = 0; i < count; ++i)
        if (!rows[i].skipped)
            keys[key_count++] = rows[i].user_id;
    if (key_count == 0)
        return;
    char *query = psprintf("SELECT o.user_id FROM %s.dfend_outbox AS o "
                           "WHERE o.table_name OPERATOR(pg_catalog.=) $1 "
                           "AND o.state OPERATOR(pg_catalog.=) 'dead' "
                           "AND o.user_id OPERATOR(pg_catalog.=) ANY ($2)",
                           target.schema_sql);
    Oid types[2] = {REGCLASSOID, TEXTARRAYOID};
    Datum values[2] = {ObjectIdGetDatum(target.table),
                       PointerGetDatum(text_array(keys, key_count))};
    execute(query, 2, types, values, nullptr, SPI_OK_SELECT);
    int dead_count = (int) SPI_processed;
    char **dead = (char **) palloc(sizeof(char *) * (dead_count > 0 ? dead_count : 1));
    for (int d = 0; d < dead_count; ++d)
        dead[d] = SPI_getvalue(SPI_tuptable->vals[d], SPI_tuptable->tupdesc, 1);
    auto before = [](const char *a, const char *b) { return strcmp(a, b) < 0; };
    std::sort(dead, dead + dead_count, before);
    for (int i = 0; i < count; ++i)
        rows[i].dead_letter = !rows[i].skipped &&
                              std::binary_search(dead, dead + dead_count, rows[i].user_id, before);
}

// Whether the calling procedure takes the latest first_transient_key a
// batch reports (0.5.0 on). 0.4.0's keeps the first one; carried rows can
// fail after later rows did, reporting an earlier key then, so that
// procedure gets no carried rows.
bool procedure_takes_latest_transient()
{
    execute("SELECT e.extversion OPERATOR(pg_catalog.<>) '0.4.0' FROM pg_catalog.pg_extension "
            "AS e WHERE e.extname OPERATOR(pg_catalog.=) 'dfend'",
            0, nullptr, nullptr, nullptr, SPI_OK_SELECT);
    bool isnull = true;
    bool latest = SPI_processed == 1 &&
                  DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
                                             &isnull));
    return latest && !isnull;
}

// PostgreSQL-style, step 1: the next rows by key after `after_key` (from
// it, when `inclusive`), at most batch_size: the key, then email, phone and
// metadata. The planner walks an index on the key when there is one, so a
// batch costs the same at row 9,000,000 as at 0. Read as the table's owner
// (the key's cast too: a domain's CHECK may call the owner's functions), in
// the columns' own types: the text of each value is made later, at most
// kMaxFieldBytes of it.
SPITupleTable *select_next_rows(const Target &target, const char *after_key, bool inclusive,
                                int batch_size)
{
    Datum select_values[2] = {Int32GetDatum(batch_size), (Datum) 0};
    Oid select_types[2] = {INT4OID, TEXTOID};
    int nargs = 1;
    const char *after_condition = "";
    if (after_key) {
        select_values[nargs++] = CStringGetTextDatum(after_key);
        after_condition = psprintf(
            " AND t.%s %s $2::%s", target.key_sql,
            inclusive ? target.key_greater_or_equal : target.key_greater,
            format_type_extended(target.key_type, target.key_typmod,
                                 FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY));
    }
    char *select = psprintf("SELECT t.%s, %s, %s, %s FROM %s AS t "
                            "WHERE t.%s IS NULL AND t.%s IS NOT NULL%s ORDER BY t.%s LIMIT $1",
                            target.key_sql, target.email_sql, target.phone_sql,
                            target.metadata_sql, target.table_sql, target.id_sql, target.key_sql,
                            after_condition, target.key_sql);
    SPITupleTable *tuples = nullptr;
    if (ErrorData *error = run_as_owner(target.owner, OwnerLimits{0, 0}, [&] {
            execute(select, nargs, select_types, select_values, nullptr, SPI_OK_SELECT);
            tuples = SPI_tuptable;
        }))
        ReThrowError(error);
    // The lock above makes this hold; checked anyway, since a key of
    // another type than the array built from it would be read as garbage.
    if (tuples->tupdesc->natts < 1 || SPI_gettypeid(tuples->tupdesc, 1) != target.key_type)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("the type of column %s of table %s changed during the backfill",
                               target.key_sql, target.table_sql),
                        errhint("Run the backfill again.")));
    return tuples;
}

// PostgreSQL-style: the batch of `count` rows joins its run. The rows an
// earlier batch of the run left in the engine come along (a new pass, or any
// other call, starts without them). The last batch of a pass waits for every
// answer; the others carry what is still unanswered when their last row has
// been sent (settings.carry_at_most).
BatchRows join_run(const Target &target, const char *user_id_column, const char *id_column,
                   const char *after_key, bool inclusive, int count, int batch_size,
                   BatchSettings &settings)
{
    if (!after_key || inclusive || settings.dry_run)
        start_pass();
    bool continues = carry.count > 0 && carry.table == target.table &&
                     carry.key_type == target.key_type &&
                     strcmp(NameStr(carry.key_column), user_id_column) == 0 &&
                     strcmp(NameStr(carry.id_column), id_column) == 0 && after_key &&
                     carry.next_after_key && strcmp(carry.next_after_key, after_key) == 0;
    if (!continues)
        clear_carry(); // another run's: the engine drops them too
    if (settings.defer_retries && !settings.dry_run && procedure_takes_latest_transient()) {
        // Carried rows replace 0.4.0's deferral to the next pass: the last
        // batch of a pass waits for every answer, the others carry.
        settings.defer_retries = false;
        if (count == batch_size)
            settings.carry_at_most = batch_size;
    }
    BatchRows batch{nullptr, count, carry.count, carry.next_tag, !carry.in_use};
    carry.next_tag += (std::uint64_t) count;
    return batch;
}

// PostgreSQL-style: the rows of `batch` (its own `count` rows from
// `tuples`, then the carried ones), with their jobs, and the results known
// before any request: a field too large makes a dead letter; a key too long
// to name and an existing dead letter send nothing.
void prepare_rows(BatchRows &batch, SPITupleTable *tuples, const BatchSettings &settings,
                  const Target &target, RowResult *results)
{
    const int count = batch.count;
    const int total = count + batch.carried;
    BatchRow *rows = (BatchRow *) palloc0(sizeof(BatchRow) * (total > 0 ? total : 1));
    batch.rows = rows;
    for (int j = 0; j < batch.carried; ++j) {
        rows[count + j].key = carry.rows[j].key;
        rows[count + j].user_id = carry.rows[j].user_id;
        rows[count + j].job.user_id = carry.rows[j].user_id;
        rows[count + j].carried_in = true;
    }
    TupleDesc desc = tuples->tupdesc;
    int oversized_keys = 0;
    for (int i = 0; i < count; ++i) {
        HeapTuple tuple = tuples->vals[i];
        bool isnull;
        rows[i].key = SPI_getbinval(tuple, desc, 1, &isnull);
        rows[i].user_id = bounded_key_text(tuple, desc, 1);
        if (!rows[i].user_id) { // no request, no dead letter: it cannot even be named
            rows[i].skipped = true;
            ++oversized_keys;
            continue;
        }
        rows[i].duplicate = i > 0 && !rows[i - 1].skipped &&
                            strcmp(rows[i].user_id, rows[i - 1].user_id) == 0;
        rows[i].too_large = prepare_job(tuple, desc, 2, rows[i].user_id, &rows[i].job);
        rows[i].job.tag = batch.tag_base + static_cast<std::uint64_t>(i);
        rows[i].job.merge = settings.merge;
        rows[i].job.drop_invalid = settings.drop_invalid;
    }
    warn_oversized_keys(oversized_keys, target, "They were skipped: no request was sent for them.");

    skip_dead_letters(target, rows, count);
    for (int i = 0; i < count; ++i)
        if (rows[i].too_large && !rows[i].skipped && !rows[i].dead_letter) {
            results[i].fate = BatchFate::RowFault;
            results[i].error = rows[i].too_large;
        }
}

// What a batch's results come to: its counts, the ids to store, the dead
// letters to record and the report's lines.
struct Tally {
    int registered = 0, created = 0, failed_permanent = 0, failed_transient = 0, dropped = 0;
    // Registrations to store (none in a dry run), one per row.
    Datum *stored_keys = nullptr;
    char **stored_ids = nullptr;
    const BatchJob **stored_jobs = nullptr;
    const BatchOutcome **stored_outcomes = nullptr;
    int stored_count = 0;
    // Rows DFend refused for their data.
    char **dead_users = nullptr;
    char **dead_errors = nullptr;
    Datum *dead_attempts = nullptr;
    int dead_count = 0;
    // Invalid rows (and, in a dry run, rows sent without a field), at most
    // report_limit.
    Datum *reported = nullptr;
    int reported_count = 0;
};

// PostgreSQL-style: counts the results; remembers the pass's earliest row
// that failed for a transient reason (note_transient).
Tally tally_results(const BatchRows &batch, const RowResult *results,
                    const BatchSettings &settings, const Target &target, int report_limit)
{
    const BatchRow *rows = batch.rows;
    const int count = batch.count;
    const int total = count + batch.carried;
    const int slots = total > 0 ? total : 1;
    Tally tally;
    tally.stored_keys = (Datum *) palloc(sizeof(Datum) * slots);
    tally.stored_ids = (char **) palloc(sizeof(char *) * slots);
    tally.stored_jobs = (const BatchJob **) palloc(sizeof(void *) * slots);
    tally.stored_outcomes = (const BatchOutcome **) palloc(sizeof(void *) * slots);
    tally.dead_users = (char **) palloc(sizeof(char *) * slots);
    tally.dead_errors = (char **) palloc(sizeof(char *) * slots);
    tally.dead_attempts = (Datum *) palloc(sizeof(Datum) * slots);
    tally.reported = (Datum *) palloc(sizeof(Datum) * slots);
    for (int i = 0; i < total; ++i) {
        const RowResult &result = results[i];
        switch (result.fate) {
        case BatchFate::None:
        case BatchFate::InEngine:
            break;
        case BatchFate::Stored:
            ++tally.registered;
            if (result.created)
                ++tally.created;
            if (result.dropped_count > 0) {
                ++tally.dropped;
                // A dry run lists them with the invalid rows.
                if (settings.dry_run && tally.reported_count < report_limit) {
                    StringInfoData text;
                    initStringInfo(&text);
                    appendStringInfo(&text, "%s: would be sent without",
                                     quote_literal_cstr(rows[i].user_id));
                    for (int d = 0; d < result.dropped_count; ++d)
                        appendStringInfo(&text, "%s its %s (%s)", d > 0 ? " and" : "",
                                         result.dropped[d].field, result.dropped[d].reason);
                    tally.reported[tally.reported_count++] = CStringGetTextDatum(text.data);
                }
            }
            if (!settings.dry_run) {
                tally.stored_keys[tally.stored_count] = rows[i].key;
                tally.stored_jobs[tally.stored_count] = &rows[i].job;
                tally.stored_outcomes[tally.stored_count] = &result;
                tally.stored_ids[tally.stored_count++] = result.id;
            }
            break;
        case BatchFate::RowFault:
            ++tally.failed_permanent;
            tally.dead_users[tally.dead_count] = rows[i].user_id;
            tally.dead_errors[tally.dead_count] = result.error;
            tally.dead_attempts[tally.dead_count++] = Int32GetDatum(result.attempts);
            if (tally.reported_count < report_limit)
                tally.reported[tally.reported_count++] = CStringGetTextDatum(
                    psprintf("%s: %s", quote_literal_cstr(rows[i].user_id), result.error));
            break;
        default: // failed for a reason a later pass may not meet
            ++tally.failed_transient;
            note_transient(i < count ? carry.next_order + (std::uint64_t) i
                                     : carry.rows[i - count].order,
                           target.key_type, rows[i].key);
            break;
        }
    }
    return tally;
}

// PostgreSQL-style: stores the registered ids (StoreMode::FillMissing: a row
// a concurrent writer gave an id meanwhile keeps it), as the table's owner,
// and records the fields the stored registrations left out.
void store_registered(const Target &target, const Tally &tally)
{
    if (tally.stored_count == 0)
        return;
    const int stored_count = tally.stored_count;
    int16 typlen;
    bool typbyval;
    char typalign;
    get_typlenbyvalalign(target.key_type, &typlen, &typbyval, &typalign);
    Oid key_array_type = get_array_type(target.key_type);
    if (!OidIsValid(key_array_type))
        ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
                        errmsg("the type of column %s has no array type", target.key_sql)));
    // As the table's owner: its triggers, domains and policies run with the
    // owner's rights, never the caller's.
    StoreTarget store{target.owner,  target.table_sql,       target.key_sql,   target.id_sql,
                      target.key_equals, "", StoreMode::FillMissing, OwnerLimits{0, 0}};
    bool *holds = (bool *) palloc0(sizeof(bool) * stored_count); // by stored index
    if (ErrorData *error = store_ids(
            store,
            PointerGetDatum(construct_array(tally.stored_keys, stored_count, target.key_type,
                                            typlen, typbyval, typalign)),
            key_array_type, tally.stored_ids, stored_count, holds))
        ReThrowError(error);
    record_stored_drops(target.table, tally.stored_jobs, tally.stored_outcomes, holds,
                        stored_count);
    const int updated = (int) std::count(holds, holds + stored_count, true);
    if (updated < stored_count)
        ereport(WARNING,
                (errmsg("%d of %d DFend ids were not stored", stored_count - updated,
                        stored_count),
                 errdetail("A concurrent writer may have stored an id first, or a trigger "
                           "or row-level security policy on the table skipped the update."),
                 errhint("Rows still without an id are sent again by the next run.")));
}

// PostgreSQL-style: the rows DFend refused for their data become dead
// letters in the outbox (dfend's table: written as the caller).
void record_dead_letters(const Target &target, const Tally &tally)
{
    if (tally.dead_count == 0)
        return;
    const int dead_count = tally.dead_count;
    char *insert = psprintf(
        "INSERT INTO %s.dfend_outbox (table_name, user_id, reason, state, attempts, "
        "last_error) SELECT $1, x.user_id, 'backfill', 'dead', x.attempts, x.last_error "
        "FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), "
        "pg_catalog.unnest($3::pg_catalog.int4[]), pg_catalog.unnest($4::pg_catalog.text[])) "
        "AS x(user_id, attempts, last_error)",
        target.schema_sql);
    Oid types[4] = {REGCLASSOID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID};
    Datum values[4] = {
        ObjectIdGetDatum(target.table), PointerGetDatum(text_array(tally.dead_users, dead_count)),
        PointerGetDatum(construct_array(tally.dead_attempts, dead_count, INT4OID, 4, true,
                                        TYPALIGN_INT)),
        PointerGetDatum(text_array(tally.dead_errors, dead_count))};
    execute(insert, 4, types, values, nullptr, SPI_OK_INSERT);
}

// PostgreSQL-style: keeps the rows still in the engine (InEngine) for the
// next batch of this run, which passes `last_key` as its after_key, and
// forgets the rows carried into this batch.
void carry_unanswered(const BatchRows &batch, const RowResult *results, const Target &target,
                      Oid table, const char *user_id_column, const char *id_column,
                      const char *last_key, std::uint64_t generation)
{
    int16 typlen;
    bool typbyval;
    get_typlenbyval(target.key_type, &typlen, &typbyval);
    const int total = batch.count + batch.carried;
    int unanswered = 0;
    for (int i = 0; i < total; ++i)
        if (results[i].fate == BatchFate::InEngine)
            ++unanswered;
    MemoryContext old_context = carry.context;
    const CarriedRow *old_rows = carry.rows;
    carry.context = nullptr;
    carry.rows = nullptr;
    carry.count = 0;
    carry.next_after_key = nullptr;
    carry.table = InvalidOid;
    if (unanswered > 0 && last_key) {
        MemoryContext context =
            AllocSetContextCreate(TopMemoryContext, "dfend backfill carry", ALLOCSET_SMALL_SIZES);
        MemoryContext caller = MemoryContextSwitchTo(context);
        CarriedRow *kept = (CarriedRow *) palloc(sizeof(CarriedRow) * unanswered);
        int n = 0;
        // Rows carried in first: their tags are older, so `kept` stays sorted.
        for (int j = 0; j < batch.carried; ++j)
            if (results[batch.count + j].fate == BatchFate::InEngine)
                kept[n++] = CarriedRow{old_rows[j].tag,
                                       datumCopy(old_rows[j].key, typbyval, typlen),
                                       pstrdup(old_rows[j].user_id), old_rows[j].order};
        for (int i = 0; i < batch.count; ++i)
            if (results[i].fate == BatchFate::InEngine)
                kept[n++] = CarriedRow{batch.tag_base + (std::uint64_t) i,
                                       datumCopy(batch.rows[i].key, typbyval, typlen),
                                       pstrdup(batch.rows[i].user_id),
                                       carry.next_order + (std::uint64_t) i};
        carry.next_after_key = pstrdup(last_key);
        MemoryContextSwitchTo(caller);
        carry.context = context;
        carry.rows = kept;
        carry.count = n;
        carry.table = table;
        carry.key_type = target.key_type;
        namestrcpy(&carry.key_column, user_id_column);
        namestrcpy(&carry.id_column, id_column);
        carry.generation = generation;
    }
    if (old_context)
        MemoryContextDelete(old_context);
    carry.in_use = false;
}

} // namespace

} // namespace dfend::pg

using namespace dfend;
using namespace dfend::pg;

extern "C" {

// dfend_backfill_batch(table_name, user_id_column, id_column, email_column,
//     phone_column, metadata_column, merge, after_key, inclusive, batch_size,
//     concurrency, max_rate, dry_run, report_limit, invalid_fields)
//   -> (last_key, rows, registered, created, existing, failed_permanent,
//       failed_transient, first_transient_key, invalid, dropped)
PG_FUNCTION_INFO_V1(dfend_backfill_batch);
Datum dfend_backfill_batch(PG_FUNCTION_ARGS)
{
    // A batch runs the table owner's code (its triggers, policies, domains)
    // as a security-restricted operation, while the rows it carries are in
    // use; a batch started from there would free them under the running
    // one (a red-team review of 0.5.0 crashed the server that way).
    if (InSecurityRestrictedOperation())
        ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                        errmsg("cannot run dfend_backfill_batch within a security-restricted "
                               "operation"),
                        errdetail("A table owner's trigger, policy or domain runs as one "
                                  "during a backfill.")));
    for (int required : {0, 1, 2, 8, 9, 10, 12, 14})
        if (required < PG_NARGS() && PG_ARGISNULL(required))
            ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
                            errmsg("argument %d of dfend_backfill_batch must not be null",
                                   required + 1)));
    Oid table = PG_GETARG_OID(0);
    const char *user_id_column = name_argument(fcinfo, 1);
    const char *id_column = name_argument(fcinfo, 2);
    const char *email_column = name_argument(fcinfo, 3);
    const char *phone_column = name_argument(fcinfo, 4);
    const char *metadata_column = name_argument(fcinfo, 5);
    BatchSettings settings;
    settings.merge = !PG_ARGISNULL(6) && PG_GETARG_BOOL(6);
    char *after_key = PG_ARGISNULL(7) ? nullptr : text_to_cstring(PG_GETARG_TEXT_PP(7));
    bool inclusive = PG_GETARG_BOOL(8);
    int batch_size = PG_GETARG_INT32(9);
    settings.concurrency = PG_GETARG_INT32(10);
    settings.max_rate = PG_ARGISNULL(11) ? 0 : PG_GETARG_FLOAT8(11);
    settings.dry_run = PG_GETARG_BOOL(12);
    int report_limit = PG_ARGISNULL(13) ? 0 : PG_GETARG_INT32(13);
    // Before ALTER EXTENSION dfend UPDATE, the 0.2.0 SQL declaration passes
    // 14 arguments: rows were rejected then.
    char *invalid_fields =
        PG_NARGS() > 14 ? text_to_cstring(PG_GETARG_TEXT_PP(14)) : pstrdup("reject");
    if (strcmp(invalid_fields, "drop") != 0 && strcmp(invalid_fields, "reject") != 0)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("invalid invalid_fields \"%s\"", invalid_fields),
                        errhint("Use 'drop' or 'reject'.")));
    settings.drop_invalid = strcmp(invalid_fields, "drop") == 0;
    // Declared from 0.4.0 on; the older procedures wait for every retry.
    settings.defer_retries = PG_NARGS() > 15 && !PG_ARGISNULL(15) && PG_GETARG_BOOL(15);
    settings.carry_at_most = 0;
    if (batch_size < 1 || batch_size > 100000)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("batch_size must be between 1 and 100000")));
    if (settings.concurrency < 1 || settings.concurrency > 1024)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("concurrency must be between 1 and 1024")));
    if (!(settings.max_rate >= 0) || std::isinf(settings.max_rate))
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_rate must be a positive number")));

    TupleDesc result_type;
    if (get_call_result_type(fcinfo, nullptr, &result_type) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "return type must be a row type");
    result_type = BlessTupleDesc(result_type);
    MemoryContext caller_context = CurrentMemoryContext;

    // Keys travel between batches as text: make floats print exactly.
    int guc_level = internal_sql_begin();
    set_config_option("extra_float_digits", "3", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
                      true, 0, false);
    SPI_connect();
    Target target = resolve_target(fcinfo, table, user_id_column, id_column, email_column,
                                   phone_column, metadata_column, !settings.dry_run);

    SPITupleTable *tuples = select_next_rows(target, after_key, inclusive, batch_size);
    const int count = (int) tuples->numvals;

    BatchRows batch = join_run(target, user_id_column, id_column, after_key, inclusive, count,
                               batch_size, settings);
    const int total = count + batch.carried;

    RowResult *results = (RowResult *) palloc0(sizeof(RowResult) * (total > 0 ? total : 1));
    prepare_rows(batch, tuples, settings, target, results);

    // 2. The requests: the only part that leaves PostgreSQL. An error from
    //    here on voids the carried rows (in_use stays set).
    std::uint64_t generation = 0;
    if (total > 0) {
        carry.in_use = !settings.dry_run;
        if (!settings.dry_run)
            pgstat_report_wait_start(PG_WAIT_EXTENSION);
        cpp_call([&] { handle_rows(batch, results, settings, &generation); });
        if (!settings.dry_run)
            pgstat_report_wait_end();
    }

    // 3. Store what came back.
    Tally tally = tally_results(batch, results, settings, target, report_limit);
    if (!settings.dry_run) {
        store_registered(target, tally);
        record_dead_letters(target, tally);
    }

    // The result, built where it outlives SPI_finish.
    char *last_key =
        count > 0 ? SPI_getvalue(tuples->vals[count - 1], tuples->tupdesc, 1) : nullptr;
    if (!settings.dry_run)
        carry_unanswered(batch, results, target, table, user_id_column, id_column, last_key,
                         generation);
    carry.next_order += (std::uint64_t) count;
    // Where the next pass starts: the earliest row of this pass so far that
    // failed for a transient reason (a carried row may fail after a later
    // row did, so this is not always this batch's).
    char *first_transient_key =
        carry.first_transient_key ? pstrdup(carry.first_transient_key) : nullptr;
    MemoryContext spi_context = MemoryContextSwitchTo(caller_context);
    ArrayType *invalid = construct_array(tally.reported, tally.reported_count, TEXTOID, -1,
                                         false, TYPALIGN_INT);
    Datum values[10] = {
        last_key ? CStringGetTextDatum(last_key) : (Datum) 0,
        Int32GetDatum(count),
        Int32GetDatum(tally.registered),
        Int32GetDatum(tally.created),
        Int32GetDatum(settings.dry_run ? 0 : tally.registered - tally.created),
        Int32GetDatum(tally.failed_permanent),
        Int32GetDatum(tally.failed_transient),
        first_transient_key ? CStringGetTextDatum(first_transient_key) : (Datum) 0,
        PointerGetDatum(invalid),
        Int32GetDatum(tally.dropped)};
    bool nulls[10] = {last_key == nullptr, false, false, false, false, false, false,
                      first_transient_key == nullptr, false, false};
    HeapTuple result = heap_form_tuple(result_type, values, nulls);
    MemoryContextSwitchTo(spi_context);
    SPI_finish();
    AtEOXact_GUC(true, guc_level);
    PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

// dfend_enqueue_backfill(table_name regclass) RETURNS bigint: hands the rows
// still without an id to the outbox worker instead. Keys are read as the
// table's owner in chunks (bounded memory), and queued as the caller.
PG_FUNCTION_INFO_V1(dfend_enqueue_backfill);
Datum dfend_enqueue_backfill(PG_FUNCTION_ARGS)
{
    constexpr int kChunk = 10000;
    Oid table = PG_GETARG_OID(0);
    char *schema = own_schema(fcinfo);

    SPI_connect();
    int guc_level = internal_sql_begin();
    char *mapping = psprintf("SELECT a.user_id_column, a.id_column FROM %s.dfend_attachment AS a "
                             "WHERE a.table_name OPERATOR(pg_catalog.=) $1",
                             schema);
    Oid mapping_types[1] = {REGCLASSOID};
    Datum mapping_values[1] = {ObjectIdGetDatum(table)};
    execute(mapping, 1, mapping_types, mapping_values, nullptr, SPI_OK_SELECT);
    if (SPI_processed == 0) {
        char *name = DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(table)));
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
                        errmsg("table %s is not attached to DFend", name),
                        errdetail("The outbox worker reads the column mapping of attached "
                                  "tables."),
                        errhint("Attach the table with dfend_attach, or run CALL "
                                "dfend_backfill(...) with the columns instead.")));
    }
    char *user_id_column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
    char *id_column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
    Target target = resolve_target(fcinfo, table, user_id_column, id_column, nullptr, nullptr,
                                   nullptr, false);
    char *key_type = format_type_extended(target.key_type, target.key_typmod,
                                          FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
    char *first = psprintf("SELECT t.%s FROM %s AS t WHERE t.%s IS NULL AND t.%s IS NOT NULL "
                           "ORDER BY t.%s LIMIT %d",
                           target.key_sql, target.table_sql, target.id_sql, target.key_sql,
                           target.key_sql, kChunk);
    char *next = psprintf("SELECT t.%s FROM %s AS t WHERE t.%s IS NULL AND t.%s IS NOT NULL "
                          "AND t.%s %s $1::%s ORDER BY t.%s LIMIT %d",
                          target.key_sql, target.table_sql, target.id_sql, target.key_sql,
                          target.key_sql, target.key_greater, key_type, target.key_sql, kChunk);
    // Rows with any entry (pending, or dead: see dfend_dead_letters) are
    // left alone, and so are the keys of bulk rows ($3), which are pending.
    char *insert = psprintf(
        "INSERT INTO %s.dfend_outbox (table_name, user_id, reason) "
        "SELECT DISTINCT $1, k.user_id, 'backfill' "
        "FROM pg_catalog.unnest($2::pg_catalog.text[]) AS k(user_id) WHERE NOT EXISTS ("
        "SELECT 1 FROM %s.dfend_outbox AS o WHERE o.table_name OPERATOR(pg_catalog.=) $1 "
        "AND o.user_id OPERATOR(pg_catalog.=) k.user_id) "
        "AND NOT k.user_id OPERATOR(pg_catalog.=) ANY ($3::pg_catalog.text[])",
        schema, schema);
    // Read as the extension's owner (the caller needs no grant on it), and
    // before the INSERT: a bulk row expanded meanwhile has left entries
    // that the INSERT's later snapshot sees.
    const bool has_bulk = OidIsValid(
        get_relname_relid("dfend_outbox_bulk", get_func_namespace(fcinfo->flinfo->fn_oid)));
    char *bulk_keys = psprintf(
        "SELECT COALESCE(pg_catalog.array_agg(DISTINCT u.user_id), '{}') "
        "FROM %s.dfend_outbox_bulk AS b, pg_catalog.unnest(b.user_ids) AS u(user_id) "
        "WHERE b.table_name OPERATOR(pg_catalog.=) $1 "
        "AND u.user_id OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[])",
        schema);
    Oid extension_owner = outbox_owner();

    MemoryContext chunk_context =
        AllocSetContextCreate(CurrentMemoryContext, "dfend enqueue chunk", ALLOCSET_DEFAULT_SIZES);
    char *last_key = nullptr;
    int64 count = 0;
    int oversized_keys = 0;
    for (;;) {
        MemoryContext outer = MemoryContextSwitchTo(chunk_context);
        SPITupleTable *keys = nullptr;
        Datum after[1] = {last_key ? CStringGetTextDatum(last_key) : (Datum) 0};
        Oid after_type[1] = {TEXTOID};
        if (ErrorData *error = run_as_owner(target.owner, OwnerLimits{0, 0}, [&] {
                execute(last_key ? next : first, last_key ? 1 : 0, after_type, after, nullptr,
                        SPI_OK_SELECT);
                keys = SPI_tuptable;
            }))
            ReThrowError(error);
        int rows = (int) keys->numvals;
        char **texts = (char **) palloc(sizeof(char *) * (rows > 0 ? rows : 1));
        int text_count = 0;
        for (int i = 0; i < rows; ++i) {
            if (char *key = bounded_key_text(keys->vals[i], keys->tupdesc, 1))
                texts[text_count++] = key;
            else
                ++oversized_keys;
        }
        if (text_count > 0) {
            Oid types[3] = {REGCLASSOID, TEXTARRAYOID, TEXTARRAYOID};
            Datum values[3] = {ObjectIdGetDatum(table),
                               PointerGetDatum(text_array(texts, text_count)),
                               PointerGetDatum(text_array(nullptr, 0))};
            SPITupleTable *queued = nullptr;
            if (has_bulk)
                as_extension_owner(extension_owner, [&] {
                    execute(bulk_keys, 2, types, values, nullptr, SPI_OK_SELECT);
                    queued = SPI_tuptable;
                    bool isnull = true;
                    values[2] = SPI_getbinval(queued->vals[0], queued->tupdesc, 1, &isnull);
                });
            execute(insert, 3, types, values, nullptr, SPI_OK_INSERT);
            count += (int64) SPI_processed;
            if (queued)
                SPI_freetuptable(queued);
        }
        char *new_last = rows > 0 ? SPI_getvalue(keys->vals[rows - 1], keys->tupdesc, 1) : nullptr;
        MemoryContextSwitchTo(outer);
        last_key = new_last ? pstrdup(new_last) : nullptr;
        SPI_freetuptable(keys);
        MemoryContextReset(chunk_context);
        if (rows < kChunk)
            break;
    }
    warn_oversized_keys(oversized_keys, target, "They were not queued.");
    internal_sql_end(guc_level);
    SPI_finish();
    if (count > 0)
        note_enqueued(); // the worker wakes when this transaction commits
    PG_RETURN_INT64(count);
}

// dfend_internal_count_missing(table_name, user_id_column, id_column) RETURNS
// bigint: how many rows a backfill has to register (the progress total),
// counted as the table's owner, less the rows with a dead letter.
PG_FUNCTION_INFO_V1(dfend_internal_count_missing);
Datum dfend_internal_count_missing(PG_FUNCTION_ARGS)
{
    Oid table = PG_GETARG_OID(0);
    const char *user_id_column = name_argument(fcinfo, 1);
    const char *id_column = name_argument(fcinfo, 2);
    SPI_connect();
    int guc_level = internal_sql_begin();
    Target target = resolve_target(fcinfo, table, user_id_column, id_column, nullptr, nullptr,
                                   nullptr, false);
    char *count_query = psprintf("SELECT pg_catalog.count(*) FROM %s AS t "
                                 "WHERE t.%s IS NULL AND t.%s IS NOT NULL",
                                 target.table_sql, target.id_sql, target.key_sql);
    int64 missing = 0;
    if (ErrorData *error = run_as_owner(target.owner, OwnerLimits{0, 0}, [&] {
            execute(count_query, 0, nullptr, nullptr, nullptr, SPI_OK_SELECT);
            bool isnull = true;
            missing = DatumGetInt64(
                SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
        }))
        ReThrowError(error);
    char *dead_query = psprintf("SELECT pg_catalog.count(*) FROM %s.dfend_outbox AS o "
                                "WHERE o.table_name OPERATOR(pg_catalog.=) $1 "
                                "AND o.state OPERATOR(pg_catalog.=) 'dead'",
                                target.schema_sql);
    Oid types[1] = {REGCLASSOID};
    Datum values[1] = {ObjectIdGetDatum(table)};
    execute(dead_query, 1, types, values, nullptr, SPI_OK_SELECT);
    bool isnull = true;
    int64 dead =
        DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
    internal_sql_end(guc_level);
    SPI_finish();
    PG_RETURN_INT64(std::max<int64>(missing - dead, 0));
}

} // extern "C"
