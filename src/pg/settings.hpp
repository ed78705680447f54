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

// True when the library was loaded through shared_preload_libraries.
bool loaded_at_startup();
void note_loaded_at_startup(bool value);

} // namespace dfend::pg
