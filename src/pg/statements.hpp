// The hooks that keep the API key out of SQL text, the server log and
// pg_stat_activity (statements.cpp).
#pragma once

namespace dfend::pg {

// Called from _PG_init.
void install_statement_hook();

} // namespace dfend::pg
