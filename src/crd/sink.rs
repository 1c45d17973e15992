//! `Sink`: where a server's status and events go. In filesystem mode, the status block of the
//! resource's own file (`status::write_to_file`) and the log; in Kubernetes mode, the status
//! subresource and Kubernetes Events (`kubernetes.rs`). The supervisor is its only user.

use super::files::Source;
use super::kubernetes::{EventRecorder, StatusWriter};
use super::status::{Reason, Status};

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
            (Source::Kubernetes { namespace, name }, Self::Kubernetes { status: writer, .. }) => {
                writer.write(namespace, name, status);
            }
            (Source::Kubernetes { .. }, Self::Files) => {}
        }
    }

    pub fn event(&self, source: &Source, reason: Reason, note: String, warning: bool) {
        tracing::info!(source = %source, reason = reason.as_str(), note, "event");
        if let (Source::Kubernetes { namespace, name }, Self::Kubernetes { events, .. }) = (source, self) {
            events.publish(namespace, name, reason.as_str(), note, warning);
        }
    }
}
