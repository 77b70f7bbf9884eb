//! The latency anomaly detector of one (domain, region), pure: a moving baseline of recent
//! successful latencies judged by median and MAD.
//!
//! - **Baseline**: the latest `window` (N) latencies that were not statistical anomalies,
//!   oldest first.
//! - **Robust z-score** of a latency `x`: `(x − median) / σ`, with `σ = max(1.4826 × MAD,
//!   5 % of the median, 1 ms)`. 1.4826 × MAD estimates the standard deviation of normal noise;
//!   the floor keeps a very steady target (MAD near 0) from calling a 1 ms wobble an anomaly.
//!   Only slower than usual counts (one-sided). Judged once the baseline holds
//!   `min(min_samples, window)` samples.
//! - **Anomalous**: z above `z`, or slower than the absolute `latency_ms` when set.
//!   Statistical anomalies stay out of the baseline (a spike must not move it); a latency
//!   over the absolute threshold only is still added (the baseline follows it).
//! - **Degraded**: the latest `consecutive` (K) or more probes were all anomalous; one normal
//!   probe ends the run. Failed probes are the down detection's business and leave the
//!   detector as it is.
//! - **Re-baselining**: a slow drift moves the median along (each step is within the noise, so
//!   it enters the baseline); a level held for a whole window of anomalous probes becomes the
//!   new baseline (the run ends, unless every one of them is over `latency_ms`).

use chrono::{DateTime, Utc};

use super::settings::Settings;

/// The MAD's scale to a normal distribution's standard deviation.
const MAD_SCALE: f64 = 1.4826;
/// The least σ as a share of the median.
const RELATIVE_FLOOR: f64 = 0.05;
/// The least σ, in milliseconds.
const ABSOLUTE_FLOOR_MS: f64 = 1.0;

/// One (domain, region)'s detector state, as stored in `latency_baselines`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Baseline {
    /// Normal latencies, milliseconds, oldest first; at most the window.
    pub samples: Vec<f32>,
    /// The current run of anomalous latencies, milliseconds, oldest first.
    pub anomalies: Vec<f32>,
    /// When the current run's first anomalous probe started.
    pub anomalous_since: Option<DateTime<Utc>>,
}

/// What the detector made of one latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Its robust z-score, when the baseline could judge.
    pub z: Option<f64>,
    pub anomalous: bool,
}

/// The median of `values` (not empty).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The robust z-score of `latency_ms` against `samples` (not empty).
pub fn robust_z(samples: &[f32], latency_ms: f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(|&s| f64::from(s)).collect();
    let m = median(&mut values);
    let mut deviations: Vec<f64> = values.iter().map(|v| (v - m).abs()).collect();
    let mad = median(&mut deviations);
    let sigma = (MAD_SCALE * mad).max(RELATIVE_FLOOR * m).max(ABSOLUTE_FLOOR_MS);
    (latency_ms - m) / sigma
}

impl Baseline {
    /// Whether the region is degraded by these settings.
    pub fn degraded(&self, settings: &Settings) -> bool {
        settings.active() && self.anomalies.len() >= settings.consecutive as usize
    }

    /// The baseline's median, milliseconds (`None` while empty).
    pub fn median_ms(&self) -> Option<f64> {
        (!self.samples.is_empty())
            .then(|| median(&mut self.samples.iter().map(|&s| f64::from(s)).collect::<Vec<_>>()))
    }

    /// Takes one successful probe's latency, observed at `at`.
    pub fn observe(&mut self, latency_ms: f32, at: DateTime<Utc>, settings: &Settings) -> Verdict {
        let window = settings.window as usize;
        let judged = self.samples.len() >= settings.min_samples.min(settings.window) as usize;
        let z = (settings.anomaly && judged).then(|| robust_z(&self.samples, f64::from(latency_ms)));
        let statistical = z.is_some_and(|z| z > settings.z);
        let over = settings.latency_ms.is_some_and(|limit| f64::from(latency_ms) > f64::from(limit));
        if !statistical {
            self.samples.push(latency_ms);
            let excess = self.samples.len().saturating_sub(window);
            self.samples.drain(..excess);
        }
        if !(statistical || over) {
            self.anomalies.clear();
            self.anomalous_since = None;
            return Verdict { z, anomalous: false };
        }
        self.anomalies.push(latency_ms);
        self.anomalous_since = self.anomalous_since.or(Some(at));
        if self.anomalies.len() >= window {
            // A level held for a whole window is the new normal.
            self.samples = self.anomalies.clone();
            let limit = settings.latency_ms.map(f64::from);
            let all_over = limit.is_some_and(|limit| self.anomalies.iter().all(|&l| f64::from(l) > limit));
            if all_over {
                let keep = settings.consecutive as usize;
                self.anomalies.drain(..self.anomalies.len() - keep);
            } else {
                self.anomalies.clear();
                self.anomalous_since = None;
            }
        }
        Verdict { z, anomalous: true }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { anomaly: true, latency_ms: None, window: 50, z: 3.0, consecutive: 3, min_samples: 10 }
    }

    /// Deterministic noise around `level`: ±10 %.
    fn noisy(level: f32, i: usize) -> f32 {
        level * (0.9 + 0.02 * ((i * 7919) % 11) as f32)
    }

    /// Runs `series` through a fresh detector: per probe, whether the region was degraded.
    fn run(series: &[f32], settings: &Settings) -> (Vec<bool>, Baseline) {
        let mut baseline = Baseline::default();
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let degraded = series
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                baseline.observe(l, at + chrono::Duration::seconds(i as i64 * 10), settings);
                baseline.degraded(settings)
            })
            .collect();
        (degraded, baseline)
    }

    fn warm(n: usize) -> Vec<f32> {
        (0..n).map(|i| noisy(20.0, i)).collect()
    }

    #[test]
    fn known_series() {
        struct Case {
            name: &'static str,
            series: Vec<f32>,
            settings: Settings,
            /// Indices at which the region is degraded.
            degraded: Vec<usize>,
        }
        let with = |tail: &[f32]| -> Vec<f32> { warm(60).into_iter().chain(tail.iter().copied()).collect() };
        let step: Vec<f32> = (0..10).map(|i| noisy(400.0, i)).collect();
        let cases = vec![
            Case { name: "steady noise", series: warm(300), settings: settings(), degraded: vec![] },
            Case {
                name: "single spikes",
                series: with(&[400.0, 20.0, 20.0, 400.0, 21.0, 900.0, 19.0]),
                settings: settings(),
                degraded: vec![],
            },
            Case {
                name: "spikes of K-1 in a row",
                series: with(&[400.0, 380.0, 20.0, 390.0, 410.0, 20.0]),
                settings: settings(),
                degraded: vec![],
            },
            Case {
                name: "a step trips at the K-th probe and stays",
                series: with(&step),
                settings: settings(),
                degraded: (62..70).collect(),
            },
            Case {
                name: "a step then back to normal ends at once",
                series: with(&[400.0, 400.0, 400.0, 400.0, 20.0, 20.0]),
                settings: settings(),
                degraded: vec![62, 63],
            },
            Case {
                name: "K = 1",
                series: with(&[400.0, 20.0]),
                settings: Settings { consecutive: 1, ..settings() },
                degraded: vec![60],
            },
            Case {
                name: "anomaly detection off",
                series: with(&step),
                settings: Settings { anomaly: false, ..settings() },
                degraded: vec![],
            },
            Case {
                name: "absolute threshold alone",
                series: with(&[150.0, 150.0, 90.0, 150.0, 150.0, 150.0]),
                settings: Settings { anomaly: false, latency_ms: Some(100), ..settings() },
                degraded: vec![65],
            },
            Case {
                name: "too few samples to judge",
                series: vec![20.0, 21.0, 400.0, 400.0, 400.0],
                settings: settings(),
                degraded: vec![],
            },
        ];
        for case in cases {
            let (degraded, _) = run(&case.series, &case.settings);
            let at: Vec<usize> = degraded.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i).collect();
            assert_eq!(at, case.degraded, "{}", case.name);
        }
    }

    #[test]
    fn spikes_do_not_move_the_baseline() {
        let series: Vec<f32> = warm(60).into_iter().chain([900.0, 20.0, 900.0, 900.0, 20.0]).collect();
        let (_, baseline) = run(&series, &settings());
        let median = baseline.median_ms().unwrap();
        assert!((19.0..=21.0).contains(&median), "{median}");
        assert!(baseline.samples.iter().all(|&s| s < 100.0));
    }

    #[test]
    fn a_slow_drift_re_baselines() {
        // 20 ms to 60 ms over 600 probes (0.18 % per probe), with the noise on top.
        let series: Vec<f32> =
            warm(60).into_iter().chain((0..600).map(|i| noisy(20.0 + 40.0 * i as f32 / 600.0, i))).collect();
        let (degraded, baseline) = run(&series, &settings());
        assert!(degraded.iter().all(|d| !d), "a drift is not a degradation");
        let median = baseline.median_ms().unwrap();
        assert!((50.0..=62.0).contains(&median), "the baseline followed: {median}");
    }

    #[test]
    fn a_level_held_for_a_window_becomes_the_baseline() {
        let series: Vec<f32> = warm(60).into_iter().chain((0..60).map(|i| noisy(400.0, i))).collect();
        let (degraded, baseline) = run(&series, &settings());
        assert!(degraded[62] && degraded[108], "degraded from the third slow probe");
        assert!(!degraded[109], "the 50th slow probe re-baselines");
        assert!(degraded[110..].iter().all(|d| !d));
        assert!(baseline.median_ms().unwrap() > 300.0);
        // Over an absolute threshold too, the region stays degraded.
        let limited = Settings { latency_ms: Some(100), ..settings() };
        let (degraded, _) = run(&series, &limited);
        assert!(degraded[62..].iter().all(|d| *d));
    }

    #[test]
    fn robust_z_has_a_floor() {
        // A perfectly steady target: σ is 5 % of the median (1 ms at 20 ms).
        let steady = vec![20.0; 20];
        assert!((robust_z(&steady, 23.0) - 3.0).abs() < 1e-9);
        // One outlier in the baseline barely moves median and MAD.
        let mut with_outlier = warm(20);
        with_outlier.push(5_000.0);
        assert!(robust_z(&with_outlier, 400.0) > 50.0);
    }
}
