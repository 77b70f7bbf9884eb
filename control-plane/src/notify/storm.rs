//! Storm control per channel, as pure logic: which due notifications of a channel go out one by
//! one, which are held, and which go out together as one grouped message ([`plan`]); what the
//! grouped message says ([`Group`]: the webhook document, the Slack and email text) and what the
//! affected domains have in common ([`common_facts`]).
//!
//! **The window.** The first notification that reaches a channel with no window open goes out
//! at once and opens a window of `storm_window_s`; notifications about the first
//! `storm_threshold` (default 1) domains of a window go out one by one (a domain's own down,
//! acknowledgement and recovery are not a storm), those about other domains are held to the
//! window's end and then sent as one grouped message, which opens a grouping window (a storm
//! that goes on is grouped once per window). A window that passes with nothing held closes: the
//! next notification is again the first. So an isolated notification is never delayed, a
//! notification inside a storm waits at most one window, and a storm reaches a channel as one
//! message per window after its first ones.
//!
//! **Default `storm_window_s` = 10.** It bounds the delay added to a notification inside a storm
//! to 10 s, the same order as detection itself (a region notices an outage at its next probe,
//! interval / regions later: 10 s for 3 regions at 30 s), so a mass outage is still reported
//! within seconds of the first page; and it caps a storm at 6 messages a minute per channel, a
//! rate a person can read and a chat channel or mail server accepts. Longer windows group more
//! but delay more; 0 disables grouping.
//!
//! Only notifications about a domain take part: tests and digests are never held and open no
//! window. A domain's notifications keep their order: a grouped message lists them by `seq`, and
//! a row is never taken while an earlier pending row of its domain is not due (held, in backoff
//! or in flight).

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::channels::{webhook_body, Outgoing};
use super::Notification;

/// Notifications in one grouped message at most; more are grouped again at once.
pub const MAX_GROUP: usize = 1000;

/// Notifications named one by one in a Slack or email group message; the rest are counted.
pub const LISTED: usize = 20;

/// A channel's storm settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub window: chrono::Duration,
    pub threshold: u32,
}

/// A channel's current window: its end, the domains whose notifications went out one by one in
/// it, and whether it is a grouping window (opened by a grouped message: everything is held).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub end: DateTime<Utc>,
    pub domains: Vec<Uuid>,
    pub grouping: bool,
}

impl Window {
    /// No window: the next notification is the first.
    pub fn closed() -> Self {
        Self { end: DateTime::<Utc>::MIN_UTC, domains: Vec::new(), grouping: false }
    }
}

/// One due row of a channel, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub domain: Uuid,
    /// Held before: it waited for a window's end.
    pub held: bool,
}

/// What to do with a channel's due notifications (indexes into the rows given to [`plan`]).
/// Rows in none of the lists are left as they are: a later row of a domain whose earlier row
/// goes out alone now waits for that one (one delivery per domain at a time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Sent one by one, now (at most one per domain).
    pub individual: Vec<usize>,
    /// Sent as one grouped message, now (empty, or two or more).
    pub group: Vec<usize>,
    /// Held until `hold_until` (marked held: they are grouped when due).
    pub hold: Vec<usize>,
    pub hold_until: DateTime<Utc>,
    /// The channel's window after this step.
    pub next: Window,
}

/// Pending rows of a channel scanned per step at most, in `seq` order (see [`takeable`]).
pub const SCAN: usize = 50_000;

/// One pending row of a channel, as [`takeable`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending<Id> {
    pub id: Id,
    pub domain: Uuid,
    /// `next_attempt_at` has come.
    pub due: bool,
    /// Held before for a grouped message.
    pub held: bool,
}

/// The rows that may be taken now, in `seq` order, at most `max`: a row is due and no earlier
/// pending row of its domain is not due (held, in backoff or in flight), so a domain's
/// notifications keep their order. `pending` is a channel's pending rows in `seq` order from
/// the first: every row before a taken one has been seen.
///
/// This is a linear pass over what one indexed scan returns; the same rule as one SQL anti-join
/// was quadratic whenever the planner's estimate of a fast-growing table was stale (1.5 to 8 s
/// per step for 10,000 held rows).
pub fn takeable<Id: Copy>(pending: &[Pending<Id>], max: usize) -> Vec<Pending<Id>> {
    let mut blocked: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    let mut taken = Vec::new();
    for row in pending {
        if taken.len() >= max {
            break;
        }
        if !row.due {
            blocked.insert(row.domain);
        } else if !blocked.contains(&row.domain) {
            taken.push(*row);
        }
    }
    taken
}

/// `taken` (from [`takeable`]) without the rows `kept` refuses and without any later row of
/// their domains: a row that changed between the scan and its lock never lets a later row of
/// its domain go first.
pub fn keep<Id: Copy>(taken: Vec<Pending<Id>>, kept: impl Fn(&Id) -> bool) -> Vec<Pending<Id>> {
    let mut dropped: std::collections::HashSet<Uuid> = std::collections::HashSet::new();
    taken
        .into_iter()
        .filter(|row| {
            let keep = !dropped.contains(&row.domain) && kept(&row.id);
            if !keep {
                dropped.insert(row.domain);
            }
            keep
        })
        .collect()
}

/// Plans a channel's due rows (in `seq` order) at `now`.
///
/// Within a window opened by a notification sent alone, notifications about the domains
/// already sent alone in it go out at once too (a domain's own down, acknowledgement and
/// recovery are not a storm), and up to `threshold` domains are sent alone; the rest are held to
/// the window's end. When a window that held rows has ended, everything due goes out as one
/// grouped message and opens a grouping window, in which everything is held to its end.
pub fn plan(settings: Settings, window: &Window, now: DateTime<Utc>, rows: &[Due]) -> Plan {
    let threshold = settings.threshold.max(1) as usize;
    let open = now < window.end;
    if !open && rows.iter().any(|r| r.held) {
        // The window that held them is over: everything due goes out together, and the next
        // window groups whatever follows.
        let take = rows.len().min(MAX_GROUP);
        let (individual, group) =
            if take == 1 { (vec![0], Vec::new()) } else { (Vec::new(), (0..take).collect()) };
        // Beyond one message's size: held, due now, grouped in the next step at once.
        let more = take < rows.len();
        return Plan {
            individual,
            group,
            hold: (take..rows.len()).collect(),
            hold_until: now,
            next: Window {
                end: if more { now } else { now + settings.window },
                domains: Vec::new(),
                grouping: true,
            },
        };
    }
    // A window open (or one to open now): who may go alone, the rest held to its end.
    let mut next = if open {
        window.clone()
    } else {
        Window { end: now + settings.window, domains: Vec::new(), grouping: false }
    };
    let (mut individual, mut hold) = (Vec::new(), Vec::new());
    let mut sending: Vec<Uuid> = Vec::new();
    let mut holding: Vec<Uuid> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if holding.contains(&row.domain) {
            hold.push(i);
        } else if sending.contains(&row.domain) {
            // Waits for its domain's earlier notification, sent alone now.
        } else if !next.grouping && (next.domains.contains(&row.domain) || next.domains.len() < threshold) {
            if !next.domains.contains(&row.domain) {
                next.domains.push(row.domain);
            }
            sending.push(row.domain);
            individual.push(i);
        } else {
            holding.push(row.domain);
            hold.push(i);
        }
    }
    Plan { individual, group: Vec::new(), hold, hold_until: next.end, next }
}

/// What the time-series database says of a domain's latest result around its notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultFacts {
    pub resolved_ip: Option<String>,
    pub error_kind: Option<String>,
    pub error_detail: Option<String>,
    pub issuer: Option<String>,
}

/// Something most of a group's domains share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommonFact {
    /// `kind`, `regions`, `network`, `error`, `issuer`.
    pub fact: &'static str,
    pub value: String,
    /// Domains that share it, of `of` in the group.
    pub domains: usize,
    pub of: usize,
}

impl CommonFact {
    fn describe(&self) -> String {
        let share = if self.domains == self.of {
            format!("all {}", self.of)
        } else {
            format!("{} of {}", self.domains, self.of)
        };
        match self.fact {
            "kind" => format!("{share} {}", kind_phrase(&self.value)),
            "regions" => format!("{share} in {}", self.value),
            "network" => format!("{share} on network {}", self.value),
            "error" => format!("{share} failing with {}", self.value),
            "issuer" => format!("{share} with certificates issued by {}", self.value),
            _ => format!("{share}: {} {}", self.fact, self.value),
        }
    }
}

fn kind_phrase(kind: &str) -> &str {
    match kind {
        "incident_opened" => "down",
        "incident_resolved" => "recovered",
        "incident_acknowledged" => "acknowledged",
        "certificate_expiring" => "with an expiring certificate",
        "certificate_expired" => "with an expired certificate",
        "domain_flapping" => "flapping",
        "domain_stabilized" => "stable again",
        other => other,
    }
}

/// The network of an address as it is commonly shared: IPv4 /24, IPv6 /48.
pub fn network(ip: &str) -> Option<String> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("{a}.{b}.{c}.0/24"))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
    }
}

/// One notification of a group with what is known of its domain.
#[derive(Debug, Clone)]
pub struct Member {
    pub out: Outgoing,
    pub notification: Option<Notification>,
    pub facts: ResultFacts,
}

/// The failing regions named in a notification's details (`regions: [{"region", …}]`).
fn regions_of(n: &Notification) -> Vec<String> {
    let mut regions: Vec<String> = n
        .details
        .get("regions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter().filter_map(|r| r.get("region").and_then(Value::as_str)).map(str::to_owned).collect()
        })
        .unwrap_or_default();
    regions.sort();
    regions.dedup();
    regions
}

/// What the group's domains have in common, where it is plain: the value of each fact shared by
/// at least two domains and more than half of those the group names, most shared first. Facts:
/// the notification kind, the regions their notices name, the resolved network (/24 or /48),
/// the error (kind and detail), the certificate issuer. CNAME targets are not recorded by the
/// control plane, so they are not compared.
pub fn common_facts(members: &[Member]) -> Vec<CommonFact> {
    let domains: BTreeMap<Uuid, &Member> = members
        .iter()
        .filter_map(|m| m.notification.as_ref().and_then(|n| n.domain_id).map(|d| (d, m)))
        .collect();
    let of = domains.len();
    let mut facts = Vec::new();
    let mut consider = |fact: &'static str, values: Vec<String>| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for value in values {
            *counts.entry(value).or_default() += 1;
        }
        if let Some((value, domains)) =
            counts.into_iter().max_by_key(|(v, c)| (*c, std::cmp::Reverse(v.clone())))
        {
            if domains >= 2 && domains * 2 > of {
                facts.push(CommonFact { fact, value, domains, of });
            }
        }
    };
    let notifications = || domains.values().filter_map(|m| m.notification.as_ref());
    consider("kind", notifications().map(|n| n.kind.clone()).collect());
    consider(
        "regions",
        notifications().map(regions_of).filter(|r| !r.is_empty()).map(|r| r.join(", ")).collect(),
    );
    consider(
        "network",
        domains.values().filter_map(|m| m.facts.resolved_ip.as_deref().and_then(network)).collect(),
    );
    consider(
        "error",
        domains
            .values()
            .filter_map(|m| {
                let kind = m.facts.error_kind.as_deref()?;
                Some(match m.facts.error_detail.as_deref().filter(|d| !d.is_empty()) {
                    Some(detail) => format!("{kind} ({detail})"),
                    None => kind.to_owned(),
                })
            })
            .collect(),
    );
    consider("issuer", domains.values().filter_map(|m| m.facts.issuer.clone()).collect());
    facts.sort_by_key(|f| std::cmp::Reverse(f.domains));
    facts
}

/// A grouped message: its id, its members in `seq` order and what they share.
#[derive(Debug, Clone)]
pub struct Group {
    pub id: Uuid,
    pub members: Vec<Member>,
    pub common: Vec<CommonFact>,
}

impl Group {
    pub fn new(id: Uuid, members: Vec<Member>) -> Self {
        let common = common_facts(&members);
        Self { id, members, common }
    }

    /// Counts by notification kind, in kind order.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for m in &self.members {
            let kind = m.notification.as_ref().map_or("unknown", |n| n.kind.as_str());
            *counts.entry(kind.to_owned()).or_default() += 1;
        }
        counts
    }

    /// One line: "412 domains down; in common: all 412 in ams, iad, sin, all 412 on network
    /// 203.0.113.0/24" (or "N notifications: 3 down, 2 recovered; …" for a mix).
    pub fn summary(&self) -> String {
        let counts = self.counts();
        let domains: std::collections::HashSet<Uuid> =
            self.members.iter().filter_map(|m| m.notification.as_ref()?.domain_id).collect();
        let mut line = match counts.iter().next() {
            Some((kind, n)) if counts.len() == 1 && domains.len() == *n => {
                format!("{n} domains {}", kind_phrase(kind))
            }
            _ => {
                let counts: Vec<String> =
                    counts.iter().map(|(kind, n)| format!("{n} {}", kind_phrase(kind))).collect();
                format!("{} notifications: {}", self.members.len(), counts.join(", "))
            }
        };
        let shared: Vec<String> =
            self.common.iter().filter(|f| f.fact != "kind").map(CommonFact::describe).collect();
        if !shared.is_empty() {
            line.push_str(&format!("; in common: {}", shared.join(", ")));
        }
        line
    }

    /// The webhook document: `kind` `notification_group`, the group's `id`, `summary`, `count`,
    /// `counts` by kind, `common` facts and `transitions`, each exactly the body its
    /// notification would have had alone (with its own `id` and `dedup_key`).
    pub fn webhook_body(&self) -> Vec<u8> {
        let transitions: Vec<Value> = self
            .members
            .iter()
            .map(|m| serde_json::from_slice(&webhook_body(&m.out)).unwrap_or(Value::Null))
            .collect();
        let tenant_id = self.members.iter().find_map(|m| m.notification.as_ref().map(|n| n.tenant_id));
        let body = json!({
            "kind": "notification_group",
            "id": self.id,
            "tenant_id": tenant_id,
            "summary": self.summary(),
            "count": self.members.len(),
            "counts": self.counts(),
            "common": self.common,
            "transitions": transitions,
        });
        serde_json::to_vec(&body).expect("a JSON value serializes")
    }

    /// The text of a Slack message or an email: the summary, then the first [`LISTED`]
    /// notifications one per line (summary and notification id) and how many more.
    pub fn text(&self) -> String {
        let mut text = self.summary();
        for m in self.members.iter().take(LISTED) {
            let summary = m.notification.as_ref().map_or("(unreadable notification)", |n| n.summary.as_str());
            text.push_str(&format!("\n- {summary} [{}]", m.out.id));
        }
        if self.members.len() > LISTED {
            text.push_str(&format!("\n… and {} more", self.members.len() - LISTED));
        }
        text.push_str(&format!("\ngroup: {}", self.id));
        text
    }

    /// The HTML part of an email: the same as [`Group::text`], escaped.
    pub fn html(&self) -> String {
        let escape = super::channels::escape;
        let mut html = format!("<html><body><h2>{}</h2><ul>", escape(&self.summary()));
        for m in self.members.iter().take(LISTED) {
            let summary = m.notification.as_ref().map_or("(unreadable notification)", |n| n.summary.as_str());
            html.push_str(&format!("<li>{} <small>{}</small></li>", escape(summary), m.out.id));
        }
        html.push_str("</ul>");
        if self.members.len() > LISTED {
            html.push_str(&format!("<p>… and {} more</p>", self.members.len() - LISTED));
        }
        html.push_str(&format!("<p><small>group {}</small></p></body></html>", self.id));
        html
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    const TEN: Settings = Settings { window: chrono::Duration::seconds(10), threshold: 1 };

    fn due(domain: u128, held: bool) -> Due {
        Due { domain: Uuid::from_u128(domain), held }
    }

    #[test]
    fn a_row_behind_an_earlier_row_of_its_domain_that_is_not_due_waits() {
        let row = |id: u32, domain: u128, due: bool| Pending {
            id,
            domain: Uuid::from_u128(domain),
            due,
            held: false,
        };
        // Domain 1's first row is in flight: its second waits; domains 2 and 3 go in order.
        let pending = [row(1, 1, false), row(2, 2, true), row(3, 1, true), row(4, 3, true), row(5, 2, true)];
        let ids: Vec<u32> = takeable(&pending, 10).iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 4, 5]);
        // At most `max`, the earliest first.
        let ids: Vec<u32> = takeable(&pending, 2).iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 4]);
        // A row not due after a due one of its domain does not hold the earlier one back.
        let pending = [row(1, 1, true), row(2, 1, false), row(3, 1, true)];
        let ids: Vec<u32> = takeable(&pending, 10).iter().map(|r| r.id).collect();
        assert_eq!(ids, [1]);
        // A row that changed before its lock takes its domain's later rows with it.
        let pending = [row(1, 1, true), row(2, 2, true), row(3, 1, true), row(4, 2, true)];
        let kept: Vec<u32> = keep(takeable(&pending, 10), |id| *id != 1).iter().map(|r| r.id).collect();
        assert_eq!(kept, [2, 4]);
        // 10,000 domains, each with a held row and a later one: one linear pass.
        let many: Vec<Pending<u32>> =
            (0..20_000u32).map(|i| row(i, u128::from(i % 10_000), i < 10_000)).collect();
        assert_eq!(takeable(&many, 50_000).len(), 10_000);
    }

    #[test]
    fn an_isolated_notification_goes_at_once_and_opens_a_window() {
        let p = plan(TEN, &Window::closed(), at(0), &[due(1, false)]);
        assert_eq!((p.individual, p.group, p.hold), (vec![0], vec![], vec![]));
        assert_eq!(p.next, Window { end: at(10), domains: vec![Uuid::from_u128(1)], grouping: false });
        // Long after the window: alone again.
        let p = plan(TEN, &p.next, at(60), &[due(2, false)]);
        assert_eq!(p.individual, vec![0]);
    }

    #[test]
    fn a_domains_own_notifications_in_its_window_are_not_a_storm() {
        let p = plan(TEN, &Window::closed(), at(0), &[due(1, false)]);
        // Its recovery 3 s later goes out at once; another domain's notice waits.
        let p2 = plan(TEN, &p.next, at(3), &[due(1, false), due(2, false)]);
        assert_eq!((p2.individual, p2.hold, p2.hold_until), (vec![0], vec![1], at(10)));
        // Two notifications of one domain due together: one at a time.
        let p3 = plan(TEN, &p.next, at(4), &[due(1, false), due(1, false)]);
        assert_eq!((p3.individual, p3.hold), (vec![0], vec![]));
    }

    #[test]
    fn a_burst_sends_the_first_and_holds_the_rest_to_the_window_end_then_groups_them() {
        let p = plan(
            TEN,
            &Window::closed(),
            at(0),
            &[due(1, false), due(2, false), due(3, false), due(2, false)],
        );
        assert_eq!((p.individual, p.hold, p.hold_until), (vec![0], vec![1, 2, 3], at(10)));
        // More arriving in the window are held to the same end.
        let p2 = plan(TEN, &p.next, at(4), &[due(4, false)]);
        assert_eq!((p2.individual, p2.hold, p2.hold_until), (vec![], vec![0], at(10)));
        assert_eq!(p2.next, p.next);
        // At the end: one grouped message of all of them, and a grouping window for what follows.
        let held = [due(2, true), due(3, true), due(2, true), due(4, true)];
        let p3 = plan(TEN, &p2.next, at(10), &held);
        assert_eq!((p3.individual, p3.group), (vec![], vec![0, 1, 2, 3]));
        assert_eq!(p3.next, Window { end: at(20), domains: vec![], grouping: true });
        // In it even a domain just grouped waits for the next group.
        let p4 = plan(TEN, &p3.next, at(12), &[due(2, false)]);
        assert_eq!((p4.individual, p4.hold, p4.hold_until), (vec![], vec![0], at(20)));
        // One held alone goes as an ordinary message.
        let p5 = plan(TEN, &p4.next, at(20), &[due(2, true)]);
        assert_eq!((p5.individual, p5.group), (vec![0], vec![]));
    }

    #[test]
    fn a_threshold_lets_the_first_few_domains_through_and_a_huge_group_is_split_at_once() {
        let three = Settings { threshold: 3, ..TEN };
        let p = plan(three, &Window::closed(), at(0), &[due(1, false), due(2, false)]);
        assert_eq!((p.individual, p.next.domains.len()), (vec![0, 1], 2));
        let p = plan(three, &p.next, at(1), &[due(3, false), due(4, false)]);
        assert_eq!((p.individual, p.hold), (vec![0], vec![1]));
        let many: Vec<Due> = (0..MAX_GROUP as u128 + 5).map(|d| due(d, true)).collect();
        let p = plan(TEN, &Window { end: at(10), domains: vec![], grouping: false }, at(10), &many);
        assert_eq!(p.group.len(), MAX_GROUP);
        assert_eq!((p.hold.len(), p.hold_until), (5, at(10)), "the rest held, due at once");
        assert_eq!(p.next.end, at(10), "the window stays closed so they are grouped next");
    }

    fn member(domain: u128, kind: &str, regions: &[&str], facts: ResultFacts) -> Member {
        let n = Notification {
            kind: kind.into(),
            tenant_id: Uuid::nil(),
            domain_id: Some(Uuid::from_u128(domain)),
            url: Some(format!("https://d{domain}.example/")),
            incident_id: Some(Uuid::from_u128(1000 + domain)),
            summary: format!("https://d{domain}.example/ is down"),
            details: json!({"regions": regions.iter().map(|r| json!({"region": r, "error_kind": "connect"})).collect::<Vec<_>>()}),
            occurred_at: at(0),
        };
        Member {
            out: Outgoing {
                id: Uuid::from_u128(2000 + domain),
                dedup_key: format!("incident:{}:opened", Uuid::from_u128(1000 + domain)),
                kind: "webhook".into(),
                config: Value::Null,
                secret: None,
                payload: serde_json::to_value(&n).unwrap(),
            },
            notification: Some(n),
            facts,
        }
    }

    fn down(ip: &str, detail: &str) -> ResultFacts {
        ResultFacts {
            resolved_ip: Some(ip.into()),
            error_kind: Some("connect".into()),
            error_detail: Some(detail.into()),
            issuer: Some("CN=R11".into()),
        }
    }

    #[test]
    fn what_the_domains_share_is_named_and_each_transition_keeps_its_body() {
        let mut members: Vec<Member> = (0..30)
            .map(|i| {
                member(
                    i,
                    "incident_opened",
                    &["ams", "iad", "sin"],
                    down(&format!("203.0.113.{i}"), "refused"),
                )
            })
            .collect();
        members.push(member(99, "incident_opened", &["ams", "sin"], down("198.51.100.7", "reset")));
        let group = Group::new(Uuid::from_u128(7), members);
        let facts: Vec<(&str, &str, usize)> =
            group.common.iter().map(|f| (f.fact, f.value.as_str(), f.domains)).collect();
        assert_eq!(
            facts,
            [
                ("kind", "incident_opened", 31),
                ("issuer", "CN=R11", 31),
                ("regions", "ams, iad, sin", 30),
                ("network", "203.0.113.0/24", 30),
                ("error", "connect (refused)", 30),
            ]
        );
        assert_eq!(
            group.summary(),
            "31 domains down; in common: all 31 with certificates issued by CN=R11, 30 of 31 in \
             ams, iad, sin, 30 of 31 on network 203.0.113.0/24, 30 of 31 failing with connect (refused)"
        );
        let body: Value = serde_json::from_slice(&group.webhook_body()).unwrap();
        assert_eq!(body["kind"], "notification_group");
        assert_eq!(body["id"], Uuid::from_u128(7).to_string());
        assert_eq!(body["count"], 31);
        let transitions = body["transitions"].as_array().unwrap();
        assert_eq!(transitions.len(), 31);
        for (t, m) in transitions.iter().zip(&group.members) {
            let alone: Value = serde_json::from_slice(&webhook_body(&m.out)).unwrap();
            assert_eq!(t, &alone, "exactly the single notification's body");
        }
        let text = group.text();
        assert!(text.starts_with("31 domains down; in common"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("- ")).count(), LISTED);
        assert!(text.contains("… and 11 more"), "{text}");
        assert!(group.html().contains("… and 11 more"));
    }

    #[test]
    fn nothing_is_called_common_that_few_share() {
        let members = vec![
            member(1, "incident_opened", &["ams"], down("203.0.113.1", "a")),
            member(2, "incident_resolved", &["iad"], down("2001:db8:1:2::1", "b")),
            member(3, "incident_opened", &["sin"], ResultFacts::default()),
        ];
        let facts: Vec<&str> = common_facts(&members).iter().map(|f| f.fact).collect();
        assert_eq!(facts, ["kind", "issuer"]);
        assert_eq!(network("2001:db8:1:2::1").unwrap(), "2001:db8:1::/48");
        assert_eq!(network("nonsense"), None);
    }
}
