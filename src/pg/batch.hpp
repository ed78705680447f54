// The batch pipeline of the outbox worker (outbox.cpp: process_outbox, and a
// COMMIT registering its own rows) and of the backfill (backfill.cpp:
// dfend_backfill_batch). Each selects its rows its own way (an outbox's
// entries, a table's next keys; both read as the table's owner) and settles
// its own way (outbox entries, dead letters); every step in between is here,
// once, so the two paths cannot drift apart again (issue 8 found the worker
// sending server-encoded bytes where the backfill sent UTF-8):
//   1. prepare_job: a row's fields, read bounded, as the UTF-8 DFend is sent;
//   2. batch_engine + send_jobs: the requests, each outcome classified by the
//      one failure policy (src/core/outbox_policy), its id and texts
//      converted to the server encoding;
//   3. store_ids: one statement as the table's owner;
//   4. record_stored_drops: the fields left out of stored registrations.
#pragma once

#include "../core/engine.hpp"
#include "../core/outbox_policy.hpp"
#include "dropped.hpp"
#include "owner.hpp"

#include <cstdint>
#include <functional>
#include <optional>

#include "postgres.hpp"

namespace dfend::pg {

// One registration to send: the row's values, palloc'd.
struct BatchJob {
    std::uint64_t tag;     // the caller's handle, returned with the outcome
    const char *user_id;   // the key as text in the server encoding (as the outbox holds it)
    char *user_id_utf8;    // what DFend is sent: UTF-8, whatever the server encoding
    char *email_utf8;
    char *phone_utf8;
    char *metadata_utf8;
    bool merge;
    bool drop_invalid;     // invalid_fields 'drop': register without a bad field
};

// PostgreSQL-style: fills `job` for the row: user_id (its key as text, which
// must outlive the job) and the email, phone and metadata of columns
// first_contact_column to first_contact_column + 2, read as bounded_text
// reads them, converted to UTF-8. Returns nullptr, or why the row cannot be
// sent (a field larger than kMaxFieldBytes); then the job is not filled.
char *prepare_job(HeapTuple row, TupleDesc desc, int first_contact_column, const char *user_id,
                  BatchJob *job);

// How a job ended. None: not sent (a zeroed outcome). InEngine: sent, not
// answered yet; it stays in the engine (RunOptions::carry_at_most).
// Deferred: DFend's rate limit asked it to wait (Retry-After) and the run
// did not wait for it. Unfinished: cut off by the run's deadline. Held (the
// outbox's only): a transient or systemic failure while the circuit breaker
// found DFend unreachable as a whole, which says nothing about the row.
enum class BatchFate { None = 0, InEngine, Stored, RowFault, Transient, Systemic, Unfinished,
                       Deferred, Held };

struct BatchOutcome {
    BatchFate fate;
    bool created;         // DFend created the identity (not an existing one)
    int attempts;         // HTTP requests sent for it
    char *id;             // Stored: DFend's id, in the server encoding
    char *error;          // otherwise: message and detail, valid in the server encoding
    int retry_after_ms;   // when its retry is due (Retry-After or the engine's backoff), or 0
    int sqlstate;         // what a COMMIT that must fail raises
    int dropped_count;    // fields left out (invalid_fields 'drop')
    DroppedRow *dropped;  // their fields and reasons (user_id unset: the job's)
    BreakerEvent event;   // what it tells the circuit breaker
};

// C++-style: the backend's engine for `concurrency` requests in flight under
// the server's current URL and key (see BackendContext::engine_for).
// rate_limits_never_fail: a 429 slows the run but never fails a job (a
// backfill); keep_carried: keep the jobs an earlier run left unanswered.
RequestEngine &batch_engine(int concurrency, double max_rate, bool rate_limits_never_fail,
                            bool keep_carried = false);

// What one run of the engine said about DFend as a whole (for
// batch_means_down): of the jobs answered in it, how many were stored, and
// how many failed for a reason other than their own data or a 429 the run
// did not wait for, with the first such error and the first systemic one.
struct SendSummary {
    int stored = 0;
    int failed = 0;
    std::optional<Error> first_failure;
    std::optional<Error> first_systemic;
};

// C++-style (inside cpp_call): submits `jobs` to `engine`, runs it and
// writes each answered job's outcome, found by its tag with `outcome_for`
// (which throws for a tag it does not know). Submitted jobs start as
// InEngine; those the run leaves in the engine keep that fate, like jobs an
// earlier run left there until they are answered here.
SendSummary send_jobs(RequestEngine &engine, const BatchJob *jobs, int count,
                      const RunOptions &options,
                      const std::function<BatchOutcome &(std::uint64_t tag)> &outcome_for);

// How ids are stored.
enum class StoreMode {
    // Only into rows without an id (a backfill): a row another session
    // holds is waited for and checked again, so an id a concurrent writer
    // stored meanwhile stays.
    FillMissing,
    // Into rows whose id differs (the worker, an update's registration too),
    // skipping rows another session holds locked, never waiting for them
    // (the entry is retried); a row that already holds its id holds it.
    SkipLocked,
};

// Where ids are stored: a user's table, written only as its owner.
struct StoreTarget {
    Oid owner;
    const char *table_sql;   // schema-qualified, quoted
    const char *key_sql;     // the user id column, quoted
    const char *id_sql;      // the DFend id column, quoted
    const char *key_equals;  // the key type's equality operator, qualified
    // Keys come as text[] cast to the key's type (the outbox holds them as
    // text): "::type", qualified. Empty when they come as an array of the
    // key's own type.
    const char *key_cast;
    StoreMode mode;
    OwnerLimits limits;
};

// PostgreSQL-style: stores ids[i] in the rows whose key equals element i of
// `keys` (an array Datum of `keys_type`), as the table's owner, as `mode`
// says. holds[i] (count entries) tells whether a row now holds ids[i].
// Returns the error the owner's side raised (nothing is stored then), or
// nullptr.
ErrorData *store_ids(const StoreTarget &target, Datum keys, Oid keys_type, char **ids, int count,
                     bool *holds);

// PostgreSQL-style: records the fields left out of the stored registrations
// of `table` (see dropped.hpp): the jobs whose outcome is Stored and whose
// row holds the id (holds[i]), outcomes[i] belonging to jobs[i].
void record_stored_drops(Oid table, const BatchJob *const *jobs,
                         const BatchOutcome *const *outcomes, const bool *holds, int count);

} // namespace dfend::pg
