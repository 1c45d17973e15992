//! Unit tests of resolution: instance matching, valid values and "Did you mean".

use std::sync::Arc;

use rmcp::model::{Prompt, PromptArgument, Tool};
use serde_json::{Value, json};

use super::*;
use crate::backend::ServerCapabilities;
use crate::crd::Family;
use crate::routing::catalog::build;

fn k8s(cluster: &str) -> ServerCapabilities {
    let schema = json!({"type": "object", "properties": {"namespace": {"type": "string"}}});
    let tool = Tool::new("pods_list", "Lists pods", Arc::new(serde_json::from_value(schema).expect("object")));
    let prompt = Prompt::new("health", Some("Checks health"), Some(vec![PromptArgument::new("namespace")]));
    ServerCapabilities {
        name: format!("{cluster}-mcp-kubernetes"),
        family: Some(Family { name: "kubernetes".into(), instance_arg: "management_cluster".into() }),
        tools: Arc::new(vec![tool]),
        prompts: Arc::new(vec![prompt]),
        ..ServerCapabilities::default()
    }
}

fn fleet() -> Catalog {
    build("x", &[k8s("cluster-a"), k8s("cluster-b"), k8s("cluster-c")])
}

fn unknown(value: &str) -> Error {
    let args = serde_json::from_value(json!({"management_cluster": value})).ok();
    resolve_tool(&fleet(), "x_kubernetes_pods_list", args).expect_err("an unknown instance")
}

fn closest_of(error: &Error) -> Option<&str> {
    match error {
        Error::InstanceUnknown { closest, .. } => closest.as_deref(),
        other => panic!("not an unknown instance: {other}"),
    }
}

#[test]
fn did_you_mean_only_when_one_member_is_clearly_meant() {
    assert_eq!(closest_of(&unknown("cluster-bb")), Some("cluster-b"));
    assert_eq!(closest_of(&unknown("clster-b")), Some("cluster-b"));
    assert_eq!(closest_of(&unknown("Cluster-C")), Some("cluster-c"));
    assert_eq!(closest_of(&unknown("cluster-b-mcp-kubernets")), Some("cluster-b-mcp-kubernetes"));
    // One edit from every member: none is meant more than another.
    assert_eq!(closest_of(&unknown("cluster-z")), None);
    // Far from everything.
    assert_eq!(closest_of(&unknown("prod-eu-1")), None);
    assert_eq!(closest_of(&unknown("b")), None);
}

#[test]
fn the_message_keeps_musters_prefix_and_adds_the_hint_only_when_clear() {
    assert_eq!(
        unknown("cluster-z").to_string(),
        "tool x_kubernetes_pods_list is not available on server \"cluster-z\" (available: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes, cluster-c-mcp-kubernetes)"
    );
    assert!(unknown("cluster-bb").to_string().ends_with(". Did you mean \"cluster-b\"?"));
}

#[test]
fn valid_values_carry_full_and_bare_names() {
    let Error::InstanceUnknown { valid, .. } = unknown("cluster-z") else { panic!("an unknown instance") };
    assert_eq!(valid.servers, ["cluster-a-mcp-kubernetes", "cluster-b-mcp-kubernetes", "cluster-c-mcp-kubernetes"]);
    assert_eq!(valid.clusters, ["cluster-a", "cluster-b", "cluster-c"]);
    let missing = resolve_tool(&fleet(), "x_kubernetes_pods_list", None).expect_err("missing");
    assert!(matches!(missing, Error::InstanceMissing { ref valid, .. } if valid.clusters.len() == 3));
    // Every bare name listed is accepted.
    for bare in &valid.clusters {
        let args = serde_json::from_value(json!({"management_cluster": bare})).ok();
        let resolved = resolve_tool(&fleet(), "x_kubernetes_pods_list", args).expect("a listed value routes");
        assert_eq!(resolved.server, format!("{bare}-mcp-kubernetes"));
    }
}

#[test]
fn ambiguous_bare_names_are_not_offered() {
    let catalog = build("x", &[k8s("cluster-a"), k8s("cluster-a-eu")]);
    let Some(ToolRoute::Family { members, .. }) = catalog.tool_routes.get("x_kubernetes_pods_list") else {
        panic!("a family tool");
    };
    let valid = instance_values(&catalog, members);
    assert_eq!(valid.servers, ["cluster-a-eu-mcp-kubernetes", "cluster-a-mcp-kubernetes"]);
    // `cluster-a` is a prefix of both, so only `cluster-a-eu` is accepted bare.
    assert_eq!(valid.clusters, ["cluster-a-eu"]);
}

#[test]
fn a_family_prompt_resolves_its_instance_and_forwards_the_rest() {
    let args = |v: Value| serde_json::from_value(v).ok();
    let resolved = resolve_prompt(
        &fleet(),
        "x_kubernetes_health",
        args(json!({"management_cluster": "cluster-c", "namespace": "kube-system"})),
    )
    .expect("resolves");
    assert_eq!(resolved.server, "cluster-c-mcp-kubernetes");
    assert_eq!(resolved.tool, "health");
    assert_eq!(resolved.arguments, args(json!({"namespace": "kube-system"})));
    let missing = resolve_prompt(&fleet(), "x_kubernetes_health", None).expect_err("no instance");
    assert!(missing.to_string().starts_with("prompt x_kubernetes_health is provided by a family on servers "));
    let typo = resolve_prompt(&fleet(), "x_kubernetes_helth", None).expect_err("no such prompt");
    assert_eq!(typo.to_string(), "prompt not found: x_kubernetes_helth. Did you mean: x_kubernetes_health?");
}
