// dfend_trigger(): the one trigger function behind dfend_attach. Its
// arguments carry the mapping, so a row costs no catalog lookup:
//   mode ('sync' | 'async'), user id column, id column, email column,
//   phone column, metadata column ('' when absent), merge, on_error.
// Both modes fire AFTER INSERT/UPDATE and write an outbox entry for each new
// or changed row. dfend_insert is a statement trigger that reads the
// statement's rows from its transition table and writes their entries in
// one pass, or, for more than kBulkThreshold rows of an async table, their
// user ids in rows of dfend_outbox_bulk (a partitioned table's
// dfend_insert, and one made before 0.4.0, is a row trigger); dfend_update
// is a row trigger.
// async: the worker sends it after commit.
// sync: the transaction's COMMIT sends it, just before it completes
//   (commit.cpp), so a row that is never stored is never registered.
#include "settings.hpp" // core headers first
#include "commit.hpp"
#include "outbox.hpp"
#include "owner.hpp"
#include "worker_slots.hpp"
#include "values.hpp"

#include <algorithm>

#include "postgres.hpp"

extern "C" {
#include "access/detoast.h"
#include "access/tableam.h"
#include "catalog/pg_trigger.h"
#include "utils/tuplestore.h"
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

// Refuses a user id too long to be one before it is copied into the outbox.
void check_user_id_size(Datum value, TupleDesc desc, int number, const char *column,
                        Relation relation)
{
    if (TupleDescAttr(desc, number - 1)->attlen == -1 &&
        toast_raw_datum_size(value) > (Size) kMaxFieldBytes + VARHDRSZ)
        ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
                        errmsg("user id in column \"%s\" of table \"%s\" is too long to "
                               "register with DFend",
                               column, RelationGetRelationName(relation)),
                        errdetail("dfend reads at most %d bytes of a column.", kMaxFieldBytes)));
}

// Where an outbox entry goes, looked up once per backend and forgotten when
// the outbox table's relcache entry is invalidated (DROP EXTENSION, say).
// bulk_table is InvalidOid until ALTER EXTENSION dfend UPDATE to 0.5.0
// creates dfend_outbox_bulk; every statement then writes an entry per row.
struct OutboxTarget {
    bool valid;
    Oid table;
    Oid sequence;
    AttrNumber entry_id, table_name, user_id, reason, state, attempts, next_attempt_at,
        enqueued_at;
    Oid bulk_table;
    Oid bulk_sequence;
    AttrNumber bulk_id, bulk_table_name, bulk_user_ids, bulk_reason, bulk_enqueued_at;
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
    // Without dfend_outbox_bulk, any invalidation may be the one of its
    // creation (ALTER EXTENSION dfend UPDATE): looked up again.
    if (relation == InvalidOid || relation == outbox_target.table ||
        relation == outbox_target.bulk_table || !OidIsValid(outbox_target.bulk_table))
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
// clones it): named dfend_insert, on INSERT alone, either a statement
// trigger reading a NEW TABLE or a plain row trigger; or named dfend_update,
// a row trigger on UPDATE OF exactly the mapped columns, with a WHEN clause.
// Names are unique per table, so each exists at most once; an owner can
// only replace dfend's own trigger, not add more. Either form of
// dfend_insert writes the same entries: the statement's inserted rows,
// which PostgreSQL itself collects.
const char *shape_problem(const Trigger *trigger, Relation relation)
{
    int16 type = trigger->tgtype;
    int16 events = type & (TRIGGER_TYPE_INSERT | TRIGGER_TYPE_UPDATE | TRIGGER_TYPE_DELETE |
                           TRIGGER_TYPE_TRUNCATE);
    if (trigger->tgoldtable)
        return "It has an OLD TABLE.";
    if (strcmp(trigger->tgname, "dfend_insert") == 0) {
        if (events != TRIGGER_TYPE_INSERT)
            return "dfend_insert fires on INSERT alone.";
        if (TRIGGER_FOR_ROW(type))
            return trigger->tgnewtable ? "A row trigger dfend_insert has no NEW TABLE." : nullptr;
        return trigger->tgnewtable && TRIGGER_FOR_AFTER(type) && !trigger->tgqual
                   ? nullptr
                   : "A statement trigger dfend_insert fires AFTER INSERT, with a NEW TABLE "
                     "and no WHEN clause.";
    }
    if (strcmp(trigger->tgname, "dfend_update") != 0)
        return "Its name is not dfend_insert or dfend_update.";
    if (!TRIGGER_FOR_ROW(type) || trigger->tgnewtable)
        return "It is not a plain row trigger.";
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
    Oid bulk = get_relname_relid("dfend_outbox_bulk", get_rel_namespace(table));
    Oid bulk_sequence =
        get_relname_relid("dfend_outbox_bulk_bulk_id_seq", get_rel_namespace(table));
    if (OidIsValid(bulk) && OidIsValid(bulk_sequence)) {
        found.bulk_table = bulk;
        found.bulk_sequence = bulk_sequence;
        found.bulk_id = get_attnum(bulk, "bulk_id");
        found.bulk_table_name = get_attnum(bulk, "table_name");
        found.bulk_user_ids = get_attnum(bulk, "user_ids");
        found.bulk_reason = get_attnum(bulk, "reason");
        found.bulk_enqueued_at = get_attnum(bulk, "enqueued_at");
    }
    outbox_target = found;
    return outbox_target;
}

// Writes pending outbox entries: a direct heap and index insert, since it
// runs for every inserted user, and planning and running an INSERT statement
// per row costs several times more. The entries of one trigger call go in
// batches: one multi-insert into the heap, then their index entries, with
// the table, its indexes and their predicates opened once. The values are
// the columns' defaults in dfend--*.sql; the CHECK constraints hold by
// construction.
constexpr int kBatchRows = 1000;

// One of dfend's tables opened for such direct inserts, with its indexes.
struct DirectInsert {
    Relation relation;
    EState *estate;
    ResultRelInfo *result_relation;
    CommandId command;
    TimestampTz now; // what now() returns
};

void direct_open(DirectInsert *insert, Oid table)
{
    insert->relation = table_open(table, RowExclusiveLock);
    insert->estate = CreateExecutorState();
    insert->result_relation = makeNode(ResultRelInfo);
    InitResultRelInfo(insert->result_relation, insert->relation, 1, nullptr, 0);
    ExecOpenIndices(insert->result_relation, false);
    insert->command = GetCurrentCommandId(true);
    insert->now = GetCurrentTransactionStartTimestamp();
}

// The index entries of a tuple just inserted into the heap.
void direct_index(DirectInsert *insert, TupleTableSlot *slot)
{
    compat::insert_index_tuples(insert->result_relation, slot, insert->estate);
    ResetPerTupleExprContext(insert->estate);
}

void direct_close(DirectInsert *insert)
{
    ExecCloseIndices(insert->result_relation);
    FreeExecutorState(insert->estate);
    table_close(insert->relation, NoLock);
}

struct OutboxWriter {
    OutboxTarget target;
    DirectInsert outbox;
    TupleTableSlot **slots; // capacity, made as they are first needed
    int capacity, made, used;
    MemoryContext batch_memory; // the batch's values, reset after each
    Datum state, reason;
};

// capacity: the most entries written at once (at most kBatchRows).
void writer_open(OutboxWriter *writer, const char *reason, int capacity)
{
    *writer = {};
    writer->target = find_outbox();
    direct_open(&writer->outbox, writer->target.table);
    writer->capacity = std::clamp(capacity, 1, kBatchRows);
    writer->slots = (TupleTableSlot **) palloc0(sizeof(TupleTableSlot *) * writer->capacity);
    writer->batch_memory =
        AllocSetContextCreate(CurrentMemoryContext, "dfend outbox batch", ALLOCSET_DEFAULT_SIZES);
    writer->state = CStringGetTextDatum("pending");
    writer->reason = CStringGetTextDatum(reason);
}

void writer_flush(OutboxWriter *writer)
{
    if (writer->used == 0)
        return;
    table_multi_insert(writer->outbox.relation, writer->slots, writer->used,
                       writer->outbox.command, 0, nullptr);
    for (int i = 0; i < writer->used; ++i) {
        direct_index(&writer->outbox, writer->slots[i]);
        ExecClearTuple(writer->slots[i]);
    }
    writer->used = 0;
    MemoryContextReset(writer->batch_memory);
}

// Queues the row whose user id (key text) is given; returns its entry's id.
// user_id may live in the batch's memory: the batch is written (and its
// memory reset) only once the entry holds a copy, when the batch is full.
int64 writer_add(OutboxWriter *writer, Oid table, const char *user_id)
{
    const OutboxTarget &target = writer->target;
    if (writer->used == writer->made)
        writer->slots[writer->made++] =
            MakeSingleTupleTableSlot(RelationGetDescr(writer->outbox.relation),
                                     table_slot_callbacks(writer->outbox.relation));
    TupleTableSlot *slot = writer->slots[writer->used++];
    Datum *values = slot->tts_values;
    bool *nulls = slot->tts_isnull;
    memset(nulls, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
    auto set = [&](AttrNumber column, Datum value) {
        values[column - 1] = value;
        nulls[column - 1] = false;
    };
    int64 entry_id = nextval_internal(target.sequence, false);
    MemoryContext caller = MemoryContextSwitchTo(writer->batch_memory);
    set(target.entry_id, Int64GetDatum(entry_id));
    set(target.table_name, ObjectIdGetDatum(table));
    set(target.user_id, CStringGetTextDatum(user_id));
    MemoryContextSwitchTo(caller);
    set(target.reason, writer->reason);
    set(target.state, writer->state);
    set(target.attempts, Int32GetDatum(0));
    set(target.next_attempt_at, TimestampTzGetDatum(writer->outbox.now));
    set(target.enqueued_at, TimestampTzGetDatum(writer->outbox.now));
    ExecStoreVirtualTuple(slot);
    if (writer->used == writer->capacity)
        writer_flush(writer);
    return entry_id;
}

void writer_close(OutboxWriter *writer)
{
    writer_flush(writer);
    for (int i = 0; i < writer->made; ++i)
        ExecDropSingleTupleTableSlot(writer->slots[i]);
    MemoryContextDelete(writer->batch_memory);
    direct_close(&writer->outbox);
}

// A statement of an async table that inserted more rows than
// kBulkThreshold writes their keys into dfend_outbox_bulk instead: one row
// per kBulkKeys keys (fewer when they add up to kBulkBytes), which costs a
// fraction of an outbox entry per key (no heap tuple, sequence value or
// index entries of its own). The worker and dfend_process_queue() expand a
// bulk row into ordinary entries before they claim (outbox.cpp). Smaller
// statements keep an entry per row, so that nothing stands between their
// commit and the worker's claim.
constexpr int64 kBulkThreshold = 64;
constexpr Size kBulkBytes = 1024 * 1024;

struct BulkWriter {
    OutboxTarget target;
    DirectInsert bulk;
    TupleTableSlot *slot;
    MemoryContext chunk_memory; // the chunk's keys, reset after each row
    Oid table;                  // the attached table, from the trigger's relation
    Datum *keys;                // text
    int count;
    Size bytes;
    Datum reason;
};

void bulk_open(BulkWriter *writer, Oid table)
{
    *writer = {};
    writer->target = find_outbox();
    direct_open(&writer->bulk, writer->target.bulk_table);
    writer->slot = MakeSingleTupleTableSlot(RelationGetDescr(writer->bulk.relation),
                                            table_slot_callbacks(writer->bulk.relation));
    writer->chunk_memory = AllocSetContextCreate(CurrentMemoryContext, "dfend outbox bulk chunk",
                                                 ALLOCSET_DEFAULT_SIZES);
    writer->table = table;
    writer->keys = (Datum *) palloc(sizeof(Datum) * kBulkKeys);
    writer->reason = CStringGetTextDatum("insert");
}

// Writes the chunk's keys as one row (the heap toasts the array).
void bulk_flush(BulkWriter *writer)
{
    if (writer->count == 0)
        return;
    const OutboxTarget &target = writer->target;
    TupleTableSlot *slot = writer->slot;
    ExecClearTuple(slot);
    Datum *values = slot->tts_values;
    bool *nulls = slot->tts_isnull;
    memset(nulls, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
    auto set = [&](AttrNumber column, Datum value) {
        values[column - 1] = value;
        nulls[column - 1] = false;
    };
    MemoryContext caller = MemoryContextSwitchTo(writer->chunk_memory);
    ArrayType *user_ids =
        construct_array(writer->keys, writer->count, TEXTOID, -1, false, TYPALIGN_INT);
    MemoryContextSwitchTo(caller);
    set(target.bulk_id, Int64GetDatum(nextval_internal(target.bulk_sequence, false)));
    set(target.bulk_table_name, ObjectIdGetDatum(writer->table));
    set(target.bulk_user_ids, PointerGetDatum(user_ids));
    set(target.bulk_reason, writer->reason);
    set(target.bulk_enqueued_at, TimestampTzGetDatum(writer->bulk.now));
    ExecStoreVirtualTuple(slot);
    table_tuple_insert(writer->bulk.relation, slot, writer->bulk.command, 0, nullptr);
    direct_index(&writer->bulk, slot);
    ExecClearTuple(slot);
    writer->count = 0;
    writer->bytes = 0;
    MemoryContextReset(writer->chunk_memory);
}

void bulk_add(BulkWriter *writer, KeyPrinter *printer, Datum user_id)
{
    MemoryContext caller = MemoryContextSwitchTo(writer->chunk_memory);
    text *key = cstring_to_text(print_key(printer, user_id));
    MemoryContextSwitchTo(caller);
    writer->keys[writer->count++] = PointerGetDatum(key);
    writer->bytes += VARSIZE(key);
    if (writer->count == kBulkKeys || writer->bytes >= kBulkBytes)
        bulk_flush(writer);
}

void bulk_close(BulkWriter *writer)
{
    bulk_flush(writer);
    ExecDropSingleTupleTableSlot(writer->slot);
    MemoryContextDelete(writer->chunk_memory);
    direct_close(&writer->bulk);
}

// The table a row is queued under: the attached one, which is the root of
// a partitioned table (its mapping is what the worker reads).
Oid queued_table_of(Relation relation)
{
    Oid table = RelationGetRelid(relation);
    return relation->rd_rel->relispartition ? llast_oid(get_partition_ancestors(table)) : table;
}

// The row trigger: one entry for the new or changed row. A BEFORE trigger
// (a sync table's, made before 0.3.0) hands the row on unchanged.
Datum enqueue_row(TriggerData *data)
{
    char **args = data->tg_trigger->tgargs;
    const bool is_update = TRIGGER_FIRED_BY_UPDATE(data->tg_event);
    Relation relation = data->tg_relation;
    TupleDesc desc = RelationGetDescr(relation);
    HeapTuple row = is_update ? data->tg_newtuple : data->tg_trigtuple;
    Oid queued_table = queued_table_of(relation);
    verify_trigger(data->tg_trigger, TRIGGER_FIRED_BEFORE(data->tg_event), queued_table,
                   relation);
    Datum unchanged = PointerGetDatum(TRIGGER_FIRED_BEFORE(data->tg_event) ? row : nullptr);

    int user_number = column_number(desc, args[1], relation);
    int id_number = column_number(desc, args[2], relation);
    bool user_is_null = true, id_is_null = true;
    Datum user_id = heap_getattr(row, user_number, desc, &user_is_null);
    (void) heap_getattr(row, id_number, desc, &id_is_null);
    // Nothing to register without a user id; an inserted row that already
    // carries its DFend id (a restore, a copy) needs no call either.
    if (user_is_null || (!is_update && !id_is_null))
        return unchanged;
    check_user_id_size(user_id, desc, user_number, args[1], relation);
    // Not SPI_getvalue: the inserting session's extra_float_digits must not
    // round a float key onto another row's.
    char *key = key_text(user_id, TupleDescAttr(desc, user_number - 1)->atttypid);
    OutboxWriter writer;
    writer_open(&writer, is_update ? "update" : "insert", 1);
    int64 entry_id = writer_add(&writer, queued_table, key);
    writer_close(&writer);
    note_enqueued();
    if (strcmp(args[0], "sync") == 0)
        register_at_commit(entry_id);
    return unchanged;
}

// The statement trigger: one entry for each row in the transition table
// (the rows the statement inserted, as PostgreSQL collected them; never
// the owner's code), with the same rules as the row trigger; many keys per
// row of dfend_outbox_bulk when they are many (see kBulkThreshold). The
// bulk rows' table is the trigger's relation, never an argument.
void enqueue_statement(TriggerData *data)
{
    char **args = data->tg_trigger->tgargs;
    Relation relation = data->tg_relation;
    TupleDesc desc = RelationGetDescr(relation);
    Oid queued_table = queued_table_of(relation);
    verify_trigger(data->tg_trigger, false, queued_table, relation);
    Tuplestorestate *rows = data->tg_newtable;
    if (!rows)
        refuse_trigger("A statement trigger dfend_insert reads a NEW TABLE.");
    const bool sync = strcmp(args[0], "sync") == 0;
    int user_number = column_number(desc, args[1], relation);
    int id_number = column_number(desc, args[2], relation);
    KeyPrinter printer;
    prepare_key_printer(&printer, TupleDescAttr(desc, user_number - 1)->atttypid);

    // A read pointer of our own, from the start, as a scan of the
    // transition table in SQL takes one.
    tuplestore_select_read_pointer(rows, tuplestore_alloc_read_pointer(rows, 0));
    tuplestore_rescan(rows);
    int64 count = tuplestore_tuple_count(rows);
    // A sync table's COMMIT registers its entries by their ids: one each.
    const bool in_bulk =
        !sync && count > kBulkThreshold && OidIsValid(find_outbox().bulk_table);
    TupleTableSlot *row = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
    OutboxWriter writer;
    BulkWriter bulk;
    bool writing = false;
    while (tuplestore_gettupleslot(rows, true, false, row)) {
        bool user_is_null = true, id_is_null = true;
        Datum user_id = slot_getattr(row, user_number, &user_is_null);
        (void) slot_getattr(row, id_number, &id_is_null);
        if (user_is_null || !id_is_null)
            continue;
        check_user_id_size(user_id, desc, user_number, args[1], relation);
        if (in_bulk) {
            if (!writing)
                bulk_open(&bulk, queued_table);
            writing = true;
            bulk_add(&bulk, &printer, user_id);
            continue;
        }
        if (!writing) {
            writer_open(&writer, "insert", (int) std::min<int64>(count, kBatchRows));
            writing = true;
        }
        MemoryContext caller = MemoryContextSwitchTo(writer.batch_memory);
        char *key = print_key(&printer, user_id);
        MemoryContextSwitchTo(caller);
        int64 entry_id = writer_add(&writer, queued_table, key);
        if (sync)
            register_at_commit(entry_id);
    }
    ExecDropSingleTupleTableSlot(row);
    if (writing) {
        if (in_bulk)
            bulk_close(&bulk);
        else
            writer_close(&writer);
        note_enqueued();
    }
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
    TriggerEvent event = data->tg_event;
    const bool row = TRIGGER_FIRED_FOR_ROW(event);
    if (data->tg_trigger->tgnargs != 8 || TRIGGER_FIRED_BY_DELETE(event) ||
        TRIGGER_FIRED_BY_TRUNCATE(event) ||
        (!row && (!TRIGGER_FIRED_BY_INSERT(event) || !TRIGGER_FIRED_AFTER(event))))
        ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                        errmsg("dfend_trigger() must be created by dfend_attach"),
                        errhint("Use dfend_attach to attach a table.")));
    if (row)
        return enqueue_row(data);
    enqueue_statement(data);
    return PointerGetDatum(nullptr);
}

} // extern "C"
