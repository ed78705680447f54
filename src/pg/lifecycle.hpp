// What dfend does around the extension's own life cycle statements.
#pragma once

#include "postgres.hpp"

namespace dfend::pg {

// For DROP EXTENSION dfend: the pending outbox entries it is about to
// discard (-1 for any other statement, or when the caller may not read the
// outbox). Called by the ProcessUtility hook before the statement runs.
int64 pending_entries_dropped_by(Node *statement);

// After the statement succeeded: the WARNING that says what was discarded.
void warn_discarded_entries(int64 pending);

} // namespace dfend::pg
