//! Agents sharing a region: which domains this agent probes when its region runs several.
//!
//! Agents of a region register in Redis ([`registry`]) and each probes only the domains that
//! rendezvous (highest random weight) hashing over the region's live members gives it: for a
//! domain `d` every member `a` has the weight `XXH3-64(d's 16 id bytes, seed = XXH3-64(a's id))`,
//! and the `agents_per_region` members with the highest weights (ties by agent id) probe it.
//! Every agent computes the same answer from the same member set, with no coordination; when a
//! member joins or leaves only the domains it wins or held move (about 1/n of them), and they
//! move to or from it alone.
//!
//! This module is pure: [`Membership`] is a value the registry publishes through a `watch`
//! channel and the scheduler's plan consults ([`crate::scheduler::plan::Plan::set_membership`]).
//! An agent always counts itself as a member, and an agent that has never seen the member set
//! (Redis unreachable since it started) probes every domain of its region: better a domain
//! probed twice than not at all.
//!
//! A view also says, for each member that left since the previous view, the last instant it is
//! known to have been alive (its last renewal): the agent taking one of its domains over knows
//! which of the domain's slots may have gone unprobed and catches up on them
//! ([`crate::scheduler::plan`]).

pub mod registry;

use shared::{DomainConfig, DomainId};
use tokio::time::Instant;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// The seed an agent's id contributes to its weights (computed once per member set).
pub fn agent_seed(agent_id: &str) -> u64 {
    xxh3_64(agent_id.as_bytes())
}

/// The rendezvous weight of `domain` for the agent whose [`agent_seed`] is `seed`: stable
/// across processes, releases and platforms.
pub fn weight(domain: DomainId, seed: u64) -> u64 {
    xxh3_64_with_seed(domain.0.as_bytes(), seed)
}

/// One live member with its seed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    id: String,
    seed: u64,
}

/// The member set this agent last saw in its region, and the assignment it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    me: Member,
    /// Sorted by id, deduplicated, always holding `me`. `None`: never seen, probe everything.
    members: Option<Vec<Member>>,
    /// Members of the previous view missing from this one, each with the last instant it is
    /// known to have been alive (its last renewal, on this process's clock).
    departed: Vec<(String, Instant)>,
}

impl Membership {
    /// The view of an agent that has not seen its region's member set: it owns every domain.
    pub fn everything(me: &str) -> Self {
        Self { me: Member { id: me.to_owned(), seed: agent_seed(me) }, members: None, departed: Vec::new() }
    }

    /// The view from a member set read from Redis (`me` is added when missing: an agent always
    /// counts itself).
    pub fn seen<'a>(me: &'a str, members: impl IntoIterator<Item = &'a str>) -> Self {
        let mut ids: Vec<&str> = members.into_iter().chain([me]).collect();
        ids.sort_unstable();
        ids.dedup();
        let members = ids.into_iter().map(|id| Member { id: id.to_owned(), seed: agent_seed(id) }).collect();
        Self {
            me: Member { id: me.to_owned(), seed: agent_seed(me) },
            members: Some(members),
            departed: Vec::new(),
        }
    }

    /// This view, saying of members that left since the previous one the last instant each is
    /// known to have been alive (the registry passes their last renewal). Members listed here
    /// that are still in this view are ignored.
    pub fn with_departed(mut self, departed: impl IntoIterator<Item = (String, Instant)>) -> Self {
        let mut departed: Vec<(String, Instant)> =
            departed.into_iter().filter(|(id, _)| !self.contains(id)).collect();
        departed.sort();
        departed.dedup_by(|a, b| a.0 == b.0);
        self.departed = departed;
        self
    }

    /// Whether `id` is a live member of this view (every agent when never seen is not
    /// knowable: `false` unless `id` is this agent).
    pub fn contains(&self, id: &str) -> bool {
        match &self.members {
            Some(members) => members.binary_search_by(|m| m.id.as_str().cmp(id)).is_ok(),
            None => id == self.me.id,
        }
    }

    /// The last instant `id`, a member that left since the previous view, is known to have
    /// been alive; `None` when this view does not say (see [`Membership::with_departed`]).
    pub fn departed_alive_at(&self, id: &str) -> Option<Instant> {
        self.departed.iter().find(|(d, _)| d == id).map(|(_, at)| *at)
    }

    /// Whether `other` has the same live members (departure details aside).
    pub fn same_members(&self, other: &Membership) -> bool {
        self.me == other.me && self.members == other.members
    }

    /// This agent's id.
    pub fn me(&self) -> &str {
        &self.me.id
    }

    /// Whether a member set was ever seen (`false`: this agent probes everything).
    pub fn is_known(&self) -> bool {
        self.members.is_some()
    }

    /// The live members' ids, sorted (empty when never seen).
    pub fn members(&self) -> Vec<&str> {
        self.members.iter().flatten().map(|m| m.id.as_str()).collect()
    }

    /// Live members counted (1 when never seen: this agent alone).
    pub fn len(&self) -> usize {
        self.members.as_ref().map_or(1, Vec::len)
    }

    /// Never true: an agent always counts itself.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether this agent probes `config`'s domain: it is among the domain's
    /// `agents_per_region` highest weights (every agent when the region has no more members).
    pub fn owns(&self, config: &DomainConfig) -> bool {
        self.owns_id(config.id, config.agents_per_region)
    }

    /// [`Membership::owns`] for a domain id and a wanted number of agents (0 counts as 1).
    pub fn owns_id(&self, domain: DomainId, agents: u32) -> bool {
        let Some(members) = &self.members else { return true };
        let wanted = agents.max(1) as usize;
        if members.len() <= wanted {
            return true;
        }
        let mine = (weight(domain, self.me.seed), self.me.id.as_str());
        let above = members.iter().filter(|m| (weight(domain, m.seed), m.id.as_str()) > mine).count();
        above < wanted
    }

    /// The members that probe `domain` when `agents` are wanted, highest weight first (every
    /// agent when never seen is not knowable: `None`).
    pub fn owners(&self, domain: DomainId, agents: u32) -> Option<Vec<&str>> {
        let members = self.members.as_ref()?;
        let mut ranked: Vec<(u64, &str)> =
            members.iter().map(|m| (weight(domain, m.seed), m.id.as_str())).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        ranked.truncate(agents.max(1) as usize);
        Some(ranked.into_iter().map(|(_, id)| id).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn ids(n: u128) -> Vec<DomainId> {
        (0..n)
            .map(|i| DomainId(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + i * 7919)))
            .collect()
    }

    fn owner_of(view: &Membership, id: DomainId) -> String {
        view.owners(id, 1).unwrap()[0].to_owned()
    }

    #[test]
    fn weights_are_stable_known_values() {
        // Fixed across processes and releases: a change here moves every domain on upgrade.
        let id: DomainId = "01900000-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(weight(id, agent_seed("ams-1")), weight(id, agent_seed("ams-1")));
        assert_eq!(agent_seed(""), 0x2d06_8005_38d3_94c2, "XXH3-64 of the empty input");
        assert_ne!(weight(id, agent_seed("ams-1")), weight(id, agent_seed("ams-2")));
    }

    #[test]
    fn ten_thousand_domains_split_evenly_and_each_has_exactly_one_owner() {
        let agents = ["ams-1", "ams-2", "ams-3"];
        let views: Vec<Membership> = agents.iter().map(|me| Membership::seen(me, agents)).collect();
        let mut per_agent: HashMap<&str, usize> = HashMap::new();
        for id in ids(10_000) {
            let owning: Vec<&str> = views.iter().filter(|v| v.owns_id(id, 1)).map(Membership::me).collect();
            assert_eq!(owning.len(), 1, "{id} owned by {owning:?}");
            assert_eq!(owning[0], owner_of(&views[0], id), "every agent agrees on the owner");
            *per_agent.entry(owning[0]).or_default() += 1;
        }
        for agent in agents {
            let share = per_agent[agent];
            // 3,333 expected; a binomial deviation of 47, so ±10% is more than 7 deviations.
            assert!((3_000..=3_667).contains(&share), "{agent}: {share} of 10000 ({per_agent:?})");
        }
    }

    #[test]
    fn a_join_moves_only_the_newcomers_share_and_a_leave_only_the_leavers() {
        let before = Membership::seen("ams-1", ["ams-1", "ams-2", "ams-3"]);
        let joined = Membership::seen("ams-1", ["ams-1", "ams-2", "ams-3", "ams-4"]);
        let domains = ids(10_000);
        let mut moved = 0;
        for id in &domains {
            let (was, is) = (owner_of(&before, *id), owner_of(&joined, *id));
            if was != is {
                assert_eq!(is, "ams-4", "a join moves domains only to the newcomer");
                moved += 1;
            }
        }
        assert!((2_250..=2_750).contains(&moved), "about a quarter moves to the fourth agent: {moved}");

        let left = Membership::seen("ams-1", ["ams-1", "ams-3"]);
        for id in &domains {
            let (was, is) = (owner_of(&before, *id), owner_of(&left, *id));
            if was != "ams-2" {
                assert_eq!(was, is, "a leave moves only the leaver's domains");
            } else {
                assert!(is == "ams-1" || is == "ams-3");
            }
        }
    }

    #[test]
    fn two_agents_per_region_are_two_distinct_members_and_the_first_is_the_single_owner() {
        let agents = ["ams-1", "ams-2", "ams-3", "ams-4"];
        let views: Vec<Membership> = agents.iter().map(|me| Membership::seen(me, agents)).collect();
        let mut per_agent: HashMap<&str, usize> = HashMap::new();
        for id in ids(4_000) {
            let owning: Vec<&str> = views.iter().filter(|v| v.owns_id(id, 2)).map(Membership::me).collect();
            assert_eq!(owning.len(), 2, "{id}: {owning:?}");
            let owners = views[0].owners(id, 2).unwrap();
            assert!(owners.iter().all(|o| owning.contains(o)));
            assert_eq!(owners[0], owner_of(&views[0], id), "the second agent is added, the first stays");
            for agent in owning {
                *per_agent.entry(agent).or_default() += 1;
            }
        }
        for agent in agents {
            assert!((1_800..=2_200).contains(&per_agent[agent]), "{per_agent:?}");
        }
        // Fewer members than wanted: all of them.
        let alone = Membership::seen("ams-1", ["ams-1"]);
        assert!(ids(100).into_iter().all(|id| alone.owns_id(id, 2)));
    }

    #[test]
    fn an_agent_that_never_saw_its_region_owns_everything_and_always_counts_itself() {
        let never = Membership::everything("ams-1");
        assert!(!never.is_known());
        assert_eq!(never.len(), 1);
        assert!(ids(1_000).into_iter().all(|id| never.owns_id(id, 1)));
        assert!(never.owners(ids(1)[0], 1).is_none());

        let without_me = Membership::seen("ams-1", ["ams-2"]);
        assert_eq!(without_me.members(), vec!["ams-1", "ams-2"]);
        let with_me = Membership::seen("ams-1", ["ams-2", "ams-1", "ams-2"]);
        assert_eq!(without_me, with_me);
        let owned = ids(1_000).into_iter().filter(|id| with_me.owns_id(*id, 1)).count();
        assert!((400..=600).contains(&owned), "{owned}");
    }
}
