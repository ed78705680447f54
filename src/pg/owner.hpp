// The one rule for every privileged path (see SECURITY.md).
//
// dfend runs with more rights than the roles whose tables it touches: the
// worker is a superuser, the sync trigger is SECURITY DEFINER, backfills run
// as superusers. So:
//   - dfend's own SQL runs with search_path = pg_catalog, pg_temp
//     (internal_sql_begin / internal_sql_end) and names its operators with
//     their schema;
//   - a user's relation is read or written only through run_as_owner: as the
//     relation's owner, in a security-restricted operation, in a
//     subtransaction, as PostgreSQL runs VACUUM or REFRESH MATERIALIZED VIEW;
//   - only after check_mapping has confirmed the relation is still a table
//     and its columns still have the types dfend_attach accepted.
// PostgreSQL-style code throughout.
#pragma once

#include "postgres.hpp"

namespace dfend::pg {

// The most bytes dfend reads from one column of a user's row. Larger values
// make the row a dead letter instead of being read into memory.
constexpr int kMaxFieldBytes = 64 * 1024;

// Limits for one step on a user's relation; 0 means none.
struct OwnerLimits {
    int timeout_ms;      // the whole step (dfend.table_timeout for the worker)
    int lock_timeout_ms; // each lock wait
};

// Sets search_path = pg_catalog, pg_temp for dfend's own SQL until
// internal_sql_end (or the end of the transaction). Returns the GUC nest level.
int internal_sql_begin();
void internal_sql_end(int nest_level);

// Runs `step` (dfend's own SQL on its own tables) with the rights of
// `owner` (the extension's), as a SECURITY DEFINER function would. Not for
// users' tables: those go through run_as_owner. PostgreSQL-style: an error
// in `step` propagates, and the transaction's abort restores the user.
template <typename Step>
void as_extension_owner(Oid owner, Step &&step)
{
    Oid saved_user;
    int saved_context;
    GetUserIdAndSecContext(&saved_user, &saved_context);
    SetUserIdAndSecContext(owner, saved_context | SECURITY_LOCAL_USERID_CHANGE);
    step();
    SetUserIdAndSecContext(saved_user, saved_context);
}

// Internal: the two halves of run_as_owner.
struct OwnerScope {
    MemoryContext context;
    ResourceOwner resource_owner;
    Oid saved_user;
    int saved_security;
    int nest_level;
    bool timer_armed;
};
void owner_scope_enter(Oid owner, const OwnerLimits &limits, OwnerScope *scope);
void owner_scope_commit(OwnerScope *scope);
// Rolls the step back and returns its error, copied into the caller's
// context; re-raises a real cancel or a shutdown, which must end the caller.
ErrorData *owner_scope_abort(OwnerScope *scope);

// Runs `step` (PostgreSQL-style code: it may ereport, but owns no C++ object
// with a destructor) as `owner`. Returns nullptr on success, or the step's
// error when it failed for any reason that concerns this relation alone: a
// trigger raising any SQLSTATE (57014 and 40P01 included), a lock or step
// timeout, a constraint. Only a real cancel, statement timeout or shutdown
// of this backend propagates.
template <typename Step>
ErrorData *run_as_owner(Oid owner, const OwnerLimits &limits, Step &&step)
{
    OwnerScope scope;
    ErrorData *volatile failure = nullptr;
    owner_scope_enter(owner, limits, &scope);
    PG_TRY();
    {
        step();
        owner_scope_commit(&scope);
    }
    PG_CATCH();
    {
        failure = owner_scope_abort(&scope);
    }
    PG_END_TRY();
    return failure;
}

// Why the relation can no longer be used as attached (relkind, a column gone
// or of a type dfend does not accept), or nullptr. Column names may be
// nullptr when unmapped. The message names the relation and column.
// *sqlstate (when given) gets the error code to raise it with.
char *check_mapping(Oid table, const char *user_id_column, const char *id_column,
                    const char *email_column, const char *phone_column,
                    const char *metadata_column, int *sqlstate = nullptr);

// The owner of a relation (InvalidOid when it is gone).
Oid relation_owner(Oid table);

// Whether a DFend id can be written to a column of this type: text, varchar,
// char(n), or a domain over one of them.
bool holds_dfend_ids(Oid type);

// A column value of a row read from a user's relation, as text in the server
// encoding, or nullptr for NULL. Never reads more than kMaxFieldBytes: a
// larger value sets *too_large (and returns nullptr) without being
// decompressed or fetched.
char *bounded_text(HeapTuple row, TupleDesc desc, int column, bool *too_large);

// The email, phone and metadata of a row (columns first_column to
// first_column + 2, as bounded_text reads them). Returns nullptr, or why the
// row cannot be sent: "the email of the row is larger than N bytes".
char *read_contact_fields(HeapTuple row, TupleDesc desc, int first_column, char **email,
                          char **phone, char **metadata);

// A user id as text, the same in every session: floats in their shortest
// exact form (not by the session's extra_float_digits), other types through
// their output function. The trigger, the worker and the backfill all use it.
char *key_text(Datum value, Oid type);

// key_text with its type's lookups done once, for many values of one
// column (the statement trigger): prepare_key_printer, then print_key.
struct KeyPrinter {
    Oid base;         // the type, or the type a domain is based on
    FmgrInfo output;  // its output function, unless base is a float
};
void prepare_key_printer(KeyPrinter *printer, Oid type);
char *print_key(KeyPrinter *printer, Datum value);

// A user id column's value as its text (key::text: char(n) without its
// padding), or nullptr when it is longer than kMaxFieldBytes.
char *bounded_key_text(HeapTuple row, TupleDesc desc, int column);

} // namespace dfend::pg
