-- TimescaleDB mode: results stored later than the continuous aggregates' refresh policies look
-- back (3 days for `rollup_hourly`, 4 for `rollup_daily`). TimescaleDB records their
-- invalidation, but a policy only refreshes inside its own window, so without help these
-- results would never reach the roll-ups (plain mode adds every result at ingest). The writer
-- appends one row per ingest transaction that stored such results: the UTC hours holding the
-- oldest and the newest of them, and how many there were. The control plane's refresher
-- (`timeseries::late`) reads every row, refreshes each continuous aggregate once over the
-- covering range (outside a transaction, as `refresh_continuous_aggregate` requires), and only
-- then deletes the rows it read, so a crash in between refreshes again rather than never.
-- Append-only like `rollup_dirty`: no conflicts, no row locks between writers. A plain table in
-- both modes (unused in plain mode).
CREATE TABLE late_results (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    oldest    timestamptz NOT NULL,
    newest    timestamptz NOT NULL,
    results   integer NOT NULL CHECK (results > 0),
    noted_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (oldest <= newest)
);
