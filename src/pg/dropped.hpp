// Where a DBA sees the fields a registration left out (dfend_dropped_field):
// written by the outbox (worker and COMMIT) and by backfills, only for rows
// whose DFend id was stored.
#pragma once

#include "postgres.hpp"

namespace dfend::pg {

// One field left out of one user's registration.
struct DroppedRow {
    const char *user_id; // as the outbox stores it: the key as text
    const char *field;   // "email", "phone" or "metadata"
    const char *reason;  // valid in the server encoding (server_text)
};

// PostgreSQL-style; inside SPI. The users of `table` in `registered` were
// just registered and their ids stored: their rows in dfend_dropped_field
// become `dropped` (none when nothing was left out, so a corrected field
// stops being listed). Runs as the extension's owner, so a backfill's caller
// needs no grant on dfend's table; the statements are fixed and touch only
// that table.
void record_dropped_fields(Oid table, const char *const *registered, int registered_count,
                           const DroppedRow *dropped, int dropped_count);

} // namespace dfend::pg
