//! The Workflow resource (`muster.giantswarm.io/v1alpha1`, `kind: Workflow`, short name `wf`):
//! serde mirrors of Muster's `workflow_types.go`, the status muster writes back, and the CRD.
//!
//! Unlike MCPServer, the spec types do not deny unknown fields: Muster's Go decoder ignores them,
//! and Muster's YAML must load unchanged (docs/design/workflows.md §2). `validate.rs` checks
//! everything the CRD's patterns and CEL rules say, and more (step references, templates), and
//! reports every problem at once. Execution is not here: `crd` holds no runtime state.

// KubeSchema expands a private copy of each type it derives for, which trips `unreachable_pub`.
#![allow(unreachable_pub, reason = "false positive from kube's KubeSchema derive")]

mod validate;

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResource;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ObjectMeta, Problem, first_line};

pub const KIND: &str = "Workflow";

/// A Workflow resource as written by users (files), or as the supervisor sees a CR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: WorkflowSpec,
    /// Written by muster; ignored on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// The desired behaviour of one workflow. `kube` derives `WorkflowResource` and its CRD from it.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[kube(
    group = "muster.giantswarm.io",
    version = "v1alpha1",
    kind = "Workflow",
    root = "WorkflowResource",
    namespaced,
    status = "WorkflowStatus",
    shortname = "wf",
    printcolumn(name = "Valid", type_ = "boolean", json_path = ".status.valid"),
    printcolumn(name = "Steps", type_ = "integer", json_path = ".status.stepCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_steps)]
pub struct WorkflowSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1000))]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, ArgDefinition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1))]
    pub steps: Vec<WorkflowStep>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<WorkflowSubStep>,
    /// Templates rendered after the last step; the result replaces the default response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub output: Option<serde_json::Map<String, Value>>,
}

/// One workflow argument, which becomes a property of the tool's input schema.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_type)]
pub struct ArgDefinition {
    /// `string`, `integer`, `boolean`, `number`, `object` or `array` (kept as text so that an
    /// unknown type is a validation problem, not a parse error).
    #[serde(rename = "type", default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("enum" = ["string", "integer", "boolean", "number", "object", "array"]))]
    pub arg_type: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_value")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 500))]
    pub description: String,
}

/// The argument types Muster knows.
pub const ARG_TYPES: [&str; 6] = ["string", "integer", "boolean", "number", "object", "array"];

/// A top-level step: exactly one of `tool`, `forEach`, `parallel`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("(has(self.tool) ? 1 : 0) + (has(self.forEach) ? 1 : 0) + (has(self.parallel) ? 1 : 0) == 1").message("exactly one of tool, forEach or parallel must be set")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_id)]
pub struct WorkflowStep {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(pattern(r"^[a-zA-Z0-9_-]+$"), length(max = 63))]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "any_object")]
    pub args: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<WorkflowCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<WorkflowForEach>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub parallel: Option<Vec<WorkflowSubStep>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<bool>,
    /// Deprecated alias of `output`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 500))]
    pub description: String,
}

/// `forEach`: run `steps` once per item of `items`, with the item in `.vars.<as>`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_items_and_steps)]
pub struct WorkflowForEach {
    /// A template that resolves to a list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1))]
    pub items: String,
    /// The variable name; `item` when absent (Muster's default).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub as_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1))]
    pub steps: Vec<WorkflowSubStep>,
}

/// A step inside `forEach`, `parallel` or `onFailure`: always a tool call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = require_id_and_tool)]
pub struct WorkflowSubStep {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(pattern(r"^[a-zA-Z0-9_-]+$"), length(max = 63))]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(min = 1))]
    pub tool: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "any_object")]
    pub args: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<WorkflowCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<bool>,
    /// Deprecated alias of `output`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_failure: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 500))]
    pub description: String,
}

/// When a step runs: exactly one of `template`, `tool` (+ `args`) or `fromStep`; a tool or
/// fromStep condition needs `expect` or `expectNot`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("(has(self.template) ? 1 : 0) + (has(self.tool) ? 1 : 0) + (has(self.fromStep) ? 1 : 0) == 1").message("exactly one of template, tool or fromStep must be set"),
    validation = Rule::new("has(self.template) || has(self.expect) || has(self.expectNot)").message("a tool or fromStep condition needs expect or expectNot")
)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowCondition {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "any_object")]
    pub args: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expectation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_not: Option<Expectation>,
}

/// What a condition's result must (or must not) look like.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Expectation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "any_object")]
    pub json_path: BTreeMap<String, Value>,
}

/// The `status` block muster writes: into the file, or (later) the status subresource. `valid`
/// and `stepCount` are always written, the lists only when not empty (Go's `omitempty`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<String>,
    /// Informational (Muster's wording): every tool the steps, conditions and `onFailure` name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_tools: Vec<String>,
    pub step_count: usize,
}

/// Parses one Workflow document. `Err` only when it is not a Workflow at all (bad YAML, a missing
/// `spec`); a Workflow that breaks a rule parses, and `Workflow::validate` says why.
pub fn parse(text: &str) -> Result<Workflow, (Option<String>, Vec<Problem>)> {
    let mut workflow: Workflow = serde_saphyr::from_str(text).map_err(|e| {
        let name = serde_saphyr::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.pointer("/metadata/name").and_then(|n| n.as_str()).map(str::to_owned));
        (name, vec![Problem { field: "yaml".into(), message: first_line(&e.to_string()) }])
    })?;
    // Status is ours to write, never desired state.
    workflow.status = None;
    Ok(workflow)
}

/// The CustomResourceDefinition as YAML (`muster print-crd workflow`, `deploy/crds/workflow.yaml`).
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt as _;
    let body = serde_saphyr::to_string(&WorkflowResource::crd()).unwrap_or_default();
    format!(
        "# Generated by `muster print-crd workflow` from src/crd/workflow.rs. Do not edit: a test fails when it is stale.\n{body}"
    )
}

impl Workflow {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// The status muster writes back: validated now, so it says whether the workflow may run.
    pub fn status(&self) -> WorkflowStatus {
        let problems = self.validate();
        WorkflowStatus {
            valid: problems.is_empty(),
            validation_errors: problems.iter().map(ToString::to_string).collect(),
            referenced_tools: self.spec.referenced_tools(),
            step_count: self.spec.steps.len(),
        }
    }
}

impl WorkflowSpec {
    /// Every tool named by a step, sub-step, condition or `onFailure` step, sorted and unique.
    pub fn referenced_tools(&self) -> Vec<String> {
        let mut tools = BTreeSet::new();
        let condition_tool = |condition: &Option<WorkflowCondition>, tools: &mut BTreeSet<String>| {
            if let Some(tool) = condition.as_ref().and_then(|c| c.tool.as_ref()) {
                tools.insert(tool.clone());
            }
        };
        for step in &self.steps {
            tools.extend(step.tool.iter().cloned());
            condition_tool(&step.condition, &mut tools);
            let bodies = step.for_each.iter().flat_map(|f| &f.steps).chain(step.parallel.iter().flatten());
            for sub in bodies {
                tools.insert(sub.tool.clone());
                condition_tool(&sub.condition, &mut tools);
            }
        }
        for sub in &self.on_failure {
            tools.insert(sub.tool.clone());
            condition_tool(&sub.condition, &mut tools);
        }
        tools.remove("");
        tools.into_iter().collect()
    }
}

impl WorkflowForEach {
    /// The loop variable's name: `as`, or Muster's default `item`.
    pub fn variable(&self) -> &str {
        self.as_name.as_deref().unwrap_or("item")
    }
}

// Required fields are `#[serde(default)]` in Rust, so that a missing one is a validation problem
// naming the step rather than a parse error for the whole file; the CRD still requires them.
fn require(schema: &mut schemars::Schema, names: &[&str]) {
    let required: Vec<Value> = names.iter().map(|n| Value::from(*n)).collect();
    schema.insert("required".into(), Value::Array(required));
}

fn require_steps(schema: &mut schemars::Schema) {
    require(schema, &["steps"]);
}

fn require_type(schema: &mut schemars::Schema) {
    require(schema, &["type"]);
}

fn require_id(schema: &mut schemars::Schema) {
    require(schema, &["id"]);
}

fn require_items_and_steps(schema: &mut schemars::Schema) {
    require(schema, &["items", "steps"]);
}

fn require_id_and_tool(schema: &mut schemars::Schema) {
    require(schema, &["id", "tool"]);
}

/// Any JSON value (`x-kubernetes-preserve-unknown-fields`), as Muster's CRD declares `default`.
fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// An object of any JSON values (step `args`, `jsonPath`, `spec.output`).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

#[cfg(test)]
mod tests;
