// Request statistics in shared memory, cluster-wide: one row per database
// and source (dfend_stats), a bounded log of recent failed requests
// (dfend_failed_requests), and LOG lines when a systemic failure (a
// rejected key, TLS, no connection) starts or stops in a database.
#pragma once

#include "../core/observer.hpp"

namespace dfend::pg {

// Who sent the request; the order is the view's.
enum class StatsSource { Sql, Trigger, Worker, Backfill };

// From _PG_init, before define_settings (which reserves the dfend. prefix):
// dfend.failed_request_log_size and, when preloaded, the shared memory.
void install_stats(bool preloaded);

// Either style: the observer that counts a source's requests in shared
// memory (nothing when dfend is not preloaded). It never ereports, never
// pallocs and never throws, so C++ frames may call it (src/core/observer.hpp).
RequestObserver *request_observer(StatsSource source) noexcept;

// PostgreSQL-style, inside a transaction: LOG lines for the systemic
// failures of the current database that started or stopped since the last
// line, at most one per minute per kind and database.
void log_systemic_failures();

} // namespace dfend::pg
