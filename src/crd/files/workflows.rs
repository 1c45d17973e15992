//! Filesystem mode for workflows: `DIR/workflows/*.yaml`, read with the MCPServer files' rules
//! (regular files only, `MAX_FILE_BYTES`, an unreadable file keeps what it held).
//!
//! A file that parses as a Workflow is a `WorkflowDefinition` whether it is valid or not (its
//! status says which, as Muster lists invalid workflows with their errors); a file that is not a
//! Workflow at all is a `Rejected` entry in `rejected_workflows`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{DesiredSet, Rejected, Source};
use crate::crd::workflow::{self, Workflow, WorkflowStatus};
use crate::crd::{Problem, quoted};

/// One workflow read from a file (or, later, a CR), valid or not: Muster keeps an invalid
/// workflow listed with its errors. `status` is what muster writes back.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowDefinition {
    pub workflow: Workflow,
    pub source: Source,
    pub status: WorkflowStatus,
}

impl WorkflowDefinition {
    /// A parsed workflow, validated: its status says whether it may run.
    pub fn new(workflow: Workflow, source: Source) -> Self {
        let status = workflow.status();
        Self { workflow, source, status }
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
