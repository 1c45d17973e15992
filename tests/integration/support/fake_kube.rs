//! A fake Kubernetes API server over HTTP, enough for kube-rs's real client, watcher and
//! reflector: muster's resources (`mcpservers`, `workflows`, `workflowexecutions`) with list
//! (`resourceVersion`), watch streams (newline-delimited events), `410 Gone` after a compaction
//! (forcing a relist), create, get and delete, the status subresource (merge patch), Events,
//! Secrets, and Leases (get, create, replace with the `resourceVersion` check: 409 on a stale one).
//! It records who wrote each status and Event (the bearer token of the caller's kubeconfig, see
//! `kubeconfig_as`). It can be stopped and started again on the same port with its data kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::broadcast;

const GROUP_PATH: &str = "/apis/muster.giantswarm.io/v1alpha1";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";

/// (resource, namespace, name): the resource is the plural of the URL (`mcpservers`).
type Key = (String, String, String);

/// One change as a watch sees it: (resourceVersion, resource, namespace, event).
type Change = (u64, String, String, Value);

#[derive(Default)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change, for watches that resume from a resourceVersion.
    history: Vec<Change>,
    /// Watches from before this resourceVersion get 410 Gone.
    compacted_before: u64,
    secrets: BTreeMap<(String, String), Value>,
    pub events: Vec<Value>,
    /// Status patches by resource (`mcpservers`, `workflows`).
    status_patches: BTreeMap<String, u64>,
    /// (writer, namespace, name) of every status patch; the writer is the caller's token.
    pub status_writes: Vec<(String, String, String)>,
    /// The writer of each entry of `events`.
    pub event_writers: Vec<String>,
    /// (namespace, name) -> Lease
    leases: BTreeMap<(String, String), Value>,
    /// (writer, holder) of every Lease create or replace that succeeded.
    lease_writes: Vec<(String, Option<String>)>,
}

pub struct FakeKube {
    pub port: u16,
    pub store: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    server: Option<actix_web::dev::ServerHandle>,
}

impl FakeKube {
    pub async fn start(port: u16) -> Self {
        let (changes, _) = broadcast::channel(1024);
        let mut fake = Self { port, store: Arc::default(), changes, server: None };
        fake.serve();
        fake
    }

    fn serve(&mut self) {
        let store = web::Data::new(self.store.clone());
        let changes = web::Data::new(self.changes.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(store.clone())
                .app_data(changes.clone())
                .route(&format!("{GROUP_PATH}/namespaces/{{ns}}/{{resource}}"), web::get().to(list_or_watch))
                .route(&format!("{GROUP_PATH}/namespaces/{{ns}}/{{resource}}"), web::post().to(create))
                .route(&format!("{GROUP_PATH}/namespaces/{{ns}}/{{resource}}/{{name}}"), web::get().to(get))
                .route(&format!("{GROUP_PATH}/namespaces/{{ns}}/{{resource}}/{{name}}"), web::delete().to(remove))
                .route(&format!("{GROUP_PATH}/namespaces/{{ns}}/{{resource}}/{{name}}"), web::put().to(replace))
                .route(
                    &format!("{GROUP_PATH}/namespaces/{{ns}}/{{resource}}/{{name}}/status"),
                    web::patch().to(patch_status),
                )
                .route("/apis/events.k8s.io/v1/namespaces/{ns}/events", web::post().to(create_event))
                .route("/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}", web::patch().to(create_event))
                .route("/api/v1/namespaces/{ns}/secrets/{name}", web::get().to(get_secret))
                .route(LEASES, web::post().to(create_lease))
                .route(&format!("{LEASES}/{{name}}"), web::get().to(get_lease))
                .route(&format!("{LEASES}/{{name}}"), web::put().to(replace_lease))
        })
        .workers(1)
        .shutdown_timeout(0)
        .bind(("127.0.0.1", self.port))
        .expect("bind fake kube-apiserver")
        .run();
        self.server = Some(server.handle());
        actix_web::rt::spawn(server);
    }

    /// Stops answering (connections refused), keeping the data.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop(false).await;
        }
    }

    pub fn restart(&mut self) {
        self.serve();
    }

    /// A kubeconfig pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        self.kubeconfig_as(dir, "fake-token")
    }

    /// A kubeconfig whose bearer token names the writer in `status_writers` and `event_writers`.
    pub fn kubeconfig_as(&self, dir: &std::path::Path, token: &str) -> std::path::PathBuf {
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {token}\n",
                self.port
            ),
        )
        .expect("kubeconfig");
        path
    }

    /// Creates or replaces a resource from its YAML (apiVersion/kind/metadata/spec); its kind
    /// says which (`MCPServer`, `Workflow`).
    pub fn apply(&self, namespace: &str, yaml: &str) {
        let mut object: Value = serde_saphyr::from_str(yaml).expect("resource YAML");
        let name = object["metadata"]["name"].as_str().expect("name").to_owned();
        let resource = plural(object["kind"].as_str().expect("kind"));
        let mut store = self.store.lock().expect("lock");
        let key = (resource, namespace.to_owned(), name.clone());
        let kind = if store.objects.contains_key(&key) { "MODIFIED" } else { "ADDED" };
        if let Some(existing) = store.objects.get(&key) {
            object["status"] = existing["status"].clone();
        }
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["uid"] = json!(format!("uid-{namespace}-{name}"));
        keep(&mut store, &self.changes, key, object, kind);
    }

    /// Deletes an MCPServer.
    pub fn delete(&self, namespace: &str, name: &str) {
        self.delete_resource("mcpservers", namespace, name);
    }

    pub fn delete_resource(&self, resource: &str, namespace: &str, name: &str) {
        let mut store = self.store.lock().expect("lock");
        let key = (resource.to_owned(), namespace.to_owned(), name.to_owned());
        let Some(mut object) = store.objects.remove(&key) else { return };
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        record(&mut store, &self.changes, rv, "DELETED", object);
    }

    /// Forgets history: watches resuming from an older resourceVersion get 410 Gone.
    pub fn compact(&self) {
        let mut store = self.store.lock().expect("lock");
        store.compacted_before = store.rv + 1;
        store.history.clear();
        // Open watches learn about it at once, as from a real apiserver.
        let _ = self.changes.send((0, String::new(), String::new(), gone()));
    }

    pub fn set_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        let encoded: BTreeMap<&str, String> =
            data.iter().map(|(k, v)| (*k, base64::engine::general_purpose::STANDARD.encode(v))).collect();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
            "data": encoded,
        });
        self.store.lock().expect("lock").secrets.insert((namespace.to_owned(), name.to_owned()), secret);
    }

    /// An MCPServer's status.
    pub fn status(&self, namespace: &str, name: &str) -> Value {
        self.status_of("mcpservers", namespace, name)
    }

    pub fn status_of(&self, resource: &str, namespace: &str, name: &str) -> Value {
        self.object(resource, namespace, name).map(|o| o["status"].clone()).unwrap_or_default()
    }

    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = self.store.lock().expect("lock");
        store.objects.get(&(resource.to_owned(), namespace.to_owned(), name.to_owned())).cloned()
    }

    /// How many status patches `resource` got.
    pub fn status_patches(&self, resource: &str) -> u64 {
        self.store.lock().expect("lock").status_patches.get(resource).copied().unwrap_or(0)
    }

    /// Who wrote status, in order (the callers' tokens).
    pub fn status_writers(&self) -> Vec<String> {
        self.store.lock().expect("lock").status_writes.iter().map(|(writer, _, _)| writer.clone()).collect()
    }

    /// The servers whose status `writer` patched.
    pub fn status_written_by(&self, writer: &str) -> Vec<String> {
        let store = self.store.lock().expect("lock");
        store.status_writes.iter().filter(|(w, _, _)| w == writer).map(|(_, _, name)| name.clone()).collect()
    }

    /// (writer, holder) of every Lease write, in order.
    pub fn lease_writes(&self) -> Vec<(String, Option<String>)> {
        self.store.lock().expect("lock").lease_writes.clone()
    }

    /// Who published Events (the callers' tokens).
    pub fn event_writers(&self) -> Vec<String> {
        self.store.lock().expect("lock").event_writers.clone()
    }

    /// The Lease's holder, if it exists and is held.
    pub fn lease_holder(&self, namespace: &str, name: &str) -> Option<String> {
        let store = self.store.lock().expect("lock");
        let lease = store.leases.get(&(namespace.to_owned(), name.to_owned()))?;
        lease["spec"]["holderIdentity"].as_str().filter(|h| !h.is_empty()).map(str::to_owned)
    }

    pub fn event_reasons(&self, name: &str) -> Vec<String> {
        let store = self.store.lock().expect("lock");
        store
            .events
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    }
}

/// The URL's resource for a kind (`MCPServer` → `mcpservers`).
fn plural(kind: &str) -> String {
    format!("{}s", kind.to_ascii_lowercase())
}

/// The kind of a URL's resource, as list answers name it.
fn kind_of(resource: &str) -> &'static str {
    match resource {
        "mcpservers" => "MCPServer",
        "workflows" => "Workflow",
        "workflowexecutions" => "WorkflowExecution",
        _ => "Unknown",
    }
}

fn record(store: &mut Store, changes: &broadcast::Sender<Change>, rv: u64, kind: &str, object: Value) {
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let resource = plural(object["kind"].as_str().unwrap_or_default());
    let event = json!({"type": kind, "object": object});
    store.history.push((rv, resource.clone(), namespace.clone(), event.clone()));
    let _ = changes.send((rv, resource, namespace, event));
}

/// Stores `object` under `key` at the next resourceVersion and announces it as `kind`.
fn keep(store: &mut Store, changes: &broadcast::Sender<Change>, key: Key, mut object: Value, kind: &str) -> Value {
    store.rv += 1;
    let rv = store.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    store.objects.insert(key, object.clone());
    record(store, changes, rv, kind, object.clone());
    object
}

fn gone() -> Value {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version", "reason": "Expired", "code": 410}})
}

fn status_error(code: u16, reason: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("status")).json(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }))
}

async fn list_or_watch(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    store: web::Data<Arc<Mutex<Store>>>,
    changes: web::Data<broadcast::Sender<Change>>,
) -> HttpResponse {
    let (namespace, resource) = path.into_inner();
    let query: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://fake/?{}", req.query_string()))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watch {
        let store = store.lock().expect("lock");
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && *ns == namespace)
            .map(|(_, o)| o.clone())
            .collect();
        return HttpResponse::Ok().json(json!({
            "apiVersion": "muster.giantswarm.io/v1alpha1", "kind": format!("{}List", kind_of(&resource)),
            "metadata": {"resourceVersion": store.rv.to_string()}, "items": items,
        }));
    }
    let from: u64 = query.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut live = changes.subscribe();
    let (replay, compacted) = {
        let store = store.lock().expect("lock");
        let replay: Vec<Value> = store
            .history
            .iter()
            .filter(|(rv, r, ns, _)| *rv > from && *r == resource && *ns == namespace)
            .map(|(_, _, _, e)| e.clone())
            .collect();
        (replay, from < store.compacted_before)
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<web::Bytes, actix_web::Error>>();
    let line = |value: &Value| Ok(web::Bytes::from(format!("{value}\n")));
    if compacted {
        let _ = tx.send(line(&gone()));
        drop(tx);
    } else {
        for event in &replay {
            let _ = tx.send(line(event));
        }
        actix_web::rt::spawn(async move {
            while let Ok((rv, r, ns, event)) = live.recv().await {
                if rv == 0 {
                    let _ = tx.send(line(&event)); // compaction: 410 to every open watch
                    return;
                }
                if rv > from && r == resource && ns == namespace && tx.send(line(&event)).is_err() {
                    return;
                }
            }
        });
    }
    HttpResponse::Ok().content_type("application/json").streaming(tokio_stream_from(rx))
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Result<web::Bytes, actix_web::Error>>,
) -> impl futures::Stream<Item = Result<web::Bytes, actix_web::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The caller's bearer token: who wrote.
fn writer(req: &HttpRequest) -> String {
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    header.strip_prefix("Bearer ").unwrap_or(header).to_owned()
}

async fn patch_status(
    req: HttpRequest,
    path: web::Path<(String, String, String)>,
    body: web::Json<Value>,
    store: web::Data<Arc<Mutex<Store>>>,
    changes: web::Data<broadcast::Sender<Change>>,
) -> HttpResponse {
    let (namespace, resource, name) = path.into_inner();
    let mut store = store.lock().expect("lock");
    let key = (resource.clone(), namespace.clone(), name.clone());
    let Some(mut object) = store.objects.get(&key).cloned() else {
        return status_error(404, "NotFound", &format!("{resource} {name} not found"));
    };
    object["status"] = body.0["status"].clone();
    *store.status_patches.entry(resource).or_default() += 1;
    store.status_writes.push((writer(&req), namespace, name));
    HttpResponse::Ok().json(keep(&mut store, &changes, key, object, "MODIFIED"))
}

/// POST: creates an object (409 when the name is taken), as `kubectl create` does.
async fn create(
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
    store: web::Data<Arc<Mutex<Store>>>,
    changes: web::Data<broadcast::Sender<Change>>,
) -> HttpResponse {
    let (namespace, resource) = path.into_inner();
    let mut object = body.0;
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status_error(422, "Invalid", "metadata.name: Required value");
    };
    let mut store = store.lock().expect("lock");
    let key = (resource.clone(), namespace.clone(), name.clone());
    if store.objects.contains_key(&key) {
        return status_error(409, "AlreadyExists", &format!("{resource} {name:?} already exists"));
    }
    object["metadata"]["namespace"] = json!(namespace);
    object["metadata"]["uid"] = json!(format!("uid-{namespace}-{name}"));
    object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    HttpResponse::Created().json(keep(&mut store, &changes, key, object, "ADDED"))
}

/// PUT: replaces an object's spec and metadata (not its status: the CRDs have a status
/// subresource), at the `resourceVersion` the body carries (409 when it moved on).
async fn replace(
    path: web::Path<(String, String, String)>,
    body: web::Json<Value>,
    store: web::Data<Arc<Mutex<Store>>>,
    changes: web::Data<broadcast::Sender<Change>>,
) -> HttpResponse {
    let (namespace, resource, name) = path.into_inner();
    let mut store = store.lock().expect("lock");
    let key = (resource.clone(), namespace, name.clone());
    let Some(current) = store.objects.get(&key).cloned() else {
        return status_error(404, "NotFound", &format!("{resource} {name:?} not found"));
    };
    let mut object = body.0;
    if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
        return status_error(409, "Conflict", &format!("{resource} {name:?}: the object has been modified"));
    }
    object["status"] = current["status"].clone();
    HttpResponse::Ok().json(keep(&mut store, &changes, key, object, "MODIFIED"))
}

async fn get(path: web::Path<(String, String, String)>, store: web::Data<Arc<Mutex<Store>>>) -> HttpResponse {
    let (namespace, resource, name) = path.into_inner();
    match store.lock().expect("lock").objects.get(&(resource.clone(), namespace, name.clone())) {
        Some(object) => HttpResponse::Ok().json(object),
        None => status_error(404, "NotFound", &format!("{resource} {name:?} not found")),
    }
}

async fn remove(
    path: web::Path<(String, String, String)>,
    store: web::Data<Arc<Mutex<Store>>>,
    changes: web::Data<broadcast::Sender<Change>>,
) -> HttpResponse {
    let (namespace, resource, name) = path.into_inner();
    let mut store = store.lock().expect("lock");
    let Some(mut object) = store.objects.remove(&(resource.clone(), namespace, name.clone())) else {
        return status_error(404, "NotFound", &format!("{resource} {name:?} not found"));
    };
    store.rv += 1;
    let rv = store.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    record(&mut store, &changes, rv, "DELETED", object.clone());
    HttpResponse::Ok().json(object)
}

async fn create_event(req: HttpRequest, body: web::Json<Value>, store: web::Data<Arc<Mutex<Store>>>) -> HttpResponse {
    let mut store = store.lock().expect("lock");
    store.events.push(body.0.clone());
    store.event_writers.push(writer(&req));
    HttpResponse::Created().json(body.0)
}

async fn get_lease(path: web::Path<(String, String)>, store: web::Data<Arc<Mutex<Store>>>) -> HttpResponse {
    let (namespace, name) = path.into_inner();
    match store.lock().expect("lock").leases.get(&(namespace, name.clone())) {
        Some(lease) => HttpResponse::Ok().json(lease),
        None => status_error(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found")),
    }
}

async fn create_lease(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Value>,
    store: web::Data<Arc<Mutex<Store>>>,
) -> HttpResponse {
    let namespace = path.into_inner();
    let lease = body.0;
    let name = lease["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let mut store = store.lock().expect("lock");
    let key = (namespace.clone(), name.clone());
    if store.leases.contains_key(&key) {
        return status_error(409, "AlreadyExists", &format!("leases.coordination.k8s.io \"{name}\" already exists"));
    }
    HttpResponse::Created().json(keep_lease(&mut store, &req, key, lease))
}

/// Stores `lease` under `key` (namespace, name) at a new resourceVersion, noting who wrote it.
fn keep_lease(store: &mut Store, req: &HttpRequest, key: (String, String), mut lease: Value) -> Value {
    store.rv += 1;
    lease["metadata"]["namespace"] = json!(key.0);
    lease["metadata"]["resourceVersion"] = json!(store.rv.to_string());
    let holder = lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
    store.lease_writes.push((writer(req), holder));
    store.leases.insert(key, lease.clone());
    lease
}

/// PUT: replaces the Lease when the body's `resourceVersion` is the current one, else 409.
async fn replace_lease(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Json<Value>,
    store: web::Data<Arc<Mutex<Store>>>,
) -> HttpResponse {
    let (namespace, name) = path.into_inner();
    let lease = body.0;
    let mut store = store.lock().expect("lock");
    let key = (namespace.clone(), name.clone());
    let Some(current) = store.leases.get(&key) else {
        return status_error(404, "NotFound", &format!("leases.coordination.k8s.io \"{name}\" not found"));
    };
    if let Some(sent) = lease["metadata"]["resourceVersion"].as_str()
        && current["metadata"]["resourceVersion"].as_str() != Some(sent)
    {
        return status_error(
            409,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    HttpResponse::Ok().json(keep_lease(&mut store, &req, key, lease))
}

async fn get_secret(path: web::Path<(String, String)>, store: web::Data<Arc<Mutex<Store>>>) -> HttpResponse {
    let (namespace, name) = path.into_inner();
    match store.lock().expect("lock").secrets.get(&(namespace, name.clone())) {
        Some(secret) => HttpResponse::Ok().json(secret),
        None => status_error(404, "NotFound", &format!("secrets {name} not found")),
    }
}
