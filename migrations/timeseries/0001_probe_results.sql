-- The time-series database: raw probe results, the latest certificate per domain and region,
-- batch de-duplication, and hourly/daily roll-ups with fixed log-scale latency histograms.
--
-- One migration builds one of two storage modes, chosen here and recorded in `storage_meta`:
--
-- * timescale: the TimescaleDB extension is installed in this database, or it is available and
--   its loader is preloaded. The preload is seen through the loader's own setting
--   `timescaledb.max_background_workers` in `pg_settings`, which any role may read (the list
--   `shared_preload_libraries` itself is readable only by superusers and members of
--   pg_read_all_settings; a placeholder set without the library is not listed in pg_settings).
--   `probe_results` is a hypertable with 1-day chunks, `rollup_hourly` and `rollup_daily` are
--   continuous aggregates with refresh policies, raw chunks are compressed after 7 days and
--   dropped by a retention policy (the control plane reconciles every policy with its settings
--   at start: `timeseries::policies`). TimescaleDB is a trusted extension: a role with CREATE on
--   the database (its owner) may create it.
-- * plain: `probe_results` is partitioned by range of `time` into daily partitions that the
--   control plane creates ahead and drops after `retention_raw_days`, plus a DEFAULT partition
--   so that a result outside every partition is still stored. `rollup_hourly` and
--   `rollup_daily` are tables with the same columns, refreshed by the control plane from the
--   hours marked in `rollup_dirty`.
--
-- Every TimescaleDB statement is run through EXECUTE so plain PostgreSQL never parses it. The
-- continuous aggregates are created WITH NO DATA: creating one WITH DATA refreshes it, which
-- TimescaleDB refuses inside a transaction block or a function (this migration runs in a
-- transaction, in a DO block), while WITH NO DATA is allowed there, so no `-- no-transaction`
-- is needed (the table is empty here anyway; the refresh policies materialize it). The
-- aggregates use count(*) FILTER and TimescaleDB's histogram(), which continuous aggregates
-- accept in their finalized form: TimescaleDB 2.7 or later.
--
-- Latency histograms (both modes): int[] of LATENCY_BUCKETS + 2 = 130 counts, laid out as
-- TimescaleDB's histogram(bucket_index, 0, 128, 128) returns them: [1] below 0 (always 0),
-- [2..129] bucket indexes 0..127, [130] at or above 128 (always 0). The bucket index of a
-- duration of `us` microseconds is floor(4 * log2(us)) clamped to [0, 127] (quarter powers of
-- two from 1 us; index 127 also holds everything from about 54 minutes up). It is computed by
-- the writer (`timeseries::buckets::bucket_index`) and stored per row; `latency_bucket(us)`
-- below is the same function in SQL. A NULL histogram means the phase never happened: the phase
-- histograms aggregate only rows where the phase happened (FILTER), since TimescaleDB's
-- histogram() would count a NULL as 0.

CREATE TABLE storage_meta (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    mode       text NOT NULL CHECK (mode IN ('timescale', 'plain')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Exact (integer arithmetic on numeric): the largest i in [0, 127] with 2^i <= us^4.
CREATE FUNCTION latency_bucket(us bigint) RETURNS smallint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(max(i), 0)::smallint
    FROM generate_series(0, 127) AS i
    WHERE 2::numeric ^ i <= (greatest(us, 0)::numeric) ^ 4
$$;

-- Element-wise sum of two histograms; NULL is the empty histogram.
CREATE FUNCTION hist_add(a int[], b int[]) RETURNS int[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE ARRAY(SELECT x + y FROM unnest(a, b) AS t(x, y))
    END
$$;

CREATE AGGREGATE hist_sum(int[]) (SFUNC = hist_add, STYPE = int[], COMBINEFUNC = hist_add, PARALLEL = SAFE);

-- A histogram from (bucket index, count) pairs; NULL when there are none.
CREATE FUNCTION hist_from_counts(idx smallint[], n bigint[]) RETURNS int[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN coalesce(cardinality(idx), 0) = 0 THEN NULL ELSE
        (SELECT array_agg(coalesce(c.n, 0)::int ORDER BY g)
         FROM generate_series(1, 130) AS g
         LEFT JOIN unnest(idx, n) AS c(i, n) ON c.i + 2 = g)
    END
$$;


-- Which (region, agent, batch) have been stored, so a batch resent after a lost
-- acknowledgement is stored once. Pruned after two days by maintenance.
CREATE TABLE ingested_batches (
    region      text NOT NULL,
    agent_id    text NOT NULL,
    batch_id    uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region, agent_id, batch_id)
);
CREATE INDEX ingested_batches_received_at ON ingested_batches (received_at);

-- The newest certificate seen per domain and region (certificates are not stored per result).
CREATE TABLE certificates (
    domain_id        uuid NOT NULL,
    region           text NOT NULL,
    subject          text NOT NULL,
    issuer           text NOT NULL,
    sans             text[] NOT NULL,
    serial           text NOT NULL,
    not_before       timestamptz NOT NULL,
    not_after        timestamptz NOT NULL,
    valid            boolean NOT NULL,
    validation_error text,
    observed_at      timestamptz NOT NULL,
    PRIMARY KEY (domain_id, region)
);

-- Plain mode: hours that received results since they were last rolled up. Append-only (one
-- row per hour per ingest transaction, no conflicts, no row locks); the refresher deletes the
-- marks its snapshot sees and then recomputes those hours, so a mark committed concurrently
-- survives for the next round.
CREATE TABLE rollup_dirty (
    hour timestamptz NOT NULL
);

DO $migration$
DECLARE
    timescale boolean;
    -- The raw table's columns, the same in both modes.
    columns constant text := $cols$
    time           timestamptz NOT NULL,
    domain_id      uuid NOT NULL,
    region         text NOT NULL,
    agent_id       text NOT NULL,
    batch_id       uuid NOT NULL,
    ok             boolean NOT NULL,
    error_kind     text,
    error_detail   text,
    status_code    integer,
    dns_us         integer,
    connect_us     integer,
    tls_us         integer,
    ttfb_us        integer,
    total_us       integer NOT NULL,
    resolved_ip    text,
    trigger        text NOT NULL,
    config_version bigint NOT NULL,
    total_b        smallint NOT NULL,
    dns_b          smallint,
    connect_b      smallint,
    tls_b          smallint,
    ttfb_b         smallint
    $cols$;
BEGIN
    timescale := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
        OR (EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
            AND EXISTS (SELECT 1 FROM pg_settings WHERE name = 'timescaledb.max_background_workers'));

    IF timescale THEN
        EXECUTE 'CREATE EXTENSION IF NOT EXISTS timescaledb';
        EXECUTE 'CREATE TABLE probe_results (' || columns || ')';
        EXECUTE $ts$SELECT create_hypertable('probe_results', 'time',
            chunk_time_interval => INTERVAL '1 day')$ts$;
        EXECUTE 'CREATE INDEX probe_results_domain_time ON probe_results (domain_id, time DESC)';
        EXECUTE $ts$
            CREATE MATERIALIZED VIEW rollup_hourly
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 hour', time) AS bucket,
                   domain_id,
                   region,
                   count(*) AS probes,
                   count(*) FILTER (WHERE ok) AS successes,
                   histogram(total_b, 0, 128, 128) AS total_hist,
                   histogram(dns_b, 0, 128, 128) FILTER (WHERE dns_b IS NOT NULL) AS dns_hist,
                   histogram(connect_b, 0, 128, 128) FILTER (WHERE connect_b IS NOT NULL) AS connect_hist,
                   histogram(tls_b, 0, 128, 128) FILTER (WHERE tls_b IS NOT NULL) AS tls_hist,
                   histogram(ttfb_b, 0, 128, 128) FILTER (WHERE ttfb_b IS NOT NULL) AS ttfb_hist
            FROM probe_results
            GROUP BY bucket, domain_id, region
            WITH NO DATA$ts$;
        EXECUTE $ts$
            CREATE MATERIALIZED VIEW rollup_daily
            WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
            SELECT time_bucket(INTERVAL '1 day', time) AS bucket,
                   domain_id,
                   region,
                   count(*) AS probes,
                   count(*) FILTER (WHERE ok) AS successes,
                   histogram(total_b, 0, 128, 128) AS total_hist,
                   histogram(dns_b, 0, 128, 128) FILTER (WHERE dns_b IS NOT NULL) AS dns_hist,
                   histogram(connect_b, 0, 128, 128) FILTER (WHERE connect_b IS NOT NULL) AS connect_hist,
                   histogram(tls_b, 0, 128, 128) FILTER (WHERE tls_b IS NOT NULL) AS tls_hist,
                   histogram(ttfb_b, 0, 128, 128) FILTER (WHERE ttfb_b IS NOT NULL) AS ttfb_hist
            FROM probe_results
            GROUP BY bucket, domain_id, region
            WITH NO DATA$ts$;
        EXECUTE $ts$SELECT add_continuous_aggregate_policy('rollup_hourly',
            start_offset => INTERVAL '3 days',
            end_offset => INTERVAL '1 hour',
            schedule_interval => INTERVAL '5 minutes')$ts$;
        EXECUTE $ts$SELECT add_continuous_aggregate_policy('rollup_daily',
            start_offset => INTERVAL '4 days',
            end_offset => INTERVAL '1 day',
            schedule_interval => INTERVAL '1 hour')$ts$;
        EXECUTE $ts$ALTER TABLE probe_results SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'domain_id, region',
            timescaledb.compress_orderby = 'time DESC')$ts$;
        EXECUTE $ts$SELECT add_compression_policy('probe_results', compress_after => INTERVAL '7 days')$ts$;
        EXECUTE $ts$SELECT add_retention_policy('probe_results', drop_after => INTERVAL '90 days')$ts$;
        INSERT INTO storage_meta (mode) VALUES ('timescale');
    ELSE
        EXECUTE 'CREATE TABLE probe_results (' || columns || ') PARTITION BY RANGE (time)';
        EXECUTE 'CREATE TABLE probe_results_default PARTITION OF probe_results DEFAULT';
        EXECUTE 'CREATE INDEX probe_results_domain_time ON probe_results (domain_id, time DESC)';
        EXECUTE $plain$
            CREATE TABLE rollup_hourly (
                bucket       timestamptz NOT NULL,
                domain_id    uuid NOT NULL,
                region       text NOT NULL,
                probes       bigint NOT NULL,
                successes    bigint NOT NULL,
                total_hist   int[],
                dns_hist     int[],
                connect_hist int[],
                tls_hist     int[],
                ttfb_hist    int[],
                PRIMARY KEY (domain_id, bucket, region)
            )$plain$;
        EXECUTE 'CREATE INDEX rollup_hourly_bucket ON rollup_hourly (bucket)';
        EXECUTE 'CREATE TABLE rollup_daily (LIKE rollup_hourly INCLUDING ALL)';
        INSERT INTO storage_meta (mode) VALUES ('plain');
    END IF;
END
$migration$;
