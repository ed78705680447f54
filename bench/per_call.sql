-- One run of N sequential dfend_register_identity calls, each timed; the
-- timings are kept in memory so the instrumentation costs no SQL per call.
-- Settings read: bench.n, bench.prefix. With PIN_CPU set in the
-- environment, this backend is pinned to that CPU first.
SELECT pg_backend_pid() AS backend_pid \gset
\setenv BACKEND_PID :backend_pid
\! [ -z "$PIN_CPU" ] || taskset -pc "$PIN_CPU" "$BACKEND_PID" >/dev/null
DO $$
DECLARE
    n int := current_setting('bench.n')::int;
    prefix text := current_setting('bench.prefix');
    micros float8[] := '{}';
    t0 timestamptz;
    started timestamptz := clock_timestamp();
BEGIN
    FOR i IN 1..n LOOP
        t0 := clock_timestamp();
        PERFORM dfend_register_identity(prefix || i);
        micros := micros || extract(epoch FROM clock_timestamp() - t0)::float8 * 1e6;
    END LOOP;
    CREATE TEMP TABLE timings AS SELECT unnest(micros) AS micros;
    PERFORM set_config('bench.seconds', extract(epoch FROM clock_timestamp() - started)::text, false);
END $$;
SELECT round(count(*) / current_setting('bench.seconds')::numeric) AS calls_per_s,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY micros)) AS p50_us,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY micros)) AS p99_us
FROM timings;
