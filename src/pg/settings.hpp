// The dfend.* settings, and the API key's secrecy rules.
#pragma once

#include "../core/identity_client.hpp"
#include "../core/key_file.hpp"

namespace dfend::pg {

// Called from _PG_init.
void define_settings();

// The settings in force for the next call, with the key resolved
// (dfend.api_key, else the contents of dfend.api_key_file). C++-style:
// throws Error(Configuration) for an unusable key route.
ClientSettings current_client_settings(KeyFileCache &key_files);

// The outbox worker's settings (reloaded on SIGHUP).
struct OutboxSettings {
    int concurrency;      // dfend.worker_concurrency
    int batch_size;       // dfend.worker_batch_size
    int max_attempts;     // dfend.max_attempts
    double max_rate;      // dfend.max_rate, requests per second, 0 = no cap
    int poll_interval_ms; // dfend.worker_poll_interval
};
OutboxSettings current_outbox_settings();
// dfend.table_timeout: how long the worker's statements on one user table may
// run, in milliseconds (0 = no limit).
int table_timeout_ms();
// dfend.sync_timeout: how long COMMIT may wait to register a sync table's
// rows, in milliseconds (0 = leave them all to the worker).
int sync_timeout_ms();
// dfend.missing_row_timeout: how long an entry whose row is not visible is
// kept, in seconds.
int missing_row_timeout_s();
// dfend.log_interval: how often a LOG line about DFend failing may repeat,
// in milliseconds.
int log_interval_ms();
// dfend.dead_letter_after: how long an entry's transient failures may go on
// before it is dead (with dfend.max_attempts), in seconds.
int dead_letter_after_s();
// dfend.worker_databases: "*" (all databases) or comma-separated names.
const char *worker_databases();

// From _PG_init: whether the library is being loaded through
// shared_preload_libraries (which the key's secrecy depends on).
void note_loaded_at_startup(bool value);

} // namespace dfend::pg
