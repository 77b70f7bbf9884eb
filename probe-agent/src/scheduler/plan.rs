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
//! **Catching up after a takeover.** Waiting for the next slot is not enough when the previous
//! owner died: it was last known alive at `A` (its last renewal), the taker sees it gone at
//! `T` (up to `membership_ttl_ms` later), and a slot of the domain falling in `(A, T)` may
//! have gone unprobed, so waiting for the next one would leave up to two intervals without a
//! probe. A gained domain whose first slot after `A`, `m`, lies before `T` is therefore probed
//! once at `c = T + (m − A)/2`, then returns to its phase at its next slot. The missed slots
//! lie in `(A, T)`, so the catch-ups are replayed from `T` at half their spacing, the most
//! overdue first, over `(T − A)/2`: twice the share's own rate, no burst. The longest gap is
//! then bounded: the domain's last probe was at `m − interval` at the latest, so
//! `c − (m − interval) = interval + (T − m) + (m − A)/2 ≤ interval + (T − A)`, that is at most
//! `interval + membership_ttl_ms` (plus the time to notice) for a dead agent, and about
//! `interval` plus two heartbeats for one that left cleanly. A domain whose previous owner is
//! still a member (this agent just joined, or a second agent of `agents_per_region` stays) and
//! every domain at start keep their slot: their owner is probing them.
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
        if at >= self.instant {
            self.wall_ms + (at - self.instant).as_millis() as u64
        } else {
            self.wall_ms.saturating_sub((self.instant - at).as_millis() as u64)
        }
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
    /// For a catch-up probe planned at `next` (off its phase): the slot to return to after it.
    resume: Option<Instant>,
}

/// Domains that changed hands when the member set changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handoff {
    /// Taken over by this agent.
    pub gained: u64,
    /// Given up to another agent.
    pub lost: u64,
    /// Of the gained, those whose previous owner may have missed a slot: probed once ahead of
    /// their next slot (see the module documentation).
    pub overdue: u64,
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
        self.push_resuming(config, next, None);
    }

    fn push_resuming(&mut self, config: Arc<DomainConfig>, next: Instant, resume: Option<Instant>) {
        self.generation += 1;
        let id = config.id;
        let interval = Duration::from_secs(u64::from(config.interval_s.max(1)));
        self.heap.push(Reverse((next, self.generation, id)));
        self.entries.insert(id, Entry { config, interval, generation: self.generation, next, resume });
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
    /// used) or, when their previous owner left and may have missed a slot, probed once ahead
    /// of it (see the module documentation); those another agent now owns are removed, and the
    /// rest keep their planned time.
    pub fn set_membership(
        &mut self,
        membership: Arc<Membership>,
        catalog: &Catalog,
        now: Instant,
    ) -> Handoff {
        let previous = std::mem::replace(&mut self.membership, membership);
        let mut handoff = Handoff::default();
        for config in catalog.iter() {
            let owned = !config.paused && self.membership.owns(config);
            let held = self.entries.contains_key(&config.id);
            if owned && !held {
                self.upsert(config, now);
                handoff.gained += 1;
                if let Some(alive) = self.probed_until(&previous, config, now) {
                    if self.catch_up(config, alive, now) {
                        handoff.overdue += 1;
                    }
                }
            } else if !owned && held {
                self.remove(config.id);
                handoff.lost += 1;
            }
        }
        self.compact();
        handoff
    }

    /// Until when `config`'s domain, newly this agent's, is known to have been probed by its
    /// previous owners under `previous`: `now` when one of them is still a member (it probes
    /// until it sees this view), the latest a departed one was known alive otherwise, an
    /// interval ago when the view does not say. `None` when `previous` never saw the member
    /// set (at start: the domain keeps its slot, no burst).
    fn probed_until(&self, previous: &Membership, config: &DomainConfig, now: Instant) -> Option<Instant> {
        let owners = previous.owners(config.id, config.agents_per_region)?;
        let interval = Duration::from_secs(u64::from(config.interval_s.max(1)));
        let unknown = now.checked_sub(interval).unwrap_or(now);
        owners
            .into_iter()
            .filter(|owner| *owner != self.membership.me())
            .map(|owner| {
                if self.membership.contains(owner) {
                    now
                } else {
                    self.membership.departed_alive_at(owner).unwrap_or(unknown).min(now)
                }
            })
            .max()
    }

    /// Plans a catch-up probe of a just-gained domain whose owner was last known probing at
    /// `alive`, when a slot of it fell between `alive` and `now`: at `now + (m − alive)/2`, `m`
    /// being that first possibly missed slot, then back to its next slot. Whether it did.
    fn catch_up(&mut self, config: &Arc<DomainConfig>, alive: Instant, now: Instant) -> bool {
        let interval = Duration::from_secs(u64::from(config.interval_s.max(1)));
        let missed = self.next_slot(config, interval, alive);
        if missed >= now {
            return false;
        }
        let at = now + (missed - alive) / 2;
        let resume = self.next_slot(config, interval, now);
        if at >= resume {
            return false;
        }
        self.push_resuming(config.clone(), at, Some(resume));
        true
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
    /// later, or at its slot after a catch-up probe (skipping slots already in the past if the
    /// agent fell behind).
    pub fn pop_due(&mut self, now: Instant) -> Option<Due> {
        self.drop_stale();
        let Reverse((at, _, id)) = *self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        let entry = self.entries.get(&id)?;
        let (config, interval) = (entry.config.clone(), entry.interval);
        // A catch-up probe returns to the domain's phase; a regular one goes on to its next slot.
        let mut next = entry.resume.unwrap_or(at + interval);
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
    use std::collections::HashMap;

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
        // It left cleanly: alive until the handoff, so it missed no slot and nothing is overdue.
        let alone =
            Arc::new(Membership::seen("ams-2", ["ams-2"]).with_departed([("ams-1".to_owned(), left_at)]));
        let handoff = b[0].set_membership(alone, &catalog, left_at);
        assert_eq!(handoff, Handoff { gained: a[0].len() as u64, lost: 0, overdue: 0 });
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
        assert_eq!(back, Handoff { gained: 0, lost: a[0].len() as u64, overdue: 0 });
    }

    /// Two plans of one region over `catalog`, each holding its share.
    fn shared_plans(anchor: Anchor, catalog: &Catalog, agents: [&str; 2]) -> Vec<Plan> {
        agents
            .iter()
            .map(|me| {
                let mut plan = Plan::new("ams", anchor);
                plan.set_membership(
                    Arc::new(Membership::seen(me, agents)),
                    &Catalog::default(),
                    anchor.instant,
                );
                plan.apply(&Catalog::default(), catalog, anchor.instant);
                plan
            })
            .collect()
    }

    #[test]
    fn a_dead_owners_domains_are_caught_up_within_an_interval_plus_the_ttl_without_a_burst() {
        let anchor = anchor();
        let interval = Duration::from_secs(60);
        let ttl = Duration::from_secs(15);
        let catalog = Catalog::from_snapshot(1, (0..2_000).map(|_| (*config(60)).clone()), "ams");
        let mut plans = shared_plans(anchor, &catalog, ["ams-1", "ams-2"]);
        // ams-1 probes every slot until it dies; its last renewal was 2 s before.
        let died = anchor.instant + Duration::from_secs(130);
        let renewed = died - Duration::from_secs(2);
        let mut last: HashMap<DomainId, Instant> = HashMap::new();
        while let Some(at) = plans[0].next_due().filter(|at| *at <= died) {
            let due = plans[0].pop_due(at).unwrap();
            last.insert(due.config.id, due.planned);
        }
        assert_eq!(plans[0].skipped, 0, "on time");
        let theirs = plans[0].len();
        assert_eq!(last.len(), theirs);
        // ams-2 reads the set just after the registration expired.
        let noticed = renewed + ttl + Duration::from_millis(5);
        let unknown = noticed - renewed;
        let view = Membership::seen("ams-2", ["ams-2"]).with_departed([("ams-1".to_owned(), renewed)]);
        let handoff = plans[1].set_membership(Arc::new(view), &catalog, noticed);
        assert_eq!((handoff.gained, handoff.lost), (theirs as u64, 0));
        // Those with a slot in the 17 s ams-1 may have missed: about 17/60 of its share.
        let expected = theirs as f64 * unknown.as_secs_f64() / 60.0;
        assert!((handoff.overdue as f64 - expected).abs() < expected * 0.3, "{handoff:?}, ~{expected}");

        let end = noticed + interval * 2;
        let mut probes: HashMap<DomainId, Vec<Instant>> = HashMap::new();
        let mut off_phase_per_second: HashMap<u64, u32> = HashMap::new();
        while let Some(at) = plans[1].next_due().filter(|at| *at <= end) {
            let due = plans[1].pop_due(at).unwrap();
            if last.contains_key(&due.config.id) {
                probes.entry(due.config.id).or_default().push(due.planned);
            }
            if plans[1].next_slot(&due.config, interval, due.planned) != due.planned {
                assert!(
                    due.planned >= noticed && due.planned - noticed <= unknown / 2,
                    "catch-ups within (T − A)/2"
                );
                *off_phase_per_second.entry((due.planned - noticed).as_secs()).or_default() += 1;
            }
        }
        assert_eq!(off_phase_per_second.values().sum::<u32>() as u64, handoff.overdue, "one catch-up each");
        // Twice the share's own rate (1,000 domains a minute: 17 a second), never a burst.
        let rate = theirs as f64 / 60.0;
        for (second, n) in &off_phase_per_second {
            assert!(f64::from(*n) <= 2.0 * rate * 1.6 + 5.0, "{n} catch-ups in second {second}");
        }
        for (id, previous) in &last {
            let times = &probes[id];
            let gap = times[0] - *previous;
            assert!(
                gap <= interval + unknown,
                "{id}: {gap:?} without a probe (bound {:?})",
                interval + unknown
            );
            // Back on its phase after at most one catch-up.
            let config = catalog.get(id).unwrap();
            for at in &times[1..] {
                assert_eq!(plans[1].next_slot(config, interval, *at), *at, "{id} back on its phase");
            }
            for pair in times.windows(2) {
                assert!(
                    pair[1] - pair[0] >= interval - unknown,
                    "{id}: probes {:?} apart",
                    pair[1] - pair[0]
                );
            }
        }
    }

    #[test]
    fn a_departure_the_view_does_not_date_counts_as_a_whole_interval_unknown() {
        let anchor = anchor();
        let catalog = Catalog::from_snapshot(1, (0..600).map(|_| (*config(60)).clone()), "ams");
        let mut plans = shared_plans(anchor, &catalog, ["ams-1", "ams-2"]);
        let now = anchor.instant + Duration::from_secs(100);
        let handoff = plans[1].set_membership(Arc::new(Membership::seen("ams-2", ["ams-2"])), &catalog, now);
        assert_eq!(handoff.overdue, handoff.gained, "every gained domain is caught up");
        let mut caught = 0;
        while let Some(at) = plans[1].next_due().filter(|at| *at < now + Duration::from_secs(30)) {
            let due = plans[1].pop_due(at).unwrap();
            if plans[1].next_slot(&due.config, Duration::from_secs(60), due.planned) != due.planned {
                caught += 1;
            }
        }
        assert_eq!(caught, handoff.gained, "spread over half an interval");
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
