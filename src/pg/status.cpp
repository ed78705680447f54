// Status an application can be granted: dfend_user_status (one user) and
// dfend_table_status (one attached table). They answer what the outbox and
// the table say together: is the DFend id stored, pending, dead, or was the
// row never queued.
//
// Three identities, each for its own part (SECURITY.md):
//   - the caller: these functions are SECURITY INVOKER, so GetUserId() is the
//     role that called them (a SECURITY DEFINER function could not tell its
//     caller from itself). It must have SELECT on the table (or on its user
//     id and id columns), and no row-level security may apply to it, since
//     the rows are read as the owner. Checked first, before anything about
//     the table or its attachment is read, so a role without SELECT learns
//     nothing;
//   - the extension's owner (the owner of these functions) reads dfend's own
//     tables, dfend_attachment, dfend_outbox and dfend_outbox_bulk, as a
//     SECURITY DEFINER function would: the same user switch, with
//     search_path fixed;
//   - the table's owner reads the table, through run_as_owner.
// Everything is read with the caller's snapshot (SPI read-only), so the
// counts agree with each other. PostgreSQL-style throughout.
#include "owner.hpp"
#include "values.hpp"

#include <algorithm>

#include "postgres.hpp"

extern "C" {
#include "catalog/pg_proc.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/datum.h"
#include "utils/rls.h"
}

namespace dfend::pg {

namespace {

// Keys of rows without an id read per statement by dfend_table_status.
constexpr int kChunk = 10000;

struct StatusTarget {
    Oid table;
    char *table_sql;
    char *schema_sql;     // the extension's schema, where dfend_outbox lives
    Oid extension_owner;  // the owner of the calling function
    Oid owner;            // the table's owner
    char *key_sql;
    char *id_sql;
    char *key_equals;     // the key type's btree operators, qualified
    char *key_greater;
    Oid key_type;
    char *key_base_sql;   // the key's base type, qualified, without typmod
    bool has_bulk;        // dfend_outbox_bulk exists (0.5.0 and later)
};

void select_or_fail(const char *query, int nargs, Oid *types, Datum *values)
{
    // Read-only: the caller's snapshot, the same for every statement here.
    int result = SPI_execute_with_args(query, nargs, types, values, nullptr, true, 0);
    if (result != SPI_OK_SELECT)
        elog(ERROR, "dfend status statement failed: %s", SPI_result_code_string(result));
}

Oid function_owner(Oid function)
{
    HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(function));
    if (!HeapTupleIsValid(tuple))
        elog(ERROR, "cache lookup failed for function %u", function);
    Oid owner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
    ReleaseSysCache(tuple);
    return owner;
}

[[noreturn]] void refuse(const char *relname, const char *detail)
{
    ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
                    errmsg("permission denied for table %s", relname),
                    errdetail("%s", detail)));
    pg_unreachable();
}

bool may_select(Oid table, Oid caller, const char *column)
{
    if (pg_class_aclcheck(table, caller, ACL_SELECT) == ACLCHECK_OK)
        return true;
    AttrNumber number = column ? get_attnum(table, column) : InvalidAttrNumber;
    return number != InvalidAttrNumber &&
           pg_attribute_aclcheck(table, number, caller, ACL_SELECT) == ACLCHECK_OK;
}

// The checks and lookups both functions start with. Leaves the table locked
// (AccessShareLock) until the transaction ends, so its columns keep the
// types checked here.
StatusTarget resolve(FunctionCallInfo fcinfo, Oid table)
{
    StatusTarget target = {};
    target.table = table;
    Oid caller = GetUserId();
    char *relname = get_rel_name(table);
    if (!relname)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
                        errmsg("relation with OID %u does not exist", table)));
    target.extension_owner = function_owner(fcinfo->flinfo->fn_oid);
    char *schema = get_namespace_name(get_func_namespace(fcinfo->flinfo->fn_oid));
    if (!schema)
        elog(ERROR, "could not find the schema of the dfend extension");
    target.schema_sql = pstrdup(quote_identifier(schema));
    target.has_bulk = OidIsValid(
        get_relname_relid("dfend_outbox_bulk", get_func_namespace(fcinfo->flinfo->fn_oid)));

    char *query = psprintf("SELECT a.user_id_column, a.id_column FROM %s.dfend_attachment AS a "
                           "WHERE a.table_name OPERATOR(pg_catalog.=) $1",
                           target.schema_sql);
    Oid types[1] = {REGCLASSOID};
    Datum values[1] = {ObjectIdGetDatum(table)};
    char *user_id_column = nullptr;
    char *id_column = nullptr;
    as_extension_owner(target.extension_owner, [&] {
        select_or_fail(query, 1, types, values);
        if (SPI_processed > 0) {
            user_id_column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
            id_column = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
        }
    });

    // The caller's rights first: the same refusal whether or not the table
    // is attached, so a role without SELECT learns nothing about it.
    bool attached = user_id_column != nullptr;
    if (pg_class_aclcheck(table, caller, ACL_SELECT) != ACLCHECK_OK &&
        !(attached && may_select(table, caller, user_id_column) &&
          may_select(table, caller, id_column)))
        refuse(relname, "Reading the DFend status of a table's rows needs SELECT on the table, "
                        "or on its user id and DFend id columns.");
    // The rows are read as the owner, whom no policy restricts: a caller
    // that policies restrict would see rows it may not read.
    if (check_enable_rls(table, InvalidOid, true) == RLS_ENABLED)
        refuse(relname, "Row-level security applies to you on this table, and the DFend status "
                        "reads all of its rows.");
    if (!attached)
        ereport(ERROR,
                (errcode(ERRCODE_UNDEFINED_OBJECT),
                 errmsg("table %s is not attached to DFend",
                        DatumGetCString(DirectFunctionCall1(regclassout, ObjectIdGetDatum(table)))),
                 errhint("Attach the table with dfend_attach.")));

    LockRelationOid(table, AccessShareLock);
    int sqlstate = 0;
    if (char *problem = check_mapping(table, user_id_column, id_column, nullptr, nullptr, nullptr,
                                      &sqlstate))
        ereport(ERROR, (errcode(sqlstate), errmsg_internal("%s", problem)));
    target.table_sql =
        quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)), relname);
    target.owner = relation_owner(table);
    target.key_sql = pstrdup(quote_identifier(user_id_column));
    target.id_sql = pstrdup(quote_identifier(id_column));
    target.key_type = get_atttype(table, get_attnum(table, user_id_column));
    target.key_equals = btree_operator(target.key_type, BTEqualStrategyNumber);
    target.key_greater = btree_operator(target.key_type, BTGreaterStrategyNumber);
    if (!target.key_equals || !target.key_greater)
        ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
                        errmsg("column \"%s\" has a type without a btree ordering",
                               user_id_column)));
    // A user id given as text is compared in the base type without typmod:
    // a cast to char(5) or varchar(5) would cut a longer id to another's.
    target.key_base_sql = format_type_extended(getBaseType(target.key_type), -1,
                                               FORMAT_TYPE_FORCE_QUALIFY);
    return target;
}

// The user id argument as text: text as given, other types (the bigint,
// integer and uuid overloads) as key_text makes them.
char *user_id_argument(FunctionCallInfo fcinfo)
{
    Oid type = get_fn_expr_argtype(fcinfo->flinfo, 1);
    if (type == TEXTOID)
        return text_to_cstring(PG_GETARG_TEXT_PP(1));
    return key_text(PG_GETARG_DATUM(1), type);
}

} // namespace

} // namespace dfend::pg

using namespace dfend::pg;

extern "C" {

// dfend_user_status(table_name regclass, user_id text|bigint|integer|uuid)
//   -> (state, id, attempts, next_attempt_at, last_error, enqueued_at)
// state: stored (the row has its DFend id), pending, dead, not queued (no
// id and no outbox entry), no such row. The entry's columns describe the
// user's outbox entry whenever there is one (for a stored row: a
// re-registration after an UPDATE); the pending one first, else the newest.
PG_FUNCTION_INFO_V1(dfend_user_status);
Datum dfend_user_status(PG_FUNCTION_ARGS)
{
    Oid table = PG_GETARG_OID(0);
    char *user_id = user_id_argument(fcinfo);
    TupleDesc result_type = composite_result_type(fcinfo);
    MemoryContext caller_context = CurrentMemoryContext;

    SPI_connect();
    int guc_level = internal_sql_begin();
    StatusTarget target = resolve(fcinfo, table);

    // The row, as the table's owner (the cast too). Several rows with this
    // user id: one still without an id answers.
    char *row_query = psprintf("SELECT t.%s, t.%s FROM %s AS t WHERE t.%s %s $1::%s "
                               "ORDER BY t.%s IS NULL DESC LIMIT 1",
                               target.key_sql, target.id_sql, target.table_sql, target.key_sql,
                               target.key_equals, target.key_base_sql, target.id_sql);
    Oid row_types[1] = {TEXTOID};
    Datum row_values[1] = {CStringGetTextDatum(user_id)};
    bool found = false;
    char *key = nullptr;
    char *id = nullptr;
    if (ErrorData *error = run_as_owner(target.owner, OwnerLimits{0, 0}, [&] {
            select_or_fail(row_query, 1, row_types, row_values);
            if (SPI_processed == 0)
                return;
            found = true;
            HeapTuple row = SPI_tuptable->vals[0];
            key = bounded_key_text(row, SPI_tuptable->tupdesc, 1);
            bool too_large = false; // only a forged id can be: left out
            id = bounded_text(row, SPI_tuptable->tupdesc, 2, &too_large);
        }))
        ReThrowError(error);

    // The outbox knows the row by its key as the trigger wrote it. A key in
    // a bulk row is pending as if expanded (no attempt yet, due since it was
    // queued); an entry of its own, if any, says more.
    char *bulk_entries =
        target.has_bulk
            ? psprintf("UNION ALL SELECT 'pending', 0, b.enqueued_at, NULL, b.enqueued_at, NULL "
                       "FROM %s.dfend_outbox_bulk AS b WHERE b.table_name "
                       "OPERATOR(pg_catalog.=) $1 AND $2 OPERATOR(pg_catalog.=) ANY (b.user_ids) ",
                       target.schema_sql)
            : pstrdup("");
    char *entry_query = psprintf(
        "SELECT e.state, e.attempts, e.next_attempt_at, e.last_error, e.enqueued_at FROM ("
        "SELECT o.state, o.attempts, o.next_attempt_at, o.last_error, o.enqueued_at, o.entry_id "
        "FROM %s.dfend_outbox AS o WHERE o.table_name OPERATOR(pg_catalog.=) $1 "
        "AND o.user_id OPERATOR(pg_catalog.=) $2 %s) "
        "AS e(state, attempts, next_attempt_at, last_error, enqueued_at, entry_id) "
        "ORDER BY e.state OPERATOR(pg_catalog.=) 'pending' DESC, e.entry_id DESC NULLS LAST "
        "LIMIT 1",
        target.schema_sql, bulk_entries);
    Oid entry_types[2] = {REGCLASSOID, TEXTOID};
    Datum entry_values[2] = {ObjectIdGetDatum(table), CStringGetTextDatum(key ? key : user_id)};
    Datum values[6] = {};
    bool nulls[6] = {false, true, true, true, true, true};
    const char *state = nullptr;
    as_extension_owner(target.extension_owner, [&] {
        select_or_fail(entry_query, 2, entry_types, entry_values);
        if (SPI_processed == 0)
            return;
        HeapTuple entry = SPI_tuptable->vals[0];
        TupleDesc desc = SPI_tuptable->tupdesc;
        bool pending = strcmp(SPI_getvalue(entry, desc, 1), "pending") == 0;
        state = pending ? "pending" : "dead";
        values[2] = SPI_getbinval(entry, desc, 2, &nulls[2]);
        if (pending)
            values[3] = SPI_getbinval(entry, desc, 3, &nulls[3]);
        values[4] = SPI_getbinval(entry, desc, 4, &nulls[4]);
        values[5] = SPI_getbinval(entry, desc, 5, &nulls[5]);
    });
    if (!found)
        state = "no such row";
    else if (id)
        state = "stored";
    else if (!state)
        state = "not queued";
    values[0] = CStringGetTextDatum(state);
    if (id) {
        values[1] = CStringGetTextDatum(id);
        nulls[1] = false;
    }

    // Built where it outlives SPI_finish (the entry's values are SPI's).
    MemoryContext spi_context = MemoryContextSwitchTo(caller_context);
    HeapTuple result = heap_form_tuple(result_type, values, nulls);
    MemoryContextSwitchTo(spi_context);
    internal_sql_end(guc_level);
    SPI_finish();
    PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

// dfend_table_status(table_name regclass)
//   -> (rows, stored, without_id, pending, dead, not_queued, oldest_pending_age)
// Every row is counted once: rows = stored + without_id, and without_id =
// pending + dead + not_queued by the row's outbox entry. The keys of rows
// without an id are read as the owner in chunks (bounded memory) and looked
// up in the outbox as the extension's owner.
PG_FUNCTION_INFO_V1(dfend_table_status);
Datum dfend_table_status(PG_FUNCTION_ARGS)
{
    Oid table = PG_GETARG_OID(0);
    TupleDesc result_type = composite_result_type(fcinfo);
    MemoryContext caller_context = CurrentMemoryContext;

    SPI_connect();
    int guc_level = internal_sql_begin();
    StatusTarget target = resolve(fcinfo, table);

    char *count_query = psprintf("SELECT pg_catalog.count(*), pg_catalog.count(t.%s) FROM %s AS t",
                                 target.id_sql, target.table_sql);
    char *first = psprintf("SELECT t.%s FROM %s AS t WHERE t.%s IS NULL AND t.%s IS NOT NULL "
                           "ORDER BY t.%s LIMIT %d",
                           target.key_sql, target.table_sql, target.id_sql, target.key_sql,
                           target.key_sql, kChunk);
    char *next = psprintf("SELECT t.%s FROM %s AS t WHERE t.%s IS NULL AND t.%s IS NOT NULL "
                          "AND t.%s %s $1 ORDER BY t.%s LIMIT %d",
                          target.key_sql, target.table_sql, target.id_sql, target.key_sql,
                          target.key_sql, target.key_greater, target.key_sql, kChunk);
    // A user id with a pending entry is pending, else one with a dead entry
    // is dead; a key in a bulk row is pending. Duplicate keys in the chunk
    // are rows of their own.
    char *bulk_entries =
        target.has_bulk
            ? psprintf("UNION ALL SELECT u.user_id, true, b.enqueued_at "
                       "FROM %s.dfend_outbox_bulk AS b, pg_catalog.unnest(b.user_ids) AS u(user_id) "
                       "WHERE b.table_name OPERATOR(pg_catalog.=) $1 "
                       "AND u.user_id OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) ",
                       target.schema_sql)
            : pstrdup("");
    char *entries = psprintf(
        "SELECT pg_catalog.count(*) FILTER (WHERE e.pending), "
        "pg_catalog.count(*) FILTER (WHERE NOT e.pending), pg_catalog.min(e.oldest) "
        "FROM pg_catalog.unnest($2::pg_catalog.text[]) AS k(user_id) JOIN ("
        "SELECT a.user_id, pg_catalog.bool_or(a.pending) AS pending, "
        "pg_catalog.min(a.enqueued_at) FILTER (WHERE a.pending) AS oldest FROM ("
        "SELECT o.user_id, o.state OPERATOR(pg_catalog.=) 'pending', o.enqueued_at "
        "FROM %s.dfend_outbox AS o WHERE o.table_name OPERATOR(pg_catalog.=) $1 "
        "AND o.user_id OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]) %s"
        ") AS a(user_id, pending, enqueued_at) GROUP BY a.user_id"
        ") AS e ON e.user_id OPERATOR(pg_catalog.=) k.user_id",
        target.schema_sql, bulk_entries);

    int64 rows = 0, stored = 0, pending = 0, dead = 0;
    bool have_oldest = false;
    TimestampTz oldest = 0;
    if (ErrorData *error = run_as_owner(target.owner, OwnerLimits{0, 0}, [&] {
            select_or_fail(count_query, 0, nullptr, nullptr);
            bool isnull;
            rows = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
                                               &isnull));
            stored = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
                                                 &isnull));
        }))
        ReThrowError(error);

    int16 key_length;
    bool key_by_value;
    get_typlenbyval(target.key_type, &key_length, &key_by_value);
    MemoryContext outer = CurrentMemoryContext;
    MemoryContext chunk_context =
        AllocSetContextCreate(outer, "dfend status chunk", ALLOCSET_DEFAULT_SIZES);
    bool have_last = false;
    Datum last_key = (Datum) 0;
    for (;;) {
        MemoryContextSwitchTo(chunk_context);
        SPITupleTable *keys = nullptr;
        Oid after_type[1] = {target.key_type};
        Datum after[1] = {last_key};
        if (ErrorData *error = run_as_owner(target.owner, OwnerLimits{0, 0}, [&] {
                select_or_fail(have_last ? next : first, have_last ? 1 : 0, after_type, after);
                keys = SPI_tuptable;
            }))
            ReThrowError(error);
        int count = (int) keys->numvals;
        // The lock taken in resolve makes this hold; a key of another type
        // would be handed back to PostgreSQL as garbage.
        if (keys->tupdesc->natts != 1 || SPI_gettypeid(keys->tupdesc, 1) != target.key_type)
            elog(ERROR, "the type of column %s of table %s changed", target.key_sql,
                 target.table_sql);
        char **texts = (char **) palloc(sizeof(char *) * (count > 0 ? count : 1));
        int text_count = 0;
        for (int i = 0; i < count; ++i)
            // A key longer than kMaxFieldBytes is never queued: not_queued.
            if (char *text = bounded_key_text(keys->vals[i], keys->tupdesc, 1))
                texts[text_count++] = text;
        if (text_count > 0) {
            Oid types[2] = {REGCLASSOID, TEXTARRAYOID};
            Datum values[2] = {ObjectIdGetDatum(table),
                               PointerGetDatum(text_array(texts, text_count))};
            as_extension_owner(target.extension_owner, [&] {
                select_or_fail(entries, 2, types, values);
                HeapTuple counts = SPI_tuptable->vals[0];
                TupleDesc desc = SPI_tuptable->tupdesc;
                bool isnull;
                pending += DatumGetInt64(SPI_getbinval(counts, desc, 1, &isnull));
                dead += DatumGetInt64(SPI_getbinval(counts, desc, 2, &isnull));
                TimestampTz chunk_oldest = DatumGetTimestampTz(SPI_getbinval(counts, desc, 3,
                                                                             &isnull));
                if (!isnull && (!have_oldest || chunk_oldest < oldest)) {
                    oldest = chunk_oldest;
                    have_oldest = true;
                }
                SPI_freetuptable(SPI_tuptable);
            });
        }
        if (count > 0) {
            bool isnull;
            Datum key = SPI_getbinval(keys->vals[count - 1], keys->tupdesc, 1, &isnull);
            MemoryContextSwitchTo(outer);
            if (have_last && !key_by_value)
                pfree(DatumGetPointer(last_key));
            last_key = datumCopy(key, key_by_value, key_length);
            have_last = true;
        }
        MemoryContextSwitchTo(outer);
        SPI_freetuptable(keys);
        MemoryContextReset(chunk_context);
        if (count < kChunk)
            break;
    }

    int64 without_id = rows - stored;
    Datum values[7] = {Int64GetDatum(rows),
                       Int64GetDatum(stored),
                       Int64GetDatum(without_id),
                       Int64GetDatum(pending),
                       Int64GetDatum(dead),
                       Int64GetDatum(std::max<int64>(without_id - pending - dead, 0)),
                       (Datum) 0};
    bool nulls[7] = {false, false, false, false, false, false, !have_oldest};
    MemoryContextSwitchTo(caller_context);
    if (have_oldest)
        // now(), as dfend_queue_status computes its age.
        values[6] = DirectFunctionCall2(timestamp_mi,
                                        TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
                                        TimestampTzGetDatum(oldest));
    HeapTuple result = heap_form_tuple(result_type, values, nulls);
    MemoryContextSwitchTo(outer);
    internal_sql_end(guc_level);
    SPI_finish();
    PG_RETURN_DATUM(HeapTupleGetDatum(result));
}

} // extern "C"
