//! `Sink`: where a resource's status and events go. In filesystem mode, the status block of the
//! resource's own file (`status::write_to_file`) and the log; in Kubernetes mode, the status
//! subresource and Kubernetes Events (`kubernetes.rs`), written by the leader among the replicas
//! only (`leader.rs`). The supervisor is its only user.
//! Workflows' status goes the same way (`write_workflow`).

use super::files::Source;
use super::kubernetes::{EventRecorder, StatusWriter};
use super::status::Status;
use super::workflow::WorkflowStatus;

/// Where status and events go: the resource's file, or the Kubernetes API.
#[derive(Clone)]
pub enum Sink {
    Files,
    Kubernetes { status: StatusWriter, events: EventRecorder },
}

impl Sink {
    pub fn write(&self, source: &Source, status: &Status) {
        match (source, self) {
            (Source::File(path), _) => {
                if let Err(e) = super::status::write_to_file(path, status) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write status");
                }
            }
            (Source::Kubernetes { namespace, name, .. }, Self::Kubernetes { status: writer, .. }) => {
                writer.write(namespace, name, status);
            }
            (Source::Kubernetes { .. }, Self::Files) => {}
        }
    }

    /// A workflow's status: into its file, or the Workflow resource's status subresource.
    pub fn write_workflow(&self, source: &Source, status: &WorkflowStatus) {
        match (source, self) {
            (Source::File(path), _) => {
                if let Err(e) = super::status::write_to_file(path, status) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write workflow status");
                }
            }
            (Source::Kubernetes { namespace, name, .. }, Self::Kubernetes { status: writer, .. }) => {
                writer.write_workflow(namespace, name, status);
            }
            (Source::Kubernetes { .. }, Self::Files) => {}
        }
    }

    /// The server's resource was deleted: its status is no longer kept for a new leader.
    pub fn forget(&self, source: &Source) {
        if let (Source::Kubernetes { namespace, name, .. }, Self::Kubernetes { status, .. }) = (source, self) {
            status.forget(namespace, name);
        }
    }

    /// An event with one of Muster's reasons (`Reason::as_str`, or a Workflow's).
    pub fn event(&self, source: &Source, reason: &str, note: String, warning: bool) {
        tracing::info!(source = %source, reason, note, "event");
        if let (Source::Kubernetes { kind, namespace, name }, Self::Kubernetes { events, .. }) = (source, self) {
            events.publish((kind, namespace, name), reason, note, warning);
        }
    }
}
