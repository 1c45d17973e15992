//! Every manifest under `deploy/` parses and says what the code needs: the CRDs are the ones the
//! Rust types generate (stale = failure), MCPServer examples validate, the config loads, the
//! Deployment probes the right endpoints, and RBAC grants exactly what muster uses. The same
//! checks run again on what `kubectl kustomize` renders from `deploy/base` and
//! `deploy/examples/fleet`, the way `kubectl apply -k` sees them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::Peers;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read");
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_documents() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy(), &mut files);
    files.sort();
    files.into_iter().flat_map(|p| documents(&p).into_iter().map(move |d| (p.clone(), d))).collect()
}

#[test]
fn the_committed_crd_is_generated_from_the_rust_types() {
    let committed = std::fs::read_to_string(deploy().join("crds/mcpserver.yaml")).expect("crd");
    assert!(
        committed == muster::crd::crd_yaml(),
        "deploy/crds/mcpserver.yaml is stale: run `cargo run -- print-crd > deploy/crds/mcpserver.yaml`"
    );
    let crd: Value = serde_saphyr::from_str(&committed).expect("yaml");
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(schema["properties"]["type"]["enum"], serde_json::json!(["stdio", "streamable-http", "sse"]));
    assert_eq!(schema["properties"]["timeout"]["maximum"].as_f64(), Some(300.0));
    let rules: Vec<&str> = schema["x-kubernetes-validations"]
        .as_array()
        .expect("CEL rules")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(rules.iter().any(|r| r.contains("has(self.command)")), "{rules:?}");
    assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], serde_json::json!({}));
}

#[test]
fn the_committed_workflow_crd_is_generated_from_the_rust_types() {
    let committed = std::fs::read_to_string(deploy().join("crds/workflow.yaml")).expect("crd");
    assert!(
        committed == muster::crd::workflow::crd_yaml(),
        "deploy/crds/workflow.yaml is stale: run `cargo run -- print-crd workflow > deploy/crds/workflow.yaml`"
    );
    let crd: Value = serde_saphyr::from_str(&committed).expect("yaml");
    assert_eq!(crd["spec"]["names"]["kind"], "Workflow");
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["wf"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(spec["required"], serde_json::json!(["steps"]));
    let step = &spec["properties"]["steps"]["items"];
    assert_eq!(step["required"], serde_json::json!(["id"]));
    let rules: Vec<&str> =
        step["x-kubernetes-validations"].as_array().expect("CEL").iter().filter_map(|r| r["rule"].as_str()).collect();
    assert!(rules.iter().any(|r| r.contains("has(self.forEach)")), "{rules:?}");
    // A default must satisfy its own schema, or the API server refuses the CRD: none is empty.
    assert!(!committed.contains("default: \"\""), "an empty-string default in the CRD");
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    for field in ["valid", "validationErrors", "referencedTools", "stepCount"] {
        assert!(status[field].is_object(), "status.{field} missing");
    }
}

#[test]
fn the_committed_workflow_execution_crd_is_generated_from_the_rust_types() {
    let committed = std::fs::read_to_string(deploy().join("crds/workflowexecution.yaml")).expect("crd");
    assert!(
        committed == muster::crd::execution::crd_yaml(),
        "deploy/crds/workflowexecution.yaml is stale: run `cargo run -- print-crd workflow-execution > deploy/crds/workflowexecution.yaml`"
    );
    let crd: Value = serde_saphyr::from_str(&committed).expect("yaml");
    assert_eq!(crd["spec"]["names"]["kind"], "WorkflowExecution");
    assert_eq!(crd["spec"]["names"]["shortNames"], serde_json::json!(["wfe"]));
    let version = &crd["spec"]["versions"][0];
    assert!(version["subresources"]["status"].is_null(), "an immutable record: no status subresource");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required = spec["required"].as_array().expect("required").clone();
    for field in ["workflowName", "status", "startedAt"] {
        assert!(required.contains(&Value::from(field)), "spec.{field} is required: {required:?}");
    }
    assert_eq!(spec["properties"]["result"]["x-kubernetes-preserve-unknown-fields"], true);
    assert!(!committed.contains("default: \"\""), "an empty-string default in the CRD");
}

#[test]
fn every_manifest_parses_and_has_its_kind() {
    let docs = all_documents();
    assert!(docs.len() >= 15, "{} documents", docs.len());
    for (path, doc) in &docs {
        check_document(path, doc);
    }
}

/// A kind, an apiVersion, a name; an MCPServer must also pass muster's own validation.
fn check_document(path: &Path, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{}: no kind", path.display()));
    assert!(doc["apiVersion"].is_string(), "{}: no apiVersion", path.display());
    if kind != "Kustomization" {
        assert!(doc["metadata"]["name"].is_string(), "{}: {kind} without a name", path.display());
    }
    if kind == "MCPServer" {
        let text = serde_saphyr::to_string(doc).expect("yaml");
        if let Err((name, problems)) = muster::crd::files::parse(&text) {
            panic!("{}: MCPServer {name:?} is invalid: {problems:?}", path.display());
        }
    }
}

#[test]
fn kustomizations_list_existing_files() {
    for (path, doc) in all_documents().iter().filter(|(_, d)| d["kind"] == "Kustomization") {
        for resource in doc["resources"].as_array().expect("resources") {
            let file = path.parent().expect("dir").join(resource.as_str().expect("string"));
            assert!(file.exists(), "{} lists missing {}", path.display(), file.display());
        }
    }
}

/// The documents of `deploy/base`'s files, as written.
fn base_documents() -> Vec<(PathBuf, Value)> {
    all_documents().into_iter().filter(|(p, _)| p.starts_with(deploy().join("base"))).collect()
}

#[test]
fn the_base_config_loads_and_the_deployment_probes_health_and_readiness() {
    check_config_and_probes(&base_documents());
}

fn check_config_and_probes(docs: &[(PathBuf, Value)]) {
    let configmap = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "muster-config")
        .expect("configmap");
    let text = configmap.1["data"]["config.yaml"].as_str().expect("config.yaml");
    let deployment =
        docs.iter().find(|(_, d)| d["kind"] == "Deployment" && d["metadata"]["name"] == "muster").expect("deployment");
    let pod = &deployment.1["spec"]["template"]["spec"];
    // The config as a pod reads it: the files it names exist only where the Secrets are mounted.
    let root = tempfile::tempdir().expect("tempdir");
    let text = mount_secrets(pod, root.path(), text);
    let config = muster::config::Config::parse(Path::new("/etc/muster"), &text).expect("the shipped config is valid");
    assert_eq!(config.kubernetes.expect("kubernetes mode").namespaces, ["muster"]);
    let muster::config::Storage::Valkey(valkey) = &config.storage else { panic!("storage: {:?}", config.storage) };
    assert_eq!(valkey.url, "redis://valkey.muster.svc.cluster.local:6379", "the Service of deploy/examples/valkey");
    assert!(valkey.password.is_some(), "the password from the mounted Secret");
    assert_eq!(config.session_keys.expect("session keys from the mounted Secret").0.len(), 1);

    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["args"].as_array().expect("args").iter().any(|a| a == "--kubernetes"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().expect("grace");
    assert!(grace > 5 + 5 + 8, "longer than muster's 5 s stop delay, 5 s drain and 8 s to close upstream sessions");
    // The image's user (Containerfile: USER 65532:65532), so runAsNonRoot holds.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);

    // Replicas (issue 16): three, spread over nodes, each named in the leader election, and a
    // disruption budget that takes one at a time.
    assert_eq!(deployment.1["spec"]["replicas"], 3);
    let labels = &pod_labels(&deployment.1);
    let spread = pod["topologySpreadConstraints"].as_array().expect("topologySpreadConstraints");
    assert!(
        spread.iter().any(|c| c["topologyKey"] == "kubernetes.io/hostname"
            && c["maxSkew"] == 1
            && selects(&c["labelSelector"], labels)),
        "{spread:?}"
    );
    let pod_name =
        container["env"].as_array().expect("env").iter().find(|e| e["name"] == "POD_NAME").expect("POD_NAME");
    assert_eq!(pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
    let pdb = docs.iter().find(|(_, d)| d["kind"] == "PodDisruptionBudget").expect("a PodDisruptionBudget");
    assert_eq!(pdb.1["spec"]["maxUnavailable"], 1);
    assert!(selects(&pdb.1["spec"]["selector"], labels), "the budget selects muster's pods");
}

/// Writes a value into `root` for each key of each Secret volume the container mounts, and
/// points the config's paths under those mounts there. Panics when a mounted Secret projects no
/// `items` (the config names files by their key).
fn mount_secrets(pod: &Value, root: &Path, config: &str) -> String {
    // A valid session key, and a valid password.
    const VALUE: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n";
    let volumes = pod["volumes"].as_array().expect("volumes");
    let mut config = config.to_owned();
    for mount in pod["containers"][0]["volumeMounts"].as_array().expect("volumeMounts") {
        let volume = volumes.iter().find(|v| v["name"] == mount["name"]).expect("the mounted volume");
        if !volume["secret"].is_object() {
            continue;
        }
        let mount_path = mount["mountPath"].as_str().expect("mountPath");
        let dir = root.join(mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("mount dir");
        for item in volume["secret"]["items"].as_array().expect("a Secret volume projects named items") {
            std::fs::write(dir.join(item["path"].as_str().expect("path")), VALUE).expect("write");
        }
        config = config.replace(&format!("{mount_path}/"), &format!("{}/", dir.display()));
    }
    config
}

fn pod_labels(workload: &Value) -> serde_json::Map<String, Value> {
    workload["spec"]["template"]["metadata"]["labels"].as_object().expect("pod labels").clone()
}

/// Whether a `matchLabels` selector selects pods with these labels.
fn selects(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    let wanted = selector["matchLabels"].as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn rbac_grants_what_muster_uses_and_no_more() {
    check_rbac(&base_documents());
}

fn check_rbac(docs: &[(PathBuf, Value)]) {
    let role = docs.iter().find(|(_, d)| d["kind"] == "Role" && d["metadata"]["name"] == "muster").expect("role");
    let rules = role.1["rules"].as_array().expect("rules");
    let grants = |group: &str, resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r["apiGroups"].as_array().is_some_and(|g| g.iter().any(|x| x == group)))
            .filter(|r| r["resources"].as_array().is_some_and(|g| g.iter().any(|x| x == resource)))
            .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    // Watched, and written by administrators through core_mcpserver_*/core_workflow_* (no patch:
    // muster replaces the spec at the version it read).
    let written = ["get", "list", "watch", "create", "update", "delete"];
    assert_eq!(grants("muster.giantswarm.io", "mcpservers"), written);
    assert_eq!(grants("muster.giantswarm.io", "mcpservers/status"), ["patch"]);
    assert_eq!(grants("muster.giantswarm.io", "workflows"), written);
    assert_eq!(grants("muster.giantswarm.io", "workflows/status"), ["patch"]);
    assert_eq!(grants("muster.giantswarm.io", "workflowexecutions"), ["create", "get", "list", "update", "delete"]);
    assert!(grants("events.k8s.io", "events").contains(&"create".to_owned()));
    assert_eq!(grants("", "secrets"), ["get"]);
    // Leader election (ADR 0010): create the Lease, get and update it by its name only.
    let mut lease = grants("coordination.k8s.io", "leases");
    lease.sort();
    assert_eq!(lease, ["create", "get", "update"]);
    for rule in rules.iter().filter(|r| r["resources"].as_array().is_some_and(|g| g.iter().any(|x| x == "leases"))) {
        let verbs = rule["verbs"].as_array().expect("verbs");
        if verbs.iter().any(|v| v == "get" || v == "update") {
            assert_eq!(rule["resourceNames"], serde_json::json!(["muster-leader"]), "{rule}");
        }
    }
    let secrets = rules
        .iter()
        .find(|r| r["resources"].as_array().is_some_and(|g| g.iter().any(|x| x == "secrets")))
        .expect("secrets rule");
    assert!(secrets["resourceNames"].as_array().is_some_and(|n| !n.is_empty()), "secrets only by name");
    for rule in rules {
        for verb in rule["verbs"].as_array().expect("verbs") {
            assert_ne!(verb, "*", "no wildcard verbs");
        }
    }
}

#[test]
fn the_ingress_example_raises_header_buffers() {
    let text = std::fs::read_to_string(deploy().join("examples/ingress.yaml")).expect("ingress");
    assert!(text.contains("large_client_header_buffers 4 64k") && text.contains("large-client-header-buffers"));
}

#[test]
fn check_config_validates_manifests_against_the_crd_types() {
    let fleet: Vec<PathBuf> =
        ["a", "b", "c"].iter().map(|c| deploy().join(format!("examples/fleet/cluster-{c}.yaml"))).collect();
    let (code, stdout, stderr) =
        crate::support::run(Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").args(&fleet));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok  ")).count(), 6, "{stdout}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: x}\nspec: {type: sse, args: [a]}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n").expect("write");
    let (code, _, stderr) =
        crate::support::run(Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").arg(&bad));
    assert_eq!(code, 1);
    assert!(stderr.contains("document 1 (x): spec.url: is required when type is sse"), "{stderr}");
    assert!(stderr.contains("spec.args: is only allowed for stdio servers"), "{stderr}");
}

/// `kubectl kustomize deploy/<dir>` (kubectl from the peers, offline): the YAML stream it renders
/// and its documents.
fn render(dir: &str) -> (String, Vec<(PathBuf, Value)>) {
    let out = Command::new(Peers::load().get("MUSTER_KUBECTL"))
        .arg("kustomize")
        .arg(deploy().join(dir))
        .output()
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl kustomize deploy/{dir}: {}", String::from_utf8_lossy(&out.stderr));
    let origin = PathBuf::from(format!("kubectl kustomize deploy/{dir}"));
    let docs = serde_saphyr::from_multiple::<Value>(&stdout).unwrap_or_else(|e| panic!("{}: {e}", origin.display()));
    (stdout.to_string(), docs.into_iter().map(|d| (origin.clone(), d)).collect())
}

/// Every namespaced object lands in `muster`, whatever its file said.
fn check_namespaces(docs: &[(PathBuf, Value)]) {
    for (origin, doc) in docs.iter().filter(|(_, d)| d["kind"] != "Namespace") {
        assert_eq!(
            doc["metadata"]["namespace"],
            "muster",
            "{}: {} {}",
            origin.display(),
            doc["kind"],
            doc["metadata"]["name"]
        );
    }
}

#[test]
fn the_rendered_base_passes_the_same_checks_and_takes_its_image_from_the_kustomization() {
    let (_, docs) = render("base");
    let kinds: Vec<&str> = docs.iter().filter_map(|(_, d)| d["kind"].as_str()).collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(kinds.contains(&kind), "the rendered base has no {kind}: {kinds:?}");
    }
    for (origin, doc) in &docs {
        check_document(origin, doc);
    }
    check_namespaces(&docs);
    check_config_and_probes(&docs);
    check_rbac(&docs);

    // The image is named once, in the kustomization's `images:`; the Deployment only says `muster`.
    let kustomization = documents(&deploy().join("base/kustomization.yaml")).remove(0);
    let images = kustomization["images"].as_array().expect("an images entry in deploy/base/kustomization.yaml");
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0]["name"], "muster");
    let (name, tag) = (images[0]["newName"].as_str().expect("newName"), images[0]["newTag"].as_str().expect("newTag"));
    let written = base_documents();
    let placeholders: Vec<&Value> = written
        .iter()
        .flat_map(|(_, d)| d["spec"]["template"]["spec"]["containers"].as_array().into_iter().flatten())
        .map(|c| &c["image"])
        .collect();
    assert_eq!(placeholders, [&Value::from("muster")], "the Deployment names the image only through `images:`");
    let deployment = docs.iter().find(|(_, d)| d["kind"] == "Deployment").expect("deployment");
    assert_eq!(deployment.1["spec"]["template"]["spec"]["containers"][0]["image"], format!("{name}:{tag}"));
}

#[test]
fn the_rendered_example_fleet_passes_check_config() {
    let (text, docs) = render("examples/fleet");
    let servers = docs.iter().filter(|(_, d)| d["kind"] == "MCPServer").count();
    assert_eq!(servers, 6, "two MCPServers per cluster");
    for (origin, doc) in &docs {
        check_document(origin, doc);
    }
    check_namespaces(&docs);
    // muster's own check on the rendered stream, as `kubectl apply -k` would send it.
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = dir.path().join("fleet.yaml");
    std::fs::write(&rendered, text).expect("write");
    let (code, stdout, stderr) =
        crate::support::run(Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").arg(&rendered));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok  ")).count(), 6, "{stdout}");
}

/// `deploy/examples/valkey`: the Valkey the base's config names, with the password the base mounts.
#[test]
fn the_rendered_valkey_example_is_what_the_base_points_at() {
    let (_, docs) = render("examples/valkey");
    for (origin, doc) in &docs {
        check_document(origin, doc);
    }
    check_namespaces(&docs);
    let statefulset = docs.iter().find(|(_, d)| d["kind"] == "StatefulSet").expect("a StatefulSet");
    assert_eq!(statefulset.1["spec"]["replicas"], 1);
    let container = &statefulset.1["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "valkey/valkey:8", "pinned by tag");
    let password =
        container["env"].as_array().expect("env").iter().find(|e| e["name"] == "VALKEY_PASSWORD").expect("password");
    let secret = &password["valueFrom"]["secretKeyRef"];
    assert_eq!((secret["name"].as_str(), secret["key"].as_str()), (Some("muster-valkey"), Some("password")));
    let args: Vec<&str> = container["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert!(args.windows(2).any(|w| w == ["--requirepass", "$(VALKEY_PASSWORD)"]), "{args:?}");
    let service = docs.iter().find(|(_, d)| d["kind"] == "Service").expect("a Service");
    assert_eq!(service.1["metadata"]["name"], "valkey");
    assert_eq!(service.1["spec"]["ports"][0]["port"], 6379);
    let selector = serde_json::json!({ "matchLabels": service.1["spec"]["selector"] });
    assert!(selects(&selector, &pod_labels(&statefulset.1)), "the Service selects the Valkey pod");

    // The base mounts the same Secret for muster's passwordFile.
    let base = base_documents();
    let deployment = base.iter().find(|(_, d)| d["kind"] == "Deployment").expect("deployment");
    let volumes = deployment.1["spec"]["template"]["spec"]["volumes"].as_array().expect("volumes");
    assert!(volumes.iter().any(|v| v["secret"]["secretName"] == "muster-valkey"), "{volumes:?}");
}
