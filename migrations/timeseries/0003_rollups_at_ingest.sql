-- Plain mode: roll-ups added at ingest. The writer adds each batch's counts and histogram
-- buckets to the roll-up rows of its hours and days inside the transaction that stores the
-- batch (late results included), instead of marking hours for a refresh that re-aggregates
-- them from the raw rows; roll-ups are sums, so adding is exact. Hours marked in
-- `rollup_dirty` by an older control plane are still re-aggregated by the refresher.
--
-- A batch's buckets travel as (bucket index, count) cells; this builds the histogram of one
-- roll-up row and phase from them, in the layout of the 0001 migration: 130 counts, [1] below
-- 0, [2..129] bucket indexes 0..127, [130] at or above 128. NULL without cells (the phase
-- never happened).
CREATE FUNCTION hist_from_cells(idx smallint[], n int[]) RETURNS int[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    h int[];
BEGIN
    IF idx IS NULL OR cardinality(idx) = 0 THEN
        RETURN NULL;
    END IF;
    h := array_fill(0, ARRAY[130]);
    FOR i IN 1 .. cardinality(idx) LOOP
        h[idx[i] + 2] := h[idx[i] + 2] + n[i];
    END LOOP;
    RETURN h;
END
$$;
