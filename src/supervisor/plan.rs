//! The supervisor's decision on a new desired state: which servers to start, replace or stop, and
//! which invalid definitions to report, while a running server whose new version is invalid keeps
//! running. A pure function of the desired set and a view of what runs, so unit tests call it
//! without an actix `System`; `Handler<DesiredState>` executes the actions in order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::auth::exchange::Exchanger;
use crate::backend::UpstreamAuth;
use crate::crd::McpServer;
use crate::crd::files::{Definition, DesiredSet, Source};

/// What runs under one name, as far as the plan cares.
pub(super) struct Running<'a> {
    pub(super) definition: &'a McpServer,
    pub(super) source: &'a Source,
    /// The rejection of a newer version, as last reported in its status.
    pub(super) rejected_update: Option<&'a str>,
}

/// One step of a plan; the steps run in the order given.
pub(super) enum Action {
    /// No longer desired, and not merely invalid now: stop it (it was deleted).
    Stop { name: String },
    /// The new version of a running server is invalid: it keeps running, and its status says why
    /// the update was refused.
    KeepRejected { name: String, reasons: String },
    /// Running, and unchanged again after a refused update: its status drops the refusal.
    ClearRejected { name: String },
    /// An invalid definition with no version of it running: report it as failed.
    Fail { source: Source, error: String },
    /// A new server.
    Start { definition: Definition, auth: Option<Arc<UpstreamAuth>> },
    /// A changed definition (spec or source): stop the running version, then start this one.
    Replace { definition: Definition, auth: Option<Arc<UpstreamAuth>> },
}

/// Diffs `desired` against `running`. A definition is prepared (its upstream auth) before
/// anything is stopped, so one that cannot run leaves the old version running.
pub(super) fn plan(
    desired: DesiredSet,
    running: &BTreeMap<&str, Running<'_>>,
    exchanger: Option<&Arc<Exchanger>>,
) -> Vec<Action> {
    let definitions: BTreeMap<String, Definition> =
        desired.definitions.into_iter().map(|d| (d.server.name().to_owned(), d)).collect();
    let rejected: BTreeMap<String, (Source, String)> = desired
        .rejected
        .into_iter()
        .filter_map(|r| {
            let reasons = r.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            r.name.map(|n| (n, (r.source, reasons)))
        })
        .collect();
    let mut actions = Vec::new();
    // Removed (and not merely invalid now): stop.
    for (name, current) in running {
        let invalid_now = rejected.get(*name).is_some_and(|(source, _)| source == current.source);
        if !definitions.contains_key(*name) && !invalid_now {
            actions.push(Action::Stop { name: (*name).to_owned() });
        }
    }
    // Invalid new version of a running server: keep the old one, say so in status.
    let mut refused = BTreeSet::new();
    for (name, (source, reasons)) in rejected {
        // A rejected definition from another source with the same name (a duplicate) is that
        // source's problem; the running server is untouched.
        match running.get(name.as_str()).filter(|r| r.source == &source) {
            Some(current) => {
                if current.rejected_update != Some(reasons.as_str()) {
                    actions.push(Action::KeepRejected { name: name.clone(), reasons });
                }
                refused.insert(name);
            }
            None => actions.push(Action::Fail { source, error: format!("invalid: {reasons}") }),
        }
    }
    for (name, definition) in definitions {
        let current = running.get(name.as_str());
        let unchanged =
            current.is_some_and(|r| r.definition.spec == definition.server.spec && r.source == &definition.source);
        if unchanged {
            if current.is_some_and(|r| r.rejected_update.is_some()) || refused.contains(&name) {
                actions.push(Action::ClearRejected { name });
            }
            continue;
        }
        match super::upstream_auth(&definition.server, exchanger) {
            Ok(auth) if current.is_some() => actions.push(Action::Replace { definition, auth }),
            Ok(auth) => actions.push(Action::Start { definition, auth }),
            Err(reasons) if current.is_some() => actions.push(Action::KeepRejected { name, reasons }),
            Err(error) => actions.push(Action::Fail { source: definition.source, error }),
        }
    }
    actions
}

#[cfg(test)]
mod tests;
