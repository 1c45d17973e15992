//! `EventLog`: the last `CAPACITY` lifecycle events of muster's resources, in memory, for
//! `core_events`. The supervisor records every MCPServer event it publishes through
//! `crd::sink::Sink` (with Muster's reasons, `MCPServerCreated`, `MCPServerStarted`, ...); the
//! `core_*` tools record the Workflow events of the changes they make, and each workflow run its
//! `WorkflowExecutionStarted`/`Completed`/`Failed`. The oldest event goes when
//! the ring is full, so memory stays bounded however long muster runs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Events kept; older ones are dropped.
pub const CAPACITY: usize = 1000;

/// One event as `core_events` shows it (Muster's field names).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub timestamp: DateTime<Utc>,
    /// `Normal` or `Warning`.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    pub reason: String,
    /// `MCPServer` or `Workflow`.
    pub resource_type: &'static str,
    pub resource_name: String,
    pub namespace: String,
    pub message: String,
}

impl Event {
    pub fn new(resource_type: &'static str, name: &str, namespace: &str, reason: &str, message: String) -> Self {
        Self {
            timestamp: Utc::now(),
            event_type: "Normal",
            reason: reason.to_owned(),
            resource_type,
            resource_name: name.to_owned(),
            namespace: namespace.to_owned(),
            message,
        }
    }

    pub fn warning(mut self, warning: bool) -> Self {
        self.event_type = if warning { "Warning" } else { "Normal" };
        self
    }
}

/// What `core_events` asks for; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub resource_type: Option<String>,
    pub resource_name: Option<String>,
    pub namespace: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: usize,
}

impl Filter {
    fn matches(&self, event: &Event) -> bool {
        let same =
            |wanted: &Option<String>, value: &str| wanted.as_deref().is_none_or(|w| w.eq_ignore_ascii_case(value));
        same(&self.resource_type, event.resource_type)
            && same(&self.resource_name, &event.resource_name)
            && same(&self.namespace, &event.namespace)
            && same(&self.event_type, event.event_type)
            && self.since.is_none_or(|t| event.timestamp >= t)
            && self.until.is_none_or(|t| event.timestamp <= t)
    }
}

/// The ring, shared by its writers and readers.
#[derive(Clone)]
pub struct EventLog {
    ring: Arc<Mutex<VecDeque<Event>>>,
    capacity: usize,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl EventLog {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { ring: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(CAPACITY)))), capacity: capacity.max(1) }
    }

    pub fn record(&self, event: Event) {
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event);
    }

    /// The newest `filter.limit` matching events, oldest first, and how many matched in all.
    pub fn query(&self, filter: &Filter) -> (Vec<Event>, usize) {
        let ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let matching: Vec<&Event> = ring.iter().filter(|e| filter.matches(e)).collect();
        let total = matching.len();
        let skip = total.saturating_sub(filter.limit);
        (matching.into_iter().skip(skip).cloned().collect(), total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, reason: &str) -> Event {
        Event::new("MCPServer", name, "default", reason, format!("{name} {reason}"))
    }

    #[test]
    fn the_ring_drops_the_oldest_when_full() {
        let log = EventLog::with_capacity(3);
        for i in 0..5 {
            log.record(event(&format!("s{i}"), "MCPServerCreated"));
        }
        let (events, total) = log.query(&Filter { limit: 10, ..Filter::default() });
        assert_eq!(total, 3);
        let names: Vec<_> = events.iter().map(|e| e.resource_name.as_str()).collect();
        assert_eq!(names, ["s2", "s3", "s4"]);
    }

    #[test]
    fn filters_combine_and_the_limit_keeps_the_newest() {
        let log = EventLog::default();
        log.record(event("a", "MCPServerCreated"));
        log.record(event("b", "MCPServerCreated"));
        log.record(event("a", "MCPServerFailed").warning(true));
        log.record(Event::new("Workflow", "a", "default", "WorkflowCreated", String::new()));
        log.record(event("a", "MCPServerStarted"));
        let only = |filter: Filter| {
            let (events, total) = log.query(&Filter { limit: filter.limit.max(1), ..filter });
            (events.into_iter().map(|e| e.reason).collect::<Vec<_>>(), total)
        };
        let servers_named_a = Filter {
            resource_type: Some("mcpserver".into()),
            resource_name: Some("a".into()),
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(only(servers_named_a.clone()).0, ["MCPServerCreated", "MCPServerFailed", "MCPServerStarted"]);
        assert_eq!(only(Filter { limit: 1, ..servers_named_a }), (vec!["MCPServerStarted".to_owned()], 3));
        let warnings = Filter { event_type: Some("Warning".into()), limit: 10, ..Filter::default() };
        assert_eq!(only(warnings).0, ["MCPServerFailed"]);
        let future = Filter { since: Some(Utc::now() + chrono::Duration::hours(1)), limit: 10, ..Filter::default() };
        assert_eq!(only(future).1, 0);
        let past = Filter { until: Some(Utc::now() - chrono::Duration::hours(1)), limit: 10, ..Filter::default() };
        assert_eq!(only(past).1, 0);
    }
}
