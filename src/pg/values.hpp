// Small conversions between SQL values and what the core speaks (UTF-8).
#pragma once

#include <string>

#include "postgres.hpp"

namespace dfend::pg {

// PostgreSQL-style: the blessed row type of a function returning a record.
TupleDesc composite_result_type(FunctionCallInfo fcinfo);
// PostgreSQL-style: server-encoded text as UTF-8 (nullptr stays nullptr).
char *utf8_string(char *server_text);
// C++-style: a UTF-8 string from DFend in the server encoding, palloc'd.
char *server_string(const std::string &utf8);

} // namespace dfend::pg
