//! The schedule as pure data: when each domain is due next. No I/O and no clock of its own —
//! callers pass `now` — so it is tested directly and under paused time.
//!
//! Each domain runs on a fixed phase of its interval, anchored to wall-clock time, and it is due
//! at every wall instant `t` with `t ≡ offset (mod interval)`:
//!
//! - a domain that names its regions staggers them evenly: its `k`-th region (sorted) of `n`
//!   uses `offset = (hash(domain id) + k·interval/n) mod interval`, so some region probes it
//!   every `interval/n` and an outage is first seen within `interval/n` of starting, whenever
//!   it starts (every agent computes the same thing from the same configuration);
//! - a domain that runs everywhere (no list) cannot know the fleet's regions here and uses
//!   `offset = hash(domain id, region) mod interval`: independent phases per region.
//!
//! Domains are therefore spread evenly over each interval, two regions probe the same domain at
//! different instants, and a restarted agent keeps the same phases (no burst at start).
//!
//! When a region runs several agents the plan holds only this agent's share ([`Membership`]).
//! A phase never depends on which agent has the domain, so an agent taking a domain over probes
//! it at the very slots its previous owner used: a handoff neither bursts nor shifts the
//! domain's rhythm.
//!
//! One binary heap holds the next due time of every domain; entries made stale by a change are
//! skipped lazily by a generation number. 100,000 domains cost a few megabytes and no timers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shared::{DomainConfig, DomainId};
use tokio::time::Instant;

use crate::catalog::{Catalog, CatalogChange};
use crate::membership::Membership;

/// Maps tokio instants to wall-clock milliseconds, fixed when the schedule is created.
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    pub instant: Instant,
    pub wall_ms: u64,
}

impl Anchor {
    pub fn now() -> Self {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        Self { instant: Instant::now(), wall_ms }
    }

    fn wall(&self, at: Instant) -> u64 {
        self.wall_ms + at.saturating_duration_since(self.instant).as_millis() as u64
    }
}

/// FNV-1a: a stable hash (the std hasher may change between Rust releases, which would move
/// every phase on upgrade).
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The phase of `config`'s domain within `interval` for `region` (see the module documentation).
pub fn phase_offset(config: &DomainConfig, region: &str, interval: Duration) -> Duration {
    let interval_ms = interval.as_millis().max(1) as u64;
    let id = config.id.0.as_bytes();
    let mut regions: Vec<&str> = config.regions.iter().map(String::as_str).collect();
    regions.sort_unstable();
    regions.dedup();
    match regions.iter().position(|r| *r == region) {
        Some(rank) => {
            let stagger = interval_ms * rank as u64 / regions.len() as u64;
            Duration::from_millis((stable_hash(&[id]) % interval_ms + stagger) % interval_ms)
        }
        None => Duration::from_millis(stable_hash(&[id, region.as_bytes()]) % interval_ms),
    }
}

/// A probe that is due.
#[derive(Debug, Clone)]
pub struct Due {
    pub config: Arc<DomainConfig>,
    /// When it was planned to start.
    pub planned: Instant,
}

#[derive(Debug)]
struct Entry {
    config: Arc<DomainConfig>,
    interval: Duration,
    generation: u64,
    next: Instant,
}

/// Domains that changed hands when the member set changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handoff {
    /// Taken over by this agent.
    pub gained: u64,
    /// Given up to another agent.
    pub lost: u64,
}

/// Every active domain's next due time, for the domains this agent owns.
#[derive(Debug)]
pub struct Plan {
    region: String,
    anchor: Anchor,
    /// Which of the catalog's domains are this agent's (all of them until a member set is seen).
    membership: Arc<Membership>,
    entries: HashMap<DomainId, Entry>,
    heap: BinaryHeap<Reverse<(Instant, u64, DomainId)>>,
    generation: u64,
    /// Slots skipped because the agent fell more than an interval behind.
    pub skipped: u64,
}

impl Plan {
    pub fn new(region: &str, anchor: Anchor) -> Self {
        Self {
            region: region.to_owned(),
            anchor,
            membership: Arc::new(Membership::everything("")),
            entries: HashMap::new(),
            heap: BinaryHeap::new(),
            generation: 0,
            skipped: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first phase slot of `config`'s domain at or after `now`.
    pub fn next_slot(&self, config: &DomainConfig, interval: Duration, now: Instant) -> Instant {
        let interval_ms = interval.as_millis().max(1) as u64;
        let offset = phase_offset(config, &self.region, interval).as_millis() as u64;
        let wall = self.anchor.wall(now);
        let into = wall % interval_ms;
        let wait = (offset + interval_ms - into) % interval_ms;
        now + Duration::from_millis(wait)
    }

    fn push(&mut self, config: Arc<DomainConfig>, next: Instant) {
        self.generation += 1;
        let id = config.id;
        let interval = Duration::from_secs(u64::from(config.interval_s.max(1)));
        self.heap.push(Reverse((next, self.generation, id)));
        self.entries.insert(id, Entry { config, interval, generation: self.generation, next });
    }

    /// Adds or updates a domain. A new domain, or one whose interval or regions changed (which
    /// moves its phase), is placed on its phase at once; any other change keeps the planned time
    /// and uses the new configuration. A paused domain, or one another agent of the region owns,
    /// is removed.
    pub fn upsert(&mut self, config: &Arc<DomainConfig>, now: Instant) {
        if config.paused || !self.membership.owns(config) {
            self.remove(config.id);
            return;
        }
        let interval = Duration::from_secs(u64::from(config.interval_s.max(1)));
        match self.entries.get_mut(&config.id) {
            Some(entry) if entry.interval == interval && entry.config.regions == config.regions => {
                entry.config = config.clone()
            }
            _ => {
                let next = self.next_slot(config, interval, now);
                self.push(config.clone(), next);
            }
        }
    }

    /// Removes a domain: it is never returned as due again.
    pub fn remove(&mut self, id: DomainId) {
        self.entries.remove(&id);
    }

    /// Applies the differences between two catalogs.
    pub fn apply(&mut self, old: &Catalog, new: &Catalog, now: Instant) {
        for change in old.diff(new) {
            match change {
                CatalogChange::Upsert(config) => self.upsert(config, now),
                CatalogChange::Remove(id) => self.remove(id),
            }
        }
        self.compact();
    }

    /// Switches to a new member set: the catalog's domains this agent now owns are placed on
    /// their phase (the next slot at or after `now`, the one their previous owner would have
    /// used), those another agent now owns are removed, and the rest keep their planned time.
    pub fn set_membership(
        &mut self,
        membership: Arc<Membership>,
        catalog: &Catalog,
        now: Instant,
    ) -> Handoff {
        self.membership = membership;
        let mut handoff = Handoff::default();
        for config in catalog.iter() {
            let owned = !config.paused && self.membership.owns(config);
            let held = self.entries.contains_key(&config.id);
            if owned && !held {
                self.upsert(config, now);
                handoff.gained += 1;
            } else if !owned && held {
                self.remove(config.id);
                handoff.lost += 1;
            }
        }
        self.compact();
        handoff
    }

    /// Stale heap entries are dropped lazily; compacts when they dominate.
    fn compact(&mut self) {
        if self.heap.len() > 2 * self.entries.len() + 1024 {
            let live: Vec<_> =
                self.entries.iter().map(|(id, e)| Reverse((e.next, e.generation, *id))).collect();
            self.heap = live.into();
        }
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse((_, generation, id))) = self.heap.peek() {
            match self.entries.get(id) {
                Some(entry) if entry.generation == *generation => return,
                _ => {
                    self.heap.pop();
                }
            }
        }
    }

    /// When `id` is due next, if this plan holds it.
    pub fn next_of(&self, id: DomainId) -> Option<Instant> {
        self.entries.get(&id).map(|entry| entry.next)
    }

    /// When the next probe is due, if any.
    pub fn next_due(&mut self) -> Option<Instant> {
        self.drop_stale();
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes one probe due at or before `now` and plans that domain's next run one interval
    /// later (skipping slots already in the past if the agent fell behind).
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        self.drop_stale();
        let Reverse((at, _, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        let entry = self.entries.get(&id)?;
        let (config, interval) = (entry.config.clone(), entry.interval);
        let mut next = at + interval;
        if next <= now {
            let behind = now.duration_since(next).as_millis() / interval.as_millis().max(1) + 1;
            self.skipped += behind as u64;
            next += interval * behind as u32;
        }
        self.push(config.clone(), next);
        Some(Due { config, planned: at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval_s: u32) -> Arc<DomainConfig> {
        Arc::new(shared::testing::sample_domain(interval_s, 1))
    }

    fn anchor() -> Anchor {
        Anchor { instant: Instant::now(), wall_ms: 1_700_000_000_000 }
    }

    #[test]
    fn offsets_are_stable_and_differ_between_regions() {
        let mut c = shared::testing::sample_domain(60, 1);
        c.id = "01900000-0000-7000-8000-000000000001".parse().unwrap();
        c.regions = Vec::new();
        let a = phase_offset(&c, "ams", Duration::from_secs(60));
        assert_eq!(a, phase_offset(&c, "ams", Duration::from_secs(60)));
        assert!(a < Duration::from_secs(60));
        let regions = ["ams", "iad", "sin", "fra", "syd"];
        let distinct: std::collections::HashSet<_> =
            regions.iter().map(|r| phase_offset(&c, r, Duration::from_secs(60))).collect();
        assert!(distinct.len() >= 4, "regions should mostly land on different phases");
    }

    #[test]
    fn named_regions_are_staggered_evenly_over_the_interval() {
        let interval = Duration::from_secs(30);
        for n in 0..50u128 {
            let mut c = shared::testing::sample_domain(30, 1);
            c.id = DomainId(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + n * 7919));
            // Listed in any order: every agent sorts them the same way.
            c.regions = vec!["sin".into(), "ams".into(), "iad".into()];
            let mut offsets: Vec<u64> = ["ams", "iad", "sin"]
                .iter()
                .map(|r| phase_offset(&c, r, interval).as_millis() as u64)
                .collect();
            offsets.sort_unstable();
            let gaps = [offsets[1] - offsets[0], offsets[2] - offsets[1], 30_000 - offsets[2] + offsets[0]];
            assert!(gaps.iter().all(|g| *g == 10_000), "regions 10 s apart, got {offsets:?}");
        }
        // A region outside the list (not probing it anyway) falls back to its own hash.
        let c = shared::testing::sample_domain(30, 1);
        assert!(phase_offset(&c, "syd", interval) < interval);
    }

    #[test]
    fn a_change_of_regions_moves_the_phase() {
        let anchor = anchor();
        let interval = Duration::from_secs(30);
        let mut plan = Plan::new("iad", anchor);
        let mut c = shared::testing::sample_domain(30, 1);
        c.regions = vec!["ams".into(), "iad".into()];
        plan.upsert(&Arc::new(c.clone()), anchor.instant);
        assert_eq!(plan.next_due().unwrap(), plan.next_slot(&c, interval, anchor.instant));
        c.regions.push("sin".into());
        c.version += 1;
        plan.upsert(&Arc::new(c.clone()), anchor.instant);
        assert_eq!(plan.next_due().unwrap(), plan.next_slot(&c, interval, anchor.instant), "placed anew");
    }

    #[test]
    fn first_probes_spread_evenly_over_the_interval() {
        let anchor = anchor();
        let mut plan = Plan::new("ams", anchor);
        for _ in 0..6000 {
            plan.upsert(&config(60), anchor.instant);
        }
        let mut per_10s = [0u32; 6];
        while let Some(at) = plan.next_due() {
            let due = plan.pop_due(at).unwrap();
            let since = due.planned.duration_since(anchor.instant);
            if since >= Duration::from_secs(60) {
                break;
            }
            per_10s[(since.as_secs() / 10) as usize] += 1;
        }
        assert_eq!(per_10s.iter().sum::<u32>(), 6000, "every domain runs once in its first interval");
        for bucket in per_10s {
            assert!((850..=1150).contains(&bucket), "uneven spread: {per_10s:?}");
        }
    }

    #[test]
    fn a_domain_runs_every_interval_on_its_phase() {
        let anchor = anchor();
        let mut plan = Plan::new("ams", anchor);
        let c = config(30);
        plan.upsert(&c, anchor.instant);
        let first = plan.next_due().unwrap();
        assert!(first - anchor.instant < Duration::from_secs(30));
        let mut planned = Vec::new();
        for _ in 0..4 {
            let at = plan.next_due().unwrap();
            planned.push(plan.pop_due(at).unwrap().planned);
        }
        for pair in planned.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_secs(30));
        }
    }

    #[test]
    fn interval_change_takes_effect_at_once_and_removal_is_final() {
        let anchor = anchor();
        let mut plan = Plan::new("ams", anchor);
        let c = config(3600);
        plan.upsert(&c, anchor.instant);
        let mut faster = (*c).clone();
        faster.interval_s = 10;
        plan.upsert(&Arc::new(faster), anchor.instant);
        let next = plan.next_due().unwrap();
        assert!(next - anchor.instant < Duration::from_secs(10));

        plan.remove(c.id);
        assert_eq!(plan.next_due(), None);
        assert!(plan.pop_due(anchor.instant + Duration::from_secs(7200)).is_none());
    }

    #[test]
    fn other_changes_keep_the_phase_and_pausing_removes() {
        let anchor = anchor();
        let mut plan = Plan::new("ams", anchor);
        let c = config(60);
        plan.upsert(&c, anchor.instant);
        let before = plan.next_due().unwrap();
        let mut renamed = (*c).clone();
        renamed.url = "https://example.org".into();
        plan.upsert(&Arc::new(renamed), anchor.instant + Duration::from_secs(1));
        assert_eq!(plan.next_due().unwrap(), before);
        let due = plan.pop_due(before).unwrap();
        assert_eq!(due.config.url, "https://example.org");

        let mut paused = (*due.config).clone();
        paused.paused = true;
        plan.upsert(&Arc::new(paused), before);
        assert!(plan.is_empty());
        assert_eq!(plan.next_due(), None);
    }

    #[test]
    fn agents_sharing_a_region_split_the_plan_and_a_handoff_keeps_the_slots() {
        let anchor = anchor();
        let agents = ["ams-1", "ams-2"];
        let catalog = Catalog::from_snapshot(1, (0..200).map(|_| (*config(30)).clone()), "ams");
        let mut plans: Vec<Plan> = agents
            .iter()
            .map(|me| {
                let mut plan = Plan::new("ams", anchor);
                let view = Arc::new(Membership::seen(me, agents));
                assert_eq!(
                    plan.set_membership(view, &Catalog::default(), anchor.instant),
                    Handoff::default()
                );
                plan.apply(&Catalog::default(), &catalog, anchor.instant);
                plan
            })
            .collect();
        assert_eq!(plans[0].len() + plans[1].len(), 200);
        assert!(catalog.iter().all(|c| plans[0].next_of(c.id).is_some() != plans[1].next_of(c.id).is_some()));
        assert!(plans[0].len() > 50 && plans[1].len() > 50, "{} / {}", plans[0].len(), plans[1].len());

        // ams-1 runs for 45 s, then leaves; ams-2 takes its domains over at the slots ams-1
        // would have used next, not at once and not shifted.
        let left_at = anchor.instant + Duration::from_secs(45);
        while plans[0].pop_due(left_at).is_some() {}
        let mut theirs: Vec<(DomainId, Instant)> =
            catalog.iter().filter_map(|c| plans[0].next_of(c.id).map(|at| (c.id, at))).collect();
        theirs.sort();
        let (a, b) = plans.split_at_mut(1);
        let alone = Arc::new(Membership::seen("ams-2", ["ams-2"]));
        let handoff = b[0].set_membership(alone, &catalog, left_at);
        assert_eq!(handoff, Handoff { gained: a[0].len() as u64, lost: 0 });
        assert_eq!(b[0].len(), 200);
        for (id, at) in theirs {
            // A slot falling exactly on the handoff instant was probed by ams-1 and comes due at
            // once here (1 ms in 30 s); every other is the slot ams-1 would have used next.
            let want = if at == left_at + Duration::from_secs(30) { left_at } else { at };
            assert_eq!(b[0].next_of(id), Some(want), "the slot the previous owner would have used");
        }

        // ams-1 comes back: ams-2 gives up exactly the domains ams-1 takes.
        let both = Arc::new(Membership::seen("ams-2", agents));
        let back = b[0].set_membership(both, &catalog, left_at);
        assert_eq!(back, Handoff { gained: 0, lost: a[0].len() as u64 });
    }

    #[test]
    fn falling_behind_skips_missed_slots_instead_of_bursting() {
        let anchor = anchor();
        let mut plan = Plan::new("ams", anchor);
        plan.upsert(&config(10), anchor.instant);
        let first = plan.next_due().unwrap();
        let late = first + Duration::from_secs(35);
        assert!(plan.pop_due(late).is_some());
        assert_eq!(plan.skipped, 3);
        let next = plan.next_due().unwrap();
        assert!(next > late && next - late <= Duration::from_secs(10));
        assert!(plan.pop_due(late).is_none());
    }
}
