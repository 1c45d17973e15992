//! One run's steps: plain tool steps, `forEach` (flat body, `results.<id>_<i>`), `parallel`
//! (bounded, each sub-step on a snapshot, merged in declaration order), conditions with Muster's
//! `expect`/`expectNot` rules, and `onFailure`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{CallResult, Context, Dispatch, execution_id, is_output};
use crate::crd::workflow::{Expectation, WorkflowCondition, WorkflowStep, WorkflowSubStep};
use crate::template;

pub(super) struct Run<'a> {
    pub(super) name: String,
    dispatch: &'a dyn Dispatch,
    max_parallel: usize,
    pub(super) context: Context,
    /// Step records in the order they finished (Muster's `steps[]`).
    pub(super) records: Vec<Map<String, Value>>,
    /// Each step's status, for a `fromStep` condition on a step without a stored result.
    statuses: BTreeMap<String, String>,
    /// The top-level step running now, shared so the deadline can name it while the run is busy.
    pub(super) current: Arc<Mutex<String>>,
    pub(super) id: String,
    /// What the calls run under: cancelled by the agent, or at the deadline (`workflow.rs`).
    pub(super) stop: CancellationToken,
}

/// A step that stops the run, with its error in words.
type Stop = Option<String>;

/// Keys of a step's record that only the execution record shows (`record.rs`), not the response.
pub(super) const STARTED_AT: &str = "startedAt";
pub(super) const COMPLETED_AT: &str = "completedAt";
pub(super) const DURATION_MS: &str = "durationMs";
pub(super) const INPUT: &str = "input";
pub(super) const STORED_AS: &str = "storedAs";
const RECORD_ONLY: [&str; 5] = [STARTED_AT, COMPLETED_AT, DURATION_MS, INPUT, STORED_AS];

impl<'a> Run<'a> {
    pub(super) fn new(
        name: String,
        dispatch: &'a dyn Dispatch,
        max_parallel: usize,
        input: Map<String, Value>,
    ) -> Self {
        let context = Context { input, ..Context::default() };
        Self {
            name,
            dispatch,
            max_parallel: max_parallel.max(1),
            context,
            records: Vec::new(),
            statuses: BTreeMap::new(),
            current: Arc::default(),
            id: execution_id(),
            stop: CancellationToken::new(),
        }
    }

    /// Runs the top-level steps in order; `Some(error)` when one stopped the run. After each, the
    /// dispatch hears how far the run is (`Dispatch::step_ended`).
    pub(super) async fn steps(&mut self, steps: &[WorkflowStep]) -> Stop {
        for (done, step) in (1..).zip(steps) {
            if let Ok(mut current) = self.current.lock() {
                current.clone_from(&step.id);
            }
            let stop = if let Some(each) = &step.for_each {
                self.for_each(step, each).await
            } else if let Some(parallel) = &step.parallel {
                self.parallel(step, parallel).await
            } else {
                self.sub_step(&as_sub(step), false).await
            };
            let status = self.statuses.get(&step.id).map_or("completed", String::as_str);
            let message = match &step.tool {
                Some(tool) => format!("step {} ({tool}) {status}", step.id),
                None => format!("step {} {status}", step.id),
            };
            self.dispatch.step_ended(done, steps.len(), message).await;
            if stop.is_some() {
                return stop;
            }
        }
        None
    }

    /// `onFailure`: every sub-step in order, failures tolerated.
    pub(super) async fn on_failure(&mut self, steps: &[WorkflowSubStep]) {
        for step in steps {
            let _ = self.sub_step(step, true).await;
        }
    }

    /// Muster's default response; `result` only for output steps.
    pub(super) fn response(&self, steps: &[WorkflowStep], status: &str) -> Value {
        let outputs: Vec<&str> = steps.iter().filter(|s| is_output(s)).map(|s| s.id.as_str()).collect();
        let records: Vec<Value> = self
            .records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let id = r.get("id").and_then(Value::as_str).unwrap_or_default();
                if !outputs.contains(&id) {
                    r.remove("result");
                }
                for key in RECORD_ONLY {
                    r.remove(key);
                }
                Value::Object(r)
            })
            .collect();
        let mut body = json!({
            "execution_id": self.id, "workflow": self.name, "status": status,
            "input": self.context.input, "steps": records, "template_vars": self.context.vars,
        });
        if let Some(last) = steps.last().filter(|s| s.tool.is_some() && !is_output(s) && status == "completed")
            && let Some(Value::Object(result)) = self.context.results.get(&last.id)
            && let Value::Object(top) = &mut body
        {
            for (k, v) in result {
                top.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        body
    }

    async fn for_each(&mut self, step: &WorkflowStep, each: &crate::crd::workflow::WorkflowForEach) -> Stop {
        match self.condition(&step.id, step.condition.as_ref()).await {
            Ok(true) => {}
            Ok(false) => return self.skip(&step.id, step.tool.as_deref().unwrap_or_default(), None),
            Err(e) => return Some(e),
        }
        let items = match template::eval_typed(&each.items, &self.context.data()) {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                return Some(format!(
                    "workflow {}: step {}: forEach.items resolved to {}, expected a list",
                    self.name,
                    step.id,
                    json_type(&other)
                ));
            }
            Err(e) => return Some(format!("workflow {}: step {}: forEach.items: {e}", self.name, step.id)),
        };
        let saved = self.context.vars.clone();
        let variable = each.variable().to_owned();
        let mut stop = None;
        'items: for (i, item) in items.into_iter().enumerate() {
            self.context.vars.insert(variable.clone(), item);
            self.context.vars.insert(format!("{variable}_index"), Value::from(i));
            for sub in &each.steps {
                let failed = self.sub_step(sub, false).await;
                if let Some(result) = self.context.results.get(&sub.id).cloned() {
                    self.context.results.insert(format!("{}_{i}", sub.id), result);
                    if let Some(record) = self.records.last_mut().filter(|r| r.get("id") == Some(&json!(sub.id))) {
                        record.insert(STORED_AS.into(), format!("{}_{i}", sub.id).into());
                    }
                }
                if failed.is_some() {
                    stop = failed;
                    break 'items;
                }
            }
        }
        self.context.vars = saved;
        self.statuses.insert(step.id.clone(), if stop.is_some() { "failed" } else { "completed" }.into());
        stop.filter(|_| !step.allow_failure)
    }

    async fn parallel(&mut self, step: &WorkflowStep, subs: &[WorkflowSubStep]) -> Stop {
        match self.condition(&step.id, step.condition.as_ref()).await {
            Ok(true) => {}
            Ok(false) => return self.skip(&step.id, step.tool.as_deref().unwrap_or_default(), None),
            Err(e) => return Some(e),
        }
        let snapshot = self.context.clone();
        let (name, dispatch) = (self.name.clone(), self.dispatch);
        let mut branches: Vec<BoxFuture<'_, (&WorkflowSubStep, Run<'_>, Stop)>> = Vec::new();
        for sub in subs {
            let mut branch = Run::new(name.clone(), dispatch, 1, snapshot.input.clone());
            branch.stop = self.stop.clone();
            branch.current = self.current.clone();
            branch.context = snapshot.clone();
            branch.statuses = self.statuses.clone();
            branches.push(Box::pin(async move {
                let stop = branch.sub_step(sub, false).await;
                (sub, branch, stop)
            }));
        }
        let runs = futures::stream::iter(branches).buffered(self.max_parallel).collect::<Vec<_>>().await;
        let mut first_stop = None;
        for (sub, branch, stop) in runs {
            if let Some(result) = branch.context.results.get(&sub.id) {
                self.context.results.insert(sub.id.clone(), result.clone());
            }
            self.statuses.extend(branch.statuses);
            self.records.extend(branch.records);
            if first_stop.is_none() {
                first_stop = stop;
            }
        }
        self.statuses.insert(step.id.clone(), if first_stop.is_some() { "failed" } else { "completed" }.into());
        first_stop.filter(|_| !step.allow_failure)
    }

    /// One tool call with its condition; `allow` forces `allowFailure` (onFailure).
    async fn sub_step(&mut self, step: &WorkflowSubStep, allow: bool) -> Stop {
        let allow_failure = allow || step.allow_failure;
        let mut record = Map::new();
        record.insert("id".into(), step.id.clone().into());
        record.insert("tool".into(), step.tool.clone().into());
        if allow_failure {
            record.insert("allow_failure".into(), true.into());
        }
        match self.condition(&step.id, step.condition.as_ref()).await {
            Ok(true) => {}
            Ok(false) => return self.skip(&step.id, &step.tool, Some(record)),
            Err(e) => return Some(e),
        }
        let started = (chrono::Utc::now(), std::time::Instant::now());
        let (status, stop) = match template::resolve(&Value::Object(map(&step.args)), &self.context.data(), "args") {
            Err(e) => {
                record.insert("status".into(), "failed".into());
                (String::from("failed"), Some(format!("workflow {}: step {}: {e}", self.name, step.id)))
            }
            Ok(args) => {
                record.insert(INPUT.into(), args.clone());
                self.call(step, args, &mut record).await
            }
        };
        record.insert(STARTED_AT.into(), json!(started.0));
        record.insert(COMPLETED_AT.into(), json!(chrono::Utc::now()));
        record.insert(DURATION_MS.into(), json!(u64::try_from(started.1.elapsed().as_millis()).unwrap_or(u64::MAX)));
        record.insert("status".into(), status.clone().into());
        if let Some(error) = &stop {
            record.insert("error".into(), error.clone().into());
        }
        self.statuses.insert(step.id.clone(), status);
        self.records.push(record);
        stop.filter(|_| !allow_failure)
    }
}

impl Run<'_> {
    /// The step's tool call; its result goes into `.results` and the record.
    async fn call(&mut self, step: &WorkflowSubStep, args: Value, record: &mut Map<String, Value>) -> (String, Stop) {
        let (value, stop) = match self.dispatch.call(&step.tool, args, &self.stop).await {
            Ok(CallResult { value, is_error: false }) => (value, None),
            Ok(CallResult { value, is_error: true }) => {
                let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
                let stop = format!("workflow {}: step {} ({}) failed: {text}", self.name, step.id, step.tool);
                (json!({"success": false, "isError": true, "error": text}), Some(stop))
            }
            Err(e) => {
                let stop = format!("workflow {}: step {} ({}): {e}", self.name, step.id, step.tool);
                let failure = json!({"success": false, "isError": true, "error": e});
                self.context.results.insert(step.id.clone(), failure);
                record.insert(STORED_AS.into(), step.id.clone().into());
                return ("failed".into(), Some(stop));
            }
        };
        self.context.results.insert(step.id.clone(), value.clone());
        record.insert("result".into(), value);
        record.insert(STORED_AS.into(), step.id.clone().into());
        (if stop.is_some() { "failed" } else { "completed" }.into(), stop)
    }

    fn skip(&mut self, id: &str, tool: &str, record: Option<Map<String, Value>>) -> Stop {
        let mut record = record.unwrap_or_default();
        record.insert("id".into(), id.into());
        record.insert("tool".into(), tool.into());
        record.insert("status".into(), "skipped".into());
        record.insert("condition_evaluation".into(), false.into());
        self.statuses.insert(id.to_owned(), "skipped".into());
        self.records.push(record);
        None
    }

    /// Whether the step runs (Muster's `evaluateStepCondition`); `Err` stops the run.
    async fn condition(&mut self, id: &str, condition: Option<&WorkflowCondition>) -> Result<bool, String> {
        let Some(condition) = condition else { return Ok(true) };
        let at = |e: template::Error| format!("workflow {}: step {id}: condition: {e}", self.name);
        if let Some(source) = &condition.template {
            let text = template::render_text(source, &self.context.data()).map_err(at)?;
            return Ok(text.trim() == "true");
        }
        let result = if let Some(tool) = &condition.tool {
            let args = template::resolve(&Value::Object(map(&condition.args)), &self.context.data(), "condition.args")
                .map_err(at)?;
            match self.dispatch.call(tool, args, &self.stop).await {
                Ok(result) => result,
                Err(_) => return Ok(false),
            }
        } else if let Some(from) = &condition.from_step {
            match self.context.results.get(from) {
                Some(value) => {
                    let is_error = value.get("isError") == Some(&Value::Bool(true));
                    CallResult { value: value.clone(), is_error }
                }
                None => match self.statuses.get(from) {
                    Some(status) if status == "completed" => {
                        CallResult { value: json!({"success": true, "status": status}), is_error: false }
                    }
                    Some(status) => CallResult {
                        value: json!({"success": false, "isError": true, "status": status}),
                        is_error: true,
                    },
                    None => {
                        return Err(format!(
                            "workflow {}: step {id} condition references non-existent step result: {from}",
                            self.name
                        ));
                    }
                },
            }
        } else {
            return Ok(true);
        };
        let default = Expectation { success: Some(false), ..Expectation::default() };
        let expect = match (&condition.expect, &condition.expect_not) {
            (None, None) => Some(&default),
            (expect, _) => expect.as_ref(),
        };
        let data = self.context.data();
        let mut passed = true;
        let succeeded = !result.is_error;
        if let Some(expect) = expect {
            passed &= succeeded == expect.success.unwrap_or(false) && paths_match(expect, &result, &data);
        }
        if let Some(expect_not) = &condition.expect_not {
            let success_differs = succeeded != expect_not.success.unwrap_or(false);
            passed &= (!expect_not.json_path.is_empty() && !paths_match(expect_not, &result, &data)) || success_differs;
        }
        Ok(passed)
    }
}

/// Every `jsonPath` key of `expectation` found in the result and equal (`==`, else Go's `%v`).
fn paths_match(expectation: &Expectation, result: &CallResult, data: &template::Data) -> bool {
    expectation.json_path.iter().all(|(key, expected)| {
        let found = if template::is_template(key) {
            let mut json = data.json().clone();
            json["result"] = result.value.clone();
            template::eval_typed(key, &template::Data::new(json)).ok()
        } else {
            template::navigate(&result.value, key).ok().cloned()
        };
        let expected = template::resolve(expected, data, "").unwrap_or_else(|_| expected.clone());
        found.is_some_and(|found| found == expected || text(&found) == text(&expected))
    })
}

fn text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

fn as_sub(step: &WorkflowStep) -> WorkflowSubStep {
    WorkflowSubStep {
        id: step.id.clone(),
        tool: step.tool.clone().unwrap_or_default(),
        args: step.args.clone(),
        condition: step.condition.clone(),
        output: step.output,
        store: step.store,
        allow_failure: step.allow_failure,
        description: step.description.clone(),
    }
}

fn map(args: &BTreeMap<String, Value>) -> Map<String, Value> {
    args.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
