// The steps the outbox worker and the backfill share (see batch.hpp).
// PostgreSQL-style except where a function says C++-style (see border.hpp).
#include "batch.hpp"

#include "../core/codec.hpp"
#include "backend.hpp"
#include "border.hpp"
#include "settings.hpp"
#include "values.hpp"

#include <algorithm>
#include <string>

namespace dfend::pg {

char *prepare_job(HeapTuple row, TupleDesc desc, int first_contact_column, const char *user_id,
                  BatchJob *job)
{
    char *email = nullptr, *phone = nullptr, *metadata = nullptr;
    if (char *too_large =
            read_contact_fields(row, desc, first_contact_column, &email, &phone, &metadata))
        return too_large;
    job->user_id = user_id;
    job->user_id_utf8 = utf8_string(const_cast<char *>(user_id));
    job->email_utf8 = utf8_string(email);
    job->phone_utf8 = utf8_string(phone);
    job->metadata_utf8 = utf8_string(metadata);
    return nullptr;
}

RequestEngine &batch_engine(int concurrency, double max_rate, bool rate_limits_never_fail,
                            bool keep_carried)
{
    BackendContext &backend = backend_context();
    ClientSettings client = current_client_settings(backend.key_files);
    EngineSettings engine;
    engine.concurrency = concurrency;
    engine.max_rate = max_rate;
    engine.rate_limits_never_fail = rate_limits_never_fail;
    return backend.engine_for(client, engine, keep_carried);
}

namespace {


// C++-style: one engine outcome as the batch's, in the server encoding.
void convert_outcome(const JobOutcome &outcome, BatchOutcome &result)
{
    result.attempts = outcome.attempts;
    result.dropped_count = static_cast<int>(outcome.dropped.size());
    if (result.dropped_count > 0)
        result.dropped = pg_call(
            [&] { return (DroppedRow *) palloc0(sizeof(DroppedRow) * result.dropped_count); });
    for (int d = 0; d < result.dropped_count; ++d) {
        result.dropped[d].field = server_text(outcome.dropped[d].field);
        result.dropped[d].reason = server_text(outcome.dropped[d].reason);
    }
    const bool stored = outcome.result.has_value();
    result.event = breaker_event_for_outcome(
        stored, stored ? ErrorKind::Internal : outcome.error->kind(), outcome.attempts);
    if (stored) {
        result.fate = BatchFate::Stored;
        result.created = outcome.result->created;
        result.id = server_string(outcome.result->id); // printable ASCII, checked by the core
        return;
    }
    const Error &error = *outcome.error;
    result.error = server_text(error.text()); // valid in the server encoding
    result.sqlstate = sqlstate_for(error.kind(), error.http_status());
    long retry_after = error.retry_after_seconds();
    result.retry_after_ms =
        retry_after > 0 ? static_cast<int>(std::min(retry_after, 86400L) * 1000) : 0;
    if (outcome.deferred) {
        // Its retry is due in retry_in (at least the Retry-After).
        result.retry_after_ms =
            static_cast<int>(std::min<long long>(outcome.retry_in.count(), 86400LL * 1000));
        if (error.kind() == ErrorKind::RateLimited) {
            result.fate = BatchFate::Deferred; // DFend's rate limit, not a fault
            return;
        }
    }
    if (outcome.unfinished) {
        result.fate = BatchFate::Unfinished;
        return;
    }
    switch (classify_failure(error.kind(), outcome.permanent)) {
    case Fault::Row:
        result.fate = BatchFate::RowFault;
        break;
    case Fault::Transient:
        result.fate = BatchFate::Transient;
        break;
    case Fault::Systemic:
        result.fate = BatchFate::Systemic;
        break;
    }
}

} // namespace

SendSummary send_jobs(RequestEngine &engine, const BatchJob *jobs, int count,
                      const RunOptions &options,
                      const std::function<BatchOutcome &(std::uint64_t tag)> &outcome_for)
{
    for (int i = 0; i < count; ++i) {
        const BatchJob &input = jobs[i];
        Job job;
        job.tag = input.tag;
        job.request = make_register_request(input.user_id_utf8, input.email_utf8,
                                            input.phone_utf8, input.metadata_utf8, input.merge);
        job.drop_invalid_fields = input.drop_invalid;
        engine.submit(std::move(job));
        outcome_for(input.tag).fate = BatchFate::InEngine;
    }
    SendSummary summary;
    for (const JobOutcome &outcome : engine.run(&interrupt_pending, options)) {
        BatchOutcome &result = outcome_for(outcome.tag);
        convert_outcome(outcome, result);
        if (result.fate == BatchFate::Stored)
            ++summary.stored;
        if (result.fate == BatchFate::Stored || result.fate == BatchFate::RowFault ||
            result.fate == BatchFate::Deferred)
            continue;
        ++summary.failed;
        if (!summary.first_failure)
            summary.first_failure = *outcome.error;
        if (!summary.first_systemic && result.fate == BatchFate::Systemic)
            summary.first_systemic = *outcome.error;
    }
    return summary;
}

ErrorData *store_ids(const StoreTarget &target, Datum keys, Oid keys_type, char **ids, int count,
                     bool *holds)
{
    for (int i = 0; i < count; ++i)
        holds[i] = false;
    const char *keys_and_ids =
        "ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2::pg_catalog.text[])) "
        "WITH ORDINALITY AS v(key, id, n)";
    char *query =
        target.mode == StoreMode::FillMissing
            ? psprintf("UPDATE %s AS t SET %s = v.id FROM %s WHERE t.%s %s v.key%s "
                       "AND t.%s IS NULL RETURNING v.n",
                       target.table_sql, target.id_sql, keys_and_ids, target.key_sql,
                       target.key_equals, target.key_cast, target.id_sql)
            // Locks the rows first, skipping those another session holds,
            // then writes those whose id differs.
            : psprintf("WITH locked AS ("
                       " SELECT v.n, v.id, t.tableoid AS rel, t.ctid AS tid,"
                       " t.%s::pg_catalog.text IS DISTINCT FROM v.id AS changes"
                       " FROM %s JOIN %s AS t ON t.%s %s v.key%s FOR UPDATE OF t SKIP LOCKED),"
                       " updated AS (UPDATE %s AS t SET %s = l.id FROM locked AS l"
                       " WHERE l.changes AND t.tableoid OPERATOR(pg_catalog.=) l.rel"
                       " AND t.ctid OPERATOR(pg_catalog.=) l.tid RETURNING l.n)"
                       " SELECT l.n FROM locked AS l WHERE NOT l.changes"
                       " UNION ALL SELECT u.n FROM updated AS u",
                       target.id_sql, keys_and_ids, target.table_sql, target.key_sql,
                       target.key_equals, target.key_cast, target.table_sql, target.id_sql);
    const int expected =
        target.mode == StoreMode::FillMissing ? SPI_OK_UPDATE_RETURNING : SPI_OK_SELECT;
    Datum args[2] = {keys, PointerGetDatum(text_array(ids, count))};
    Oid types[2] = {keys_type, TEXTARRAYOID};
    return run_as_owner(target.owner, target.limits, [&] {
        int code = SPI_execute_with_args(query, 2, types, args, nullptr, false, 0);
        if (code != expected)
            elog(ERROR, "could not store DFend ids in %s: %s", target.table_sql,
                 SPI_result_code_string(code));
        for (uint64 r = 0; r < SPI_processed; ++r) {
            bool isnull = true;
            int64 n = DatumGetInt64(
                SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));
            if (!isnull && n >= 1 && n <= count)
                holds[n - 1] = true;
        }
    });
}

void record_stored_drops(Oid table, const BatchJob *const *jobs,
                         const BatchOutcome *const *outcomes, const bool *holds, int count)
{
    const char **registered = (const char **) palloc(sizeof(char *) * std::max(count, 1));
    int registered_count = 0;
    int capacity = 0;
    for (int i = 0; i < count; ++i)
        capacity += outcomes[i]->dropped_count;
    DroppedRow *dropped = (DroppedRow *) palloc(sizeof(DroppedRow) * std::max(capacity, 1));
    int dropped_count = 0;
    for (int i = 0; i < count; ++i) {
        if (!holds[i] || outcomes[i]->fate != BatchFate::Stored)
            continue;
        registered[registered_count++] = jobs[i]->user_id;
        for (int d = 0; d < outcomes[i]->dropped_count; ++d) {
            dropped[dropped_count] = outcomes[i]->dropped[d];
            dropped[dropped_count++].user_id = jobs[i]->user_id;
        }
    }
    record_dropped_fields(table, registered, registered_count, dropped, dropped_count);
}

} // namespace dfend::pg
