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
