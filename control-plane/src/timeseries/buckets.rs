//! The fixed log-scale latency buckets, in one place: the writer stores a bucket index per
//! phase with every result, roll-ups count results per index, and percentiles are read back
//! from the summed counts.
//!
//! Bucket `i` holds durations `us` (microseconds) with `2^(i/4) <= us < 2^((i+1)/4)`, i.e.
//! `i = floor(4 * log2(us))`, clamped to `[0, LATENCY_BUCKETS)`: quarter powers of two from
//! 1 µs, so each bucket is about 19% wide; 0 µs falls into bucket 0 and everything from about
//! 54 minutes up into the last one. SQL has the same function, `latency_bucket(us)`
//! (`migrations/timeseries`), and TimescaleDB's `histogram(index, 0, 128, 128)` produces the
//! stored layout: `LATENCY_BUCKETS + 2` counts, the first and last for out-of-range indexes
//! (always zero), count `i + 1` for bucket `i`.
//!
//! A percentile is reported as the **upper bound** of the bucket holding the nearest-rank
//! sample (`ceil(2^((i+1)/4))` µs): "p95 ≤ this", an overestimate by at most one bucket width.

/// Number of latency buckets.
pub const LATENCY_BUCKETS: usize = 128;
/// Length of a stored histogram array: the buckets plus the under- and overflow counts.
pub const HISTOGRAM_LEN: usize = LATENCY_BUCKETS + 2;

/// The bucket index of a duration in microseconds: the largest `i < 128` with `2^i <= us^4`,
/// computed exactly in integers.
pub fn bucket_index(us: u32) -> i16 {
    if us <= 1 {
        return 0;
    }
    let fourth = (us as u128).pow(3).saturating_mul(us as u128);
    let i = 127 - fourth.leading_zeros() as i16;
    i.min(LATENCY_BUCKETS as i16 - 1)
}

/// The exclusive upper bound of bucket `i`, rounded up to whole microseconds.
pub fn upper_bound_us(i: usize) -> u64 {
    2f64.powf((i as f64 + 1.0) / 4.0).ceil() as u64
}

/// Adds histogram `other` into `into` element-wise (arrays of [`HISTOGRAM_LEN`]).
pub fn add_into(into: &mut Vec<i64>, other: &[i32]) {
    if into.len() < other.len() {
        into.resize(other.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(other) {
        *a += i64::from(*b);
    }
}

/// p50, p95 and p99 of a stored-layout histogram, as bucket upper bounds; `None` when empty.
pub fn percentiles(hist: &[i64]) -> Option<Percentiles> {
    let buckets: Vec<i64> = hist.iter().skip(1).take(LATENCY_BUCKETS).map(|c| (*c).max(0)).collect();
    let total: i64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let at = |p: f64| {
        // Nearest rank: the smallest bucket whose cumulative count reaches ceil(p * n).
        let rank = ((p * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for (i, c) in buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound_us(i);
            }
        }
        upper_bound_us(LATENCY_BUCKETS - 1)
    };
    Some(Percentiles { samples: total as u64, p50_us: at(0.50), p95_us: at(0.95), p99_us: at(0.99) })
}

/// Percentiles of one phase's durations, in microseconds (bucket upper bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    /// Probes the percentiles are over.
    pub samples: u64,
    /// Median, microseconds.
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_edges_are_quarter_powers_of_two() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(1), 0);
        assert_eq!(bucket_index(2), 4);
        assert_eq!(bucket_index(3), 6);
        assert_eq!(bucket_index(1024), 40);
        assert_eq!(bucket_index(1_000_000), 79);
        assert_eq!(bucket_index(u32::MAX), 127);
        for i in 1..LATENCY_BUCKETS - 1 {
            let upper = upper_bound_us(i);
            assert!(bucket_index(upper as u32) > i as i16, "bucket {i}: {upper}");
            assert!(bucket_index(upper as u32 - 1) <= i as i16, "bucket {i}: {upper}");
        }
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let mut hist = vec![0i64; HISTOGRAM_LEN];
        hist[1 + 10] = 94;
        hist[1 + 20] = 5;
        hist[1 + 30] = 1;
        let p = percentiles(&hist).unwrap();
        assert_eq!(p.samples, 100);
        assert_eq!(p.p50_us, upper_bound_us(10));
        assert_eq!(p.p95_us, upper_bound_us(20));
        assert_eq!(p.p99_us, upper_bound_us(20));
        assert_eq!(percentiles(&[0; HISTOGRAM_LEN]), None);
    }
}
