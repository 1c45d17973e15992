//! Workflow resources in filesystem mode (issue 15, part 1): a file dropped in `workflows/` gets
//! its status block (valid, validationErrors, referencedTools, stepCount) written back by the
//! running muster, and `check-config` validates workflows with the MCPServers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::support::{Fleet, Muster, config, eventually, free_port};

const WAIT: Duration = Duration::from_secs(20);

const VALID: &str = include_str!("../fixtures/workflows/05-allow-failure-from-step.yaml");

const INVALID: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata:
  name: broken-steps
spec:
  steps:
    - id: both
      tool: x_kubernetes_pods_list
      parallel:
        - {id: p, tool: x_kubernetes_pods_get}
    - id: later
      tool: x_kubernetes_namespaces_list
      condition:
        fromStep: nope
        expect: {success: true}
";

fn workflow_path(fleet: &Fleet, file: &str) -> PathBuf {
    fleet.dir.path().join("workflows").join(file)
}

/// Written whole (temporary file, then rename), as an editor or `kubectl cp` would.
fn write_workflow(fleet: &Fleet, file: &str, yaml: &str) {
    let dir = fleet.dir.path().join("workflows");
    std::fs::create_dir_all(&dir).expect("workflows dir");
    let tmp = fleet.dir.path().join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).expect("write workflow");
    std::fs::rename(&tmp, dir.join(file)).expect("rename workflow");
}

fn status(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
    value.get("status").cloned().unwrap_or_default()
}

async fn wait_for_status(path: &Path, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    eventually(WAIT, what, async || {
        let status = status(path);
        check(&status).then_some(status)
    })
    .await
}

#[actix_web::test]
async fn a_workflow_dropped_in_the_folder_gets_its_status_written_back() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;

    write_workflow(&fleet, "valid.yaml", VALID);
    write_workflow(&fleet, "invalid.yaml", INVALID);
    write_workflow(
        &fleet,
        "not-a-workflow.yaml",
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: Workflow\nmetadata: {name: x}\n",
    );

    let valid =
        wait_for_status(&workflow_path(&fleet, "valid.yaml"), "the valid workflow's status", |s| s.is_object()).await;
    assert_eq!(
        valid,
        json!({
            "valid": true,
            "referencedTools": ["x_kubernetes_namespaces_list", "x_kubernetes_pods_get"],
            "stepCount": 2
        })
    );
    // The spec stays byte for byte; only the status block is added.
    let text = std::fs::read_to_string(workflow_path(&fleet, "valid.yaml")).expect("read");
    assert!(text.starts_with(VALID), "{text}");

    let invalid_path = workflow_path(&fleet, "invalid.yaml");
    let invalid = wait_for_status(&invalid_path, "the invalid workflow's status", |s| s.is_object()).await;
    assert_eq!(invalid["valid"], false);
    assert_eq!(invalid["stepCount"], 2);
    assert_eq!(
        invalid["validationErrors"],
        json!([
            "spec.steps[both]: needs exactly one of tool, forEach or parallel; it has tool and parallel",
            "spec.steps[later].condition.fromStep: \"nope\" is not a step of this workflow",
        ])
    );
    let broken =
        wait_for_status(&workflow_path(&fleet, "not-a-workflow.yaml"), "the broken file's status", |s| s.is_object())
            .await;
    assert_eq!(broken["valid"], false);
    let reason = broken["validationErrors"][0].as_str().unwrap_or_default();
    assert!(reason.starts_with("yaml: ") && reason.contains("spec"), "{broken}");

    // Fixed: the status follows, and the errors are gone.
    write_workflow(
        &fleet,
        "invalid.yaml",
        &INVALID
            .replace("fromStep: nope", "fromStep: both")
            .replace("      parallel:\n        - {id: p, tool: x_kubernetes_pods_get}\n", ""),
    );
    let fixed = wait_for_status(&invalid_path, "the fixed workflow's status", |s| s["valid"] == true).await;
    assert_eq!(
        fixed,
        json!({"valid": true, "referencedTools": ["x_kubernetes_namespaces_list", "x_kubernetes_pods_list"], "stepCount": 2})
    );
    assert!(muster.log_text().contains("invalid workflow"), "the invalid workflow is logged");
}

#[test]
fn check_config_validates_workflows() {
    let fleet = Fleet::new(&config(free_port(), ""));
    write_workflow(&fleet, "valid.yaml", VALID);
    write_workflow(&fleet, "invalid.yaml", INVALID);
    let (code, stdout, stderr) = crate::support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").arg(fleet.dir.path()),
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("ok  workflow referenceable-failure-path ("), "{stdout}");
    let place = workflow_path(&fleet, "invalid.yaml");
    assert!(
        stderr.contains(&format!(
            "{}: workflow broken-steps: spec.steps[later].condition.fromStep: \"nope\" is not a step of this workflow",
            place.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 problem(s) found"), "{stderr}");
    // check-config reads, and never writes a status.
    assert_eq!(status(&place), serde_json::Value::Null);
}

const FOR_EACH: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata:
  name: views
  labels: {team: fleet}
spec:
  description: The kubeconfig view of each cluster
  args:
    clusters: {type: array, required: true}
  steps:
    - id: each
      forEach:
        items: \"{{ .input.clusters }}\"
        as: cluster
        steps:
          - id: view
            tool: x_kubernetes_configuration_view
            args: {management_cluster: \"{{ .vars.cluster }}\"}
  output:
    first: \"{{ .results.view_0 }}\"
    count: \"{{ len .input.clusters }}\"
";

const ONE_CLUSTER: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata: {name: one-view}
spec:
  args:
    management_cluster: {type: string, required: true, description: The cluster.}
  steps:
    - id: view
      tool: x_kubernetes_configuration_view
      args: {management_cluster: \"{{ .input.management_cluster }}\"}
      output: true
    - id: bad
      tool: x_kubernetes_configuration_view
      condition: {template: '{{ eq .input.management_cluster \"cluster-b\" }}'}
      args: {management_cluster: \"{{ .context.non_existent_value }}\"}
";

const MISSING: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata: {name: needs-more}
spec:
  description: Needs tools nobody serves
  steps:
    - {id: a, tool: x_nothing_here}
    - {id: b, tool: x_kubernetes_configuration_view}
";

#[actix_web::test]
async fn workflows_run_against_the_real_kubernetes_family() {
    use crate::support::client::{Client, text};
    use crate::support::{Peers, Process, family, http_server, wait_port};

    let peers = Peers::load();
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let mut k8s = Vec::new();
    for cluster in ["a", "b"] {
        let p = free_port();
        k8s.push(Process::spawn(&mut peers.kubernetes_mcp_server(p), "kubernetes-mcp-server"));
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        let url = format!("http://127.0.0.1:{p}/mcp");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &url, &family("kubernetes", "management_cluster")),
        );
        wait_port(p).await;
    }
    write_workflow(&fleet, "views.yaml", FOR_EACH);
    write_workflow(&fleet, "one.yaml", ONE_CLUSTER);
    write_workflow(&fleet, "missing.yaml", MISSING);
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;

    let tools = eventually(WAIT, "the workflow tools", async || {
        let tools = client.service.peer().list_all_tools().await.ok()?;
        (tools.iter().filter(|t| t.name.starts_with("workflow_")).count() == 3).then_some(tools)
    })
    .await;
    let described = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).expect(name);
        (
            tool.description.as_deref().unwrap_or_default().to_owned(),
            serde_json::Value::Object((*tool.input_schema).clone()),
        )
    };
    let (description, _) = described("workflow_needs-more");
    assert_eq!(description, "Needs tools nobody serves Unavailable: missing tools x_nothing_here");
    let (_, schema) = described("workflow_one-view");
    let contract = schema["properties"]["management_cluster"]["description"].as_str().unwrap_or_default();
    assert_eq!(
        contract,
        "The cluster. The full server name, e.g. cluster-a-mcp-kubernetes; the bare cluster name is accepted."
    );
    assert_eq!(schema["required"], json!(["management_cluster"]));

    // forEach over the family, the second item a bare cluster name; typed output.
    let result = client.call("workflow_views", json!({"clusters": ["cluster-a-mcp-kubernetes", "cluster-b"]})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let body: serde_json::Value = serde_json::from_str(&text(&result)).expect("json");
    assert_eq!(body["count"], 2, "{body}");
    assert!(body["first"].as_str().is_some_and(|t| t.contains("127.0.0.1:6443")), "{body}");

    // A bare cluster name in a workflow argument resolves like a direct call.
    let result = client.call("workflow_one-view", json!({"management_cluster": "cluster-a"})).await;
    assert_ne!(result.is_error, Some(true), "{}", text(&result));
    let body: serde_json::Value = serde_json::from_str(&text(&result)).expect("json");
    assert_eq!(body["status"], "completed", "{body}");
    assert!(body["steps"][0]["result"].as_str().is_some_and(|t| t.contains("127.0.0.1:6443")), "{body}");
    assert_eq!(body["steps"][1]["status"], "skipped", "{body}");

    // An unknown cluster: the step's error lists the valid values.
    let result = client.call("workflow_one-view", json!({"management_cluster": "cluster-z"})).await;
    assert_eq!(result.is_error, Some(true));
    let error = text(&result);
    assert!(error.contains("step view") && error.contains("cluster-a-mcp-kubernetes"), "{error}");

    // A bad template at run time names the workflow, the step and the key.
    let result = client.call("workflow_one-view", json!({"management_cluster": "cluster-b"})).await;
    assert_eq!(result.is_error, Some(true));
    let error = text(&result);
    assert!(
        error.contains(
            "workflow one-view: step bad: args.management_cluster: map has no entry for key \\\"non_existent_value\\\""
        ),
        "{error}"
    );

    // The workflow with a missing tool says which when called; a missing argument is named.
    let result = client.call("workflow_needs-more", json!({})).await;
    assert_eq!(text(&result), "workflow needs-more is unavailable: missing tools x_nothing_here");
    let result = client.call("workflow_one-view", json!({})).await;
    assert_eq!(text(&result), "workflow one-view: required field 'management_cluster' is missing");
    drop(k8s);
}
