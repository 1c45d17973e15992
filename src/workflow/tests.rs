//! Unit tests of workflow execution against a fake `Dispatch`.

use std::sync::Mutex;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;

/// Answers `echo` with its arguments, `fail` with an error result, `broken` with a call error,
/// `hang` not until its call is cancelled (as a backend does), `deaf` never; records every call
/// and every cancellation it heard.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<(String, Value)>>,
    cancelled: Mutex<Vec<String>>,
    progress: Mutex<Vec<(usize, usize, String)>>,
}

impl Dispatch for Fake {
    fn call<'a>(
        &'a self,
        tool: &'a str,
        args: Value,
        stop: &'a CancellationToken,
    ) -> BoxFuture<'a, Result<CallResult, String>> {
        self.calls.lock().expect("lock").push((tool.to_owned(), args.clone()));
        Box::pin(async move {
            if stop.is_cancelled() {
                return Err("cancelled before it started".to_owned());
            }
            match tool {
                "echo" => {
                    Ok(CallResult { value: json!({"said": args, "items": [{"kind": "Namespace"}]}), is_error: false })
                }
                "fail" => Ok(CallResult { value: json!("pod x not found"), is_error: true }),
                "hang" => {
                    stop.cancelled().await;
                    self.cancelled.lock().expect("lock").push(tool.to_owned());
                    Err("the call was cancelled".to_owned())
                }
                "deaf" => std::future::pending().await,
                _ => Err(format!("tool {tool} not found")),
            }
        })
    }

    fn step_ended(&self, done: usize, total: usize, message: String) -> BoxFuture<'_, ()> {
        self.progress.lock().expect("lock").push((done, total, message));
        Box::pin(async {})
    }
}

fn workflow(yaml: &str) -> Workflow {
    let workflow = crate::crd::workflow::parse(yaml).expect("parses");
    assert!(workflow.validate().is_empty(), "{:?}", workflow.validate());
    workflow
}

async fn run_it(yaml: &str, args: Value) -> (Outcome, Fake) {
    let fake = Fake::default();
    let outcome = run(&workflow(yaml), args, &fake, &CancellationToken::new(), Limits::default()).await;
    (outcome, fake)
}

const HEAD: &str = "apiVersion: muster.giantswarm.io/v1alpha1\nkind: Workflow\nmetadata: {name: wf}\nspec:\n";

#[tokio::test]
async fn each_top_level_step_reports_progress_with_its_outcome() {
    let yaml = format!(
        "{HEAD}  steps:\n    - {{id: first, tool: echo}}\n    - {{id: never, tool: echo, condition: {{template: \"false\"}}}}\n    - {{id: tolerated, tool: fail, allowFailure: true}}\n    - id: both\n      parallel: [{{id: p1, tool: echo}}, {{id: p2, tool: echo}}]\n    - {{id: stops, tool: fail}}\n    - {{id: unreached, tool: echo}}\n"
    );
    let (outcome, fake) = run_it(&yaml, json!({})).await;
    assert!(outcome.is_error);
    let progress = fake.progress.lock().expect("lock").clone();
    let expected = [
        (1, 6, "step first (echo) completed"),
        (2, 6, "step never (echo) skipped"),
        (3, 6, "step tolerated (fail) failed"),
        (4, 6, "step both completed"),
        (5, 6, "step stops (fail) failed"),
    ];
    let expected: Vec<(usize, usize, String)> = expected.iter().map(|(d, t, m)| (*d, *t, (*m).to_owned())).collect();
    assert_eq!(progress, expected, "the step that stops the run is the last report");
}

#[tokio::test]
async fn for_each_records_each_iteration_and_restores_vars() {
    let yaml = format!(
        "{HEAD}  args: {{clusters: {{type: array, required: true}}}}\n  steps:\n    - id: each\n      forEach:\n        items: \"{{{{ .input.clusters }}}}\"\n        as: cluster\n        steps:\n          - id: pods\n            tool: echo\n            args: {{management_cluster: \"{{{{ .vars.cluster }}}}\", i: \"{{{{ .vars.cluster_index }}}}\"}}\n  output:\n    first: \"{{{{ .results.pods_0.said }}}}\"\n    last: \"{{{{ .results.pods.said.management_cluster }}}}\"\n"
    );
    let (outcome, fake) = run_it(&yaml, json!({"clusters": ["a", "b"]})).await;
    assert!(!outcome.is_error, "{outcome:?}");
    assert_eq!(outcome.body, json!({"first": {"management_cluster": "a", "i": 0}, "last": "b"}));
    assert_eq!(fake.calls.lock().expect("lock").len(), 2);

    let failing = format!("{yaml}    n: \"{{{{ .vars.cluster_index }}}}\"\n");
    let (outcome, _) = run_it(&failing, json!({"clusters": ["a"]})).await;
    assert!(outcome.is_error);
    let error = outcome.body["output_error"].as_str().expect("output_error");
    assert!(error.contains("map has no entry for key \"cluster_index\""), "{error}");
    assert_eq!(outcome.body["status"], "failed");
}

#[tokio::test]
async fn for_each_over_something_not_a_list_names_the_step() {
    let yaml = format!(
        "{HEAD}  steps:\n    - id: each\n      forEach:\n        items: \"{{{{ .input.x }}}}\"\n        steps: [{{id: s, tool: echo}}]\n"
    );
    let (outcome, _) = run_it(&yaml, json!({"x": "text"})).await;
    assert!(outcome.is_error);
    assert_eq!(outcome.body["error"], "workflow wf: step each: forEach.items resolved to a string, expected a list");
}

#[tokio::test]
async fn parallel_siblings_see_a_snapshot_and_results_merge() {
    let yaml = format!(
        "{HEAD}  steps:\n    - id: seed\n      tool: echo\n    - id: both\n      parallel:\n        - {{id: p1, tool: echo, args: {{s: \"{{{{ .results.seed.items }}}}\"}}}}\n        - {{id: p2, tool: echo}}\n  output: {{a: \"{{{{ .results.p1.said.s }}}}\", b: \"{{{{ .results.p2.said }}}}\"}}\n"
    );
    let (outcome, _) = run_it(&yaml, json!({})).await;
    assert_eq!(outcome.body, json!({"a": [{"kind": "Namespace"}], "b": {}}), "{outcome:?}");

    let sibling = format!(
        "{HEAD}  steps:\n    - id: both\n      parallel:\n        - {{id: p1, tool: echo}}\n        - {{id: p2, tool: echo, args: {{s: \"{{{{ .results.p1 }}}}\"}}}}\n"
    );
    let (outcome, _) = run_it(&sibling, json!({})).await;
    assert!(outcome.is_error);
    let error = outcome.body["error"].as_str().expect("error");
    assert!(error.contains("step p2: args.s: map has no entry for key \"p1\""), "{error}");
}

#[tokio::test]
async fn conditions_follow_musters_rules() {
    let yaml = format!(
        "{HEAD}  args: {{env: {{type: string, default: dev}}}}\n  steps:\n    - id: prod\n      tool: echo\n      output: true\n      condition: {{template: '{{{{ eq .input.env \"production\" }}}}'}}\n    - id: check\n      tool: echo\n      output: true\n      condition:\n        tool: echo\n        expect: {{success: true, jsonPath: {{'{{{{ (index .result.items 0).kind }}}}': Namespace}}}}\n    - id: not\n      tool: echo\n      output: true\n      condition:\n        tool: echo\n        expectNot: {{success: true}}\n"
    );
    let (outcome, _) = run_it(&yaml, json!({})).await;
    let steps = outcome.body["steps"].as_array().expect("steps");
    let status: Vec<&str> = steps.iter().map(|s| s["status"].as_str().unwrap_or_default()).collect();
    assert_eq!(status, ["skipped", "completed", "skipped"], "{outcome:?}");
    assert_eq!(steps[0]["condition_evaluation"], false);
    let (outcome, _) = run_it(&yaml, json!({"env": "production"})).await;
    assert_eq!(outcome.body["steps"][0]["status"], "completed");
    let (outcome, _) = run_it(&yaml, json!({"env": 3})).await;
    assert_eq!(outcome.body, json!("workflow wf: field 'env' has wrong type, expected string"));
}

#[tokio::test]
async fn allow_failure_and_from_step_give_typed_output() {
    let yaml = format!(
        "{HEAD}  steps:\n    - id: risky\n      tool: fail\n      allowFailure: true\n    - id: after\n      tool: echo\n      condition: {{fromStep: risky, expectNot: {{success: true}}}}\n  output: {{ok: \"{{{{ .results.risky.success }}}}\", err: \"{{{{ .results.risky.isError }}}}\", ran: \"{{{{ len .results.after.items }}}}\"}}\n"
    );
    let (outcome, _) = run_it(&yaml, json!({})).await;
    assert_eq!((outcome.body, outcome.is_error), (json!({"ok": false, "err": true, "ran": 1}), false));
}

#[tokio::test]
async fn the_execution_record_has_each_steps_input_result_and_time() {
    let yaml = format!(
        "{HEAD}  args: {{clusters: {{type: array, required: true}}}}\n  steps:\n    - id: risky\n      tool: fail\n      allowFailure: true\n    - id: each\n      forEach:\n        items: \"{{{{ .input.clusters }}}}\"\n        steps:\n          - id: pods\n            tool: echo\n            args: {{c: \"{{{{ .vars.item }}}}\"}}\n"
    );
    let (outcome, _) = run_it(&yaml, json!({"clusters": ["a", "b"]})).await;
    let record = outcome.execution;
    assert_eq!(record.kind, "WorkflowExecution");
    assert_eq!(record.id(), outcome.body["execution_id"], "the record's id is the response's");
    let spec = &record.spec;
    assert_eq!((spec.workflow_name.as_str(), spec.status.as_str()), ("wf", "completed"));
    assert_eq!(spec.input, Some(json!({"clusters": ["a", "b"]})));
    assert_eq!(spec.result.as_ref(), Some(&outcome.body));
    assert!(spec.completed_at.is_some_and(|end| end >= spec.started_at));
    let steps: Vec<(&str, &str, Option<&str>)> =
        spec.steps.iter().map(|s| (s.step_id.as_str(), s.status.as_str(), s.stored_as.as_deref())).collect();
    assert_eq!(
        steps,
        [
            ("risky", "failed", Some("risky")),
            ("pods", "completed", Some("pods_0")),
            ("pods", "completed", Some("pods_1"))
        ]
    );
    assert_eq!(spec.steps[0].result, Some(json!({"success": false, "isError": true, "error": "pod x not found"})));
    assert!(spec.steps[0].error.as_deref().is_some_and(|e| e.contains("step risky (fail) failed")));
    assert_eq!(spec.steps[2].input, Some(json!({"c": "b"})));
    assert!(spec.steps.iter().all(|s| s.started_at.is_some() && s.completed_at >= s.started_at));
    // The agent's answer keeps Muster's step shape: no record-only keys.
    let answered = outcome.body["steps"][1].as_object().expect("a step");
    assert!(!answered.contains_key("startedAt") && !answered.contains_key("input"), "{answered:?}");

    let (refused, _) = run_it(&yaml, json!({})).await;
    assert_eq!(refused.execution.spec.status, "failed");
    assert_eq!(refused.execution.spec.error.as_deref(), Some("workflow wf: required field 'clusters' is missing"));
    let stopped = format!("{HEAD}  steps:\n    - id: deploy\n      tool: fail\n");
    let (failed, _) = run_it(&stopped, json!({})).await;
    assert_eq!(failed.execution.spec.status, "failed");
    assert_eq!(failed.execution.spec.error.as_deref(), Some("workflow wf: step deploy (fail) failed: pod x not found"));
}

#[tokio::test]
async fn on_failure_runs_after_a_failing_step_and_after_a_template_error() {
    for (tool, args) in [("fail", "{}"), ("echo", "{x: \"{{ .context.non_existent_value }}\"}")] {
        let yaml = format!(
            "{HEAD}  steps:\n    - id: deploy\n      tool: {tool}\n      args: {args}\n    - id: never\n      tool: echo\n  onFailure:\n    - {{id: rollback, tool: echo}}\n    - {{id: broken, tool: nosuch}}\n"
        );
        let (outcome, fake) = run_it(&yaml, json!({})).await;
        assert!(outcome.is_error, "{outcome:?}");
        let called: Vec<String> = fake.calls.lock().expect("lock").iter().map(|c| c.0.clone()).collect();
        assert!(!called.contains(&"never".to_owned()));
        let steps = outcome.body["steps"].as_array().expect("steps");
        let rollback = steps.iter().find(|s| s["id"] == "rollback").expect("rollback recorded");
        assert_eq!(rollback["status"], "completed");
        let error = outcome.body["error"].as_str().expect("error");
        assert!(error.starts_with("workflow wf: step deploy"), "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn missing_arguments_and_the_deadline() {
    let yaml = format!(
        "{HEAD}  args: {{c: {{type: string, required: true}}}}\n  steps: [{{id: s, tool: hang}}, {{id: t, tool: echo}}]\n  onFailure: [{{id: undo, tool: echo}}]\n"
    );
    let (outcome, _) = run_it(&yaml, json!({})).await;
    assert_eq!(outcome.body, json!("workflow wf: required field 'c' is missing"));
    let fake = Fake::default();
    let started = tokio::time::Instant::now();
    let limits = Limits { timeout: Duration::from_secs(60), max_parallel: 2 };
    let outcome = run(&workflow(&yaml), json!({"c": "x"}), &fake, &CancellationToken::new(), limits).await;
    assert!(outcome.is_error);
    assert_eq!(started.elapsed(), Duration::from_secs(60), "it ends at the deadline");
    assert_eq!(outcome.body["error"], "workflow wf exceeded its deadline of 60s during step s");
    assert_eq!(*fake.cancelled.lock().expect("lock"), ["hang"], "the hung call was cancelled");
    let called: Vec<String> = fake.calls.lock().expect("lock").iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(called, ["hang", "echo"], "no further step ran, onFailure did (echo)");
    assert_eq!(outcome.body["steps"][1]["id"], "undo");
    assert_eq!(outcome.body["steps"][1]["status"], "completed");
    assert_eq!(outcome.execution.spec.status, "failed");
    assert_eq!(outcome.execution.spec.error.as_deref(), outcome.body["error"].as_str());

    // A call that ignores its cancellation is dropped after the grace; onFailure still runs.
    let deaf = yaml.replace("tool: hang", "tool: deaf");
    let fake = Fake::default();
    let started = tokio::time::Instant::now();
    let outcome = run(&workflow(&deaf), json!({"c": "x"}), &fake, &CancellationToken::new(), limits).await;
    assert_eq!(started.elapsed(), Duration::from_secs(60) + STOP_GRACE);
    assert_eq!(outcome.body["steps"][0]["id"], "undo", "{}", outcome.body);
}

#[tokio::test(start_paused = true)]
async fn the_agents_cancellation_stops_the_run_and_cleanup_still_runs() {
    let yaml = format!(
        "{HEAD}  steps: [{{id: wait, tool: hang}}]\n  onFailure: [{{id: undo, tool: echo}}, {{id: slow, tool: deaf}}]\n"
    );
    let fake = Fake::default();
    let cancel = CancellationToken::new();
    let agent = cancel.clone();
    let started = tokio::time::Instant::now();
    let cancelling = async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        agent.cancel();
    };
    let workflow = workflow(&yaml);
    let (outcome, ()) = tokio::join!(run(&workflow, json!({}), &fake, &cancel, Limits::default()), cancelling);
    assert_eq!(outcome.body["error"], "workflow wf: cancelled by the caller during step wait");
    assert_eq!(*fake.cancelled.lock().expect("lock"), ["hang"]);
    let steps: Vec<(&str, &str)> =
        outcome.execution.spec.steps.iter().map(|s| (s.step_id.as_str(), s.status.as_str())).collect();
    assert_eq!(steps, [("wait", "failed"), ("undo", "completed")], "the cleanup ran, its hung step was cut off");
    // The cleanup is bounded: what was left of the deadline (10 min less 3 s), then the grace.
    assert_eq!(started.elapsed(), DEFAULT_TIMEOUT + STOP_GRACE);
}

#[tokio::test]
async fn the_default_response_merges_the_last_steps_object() {
    let yaml = format!("{HEAD}  steps: [{{id: a, tool: echo, output: true}}, {{id: b, tool: echo, args: {{k: 1}}}}]\n");
    let (outcome, _) = run_it(&yaml, json!({})).await;
    assert_eq!(outcome.body["status"], "completed");
    assert_eq!(outcome.body["said"], json!({"k": 1}));
    assert!(outcome.body["steps"][0].get("result").is_some());
    assert!(outcome.body["steps"][1].get("result").is_none());
    assert_eq!(outcome.body["execution_id"].as_str().map(str::len), Some(36));
}
