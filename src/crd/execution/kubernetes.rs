//! WorkflowExecution records as resources (Kubernetes mode): one per run, named by its id, in
//! muster's own namespace (the first watched one), created once and never changed (the resource
//! has no status subresource). Read as untyped objects, so one record muster cannot read is
//! named, not a failed listing. Retention orders by `spec.startedAt`, as Muster's does.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;

use super::{Error, Retention, WorkflowExecution, WorkflowExecutionResource, check_id};

/// Records one list page holds; the listing stops after `MAX_PAGES` (far past retention's count).
const PAGE: u32 = 500;
const MAX_PAGES: usize = 40;

/// WorkflowExecution resources in one namespace.
#[derive(Clone)]
pub struct KubernetesStore {
    api: Api<DynamicObject>,
    namespace: String,
}

impl KubernetesStore {
    pub fn new(client: Client, namespace: &str) -> Self {
        let resource = ApiResource::erase::<WorkflowExecutionResource>(&());
        Self { api: Api::namespaced_with(client, namespace, &resource), namespace: namespace.to_owned() }
    }

    fn failed(&self, action: &'static str) -> impl Fn(kube::Error) -> Error + '_ {
        move |e| Error::Api { action, namespace: self.namespace.clone(), reason: e.to_string() }
    }

    pub(super) async fn write(&self, record: &WorkflowExecution) -> Result<(), Error> {
        check_id(record.id())?;
        let object = serde_json::to_value(record)
            .and_then(serde_json::from_value::<DynamicObject>)
            .map_err(|e| Error::Api { action: "encoding", namespace: self.namespace.clone(), reason: e.to_string() })?;
        match self.api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            // The run's `inprogress` record is there: the final one replaces it.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let current = self.api.get(record.id()).await.map_err(self.failed("reading"))?;
                let mut object = object;
                object.metadata.resource_version = current.metadata.resource_version;
                self.api
                    .replace(record.id(), &PostParams::default(), &object)
                    .await
                    .map_err(self.failed("replacing"))?;
                Ok(())
            }
            Err(e) => Err(self.failed("creating")(e)),
        }
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<WorkflowExecution>, Error> {
        check_id(id)?;
        match self.api.get_opt(id).await.map_err(self.failed("reading"))? {
            Some(object) => record_of(&object).map(Some),
            None => Ok(None),
        }
    }

    /// Every readable record, newest first; unreadable ones are named in the second list.
    pub(super) async fn list(&self) -> Result<(Vec<WorkflowExecution>, Vec<String>), Error> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        let mut params = ListParams::default().limit(PAGE);
        for _ in 0..MAX_PAGES {
            let page = self.api.list(&params).await.map_err(self.failed("listing"))?;
            for object in &page.items {
                match record_of(object) {
                    Ok(record) => records.push(record),
                    Err(e) => unreadable.push(e.to_string()),
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        records.sort_by(|a, b| b.spec.started_at.cmp(&a.spec.started_at).then_with(|| a.id().cmp(b.id())));
        Ok((records, unreadable))
    }

    pub(super) async fn prune(&self, now: SystemTime, retention: Retention) -> Result<usize, Error> {
        let (records, _) = self.list().await?;
        let started = records.iter().map(|r| (r.id().to_owned(), r.spec.started_at)).collect();
        let mut removed = 0;
        for id in expired(started, now.into(), retention) {
            match self.api.delete(&id, &DeleteParams::default()).await {
                Ok(_) => removed += 1,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(self.failed("deleting")(e)),
            }
        }
        Ok(removed)
    }
}

/// The ids retention deletes: started before `now - max_age`, or beyond the newest `max_count`.
fn expired(mut started: Vec<(String, DateTime<Utc>)>, now: DateTime<Utc>, retention: Retention) -> Vec<String> {
    started.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    let oldest_kept = chrono::Duration::from_std(retention.max_age).map_or(DateTime::<Utc>::MIN_UTC, |age| now - age);
    started
        .into_iter()
        .enumerate()
        .filter(|(i, (_, at))| *i >= retention.max_count || *at < oldest_kept)
        .map(|(_, (id, _))| id)
        .collect()
}

fn record_of(object: &DynamicObject) -> Result<WorkflowExecution, Error> {
    let id = object.metadata.name.clone().unwrap_or_default();
    let value = serde_json::to_value(object).unwrap_or(Value::Null);
    serde_json::from_value(value)
        .map_err(|e| Error::Unreadable { id, reason: format!("is not a WorkflowExecution record: {e}") })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn retention_deletes_the_old_and_all_but_the_newest() {
        let now = Utc::now();
        let days = |d: i64| now - chrono::Duration::days(d);
        let started: Vec<(String, DateTime<Utc>)> =
            [("a", 0), ("b", 30), ("c", 1), ("d", 2)].iter().map(|(id, d)| ((*id).to_owned(), days(*d))).collect();
        assert_eq!(expired(started.clone(), now, Retention::default()), ["b"]);
        let two = Retention { max_age: Duration::from_secs(21 * 24 * 3600), max_count: 2 };
        assert_eq!(expired(started, now, two), ["d", "b"]);
    }
}
