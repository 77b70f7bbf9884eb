//! Percentiles over measured samples.

use std::time::Duration;

/// Nearest-rank percentile of `samples` (sorted in place), in milliseconds.
pub fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    let value = samples[rank.min(samples.len()) - 1];
    (value.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut s, 50.0), 50.0);
        assert_eq!(percentile_ms(&mut s, 99.0), 99.0);
        assert_eq!(percentile_ms(&mut s, 100.0), 100.0);
        assert_eq!(percentile_ms(&mut [], 50.0), 0.0);
    }
}
