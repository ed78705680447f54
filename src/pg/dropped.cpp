// dfend_dropped_field: replaced per user on every stored registration.
// PostgreSQL-style.
#include "dropped.hpp"

#include "outbox.hpp"
#include "owner.hpp"
#include "values.hpp"

#include <algorithm>

#include "postgres.hpp"

namespace dfend::pg {

namespace {

void run(const char *query, int nargs, Oid *types, Datum *args, int expected)
{
    int result = SPI_execute_with_args(query, nargs, types, args, nullptr, false, 0);
    if (result != expected)
        elog(ERROR, "dfend dropped-field statement failed: %s", SPI_result_code_string(result));
}

} // namespace

void record_dropped_fields(Oid table, const char *const *registered, int registered_count,
                           const DroppedRow *dropped, int dropped_count)
{
    const char *schema = outbox_schema();
    if (!schema || registered_count == 0)
        return;
    // Not there before ALTER EXTENSION dfend UPDATE to 0.3.0; nothing is
    // dropped then either (attachments read as 'reject').
    if (!OidIsValid(get_relname_relid("dfend_dropped_field", outbox_namespace()))) {
        if (dropped_count > 0)
            elog(ERROR, "table dfend_dropped_field does not exist");
        return;
    }
    as_extension_owner(outbox_owner(), [&] {
        char *remove = psprintf("DELETE FROM %s.dfend_dropped_field AS f "
                                "WHERE f.table_name OPERATOR(pg_catalog.=) $1 "
                                "AND f.user_id OPERATOR(pg_catalog.=) ANY ($2)",
                                schema);
        Oid remove_types[2] = {REGCLASSOID, TEXTARRAYOID};
        Datum remove_args[2] = {
            ObjectIdGetDatum(table),
            PointerGetDatum(text_array(const_cast<char **>(registered), registered_count))};
        run(remove, 2, remove_types, remove_args, SPI_OK_DELETE);

        if (dropped_count > 0) {
            char **users = (char **) palloc(sizeof(char *) * dropped_count);
            char **fields = (char **) palloc(sizeof(char *) * dropped_count);
            char **reasons = (char **) palloc(sizeof(char *) * dropped_count);
            for (int i = 0; i < dropped_count; ++i) {
                users[i] = const_cast<char *>(dropped[i].user_id);
                fields[i] = const_cast<char *>(dropped[i].field);
                reasons[i] = const_cast<char *>(dropped[i].reason);
            }
            // DISTINCT ON: a field listed twice must not fail the whole batch
            // on the primary key (callers list each user once).
            char *insert = psprintf(
                "INSERT INTO %s.dfend_dropped_field (table_name, user_id, field, reason) "
                "SELECT DISTINCT ON (v.user_id, v.field) $1, v.user_id, v.field, v.reason "
                "FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), "
                "pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[])) "
                "AS v(user_id, field, reason)",
                schema);
            Oid insert_types[4] = {REGCLASSOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
            Datum insert_args[4] = {ObjectIdGetDatum(table),
                                    PointerGetDatum(text_array(users, dropped_count)),
                                    PointerGetDatum(text_array(fields, dropped_count)),
                                    PointerGetDatum(text_array(reasons, dropped_count))};
            run(insert, 4, insert_types, insert_args, SPI_OK_INSERT);
        }
    });
}

} // namespace dfend::pg
