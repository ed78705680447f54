#include "owner.hpp"

extern "C" {
#include "access/detoast.h"
#include "common/shortest_dec.h"
#include "catalog/pg_class.h"
#include "utils/resowner.h"
#include "utils/timeout.h"
}

namespace dfend::pg {

namespace {

constexpr const char *kSafeSearchPath = "pg_catalog, pg_temp";

// The step timer: a timeout of our own, so it never disturbs the caller's
// statement_timeout, and so its cancel can be told from a real one.
TimeoutId step_timeout = MAX_TIMEOUTS;
volatile sig_atomic_t step_timed_out = false;

void on_step_timeout()
{
    step_timed_out = true;
    QueryCancelPending = true;
    InterruptPending = true;
    SetLatch(MyLatch);
}

void arm_step_timer(int timeout_ms)
{
    if (step_timeout == MAX_TIMEOUTS)
        step_timeout = RegisterTimeout(USER_TIMEOUT, on_step_timeout);
    step_timed_out = false;
    enable_timeout_after(step_timeout, timeout_ms);
}

void disarm_step_timer(OwnerScope *scope)
{
    if (scope->timer_armed)
        disable_timeout(step_timeout, false);
    scope->timer_armed = false;
}

void set_guc(const char *name, const char *value)
{
    (void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0,
                             false);
}

// This backend is being cancelled, timed out or shut down: the caller must
// stop, not record a failure of one table. Everything else (a trigger that
// raises 57014 or 40P01 itself, a lock timeout, our step timer) concerns the
// table alone.
bool is_real_interrupt(const ErrorData *error, bool timed_out)
{
    return !timed_out && error->funcname && strcmp(error->funcname, "ProcessInterrupts") == 0 &&
           error->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE;
}

bool is_text_category(Oid type)
{
    char category;
    bool preferred;
    get_type_category_preferred(getBaseType(type), &category, &preferred);
    return category == TYPCATEGORY_STRING;
}

} // namespace

int internal_sql_begin()
{
    int nest_level = NewGUCNestLevel();
    set_guc("search_path", kSafeSearchPath);
    return nest_level;
}

void internal_sql_end(int nest_level)
{
    // false: nothing set inside dfend's own SQL outlives it (run_as_owner
    // already undoes what the owner's code sets; this is the second line).
    AtEOXact_GUC(false, nest_level);
}

void owner_scope_enter(Oid owner, const OwnerLimits &limits, OwnerScope *scope)
{
    scope->context = CurrentMemoryContext;
    scope->resource_owner = CurrentResourceOwner;
    scope->timer_armed = false;
    GetUserIdAndSecContext(&scope->saved_user, &scope->saved_security);
    BeginInternalSubTransaction(nullptr);
    MemoryContextSwitchTo(scope->context);
    // The subtransaction's abort restores the user and the settings.
    SetUserIdAndSecContext(owner, scope->saved_security | SECURITY_LOCAL_USERID_CHANGE |
                                      SECURITY_RESTRICTED_OPERATION);
    scope->nest_level = NewGUCNestLevel();
    set_guc("search_path", kSafeSearchPath);
    if (limits.lock_timeout_ms > 0) {
        char value[32];
        snprintf(value, sizeof value, "%d", limits.lock_timeout_ms);
        set_guc("lock_timeout", value);
    }
    if (limits.timeout_ms > 0) {
        arm_step_timer(limits.timeout_ms);
        scope->timer_armed = true;
    }
}

void owner_scope_commit(OwnerScope *scope)
{
    disarm_step_timer(scope);
    // false, as PostgreSQL's own security-restricted operations do: every
    // setting the owner's code changed is put back, a plain SET included (a
    // SET survives a "committed" nest level, and a search_path the owner
    // chose would then resolve the operators of dfend's own statements).
    AtEOXact_GUC(false, scope->nest_level);
    SetUserIdAndSecContext(scope->saved_user, scope->saved_security);
    ReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(scope->context);
    CurrentResourceOwner = scope->resource_owner;
}

ErrorData *owner_scope_abort(OwnerScope *scope)
{
    bool timed_out = scope->timer_armed && step_timed_out;
    disarm_step_timer(scope);
    step_timed_out = false;
    MemoryContextSwitchTo(scope->context);
    ErrorData *error = CopyErrorData();
    FlushErrorState();
    RollbackAndReleaseCurrentSubTransaction();
    MemoryContextSwitchTo(scope->context);
    CurrentResourceOwner = scope->resource_owner;
    if (is_real_interrupt(error, timed_out))
        ReThrowError(error);
    if (timed_out)
        error->message = pstrdup("canceled after dfend.table_timeout");
    return error;
}

Oid relation_owner(Oid table)
{
    HeapTuple tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(table));
    if (!HeapTupleIsValid(tuple))
        return InvalidOid;
    Oid owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
    ReleaseSysCache(tuple);
    return owner;
}

bool holds_dfend_ids(Oid type)
{
    Oid base = getBaseType(type);
    return base == TEXTOID || base == VARCHAROID || base == BPCHAROID;
}

char *check_mapping(Oid table, const char *user_id_column, const char *id_column,
                    const char *email_column, const char *phone_column,
                    const char *metadata_column, int *sqlstate)
{
    int ignored;
    if (!sqlstate)
        sqlstate = &ignored;
    *sqlstate = ERRCODE_UNDEFINED_TABLE;
    char relkind = get_rel_relkind(table);
    char *name = get_rel_name(table);
    if (!name)
        return psprintf("relation with OID %u does not exist", table);
    char *qualified = quote_qualified_identifier(get_namespace_name(get_rel_namespace(table)),
                                                 name);
    *sqlstate = ERRCODE_WRONG_OBJECT_TYPE;
    if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
        return psprintf("%s is not a table", qualified);

    struct Column {
        const char *name;
        const char *role;
    } columns[] = {{user_id_column, "user id"}, {id_column, "id"},
                   {email_column, "email"},     {phone_column, "phone"},
                   {metadata_column, "metadata"}};
    for (const Column &column : columns) {
        if (!column.name)
            continue;
        AttrNumber number = get_attnum(table, column.name);
        *sqlstate = ERRCODE_UNDEFINED_COLUMN;
        if (number == InvalidAttrNumber)
            return psprintf("column \"%s\" of table %s does not exist", column.name, qualified);
        Oid type = get_atttype(table, number);
        Oid base = getBaseType(type);
        const char *needed = nullptr;
        if (column.name == id_column && !holds_dfend_ids(type))
            needed = "text, varchar or char (or a domain over one of them)";
        else if (column.name == user_id_column) {
            char category;
            bool preferred;
            get_type_category_preferred(base, &category, &preferred);
            // money prints by the session's lc_monetary: no stable key.
            if ((category != TYPCATEGORY_STRING && category != TYPCATEGORY_NUMERIC &&
                 base != UUIDOID) ||
                base == CASHOID)
                needed = "a text, numeric (not money) or uuid type";
        } else if ((column.name == email_column || column.name == phone_column) &&
                   !is_text_category(type))
            needed = "a text type";
        else if (column.name == metadata_column && base != JSONOID && base != JSONBOID)
            needed = "json or jsonb";
        *sqlstate = ERRCODE_DATATYPE_MISMATCH;
        if (needed)
            return psprintf("the %s column \"%s\" of table %s has type %s; %s is needed",
                            column.role, column.name, qualified, format_type_be(type), needed);
    }
    return nullptr;
}

char *bounded_text(HeapTuple row, TupleDesc desc, int column, bool *too_large)
{
    bool isnull = true;
    Datum value = heap_getattr(row, column, desc, &isnull);
    if (isnull)
        return nullptr;
    Form_pg_attribute attribute = TupleDescAttr(desc, column - 1);
    // The size a varlena will have once decompressed and fetched, read from
    // its header or TOAST pointer alone.
    if (attribute->attlen == -1 &&
        toast_raw_datum_size(value) > (Size) kMaxFieldBytes + VARHDRSZ) {
        *too_large = true;
        return nullptr;
    }
    Oid output;
    bool is_varlena;
    getTypeOutputInfo(attribute->atttypid, &output, &is_varlena);
    return OidOutputFunctionCall(output, value);
}

char *read_contact_fields(HeapTuple row, TupleDesc desc, int first_column, char **email,
                          char **phone, char **metadata)
{
    static const char *const names[] = {"email", "phone", "metadata"};
    char **fields[] = {email, phone, metadata};
    for (int f = 0; f < 3; ++f) {
        bool too_large = false;
        *fields[f] = bounded_text(row, desc, first_column + f, &too_large);
        if (too_large)
            return psprintf("the %s of the row is larger than %d bytes", names[f],
                            kMaxFieldBytes);
    }
    return nullptr;
}

void prepare_key_printer(KeyPrinter *printer, Oid type)
{
    printer->base = getBaseType(type);
    if (printer->base == FLOAT8OID || printer->base == FLOAT4OID)
        return;
    Oid output;
    bool is_varlena;
    getTypeOutputInfo(type, &output, &is_varlena);
    fmgr_info(output, &printer->output);
}

char *print_key(KeyPrinter *printer, Datum value)
{
    if (printer->base == FLOAT8OID) {
        char *text = (char *) palloc(DOUBLE_SHORTEST_DECIMAL_LEN);
        double_to_shortest_decimal_buf(DatumGetFloat8(value), text);
        return text;
    }
    if (printer->base == FLOAT4OID) {
        char *text = (char *) palloc(FLOAT_SHORTEST_DECIMAL_LEN);
        float_to_shortest_decimal_buf(DatumGetFloat4(value), text);
        return text;
    }
    return OutputFunctionCall(&printer->output, value);
}

char *key_text(Datum value, Oid type)
{
    KeyPrinter printer;
    prepare_key_printer(&printer, type);
    return print_key(&printer, value);
}

char *bounded_key_text(HeapTuple row, TupleDesc desc, int column)
{
    bool isnull = true;
    Datum value = heap_getattr(row, column, desc, &isnull);
    Form_pg_attribute attribute = TupleDescAttr(desc, column - 1);
    if (isnull || (attribute->attlen == -1 &&
                   toast_raw_datum_size(value) > (Size) kMaxFieldBytes + VARHDRSZ))
        return nullptr;
    char *text = key_text(value, attribute->atttypid);
    if (getBaseType(TupleDescAttr(desc, column - 1)->atttypid) == BPCHAROID) {
        int length = (int) strlen(text);
        while (length > 0 && text[length - 1] == ' ')
            --length;
        text[length] = '\0';
    }
    return text;
}

} // namespace dfend::pg
