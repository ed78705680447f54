// dfend_trigger(): the one trigger function behind dfend_attach. Its
// arguments carry the mapping, so a row costs no catalog lookup:
//   mode ('sync' | 'async'), user id column, id column, email column,
//   phone column, metadata column ('' when absent), merge, on_error.
// Both modes fire AFTER INSERT/UPDATE and write an outbox entry for the row.
// async: the worker sends it after commit.
// sync: the transaction's COMMIT sends it, just before it completes
//   (commit.cpp), so a row that is never stored is never registered.
#include "settings.hpp" // core headers first
#include "commit.hpp"
#include "outbox.hpp"
#include "owner.hpp"
#include "worker_slots.hpp"
#include "values.hpp"

#include "postgres.hpp"

extern "C" {
#include "access/detoast.h"
#include "catalog/pg_trigger.h"
}

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

// The row's user id as text; refuses one too long to be a user id before
// copying it into the outbox.
char *user_id_of(HeapTuple row, TupleDesc desc, const char *column, Relation relation)
{
    int number = column_number(desc, column, relation);
    bool isnull = true;
    Datum value = heap_getattr(row, number, desc, &isnull);
    if (isnull)
        return nullptr;
    if (TupleDescAttr(desc, number - 1)->attlen == -1 &&
        toast_raw_datum_size(value) > (Size) kMaxFieldBytes + VARHDRSZ)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("user id in column \"%s\" of table \"%s\" is too long to "
                               "register with DFend",
                               column, RelationGetRelationName(relation)),
                        errdetail("dfend reads at most %d bytes of a column.", kMaxFieldBytes)));
    // Not SPI_getvalue: the inserting session's extra_float_digits must not
    // round a float key onto another row's.
    return key_text(value, TupleDescAttr(desc, number - 1)->atttypid);
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

// Triggers found to match their table's attachment. EXECUTE on
// dfend_trigger() is granted to PUBLIC (a table owner creating a partition
// clones the trigger, which needs it), so a trigger proves itself here: its
// arguments and timing must be those dfend_attach gave the attached table.
// A trigger's arguments never change, so a verdict holds for its life; the
// set is emptied on any relcache invalidation all the same.
HTAB *verified_triggers = nullptr;

void forget_outbox_target(Datum, Oid relation)
{
    if (relation == InvalidOid || relation == outbox_target.table)
        outbox_target.valid = false;
    if (verified_triggers) {
        hash_destroy(verified_triggers);
        verified_triggers = nullptr;
    }
}

void register_invalidation()
{
    if (!invalidation_registered) {
        CacheRegisterRelcacheCallback(forget_outbox_target, (Datum) 0);
        invalidation_registered = true;
    }
}

[[noreturn]] void refuse_trigger(const char *detail)
{
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("dfend_trigger() must be created by dfend_attach"),
                    errdetail("%s", detail), errhint("Use dfend_attach to attach a table.")));
    pg_unreachable();
}

// Whether the trigger is shaped as dfend_attach makes it (or as a partition
// clones it): named dfend_insert, a row trigger on INSERT alone; or named
// dfend_update, a row trigger on UPDATE OF exactly the mapped columns, with
// a WHEN clause. Names are unique per table, so each exists at most once;
// an owner can only replace dfend's own trigger, not add more.
const char *shape_problem(const Trigger *trigger, Relation relation)
{
    int16 type = trigger->tgtype;
    int16 events = type & (TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE |
                           TRIGGER_TYPE_TRUNCATE);
    if (!TRIGGER_FOR_ROW(type) || trigger->tgoldtable || trigger->tgnewtable)
        return "It is not a plain row trigger.";
    if (strcmp(trigger->tgname, "dfend_insert") == 0)
        return events == TRIGGER_TYPE_INSERT ? nullptr : "dfend_insert fires on INSERT alone.";
    if (strcmp(trigger->tgname, "dfend_update") != 0)
        return "Its name is not dfend_insert or dfend_update.";
    if (events != TRIGGER_TYPE_UPDATE || !trigger->tgqual)
        return "dfend_update fires on UPDATE alone, with a WHEN clause.";
    // UPDATE OF: the user id, email, phone and metadata columns (those mapped).
    int expected = 0;
    for (int arg : {1, 3, 4, 5}) {
        const char *column = trigger->tgargs[arg];
        if (column[0] == '\0')
            continue;
        AttrNumber number = get_attnum(RelationGetRelid(relation), column);
        bool listed = false;
        for (int i = 0; i < trigger->tgnattr; ++i)
            listed |= trigger->tgattr[i] == number;
        if (!listed)
            return "dfend_update fires on UPDATE OF the mapped columns alone.";
        ++expected;
    }
    return trigger->tgnattr == expected
               ? nullptr
               : "dfend_update fires on UPDATE OF the mapped columns alone.";
}

void verify_trigger(const Trigger *trigger, bool before, Oid attached_table, Relation relation)
{
    register_invalidation();
    Oid key = trigger->tgoid;
    if (verified_triggers && hash_search(verified_triggers, &key, HASH_FIND, nullptr))
        return;
    const char *schema = outbox_schema();
    if (!schema)
        ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                        errmsg("extension \"dfend\" is not installed in this database")));
    SPI_connect();
    int nest_level = internal_sql_begin();
    char *query = psprintf(
        "SELECT a.mode, a.user_id_column::pg_catalog.text, a.id_column::pg_catalog.text, "
        "COALESCE(a.email_column::pg_catalog.text, ''), "
        "COALESCE(a.phone_column::pg_catalog.text, ''), "
        "COALESCE(a.metadata_column::pg_catalog.text, ''), "
        "CASE WHEN a.merge THEN 't' ELSE 'f' END, a.on_error "
        "FROM %s.dfend_attachment AS a WHERE a.table_name OPERATOR(pg_catalog.=) $1",
        schema);
    Oid types[1] = {OIDOID};
    Datum values[1] = {ObjectIdGetDatum(attached_table)};
    if (SPI_execute_with_args(query, 1, types, values, nullptr, true, 1) != SPI_OK_SELECT)
        elog(ERROR, "could not read the dfend attachment of table %u", attached_table);
    bool matches = SPI_processed == 1;
    for (int i = 0; matches && i < 8; ++i) {
        char *expected = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1);
        matches = expected && strcmp(expected, trigger->tgargs[i]) == 0;
    }
    internal_sql_end(nest_level);
    SPI_finish();
    if (!matches)
        refuse_trigger("Its arguments do not match the table's attachment.");
    // A sync trigger made before 0.3.0 fires BEFORE the row is written (until
    // ALTER EXTENSION dfend UPDATE recreates it); it is as safe, since COMMIT
    // registers only rows that exist then.
    if (before && strcmp(trigger->tgargs[0], "sync") != 0)
        refuse_trigger("It fires BEFORE the row is written; an async trigger fires AFTER.");
    if (const char *problem = shape_problem(trigger, relation))
        refuse_trigger(problem);
    // Created only now: the query above may have run the invalidation
    // callback, which drops the set.
    if (!verified_triggers) {
        HASHCTL control = {};
        control.keysize = sizeof(Oid);
        control.entrysize = sizeof(Oid);
        verified_triggers =
            hash_create("dfend verified triggers", 16, &control, HASH_ELEM | HASH_BLOBS);
    }
    (void) hash_search(verified_triggers, &key, HASH_ENTER, nullptr);
}

const OutboxTarget &find_outbox()
{
    if (outbox_target.valid)
        return outbox_target;
    register_invalidation();
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
// Returns the entry's id.
int64 enqueue(Oid table, const char *user_id, const char *reason)
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
    int64 entry_id = nextval_internal(target.sequence, false);
    set(target.entry_id, Int64GetDatum(entry_id));
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
    return entry_id;
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
    const bool is_update = TRIGGER_FIRED_BY_UPDATE(data->tg_event);
    Relation relation = data->tg_relation;
    TupleDesc desc = RelationGetDescr(relation);
    HeapTuple row = is_update ? data->tg_newtuple : data->tg_trigtuple;
    // Rows of a partitioned table are queued under the table that was
    // attached (the root), whose mapping the worker reads.
    Oid queued_table = RelationGetRelid(relation);
    if (relation->rd_rel->relispartition)
        queued_table = llast_oid(get_partition_ancestors(queued_table));
    verify_trigger(data->tg_trigger, TRIGGER_FIRED_BEFORE(data->tg_event), queued_table,
                   relation);

    char *user_id = user_id_of(row, desc, args[1], relation);
    int id_number = column_number(desc, args[2], relation);
    bool id_is_null = true;
    (void) SPI_getbinval(row, desc, id_number, &id_is_null);
    // Nothing to register without a user id; an inserted row that already
    // carries its DFend id (a restore, a copy) needs no call either.
    // An AFTER trigger's result is ignored; a (pre-0.3.0) BEFORE trigger
    // must hand the row on unchanged.
    Datum unchanged = PointerGetDatum(TRIGGER_FIRED_BEFORE(data->tg_event) ? row : nullptr);
    if (!user_id || (!is_update && !id_is_null))
        return unchanged;
    int64 entry_id = enqueue(queued_table, user_id, is_update ? "update" : "insert");
    if (sync)
        register_at_commit(entry_id);
    return unchanged;
}

} // extern "C"
