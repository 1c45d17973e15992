//! `WorkflowLedger`: the workflows of the desired state as the supervisor last saw them. From
//! each new set it writes every workflow's status back (into its file or resource, skipped when
//! unchanged) and publishes its lifecycle with Muster's reasons (`WorkflowCreated`,
//! `WorkflowUpdated`, `WorkflowDeleted`, `WorkflowValidationFailed`) through the same `Sink` as
//! MCPServer events (the log, Kubernetes Events from the leader) and into `core_events`' ring.
//! A change made through `core_workflow_*` and one made by hand (a file, `kubectl apply`) are
//! seen here alike, once, when the watcher delivers it.

use std::collections::BTreeMap;

use super::events::{Event, EventLog};
use crate::crd::files::{Rejected, Source, WorkflowDefinition};
use crate::crd::sink::Sink;
use crate::crd::workflow::{WorkflowSpec, WorkflowStatus};

/// What a workflow was at the last set: its spec (`None`: not a Workflow at all) and problems.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    source: Source,
    spec: Option<WorkflowSpec>,
    problems: Vec<String>,
}

#[derive(Debug, Default)]
pub(super) struct WorkflowLedger {
    seen: BTreeMap<String, Seen>,
}

impl WorkflowLedger {
    /// Takes a new desired set's workflows: writes their status, publishes what changed.
    pub(super) fn update(
        &mut self,
        workflows: &[WorkflowDefinition],
        rejected: &[Rejected],
        sink: &Sink,
        events: &EventLog,
    ) {
        let mut now = BTreeMap::new();
        for definition in workflows {
            if !definition.status.valid {
                tracing::warn!(source = %definition.source, workflow = definition.name(),
                    errors = ?definition.status.validation_errors, "invalid workflow");
            }
            if definition.status_changed() {
                sink.write_workflow(&definition.source, &definition.status);
            }
            let seen = Seen {
                source: definition.source.clone(),
                spec: Some(definition.workflow.spec.clone()),
                problems: definition.status.validation_errors.clone(),
            };
            now.insert(definition.name().to_owned(), seen);
        }
        for rejected in rejected {
            tracing::warn!(source = %rejected.source, "{rejected}");
            let problems: Vec<String> = rejected.problems.iter().map(ToString::to_string).collect();
            let status =
                WorkflowStatus { valid: false, validation_errors: problems.clone(), ..WorkflowStatus::default() };
            sink.write_workflow(&rejected.source, &status);
            if let Some(name) = &rejected.name {
                now.insert(name.clone(), Seen { source: rejected.source.clone(), spec: None, problems });
            }
        }
        for (name, event) in changes(&self.seen, &now) {
            let Some(seen) = now.get(&name).or_else(|| self.seen.get(&name)) else { continue };
            let (reason, note, warning) = event;
            sink.event(&seen.source, reason, note.clone(), warning);
            let namespace = super::namespace_of(&seen.source);
            events.record(Event::new("Workflow", &name, namespace, reason, note).warning(warning));
        }
        self.seen = now;
    }
}

/// The events between two sets, by workflow name: (reason, note, warning).
fn changes(
    before: &BTreeMap<String, Seen>,
    now: &BTreeMap<String, Seen>,
) -> Vec<(String, (&'static str, String, bool))> {
    let mut out = Vec::new();
    for (name, seen) in now {
        let previous = before.get(name);
        match previous {
            None => out.push((name.clone(), ("WorkflowCreated", format!("workflow {name} created"), false))),
            Some(previous) if previous.spec != seen.spec => {
                out.push((name.clone(), ("WorkflowUpdated", format!("workflow {name} updated"), false)));
            }
            Some(_) => {}
        }
        let problems_changed = previous.is_none_or(|p| p.problems != seen.problems || p.spec != seen.spec);
        if !seen.problems.is_empty() && problems_changed {
            let note = format!("workflow {name} is invalid: {}", seen.problems.join("; "));
            out.push((name.clone(), ("WorkflowValidationFailed", note, true)));
        }
    }
    for name in before.keys().filter(|name| !now.contains_key(*name)) {
        out.push((name.clone(), ("WorkflowDeleted", format!("workflow {name} deleted"), false)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(description: &str, problems: &[&str]) -> Seen {
        let spec = WorkflowSpec { description: description.to_owned(), ..WorkflowSpec::default() };
        Seen {
            source: Source::File("w.yaml".into()),
            spec: Some(spec),
            problems: problems.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    fn reasons(before: &[(&str, Seen)], now: &[(&str, Seen)]) -> Vec<String> {
        let map = |set: &[(&str, Seen)]| set.iter().map(|(n, s)| ((*n).to_owned(), s.clone())).collect();
        changes(&map(before), &map(now)).into_iter().map(|(name, (reason, _, _))| format!("{name}:{reason}")).collect()
    }

    #[test]
    fn a_workflow_is_created_updated_and_deleted_once_each() {
        assert_eq!(reasons(&[], &[("a", seen("one", &[]))]), ["a:WorkflowCreated"]);
        assert!(reasons(&[("a", seen("one", &[]))], &[("a", seen("one", &[]))]).is_empty(), "unchanged: nothing");
        assert_eq!(reasons(&[("a", seen("one", &[]))], &[("a", seen("two", &[]))]), ["a:WorkflowUpdated"]);
        assert_eq!(reasons(&[("a", seen("one", &[]))], &[]), ["a:WorkflowDeleted"]);
    }

    #[test]
    fn an_invalid_workflow_fails_validation_when_it_appears_or_changes() {
        assert_eq!(
            reasons(&[], &[("b", seen("x", &["steps: required"]))]),
            ["b:WorkflowCreated", "b:WorkflowValidationFailed"]
        );
        let same = [("b", seen("x", &["steps: required"]))];
        assert!(reasons(&same, &same).is_empty(), "the same problems are not reported again");
        assert_eq!(
            reasons(&same, &[("b", seen("y", &["steps: required"]))]),
            ["b:WorkflowUpdated", "b:WorkflowValidationFailed"]
        );
    }
}
