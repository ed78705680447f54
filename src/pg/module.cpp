// Module entry: PG_MODULE_MAGIC and _PG_init.
#include "core/version.hpp"
#include "backpressure.hpp"
#include "launcher.hpp"
#include "settings.hpp"
#include "statements.hpp"
#include "stats.hpp"
#include "worker_slots.hpp"

#include "postgres.hpp"

extern "C" {

DFEND_MODULE_MAGIC(dfend::kVersion);

void _PG_init(void);

void _PG_init(void)
{
    dfend::pg::note_loaded_at_startup(process_shared_preload_libraries_in_progress);
    dfend::pg::install_stats(process_shared_preload_libraries_in_progress);
    dfend::pg::install_backpressure(process_shared_preload_libraries_in_progress);
    dfend::pg::define_settings();
    dfend::pg::install_worker_slot_hooks(process_shared_preload_libraries_in_progress);
    dfend::pg::install_statement_hook();
    if (process_shared_preload_libraries_in_progress)
        dfend::pg::register_launcher();
}

} // extern "C"
