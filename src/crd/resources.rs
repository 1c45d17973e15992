//! `Resources`: the desired state as the management tools (`core_*`) read and write it, in either
//! mode, so a change made through MCP takes the same path as one made by hand:
//!
//! - filesystem mode: `DIR/mcpservers/*.yaml` and `DIR/workflows/*.yaml`, read fresh on every
//!   call, written as a temporary file renamed into place (the folder watcher never reads half a
//!   file);
//! - Kubernetes mode: MCPServer and Workflow resources through the API server, created in muster's
//!   own namespace, replaced with the `resourceVersion` they were read at (a concurrent change is
//!   a conflict, never lost), deleted by name; read from the watcher's latest desired set.
//!
//! Either way the watcher turns the change into desired state; the tools then wait for the
//! router to show it. Errors name the resource and say what went wrong, never a Rust type.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::watch;

use super::files::{self, DesiredSet, Source};
use super::workflow::WorkflowResource;
use super::{KIND, McpServerResource};

/// Each request to the API server gets at most this long (kube's client has no read timeout).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The two kinds the tools write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    McpServer,
    Workflow,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::McpServer => KIND,
            Self::Workflow => super::workflow::KIND,
        }
    }

    fn folder(self, dir: &Path) -> PathBuf {
        match self {
            Self::McpServer => files::servers_dir(dir),
            Self::Workflow => files::workflows_dir(dir),
        }
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Self::McpServer => ApiResource::erase::<McpServerResource>(&()),
            Self::Workflow => ApiResource::erase::<WorkflowResource>(&()),
        }
    }
}

/// Where the desired state lives, and its latest reading.
#[derive(Clone)]
pub enum Resources {
    Files(PathBuf),
    Kubernetes {
        client: Client,
        /// Muster's own namespace: where new resources go.
        namespace: String,
        /// The watcher's latest desired set (`app::run` forwards every one).
        desired: watch::Receiver<Arc<DesiredSet>>,
    },
}

impl Resources {
    /// `filesystem` or `kubernetes`, as `core_mcpserver_list` reports it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Files(_) => "filesystem",
            Self::Kubernetes { .. } => "kubernetes",
        }
    }

    /// Every definition, valid or not, as it stands now.
    pub fn current(&self) -> Arc<DesiredSet> {
        match self {
            Self::Files(dir) => Arc::new(files::load(dir)),
            Self::Kubernetes { desired, .. } => desired.borrow().clone(),
        }
    }

    /// Where the resource of `kind` named `name` is defined now, valid or not.
    pub fn source_of(&self, kind: Kind, name: &str) -> Option<Source> {
        let desired = self.current();
        let found = match kind {
            Kind::McpServer => {
                desired.definitions.iter().find(|d| d.server.name() == name).map(|d| d.source.clone()).or_else(|| {
                    desired.rejected.iter().find(|r| r.name.as_deref() == Some(name)).map(|r| r.source.clone())
                })
            }
            Kind::Workflow => {
                desired.workflows.iter().find(|w| w.name() == name).map(|w| w.source.clone()).or_else(|| {
                    desired
                        .rejected_workflows
                        .iter()
                        .find(|r| r.name.as_deref() == Some(name))
                        .map(|r| r.source.clone())
                })
            }
        };
        found.filter(|source| {
            matches!(
                (self, source),
                (Self::Files(_), Source::File(_)) | (Self::Kubernetes { .. }, Source::Kubernetes { .. })
            )
        })
    }

    /// The resource at `source` as stored (the file's YAML, or the object), if it can be read.
    pub async fn read(&self, kind: Kind, source: &Source) -> Option<Value> {
        match (self, source) {
            (Self::Files(_), Source::File(path)) => {
                let text = files::read_file(path).ok()?;
                serde_saphyr::from_str::<Value>(&text).ok()
            }
            (Self::Kubernetes { client, .. }, Source::Kubernetes { namespace, name, .. }) => {
                let object = timed(api(client, namespace, kind).get_opt(name)).await.ok()??;
                serde_json::to_value(object).ok()
            }
            _ => None,
        }
    }

    /// Writes `resource` (a whole object: apiVersion, kind, metadata.name, spec) over what
    /// `existing` holds, or as a new resource when `existing` is `None`. Returns where it went.
    pub async fn write(
        &self,
        kind: Kind,
        name: &str,
        resource: Value,
        existing: Option<&Source>,
    ) -> Result<Source, String> {
        match self {
            Self::Files(dir) => {
                let path = match existing {
                    Some(Source::File(path)) => path.clone(),
                    _ => kind.folder(dir).join(format!("{name}.yaml")),
                };
                write_atomically(&path, &resource).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(Source::File(path))
            }
            Self::Kubernetes { client, namespace: home, .. } => {
                let namespace = match existing {
                    Some(Source::Kubernetes { namespace, .. }) => namespace.clone(),
                    _ => home.clone(),
                };
                let api = api(client, &namespace, kind);
                let what = format!("{} {namespace}/{name}", kind.as_str());
                if existing.is_none() {
                    let object: DynamicObject =
                        serde_json::from_value(resource).map_err(|e| format!("cannot encode {what}: {e}"))?;
                    timed(api.create(&PostParams::default(), &object)).await.map_err(|e| explain(&what, &e))?;
                } else {
                    // Keep what others set (labels, annotations, status); replace the spec, at the
                    // version read, so a concurrent change is reported instead of overwritten.
                    let current = timed(api.get(name)).await.map_err(|e| explain(&what, &e))?;
                    let mut object = serde_json::to_value(current).map_err(|e| format!("cannot read {what}: {e}"))?;
                    object["spec"] = resource.get("spec").cloned().unwrap_or(Value::Null);
                    let object: DynamicObject =
                        serde_json::from_value(object).map_err(|e| format!("cannot encode {what}: {e}"))?;
                    timed(api.replace(name, &PostParams::default(), &object)).await.map_err(|e| explain(&what, &e))?;
                }
                Ok(Source::Kubernetes { kind: kind.as_str(), namespace, name: name.to_owned() })
            }
        }
    }

    /// Removes the resource at `source`.
    pub async fn delete(&self, kind: Kind, source: &Source) -> Result<(), String> {
        match (self, source) {
            (Self::Files(_), Source::File(path)) => {
                std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
            }
            (Self::Kubernetes { client, .. }, Source::Kubernetes { namespace, name, .. }) => {
                let what = format!("{} {namespace}/{name}", kind.as_str());
                timed(api(client, namespace, kind).delete(name, &DeleteParams::default()))
                    .await
                    .map(|_| ())
                    .map_err(|e| explain(&what, &e))
            }
            _ => Err(format!("{source} is not where this muster keeps its {}s", kind.as_str())),
        }
    }
}

fn api(client: &Client, namespace: &str, kind: Kind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &kind.api_resource())
}

async fn timed<T>(request: impl Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(kube::Error::Service(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()).into())),
    }
}

/// What an API server's refusal means for the caller.
fn explain(what: &str, error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => match status.code {
            409 if status.reason == "AlreadyExists" => format!("{what} exists already"),
            409 => format!("{what} was changed by someone else meanwhile: read it again and retry"),
            403 => format!("muster's service account may not change {what} ({}): check its RBAC", status.message),
            404 => format!("{what} does not exist"),
            422 => format!("the API server refused {what}: {}", status.message),
            code => format!("the API server answered {code} for {what}: {}", status.message),
        },
        other => format!("cannot reach the API server for {what}: {other}"),
    }
}

/// Writes the resource as YAML beside its final name, then renames it into place, so the watcher
/// never reads half a file (it reads only `*.yaml`/`*.yml`).
pub fn write_atomically(path: &Path, resource: &impl serde::Serialize) -> std::io::Result<()> {
    let yaml = serde_saphyr::to_string(resource).map_err(|e| std::io::Error::other(e.to_string()))?;
    replace_file(path, yaml.as_bytes())
}

/// Writes `contents` to a hidden temporary file beside `path` (its folder created if missing),
/// then renames it into place, so a reader sees the old file or the new one, never half of one.
pub fn replace_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, contents)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}
