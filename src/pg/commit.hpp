// Sync mode: a sync table's new rows are registered by the COMMIT that
// stores them, never before (a row that is rolled back, skipped by ON
// CONFLICT or refused by a constraint is never sent to DFend).
#pragma once

#include <cstdint>

namespace dfend::pg {

// PostgreSQL-style. Asks the current transaction's COMMIT to register the
// outbox entry `entry_id` (just added by the trigger) before it completes.
void register_at_commit(std::int64_t entry_id);

} // namespace dfend::pg
