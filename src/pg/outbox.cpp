// Draining the outbox: claim due entries, read the current rows, register
// them with many requests in flight, store the ids and remove the entries in
// the same transaction. Used by the background worker and by
// dfend_process_queue(). PostgreSQL-style except inside cpp_call.
#include "outbox.hpp"

#include "../core/engine.hpp"
#include "backend.hpp"
#include "border.hpp"
#include "settings.hpp"

#include <algorithm>
#include <cmath>

#include "postgres.hpp"

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

// One request for one user of one table (several entries may share it).
struct JobInput {
    Oid table;
    char *user_id; // as stored in the outbox: the row's key as text
    char *email;
    char *phone;
    char *metadata;
    bool merge;
};

struct JobResult {
    bool ok;
    char *id;
    bool permanent;
    char *error; // message and detail
    double retry_in_ms;
};

struct Mapping {
    char *table_sql; // schema-qualified, quoted
    char *user_id_column;
    char *id_column;
    char *email_column;
    char *phone_column;
    char *metadata_column;
    char *user_id_type; // format_type of the user id column
    bool merge;
};

char *cached_schema = nullptr;
Oid cached_namespace = InvalidOid;

char *quoted_or_null(const char *column, const char *cast)
{
    if (!column)
        return psprintf("NULL::%s", cast);
    return psprintf("t.%s::%s", quote_identifier(column), cast);
}

char *text_or_null(HeapTuple tuple, TupleDesc desc, int column)
{
    return SPI_getvalue(tuple, desc, column);
}

// Reads the mapping of an attached table; false when it is not attached.
bool read_mapping(Oid table, Mapping *mapping)
{
    Datum args[1] = {ObjectIdGetDatum(table)};
    Oid types[1] = {OIDOID};
    char *query = psprintf(
        "SELECT a.user_id_column, a.id_column, a.email_column, a.phone_column, "
        "a.metadata_column, a.merge, format_type(c.atttypid, c.atttypmod) "
        "FROM %s.dfend_attachment a JOIN pg_catalog.pg_attribute c "
        "ON c.attrelid = a.table_name AND c.attname = a.user_id_column AND NOT c.attisdropped "
        "WHERE a.table_name = $1",
        outbox_schema());
    if (SPI_execute_with_args(query, 1, types, args, nullptr, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "could not read the dfend attachment of table %u", table);
    if (SPI_processed == 0)
        return false;
    HeapTuple row = SPI_tuptable->vals[0];
    TupleDesc desc = SPI_tuptable->tupdesc;
    mapping->user_id_column = text_or_null(row, desc, 1);
    mapping->id_column = text_or_null(row, desc, 2);
    mapping->email_column = text_or_null(row, desc, 3);
    mapping->phone_column = text_or_null(row, desc, 4);
    mapping->metadata_column = text_or_null(row, desc, 5);
    bool isnull = false;
    mapping->merge = DatumGetBool(SPI_getbinval(row, desc, 6, &isnull));
    mapping->user_id_type = text_or_null(row, desc, 7);
    mapping->table_sql = quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)),
                                                    get_rel_name(table));
    return true;
}

ArrayType *text_array(char **values, int count)
{
    Datum *datums = (Datum *) palloc(sizeof(Datum) * std::max(count, 1));
    for (int i = 0; i < count; ++i)
        datums[i] = CStringGetTextDatum(values[i]);
    return construct_array(datums, count, TEXTOID, -1, false, TYPALIGN_INT);
}

// Runs the requests: the only part that leaves PostgreSQL.
void run_requests(JobInput *inputs, int count, JobResult *results, const OutboxSettings &outbox)
{
    cpp_call([&] {
        BackendContext &backend = backend_context();
        ClientSettings client = current_client_settings(backend.key_files);
        EngineSettings engine;
        engine.concurrency = outbox.concurrency;
        engine.max_rate = outbox.max_rate;
        RequestEngine &requests = backend.engine_for(client, engine);
        for (int i = 0; i < count; ++i) {
            Job job;
            job.tag = static_cast<std::uint64_t>(i);
            job.request.user_id = inputs[i].user_id;
            if (inputs[i].email)
                job.request.email = inputs[i].email;
            if (inputs[i].phone)
                job.request.phone = inputs[i].phone;
            if (inputs[i].metadata)
                job.request.metadata_json = inputs[i].metadata;
            job.request.merge = inputs[i].merge;
            requests.submit(std::move(job));
        }
        std::vector<JobOutcome> outcomes = requests.run(&interrupt_pending);
        // Entry-level backoff, for outages longer than one batch's retries.
        RetryPolicy later{0, Millis(1000), Millis(300000)};
        std::mt19937_64 rng(std::random_device{}());
        for (JobOutcome &outcome : outcomes) {
            JobResult &result = results[outcome.tag];
            result.ok = outcome.result.has_value();
            if (result.ok) {
                std::string id = outcome.result->id;
                result.id = pg_call([&] { return pstrdup(id.c_str()); });
                continue;
            }
            const Error &error = *outcome.error;
            std::string text = error.message();
            if (!error.detail().empty())
                text += ": " + error.detail();
            result.error = pg_call([&] { return pstrdup(text.c_str()); });
            result.permanent = outcome.permanent;
            result.retry_in_ms = static_cast<double>(
                backoff_delay(later, 0, error.retry_after_seconds(), rng).count());
        }
    });
}

// Reads the current rows behind a table's entries. Runs in a subtransaction
// so that a broken mapping (a dropped column, say) dead-letters those
// entries instead of failing the whole batch.
bool read_rows(Oid table, const Mapping &mapping, char **user_ids, int count, SPITupleTable **rows,
               char **error_text)
{
    MemoryContext caller_context = CurrentMemoryContext;
    ResourceOwner caller_owner = CurrentResourceOwner;
    volatile bool ok = true;
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(caller_context);
    PG_TRY();
    {
        char *query = psprintf(
            "SELECT t.%s::text, %s, %s, %s, t.%s::text FROM %s t WHERE t.%s = ANY($1::text[]::%s[])",
            quote_identifier(mapping.user_id_column),
            quoted_or_null(mapping.email_column, "text"),
            quoted_or_null(mapping.phone_column, "text"),
            quoted_or_null(mapping.metadata_column, "text"),
            quote_identifier(mapping.id_column), mapping.table_sql,
            quote_identifier(mapping.user_id_column), mapping.user_id_type);
        Datum args[1] = {PointerGetDatum(text_array(user_ids, count))};
        Oid types[1] = {TEXTARRAYOID};
        if (SPI_execute_with_args(query, 1, types, args, nullptr, false, 0) != SPI_OK_SELECT)
            elog(ERROR, "could not read rows of %s", mapping.table_sql);
        *rows = SPI_tuptable;
        ReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
    }
    PG_CATCH();
    {
        MemoryContextSwitchTo(caller_context);
        ErrorData *error = CopyErrorData();
        FlushErrorState();
        RollbackAndReleaseCurrentSubTransaction();
        MemoryContextSwitchTo(caller_context);
        CurrentResourceOwner = caller_owner;
        *error_text = psprintf("could not read the row: %s", error->message);
        ok = false;
    }
    PG_END_TRY();
    return ok;
}

void execute_or_fail(const char *query, int nargs, Oid *types, Datum *args, int expected)
{
    int result = SPI_execute_with_args(query, nargs, types, args, nullptr, false, 0);
    if (result != expected)
        elog(ERROR, "dfend outbox statement failed: %s", SPI_result_code_string(result));
}

} // namespace

unsigned int outbox_namespace()
{
    return outbox_schema() ? cached_namespace : InvalidOid;
}

const char *outbox_schema()
{
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
        systable_endscan(scan);
        table_close(catalog, AccessShareLock);
        if (!OidIsValid(schema))
            return nullptr;
        char *name = get_namespace_name(schema);
        cached_namespace = schema;
        cached_schema = MemoryContextStrdup(TopMemoryContext, quote_identifier(name));
    }
    return cached_schema;
}

OutboxResult process_outbox(int max_rows)
{
    OutboxResult result = {};
    result.next_due_ms = -1;
    const char *schema = outbox_schema();
    if (!schema)
        return result;
    OutboxSettings settings = current_outbox_settings();

    SPI_connect();
    char *claim = psprintf(
        "SELECT entry_id, table_name::oid, user_id, reason FROM %s.dfend_outbox "
        "WHERE state = 'pending' AND next_attempt_at <= now() "
        "ORDER BY next_attempt_at, entry_id LIMIT %d FOR UPDATE SKIP LOCKED",
        schema, max_rows);
    if (SPI_execute(claim, false, 0) != SPI_OK_SELECT)
        elog(ERROR, "could not claim dfend outbox entries");
    int entry_count = (int) SPI_processed;
    if (entry_count == 0) {
        char *next = psprintf("SELECT (extract(epoch FROM min(next_attempt_at) - now()) * 1000)::float8 "
                              "FROM %s.dfend_outbox WHERE state = 'pending'",
                              schema);
        if (SPI_execute(next, true, 1) == SPI_OK_SELECT && SPI_processed == 1) {
            bool isnull = true;
            Datum value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
            if (!isnull)
                result.next_due_ms = std::max(0.0, DatumGetFloat8(value));
        }
        SPI_finish();
        return result;
    }
    Entry *entries = (Entry *) palloc0(sizeof(Entry) * entry_count);
    for (int i = 0; i < entry_count; ++i) {
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
    result.claimed = entry_count;
    std::sort(entries, entries + entry_count, [](const Entry &a, const Entry &b) {
        return a.table != b.table ? a.table < b.table : strcmp(a.user_id, b.user_id) < 0;
    });

    JobInput *jobs = (JobInput *) palloc0(sizeof(JobInput) * entry_count);
    int job_count = 0;
    // Entries settled without a request: the row is gone, already has its
    // id, or its table was detached. And those whose row could not be read.
    int64 *settled = (int64 *) palloc(sizeof(int64) * entry_count);
    int settled_count = 0;
    int64 *broken = (int64 *) palloc(sizeof(int64) * entry_count);
    char **broken_errors = (char **) palloc(sizeof(char *) * entry_count);
    int broken_count = 0;
    Mapping *mappings = (Mapping *) palloc0(sizeof(Mapping) * entry_count);

    for (int start = 0; start < entry_count;) {
        int end = start;
        while (end < entry_count && entries[end].table == entries[start].table)
            ++end;
        Oid table = entries[start].table;
        Mapping &mapping = mappings[start];
        if (!read_mapping(table, &mapping)) {
            for (int i = start; i < end; ++i)
                settled[settled_count++] = entries[i].entry_id;
            start = end;
            continue;
        }
        // Distinct user ids of this table.
        char **user_ids = (char **) palloc(sizeof(char *) * (end - start));
        int user_count = 0;
        for (int i = start; i < end; ++i)
            if (user_count == 0 || strcmp(user_ids[user_count - 1], entries[i].user_id) != 0)
                user_ids[user_count++] = entries[i].user_id;
        SPITupleTable *rows = nullptr;
        char *error_text = nullptr;
        if (!read_rows(table, mapping, user_ids, user_count, &rows, &error_text)) {
            for (int i = start; i < end; ++i) {
                broken[broken_count] = entries[i].entry_id;
                broken_errors[broken_count++] = error_text;
            }
            start = end;
            continue;
        }
        for (int i = start; i < end;) {
            int same_end = i;
            bool any_update = false, all_inserts = true;
            while (same_end < end && strcmp(entries[same_end].user_id, entries[i].user_id) == 0) {
                any_update |= entries[same_end].is_update;
                all_inserts &= entries[same_end].is_insert;
                ++same_end;
            }
            HeapTuple found = nullptr;
            for (uint64 r = 0; r < rows->numvals && !found; ++r) {
                char *key = SPI_getvalue(rows->vals[r], rows->tupdesc, 1);
                if (key && strcmp(key, entries[i].user_id) == 0)
                    found = rows->vals[r];
            }
            bool has_id = found && SPI_getvalue(found, rows->tupdesc, 5) != nullptr;
            if (!found || (has_id && all_inserts)) {
                for (int k = i; k < same_end; ++k)
                    settled[settled_count++] = entries[k].entry_id;
            } else {
                JobInput &job = jobs[job_count];
                job.table = table;
                job.user_id = entries[i].user_id;
                job.email = SPI_getvalue(found, rows->tupdesc, 2);
                job.phone = SPI_getvalue(found, rows->tupdesc, 3);
                job.metadata = SPI_getvalue(found, rows->tupdesc, 4);
                job.merge = mapping.merge || any_update;
                for (int k = i; k < same_end; ++k)
                    entries[k].job = job_count;
                ++job_count;
            }
            i = same_end;
        }
        start = end;
    }

    JobResult *results = (JobResult *) palloc0(sizeof(JobResult) * std::max(job_count, 1));
    if (job_count > 0)
        run_requests(jobs, job_count, results, settings);

    // Store the ids, one UPDATE per table.
    for (int start = 0; start < entry_count;) {
        int end = start;
        while (end < entry_count && entries[end].table == entries[start].table)
            ++end;
        const Mapping &mapping = mappings[start];
        char **keys = (char **) palloc(sizeof(char *) * (end - start));
        char **ids = (char **) palloc(sizeof(char *) * (end - start));
        int stored = 0;
        int last_job = -1;
        for (int i = start; i < end; ++i) {
            int job = entries[i].job;
            if (job < 0 || !results[job].ok || job == last_job)
                continue;
            keys[stored] = jobs[job].user_id;
            ids[stored++] = results[job].id;
            last_job = job;
        }
        if (stored > 0) {
            char *update = psprintf(
                "UPDATE %s t SET %s = v.id FROM unnest($1::text[], $2::text[]) AS v(key, id) "
                "WHERE t.%s = v.key::%s AND t.%s IS DISTINCT FROM v.id",
                mapping.table_sql, quote_identifier(mapping.id_column),
                quote_identifier(mapping.user_id_column), mapping.user_id_type,
                quote_identifier(mapping.id_column));
            Datum args[2] = {PointerGetDatum(text_array(keys, stored)),
                             PointerGetDatum(text_array(ids, stored))};
            Oid types[2] = {TEXTARRAYOID, TEXTARRAYOID};
            execute_or_fail(update, 2, types, args, SPI_OK_UPDATE);
            result.registered += stored;
        }
        start = end;
    }

    // Remove what is done; record what failed.
    int64 *done = (int64 *) palloc(sizeof(int64) * entry_count);
    int done_count = 0;
    int64 *failed = (int64 *) palloc(sizeof(int64) * entry_count);
    char **failed_errors = (char **) palloc(sizeof(char *) * entry_count);
    bool *failed_permanent = (bool *) palloc(sizeof(bool) * entry_count);
    double *failed_delay = (double *) palloc(sizeof(double) * entry_count);
    int failed_count = 0;
    for (int i = 0; i < settled_count; ++i)
        done[done_count++] = settled[i];
    for (int i = 0; i < entry_count; ++i) {
        int job = entries[i].job;
        if (job < 0)
            continue;
        if (results[job].ok) {
            done[done_count++] = entries[i].entry_id;
        } else {
            failed[failed_count] = entries[i].entry_id;
            failed_errors[failed_count] = results[job].error;
            failed_permanent[failed_count] = results[job].permanent;
            failed_delay[failed_count++] = results[job].retry_in_ms;
        }
    }
    for (int i = 0; i < broken_count; ++i) {
        failed[failed_count] = broken[i];
        failed_errors[failed_count] = broken_errors[i];
        failed_permanent[failed_count] = true;
        failed_delay[failed_count++] = 0;
    }
    if (done_count > 0) {
        Datum *ids = (Datum *) palloc(sizeof(Datum) * done_count);
        for (int i = 0; i < done_count; ++i)
            ids[i] = Int64GetDatum(done[i]);
        Datum args[1] = {PointerGetDatum(
            construct_array(ids, done_count, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))};
        Oid types[1] = {INT8ARRAYOID};
        execute_or_fail(psprintf("DELETE FROM %s.dfend_outbox WHERE entry_id = ANY($1)", schema),
                        1, types, args, SPI_OK_DELETE);
    }
    if (failed_count > 0) {
        Datum *ids = (Datum *) palloc(sizeof(Datum) * failed_count);
        Datum *errors = (Datum *) palloc(sizeof(Datum) * failed_count);
        Datum *permanent = (Datum *) palloc(sizeof(Datum) * failed_count);
        Datum *delays = (Datum *) palloc(sizeof(Datum) * failed_count);
        for (int i = 0; i < failed_count; ++i) {
            ids[i] = Int64GetDatum(failed[i]);
            errors[i] = CStringGetTextDatum(failed_errors[i]);
            permanent[i] = BoolGetDatum(failed_permanent[i]);
            delays[i] = Float8GetDatum(failed_delay[i]);
        }
        Datum args[4] = {
            PointerGetDatum(construct_array(ids, failed_count, INT8OID, 8, FLOAT8PASSBYVAL,
                                            TYPALIGN_DOUBLE)),
            PointerGetDatum(construct_array(errors, failed_count, TEXTOID, -1, false, TYPALIGN_INT)),
            PointerGetDatum(construct_array(permanent, failed_count, BOOLOID, 1, true, TYPALIGN_CHAR)),
            PointerGetDatum(construct_array(delays, failed_count, FLOAT8OID, 8, FLOAT8PASSBYVAL,
                                            TYPALIGN_DOUBLE))};
        Oid types[4] = {INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID, FLOAT8ARRAYOID};
        char *update = psprintf(
            "UPDATE %s.dfend_outbox o SET attempts = o.attempts + 1, last_error = v.error, "
            "state = CASE WHEN v.permanent OR o.attempts + 1 >= %d THEN 'dead' ELSE 'pending' END, "
            "next_attempt_at = now() + v.delay_ms * interval '1 millisecond' "
            "FROM unnest($1::bigint[], $2::text[], $3::boolean[], $4::float8[]) "
            "AS v(entry_id, error, permanent, delay_ms) WHERE o.entry_id = v.entry_id",
            schema, settings.max_attempts);
        execute_or_fail(update, 4, types, args, SPI_OK_UPDATE);
    }
    result.failed = failed_count;
    result.settled = settled_count;
    SPI_finish();
    return result;
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
    while (processed < max_rows) {
        pgstat_report_wait_start(PG_WAIT_EXTENSION);
        OutboxResult round = process_outbox(std::min<int64>(batch, max_rows - processed));
        pgstat_report_wait_end();
        if (round.claimed == 0)
            break;
        processed += round.claimed;
    }
    PG_RETURN_INT64(processed);
}

} // extern "C"
