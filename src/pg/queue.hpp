// The outbox's link to the background worker.
#pragma once

namespace dfend::pg {

// PostgreSQL-style. Marks the current transaction as having added pending
// outbox entries: when it commits, the worker serving this database is woken
// at once (a latch), so entries need no polling. Costs one flag per call; the
// commit callback is registered once per backend, not per transaction.
void note_enqueued();

} // namespace dfend::pg
