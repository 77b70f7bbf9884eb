//! The consensus decision for one domain, as a pure function of the domain's regions, its
//! quorum, each region's latest observation and each region's agent health.
//!
//! Rules:
//! - The domain's regions are its `regions` (every configured region when empty); `n` is their
//!   number. Observations from other regions never vote.
//! - The quorum counts regions: the domain's `quorum` capped at `n`, or the majority
//!   `n / 2 + 1` by default (exactly 1 for a single-region domain).
//! - A region votes when its latest observation is fresh (`now - observed_at <= freshness`) and
//!   its agents are not reporting themselves unhealthy (a health report counts only while it is
//!   itself fresh; no report means healthy).
//! - A failure is no vote when the agent that observed it was saturated then: the probe started
//!   inside that agent's reported saturation window and failed in a way the agent's own
//!   overload can cause ([`saturation_can_cause`]: `timeout`, `dns`, `connect`, or no kind).
//!   Such a region is `saturated`: unknown, neither up nor down. A success still votes up, and
//!   an answer only the target can give (a status, a keyword, a certificate) still votes down.
//! - `Down` when at least `quorum` voting regions report a failure; otherwise `Up` when at least
//!   `quorum` report success; otherwise the state does not change (too few voters, or split).
//!   A failure quorum wins over a success quorum (possible only with a quorum below majority).
//! - Recovery is symmetric: a down domain comes back up only on `quorum` successes.
//! - A success whose region's latency detector says *degraded* (K anomalous probes in a row,
//!   see [`crate::degraded`]) votes `Degraded`: it passes, and it is slow. When no failure
//!   quorum stands, `Degraded` wins at `quorum` degraded votes (one region's slow path never
//!   counts), else `Up` at `quorum` passing votes (ok and degraded together). A degraded
//!   domain is up again when its degraded votes fall below the quorum.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Added to every freshness window, for delivery delay and clock skew.
pub const FRESHNESS_SLACK: Duration = Duration::from_secs(5);

/// A domain's decided state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Unknown,
    Up,
    Down,
    /// Up, but abnormally slow in a quorum of regions.
    Degraded,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Down => "down",
            State::Degraded => "degraded",
        }
    }

    pub fn parse(raw: &str) -> State {
        match raw {
            "up" => State::Up,
            "down" => State::Down,
            "degraded" => State::Degraded,
            _ => State::Unknown,
        }
    }
}

/// What an evaluation decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Up,
    Down,
    Degraded,
    Unchanged,
}

/// A region's latest observation of the domain.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[schema(as = RegionObservation)]
pub struct Observation {
    pub region: String,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub status_code: Option<i32>,
    pub observed_at: DateTime<Utc>,
    pub agent_id: String,
    /// The region's latency detector says degraded (read with the observation; a success's).
    pub degraded: bool,
}

/// A region's agents' latest self-checks, and the saturation they report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The region's verdict, aggregated over its agents: false only when every agent with a
    /// canary verdict reports itself unhealthy (true when none reported one).
    pub healthy: bool,
    /// When the newest verdict (or, without one, the newest saturation report) arrived.
    pub reported_at: DateTime<Utc>,
    /// The latest canary verdict of each agent of the region that sends one.
    pub canaries: Vec<AgentCanary>,
    /// The latest saturation report of each agent of the region.
    pub saturation: Vec<AgentSaturation>,
}

impl Health {
    /// A region's health from its agents' verdicts and saturation reports (`None` when there
    /// is neither).
    pub fn aggregate(
        canaries: Vec<AgentCanary>,
        saturation: Vec<AgentSaturation>,
        saturation_reported_at: Option<DateTime<Utc>>,
    ) -> Option<Health> {
        let healthy = canaries.is_empty() || canaries.iter().any(|c| c.healthy);
        let reported_at = canaries.iter().map(|c| c.reported_at).max().or(saturation_reported_at)?;
        Some(Health { healthy, reported_at, canaries, saturation })
    }

    /// Whether the observation of `agent_id` comes from an agent that says its own network is
    /// broken: its own verdict when it sends one, the region's otherwise; a verdict counts
    /// while `fresh` says so of when it arrived.
    pub fn unhealthy(&self, agent_id: &str, fresh: impl Fn(DateTime<Utc>) -> bool) -> bool {
        match self.canaries.iter().find(|c| c.agent_id == agent_id) {
            Some(own) => !own.healthy && fresh(own.reported_at),
            None => !self.healthy && fresh(self.reported_at),
        }
    }
}

/// One agent's latest canary self-check, as sent with its batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentCanary {
    pub agent_id: String,
    pub healthy: bool,
    /// When the agent ran the self-check, and when the control plane received it.
    pub checked_at: DateTime<Utc>,
    pub reported_at: DateTime<Utc>,
}

/// One agent's saturation as reported with its batches: every probe it started inside the
/// window (`since` to `until`, both included) may have failed because of the agent's own
/// overload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSaturation {
    pub agent_id: String,
    /// Saturated when the report was taken.
    pub saturated: bool,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The 95th percentile of its latest probes' start lag, milliseconds.
    pub lag_p95_ms: f64,
    /// When the agent took the report.
    pub checked_at: DateTime<Utc>,
}

impl AgentSaturation {
    /// Whether a probe of this agent that started at `at` started inside its saturation window.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        matches!((self.since, self.until), (Some(since), Some(until)) if since <= at && at <= until)
    }
}

/// Whether a failure of kind `error_kind` can come from the probing agent's own overload: a
/// deadline that ran out (`timeout`; `dns`, whose timeouts are its own kind), a connection that
/// did not happen (`connect`, also the agent's own socket or descriptor shortage), or an
/// unknown kind. A status, a keyword, a certificate or a protocol error is the target's answer
/// however late the agent asked.
pub fn saturation_can_cause(error_kind: Option<&str>) -> bool {
    matches!(error_kind, None | Some("timeout" | "dns" | "connect"))
}

/// Whether `observation` is a failure that its agent's saturation may explain (see
/// [`saturation_can_cause`]), by `health`'s reports.
pub fn saturated_failure(observation: &Observation, health: Option<&Health>) -> bool {
    !observation.ok
        && saturation_can_cause(observation.error_kind.as_deref())
        && health.is_some_and(|h| {
            h.saturation
                .iter()
                .any(|s| s.agent_id == observation.agent_id && s.covers(observation.observed_at))
        })
}

/// Why a region votes or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Votes up.
    Ok,
    /// Votes up, and its latency is anomalous (K slow probes in a row).
    Degraded,
    /// Votes down.
    Failing,
    /// No observation yet.
    NoObservation,
    /// The latest observation is older than the freshness window.
    Stale,
    /// Its agents report their own connectivity as broken.
    Unhealthy,
    /// It fails, but the agent that observed it was saturated then: unknown.
    Saturated,
}

impl Standing {
    pub fn votes(self) -> bool {
        matches!(self, Standing::Ok | Standing::Degraded | Standing::Failing)
    }
}

/// One region of the domain and its standing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vote {
    pub region: String,
    pub standing: Standing,
    pub observation: Option<Observation>,
}

/// Everything the decision needs.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The domain's regions, already expanded (never empty for a decision to be possible).
    pub regions: &'a [String],
    pub quorum: Option<u32>,
    pub freshness: Duration,
    pub now: DateTime<Utc>,
    /// Latest observation per region (any region; others are ignored).
    pub observations: &'a [Observation],
    pub health: &'a HashMap<String, Health>,
    pub current: State,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub quorum: u32,
    pub failing: u32,
    /// Passing votes, degraded ones included.
    pub passing: u32,
    /// Degraded votes.
    pub degraded: u32,
    pub votes: Vec<Vote>,
}

/// The quorum of a domain with `regions` regions and an optional explicit `quorum`.
pub fn quorum(regions: usize, explicit: Option<u32>) -> u32 {
    let n = u32::try_from(regions).unwrap_or(u32::MAX);
    match explicit {
        Some(q) => q.clamp(1, n.max(1)),
        None => n / 2 + 1,
    }
}

/// The freshness window of a domain probed every `interval_s` seconds.
pub fn freshness(interval_s: u32, factor: f64) -> Duration {
    Duration::from_secs_f64(f64::from(interval_s) * factor) + FRESHNESS_SLACK
}

fn standing(inputs: &Inputs<'_>, observation: Option<&Observation>, region: &str) -> Standing {
    let Some(observation) = observation else {
        return Standing::NoObservation;
    };
    let window = chrono::Duration::from_std(inputs.freshness).unwrap_or(chrono::Duration::MAX);
    let fresh = |at: DateTime<Utc>| inputs.now.signed_duration_since(at) <= window;
    if !fresh(observation.observed_at) {
        return Standing::Stale;
    }
    let health = inputs.health.get(region);
    if health.is_some_and(|h| h.unhealthy(&observation.agent_id, fresh)) {
        return Standing::Unhealthy;
    }
    if saturated_failure(observation, health) {
        return Standing::Saturated;
    }
    if observation.ok && observation.degraded {
        Standing::Degraded
    } else if observation.ok {
        Standing::Ok
    } else {
        Standing::Failing
    }
}

/// Decides the domain's next state.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let quorum = quorum(inputs.regions.len(), inputs.quorum);
    let votes: Vec<Vote> = inputs
        .regions
        .iter()
        .map(|region| {
            let observation = inputs.observations.iter().find(|o| &o.region == region);
            Vote {
                region: region.clone(),
                standing: standing(inputs, observation, region),
                observation: observation.cloned(),
            }
        })
        .collect();
    let count = |s: Standing| votes.iter().filter(|v| v.standing == s).count() as u32;
    let (failing, degraded) = (count(Standing::Failing), count(Standing::Degraded));
    let passing = count(Standing::Ok) + degraded;
    let wanted = if inputs.regions.is_empty() {
        None
    } else if failing >= quorum {
        Some(State::Down)
    } else if degraded >= quorum {
        Some(State::Degraded)
    } else if passing >= quorum {
        Some(State::Up)
    } else {
        None
    };
    let outcome = match wanted {
        Some(state) if state == inputs.current => Outcome::Unchanged,
        Some(State::Down) => Outcome::Down,
        Some(State::Up) => Outcome::Up,
        Some(State::Degraded) => Outcome::Degraded,
        _ => Outcome::Unchanged,
    };
    Decision { outcome, quorum, failing, passing, degraded, votes }
}

impl Decision {
    /// One sentence saying why `current` is the domain's state, or why none can be decided:
    /// what the API's status answers as `reason`. An operator who sees `unknown` learns which
    /// regions are missing and what to look at (a region with no observation at all usually
    /// has no agent running, or its agent does not deliver to this control plane).
    pub fn explain(&self, current: State) -> String {
        let n = self.votes.len();
        if n == 0 {
            return "no regions are configured: add regions to the control plane's `regions`".into();
        }
        let q = self.quorum;
        let voting = self.failing + self.passing;
        let list = |standing: Standing| -> Vec<&str> {
            self.votes.iter().filter(|v| v.standing == standing).map(|v| v.region.as_str()).collect()
        };
        let mut missing = Vec::new();
        for (standing, why) in [
            (Standing::NoObservation, "no result yet (is an agent of that region running and delivering?)"),
            (Standing::Stale, "results too old to vote (its agents stopped reporting)"),
            (Standing::Unhealthy, "agents reporting their own network as broken"),
            (
                Standing::Saturated,
                "failing, but its agent was saturated when it probed (probes starting late): unknown, not a vote",
            ),
        ] {
            let regions = list(standing);
            if !regions.is_empty() {
                missing.push(format!("{}: {why}", regions.join(", ")));
            }
        }
        let missing =
            if missing.is_empty() { String::new() } else { format!("; not voting: {}", missing.join("; ")) };
        if self.failing >= q {
            return format!("{} of {n} regions fail (quorum {q}){missing}", self.failing);
        }
        if self.degraded >= q {
            return format!(
                "{} of {n} regions answer abnormally slowly (quorum {q}){missing}",
                self.degraded
            );
        }
        if self.passing >= q {
            return format!("{} of {n} regions pass (quorum {q}){missing}", self.passing);
        }
        let kept = match current {
            State::Unknown => "no state decided yet".to_owned(),
            state => format!("{} kept", state.as_str()),
        };
        if voting < q {
            format!(
                "{kept}: {voting} of {n} regions vote and the quorum is {q} ({} pass, {} fail){missing}",
                self.passing, self.failing
            )
        } else {
            format!(
                "{kept}: regions disagree ({} pass, {} fail) and neither side reaches the quorum of {q}{missing}",
                self.passing, self.failing
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_names_the_missing_regions_and_the_quorum() {
        let now = Utc::now();
        let regions: Vec<String> = ["ams", "iad", "sin"].map(String::from).to_vec();
        let observations = [obs("ams", true, 1, now)];
        let health = HashMap::new();
        let inputs = Inputs {
            regions: &regions,
            quorum: None,
            freshness: Duration::from_secs(60),
            now,
            observations: &observations,
            health: &health,
            current: State::Unknown,
        };
        let decision = decide(&inputs);
        assert_eq!(
            decision.explain(State::Unknown),
            "no state decided yet: 1 of 3 regions vote and the quorum is 2 (1 pass, 0 fail); not voting: \
             iad, sin: no result yet (is an agent of that region running and delivering?)"
        );
        let observations = [obs("ams", true, 1, now), obs("iad", false, 1, now), obs("sin", true, 600, now)];
        let decision = decide(&Inputs { observations: &observations, current: State::Up, ..inputs.clone() });
        assert_eq!(
            decision.explain(State::Up),
            "up kept: regions disagree (1 pass, 1 fail) and neither side reaches the quorum of 2; not \
             voting: sin: results too old to vote (its agents stopped reporting)"
        );
        let observations = [obs("ams", false, 1, now), obs("iad", false, 1, now), obs("sin", true, 1, now)];
        let decision =
            decide(&Inputs { observations: &observations, current: State::Down, ..inputs.clone() });
        assert_eq!(decision.explain(State::Down), "2 of 3 regions fail (quorum 2)");
        let one = ["ams".to_owned()];
        let observations = [obs("ams", true, 1, now)];
        let decision = decide(&Inputs { regions: &one, observations: &observations, ..inputs.clone() });
        assert_eq!(decision.explain(State::Up), "1 of 1 regions pass (quorum 1)");
        let none: [String; 0] = [];
        let decision = decide(&Inputs { regions: &none, ..inputs });
        assert!(decision.explain(State::Unknown).starts_with("no regions are configured"));
    }

    fn obs(region: &str, ok: bool, age_s: i64, now: DateTime<Utc>) -> Observation {
        Observation {
            region: region.into(),
            ok,
            error_kind: (!ok).then(|| "connect".into()),
            status_code: None,
            observed_at: now - chrono::Duration::seconds(age_s),
            agent_id: format!("{region}-1"),
            degraded: false,
        }
    }

    #[test]
    fn degraded_by_quorum_only() {
        let now = Utc::now();
        let regions: Vec<String> = ["ams", "iad", "sin"].map(String::from).to_vec();
        let health = HashMap::new();
        // (current, per region: "ok", "slow" (ok and degraded), "fail" or "-" (none), expected)
        let cases: [(State, [&str; 3], Outcome); 12] = [
            (State::Up, ["slow", "ok", "ok"], Outcome::Unchanged),
            (State::Up, ["slow", "slow", "ok"], Outcome::Degraded),
            (State::Up, ["slow", "slow", "slow"], Outcome::Degraded),
            (State::Unknown, ["slow", "slow", "-"], Outcome::Degraded),
            (State::Unknown, ["slow", "ok", "-"], Outcome::Up),
            (State::Up, ["slow", "fail", "fail"], Outcome::Down),
            (State::Degraded, ["slow", "fail", "fail"], Outcome::Down),
            (State::Degraded, ["slow", "slow", "fail"], Outcome::Unchanged),
            (State::Degraded, ["slow", "ok", "ok"], Outcome::Up),
            (State::Degraded, ["slow", "ok", "fail"], Outcome::Up),
            (State::Down, ["slow", "slow", "ok"], Outcome::Degraded),
            (State::Down, ["slow", "ok", "fail"], Outcome::Up),
        ];
        for (current, votes, expect) in cases {
            let observations: Vec<Observation> = regions
                .iter()
                .zip(votes)
                .filter(|(_, v)| *v != "-")
                .map(|(r, v)| Observation { degraded: v == "slow", ..obs(r, v != "fail", 1, now) })
                .collect();
            let decision = decide(&Inputs {
                regions: &regions,
                quorum: None,
                freshness: Duration::from_secs(60),
                now,
                observations: &observations,
                health: &health,
                current,
            });
            assert_eq!(decision.outcome, expect, "{current:?} {votes:?}");
        }
        // A failed probe is a failure whatever its region's latency detector says.
        let observations = [Observation { degraded: true, ..obs("ams", false, 1, now) }];
        let one = ["ams".to_owned()];
        let decision = decide(&Inputs {
            regions: &one,
            quorum: None,
            freshness: Duration::from_secs(60),
            now,
            observations: &observations,
            health: &health,
            current: State::Up,
        });
        assert_eq!((decision.outcome, decision.votes[0].standing), (Outcome::Down, Standing::Failing));
        let observations = [Observation { degraded: true, ..obs("ams", true, 1, now) }];
        let decision = decide(&Inputs {
            regions: &one,
            quorum: None,
            freshness: Duration::from_secs(60),
            now,
            observations: &observations,
            health: &health,
            current: State::Up,
        });
        assert_eq!(decision.explain(State::Degraded), "1 of 1 regions answer abnormally slowly (quorum 1)");
    }

    struct Case {
        name: &'static str,
        regions: &'static [&'static str],
        quorum: Option<u32>,
        current: State,
        /// (region, ok, age in seconds)
        observations: &'static [(&'static str, bool, i64)],
        unhealthy: &'static [&'static str],
        expect: Outcome,
    }

    const CASES: &[Case] = &[
        Case {
            name: "unknown becomes up on a majority of successes",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Unknown,
            observations: &[("ams", true, 1), ("iad", true, 1)],
            unhealthy: &[],
            expect: Outcome::Up,
        },
        Case {
            name: "quorum of failures reached",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", false, 1), ("sin", true, 1)],
            unhealthy: &[],
            expect: Outcome::Down,
        },
        Case {
            name: "one failure of three does not reach quorum",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", true, 1), ("sin", true, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "one failure and no other voter: not reached, state kept",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Unknown,
            observations: &[("ams", false, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "stale region ignored",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", false, 600), ("sin", true, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "unhealthy agent's region ignored",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", false, 1), ("sin", true, 1)],
            unhealthy: &["iad"],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "single region decides alone",
            regions: &["ams"],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", true, 1)],
            unhealthy: &[],
            expect: Outcome::Down,
        },
        Case {
            name: "observations of regions outside the domain do not vote",
            regions: &["ams", "iad"],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1), ("sin", false, 1), ("iad", true, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "region set changed while down: the new set's quorum recovers it",
            regions: &["ams", "iad"],
            quorum: None,
            current: State::Down,
            observations: &[("ams", true, 1), ("iad", true, 1), ("sin", false, 1)],
            unhealthy: &[],
            expect: Outcome::Up,
        },
        Case {
            name: "region set changed while down: too few voters keep it down",
            regions: &["ams", "iad"],
            quorum: None,
            current: State::Down,
            observations: &[("ams", true, 1), ("sin", true, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "symmetric recovery needs a quorum of successes",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Down,
            observations: &[("ams", true, 1), ("iad", false, 1), ("sin", false, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "symmetric recovery",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Down,
            observations: &[("ams", true, 1), ("iad", true, 1), ("sin", false, 1)],
            unhealthy: &[],
            expect: Outcome::Up,
        },
        Case {
            name: "explicit quorum of one: any failure is down, and it wins over successes",
            regions: &["ams", "iad", "sin"],
            quorum: Some(1),
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", true, 1), ("sin", true, 1)],
            unhealthy: &[],
            expect: Outcome::Down,
        },
        Case {
            name: "explicit quorum above the region count is capped",
            regions: &["ams", "iad"],
            quorum: Some(5),
            current: State::Up,
            observations: &[("ams", false, 1), ("iad", false, 1)],
            unhealthy: &[],
            expect: Outcome::Down,
        },
        Case {
            name: "already down stays unchanged",
            regions: &["ams", "iad", "sin"],
            quorum: None,
            current: State::Down,
            observations: &[("ams", false, 1), ("iad", false, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
        Case {
            name: "no regions at all decides nothing",
            regions: &[],
            quorum: None,
            current: State::Up,
            observations: &[("ams", false, 1)],
            unhealthy: &[],
            expect: Outcome::Unchanged,
        },
    ];

    #[test]
    fn table() {
        let now = Utc::now();
        for case in CASES {
            let regions: Vec<String> = case.regions.iter().map(|r| r.to_string()).collect();
            let observations: Vec<Observation> =
                case.observations.iter().map(|(r, ok, age)| obs(r, *ok, *age, now)).collect();
            let health: HashMap<String, Health> = case
                .unhealthy
                .iter()
                .map(|r| (r.to_string(), unhealthy_agent(&format!("{r}-1"), now)))
                .collect();
            let decision = decide(&Inputs {
                regions: &regions,
                quorum: case.quorum,
                freshness: freshness(30, 2.5),
                now,
                observations: &observations,
                health: &health,
                current: case.current,
            });
            assert_eq!(decision.outcome, case.expect, "{}: {decision:?}", case.name);
        }
    }

    /// A region whose one agent `agent_id` reported itself unhealthy at `at`.
    fn unhealthy_agent(agent_id: &str, at: DateTime<Utc>) -> Health {
        let canary =
            AgentCanary { agent_id: agent_id.into(), healthy: false, checked_at: at, reported_at: at };
        Health::aggregate(vec![canary], Vec::new(), None).unwrap()
    }

    #[test]
    fn each_agent_of_a_region_has_its_own_health_and_the_region_aggregates() {
        let now = Utc::now();
        let regions = vec!["ams".to_owned(), "iad".to_owned(), "sin".to_owned()];
        let canary = |agent: &str, healthy: bool| AgentCanary {
            agent_id: agent.into(),
            healthy,
            checked_at: now,
            reported_at: now,
        };
        // Two agents in iad: iad-2's network is broken, iad-1's is fine.
        let iad =
            Health::aggregate(vec![canary("iad-1", true), canary("iad-2", false)], Vec::new(), None).unwrap();
        assert!(iad.healthy, "the region is healthy while one of its agents is");
        let health = HashMap::from([("iad".to_owned(), iad)]);
        let from = |agent: &str, ok: bool| Observation { agent_id: agent.into(), ..obs("iad", ok, 1, now) };
        let decide_with = |observations: &[Observation]| {
            decide(&Inputs {
                regions: &regions,
                quorum: None,
                freshness: freshness(30, 2.5),
                now,
                observations,
                health: &health,
                current: State::Up,
            })
        };
        let ams = obs("ams", false, 1, now);
        // iad's latest observation made by the unhealthy agent: no vote, no quorum.
        let decision = decide_with(&[ams.clone(), from("iad-2", false)]);
        assert_eq!(decision.votes[1].standing, Standing::Unhealthy);
        assert_eq!(decision.outcome, Outcome::Unchanged);
        // Made by the healthy one: it votes, and two of three regions fail.
        let decision = decide_with(&[ams.clone(), from("iad-1", false)]);
        assert_eq!(decision.votes[1].standing, Standing::Failing);
        assert_eq!(decision.outcome, Outcome::Down);
        // An agent without canaries takes the region's verdict: healthy here.
        assert_eq!(decide_with(&[ams.clone(), from("iad-3", false)]).votes[1].standing, Standing::Failing);

        // Every agent with a verdict unhealthy: the region is, for its agents without one too.
        let all_down =
            Health::aggregate(vec![canary("iad-1", false), canary("iad-2", false)], Vec::new(), None)
                .unwrap();
        assert!(!all_down.healthy);
        assert!(all_down.unhealthy("iad-3", |_| true));
        assert!(all_down.unhealthy("iad-1", |_| true));
        assert!(!all_down.unhealthy("iad-1", |_| false), "a stale verdict does not count");
        assert_eq!(Health::aggregate(Vec::new(), Vec::new(), None), None);
        let only_saturation = Health::aggregate(Vec::new(), Vec::new(), Some(now)).unwrap();
        assert!(only_saturation.healthy && !only_saturation.unhealthy("iad-1", |_| true));
    }

    #[test]
    fn stale_health_report_is_ignored() {
        let now = Utc::now();
        let regions = vec!["ams".to_owned()];
        let observations = vec![obs("ams", false, 1, now)];
        let health =
            HashMap::from([("ams".to_owned(), unhealthy_agent("ams-1", now - chrono::Duration::hours(1)))]);
        let decision = decide(&Inputs {
            regions: &regions,
            quorum: None,
            freshness: freshness(30, 2.5),
            now,
            observations: &observations,
            health: &health,
            current: State::Up,
        });
        assert_eq!(decision.outcome, Outcome::Down);
        assert_eq!(decision.votes[0].standing, Standing::Failing);
    }

    #[test]
    fn a_saturated_agents_failures_are_unknown_but_the_targets_answers_still_vote() {
        let now = Utc::now();
        let regions: Vec<String> = ["ams", "iad", "sin"].map(String::from).to_vec();
        let saturated = |since_s: i64, until_s: i64| AgentSaturation {
            agent_id: "iad-1".into(),
            saturated: until_s == 0,
            since: Some(now - chrono::Duration::seconds(since_s)),
            until: Some(now - chrono::Duration::seconds(until_s)),
            lag_p95_ms: 4_000.0,
            checked_at: now,
        };
        let health = |window: AgentSaturation| {
            HashMap::from([(
                "iad".to_owned(),
                Health { healthy: true, reported_at: now, canaries: Vec::new(), saturation: vec![window] },
            )])
        };
        let timeout =
            |region: &str| Observation { error_kind: Some("timeout".into()), ..obs(region, false, 2, now) };
        let decide_with = |observations: &[Observation], health: &HashMap<String, Health>| {
            decide(&Inputs {
                regions: &regions,
                quorum: None,
                freshness: freshness(30, 2.5),
                now,
                observations,
                health,
                current: State::Up,
            })
        };
        // ams and iad time out, but iad's agent was saturated when it probed: no quorum.
        let observations = [timeout("ams"), timeout("iad"), obs("sin", true, 1, now)];
        let within = health(saturated(10, 0));
        let decision = decide_with(&observations, &within);
        assert_eq!(decision.outcome, Outcome::Unchanged);
        assert_eq!(decision.votes[1].standing, Standing::Saturated);
        assert_eq!((decision.failing, decision.passing), (1, 1));
        assert!(
            decision.explain(State::Up).contains("iad: failing, but its agent was saturated"),
            "{}",
            decision.explain(State::Up)
        );
        // A window that ended before the probe started does not cover it.
        let decision = decide_with(&observations, &health(saturated(60, 30)));
        assert_eq!(decision.outcome, Outcome::Down);
        // Another agent of the region was saturated, not the one that observed.
        let mut other = saturated(10, 0);
        other.agent_id = "iad-2".into();
        assert_eq!(decide_with(&observations, &health(other)).outcome, Outcome::Down);
        // A status is the target's answer: it votes whatever the agent's load.
        let answered =
            Observation { error_kind: Some("status".into()), status_code: Some(503), ..timeout("iad") };
        let observations = [timeout("ams"), answered, obs("sin", true, 1, now)];
        assert_eq!(decide_with(&observations, &within).outcome, Outcome::Down);
        // A success of a saturated agent still votes up.
        let observations = [obs("ams", true, 1, now), obs("iad", true, 2, now), timeout("sin")];
        let decision = decide(&Inputs {
            regions: &regions,
            quorum: None,
            freshness: freshness(30, 2.5),
            now,
            observations: &observations,
            health: &within,
            current: State::Down,
        });
        assert_eq!(decision.outcome, Outcome::Up);
        assert!(saturation_can_cause(None) && saturation_can_cause(Some("dns")));
        assert!(!saturation_can_cause(Some("tls")) && !saturation_can_cause(Some("keyword")));
    }

    #[test]
    fn quorum_defaults() {
        assert_eq!(quorum(1, None), 1);
        assert_eq!(quorum(2, None), 2);
        assert_eq!(quorum(3, None), 2);
        assert_eq!(quorum(4, None), 3);
        assert_eq!(quorum(5, None), 3);
        assert_eq!(quorum(3, Some(3)), 3);
        assert_eq!(quorum(2, Some(3)), 2);
    }

    #[test]
    fn freshness_scales_with_the_interval() {
        assert_eq!(freshness(60, 2.5), Duration::from_secs(150) + FRESHNESS_SLACK);
    }
}
