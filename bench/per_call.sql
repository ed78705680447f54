-- One run of N sequential dfend_register_identity calls, each timed.
-- psql variables: n, prefix.
CREATE TEMP TABLE IF NOT EXISTS timings (micros double precision);
TRUNCATE timings;
DO $$
DECLARE
    t0 timestamptz;
    started timestamptz := clock_timestamp();
    n int := current_setting('bench.n')::int;
    prefix text := current_setting('bench.prefix');
BEGIN
    FOR i IN 1..n LOOP
        t0 := clock_timestamp();
        PERFORM dfend_register_identity(prefix || i);
        INSERT INTO timings VALUES (extract(epoch FROM clock_timestamp() - t0) * 1e6);
    END LOOP;
    PERFORM set_config('bench.seconds', extract(epoch FROM clock_timestamp() - started)::text, false);
END $$;
SELECT round(count(*) / current_setting('bench.seconds')::numeric) AS calls_per_s,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY micros)) AS p50_us,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY micros)) AS p99_us
FROM timings;
