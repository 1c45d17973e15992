//! WorkflowExecution records end to end (issue 15 item 5): a run of a `workflow_<name>` tool
//! leaves one record in `DIR/workflow_executions/`, which `core_workflow_execution_list` and
//! `core_workflow_execution_get` read back, failed runs with their error and large results cut
//! to Muster's marker.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::client::{Client, text};
use crate::support::{Fleet, config, eventually, mock_family};

const WAIT: Duration = Duration::from_secs(20);

const GREET: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata: {name: greet}
spec:
  description: Says hello on one cluster
  args:
    management_cluster: {type: string, required: true}
    bytes: {type: integer, default: 0}
  steps:
    - id: hello
      tool: x_kubernetes_echo
      args: {management_cluster: \"{{ .input.management_cluster }}\", text: hi}
      output: true
    - id: large
      tool: x_kubernetes_big
      condition: {template: \"{{ gt .input.bytes 0 }}\"}
      args: {management_cluster: \"{{ .input.management_cluster }}\", bytes: \"{{ .input.bytes }}\"}
";

fn body(result: &rmcp::model::CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or_else(|| serde_json::from_str(&text(result)).unwrap_or(Value::Null))
}

pub fn write_workflow(fleet: &Fleet, file: &str, yaml: &str) {
    let dir = fleet.dir.path().join("workflows");
    std::fs::create_dir_all(&dir).expect("workflows dir");
    let tmp = fleet.dir.path().join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml).expect("write workflow");
    std::fs::rename(&tmp, dir.join(file)).expect("rename workflow");
}

pub async fn wait_for_tool(client: &Client, name: &str) {
    eventually(WAIT, name, async || client.tool_names().await.iter().any(|n| n == name).then_some(())).await;
}

#[actix_web::test]
async fn each_run_is_recorded_and_read_back_through_the_core_tools() {
    let (fleet, _upstreams, muster) = mock_family(|port| config(port, "  toolExposure: direct\n"), &["a"]).await;
    write_workflow(&fleet, "greet.yaml", GREET);
    let client = Client::connect(&muster.mcp_url()).await;
    wait_for_tool(&client, "workflow_greet").await;

    let ran = client.call("workflow_greet", json!({"management_cluster": "cluster-a"})).await;
    assert_ne!(ran.is_error, Some(true), "{}", text(&ran));
    let id = body(&ran)["execution_id"].as_str().expect("an execution id").to_owned();
    let file = fleet.dir.path().join("workflow_executions").join(format!("{id}.json"));
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect("the record file")).expect("json");
    assert_eq!(on_disk["kind"], "WorkflowExecution");
    assert_eq!(on_disk["metadata"]["name"], id);

    let got = client.call("core_workflow_execution_get", json!({"execution_id": id})).await;
    assert_ne!(got.is_error, Some(true), "{}", text(&got));
    let record = body(&got);
    assert_eq!(record["workflowName"], "greet");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["input"], json!({"management_cluster": "cluster-a", "bytes": 0}));
    assert!(record["durationMs"].is_u64() && record["completedAt"].is_string(), "{record}");
    assert_eq!(record["steps"][0]["stepId"], "hello");
    assert_eq!(record["steps"][0]["result"], "a:hi");
    assert_eq!(record["steps"][0]["input"], json!({"management_cluster": "cluster-a", "text": "hi"}));
    assert_eq!(record["steps"][1]["status"], "skipped");

    // A failed run is recorded with its error, which names the workflow and the step.
    let failed = client.call("workflow_greet", json!({"management_cluster": "cluster-z"})).await;
    assert_eq!(failed.is_error, Some(true));
    let failed_id = body(&failed)["execution_id"].as_str().expect("an execution id").to_owned();
    let record = body(&client.call("core_workflow_execution_get", json!({"execution_id": failed_id})).await);
    assert_eq!(record["status"], "failed", "{record}");
    let error = record["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("workflow greet: step hello (x_kubernetes_echo)"), "{error}");
    assert!(error.contains("cluster-a-mcp-kubernetes"), "the valid values are named: {error}");

    // A 400 KB step result: the run completes, its record carries Muster's marker.
    let large = client.call("workflow_greet", json!({"management_cluster": "cluster-a", "bytes": 400_000})).await;
    assert_ne!(large.is_error, Some(true), "{}", text(&large));
    let large_id = body(&large)["execution_id"].as_str().expect("an execution id").to_owned();
    let step =
        body(&client.call("core_workflow_execution_get", json!({"execution_id": large_id, "step_id": "large"})).await);
    assert_eq!(step["result"], "[truncated: payload exceeded retention size limit]", "{step}");
    let size = std::fs::metadata(fleet.dir.path().join("workflow_executions").join(format!("{large_id}.json")))
        .expect("record")
        .len();
    assert!(size <= 256 * 1024, "{size} bytes");

    // The list: newest first, filtered by status and workflow, paged.
    let all = body(&client.call("core_workflow_execution_list", json!({})).await);
    assert_eq!(all["total"], 3, "{all}");
    let ids: Vec<&str> = all["executions"].as_array().expect("list").iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids, [large_id.as_str(), failed_id.as_str(), id.as_str()]);
    let failures = body(&client.call("core_workflow_execution_list", json!({"status": "failed"})).await);
    assert_eq!((failures["total"].clone(), failures["executions"][0]["id"].clone()), (json!(1), json!(failed_id)));
    let page = body(&client.call("core_workflow_execution_list", json!({"limit": 1, "offset": 1})).await);
    assert_eq!(page["executions"][0]["id"], failed_id, "{page}");
    let other = body(&client.call("core_workflow_execution_list", json!({"workflow_name": "other"})).await);
    assert_eq!(other["total"], 0);

    // Bad input is named.
    let unknown = client.call("core_workflow_execution_get", json!({"execution_id": "nope"})).await;
    assert_eq!(text(&unknown), "core_workflow_execution_get: no workflow execution with id \"nope\"");
    let traversal = client.call("core_workflow_execution_get", json!({"execution_id": "../config"})).await;
    assert_eq!(traversal.is_error, Some(true));
    assert!(text(&traversal).contains("is not an execution id"), "{}", text(&traversal));
    let no_step = client.call("core_workflow_execution_get", json!({"execution_id": id, "step_id": "x"})).await;
    assert!(text(&no_step).contains("has no step \"x\"; its steps: hello"), "{}", text(&no_step));
    let bad_status = client.call("core_workflow_execution_list", json!({"status": "done"})).await;
    assert!(text(&bad_status).contains("is not one of inprogress, completed, failed"), "{}", text(&bad_status));
}

/// An agent that asks for progress hears one notification per top-level step, naming it; the
/// steps' upstream progress (the mock's `progress` tool sends three) does not reach it.
#[actix_web::test]
async fn a_run_reports_progress_per_step_to_an_agent_that_asks() {
    let (fleet, _upstreams, muster) = mock_family(|port| config(port, "  toolExposure: direct\n"), &["a"]).await;
    let noisy = GREET.replace(
        "      output: true\n",
        "      output: true\n    - id: noisy\n      tool: x_kubernetes_progress\n      args: {management_cluster: cluster-a}\n",
    );
    write_workflow(&fleet, "greet.yaml", &noisy);
    let client = Client::connect(&muster.mcp_url()).await;
    wait_for_tool(&client, "workflow_greet").await;
    let ran = client.call("workflow_greet", json!({"management_cluster": "cluster-a"})).await;
    assert_ne!(ran.is_error, Some(true), "{}", text(&ran));
    let notes = eventually(WAIT, "three progress notifications", async || {
        let notes = client.seen.progress_notes.lock().expect("lock").clone();
        (notes.len() >= 3).then_some(notes)
    })
    .await;
    let expected = [
        (1.0, Some(3.0), Some("step hello (x_kubernetes_echo) completed".to_owned())),
        (2.0, Some(3.0), Some("step noisy (x_kubernetes_progress) completed".to_owned())),
        (3.0, Some(3.0), Some("step large (x_kubernetes_big) skipped".to_owned())),
    ];
    assert_eq!(notes, expected);
}

/// Each run puts Muster's execution events in the ring: `core_events` shows them, and
/// `muster events --follow` prints them as they come, until Ctrl-C.
#[actix_web::test]
async fn runs_show_as_events_and_the_cli_follows_them() {
    let (fleet, _upstreams, muster) = mock_family(|port| config(port, "  toolExposure: direct\n"), &["a"]).await;
    write_workflow(&fleet, "greet.yaml", GREET);
    let client = Client::connect(&muster.mcp_url()).await;
    wait_for_tool(&client, "workflow_greet").await;

    // The follower starts before the runs: what it prints comes from its polls.
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
        .args(["events", "--follow", "--resource-type", "Workflow", "-o", "json", "--endpoint", &muster.mcp_url()])
        .arg("--config-path")
        .arg(fleet.dir.path().join("cli-home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("muster events --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });

    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    let wait_for = |reason: &str, printed: &mut Vec<Value>| {
        while !printed.iter().any(|l| l["reason"] == reason) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = lines_rx.recv_timeout(left).unwrap_or_else(|_| panic!("the follower printed {reason} in time"));
            printed.push(serde_json::from_str::<Value>(&line).expect("a JSON line"));
        }
    };
    let ran = client.call("workflow_greet", json!({"management_cluster": "cluster-a"})).await;
    let id = body(&ran)["execution_id"].as_str().expect("an execution id").to_owned();
    // The second run only after the follower has printed the first: it must come from a later poll.
    wait_for("WorkflowExecutionCompleted", &mut printed);
    let failed = client.call("workflow_greet", json!({"management_cluster": "cluster-z"})).await;
    let failed_id = body(&failed)["execution_id"].as_str().expect("an execution id").to_owned();

    let events = body(&client.call("core_events", json!({"resourceType": "Workflow", "resourceName": "greet"})).await);
    let seen: Vec<(String, String)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (e["reason"].as_str().unwrap_or_default().to_owned(), e["type"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    // The workflow's own lifecycle first (recorded before its tool was listed), then the runs.
    let expected = [
        ("WorkflowCreated", "Normal"),
        ("WorkflowExecutionStarted", "Normal"),
        ("WorkflowExecutionCompleted", "Normal"),
        ("WorkflowExecutionStarted", "Normal"),
        ("WorkflowExecutionFailed", "Warning"),
    ];
    let expected: Vec<(String, String)> = expected.iter().map(|(r, t)| ((*r).to_owned(), (*t).to_owned())).collect();
    assert_eq!(seen, expected, "{events}");
    let messages = events["events"].to_string();
    assert!(messages.contains(&format!("execution {id} completed in")), "{messages}");
    assert!(messages.contains(&format!("execution {failed_id} failed: workflow greet: step hello")), "{messages}");

    // The follower prints each of the five once, as JSON lines.
    wait_for("WorkflowExecutionFailed", &mut printed);
    let reasons: Vec<&str> = printed.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, expected.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>());
    let pid = follower.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().expect("kill").success());
    let status = eventually(WAIT, "the follower to stop at Ctrl-C", async || follower.try_wait().expect("wait")).await;
    assert!(status.success(), "{status}");
}

/// `muster <args> --endpoint URL`, off the test's runtime (the mock upstreams answer on it).
async fn cli(url: &str, args: &[&str]) -> (i32, String, String) {
    let home = tempfile::tempdir().expect("tempdir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_muster"));
    command.args(args).args(["--endpoint", url, "--config-path"]).arg(home.path());
    tokio::task::spawn_blocking(move || crate::support::run(&mut command)).await.expect("the CLI ran")
}

#[actix_web::test]
async fn the_cli_calls_a_workflow_and_reads_its_record() {
    let (fleet, _upstreams, muster) = mock_family(|port| config(port, ""), &["a"]).await;
    write_workflow(&fleet, "greet.yaml", GREET);
    let client = Client::connect(&muster.mcp_url()).await;
    eventually(WAIT, "workflow_greet", async || {
        let listed = body(&client.call("list_tools", json!({"limit": 500})).await);
        listed.to_string().contains("workflow_greet").then_some(())
    })
    .await;
    let url = muster.mcp_url();

    let (code, out, err) = cli(&url, &["call", "workflow_greet", "--management_cluster=cluster-a", "-o", "json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let answer: Value = serde_json::from_str(&out).expect("-o json prints JSON");
    assert_eq!(answer["status"], "completed", "{answer}");
    let id = answer["execution_id"].as_str().expect("an execution id").to_owned();
    // The default (table) shows a JSON object's fields.
    let (code, out, _) = cli(&url, &["call", "workflow_greet", "--management_cluster", "cluster-a"]).await;
    assert_eq!(code, 0);
    assert!(out.lines().any(|l| l == "status: completed"), "{out}");
    let (code, out, err) = cli(&url, &["call", "workflow_greet", "--management_cluster=cluster-z"]).await;
    assert_eq!(code, 1, "a failed run is an error: {out}{err}");
    assert!(out.contains("step hello"), "{out}");

    let (code, out, err) = cli(&url, &["list", "workflow-execution"]).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("WORKFLOW_NAME") && lines[0].contains("STATUS"), "{out}");
    assert_eq!(lines.len(), 4, "a header and three runs: {out}");
    assert!(lines[1].contains("failed") && lines[3].contains(&id) && lines[3].contains("completed"), "{out}");
    let (code, out, _) = cli(&url, &["list", "wfe", "--status", "failed", "-o", "json"]).await;
    assert_eq!(code, 0);
    let failed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(failed["total"], 1, "{failed}");

    let (code, out, err) = cli(&url, &["get", "workflow-execution", &id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("workflowName: greet") && out.contains("status: completed"), "{out}");
    let steps = out.split("\n\n").nth(1).unwrap_or_default();
    assert!(steps.starts_with("STEPID") && steps.contains("hello") && steps.contains("x_kubernetes_echo"), "{out}");
    let (code, out, _) = cli(&url, &["get", "workflow-execution", &id, "-o", "yaml"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("stepId: hello"), "{out}");
    let (code, _, err) = cli(&url, &["get", "workflow-execution", "0000"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no workflow execution with id \"0000\""), "{err}");
}

const HANG: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata: {name: hang}
spec:
  steps:
    - id: wait
      tool: x_kubernetes_block
      args: {management_cluster: cluster-a}
  onFailure:
    - id: undo
      tool: x_kubernetes_echo
      args: {management_cluster: cluster-a, text: undo}
";

#[actix_web::test]
async fn an_agents_cancellation_stops_a_hung_run_and_its_cleanup_still_runs() {
    use std::sync::atomic::Ordering;

    let (fleet, upstreams, muster) = mock_family(|port| config(port, "  toolExposure: direct\n"), &["a"]).await;
    write_workflow(&fleet, "hang.yaml", HANG);
    let client = Client::connect(&muster.mcp_url()).await;
    wait_for_tool(&client, "workflow_hang").await;

    let handle = client.start_call("workflow_hang", json!({})).await;
    let upstream = &upstreams[0].shared;
    eventually(WAIT, "the step to reach the upstream", async || {
        (upstream.blocked.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    // While it runs, its record says so.
    let running = eventually(WAIT, "the run's inprogress record", async || {
        let listed = body(&client.call("core_workflow_execution_list", json!({"status": "inprogress"})).await);
        (listed["total"] == 1).then_some(listed)
    })
    .await;
    assert_eq!(running["executions"][0]["workflow_name"], "hang", "{running}");
    handle.cancel(Some("the agent gave up".into())).await.expect("cancel");
    eventually(WAIT, "the upstream to hear the cancellation", async || {
        (upstream.cancelled.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;

    // The run is recorded as failed, with the step it stopped, and onFailure ran after it; the
    // final record replaced the inprogress one.
    let listed = eventually(WAIT, "the failed run's record", async || {
        let listed = body(&client.call("core_workflow_execution_list", json!({"status": "failed"})).await);
        (listed["total"] == 1).then_some(listed)
    })
    .await;
    assert_eq!(listed["executions"][0]["id"], running["executions"][0]["id"]);
    let all = body(&client.call("core_workflow_execution_list", json!({"workflow_name": "hang"})).await);
    assert_eq!(all["total"], 1, "one record per run: {all}");
    let id = listed["executions"][0]["id"].as_str().expect("an id");
    let record = body(&client.call("core_workflow_execution_get", json!({"execution_id": id})).await);
    assert_eq!(record["status"], "failed", "{record}");
    assert_eq!(record["error"], "workflow hang: cancelled by the caller during step wait");
    let steps: Vec<(&str, &str)> = record["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| (s["stepId"].as_str().unwrap_or_default(), s["status"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(steps, [("wait", "failed"), ("undo", "completed")], "{record}");
    assert_eq!(record["steps"][1]["result"], "a:undo");
    assert_eq!(upstream.calls.load(Ordering::SeqCst), 2, "block, then the cleanup's echo");
}
