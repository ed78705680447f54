-- dfend 0.4.0 -> 0.5.0: full speed under DFend's backpressure, continued (see CHANGELOG.md).
-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION dfend UPDATE TO '0.5.0'" to load this file. \quit

-- SECTION bulk (one outbox row per bulk statement chunk; issue 8)

-- END SECTION bulk

-- SECTION backfill (carried retries between batches; issue 8)

-- END SECTION backfill
