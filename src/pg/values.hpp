// Small conversions between SQL values and what the core speaks (UTF-8).
#pragma once

#include <string>

#include "postgres.hpp"

namespace dfend::pg {

// PostgreSQL-style: the blessed row type of a function returning a record.
TupleDesc composite_result_type(FunctionCallInfo fcinfo);
// PostgreSQL-style: server-encoded text as UTF-8 (nullptr stays nullptr).
char *utf8_string(char *server_text);
// PostgreSQL-style: "OPERATOR(schema.op)" for the btree operator of
// `strategy` (BTLessStrategyNumber, ...) in the type's default btree
// operator family, or nullptr when there is none. Qualified, so SQL built
// with it means the same under any search_path.
char *btree_operator(Oid type, int16 strategy);
// PostgreSQL-style: "t.<column>", quoted, for SQL that names a user table
// "t"; "NULL" when the column is nullptr (not mapped).
char *column_or_null(const char *column);
// PostgreSQL-style: a text[] of `count` C strings.
ArrayType *text_array(char **values, int count);
// C++-style: a UTF-8 string from DFend in the server encoding, palloc'd.
char *server_string(const std::string &utf8);

} // namespace dfend::pg
