//! Every manifest under `deploy/` parses and says what the code needs: the CRDs are the ones the
//! Rust types generate (stale = failure), MCPServer examples validate, the config loads, the
//! Deployment probes the right endpoints, and RBAC grants exactly what muster uses.

use std::path::{Path, PathBuf};

use serde_json::Value;

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
fn every_manifest_parses_and_has_its_kind() {
    let docs = all_documents();
    assert!(docs.len() >= 15, "{} documents", docs.len());
    for (path, doc) in &docs {
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

#[test]
fn the_base_config_loads_and_the_deployment_probes_health_and_readiness() {
    let docs = all_documents();
    let configmap = docs
        .iter()
        .find(|(_, d)| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "muster-config")
        .expect("configmap");
    let text = configmap.1["data"]["config.yaml"].as_str().expect("config.yaml");
    let config = muster::config::Config::parse(Path::new("/etc/muster"), text).expect("the shipped config is valid");
    assert_eq!(config.kubernetes.expect("kubernetes mode").namespaces, ["muster"]);
    let deployment = docs
        .iter()
        .find(|(p, d)| {
            d["kind"] == "Deployment" && d["metadata"]["name"] == "muster" && p.ends_with("base/deployment.yaml")
        })
        .expect("deployment");
    let container = &deployment.1["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["args"].as_array().expect("args").iter().any(|a| a == "--kubernetes"));
    let grace = deployment.1["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64().expect("grace");
    assert!(grace > 5, "longer than muster's 5 s drain");
}

#[test]
fn rbac_grants_what_muster_uses_and_no_more() {
    let docs = all_documents();
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
    assert_eq!(grants("muster.giantswarm.io", "mcpservers"), ["get", "list", "watch"]);
    assert_eq!(grants("muster.giantswarm.io", "mcpservers/status"), ["patch"]);
    assert_eq!(grants("muster.giantswarm.io", "workflows"), ["get", "list", "watch"]);
    assert_eq!(grants("muster.giantswarm.io", "workflows/status"), ["patch"]);
    assert!(grants("events.k8s.io", "events").contains(&"create".to_owned()));
    assert_eq!(grants("", "secrets"), ["get"]);
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
        crate::support::run(std::process::Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").args(&fleet));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok  ")).count(), 6, "{stdout}");
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: x}\nspec: {type: sse, args: [a]}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n").expect("write");
    let (code, _, stderr) =
        crate::support::run(std::process::Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").arg(&bad));
    assert_eq!(code, 1);
    assert!(stderr.contains("document 1 (x): spec.url: is required when type is sse"), "{stderr}");
    assert!(stderr.contains("spec.args: is only allowed for stdio servers"), "{stderr}");
}
