//! `ServiceControl`: `core_service_start`, `_stop` and `_restart` as supervisor messages. A
//! stopped server's backend is gone (its tools leave the catalog), but its definition is kept, so
//! a start brings it back; the desired state leaves it stopped until its definition changes or
//! it is deleted (`keep_stopped`).

use std::sync::Arc;

use actix::prelude::*;

use super::{SupervisorActor, upstream_auth};
use crate::backend::Connect;
use crate::crd::McpServer;
use crate::crd::files::{DesiredSet, Source};
use crate::crd::status::Reason;

/// What to do with a running (or stopped) server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    Start,
    Stop,
    Restart,
}

/// `mcp::core` -> supervisor. Answers once the backend has been told; its state follows.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ServiceControl {
    pub name: String,
    pub action: ServiceAction,
}

impl Handler<ServiceControl> for SupervisorActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: ServiceControl, ctx: &mut Self::Context) -> Self::Result {
        if self.stopping {
            return Err("muster is stopping".to_owned());
        }
        let name = msg.name;
        let running = self.servers.get(&name).map(|m| (m.definition.clone(), m.source.clone()));
        match (msg.action, running) {
            (ServiceAction::Start, Some(_)) => {
                self.connect(&name);
                Ok(())
            }
            (ServiceAction::Stop, Some((definition, source))) => {
                self.stop_backend(&name, false);
                self.stopped.insert(name, (definition, source));
                Ok(())
            }
            (ServiceAction::Restart, Some((definition, source))) => {
                self.stop_backend(&name, false);
                self.start_again(ctx, &definition, source)
            }
            (ServiceAction::Stop, None) if self.stopped.contains_key(&name) => Ok(()),
            (ServiceAction::Start | ServiceAction::Restart, None) => match self.stopped.remove(&name) {
                Some((definition, source)) => self.start_again(ctx, &definition, source),
                None => Err(unknown(&name)),
            },
            (ServiceAction::Stop, None) => Err(unknown(&name)),
        }
    }
}

fn unknown(name: &str) -> String {
    format!("no MCP server named {name:?}: core_service_list shows the services")
}

impl SupervisorActor {
    /// Tells a server's backend to connect now (a start of a server without `autoStart`).
    fn connect(&self, name: &str) {
        if let Some(managed) = self.servers.get(name) {
            let source = managed.source.clone();
            managed.handle.tell(Connect);
            self.publish(&source, name, Reason::Starting, format!("starting {name}"), false);
        }
    }

    fn start_again(
        &mut self,
        ctx: &mut Context<Self>,
        definition: &Arc<McpServer>,
        source: Source,
    ) -> Result<(), String> {
        let auth = upstream_auth(definition, self.exchanger.as_ref())?;
        let name = definition.name().to_owned();
        self.start_backend(ctx, (**definition).clone(), source, auth);
        if !definition.spec.auto_start {
            self.connect(&name);
        }
        Ok(())
    }

    /// Leaves servers stopped by `core_service_stop` out of a new desired state while their
    /// definition is the same; a changed or deleted one is forgotten (the plan starts a changed
    /// one again).
    pub(super) fn keep_stopped(&mut self, desired: &mut DesiredSet) {
        if self.stopped.is_empty() {
            return;
        }
        let stopped = &mut self.stopped;
        stopped.retain(|name, _| desired.definitions.iter().any(|d| d.server.name() == name));
        desired.definitions.retain(|d| match stopped.get(d.server.name()) {
            Some((kept, source)) if **kept == d.server && *source == d.source => false,
            Some(_) => {
                stopped.remove(d.server.name());
                true
            }
            None => true,
        });
    }
}

/// How `mcp::core` reaches the supervisor without knowing actix.
#[derive(Clone)]
pub struct ServiceHandle(Recipient<ServiceControl>);

impl ServiceHandle {
    pub fn new(supervisor: &Addr<SupervisorActor>) -> Self {
        Self(supervisor.clone().recipient())
    }

    pub async fn control(&self, name: &str, action: ServiceAction) -> Result<(), String> {
        self.0
            .send(ServiceControl { name: name.to_owned(), action })
            .await
            .unwrap_or_else(|_| Err("muster is stopping".to_owned()))
    }
}
