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
use tokio::sync::watch;

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

/// The ring, shared by its writers and readers. Each event has a sequence number, so a follower
/// (`core_events` with `follow`) reads exactly what came after the last one it saw.
#[derive(Clone)]
pub struct EventLog {
    ring: Arc<Mutex<VecDeque<(u64, Event)>>>,
    capacity: usize,
    /// The newest sequence number, for followers to wait on.
    newest: Arc<watch::Sender<u64>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl EventLog {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            ring: Arc::new(Mutex::new(VecDeque::with_capacity(capacity.min(CAPACITY)))),
            capacity: capacity.max(1),
            newest: Arc::new(watch::Sender::new(0)),
        }
    }

    pub fn record(&self, event: Event) {
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        let sequence = ring.back().map_or(*self.newest.borrow(), |(s, _)| *s) + 1;
        ring.push_back((sequence, event));
        drop(ring);
        self.newest.send_replace(sequence);
    }

    /// The newest `filter.limit` matching events, oldest first, and how many matched in all.
    pub fn query(&self, filter: &Filter) -> (Vec<Event>, usize) {
        let ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let matching: Vec<&Event> = ring.iter().map(|(_, e)| e).filter(|e| filter.matches(e)).collect();
        let total = matching.len();
        let skip = total.saturating_sub(filter.limit);
        (matching.into_iter().skip(skip).cloned().collect(), total)
    }

    /// The sequence number of the newest event (0: none yet); events after it are new.
    pub fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    /// Every matching event after `sequence`, oldest first, and the newest sequence number seen.
    pub fn after(&self, sequence: u64, filter: &Filter) -> (Vec<Event>, u64) {
        let ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let newest = ring.back().map_or(sequence, |(s, _)| (*s).max(sequence));
        let events = ring.iter().filter(|(s, e)| *s > sequence && filter.matches(e)).map(|(_, e)| e.clone()).collect();
        (events, newest)
    }

    /// Wakes when an event is recorded after `sequence`.
    pub async fn changed(&self, sequence: u64) {
        let mut newest = self.newest.subscribe();
        let _ = newest.wait_for(|n| *n > sequence).await;
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

    #[tokio::test]
    async fn a_follower_reads_what_came_after_and_wakes_when_more_comes() {
        let log = EventLog::with_capacity(2);
        log.record(event("a", "MCPServerCreated"));
        let mark = log.newest();
        let servers_named_b = Filter { resource_name: Some("b".into()), ..Filter::default() };
        let waiting = {
            let log = log.clone();
            tokio::spawn(async move { log.changed(mark).await })
        };
        log.record(event("b", "MCPServerCreated"));
        log.record(event("c", "MCPServerCreated"));
        log.record(event("b", "MCPServerStarted"));
        waiting.await.expect("woken");
        // The ring holds two; the first of b's events has gone, and the follower says so by
        // reading only what is still there after its mark.
        let (events, newest) = log.after(mark, &servers_named_b);
        assert_eq!(events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(), ["MCPServerStarted"]);
        assert_eq!(newest, 4);
        assert!(log.after(newest, &Filter::default()).0.is_empty());
    }
}
