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
// PostgreSQL-style: UTF-8 text in the server encoding, palloc'd. It never
// fails on content: a byte sequence that is not UTF-8 (or NUL) and a
// character the server encoding lacks each become '?'. It redacts nothing:
// the core's safe_reply_text did that before.
char *to_server_lossy(const char *utf8, int length);
// C++-style: the one conversion for every reply text dfend stores or returns
// (error texts, last_error, a lookup's JSON): to_server_lossy under pg_call.
char *server_text(const std::string &utf8);
// C++-style: a UTF-8 value that must arrive exactly (an id to store in a
// row), in the server encoding, palloc'd; raises PostgreSQL's conversion
// error (22P05 or 22021) when the server encoding cannot hold it.
char *server_string(const std::string &utf8);

} // namespace dfend::pg
