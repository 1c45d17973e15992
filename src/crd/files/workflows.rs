//! Filesystem mode for workflows: `DIR/workflows/*.yaml`, read with the MCPServer files' rules
//! (regular files only, `MAX_FILE_BYTES`, an unreadable file keeps what it held); and
//! `from_resource`, a Workflow resource from the API (Kubernetes mode) as the same definition.
//!
//! A file that parses as a Workflow is a `WorkflowDefinition` whether it is valid or not (its
//! status says which, as Muster lists invalid workflows with their errors); a file that is not a
//! Workflow at all is a `Rejected` entry in `rejected_workflows`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{DesiredSet, Rejected, Source};
use crate::crd::workflow::{self, Workflow, WorkflowStatus};
use crate::crd::{Problem, first_line, quoted};

/// One workflow read from a file or a resource, valid or not: Muster keeps an invalid workflow
/// listed with its errors. `status` is what muster writes back.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDefinition {
    pub workflow: Workflow,
    pub source: Source,
    pub status: WorkflowStatus,
    /// The status the resource carries already (Kubernetes mode), so that an equal one is not
    /// written again; `None` for files, whose writer compares with the file itself.
    pub written: Option<WorkflowStatus>,
}

impl WorkflowDefinition {
    /// A parsed workflow, validated: its status says whether it may run.
    pub fn new(workflow: Workflow, source: Source) -> Self {
        let status = workflow.status();
        Self { workflow, source, status, written: None }
    }

    /// Whether `status` differs from what the resource carries (always, for a file).
    pub fn status_changed(&self) -> bool {
        self.written.as_ref() != Some(&self.status)
    }

    pub fn name(&self) -> &str {
        self.workflow.name()
    }
}

pub fn workflows_dir(config_dir: &Path) -> PathBuf {
    config_dir.join("workflows")
}

/// Reads every `*.yaml`/`*.yml` file of `DIR/workflows` into `snapshot`. A missing folder holds
/// no workflows; a folder that cannot be listed is one `unreadable` entry.
pub(super) fn load_into(config_dir: &Path, snapshot: &mut DesiredSet) {
    for (path, text) in super::read_folder(workflows_dir(config_dir), snapshot) {
        match workflow::parse(&text) {
            Ok(workflow) => snapshot.workflows.push(WorkflowDefinition::new(workflow, Source::File(path))),
            Err((name, problems)) => {
                snapshot.rejected_workflows.push(Rejected { source: Source::File(path), name, problems });
            }
        }
    }
}

/// A Workflow resource from the API as JSON (Kubernetes mode), parsed as a file is; the status it
/// carries becomes `written`. `Err` when it is not a Workflow muster can read (the API server's
/// schema makes that rare), naming the resource.
pub fn from_resource(mut object: Value, source: Source) -> Result<WorkflowDefinition, Rejected> {
    let written = object.get_mut("status").map(Value::take).and_then(|s| serde_json::from_value(s).ok());
    let name = object.pointer("/metadata/name").and_then(Value::as_str).map(str::to_owned);
    match serde_json::from_value::<Workflow>(object) {
        Ok(mut workflow) => {
            workflow.status = None;
            Ok(WorkflowDefinition { written, ..WorkflowDefinition::new(workflow, source) })
        }
        Err(e) => {
            let problem = Problem { field: "spec".into(), message: without_type_names(&first_line(&e.to_string())) };
            Err(Rejected { source, name, problems: vec![problem] })
        }
    }
}

/// serde's messages name Rust types (`expected struct WorkflowStep`); users know objects.
fn without_type_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut words = message.split(' ').peekable();
    while let Some(word) = words.next() {
        if !out.is_empty() {
            out.push(' ');
        }
        match word {
            "struct" if words.peek().is_some() => {
                out.push_str("an object");
                let named = words.next().unwrap_or_default();
                out.push_str(named.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
            }
            _ => out.push_str(word),
        }
    }
    out
}

/// A second workflow of the same name is invalid, naming the file that defines it first.
pub(super) fn reject_duplicate_names(snapshot: &mut DesiredSet) {
    let mut seen: HashMap<String, Source> = HashMap::new();
    for definition in &mut snapshot.workflows {
        let name = definition.name().to_owned();
        match seen.get(&name) {
            Some(first) => {
                let problem = Problem {
                    field: "metadata.name".into(),
                    message: format!("{} is already defined in {first}", quoted(&name)),
                };
                definition.status.valid = false;
                definition.status.validation_errors.push(problem.to_string());
            }
            None => {
                seen.insert(name, definition.source.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn source() -> Source {
        Source::Kubernetes { kind: "Workflow", namespace: "muster".into(), name: "w".into() }
    }

    #[test]
    fn a_resource_keeps_its_status_as_written_and_a_bad_one_is_refused_in_words() {
        let resource = json!({
            "apiVersion": "muster.giantswarm.io/v1alpha1", "kind": "Workflow",
            "metadata": {"name": "w", "namespace": "muster", "uid": "u", "resourceVersion": "7"},
            "spec": {"steps": [{"id": "a", "tool": "t"}]},
            "status": {"valid": true, "referencedTools": ["t"], "stepCount": 1},
        });
        let definition = from_resource(resource, source()).expect("a Workflow");
        assert!(definition.workflow.status.is_none(), "status is never desired state");
        assert_eq!(definition.written.as_ref(), Some(&definition.status));
        assert!(!definition.status_changed());

        let bad = json!({"apiVersion": "v", "kind": "Workflow", "metadata": {"name": "w"}, "spec": {"steps": ["x"]}});
        let rejected = from_resource(bad, source()).expect_err("steps of strings");
        assert_eq!(rejected.name.as_deref(), Some("w"));
        let message = rejected.problems[0].to_string();
        assert!(message.contains("expected an object"), "{message}");
        assert!(!message.contains("WorkflowStep"), "no Rust type names: {message}");
    }
}
