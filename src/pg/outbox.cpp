// Draining the outbox: claim due entries, read the current rows, register
// them with many requests in flight, store the ids and remove the entries in
// the same transaction. Jobs, requests and the store are the batch pipeline
// the backfill uses too (batch.hpp). Used by the background worker and by
// dfend_process_queue(). PostgreSQL-style except inside cpp_call.
//
// Safety rules (see owner.hpp and SECURITY.md):
// - User tables are read and written only through run_as_owner: as the
//   table's owner, in a security-restricted operation, after check_mapping
//   confirmed the table still matches its attachment. The worker is a
//   superuser; a trigger, domain or operator on a user's table must not run
//   with its rights.
// - One table never stalls the others: its failures (any SQLSTATE but a real
//   cancel of this backend) are recorded on its own entries, its statements
//   are bounded by dfend.table_timeout and a short lock_timeout, rows another
//   session holds locked are skipped, and no column is read past
//   kMaxFieldBytes.
// - Rows are matched to entries in SQL (the entry's text cast to the key's
//   type), never by comparing text output, which differs for char(n),
//   floats and locale-dependent types.
#include "outbox.hpp"

#include "../core/engine.hpp"
#include "../core/outbox_policy.hpp"
#include "../core/version.hpp"
#include "backend.hpp"
#include "batch.hpp"
#include "border.hpp"
#include "dropped.hpp"
#include "owner.hpp"
#include "pause.hpp"
#include "worker_slots.hpp"
#include "settings.hpp"
#include "stats.hpp"
#include "values.hpp"

#include <algorithm>
#include <cmath>

#include "postgres.hpp"

extern "C" {
#include "access/tableam.h"
#include "commands/async.h"
#include "utils/json.h"
}

namespace dfend::pg {

namespace {

struct Entry {
    int64 entry_id;
    Oid table;
    char *user_id;
    bool is_update;
    bool is_insert;
    int job; // index into jobs, -1 when no request is needed
};

struct Mapping {
    Oid owner;
    char *table_sql; // schema-qualified, quoted
    char *user_id_column;
    char *id_column;
    char *email_column;
    char *phone_column;
    char *metadata_column;
    char *user_id_type; // the user id column's type, qualified
    char *equals;       // its equality operator, qualified: OPERATOR(schema.=)
    char *problem;      // why the table cannot be used as attached, or nullptr
    bool merge;
    bool fail_commit;   // on_error 'error': a failure at commit fails the COMMIT
    char *notify;       // channel to NOTIFY when ids are stored, or nullptr
    bool drop_invalid;  // invalid_fields 'drop'
};

// How one entry ends this round.
// What the fates mean for an entry (see settle): RowFault, dead at once;
// Transient, another attempt after a backoff; Systemic, no attempt counted,
// again after a pause; Unfinished (a commit-time registration ran out of
// dfend.sync_timeout), the worker takes it over at once, no attempt; Held
// (failed while the breaker found DFend unreachable as a whole), due again
// at once, no attempt: the breaker paces the queue; Deferred (DFend's rate
// limit asked it to wait and the batch did not), no attempt, due when the
// wait is over.
struct Settlement {
    int64 entry_id;
    BatchFate fate;
    char *error;
    int retry_after_ms;
    int sqlstate;      // what a failed COMMIT raises
    bool fail_commit;  // its table was attached with on_error 'error'
};

char *cached_schema = nullptr;
Oid cached_namespace = InvalidOid;
Oid cached_owner = InvalidOid;

// Set while a COMMIT registers its own rows: the owner's code then gets no
// more than what is left of dfend.sync_timeout (at least 100 ms), so a slow
// trigger cannot hold a signup for dfend.table_timeout per step.
TimestampTz commit_deadline = 0;

OwnerLimits table_limits()
{
    // A lock held by a session on one table, or a slow trigger, holds up the
    // other tables of the batch for at most these.
    int limit = table_timeout_ms();
    if (commit_deadline != 0) {
        long left = std::max(100L, TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
                                                                   commit_deadline));
        limit = limit > 0 ? (int) std::min<long>(limit, left) : (int) left;
    }
    return OwnerLimits{limit, limit > 0 ? std::min(limit, 1000) : 1000};
}

char *describe(const ErrorData *error)
{
    return error->detail ? psprintf("%s: %s", error->message, error->detail)
                         : pstrdup(error->message);
}

// Whether one of the extension's tables has the column: the library may be
// newer than the extension's SQL objects until ALTER EXTENSION dfend UPDATE.
bool extension_table_has_column(const char *table_name, const char *column)
{
    Oid table = get_relname_relid(table_name, outbox_namespace());
    return OidIsValid(table) && get_attnum(table, column) != InvalidAttrNumber;
}

// Reads the mapping of an attached table and checks that the table still
// matches it; false when it is not attached.
bool read_mapping(const char *schema, Oid table, Mapping *mapping)
{
    Datum args[1] = {ObjectIdGetDatum(table)};
    Oid types[1] = {OIDOID};
    char *query = psprintf(
        "SELECT a.user_id_column, a.id_column, a.email_column, a.phone_column, "
        "a.metadata_column, a.merge, r.relowner, "
        "a.on_error OPERATOR(pg_catalog.=) 'error', %s, %s "
        "FROM %s.dfend_attachment a "
        "JOIN pg_catalog.pg_class r ON r.oid OPERATOR(pg_catalog.=) a.table_name "
        "WHERE a.table_name OPERATOR(pg_catalog.=) $1",
        // Between installing this library and ALTER EXTENSION dfend UPDATE
        // the table lacks the 0.3.0 columns: no NOTIFY, and 'reject'.
        extension_table_has_column("dfend_attachment", "notify_channel")
            ? "a.notify_channel"
            : "NULL::pg_catalog.text",
        extension_table_has_column("dfend_attachment", "invalid_fields")
            ? "a.invalid_fields OPERATOR(pg_catalog.=) 'drop'"
            : "false",
        schema);
    if (SPI_execute_with_args(query, 1, types, args, nullptr, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "could not read the dfend attachment of table %u", table);
    if (SPI_processed == 0)
        return false;
    HeapTuple row = SPI_tuptable->vals[0];
    TupleDesc desc = SPI_tuptable->tupdesc;
    mapping->user_id_column = SPI_getvalue(row, desc, 1);
    mapping->id_column = SPI_getvalue(row, desc, 2);
    mapping->email_column = SPI_getvalue(row, desc, 3);
    mapping->phone_column = SPI_getvalue(row, desc, 4);
    mapping->metadata_column = SPI_getvalue(row, desc, 5);
    bool isnull = false;
    mapping->merge = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
    mapping->owner = DatumGetObjectId(SPI_getbinval(row, desc, 7, &isnull));
    mapping->fail_commit = DatumGetBool(SPI_getbinval(row, desc, 8, &isnull));
    mapping->notify = SPI_getvalue(row, desc, 9);
    Datum drop_invalid = SPI_getbinval(row, desc, 10, &isnull);
    mapping->drop_invalid = !isnull && DatumGetBool(drop_invalid);
    mapping->table_sql = quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)),
                                                    get_rel_name(table));
    mapping->user_id_type = nullptr;
    mapping->equals = nullptr;
    mapping->problem =
        check_mapping(table, mapping->user_id_column, mapping->id_column, mapping->email_column,
                      mapping->phone_column, mapping->metadata_column);
    if (mapping->problem)
        return true;
    Oid type;
    int32 typmod;
    Oid collation;
    get_atttypetypmodcoll(table, get_attnum(table, mapping->user_id_column), &type, &typmod,
                          &collation);
    // Qualified names: the statements run with search_path = pg_catalog.
    mapping->user_id_type =
        format_type_extended(type, typmod, FORMAT_TYPE_TYPEMOD_GIVEN | FORMAT_TYPE_FORCE_QUALIFY);
    mapping->equals = btree_operator(type, BTEqualStrategyNumber);
    if (!mapping->equals)
        mapping->problem = psprintf("the type of column \"%s\" of table %s has no equality "
                                    "operator",
                                    mapping->user_id_column, mapping->table_sql);
    return true;
}

// Runs the requests: the only part that leaves PostgreSQL.
// budget_ms >= 0 bounds the whole run (dfend.sync_timeout at commit).
void run_requests(const BatchJob *jobs, int count, BatchOutcome *outcomes,
                  const OutboxSettings &outbox, long budget_ms)
{
    cpp_call([&] {
        RequestEngine &engine = batch_engine(outbox.concurrency, outbox.max_rate, false);
        // A budget means a COMMIT registering its own rows (register_own_entries).
        RunOptions options;
        if (budget_ms >= 0)
            options.deadline = Clock::now() + Millis(budget_ms);
        options.observer =
            request_observer(budget_ms >= 0 ? StatsSource::Trigger : StatsSource::Worker);
        // The worker does not wait out a Retry-After or a long backoff: it
        // stores what is done and goes on with the next entries; the waiting
        // ones are due again when their wait is over.
        if (budget_ms < 0)
            options.defer_waits_over = kLongestWaitInBatch;
        // A COMMIT is waited for: not paced (see RunOptions::paced).
        options.paced = budget_ms < 0;
        send_jobs(engine, jobs, count, options, [&](std::uint64_t tag) -> BatchOutcome & {
            if (tag >= static_cast<std::uint64_t>(count))
                throw Error(ErrorKind::Internal, "request engine returned an unknown job");
            return outcomes[tag];
        });
    });
}

// The current rows behind a table's entries, matched in SQL, read as the
// table's owner. Returns the rows ordered by key in byte order (as strcmp):
// 1 the key as the outbox holds it, 2-4 email, phone and metadata in their
// own types (read with bounded_text), 5 whether the row has an id.
SPITupleTable *read_rows(const Mapping &mapping, char **keys, int count, char **failure)
{
    SPITupleTable *rows = nullptr;
    char *query = psprintf(
        "SELECT v.key, %s, %s, %s, t.%s IS NOT NULL "
        "FROM pg_catalog.unnest($1::pg_catalog.text[]) AS v(key) "
        "JOIN %s AS t ON t.%s %s v.key::%s ORDER BY v.key COLLATE pg_catalog.\"C\"",
        column_or_null(mapping.email_column), column_or_null(mapping.phone_column),
        column_or_null(mapping.metadata_column), quote_identifier(mapping.id_column),
        mapping.table_sql, quote_identifier(mapping.user_id_column), mapping.equals,
        mapping.user_id_type);
    Datum args[1] = {PointerGetDatum(text_array(keys, count))};
    Oid types[1] = {TEXTARRAYOID};
    ErrorData *error = run_as_owner(mapping.owner, table_limits(), [&] {
        // Not read-only: a fresh snapshot, so rows committed after the
        // batch began (whose entries the claim saw) are seen too.
        if (SPI_execute_with_args(query, 1, types, args, nullptr, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "could not read rows of %s", mapping.table_sql);
        rows = SPI_tuptable;
    });
    *failure = error ? describe(error) : nullptr;
    return error ? nullptr : rows;
}

// Where the worker stores a table's ids: keys as the outbox holds them
// (text, cast to the key's type), rows another session holds locked skipped
// (SKIP LOCKED), never waited for.
StoreTarget store_target(const Mapping &mapping)
{
    return StoreTarget{mapping.owner,
                       mapping.table_sql,
                       quote_identifier(mapping.user_id_column),
                       quote_identifier(mapping.id_column),
                       mapping.equals,
                       psprintf("::%s", mapping.user_id_type),
                       StoreMode::SkipLocked,
                       table_limits()};
}

void execute_or_fail(const char *query, int nargs, Oid *types, Datum *args, int expected)
{
    int result = SPI_execute_with_args(query, nargs, types, args, nullptr, false, 0);
    if (result != expected)
        elog(ERROR, "dfend outbox statement failed: %s", SPI_result_code_string(result));
}

Datum int8_array(int64 *values, int count)
{
    Datum *datums = (Datum *) palloc(sizeof(Datum) * std::max(count, 1));
    for (int i = 0; i < count; ++i)
        datums[i] = Int64GetDatum(values[i]);
    return PointerGetDatum(
        construct_array(datums, count, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

// Deletes finished entries and records failed ones, all in two statements.
void settle(const char *schema, const DeadLetterPolicy &policy, int64 *done, int done_count,
            Settlement *failed, int failed_count)
{
    if (done_count > 0) {
        Datum args[1] = {int8_array(done, done_count)};
        Oid types[1] = {INT8ARRAYOID};
        execute_or_fail(psprintf("DELETE FROM %s.dfend_outbox WHERE entry_id OPERATOR(pg_catalog.=) ANY($1)", schema),
                        1, types, args, SPI_OK_DELETE);
    }
    if (failed_count == 0)
        return;
    int64 *ids = (int64 *) palloc(sizeof(int64) * failed_count);
    Datum *errors = (Datum *) palloc(sizeof(Datum) * failed_count);
    Datum *fates = (Datum *) palloc(sizeof(Datum) * failed_count);
    Datum *retry_after = (Datum *) palloc(sizeof(Datum) * failed_count);
    for (int i = 0; i < failed_count; ++i) {
        ids[i] = failed[i].entry_id;
        errors[i] = CStringGetTextDatum(failed[i].error);
        const BatchFate fate = failed[i].fate;
        fates[i] = CStringGetTextDatum(fate == BatchFate::RowFault     ? "row"
                                       : fate == BatchFate::Transient  ? "transient"
                                       : fate == BatchFate::Unfinished ? "unfinished"
                                       : fate == BatchFate::Held       ? "held"
                                       : fate == BatchFate::Deferred   ? "deferred"
                                                                       : "systemic");
        retry_after[i] = Int32GetDatum(failed[i].retry_after_ms);
    }
    Datum args[9] = {
        int8_array(ids, failed_count),
        PointerGetDatum(construct_array(errors, failed_count, TEXTOID, -1, false, TYPALIGN_INT)),
        PointerGetDatum(construct_array(fates, failed_count, TEXTOID, -1, false, TYPALIGN_INT)),
        PointerGetDatum(construct_array(retry_after, failed_count, INT4OID, 4, true,
                                        TYPALIGN_INT)),
        Int32GetDatum(policy.max_attempts),
        Int64GetDatum(policy.dead_letter_after_s),
        Float8GetDatum(policy.systemic_retry_s),
        Float8GetDatum(policy.backoff_base_s),
        Float8GetDatum(policy.backoff_cap_s)};
    Oid types[9] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, INT4OID,
                    INT8OID,      FLOAT8OID,    FLOAT8OID,    FLOAT8OID};
    // The policy is DeadLetterPolicy's (src/core/outbox_policy.hpp), passed
    // in as $5..$9. The row's fault: dead at once. Transient: another
    // attempt after a backoff that doubles from $8 to $9 seconds (equal
    // jitter, never sooner than Retry-After), dead once it has failed $5
    // times AND was enqueued more than $6 seconds ago. Systemic (a rejected
    // key, TLS, a broken reply) while the breaker stayed closed: the same for
    // every row, so no attempt; again in $7 seconds. Held (the breaker found
    // DFend unreachable) and unfinished (COMMIT's time budget ran out): no
    // attempt, due at once; the breaker or the worker paces them. Deferred
    // (a 429 the batch did not wait for): no attempt, due after its wait.
    char *update = psprintf(
        "UPDATE %s.dfend_outbox o SET last_error = v.error, "
        "attempts = o.attempts + CASE WHEN v.fate IN ('row', 'transient') THEN 1 ELSE 0 END, "
        "state = CASE WHEN v.fate = 'row' OR (v.fate = 'transient' AND o.attempts + 1 >= $5 "
        "AND o.enqueued_at <= pg_catalog.clock_timestamp() - "
        "pg_catalog.make_interval(secs => $6)) THEN 'dead' ELSE 'pending' END, "
        "next_attempt_at = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => "
        "CASE WHEN v.fate = 'systemic' THEN $7 WHEN v.fate IN ('unfinished', 'held') THEN 0 "
        "WHEN v.fate = 'deferred' THEN v.retry_after_ms / 1000.0 "
        "ELSE greatest(v.retry_after_ms / 1000.0, least($9, $8 * 2 ^ o.attempts) * "
        "(0.5 + pg_catalog.random() / 2)) END) "
        "FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), "
        "pg_catalog.unnest($2::pg_catalog.text[]), pg_catalog.unnest($3::pg_catalog.text[]), "
        "pg_catalog.unnest($4::pg_catalog.int4[])) "
        "AS v(entry_id, error, fate, retry_after_ms) "
        "WHERE o.entry_id OPERATOR(pg_catalog.=) v.entry_id",
        schema);
    execute_or_fail(update, 9, types, args, SPI_OK_UPDATE);
}

} // namespace

unsigned int outbox_namespace()
{
    return outbox_schema() ? cached_namespace : InvalidOid;
}

unsigned int outbox_owner()
{
    return outbox_schema() ? cached_owner : InvalidOid;
}

namespace {

// The cached schema is forgotten when the outbox table's relcache entry is
// invalidated (DROP EXTENSION drops it), or on a cache reset, so an open
// session follows DROP EXTENSION and CREATE EXTENSION in another schema.
Oid cached_outbox = InvalidOid;
bool schema_callback_registered = false;
char schema_buffer[2 * NAMEDATALEN + 3]; // a quoted identifier at most

void forget_schema(Datum, Oid relation)
{
    if (relation == InvalidOid || relation == cached_outbox) {
        cached_schema = nullptr;
        cached_namespace = cached_owner = cached_outbox = InvalidOid;
    }
}

// Refuses SQL objects of a version this library was not built to serve
// (an older library left in place after ALTER EXTENSION dfend UPDATE, say),
// rather than running statements against tables it does not know. Not
// while CREATE or ALTER EXTENSION runs its scripts.
void check_sql_version(const char *version)
{
    if (creating_extension || !version)
        return;
    for (const char *served : kServedSqlVersions)
        if (strcmp(version, served) == 0)
            return;
    ereport(ERROR,
            (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
             errmsg("the dfend library %s does not serve version %s of the extension", kVersion,
                    version),
             errdetail("It serves versions %s to %s.", kServedSqlVersions[0],
                       kServedSqlVersions[std::size(kServedSqlVersions) - 1]),
             errhint("Run ALTER EXTENSION dfend UPDATE, or install the dfend build of version "
                     "%s and restart the server.",
                     version)));
}

} // namespace

const char *outbox_schema()
{
    if (!schema_callback_registered) {
        CacheRegisterRelcacheCallback(forget_schema, (Datum) 0);
        schema_callback_registered = true;
    }
    if (!cached_schema) {
        Oid extension = get_extension_oid("dfend", true);
        if (!OidIsValid(extension))
            return nullptr;
        // get_extension_schema() is not exported before PostgreSQL 16.
        Relation catalog = table_open(ExtensionRelationId, AccessShareLock);
        ScanKeyData key;
        ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
                    ObjectIdGetDatum(extension));
        SysScanDesc scan = systable_beginscan(catalog, ExtensionOidIndexId, true, nullptr, 1, &key);
        HeapTuple tuple = systable_getnext(scan);
        Oid schema = HeapTupleIsValid(tuple) ? ((Form_pg_extension) GETSTRUCT(tuple))->extnamespace
                                             : InvalidOid;
        Oid owner = HeapTupleIsValid(tuple) ? ((Form_pg_extension) GETSTRUCT(tuple))->extowner
                                            : InvalidOid;
        char *version = nullptr;
        if (HeapTupleIsValid(tuple)) {
            bool isnull = true;
            Datum value = heap_getattr(tuple, Anum_pg_extension_extversion,
                                       RelationGetDescr(catalog), &isnull);
            if (!isnull)
                version = TextDatumGetCString(value);
        }
        systable_endscan(scan);
        table_close(catalog, AccessShareLock);
        if (!OidIsValid(schema))
            return nullptr;
        check_sql_version(version);
        char *name = get_namespace_name(schema);
        Oid outbox = get_relname_relid("dfend_outbox", schema);
        if (!name || !OidIsValid(outbox))
            return nullptr; // mid-way through CREATE or DROP EXTENSION
        strlcpy(schema_buffer, quote_identifier(name), sizeof schema_buffer);
        cached_namespace = schema;
        cached_owner = owner;
        cached_outbox = outbox;
        cached_schema = schema_buffer;
    }
    return cached_schema;
}

// Entries whose row the worker cannot see. A restore commits the outbox
// before the users table's COPY, and a long transaction may be writing the
// row: the entry stays pending and is looked at again after 1 s, growing to
// 30 s, without costing an attempt. Only an entry whose row has stayed
// invisible for dfend.missing_row_timeout is removed (its row was deleted).
// Before ALTER EXTENSION dfend UPDATE to 0.3.0 there is no missing_since
// column, and the entry is removed at once, as 0.2.0 did.
void settle_missing(const char *schema, int64 *missing, int missing_count)
{
    if (missing_count == 0)
        return;
    Datum args[2] = {int8_array(missing, missing_count),
                     Int32GetDatum(missing_row_timeout_s())};
    Oid types[2] = {INT8ARRAYOID, INT4OID};
    if (!extension_table_has_column("dfend_outbox", "missing_since") ||
        missing_row_timeout_s() == 0) {
        execute_or_fail(psprintf("DELETE FROM %s.dfend_outbox WHERE entry_id "
                                 "OPERATOR(pg_catalog.=) ANY($1)",
                                 schema),
                        1, types, args, SPI_OK_DELETE);
        return;
    }
    execute_or_fail(
        psprintf("DELETE FROM %s.dfend_outbox WHERE entry_id OPERATOR(pg_catalog.=) ANY($1) "
                 "AND missing_since OPERATOR(pg_catalog.<=) (pg_catalog.clock_timestamp() "
                 "OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => $2))",
                 schema),
        2, types, args, SPI_OK_DELETE);
    execute_or_fail(
        psprintf("UPDATE %s.dfend_outbox SET "
                 "missing_since = COALESCE(missing_since, pg_catalog.clock_timestamp()), "
                 "last_error = 'the row is not visible: not yet committed (a restore, a long "
                 "transaction) or deleted', "
                 "next_attempt_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) "
                 "pg_catalog.make_interval(secs => LEAST(30, GREATEST(1, "
                 "pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() "
                 "OPERATOR(pg_catalog.-) COALESCE(missing_since, pg_catalog.clock_timestamp())) "
                 "OPERATOR(pg_catalog./) 2))) "
                 "WHERE entry_id OPERATOR(pg_catalog.=) ANY($1)",
                 schema),
        1, types, args, SPI_OK_UPDATE);
}

// Entries whose table could not be read or written: another attempt after
// a backoff, never a stall of the other tables.
void fail_entries(Settlement *failed, int *failed_count, const Entry *entries, int start,
                  int end, const char *what, const char *why, bool fail_commit)
{
    for (int i = start; i < end; ++i)
        failed[(*failed_count)++] =
            Settlement{entries[i].entry_id, BatchFate::Transient, psprintf("%s: %s", what, why), 0,
                       ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE, fail_commit};
}

// Tells the attachment's channel that a row holds its id. The payload is
// JSON: {"table": "schema.table", "user_id": "...", "dfend_id": "..."}; a
// user id too long for a notification (8000 bytes, escaped) is sent as null.
void notify_stored(const Mapping &mapping, const char *user_id, const char *id)
{
    StringInfoData payload;
    initStringInfo(&payload);
    for (bool with_user_id : {true, false}) {
        resetStringInfo(&payload);
        appendStringInfoString(&payload, "{\"table\": ");
        escape_json(&payload, mapping.table_sql);
        appendStringInfoString(&payload, ", \"user_id\": ");
        if (with_user_id)
            escape_json(&payload, user_id);
        else
            appendStringInfoString(&payload, "null");
        appendStringInfoString(&payload, ", \"dfend_id\": ");
        escape_json(&payload, id);
        appendStringInfoChar(&payload, '}');
        // PostgreSQL refuses a payload of 8000 bytes or more.
        if (payload.len < 7900)
            break;
    }
    Async_Notify(mapping.notify, payload.data);
}

// Error text as the end of a DETAIL: with exactly one final period.
char *as_sentence(const char *text)
{
    size_t length = strlen(text);
    return length > 0 && text[length - 1] == '.' ? pstrdup(text) : psprintf("%s.", text);
}

const char *const kDroppableFields[3] = {"email", "phone", "metadata"};

// What a commit-time registration left undone, for its WARNING.
struct Leftovers {
    int queued;      // will be retried by the worker
    int dead;        // the row's data was refused
    char *first_queued_error;
    char *first_dead_error;
    int first_queued_sqlstate;
    int first_dead_sqlstate;
    int dropped;     // registered without a field that failed validation
    bool dropped_fields[3]; // which: email, phone, metadata
    char *first_dropped;
};

namespace {

// Counts a stored registration's left-out fields for a COMMIT's WARNING.
void count_dropped(Leftovers *leftovers, const BatchJob &job, const BatchOutcome &outcome)
{
    if (!leftovers || outcome.dropped_count == 0)
        return;
    for (int d = 0; d < outcome.dropped_count; ++d)
        for (int f = 0; f < 3; ++f)
            if (strcmp(outcome.dropped[d].field, kDroppableFields[f]) == 0)
                leftovers->dropped_fields[f] = true;
    if (leftovers->dropped++ == 0)
        leftovers->first_dropped =
            psprintf("user %s, registered without its %s: %s", quote_literal_cstr(job.user_id),
                     outcome.dropped[0].field, outcome.dropped[0].reason);
}

// The entries a claim query just returned (SPI_tuptable).
Entry *claimed_entries()
{
    int count = (int) SPI_processed;
    Entry *entries = (Entry *) palloc0(sizeof(Entry) * std::max(count, 1));
    for (int i = 0; i < count; ++i) {
        HeapTuple row = SPI_tuptable->vals[i];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool isnull = false;
        entries[i].entry_id = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
        entries[i].table = DatumGetObjectId(SPI_getbinval(row, desc, 2, &isnull));
        entries[i].user_id = SPI_getvalue(row, desc, 3);
        char *reason = SPI_getvalue(row, desc, 4);
        entries[i].is_update = strcmp(reason, "update") == 0;
        entries[i].is_insert = strcmp(reason, "insert") == 0;
        entries[i].job = -1;
    }
    return entries;
}

// One round's entries and how each ends.
struct Round {
    Entry *entries;        // sorted by table, then key
    int entry_count;
    Mapping *mappings;     // a table's, at the index of its first entry
    BatchJob *jobs;        // one per key that needs a request
    int job_count;
    BatchOutcome *results; // by job
    // Entries settled without a request (row gone, id already set, table
    // detached) or whose id is stored: removed.
    int64 *done;
    int done_count;
    Settlement *failed;    // entries to try again, or dead
    int failed_count;
    int64 *missing;        // entries whose row is not visible (settle_missing)
    int missing_count;
};

// Reads the rows behind the round's entries (sorted by table, then key),
// table by table as each table's owner, and makes one job per key that
// needs a request; settles on the spot the entries that need none.
void read_jobs(const char *schema, Round &round, bool at_commit)
{
    Entry *entries = round.entries;
    const int entry_count = round.entry_count;
    Mapping *mappings = round.mappings;
    BatchJob *jobs = round.jobs;
    int &job_count = round.job_count;
    int64 *done = round.done;
    int &done_count = round.done_count;
    Settlement *failed = round.failed;
    int &failed_count = round.failed_count;
    int64 *missing = round.missing;
    int &missing_count = round.missing_count;
    for (int start = 0; start < entry_count;) {
        int end = start;
        while (end < entry_count && entries[end].table == entries[start].table)
            ++end;
        Mapping &mapping = mappings[start];
        if (!read_mapping(schema, entries[start].table, &mapping)) {
            for (int i = start; i < end; ++i)
                done[done_count++] = entries[i].entry_id;
            start = end;
            continue;
        }
        if (mapping.problem) {
            fail_entries(failed, &failed_count, entries, start, end, "could not read the row",
                         mapping.problem, mapping.fail_commit);
            start = end;
            continue;
        }
        // Distinct keys of this table, in strcmp order (entries are sorted).
        char **keys = (char **) palloc(sizeof(char *) * (end - start));
        int key_count = 0;
        for (int i = start; i < end; ++i)
            if (key_count == 0 || strcmp(keys[key_count - 1], entries[i].user_id) != 0)
                keys[key_count++] = entries[i].user_id;
        char *failure = nullptr;
        SPITupleTable *rows = read_rows(mapping, keys, key_count, &failure);
        if (!rows) {
            fail_entries(failed, &failed_count, entries, start, end, "could not read the row",
                         failure, mapping.fail_commit);
            start = end;
            continue;
        }
        // Merge the sorted rows with the sorted entries.
        uint64 row = 0;
        for (int i = start; i < end;) {
            int same_end = i;
            bool any_update = false, all_inserts = true;
            while (same_end < end && strcmp(entries[same_end].user_id, entries[i].user_id) == 0) {
                any_update |= entries[same_end].is_update;
                all_inserts &= entries[same_end].is_insert;
                ++same_end;
            }
            HeapTuple found = nullptr;
            while (row < rows->numvals) {
                char *key = SPI_getvalue(rows->vals[row], rows->tupdesc, 1);
                int order = strcmp(key, entries[i].user_id);
                pfree(key);
                if (order < 0) {
                    ++row;
                    continue;
                }
                if (order == 0)
                    found = rows->vals[row];
                break;
            }
            bool has_id = false;
            if (found) {
                bool isnull = true;
                has_id = DatumGetBool(heap_getattr(found, 5, rows->tupdesc, &isnull));
            }
            char *too_large = nullptr;
            BatchJob job = {};
            if (found && !(has_id && all_inserts))
                too_large = prepare_job(found, rows->tupdesc, 2, entries[i].user_id, &job);
            if (!found && !at_commit) {
                // Not visible to the worker: maybe deleted, maybe not yet
                // committed (a restore, a long transaction). Kept, not
                // dropped on sight (settle_missing).
                for (int k = i; k < same_end; ++k)
                    missing[missing_count++] = entries[k].entry_id;
            } else if (!found || (has_id && all_inserts)) {
                // At COMMIT, the transaction's own row is always visible:
                // not found means it deleted the row (or changed its key).
                for (int k = i; k < same_end; ++k)
                    done[done_count++] = entries[k].entry_id;
            } else if (too_large) {
                for (int k = i; k < same_end; ++k)
                    failed[failed_count++] =
                        Settlement{entries[k].entry_id, BatchFate::RowFault, too_large, 0,
                                   ERRCODE_PROGRAM_LIMIT_EXCEEDED, mapping.fail_commit};
            } else {
                job.tag = static_cast<std::uint64_t>(job_count);
                job.merge = mapping.merge || any_update;
                job.drop_invalid = mapping.drop_invalid;
                jobs[job_count] = job;
                for (int k = i; k < same_end; ++k)
                    entries[k].job = job_count;
                ++job_count;
            }
            i = same_end;
        }
        start = end;
    }
}

// Stores the ids, one statement per table, as the table's owner, and
// decides how each entry with a job ends. The jobs of one table are
// consecutive (entries are sorted by table, one job per key).
void store_results(Round &round, Leftovers *leftovers, OutboxResult &result)
{
    Entry *entries = round.entries;
    const int entry_count = round.entry_count;
    Mapping *mappings = round.mappings;
    BatchJob *jobs = round.jobs;
    const int job_count = round.job_count;
    int64 *done = round.done;
    int &done_count = round.done_count;
    Settlement *failed = round.failed;
    int &failed_count = round.failed_count;
    const BatchOutcome *results = round.results;
    // holds[j]: job j's row now holds its id.
    bool *holds = (bool *) palloc0(sizeof(bool) * std::max(job_count, 1));
    for (int start = 0; start < entry_count;) {
        int end = start;
        while (end < entry_count && entries[end].table == entries[start].table)
            ++end;
        const Mapping &mapping = mappings[start];
        char **keys = (char **) palloc(sizeof(char *) * (end - start));
        char **ids = (char **) palloc(sizeof(char *) * (end - start));
        const BatchJob **stored_jobs = (const BatchJob **) palloc(sizeof(void *) * (end - start));
        const BatchOutcome **stored_outcomes =
            (const BatchOutcome **) palloc(sizeof(void *) * (end - start));
        bool *stored_holds = (bool *) palloc0(sizeof(bool) * (end - start));
        int stored = 0;
        int last_job = -1;
        for (int i = start; i < end; ++i) {
            int job = entries[i].job;
            if (job < 0 || results[job].fate != BatchFate::Stored || job == last_job)
                continue;
            keys[stored] = const_cast<char *>(jobs[job].user_id);
            ids[stored] = results[job].id;
            stored_jobs[stored] = &jobs[job];
            stored_outcomes[stored++] = &results[job];
            last_job = job;
        }
        char *failure = nullptr;
        if (stored > 0) {
            if (ErrorData *error =
                    store_ids(store_target(mapping), PointerGetDatum(text_array(keys, stored)),
                              TEXTARRAYOID, ids, stored, stored_holds))
                failure = describe(error);
            record_stored_drops(entries[start].table, stored_jobs, stored_outcomes, stored_holds,
                                stored);
            for (int k = 0; k < stored; ++k) {
                if (!stored_holds[k])
                    continue;
                holds[stored_jobs[k] - jobs] = true;
                ++result.registered;
                count_dropped(leftovers, *stored_jobs[k], *stored_outcomes[k]);
                if (mapping.notify)
                    notify_stored(mapping, keys[k], ids[k]);
            }
        }
        for (int i = start; i < end; ++i) {
            int job = entries[i].job;
            if (job < 0)
                continue;
            const BatchOutcome &outcome = results[job];
            if (outcome.fate == BatchFate::None || outcome.fate == BatchFate::InEngine)
                elog(ERROR, "dfend request engine left a job unanswered");
            if (outcome.fate != BatchFate::Stored)
                failed[failed_count++] =
                    Settlement{entries[i].entry_id, outcome.fate,          outcome.error,
                               outcome.retry_after_ms, outcome.sqlstate, mapping.fail_commit};
            else if (holds[job])
                done[done_count++] = entries[i].entry_id;
            else
                failed[failed_count++] = Settlement{
                    entries[i].entry_id, BatchFate::Transient,
                    failure ? psprintf("could not store the DFend id: %s", failure)
                            : pstrdup("could not store the DFend id: the row was locked by "
                                      "another session or changed meanwhile"),
                    0, ERRCODE_LOCK_NOT_AVAILABLE, mapping.fail_commit};
        }
        start = end;
    }
}

// Registers claimed entries: reads their rows, sends the requests, stores
// the ids and settles the entries. `budget_ms` >= 0 bounds the requests;
// `leftovers`, when given, means this is a COMMIT registering its own rows:
// a failure of a table attached with on_error 'error' fails the COMMIT, and
// other failures are counted for a WARNING.
void drain(const char *schema, const OutboxSettings &settings, Entry *entries, int entry_count,
           long budget_ms, Leftovers *leftovers, OutboxResult *result_out)
{
    OutboxResult &result = *result_out;
    std::sort(entries, entries + entry_count, [](const Entry &a, const Entry &b) {
        return a.table != b.table ? a.table < b.table : strcmp(a.user_id, b.user_id) < 0;
    });

    Round round = {};
    round.entries = entries;
    round.entry_count = entry_count;
    round.mappings = (Mapping *) palloc0(sizeof(Mapping) * entry_count);
    round.jobs = (BatchJob *) palloc0(sizeof(BatchJob) * std::max(entry_count, 1));
    round.done = (int64 *) palloc(sizeof(int64) * entry_count);
    round.failed = (Settlement *) palloc(sizeof(Settlement) * entry_count);
    round.missing = (int64 *) palloc(sizeof(int64) * entry_count);
    read_jobs(schema, round, leftovers != nullptr);
    result.settled = round.done_count;
    const int job_count = round.job_count;
    BatchJob *jobs = round.jobs;

    BatchOutcome *results = round.results =
        (BatchOutcome *) palloc0(sizeof(BatchOutcome) * std::max(job_count, 1));
    if (job_count > 0)
        run_requests(jobs, job_count, results, settings, budget_ms);
    // The worker and dfend_process_queue feed the breaker; while it finds
    // DFend unreachable, the failures it counted were not the entries'.
    // A COMMIT (leftovers) neither feeds nor consults it.
    if (!leftovers && job_count > 0) {
        for (int j = 0; j < job_count; ++j)
            pause_hear(results[j].event, results[j].error);
        for (int j = 0; j < job_count; ++j)
            if ((results[j].fate == BatchFate::Transient ||
                 results[j].fate == BatchFate::Systemic) &&
                held_by_breaker(pause_mode(), results[j].event))
                results[j].fate = BatchFate::Held;
    }

    store_results(round, leftovers, result);

    if (leftovers)
        for (int i = 0; i < round.failed_count; ++i) {
            const Settlement &failure = round.failed[i];
            // The COMMIT fails, so nothing of this transaction is stored.
            if (failure.fail_commit)
                ereport(ERROR, (errcode(failure.sqlstate),
                                errmsg("could not store a DFend id for a new row before COMMIT"),
                                errdetail("The error was: %s", as_sentence(failure.error)),
                                errhint("The table is attached with on_error => 'error'; "
                                        "attach it with on_error => 'queue' to leave such "
                                        "rows to the background worker.")));
            bool dead = failure.fate == BatchFate::RowFault;
            int &count = dead ? leftovers->dead : leftovers->queued;
            char *&first = dead ? leftovers->first_dead_error : leftovers->first_queued_error;
            int &first_sqlstate =
                dead ? leftovers->first_dead_sqlstate : leftovers->first_queued_sqlstate;
            if (count++ == 0) {
                first = failure.error;
                first_sqlstate = failure.sqlstate;
            }
        }
    DeadLetterPolicy policy;
    policy.max_attempts = settings.max_attempts;
    policy.dead_letter_after_s = dead_letter_after_s();
    settle(schema, policy, round.done, round.done_count, round.failed, round.failed_count);
    settle_missing(schema, round.missing, round.missing_count);
    result.failed = round.failed_count;
}

} // namespace

OutboxResult process_outbox(int max_rows, bool probe_now)
{
    commit_deadline = 0; // a COMMIT that failed mid-way may have left it set
    OutboxResult result = {};
    result.next_due_ms = -1;
    result.paused_ms = -1;
    const char *schema = outbox_schema();
    if (!schema)
        return result;
    OutboxSettings settings = current_outbox_settings();
    log_systemic_failures(); // what the last rounds' requests showed
    log_pause_changes();
    PauseGate gate = pause_gate(probe_now);
    if (!gate.allowed) {
        result.paused_ms = gate.wait_ms;
        return result;
    }
    if (gate.probe) {
        max_rows = 1;
        report_worker_state(
            psprintf("probing: DFend unreachable, breaker half-open (%llux)",
                     (unsigned long long) pause_opened()));
    }

    SPI_connect();
    int nest_level = internal_sql_begin();
    char *claim = psprintf(
        "SELECT entry_id, table_name::pg_catalog.oid, user_id, reason FROM %s.dfend_outbox "
        "WHERE state OPERATOR(pg_catalog.=) 'pending' "
        "AND next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() "
        "ORDER BY next_attempt_at, entry_id LIMIT %d FOR UPDATE SKIP LOCKED",
        schema, max_rows);
    if (SPI_execute(claim, false, 0) != SPI_OK_SELECT)
        elog(ERROR, "could not claim dfend outbox entries");
    int entry_count = (int) SPI_processed;
    if (entry_count == 0) {
        char *next = psprintf("SELECT (extract(epoch FROM pg_catalog.min(next_attempt_at) "
                              "OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp()) "
                              "OPERATOR(pg_catalog.*) 1000)::pg_catalog.float8 "
                              "FROM %s.dfend_outbox WHERE state OPERATOR(pg_catalog.=) 'pending'",
                              schema);
        if (SPI_execute(next, true, 1) == SPI_OK_SELECT && SPI_processed == 1) {
            bool isnull = true;
            Datum value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            if (!isnull)
                result.next_due_ms = std::max(0.0, DatumGetFloat8(value));
        }
        internal_sql_end(nest_level);
        SPI_finish();
        pause_round_done();
        return result;
    }
    result.claimed = entry_count;
    drain(schema, settings, claimed_entries(), entry_count, -1, nullptr, &result);
    internal_sql_end(nest_level);
    SPI_finish();
    pause_round_done();
    log_pause_changes();
    return result;
}

int64_t expand_bulk_entries(int max_keys)
{
    const char *schema = outbox_schema();
    // Not there before ALTER EXTENSION dfend UPDATE to 0.5.0.
    if (!schema || !OidIsValid(get_relname_relid("dfend_outbox_bulk", outbox_namespace())))
        return 0;
    SPI_connect();
    int nest_level = internal_sql_begin();
    // Entry ids follow the bulk rows' order and the ids' order in each.
    char *expand = psprintf(
        "WITH taken AS (DELETE FROM %s.dfend_outbox_bulk AS b "
        "WHERE b.bulk_id OPERATOR(pg_catalog.=) ANY (SELECT c.bulk_id FROM "
        "%s.dfend_outbox_bulk AS c ORDER BY c.bulk_id LIMIT $1 FOR UPDATE SKIP LOCKED) "
        "RETURNING b.bulk_id, b.table_name, b.user_ids, b.reason, b.enqueued_at) "
        "INSERT INTO %s.dfend_outbox (table_name, user_id, reason, next_attempt_at, enqueued_at) "
        "SELECT t.table_name, u.user_id, t.reason, t.enqueued_at, t.enqueued_at "
        "FROM taken AS t, pg_catalog.unnest(t.user_ids) WITH ORDINALITY AS u(user_id, n) "
        "ORDER BY t.bulk_id, u.n",
        schema, schema, schema);
    Oid types[1] = {INT4OID};
    Datum args[1] = {Int32GetDatum(std::max(1, max_keys / kBulkKeys))};
    if (SPI_execute_with_args(expand, 1, types, args, nullptr, false, 0) != SPI_OK_INSERT)
        elog(ERROR, "could not expand dfend outbox bulk entries");
    int64 made = (int64) SPI_processed;
    internal_sql_end(nest_level);
    SPI_finish();
    return made;
}

bool bulk_entries_waiting()
{
    if (!outbox_schema())
        return false;
    Oid bulk = get_relname_relid("dfend_outbox_bulk", outbox_namespace());
    if (!OidIsValid(bulk))
        return false;
    Relation relation = table_open(bulk, AccessShareLock);
    TableScanDesc scan = table_beginscan(relation, GetActiveSnapshot(), 0, nullptr);
    TupleTableSlot *slot = table_slot_create(relation, nullptr);
    bool found = table_scan_getnextslot(scan, ForwardScanDirection, slot);
    ExecDropSingleTupleTableSlot(slot);
    table_endscan(scan);
    table_close(relation, AccessShareLock);
    return found;
}

void register_own_entries(const int64_t *entry_ids, int count, long budget_ms)
{
    const char *schema = outbox_schema();
    if (!schema || count == 0)
        return;
    OutboxSettings settings = current_outbox_settings();
    TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), budget_ms);
    commit_deadline = deadline;
    // As the extension's owner, as the worker would: the committing role
    // may not read the outbox. Users' tables are still read and written as
    // their owners (run_as_owner).
    Leftovers leftovers = {};
    as_extension_owner(cached_owner, [&] {
        SPI_connect();
        int nest_level = internal_sql_begin();
        // The transaction's own entries, still pending (a rolled-back savepoint
        // took its entries with it; dfend_process_queue may have done some).
        char *claim = psprintf(
            "SELECT entry_id, table_name::pg_catalog.oid, user_id, reason FROM %s.dfend_outbox "
            "WHERE entry_id OPERATOR(pg_catalog.=) ANY($1) "
            "AND state OPERATOR(pg_catalog.=) 'pending' ORDER BY entry_id FOR UPDATE",
            schema);
        int batch = std::max(1, settings.batch_size);
        for (int start = 0; start < count; start += batch) {
            long remaining_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
            if (remaining_ms <= 0) {
                // The rest stay pending, due now: the worker's.
                Datum args[1] = {int8_array(const_cast<int64 *>(entry_ids + start), count - start)};
                Oid types[1] = {INT8ARRAYOID};
                char *left = psprintf("SELECT pg_catalog.count(*)::pg_catalog.int4 FROM "
                                      "%s.dfend_outbox WHERE entry_id OPERATOR(pg_catalog.=) "
                                      "ANY($1) AND state OPERATOR(pg_catalog.=) 'pending'",
                                      schema);
                if (SPI_execute_with_args(left, 1, types, args, nullptr, false, 1) !=
                        SPI_OK_SELECT ||
                    SPI_processed != 1)
                    elog(ERROR, "could not count dfend outbox entries");
                bool isnull = true;
                int unsent = DatumGetInt32(
                    SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
                if (unsent > 0 && leftovers.queued == 0) {
                    leftovers.first_queued_error = psprintf(
                        "dfend.sync_timeout (%ld ms) ran out before the request was sent",
                        budget_ms);
                    leftovers.first_queued_sqlstate = sqlstate_for(ErrorKind::Timeout, 0);
                }
                leftovers.queued += unsent;
                break;
            }
            int size = std::min(batch, count - start);
            Datum args[1] = {int8_array(const_cast<int64 *>(entry_ids + start), size)};
            Oid types[1] = {INT8ARRAYOID};
            if (SPI_execute_with_args(claim, 1, types, args, nullptr, false, 0) != SPI_OK_SELECT)
                elog(ERROR, "could not claim dfend outbox entries");
            int entry_count = (int) SPI_processed;
            if (entry_count == 0)
                continue;
            OutboxResult result = {};
            drain(schema, settings, claimed_entries(), entry_count, remaining_ms, &leftovers,
                  &result);
        }
        internal_sql_end(nest_level);
        SPI_finish();
    });
    commit_deadline = 0;
    if (leftovers.queued > 0)
        ereport(WARNING,
                (errcode(leftovers.first_queued_sqlstate),
                 errmsg_plural("%d new row did not get its DFend id before COMMIT",
                               "%d new rows did not get their DFend id before COMMIT",
                               leftovers.queued, leftovers.queued),
                 errdetail("Their outbox entries stay pending, and the background worker "
                           "completes them later. The first error was: %s",
                           as_sentence(leftovers.first_queued_error))));
    if (leftovers.dead > 0)
        ereport(WARNING,
                (errcode(leftovers.first_dead_sqlstate),
                 errmsg_plural("%d new row was not registered with DFend: its data was refused",
                               "%d new rows were not registered with DFend: their data was "
                               "refused",
                               leftovers.dead, leftovers.dead),
                 errdetail("The first error was: %s", as_sentence(leftovers.first_dead_error)),
                 errhint("See dfend_dead_letters: correct the data, then call "
                         "dfend_retry_dead().")));
    if (leftovers.dropped > 0) {
        // "email", "email and phone", "email, phone and metadata" (one row);
        // "or" for several, which may each lack another.
        const char *fields[3];
        int field_count = 0;
        for (int f = 0; f < 3; ++f)
            if (leftovers.dropped_fields[f])
                fields[field_count++] = kDroppableFields[f];
        const char *last_join = leftovers.dropped == 1 ? " and " : " or ";
        StringInfoData list;
        initStringInfo(&list);
        for (int f = 0; f < field_count; ++f) {
            if (f > 0)
                appendStringInfoString(&list, f == field_count - 1 ? last_join : ", ");
            appendStringInfoString(&list, fields[f]);
        }
        ereport(WARNING,
                (errmsg_plural("%d new row was registered with DFend without its %s",
                               "%d new rows were registered with DFend without their %s",
                               leftovers.dropped, leftovers.dropped, list.data),
                 errdetail("A value that fails validation is left out (invalid_fields => "
                           "'drop'), so the user still gets a DFend id. The first was %s",
                           as_sentence(leftovers.first_dropped)),
                 errhint("See dfend_dropped_field. An UPDATE that corrects the value registers "
                         "the user again, with merge.")));
    }
}


} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

PG_FUNCTION_INFO_V1(dfend_process_queue);
Datum dfend_process_queue(PG_FUNCTION_ARGS)
{
    int max_rows = PG_ARGISNULL(0) ? 1000 : PG_GETARG_INT32(0);
    if (max_rows < 1)
        ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                        errmsg("max_rows must be at least 1")));
    int64 processed = 0;
    // Batches of the worker's size, so memory stays bounded.
    int batch = std::max(1, current_outbox_settings().batch_size);
    bool first = true;
    while (processed < max_rows) {
        // Bulk rows first, in the caller's transaction.
        expand_bulk_entries(batch);
        pgstat_report_wait_start(PG_WAIT_EXTENSION);
        // An explicit call may probe at once; the breaker paces the rest.
        OutboxResult round = process_outbox(std::min<int64>(batch, max_rows - processed), first);
        first = false;
        pgstat_report_wait_end();
        if (round.claimed == 0)
            break;
        processed += round.claimed;
    }
    PG_RETURN_INT64(processed);
}

} // extern "C"
