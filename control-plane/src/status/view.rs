//! The live view of one status page: what its browsers are sent of the live events. Only its
//! own components' state changes (as public states, with the banner they make), the openings
//! and recoveries of their incidents, and operators' updates on them; `reset` (reload) when
//! the page or one of its components' domains changed. Never a URL, address, error text or id
//! but the component's and the incident's.

use std::collections::HashMap;

use serde_json::json;
use uuid::Uuid;

use super::model::{component_level, incident_title, overall, Condition, Level};
use super::Entry;
use crate::live::{Delivery, Event, Kind, Message, View};

struct Component {
    id: Uuid,
    name: String,
    consensus: String,
    paused: bool,
    regional_failure: bool,
    reveal_regions: bool,
    reveal_errors: bool,
}

impl Component {
    fn level(&self) -> Level {
        component_level(Condition {
            consensus: &self.consensus,
            paused: self.paused,
            regional_failure: self.regional_failure,
        })
    }
}

/// See the module documentation.
pub struct PageView {
    page: Uuid,
    tenant: Uuid,
    /// By domain id.
    components: HashMap<Uuid, Component>,
}

impl PageView {
    /// The view of `entry`'s page, starting from the states it was built with.
    pub fn new(entry: &Entry) -> Self {
        let components = entry
            .components
            .iter()
            .zip(&entry.page.components)
            .map(|(row, shown)| {
                (
                    row.domain_id,
                    Component {
                        id: row.id,
                        name: row.name.clone(),
                        consensus: row.consensus.clone(),
                        paused: row.paused || row.maintenance,
                        regional_failure: shown.state == Level::Degraded,
                        reveal_regions: row.reveals("regions"),
                        reveal_errors: row.reveals("errors"),
                    },
                )
            })
            .collect();
        Self { page: entry.page_id, tenant: entry.tenant_id, components }
    }

    fn overall(&self) -> Level {
        let levels: Vec<Level> = self.components.values().map(Component::level).collect();
        overall(&levels)
    }

    fn component_message(&self, component: &Component, event: &Event) -> Message {
        let level = component.level();
        let overall = self.overall();
        Message {
            name: "component",
            data: json!({
                "component": component.id,
                "state": level.as_str(),
                "state_text": level.text(),
                "icon": level.icon(),
                "overall": overall.as_str(),
                "overall_text": overall.banner(),
                "overall_icon": overall.icon(),
                "at": event.at,
            })
            .to_string(),
        }
    }
}

impl View for PageView {
    fn render(&mut self, event: &Event) -> Delivery {
        if event.tenant != self.tenant {
            return Delivery::Skip;
        }
        if event.kind == Kind::Page {
            return if event.page == Some(self.page) { Delivery::Reset } else { Delivery::Skip };
        }
        let Some(domain) = event.domain else { return Delivery::Skip };
        if !self.components.contains_key(&domain) {
            return Delivery::Skip;
        }
        match event.kind {
            Kind::State => {
                let component = self.components.get_mut(&domain).expect("checked above");
                let before = component.level();
                if let Some(state) = &event.state {
                    component.consensus = state.clone();
                }
                let component = &self.components[&domain];
                let mut messages = Vec::new();
                if component.level() != before {
                    messages.push(self.component_message(component, event));
                }
                if let Some(incident) = event.incident {
                    let opened = event.state.as_deref() == Some("down");
                    let mut data = json!({
                        "incident": incident,
                        "component": component.id,
                        "component_name": component.name,
                        "active": opened,
                        "at": event.at,
                    });
                    if opened {
                        // The regions are not in the event: the title says only what the page may.
                        data["title"] = json!(incident_title(
                            &component.name,
                            &[],
                            component.reveal_regions,
                            component.reveal_errors
                        ));
                    }
                    messages.push(Message { name: "incident", data: data.to_string() });
                }
                if messages.is_empty() {
                    Delivery::Skip
                } else {
                    Delivery::Send(messages)
                }
            }
            Kind::Monitoring => {
                let component = self.components.get_mut(&domain).expect("checked above");
                let before = component.level();
                component.paused = event.state.as_deref() == Some("paused");
                let component = &self.components[&domain];
                if component.level() == before {
                    return Delivery::Skip;
                }
                Delivery::Send(vec![self.component_message(component, event)])
            }
            Kind::IncidentUpdate => {
                let component = &self.components[&domain];
                Delivery::Send(vec![Message {
                    name: "incident_update",
                    data: json!({
                        "incident": event.incident,
                        "component": component.id,
                        "component_name": component.name,
                        "status": event.state,
                        "message": event.message,
                        "at": event.at,
                    })
                    .to_string(),
                }])
            }
            // The page's content names this domain: it may be gone or show another URL.
            Kind::Domain if matches!(event.state.as_deref(), Some("deleted" | "updated")) => Delivery::Reset,
            _ => Delivery::Skip,
        }
    }
}
