//! Muster's workflows load unchanged (`tests/fixtures/workflows/`), and each bad input gets its
//! precise problem, naming the step and the field.

use super::*;

const FIXTURES: [(&str, &str); 10] = [
    ("01-foreach-clusters", include_str!("../../../tests/fixtures/workflows/01-foreach-clusters.yaml")),
    ("02-parallel-snapshot", include_str!("../../../tests/fixtures/workflows/02-parallel-snapshot.yaml")),
    ("03-condition-jsonpath", include_str!("../../../tests/fixtures/workflows/03-condition-jsonpath.yaml")),
    ("04-condition-template", include_str!("../../../tests/fixtures/workflows/04-condition-template.yaml")),
    ("05-allow-failure-from-step", include_str!("../../../tests/fixtures/workflows/05-allow-failure-from-step.yaml")),
    ("06-on-failure", include_str!("../../../tests/fixtures/workflows/06-on-failure.yaml")),
    ("07-typed-output", include_str!("../../../tests/fixtures/workflows/07-typed-output.yaml")),
    ("08-bare-cluster", include_str!("../../../tests/fixtures/workflows/08-bare-cluster.yaml")),
    ("09-payload-truncation", include_str!("../../../tests/fixtures/workflows/09-payload-truncation.yaml")),
    ("10-bad-template-at-run-time", include_str!("../../../tests/fixtures/workflows/10-bad-template-at-run-time.yaml")),
];

/// A parsed workflow and its status.
struct Loaded {
    workflow: Workflow,
    status: WorkflowStatus,
}

fn definition(text: &str) -> Loaded {
    let workflow = parse(text).unwrap_or_else(|(_, problems)| panic!("not a workflow: {problems:?}"));
    let status = workflow.status();
    Loaded { workflow, status }
}

/// The problems of a workflow whose `spec:` is `spec` (indented two spaces).
fn problems(spec: &str) -> Vec<String> {
    let text =
        format!("apiVersion: muster.giantswarm.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: w\nspec:\n{spec}");
    definition(&text).status.validation_errors
}

#[test]
fn musters_workflows_load_unchanged_and_are_valid() {
    for (name, text) in FIXTURES {
        let loaded = definition(text);
        assert!(loaded.status.valid, "{name}: {:?}", loaded.status.validation_errors);
        assert!(loaded.status.step_count >= 1, "{name}");
        // What loads is what was written: serializing and parsing again gives the same workflow.
        let again = serde_saphyr::to_string(&loaded.workflow).expect("serialize");
        assert_eq!(parse(&again).expect("reparse"), loaded.workflow, "{name}");
    }
}

#[test]
fn the_status_counts_steps_and_lists_referenced_tools() {
    let parallel = definition(FIXTURES[1].1);
    assert_eq!(parallel.status.step_count, 2);
    assert_eq!(parallel.status.referenced_tools, ["x_kubernetes_namespaces_list", "x_kubernetes_pods_list"]);
    let conditional = definition(FIXTURES[2].1);
    assert_eq!(conditional.status.referenced_tools, ["x_kubernetes_namespaces_list", "x_kubernetes_pods_list"]);
    let on_failure = definition(FIXTURES[5].1);
    assert_eq!(on_failure.status.referenced_tools, ["x_kubernetes_namespaces_list", "x_kubernetes_pods_get"]);
    let each = definition(FIXTURES[0].1);
    let step = &each.workflow.spec.steps[0];
    assert_eq!(step.for_each.as_ref().map(WorkflowForEach::variable), Some("cluster"));
    assert_eq!(each.workflow.spec.args["clusters"].arg_type, "array");
    assert!(each.workflow.spec.args["clusters"].required);
}

#[test]
fn the_status_block_has_musters_names() {
    let status = definition(FIXTURES[5].1).status;
    let value = serde_json::to_value(&status).expect("json");
    assert_eq!(
        value,
        serde_json::json!({
            "valid": true,
            "referencedTools": ["x_kubernetes_namespaces_list", "x_kubernetes_pods_get"],
            "stepCount": 1
        })
    );
    let invalid = WorkflowStatus { valid: false, validation_errors: vec!["x".into()], ..WorkflowStatus::default() };
    assert_eq!(
        serde_json::to_value(&invalid).expect("json"),
        serde_json::json!({"valid": false, "validationErrors": ["x"], "stepCount": 0})
    );
}

#[test]
fn unknown_fields_are_ignored_as_musters_decoder_ignores_them() {
    let found = problems("  futureField: 1\n  steps:\n    - id: a\n      tool: t\n      retries: 3\n");
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn for_each_as_defaults_to_item() {
    let text = "apiVersion: muster.giantswarm.io/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n    - id: each\n      forEach:\n        items: \"{{ .input.xs }}\"\n        steps: [{id: a, tool: t}]\n";
    let loaded = definition(text);
    assert!(loaded.status.valid, "{:?}", loaded.status.validation_errors);
    assert_eq!(loaded.workflow.spec.steps[0].for_each.as_ref().map(WorkflowForEach::variable), Some("item"));
}

#[test]
fn step_ids_must_be_there_and_unique_everywhere() {
    assert_eq!(
        problems(
            "  steps:\n    - tool: t\n    - id: a\n      tool: t\n    - id: a\n      tool: t\n    - id: \"bad id\"\n      tool: t\n"
        ),
        [
            "spec.steps[0].id: is required",
            "spec.steps[2].id: \"a\" is already the id of spec.steps[a]",
            "spec.steps[bad id].id: \"bad id\" must match ^[a-zA-Z0-9_-]+$ (at most 63)",
        ]
    );
    assert_eq!(
        problems(
            "  steps:\n    - id: a\n      forEach:\n        items: \"{{ .input.x }}\"\n        steps: [{id: a, tool: t}]\n  onFailure:\n    - {id: a, tool: t}\n"
        ),
        [
            "spec.steps[a].forEach.steps[0].id: \"a\" is already the id of spec.steps[a]",
            "spec.onFailure[0].id: \"a\" is already the id of spec.steps[a]",
        ]
    );
}

#[test]
fn a_step_has_exactly_one_of_tool_for_each_and_parallel() {
    assert_eq!(
        problems("  steps:\n    - id: nothing\n    - id: both\n      tool: t\n      parallel: [{id: p, tool: t}]\n"),
        [
            "spec.steps[nothing]: needs exactly one of tool, forEach or parallel; it has none",
            "spec.steps[both]: needs exactly one of tool, forEach or parallel; it has tool and parallel",
        ]
    );
    assert_eq!(problems("  steps: []\n"), ["spec.steps: must have at least one step"]);
    assert_eq!(
        problems("  steps:\n    - id: p\n      parallel: []\n    - id: s\n      parallel: [{id: q}]\n"),
        ["spec.steps[p].parallel: must have at least one step", "spec.steps[s].parallel[q].tool: is required"]
    );
}

#[test]
fn for_each_needs_items_a_variable_name_and_a_body() {
    assert_eq!(
        problems("  steps:\n    - id: each\n      forEach:\n        as: \"1x\"\n"),
        [
            "spec.steps[each].forEach.items: is required: a template that resolves to a list",
            "spec.steps[each].forEach.as: \"1x\" must match ^[a-zA-Z_][a-zA-Z0-9_]*$",
            "spec.steps[each].forEach.steps: must have at least one step",
        ]
    );
    assert_eq!(
        problems(
            "  steps:\n    - id: each\n      forEach:\n        items: clusters\n        steps: [{id: a, tool: t}]\n"
        ),
        ["spec.steps[each].forEach.items: \"clusters\" must be a template ({{ … }}) that resolves to a list"]
    );
}

#[test]
fn from_step_must_name_a_step_that_ran_before() {
    let condition =
        |target: &str| format!("      condition:\n        fromStep: {target}\n        expect: {{success: true}}\n");
    assert_eq!(
        problems(&format!("  steps:\n    - id: a\n      tool: t\n{}", condition("nope"))),
        ["spec.steps[a].condition.fromStep: \"nope\" is not a step of this workflow"]
    );
    assert_eq!(
        problems(&format!("  steps:\n    - id: a\n      tool: t\n{}    - id: b\n      tool: t\n", condition("b"))),
        [
            "spec.steps[a].condition.fromStep: \"b\" runs after step \"a\"; fromStep must name a step that runs before it"
        ]
    );
    assert_eq!(
        problems(&format!("  steps:\n    - id: a\n      tool: t\n{}", condition("a"))),
        ["spec.steps[a].condition.fromStep: \"a\" is part of a cycle through fromStep: a → a"]
    );
    assert_eq!(
        problems(&format!(
            "  steps:\n    - id: a\n      tool: t\n{}    - id: b\n      tool: t\n{}",
            condition("b"),
            condition("a")
        )),
        ["spec.steps[a].condition.fromStep: \"b\" is part of a cycle through fromStep: a → b → a"]
    );
    // Parallel siblings see a snapshot taken before the group; onFailure sees every step.
    assert_eq!(
        problems(
            "  steps:\n    - id: g\n      parallel:\n        - {id: p1, tool: t}\n        - {id: p2, tool: t, condition: {fromStep: p1, expect: {success: true}}}\n  onFailure:\n    - {id: undo, tool: t, condition: {fromStep: p2, expectNot: {success: true}}}\n"
        ),
        [
            "spec.steps[g].parallel[p2].condition.fromStep: \"p1\" is a sibling in the same parallel group; siblings cannot see each other's results"
        ]
    );
}

#[test]
fn a_condition_has_one_kind_and_an_expectation() {
    assert_eq!(
        problems(
            "  steps:\n    - id: a\n      tool: t\n      condition: {tool: c}\n    - id: b\n      tool: t\n      condition: {template: \"{{ true }}\", fromStep: a}\n    - id: c\n      tool: t\n      condition: {}\n"
        ),
        [
            "spec.steps[a].condition: a tool or fromStep condition needs expect or expectNot",
            "spec.steps[b].condition: needs exactly one of template, tool or fromStep; it has template and fromStep",
            "spec.steps[c].condition: needs exactly one of template, tool or fromStep; it has none",
            "spec.steps[c].condition: a tool or fromStep condition needs expect or expectNot",
        ]
    );
}

#[test]
fn argument_definitions_are_checked() {
    assert_eq!(
        problems(
            "  args:\n    a: {type: text}\n    b: {type: string, required: true, default: x}\n    c: {required: false}\n  steps: [{id: s, tool: t}]\n"
        ),
        [
            "spec.args.a.type: \"text\" is not a known type (string, integer, boolean, number, object, array)",
            "spec.args.b.default: a required argument cannot have a default",
            "spec.args.c.type: is required (string, integer, boolean, number, object, array)",
        ]
    );
}

#[test]
fn templates_that_do_not_parse_are_named_by_field() {
    let found = problems(
        "  steps:\n    - id: deploy\n      tool: t\n      args:\n        namespace: \"{{ .input.ns \"\n        nested: {list: [\"ok\", \"{{ if .x }}\"]}\n      condition:\n        template: \"{{ end }}\"\n  output:\n    result: \"{{ .results.deploy\"\n",
    );
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found[0].starts_with("spec.steps[deploy].args.namespace: template: "), "{found:?}");
    assert!(found[0].contains("unclosed action"), "{found:?}");
    assert!(found[1].starts_with("spec.steps[deploy].args.nested.list[1]: template: "), "{found:?}");
    assert!(found[2].starts_with("spec.steps[deploy].condition.template: template: "), "{found:?}");
    assert!(found[3].starts_with("spec.output.result: template: "), "{found:?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "apiVersion: v1\nkind: Workflow\nmetadata: {name: Bad_Name}\nspec:\n  steps:\n    - id: a\n    - id: a\n      tool: t\n";
    let status = definition(text).status;
    assert!(!status.valid);
    assert_eq!(status.validation_errors.len(), 4, "{:?}", status.validation_errors);
    assert_eq!(status.step_count, 2);
    assert_eq!(status.referenced_tools, ["t"]);
}

#[test]
fn a_file_that_is_not_a_workflow_is_a_parse_problem() {
    let (name, problems) = parse("apiVersion: x\nkind: Workflow\nmetadata: {name: w}\n").expect_err("no spec");
    assert_eq!(name.as_deref(), Some("w"));
    assert_eq!(problems[0].field, "yaml");
    assert!(problems[0].message.contains("spec"), "{problems:?}");
}
