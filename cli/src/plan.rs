//! What the server has ([`State`]), what the file wants, and the difference between them
//! ([`Plan`]): resources to create, to update field by field, to replace (a channel's `kind`
//! cannot change in place) and, with `--prune`, to delete. Rendering is Terraform-like:
//! `+` create, `~` update with `before → after` per field, `-` delete, `-/+` replace.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Map, Value};

use crate::api::{ApiError, Client};
use crate::file::File;
use crate::resources::{self, Kind, SECRET};

/// One resource the server has, in canonical file form.
#[derive(Debug, Clone)]
pub struct Existing {
    pub kind: Kind,
    pub id: String,
    pub key: String,
    pub fields: Map<String, Value>,
}

/// Everything the token's tenant has, keyed.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub resources: Vec<Existing>,
    /// Domain key → id.
    pub domain_ids: BTreeMap<String, String>,
    /// The webhook channels' signing secrets are made by the server; nothing else is noted.
    pub notes: Vec<String>,
}

/// Why the server's state cannot be read as a file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Two resources of a kind share a key, so the file could not tell them apart.
    #[error(
        "the server has two {noun}s {key:?} (ids {first} and {second}); give one a distinct {field} first"
    )]
    Ambiguous { noun: &'static str, key: String, first: String, second: String, field: &'static str },
}

impl State {
    /// Reads every resource of the token's tenant.
    pub async fn fetch(client: &Client) -> Result<State, StateError> {
        let mut state = State::default();
        let mut keys_by_id: BTreeMap<String, String> = BTreeMap::new();
        for kind in Kind::ALL {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            for view in client.list(kind).await? {
                let id = view.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                let fields = resources::from_view(kind, &view, &keys_by_id);
                let key = resources::key_of(kind, &fields).unwrap_or_else(|| id.clone());
                if let Some(first) = seen.insert(key.clone(), id.clone()) {
                    let field = if kind == Kind::Domain { "name" } else { kind.key_field() };
                    return Err(StateError::Ambiguous { noun: kind.noun(), key, first, second: id, field });
                }
                if kind == Kind::Domain {
                    keys_by_id.insert(id.clone(), key.clone());
                    state.domain_ids.insert(key.clone(), id.clone());
                }
                state.resources.push(Existing { kind, id, key, fields });
            }
        }
        Ok(state)
    }
}

/// What happens to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    /// These top-level fields change.
    Update(Vec<String>),
    /// Deleted and created again (a field that cannot change in place changed).
    Replace,
    Delete,
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: Kind,
    pub key: String,
    pub action: Action,
    /// The server's id (update, replace, delete).
    pub id: Option<String>,
    /// The file's path of the resource (create, update, replace).
    pub path: Option<String>,
    /// The server's canonical form (update, replace, delete).
    pub before: Option<Map<String, Value>>,
    /// The file's canonical form (create, update, replace).
    pub after: Option<Map<String, Value>>,
    /// Fields of an update that are sent only to resend their secrets (`--resend-secrets`).
    pub resent: Vec<String>,
}

/// How a plan is made.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Delete what the server has and the file does not.
    pub prune: bool,
    /// Send every secret of the resources that exist again (the API cannot show a secret, so
    /// a new value in the same environment variable is otherwise not seen).
    pub resend_secrets: bool,
}

/// Whether a file-form value holds a `*_env` reference.
fn holds_secret(key: &str, value: &Value) -> bool {
    key.ends_with("_env")
        || match value {
            Value::Object(map) => map.iter().any(|(k, v)| holds_secret(k, v)),
            Value::Array(items) => items.iter().any(|v| holds_secret("", v)),
            _ => false,
        }
}

/// The changes that make the server match the file, and what the file leaves alone.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Resources the server has and the file does not, kept because `--prune` was not given.
    pub unmanaged: Vec<(Kind, String)>,
}

impl Plan {
    /// The plan from `state` to `file`; `resolve` reads the environment (a secret URL is
    /// compared by value).
    pub fn make(
        file: &File,
        state: &State,
        resolve: &dyn Fn(&str) -> Option<String>,
        options: Options,
    ) -> Plan {
        let mut plan = Plan::default();
        for kind in Kind::ALL {
            let existing: BTreeMap<&str, &Existing> =
                state.resources.iter().filter(|r| r.kind == kind).map(|r| (r.key.as_str(), r)).collect();
            let mut declared: Vec<_> = file.resources.iter().filter(|r| r.kind == kind).collect();
            declared.sort_by(|a, b| a.key.cmp(&b.key));
            for wanted in &declared {
                let change = |action, have: Option<&Existing>, resent: Vec<String>| Change {
                    kind,
                    key: wanted.key.clone(),
                    action,
                    id: have.map(|h| h.id.clone()),
                    path: Some(wanted.path.clone()),
                    before: have.map(|h| h.fields.clone()),
                    after: Some(wanted.fields.clone()),
                    resent,
                };
                match existing.get(wanted.key.as_str()) {
                    None => plan.changes.push(change(Action::Create, None, Vec::new())),
                    Some(have) => {
                        let before = resources::compare_form(&have.fields, None);
                        let after = resources::compare_form(&wanted.fields, Some(resolve));
                        let mut fields = resources::changed_fields(&before, &after);
                        let mut resent = Vec::new();
                        if options.resend_secrets {
                            for (k, v) in &wanted.fields {
                                if holds_secret(k, v) && !fields.contains(k) {
                                    fields.push(k.clone());
                                    resent.push(k.clone());
                                }
                            }
                            fields.sort();
                        }
                        if fields.is_empty() {
                            continue;
                        }
                        let action = if kind == Kind::Channel && fields.iter().any(|f| f == "kind") {
                            Action::Replace
                        } else {
                            Action::Update(fields)
                        };
                        plan.changes.push(change(action, Some(have), resent));
                    }
                }
            }
            let mut gone: Vec<&&Existing> =
                existing.values().filter(|have| !declared.iter().any(|d| d.key == have.key)).collect();
            gone.sort_by(|a, b| a.key.cmp(&b.key));
            for have in gone {
                if options.prune {
                    plan.changes.push(Change {
                        kind,
                        key: have.key.clone(),
                        action: Action::Delete,
                        id: Some(have.id.clone()),
                        path: None,
                        before: Some(have.fields.clone()),
                        after: None,
                        resent: Vec::new(),
                    });
                } else {
                    plan.unmanaged.push((kind, have.key.clone()));
                }
            }
        }
        plan
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Counts of creations (replacements included), updates and deletions.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |f: fn(&Action) -> bool| self.changes.iter().filter(|c| f(&c.action)).count();
        (
            count(|a| matches!(a, Action::Create | Action::Replace)),
            count(|a| matches!(a, Action::Update(_))),
            count(|a| matches!(a, Action::Delete | Action::Replace)),
        )
    }

    /// Writes the plan for people.
    pub fn render(&self, out: &mut dyn Write) -> io::Result<()> {
        for change in &self.changes {
            let title = format!("{} {:?}", change.kind.noun(), change.key);
            match &change.action {
                Action::Create => {
                    writeln!(out, "+ {title} (create)")?;
                    for (k, v) in change.after.iter().flatten() {
                        writeln!(out, "    {k}: {}", show(k, v, Side::File))?;
                    }
                }
                Action::Update(fields) => {
                    writeln!(out, "~ {title} (update)")?;
                    for k in fields {
                        if change.resent.contains(k) {
                            writeln!(out, "    {k}: its secrets sent again from the environment")?;
                            continue;
                        }
                        let before = change.before.as_ref().and_then(|m| m.get(k));
                        let after = change.after.as_ref().and_then(|m| m.get(k));
                        let before =
                            before.map_or_else(|| "(default)".to_owned(), |v| show(k, v, Side::Server));
                        let after = after.map_or_else(|| "(default)".to_owned(), |v| show(k, v, Side::File));
                        let note = if k.ends_with("_env") && before != "(default)" && after != "(default)" {
                            " (the secret's value changed)"
                        } else {
                            ""
                        };
                        writeln!(out, "    {k}: {before} → {after}{note}")?;
                    }
                }
                Action::Replace => {
                    writeln!(out, "-/+ {title} (replace: a channel's kind cannot change)")?;
                    let before = change.before.as_ref().and_then(|m| m.get("kind"));
                    let after = change.after.as_ref().and_then(|m| m.get("kind"));
                    writeln!(
                        out,
                        "    kind: {} → {}",
                        show("kind", before.unwrap_or(&Value::Null), Side::Server),
                        show("kind", after.unwrap_or(&Value::Null), Side::File)
                    )?;
                }
                Action::Delete => writeln!(out, "- {title} (delete)")?,
            }
        }
        for (kind, key) in &self.unmanaged {
            writeln!(out, "  {} {key:?} is not in the file: kept (--prune deletes it)", kind.noun())?;
        }
        let (create, update, delete) = self.counts();
        if self.is_empty() {
            writeln!(out, "No changes: the server matches the file.")
        } else {
            writeln!(out, "Plan: {create} to create, {update} to update, {delete} to delete.")
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    File,
    Server,
}

/// A value for the plan: compact JSON, secrets masked (`$VAR` on the file side).
fn show(key: &str, value: &Value, side: Side) -> String {
    masked(key, value, side).to_string()
}

fn masked(key: &str, value: &Value, side: Side) -> Value {
    if key.ends_with("_env") {
        return match (side, value.as_str()) {
            (Side::File, Some(var)) if var != SECRET => Value::from(format!("${var}")),
            _ => Value::from(SECRET),
        };
    }
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), masked(k, v, side))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| masked("", v, side)).collect()),
        other => other.clone(),
    }
}
