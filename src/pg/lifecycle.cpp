// DROP EXTENSION dfend takes the outbox with it. Pending entries are rows
// that were never registered, so the DBA is told how many (and how to get
// them back), instead of losing them silently.
#include "lifecycle.hpp"

#include "outbox.hpp"
#include "owner.hpp"

extern "C" {
#include "nodes/parsenodes.h"
#include "utils/acl.h"
}

namespace dfend::pg {

namespace {

bool drops_dfend(Node *statement)
{
    if (!statement || !IsA(statement, DropStmt))
        return false;
    DropStmt *drop = (DropStmt *) statement;
    if (drop->removeType != OBJECT_EXTENSION)
        return false;
    ListCell *cell;
    foreach (cell, drop->objects) {
        Node *object = (Node *) lfirst(cell);
        if (IsA(object, String) && strcmp(strVal(object), "dfend") == 0)
            return true;
    }
    return false;
}

} // namespace

int64 pending_entries_dropped_by(Node *statement)
{
    if (!drops_dfend(statement))
        return -1;
    const char *schema = outbox_schema();
    if (!schema)
        return -1;
    Oid outbox = get_relname_relid("dfend_outbox", outbox_namespace());
    if (!OidIsValid(outbox) || pg_class_aclcheck(outbox, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
        return -1;
    // The user ids a bulk statement queued count as the entries they become.
    Oid bulk = get_relname_relid("dfend_outbox_bulk", outbox_namespace());
    bool with_bulk =
        OidIsValid(bulk) && pg_class_aclcheck(bulk, GetUserId(), ACL_SELECT) == ACLCHECK_OK;
    SPI_connect();
    int nest_level = internal_sql_begin();
    int64 pending = -1;
    char *query = psprintf(
        "SELECT (SELECT pg_catalog.count(*) FROM %s.dfend_outbox "
        "WHERE state OPERATOR(pg_catalog.=) 'pending') OPERATOR(pg_catalog.+) %s",
        schema,
        with_bulk ? psprintf("(SELECT COALESCE(pg_catalog.sum(pg_catalog.cardinality(user_ids)), 0) "
                             "FROM %s.dfend_outbox_bulk)",
                             schema)
                  : "0");
    if (SPI_execute(query, true, 1) == SPI_OK_SELECT && SPI_processed == 1) {
        bool isnull = true;
        Datum value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
        if (!isnull)
            pending = DatumGetInt64(value);
    }
    internal_sql_end(nest_level);
    SPI_finish();
    return pending;
}

void warn_discarded_entries(int64 pending)
{
    if (pending <= 0)
        return;
    ereport(WARNING,
            (errmsg_plural("dropping extension dfend discarded %lld pending outbox entry",
                           "dropping extension dfend discarded %lld pending outbox entries",
                           (unsigned long) pending, (long long) pending),
             errdetail("Their rows were never registered with DFend, and have no DFend id."),
             errhint("After CREATE EXTENSION dfend and dfend_attach, call "
                     "dfend_enqueue_backfill() for each table to queue them again.")));
}

} // namespace dfend::pg
