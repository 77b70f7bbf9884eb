//! The agent's catalog: every domain configuration this agent's region probes, with the config
//! version it reflects.
//!
//! The catalog is an immutable value (a persistent ordered map, so a one-domain change costs
//! O(log n) and shares the rest) published through a `watch` channel: readers take an
//! `Arc<Catalog>` and never hold a lock, and the sync task swaps in a new value per change.
//! [`sync`] keeps it in step with Redis; the decision of what a notice means is pure and lives
//! here ([`on_notice`]).

pub mod sync;

use std::sync::Arc;

use imbl::OrdMap;
use shared::{ChangeNotice, ChangeOp, DomainConfig, DomainId};

/// An immutable snapshot of the configuration this agent probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    version: u64,
    domains: OrdMap<DomainId, Arc<DomainConfig>>,
}

impl Catalog {
    /// A catalog from a full load: keeps the configurations `region` runs.
    pub fn from_snapshot(
        version: u64,
        configs: impl IntoIterator<Item = DomainConfig>,
        region: &str,
    ) -> Self {
        let domains =
            configs.into_iter().filter(|c| c.runs_in(region)).map(|c| (c.id, Arc::new(c))).collect();
        Self { version, domains }
    }

    /// The catalog after one change at `version`: `config` is the domain's new configuration,
    /// or `None` when it no longer exists. A configuration for other regions removes it here.
    pub fn with_change(
        &self,
        version: u64,
        id: DomainId,
        config: Option<DomainConfig>,
        region: &str,
    ) -> Self {
        let mut domains = self.domains.clone();
        match config {
            Some(config) if config.runs_in(region) => {
                domains.insert(id, Arc::new(config));
            }
            _ => {
                domains.remove(&id);
            }
        }
        Self { version: version.max(self.version), domains }
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn get(&self, id: &DomainId) -> Option<&Arc<DomainConfig>> {
        self.domains.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<DomainConfig>> {
        self.domains.values()
    }

    /// What changed from `self` to `newer`. Subtrees the two catalogs share are skipped, so
    /// after a one-domain change this costs O(log n), not O(n).
    pub fn diff<'a>(&'a self, newer: &'a Catalog) -> impl Iterator<Item = CatalogChange<'a>> + 'a {
        self.domains.diff(&newer.domains).filter_map(|item| match item {
            imbl::ordmap::DiffItem::Add(_, config) => Some(CatalogChange::Upsert(config)),
            imbl::ordmap::DiffItem::Update { old, new } => {
                (!Arc::ptr_eq(old.1, new.1)).then_some(CatalogChange::Upsert(new.1))
            }
            imbl::ordmap::DiffItem::Remove(id, _) => Some(CatalogChange::Remove(*id)),
        })
    }
}

/// One difference between two catalogs.
#[derive(Debug, Clone, PartialEq)]
pub enum CatalogChange<'a> {
    /// Added or changed.
    Upsert(&'a Arc<DomainConfig>),
    Remove(DomainId),
}

/// What the sync task does with a change notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeAction {
    /// Already reflected in the catalog.
    Ignore,
    /// The next version: read this one field.
    Fetch(DomainId),
    /// Reload everything (a skipped version, or a rebuild announced by the control plane).
    Resync(&'static str),
}

/// Decides what a notice means for a catalog at `current` version.
pub fn on_notice(current: u64, notice: &ChangeNotice) -> NoticeAction {
    if notice.op == ChangeOp::Resync {
        return NoticeAction::Resync("rebuild");
    }
    if notice.version <= current {
        return NoticeAction::Ignore;
    }
    match notice.id {
        Some(id) if notice.version == current + 1 => NoticeAction::Fetch(id),
        Some(_) => NoticeAction::Resync("gap"),
        None => NoticeAction::Resync("malformed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(regions: &[&str], version: u64) -> DomainConfig {
        DomainConfig {
            regions: regions.iter().map(|s| s.to_string()).collect(),
            ..shared::testing::sample_domain(60, version)
        }
    }

    #[test]
    fn snapshot_keeps_only_this_regions_domains() {
        let all = config(&[], 1);
        let here = config(&["ams"], 2);
        let elsewhere = config(&["sin"], 3);
        let catalog = Catalog::from_snapshot(3, [all.clone(), here.clone(), elsewhere.clone()], "ams");
        assert_eq!(catalog.len(), 2);
        assert!(catalog.get(&all.id).is_some());
        assert!(catalog.get(&here.id).is_some());
        assert!(catalog.get(&elsewhere.id).is_none());
    }

    #[test]
    fn changes_insert_update_and_remove_without_touching_the_original() {
        let a = config(&[], 1);
        let base = Catalog::from_snapshot(1, [a.clone()], "ams");
        let mut a2 = a.clone();
        a2.interval_s = 30;
        let updated = base.with_change(2, a.id, Some(a2), "ams");
        assert_eq!(updated.get(&a.id).unwrap().interval_s, 30);
        assert_eq!(base.get(&a.id).unwrap().interval_s, 60);
        assert_eq!(updated.version(), 2);

        let mut moved = a.clone();
        moved.regions = vec!["sin".into()];
        assert!(updated.with_change(3, a.id, Some(moved), "ams").is_empty());
        let deleted = updated.with_change(3, a.id, None, "ams");
        assert!(deleted.is_empty());
        assert_eq!(deleted.version(), 3);
    }

    #[test]
    fn diff_reports_only_what_changed() {
        let a = config(&[], 1);
        let b = config(&[], 1);
        let base = Catalog::from_snapshot(1, [a.clone(), b.clone()], "ams");
        assert_eq!(base.diff(&base).count(), 0);
        let mut a2 = a.clone();
        a2.interval_s = 10;
        let c = config(&[], 3);
        let next =
            base.with_change(2, a.id, Some(a2.clone()), "ams").with_change(3, c.id, Some(c.clone()), "ams");
        let next = next.with_change(4, b.id, None, "ams");
        let mut changes: Vec<String> = base
            .diff(&next)
            .map(|ch| match ch {
                CatalogChange::Upsert(cfg) => format!("upsert {} {}", cfg.id, cfg.interval_s),
                CatalogChange::Remove(id) => format!("remove {id}"),
            })
            .collect();
        changes.sort();
        let mut want =
            vec![format!("upsert {} 10", a.id), format!("upsert {} 60", c.id), format!("remove {}", b.id)];
        want.sort();
        assert_eq!(changes, want);
    }

    #[test]
    fn notice_decisions() {
        let id = DomainId::new();
        let n = |version, op| ChangeNotice { version, id: Some(id), op };
        assert_eq!(on_notice(5, &n(5, ChangeOp::Upsert)), NoticeAction::Ignore);
        assert_eq!(on_notice(5, &n(3, ChangeOp::Delete)), NoticeAction::Ignore);
        assert_eq!(on_notice(5, &n(6, ChangeOp::Upsert)), NoticeAction::Fetch(id));
        assert_eq!(on_notice(5, &n(6, ChangeOp::Delete)), NoticeAction::Fetch(id));
        assert_eq!(on_notice(5, &n(7, ChangeOp::Upsert)), NoticeAction::Resync("gap"));
        assert_eq!(on_notice(5, &n(2, ChangeOp::Resync)), NoticeAction::Resync("rebuild"));
        let no_id = ChangeNotice { version: 6, id: None, op: ChangeOp::Upsert };
        assert_eq!(on_notice(5, &no_id), NoticeAction::Resync("malformed"));
    }
}
