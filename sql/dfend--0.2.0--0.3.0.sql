-- dfend 0.2.0 -> 0.3.0: features for application developers (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.3.0'" to load this file. \quit

-- SECTION reads (dfend_get_identities, overloads)

-- END SECTION reads

-- SECTION status (dfend_status functions, grants)

-- END SECTION status

-- SECTION commit (commit-time registration, notify)

-- END SECTION commit
