// dfend's own SQLSTATEs, the one place they are defined (the README's
// "Errors" table documents them).
//
// Class ID ("Identity API of DFend") is implementation-defined under the SQL
// standard's rule: a class whose first character is 5-9 or I-Z belongs to
// the implementation (0-4 and A-H are the standard's). Neither PostgreSQL
// (src/backend/utils/errcodes.txt) nor TimescaleDB (TS) uses it, and it is
// not class 08, which drivers and poolers read as a broken connection to
// the database. Each subclass is the HTTP status that names the condition,
// so the codes are easy to remember: ID429 is a rate limit whatever status
// DFend actually sent.
//
// Errors that are the caller's keep PostgreSQL's standard codes: 22023 for
// data that dfend refuses before sending anything, 22004, 42xxx, 57014 for a
// cancel, 53200 for memory, F0000 for configuration.
#pragma once

#include "postgres.hpp"

// DFend rejected the API key (401, 403). Not worth retrying until the key
// is fixed.
#define ERRCODE_DFEND_KEY_REJECTED MAKE_SQLSTATE('I', 'D', '4', '0', '1')
// DFend rejected the row's data (400, 409, 413, 422). Not worth retrying
// with the same data.
#define ERRCODE_DFEND_DATA_REJECTED MAKE_SQLSTATE('I', 'D', '4', '2', '2')
// DFend's rate limit (429), after dfend's retries. Retry after the wait
// that DETAIL ends with.
#define ERRCODE_DFEND_RATE_LIMITED MAKE_SQLSTATE('I', 'D', '4', '2', '9')
// DFend's reply is not what its API documents: bad JSON, a redirect, an
// unexpected status. Not worth retrying until someone fixes the setup.
#define ERRCODE_DFEND_MALFORMED_REPLY MAKE_SQLSTATE('I', 'D', '5', '0', '2')
// DFend could not be reached or did not answer in time: 5xx, 408, refused,
// DNS, TLS, a broken connection, dfend.request_timeout, after dfend's
// retries. Retry after the wait that DETAIL ends with; a certificate that
// fails verification has none, as only an operator can fix it.
#define ERRCODE_DFEND_UNAVAILABLE MAKE_SQLSTATE('I', 'D', '5', '0', '3')
