-- dfend 0.3.0 -> 0.4.0: full speed under DFend's backpressure (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.4.0'" to load this file. \quit

-- SECTION bulk (statement-level insert trigger; issue 8)

-- END SECTION bulk

-- SECTION rate (shared request rate, breaker visibility; issue 8)

-- END SECTION rate
