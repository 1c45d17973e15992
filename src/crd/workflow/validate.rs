//! `Workflow::validate`: every problem of a workflow at once, each naming the field by path with
//! step ids (`spec.steps[deploy].args.namespace`), as `McpServer::validate` does for servers.
//!
//! It checks the CRD's patterns, lengths and CEL rules, then what only muster can: unique step
//! ids, `fromStep` naming a step that has run before (an unknown id, a later step, a parallel
//! sibling, or a cycle), argument definitions, and that every template parses.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ARG_TYPES, Workflow, WorkflowCondition, WorkflowStep, WorkflowSubStep};
use crate::crd::{API_VERSION, Problem, is_dns_label, quoted};
use crate::template;

impl Workflow {
    /// Every problem with this workflow; empty when it is valid.
    pub fn validate(&self) -> Vec<Problem> {
        let mut check = Check::default();
        if self.api_version != API_VERSION {
            check.problem("apiVersion", format!("must be {API_VERSION}, got {}", quoted(&self.api_version)));
        }
        if self.kind != super::KIND {
            check.problem("kind", format!("must be {}, got {}", super::KIND, quoted(&self.kind)));
        }
        if !is_dns_label(&self.metadata.name) {
            check.problem(
                "metadata.name",
                format!(
                    "{} is not a valid name (lowercase letters, digits and '-', at most 63, starting and ending alphanumeric)",
                    quoted(&self.metadata.name)
                ),
            );
        }
        let spec = &self.spec;
        check.max_chars("spec.description", &spec.description, 1000);
        for (name, arg) in &spec.args {
            let field = format!("spec.args.{name}");
            match arg.arg_type.as_str() {
                "" => check.problem(&format!("{field}.type"), format!("is required ({})", ARG_TYPES.join(", "))),
                t if !ARG_TYPES.contains(&t) => check.problem(
                    &format!("{field}.type"),
                    format!("{} is not a known type ({})", quoted(t), ARG_TYPES.join(", ")),
                ),
                _ => {}
            }
            if arg.required && arg.default.is_some() {
                check.problem(&format!("{field}.default"), "a required argument cannot have a default".to_owned());
            }
            check.max_chars(&format!("{field}.description"), &arg.description, 500);
        }
        if spec.steps.is_empty() {
            check.problem("spec.steps", "must have at least one step".to_owned());
        }
        for (i, step) in spec.steps.iter().enumerate() {
            check.step(i, step);
        }
        for (i, sub) in spec.on_failure.iter().enumerate() {
            let field = check.name("spec.onFailure", i, &sub.id);
            check.sub_step(&field, sub);
        }
        if let Some(output) = &spec.output {
            for (key, value) in output {
                check.templates(&format!("spec.output.{key}"), value);
            }
        }
        check.cycles();
        check.problems
    }
}

/// The walk over the steps, in the order they run.
#[derive(Default)]
struct Check {
    problems: Vec<Problem>,
    /// Each step id seen so far and its field path.
    ids: BTreeMap<String, String>,
    /// Step ids whose results a `fromStep` may read here: every id seen before, except siblings of
    /// the same `parallel` group (which run against a snapshot).
    visible: Vec<String>,
    /// Inside a `parallel` group: its ids so far, hidden from each other.
    parallel: Option<Vec<String>>,
    /// Every `fromStep` reference: (referrer id, target id).
    references: Vec<(String, String)>,
    /// `fromStep` references that do not name a visible step: (referrer id, target id, field).
    forward: Vec<(String, String, String)>,
}

impl Check {
    fn problem(&mut self, field: &str, message: String) {
        self.problems.push(Problem { field: field.to_owned(), message });
    }

    fn max_chars(&mut self, field: &str, text: &str, max: usize) {
        if text.chars().count() > max {
            self.problem(field, format!("must be at most {max} characters"));
        }
    }

    /// `list[id]`, or `list[i]` when the id is empty or already taken.
    fn name(&self, list: &str, i: usize, id: &str) -> String {
        if id.is_empty() || self.ids.contains_key(id) { format!("{list}[{i}]") } else { format!("{list}[{id}]") }
    }

    fn step(&mut self, i: usize, step: &WorkflowStep) {
        let field = self.name("spec.steps", i, &step.id);
        self.id(&field, &step.id);
        let kinds: Vec<&str> = [
            step.tool.is_some().then_some("tool"),
            step.for_each.is_some().then_some("forEach"),
            step.parallel.is_some().then_some("parallel"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.as_slice() {
            [] => self.problem(&field, "needs exactly one of tool, forEach or parallel; it has none".to_owned()),
            [_] => {}
            more => self.problem(
                &field,
                format!("needs exactly one of tool, forEach or parallel; it has {}", more.join(" and ")),
            ),
        }
        if let Some(tool) = &step.tool
            && tool.is_empty()
        {
            self.problem(&format!("{field}.tool"), "must not be empty".to_owned());
        }
        if step.tool.is_none() && !step.args.is_empty() {
            self.problem(&format!("{field}.args"), "is only used by a tool step".to_owned());
        }
        for (key, value) in &step.args {
            self.templates(&format!("{field}.args.{key}"), value);
        }
        self.max_chars(&format!("{field}.description"), &step.description, 500);
        // The step's condition is evaluated before its body runs.
        if let Some(condition) = &step.condition {
            self.condition(&format!("{field}.condition"), &step.id, condition);
        }
        if let Some(for_each) = &step.for_each {
            let loop_field = format!("{field}.forEach");
            if for_each.items.trim().is_empty() {
                self.problem(
                    &format!("{loop_field}.items"),
                    "is required: a template that resolves to a list".to_owned(),
                );
            } else if !template::is_template(&for_each.items) {
                self.problem(
                    &format!("{loop_field}.items"),
                    format!("{} must be a template ({{{{ … }}}}) that resolves to a list", quoted(&for_each.items)),
                );
            } else {
                self.template(&format!("{loop_field}.items"), &for_each.items);
            }
            if let Some(name) = &for_each.as_name
                && !is_variable(name)
            {
                self.problem(
                    &format!("{loop_field}.as"),
                    format!("{} must match ^[a-zA-Z_][a-zA-Z0-9_]*$", quoted(name)),
                );
            }
            if for_each.steps.is_empty() {
                self.problem(&format!("{loop_field}.steps"), "must have at least one step".to_owned());
            }
            for (j, sub) in for_each.steps.iter().enumerate() {
                let sub_field = self.name(&format!("{loop_field}.steps"), j, &sub.id);
                self.sub_step(&sub_field, sub);
            }
        }
        if let Some(parallel) = &step.parallel {
            if parallel.is_empty() {
                self.problem(&format!("{field}.parallel"), "must have at least one step".to_owned());
            }
            self.parallel = Some(Vec::new());
            for (j, sub) in parallel.iter().enumerate() {
                let sub_field = self.name(&format!("{field}.parallel"), j, &sub.id);
                self.sub_step(&sub_field, sub);
                self.parallel.get_or_insert_default().push(sub.id.clone());
            }
            // After the group, every sibling's result is there.
            let group = self.parallel.take().unwrap_or_default();
            self.visible.extend(group);
        }
        self.visible.push(step.id.clone());
    }

    fn sub_step(&mut self, field: &str, sub: &WorkflowSubStep) {
        self.id(field, &sub.id);
        if sub.tool.is_empty() {
            self.problem(&format!("{field}.tool"), "is required".to_owned());
        }
        for (key, value) in &sub.args {
            self.templates(&format!("{field}.args.{key}"), value);
        }
        self.max_chars(&format!("{field}.description"), &sub.description, 500);
        if let Some(condition) = &sub.condition {
            self.condition(&format!("{field}.condition"), &sub.id, condition);
        }
        if self.parallel.is_none() {
            self.visible.push(sub.id.clone());
        }
    }

    fn id(&mut self, field: &str, id: &str) {
        if id.is_empty() {
            self.problem(&format!("{field}.id"), "is required".to_owned());
            return;
        }
        if id.len() > 63 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            self.problem(&format!("{field}.id"), format!("{} must match ^[a-zA-Z0-9_-]+$ (at most 63)", quoted(id)));
        }
        match self.ids.get(id) {
            Some(first) => {
                let message = format!("{} is already the id of {first}", quoted(id));
                self.problem(&format!("{field}.id"), message);
            }
            None => {
                self.ids.insert(id.to_owned(), field.to_owned());
            }
        }
    }

    fn condition(&mut self, field: &str, owner: &str, condition: &WorkflowCondition) {
        let kinds: Vec<&str> = [
            condition.template.is_some().then_some("template"),
            condition.tool.is_some().then_some("tool"),
            condition.from_step.is_some().then_some("fromStep"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match kinds.as_slice() {
            [] => self.problem(field, "needs exactly one of template, tool or fromStep; it has none".to_owned()),
            [_] => {}
            more => self.problem(
                field,
                format!("needs exactly one of template, tool or fromStep; it has {}", more.join(" and ")),
            ),
        }
        if condition.template.is_none() && condition.expect.is_none() && condition.expect_not.is_none() {
            self.problem(field, "a tool or fromStep condition needs expect or expectNot".to_owned());
        }
        if let Some(text) = &condition.template {
            self.template(&format!("{field}.template"), text);
        }
        if let Some(tool) = &condition.tool
            && tool.is_empty()
        {
            self.problem(&format!("{field}.tool"), "must not be empty".to_owned());
        }
        for (key, value) in &condition.args {
            self.templates(&format!("{field}.args.{key}"), value);
        }
        for (name, expectation) in [("expect", &condition.expect), ("expectNot", &condition.expect_not)] {
            for (path, value) in expectation.iter().flat_map(|e| &e.json_path) {
                let path_field = format!("{field}.{name}.jsonPath.{path}");
                if template::is_template(path) {
                    self.template(&path_field, path);
                }
                self.templates(&path_field, value);
            }
        }
        if let Some(target) = &condition.from_step {
            let target_field = format!("{field}.fromStep");
            self.references.push((owner.to_owned(), target.clone()));
            if self.visible.contains(target) {
                // An earlier step: fine.
            } else if self.parallel.as_ref().is_some_and(|group| group.contains(target)) {
                self.problem(
                    &target_field,
                    format!(
                        "{} is a sibling in the same parallel group; siblings cannot see each other's results",
                        quoted(target)
                    ),
                );
            } else {
                // Unknown, or later: decided once every id is known (`cycles`).
                self.forward.push((owner.to_owned(), target.clone(), target_field));
            }
        }
    }

    /// Every template inside a value (strings, nested in lists and objects).
    fn templates(&mut self, field: &str, value: &Value) {
        match value {
            Value::String(text) if template::is_template(text) => self.template(field, text),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.templates(&format!("{field}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    self.templates(&format!("{field}.{key}"), item);
                }
            }
            _ => {}
        }
    }

    fn template(&mut self, field: &str, text: &str) {
        if let Err(e) = template::check(text) {
            self.problem(field, e.to_string());
        }
    }

    /// `fromStep` references that did not name an earlier step: an unknown id, a cycle, or a
    /// step that runs later.
    fn cycles(&mut self) {
        let edges: BTreeMap<&str, &str> =
            self.references.iter().map(|(from, to)| (from.as_str(), to.as_str())).collect();
        let mut problems = Vec::new();
        for (from, to, field) in &self.forward {
            if !self.ids.contains_key(to) {
                problems.push((field.clone(), format!("{} is not a step of this workflow", quoted(to))));
                continue;
            }
            // Follow forward references from the target; coming back to `from` is a cycle.
            let mut path = vec![from.as_str(), to.as_str()];
            let mut at = to.as_str();
            let cycle = loop {
                if at == from {
                    break true;
                }
                match edges.get(at) {
                    Some(next) if !path[1..].contains(next) || *next == from => {
                        path.push(next);
                        at = next;
                    }
                    _ => break false,
                }
            };
            let message = if cycle {
                format!("{} is part of a cycle through fromStep: {}", quoted(to), path.join(" → "))
            } else {
                format!(
                    "{} runs after step {}; fromStep must name a step that runs before it",
                    quoted(to),
                    quoted(from)
                )
            };
            problems.push((field.clone(), message));
        }
        for (field, message) in problems {
            self.problem(&field, message);
        }
    }
}

/// A Go template variable name (`.vars.<as>`).
fn is_variable(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
