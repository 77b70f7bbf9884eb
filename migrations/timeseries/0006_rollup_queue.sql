-- Plain mode: roll-ups added in bulk from a queue, off the ingest path. Migration 0003 had each
-- writer add its rows to `rollup_hourly` and `rollup_daily` inside the ingest transaction:
-- exact, but every result rewrote two wide roll-up rows (five 130-count histograms each),
-- which held ingest to a few thousand rows per second. Now the writer appends, in the same
-- transaction as the raw rows, one narrow `rollup_queue` row per result and one
-- `rollup_queued_hours` mark per UTC hour the transaction touched (append-only: no conflicts,
-- no row locks between writers). The refresher moves the whole queue into the roll-ups in one
-- REPEATABLE READ transaction: it deletes the marks and the queue rows its snapshot sees and
-- adds their counts and histogram cells (one upsert per roll-up row, however many results it
-- carries), so in every snapshot a stored result is either in the roll-ups or in the queue,
-- never both or neither. Reads roll the marked hours up from the raw rows (as they did for
-- `rollup_dirty`), so results count as soon as they are stored. A plain table in both modes
-- (unused with TimescaleDB).
CREATE TABLE rollup_queue (
    time      timestamptz NOT NULL,
    domain_id uuid NOT NULL,
    region    text NOT NULL,
    ok        boolean NOT NULL,
    total_b   smallint,
    dns_b     smallint,
    connect_b smallint,
    tls_b     smallint,
    ttfb_b    smallint
);

CREATE TABLE rollup_queued_hours (
    hour timestamptz NOT NULL
);

-- Adds histogram cells to a roll-up histogram: `cells` are codes `phase * 1000 + position`
-- (position 1..130 in the 0001 layout), `n` their counts; only the cells of `phase` are
-- taken. A NULL histogram starts from zeros; NULL when it was NULL and no cell is of `phase`.
-- Touches only the given cells (a plpgsql array assignment is in place), unlike `hist_add`,
-- which walks all 130 counts.
CREATE FUNCTION hist_add_cells(h int[], cells int[], n int[], phase int) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    pos int;
BEGIN
    IF cells IS NULL THEN
        RETURN h;
    END IF;
    FOR i IN 1 .. cardinality(cells) LOOP
        IF cells[i] / 1000 = phase THEN
            pos := cells[i] % 1000;
            IF pos < 1 OR pos > 130 THEN
                RAISE EXCEPTION 'histogram cell % is outside 1..130', pos;
            END IF;
            IF h IS NULL THEN
                h := array_fill(0, ARRAY[130]);
            END IF;
            h[pos] := h[pos] + n[i];
        END IF;
    END LOOP;
    RETURN h;
END
$$;
