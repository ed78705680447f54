// dfend_trigger(): the one trigger function behind dfend_attach. Its
// arguments carry the mapping, so a row costs no catalog lookup:
//   mode ('sync' | 'async'), user id column, id column, email column,
//   phone column, metadata column ('' when absent), merge, on_error.
// async (AFTER INSERT/UPDATE): only writes an outbox entry; the worker sends
//   it after commit.
// sync (BEFORE INSERT/UPDATE): registers now and sets the id on NEW; on
//   failure either queues the row (on_error 'queue') or fails the statement.
#include "../core/identity_client.hpp"
#include "backend.hpp"
#include "border.hpp"
#include "outbox.hpp"
#include "queue.hpp"
#include "settings.hpp"
#include "values.hpp"

#include "postgres.hpp"

namespace dfend::pg {

namespace {

int column_number(TupleDesc desc, const char *name, Relation relation)
{
    int number = SPI_fnumber(desc, name);
    if (number <= 0)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
                        errmsg("column \"%s\" of table \"%s\" does not exist", name,
                               RelationGetRelationName(relation)),
                        errhint("Call dfend_detach and dfend_attach again after renaming or "
                                "dropping a mapped column.")));
    return number;
}

char *value_or_null(HeapTuple tuple, TupleDesc desc, const char *column, Relation relation)
{
    if (!column || column[0] == '\0')
        return nullptr;
    return SPI_getvalue(tuple, desc, column_number(desc, column, relation));
}

// Where an outbox entry goes, looked up once per backend and forgotten when
// the outbox table's relcache entry is invalidated (DROP EXTENSION, say).
struct OutboxTarget {
    bool valid;
    Oid table;
    Oid sequence;
    AttrNumber entry_id, table_name, user_id, reason, state, attempts, next_attempt_at,
        enqueued_at;
};
OutboxTarget outbox_target = {};
bool invalidation_registered = false;

void forget_outbox_target(Datum, Oid relation)
{
    if (relation == InvalidOid || relation == outbox_target.table)
        outbox_target.valid = false;
}

const OutboxTarget &find_outbox()
{
    if (outbox_target.valid)
        return outbox_target;
    if (!invalidation_registered) {
        CacheRegisterRelcacheCallback(forget_outbox_target, (Datum) 0);
        invalidation_registered = true;
    }
    Oid extension = get_extension_oid("dfend", true);
    Oid table = OidIsValid(extension) ? get_relname_relid("dfend_outbox", outbox_namespace())
                                      : InvalidOid;
    if (!OidIsValid(table))
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("extension \"dfend\" is not installed in this database")));
    OutboxTarget found = {};
    found.table = table;
    found.sequence = get_relname_relid("dfend_outbox_entry_id_seq", get_rel_namespace(table));
    found.entry_id = get_attnum(table, "entry_id");
    found.table_name = get_attnum(table, "table_name");
    found.user_id = get_attnum(table, "user_id");
    found.reason = get_attnum(table, "reason");
    found.state = get_attnum(table, "state");
    found.attempts = get_attnum(table, "attempts");
    found.next_attempt_at = get_attnum(table, "next_attempt_at");
    found.enqueued_at = get_attnum(table, "enqueued_at");
    found.valid = OidIsValid(found.sequence);
    if (!found.valid)
        elog(ERROR, "dfend outbox sequence is missing");
    outbox_target = found;
    return outbox_target;
}

// Adds a pending outbox entry for the row. A direct heap and index insert:
// it runs for every inserted user, and planning and running an INSERT
// statement per row costs several times more. The values are the columns'
// defaults in dfend--*.sql; the CHECK constraints hold by construction.
void enqueue(Oid table, const char *user_id, const char *reason)
{
    const OutboxTarget &target = find_outbox();
    Relation outbox = table_open(target.table, RowExclusiveLock);
    TupleDesc desc = RelationGetDescr(outbox);
    Datum *values = (Datum *) palloc0(sizeof(Datum) * desc->natts);
    bool *nulls = (bool *) palloc(sizeof(bool) * desc->natts);
    memset(nulls, true, sizeof(bool) * desc->natts);
    auto set = [&](AttrNumber column, Datum value) {
        values[column - 1] = value;
        nulls[column - 1] = false;
    };
    TimestampTz now = GetCurrentTransactionStartTimestamp(); // what now() returns
    set(target.entry_id, Int64GetDatum(nextval_internal(target.sequence, false)));
    set(target.table_name, ObjectIdGetDatum(table));
    set(target.user_id, CStringGetTextDatum(user_id));
    set(target.reason, CStringGetTextDatum(reason));
    set(target.state, CStringGetTextDatum("pending"));
    set(target.attempts, Int32GetDatum(0));
    set(target.next_attempt_at, TimestampTzGetDatum(now));
    set(target.enqueued_at, TimestampTzGetDatum(now));

    EState *estate = CreateExecutorState();
    ResultRelInfo *result_relation = makeNode(ResultRelInfo);
    InitResultRelInfo(result_relation, outbox, 1, nullptr, 0);
    ExecOpenIndices(result_relation, false);
    TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
    ExecStoreHeapTuple(heap_form_tuple(desc, values, nulls), slot, false);
    simple_table_tuple_insert(outbox, slot);
    compat::insert_index_tuples(result_relation, slot, estate);
    ExecDropSingleTupleTableSlot(slot);
    ExecCloseIndices(result_relation);
    FreeExecutorState(estate);
    table_close(outbox, NoLock);
    note_enqueued();
}

} // namespace

} // namespace dfend::pg

using namespace dfend;
using namespace dfend::pg;

extern "C" {

PG_FUNCTION_INFO_V1(dfend_trigger);
Datum dfend_trigger(PG_FUNCTION_ARGS)
{
    if (!CALLED_AS_TRIGGER(fcinfo))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("dfend_trigger() was not called by the trigger manager")));
    TriggerData *data = (TriggerData *) fcinfo->context;
    if (!TRIGGER_FIRED_FOR_ROW(data->tg_event) || TRIGGER_FIRED_BY_DELETE(data->tg_event) ||
        data->tg_trigger->tgnargs != 8)
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("dfend_trigger() must be created by dfend_attach"),
                        errhint("Use dfend_attach to attach a table.")));
    char **args = data->tg_trigger->tgargs;
    const bool sync = strcmp(args[0], "sync") == 0;
    const bool merge = strcmp(args[6], "true") == 0;
    const bool fail_on_error = strcmp(args[7], "error") == 0;
    const bool is_update = TRIGGER_FIRED_BY_UPDATE(data->tg_event);
    Relation relation = data->tg_relation;
    TupleDesc desc = RelationGetDescr(relation);
    HeapTuple row = is_update ? data->tg_newtuple : data->tg_trigtuple;
    const char *reason = is_update ? "update" : "insert";
    // Rows of a partitioned table are queued under the table that was
    // attached (the root), whose mapping the worker reads.
    Oid queued_table = RelationGetRelid(relation);
    if (relation->rd_rel->relispartition)
        queued_table = llast_oid(get_partition_ancestors(queued_table));

    char *user_id = value_or_null(row, desc, args[1], relation);
    int id_number = column_number(desc, args[2], relation);
    bool id_is_null = true;
    (void) SPI_getbinval(row, desc, id_number, &id_is_null);
    // Nothing to register without a user id; an inserted row that already
    // carries its DFend id (a restore, a copy) needs no call either.
    if (!user_id || (!is_update && !id_is_null))
        return PointerGetDatum(row);

    if (!sync) {
        enqueue(queued_table, user_id, reason);
        return PointerGetDatum(row);
    }

    char *email = utf8_string(value_or_null(row, desc, args[3], relation));
    char *phone = utf8_string(value_or_null(row, desc, args[4], relation));
    char *metadata = utf8_string(value_or_null(row, desc, args[5], relation));
    char *user_id_utf8 = utf8_string(user_id);
    long deadline_ms = statement_deadline_ms();
    char *id = nullptr;
    CapturedError error;
    pgstat_report_wait_start(PG_WAIT_EXTENSION);
    bool ok = cpp_try(
        [&] {
            RegisterRequest request = make_register_request(user_id_utf8, email, phone,
                                                            metadata, merge || is_update);
            BackendContext &backend = backend_context();
            ClientSettings settings = current_client_settings(backend.key_files);
            RegisterResult result =
                backend.client.register_identity(request, settings, call_control(deadline_ms));
            id = server_string(result.id);
        },
        &error);
    pgstat_report_wait_end();

    if (!ok) {
        // A cancel is never swallowed; nor is a failure the caller asked for.
        if (fail_on_error || error.kind == ErrorKind::Cancelled || error.postgres_error)
            raise_captured(&error);
        ereport(WARNING,
                (errmsg("could not register the row with DFend; it is queued for a retry"),
                 error.detail[0] ? errdetail("The error was: %s. %s", error.message, error.detail)
                                 : errdetail("The error was: %s.", error.message)));
        enqueue(queued_table, user_id, reason);
        return PointerGetDatum(row);
    }
    int columns[1] = {id_number};
    Datum values[1] = {CStringGetTextDatum(id)};
    bool nulls[1] = {false};
    return PointerGetDatum(heap_modify_tuple_by_cols(row, desc, 1, columns, values, nulls));
}

} // extern "C"
