//! The drift decision for one domain in one region, pure: a region's known answer set, a
//! candidate new set and how many probes in a row answered it; probes fold into that state one
//! by one ([`fold`]) and a candidate seen `stable_probes` times in a row becomes the known set
//! ([`Change`]). A probe answering the known set again drops the candidate (a flip back before
//! confirmation stays quiet); a probe answering a third set starts a new candidate.

use chrono::{DateTime, Utc};

use super::settings::Settings;

/// One region's drift state of one domain (a row of `dns_answer_sets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionState {
    /// The confirmed answer set, sorted and deduplicated.
    pub known: Vec<String>,
    pub known_since: DateTime<Utc>,
    /// A different set seen in the latest probes, not confirmed yet.
    pub candidate: Option<Vec<String>>,
    /// Probes in a row that answered `candidate`.
    pub candidate_probes: u32,
    /// When `candidate` was first seen in this run.
    pub candidate_since: Option<DateTime<Utc>>,
    /// The newest probe folded in: older ones arriving later are passed over.
    pub observed_at: DateTime<Utc>,
}

/// A confirmed change of a region's answer set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub previous: Vec<String>,
    pub current: Vec<String>,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// The first probe of the new set.
    pub changed_at: DateTime<Utc>,
    /// The probe that confirmed it.
    pub confirmed_at: DateTime<Utc>,
    /// Inside the rotation rules: recorded, the known set updated, never notified.
    pub rotation: bool,
}

/// One probe's answer: when, and the normalized set.
pub type Probe = (DateTime<Utc>, Vec<String>);

/// An answer set as stored and compared: sorted, deduplicated.
pub fn normalize(mut addrs: Vec<String>) -> Vec<String> {
    addrs.sort();
    addrs.dedup();
    addrs
}

/// Folds `probes` (time, normalized non-empty answer set), oldest first, into `state` (`None`:
/// the region's first probe sets the known set). Returns the new state and the changes it
/// confirmed, oldest first.
pub fn fold(
    state: Option<RegionState>,
    probes: &[Probe],
    settings: &Settings,
) -> (Option<RegionState>, Vec<Change>) {
    let mut state = state;
    let mut changes = Vec::new();
    for (at, answer) in probes {
        if answer.is_empty() {
            continue;
        }
        let Some(s) = state.as_mut() else {
            state = Some(RegionState {
                known: answer.clone(),
                known_since: *at,
                candidate: None,
                candidate_probes: 0,
                candidate_since: None,
                observed_at: *at,
            });
            continue;
        };
        if *at <= s.observed_at {
            continue;
        }
        s.observed_at = *at;
        if *answer == s.known {
            s.candidate = None;
            s.candidate_probes = 0;
            s.candidate_since = None;
            continue;
        }
        if s.candidate.as_ref() == Some(answer) {
            s.candidate_probes += 1;
        } else {
            s.candidate = Some(answer.clone());
            s.candidate_probes = 1;
            s.candidate_since = Some(*at);
        }
        if s.candidate_probes >= settings.stable_probes.max(1) {
            let current = s.candidate.take().expect("a candidate was just set");
            let added: Vec<String> = current.iter().filter(|a| !s.known.contains(a)).cloned().collect();
            let removed: Vec<String> = s.known.iter().filter(|a| !current.contains(a)).cloned().collect();
            let changed_at = s.candidate_since.take().unwrap_or(*at);
            changes.push(Change {
                rotation: settings.is_rotation(&s.known, &added),
                previous: std::mem::replace(&mut s.known, current.clone()),
                current,
                added,
                removed,
                changed_at,
                confirmed_at: *at,
            });
            s.known_since = changed_at;
            s.candidate_probes = 0;
        }
    }
    (state, changes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn set(addrs: &[&str]) -> Vec<String> {
        normalize(addrs.iter().map(|a| a.to_string()).collect())
    }

    fn probes(sets: &[&[&str]]) -> Vec<Probe> {
        sets.iter().enumerate().map(|(i, s)| (at(i as i64 * 30), set(s))).collect()
    }

    const A: &[&str] = &["192.0.2.1", "192.0.2.2"];
    const B: &[&str] = &["192.0.2.1", "198.51.100.9"];
    const C: &[&str] = &["203.0.113.5"];

    #[test]
    fn changes_are_confirmed_after_stable_probes_only() {
        let three = Settings::default();
        // (probes, confirmed changes as (previous, current), known set at the end)
        type Sets = &'static [&'static [&'static str]];
        type Pairs = &'static [(&'static [&'static str], &'static [&'static str])];
        let cases: &[(Sets, Pairs, &[&str])] = &[
            (&[A, A, A], &[], A),
            (&[A, B, B, B], &[(A, B)], B),
            (&[A, B, B], &[], A),
            (&[A, B, B, A, B, B], &[], A),
            (&[A, B, C, B, C], &[], A),
            (&[A, B, B, B, C, C, C], &[(A, B), (B, C)], C),
            (&[A, B, B, B, A, A, A], &[(A, B), (B, A)], A),
            (&[A, &[], B, B, B], &[(A, B)], B),
        ];
        for (sequence, want, known) in cases {
            let (state, changes) = fold(None, &probes(sequence), &three);
            let got: Vec<(Vec<String>, Vec<String>)> =
                changes.iter().map(|c| (c.previous.clone(), c.current.clone())).collect();
            let want: Vec<(Vec<String>, Vec<String>)> = want.iter().map(|(p, c)| (set(p), set(c))).collect();
            assert_eq!(got, want, "{sequence:?}");
            assert_eq!(state.unwrap().known, set(known), "{sequence:?}");
        }
    }

    #[test]
    fn a_change_names_what_was_added_and_removed_and_when() {
        let (_, changes) = fold(None, &probes(&[A, B, B, B]), &Settings::default());
        let change = &changes[0];
        assert_eq!(change.added, set(&["198.51.100.9"]));
        assert_eq!(change.removed, set(&["192.0.2.2"]));
        assert_eq!((change.changed_at, change.confirmed_at), (at(30), at(90)));
        assert!(!change.rotation);
        let one = Settings { stable_probes: 1, ..Settings::default() };
        assert_eq!(fold(None, &probes(&[A, B]), &one).1.len(), 1, "stable_probes 1 confirms at once");
    }

    #[test]
    fn rotation_inside_an_allowed_network_is_quiet_but_updates_the_known_set() {
        let settings = Settings::parse(&json!({"allowed_networks": ["198.51.100.0/24"]})).unwrap();
        let (state, changes) = fold(None, &probes(&[A, B, B, B]), &settings);
        assert!(changes[0].rotation);
        assert_eq!(state.unwrap().known, set(B));
        let (_, changes) = fold(None, &probes(&[A, C, C, C]), &settings);
        assert!(!changes[0].rotation, "203.0.113.5 is outside");
    }

    #[test]
    fn probes_split_across_batches_count_the_same_and_old_ones_are_passed_over() {
        let all = probes(&[A, B, B, B]);
        let settings = Settings::default();
        let (state, first) = fold(None, &all[..2], &settings);
        let (state, second) = fold(state, &all[2..], &settings);
        assert!(first.is_empty());
        assert_eq!(second.len(), 1);
        // A late probe from before the newest one folded changes nothing.
        let before = state.clone();
        let (state, late) = fold(state, &[(at(45), set(C))], &settings);
        assert!(late.is_empty());
        assert_eq!(state, before);
    }
}
