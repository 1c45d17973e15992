//! Unit tests of the catalog: naming, families and their fallbacks, conflicts, resolution.

use std::sync::Arc;

use rmcp::model::{Prompt, Tool};
use serde_json::{Value, json};

use super::*;
use crate::crd::Family;
use crate::routing::Error;
use crate::routing::resolve::resolve_tool;

fn tool(name: &str, description: &str, properties: Value) -> Tool {
    let schema = json!({"type": "object", "properties": properties});
    Tool::new(name.to_owned(), description.to_owned(), Arc::new(serde_json::from_value(schema).expect("object")))
}

fn server(name: &str, family: Option<(&str, &str)>, tools: Vec<Tool>) -> ServerCapabilities {
    ServerCapabilities {
        name: name.to_owned(),
        family: family.map(|(name, arg)| Family { name: name.to_owned(), instance_arg: arg.to_owned() }),
        tools: Arc::new(tools),
        ..ServerCapabilities::default()
    }
}

fn names(catalog: &Catalog) -> Vec<&str> {
    catalog.tools.iter().map(|t| t.name.as_ref()).collect()
}

fn k8s(cluster: &str, tools: &[&str]) -> ServerCapabilities {
    server(
        &format!("{cluster}-mcp-kubernetes"),
        Some(("kubernetes", "management_cluster")),
        tools.iter().map(|t| tool(t, &format!("{t} things"), json!({"namespace": {"type": "string"}}))).collect(),
    )
}

#[test]
fn exposed_names_follow_muster() {
    assert_eq!(exposed_name("x", "github", "list_issues"), "x_github_list_issues");
    // Never a doubled prefix.
    assert_eq!(exposed_name("x", "kubernetes", "kubernetes_list"), "x_kubernetes_list");
    assert_eq!(exposed_name("x", "kubernetes", "x_kubernetes_list"), "x_kubernetes_list");
    // Empty parts drop their separator.
    assert_eq!(exposed_name("", "github", "list"), "github_list");
    assert_eq!(exposed_name("x", "", "list"), "x_list");
    assert_eq!(exposed_name("", "", "test_simple_text"), "test_simple_text");
}

#[test]
fn tool_prefix_defaults_to_the_server_name_and_can_be_empty() {
    let mut a = server("alpha", None, vec![tool("echo", "e", json!({}))]);
    let catalog = build("x", std::slice::from_ref(&a));
    assert_eq!(names(&catalog), ["x_alpha_echo"]);
    a.tool_prefix = Some("gh".into());
    assert_eq!(names(&build("x", std::slice::from_ref(&a))), ["x_gh_echo"]);
    a.tool_prefix = Some(String::new());
    assert_eq!(names(&build("", &[a])), ["echo"]);
}

#[test]
fn family_collapses_members_into_one_tool_with_a_required_instance_enum() {
    let catalog = build("x", &[k8s("cluster-b", &["pods_list"]), k8s("cluster-a", &["pods_list"])]);
    assert_eq!(names(&catalog), ["x_kubernetes_pods_list"]);
    let tool = &catalog.tools[0];
    assert_eq!(
        tool.description.as_deref(),
        Some("pods_list things (available on servers: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes)")
    );
    let schema = Value::Object((*tool.input_schema).clone());
    assert_eq!(
        schema["properties"]["management_cluster"],
        json!({
            "type": "string",
            "enum": ["cluster-a-mcp-kubernetes", "cluster-b-mcp-kubernetes"],
            "description": "Target instance to execute this tool on. Available: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes",
        })
    );
    assert_eq!(schema["required"], json!(["management_cluster"]));
    // The member's own schema was copied, not changed.
    assert!(schema["properties"]["namespace"].is_object());
}

#[test]
fn a_single_member_family_still_requires_the_instance() {
    let catalog = build("x", &[k8s("cluster-a", &["pods_list"])]);
    let schema = Value::Object((*catalog.tools[0].input_schema).clone());
    assert_eq!(schema["properties"]["management_cluster"]["enum"], json!(["cluster-a-mcp-kubernetes"]));
    assert_eq!(schema["required"], json!(["management_cluster"]));
}

#[test]
fn disjoint_tool_sets_list_only_the_members_that_have_each_tool() {
    let catalog = build("x", &[k8s("cluster-a", &["pods_list", "helm_list"]), k8s("cluster-b", &["pods_list"])]);
    assert_eq!(names(&catalog), ["x_kubernetes_helm_list", "x_kubernetes_pods_list"]);
    let schema = Value::Object((*catalog.tools[0].input_schema).clone());
    assert_eq!(schema["properties"]["management_cluster"]["enum"], json!(["cluster-a-mcp-kubernetes"]));
}

#[test]
fn fallback_when_members_disagree_on_instance_arg() {
    let a = k8s("cluster-a", &["pods_list"]);
    let mut b = k8s("cluster-b", &["pods_list"]);
    b.family = Some(Family { name: "kubernetes".into(), instance_arg: "cluster".into() });
    let catalog = build("x", &[a, b]);
    assert_eq!(names(&catalog), ["x_cluster-a-mcp-kubernetes_pods_list", "x_cluster-b-mcp-kubernetes_pods_list"]);
    assert!(catalog.warnings[0].contains("disagree on instanceArg"), "{:?}", catalog.warnings);
}

#[test]
fn fallback_per_tool_when_descriptions_differ() {
    let a = k8s("cluster-a", &["pods_list", "logs"]);
    let mut b = k8s("cluster-b", &["pods_list", "logs"]);
    Arc::make_mut(&mut b.tools)[1].description = Some("a different text".into());
    let catalog = build("x", &[a, b]);
    assert_eq!(
        names(&catalog),
        ["x_cluster-a-mcp-kubernetes_logs", "x_cluster-b-mcp-kubernetes_logs", "x_kubernetes_pods_list"]
    );
    assert!(catalog.warnings[0].contains("tool logs falls back"), "{:?}", catalog.warnings);
}

#[test]
fn fallback_per_tool_when_the_instance_arg_collides_with_a_property() {
    let a = server(
        "cluster-a-mcp-kubernetes",
        Some(("kubernetes", "management_cluster")),
        vec![tool("pods_list", "p", json!({"management_cluster": {"type": "string"}})), tool("logs", "l", json!({}))],
    );
    let catalog = build("x", &[a]);
    assert_eq!(names(&catalog), ["x_cluster-a-mcp-kubernetes_pods_list", "x_kubernetes_logs"]);
}

#[test]
fn duplicate_exposed_names_are_kept_once_and_reported() {
    let a = server("a", None, vec![tool("kubernetes_get", "alias", json!({}))]);
    let mut b = server("b", None, vec![tool("get", "real", json!({}))]);
    let mut a2 = a.clone();
    a2.tool_prefix = Some("kubernetes".into());
    b.tool_prefix = Some("kubernetes".into());
    let catalog = build("x", &[a2, b]);
    assert_eq!(names(&catalog), ["x_kubernetes_get"]);
    assert_eq!(catalog.conflicts.len(), 1, "{:?}", catalog.conflicts);
    assert!(catalog.conflicts[0].contains("x_kubernetes_get"));
}

#[test]
fn resolve_strips_the_instance_and_accepts_full_or_bare_names() {
    let catalog = build("x", &[k8s("cluster-a", &["pods_list"]), k8s("cluster-b", &["pods_list"])]);
    let args = |v: Value| serde_json::from_value(v).ok();
    let full = resolve_tool(
        &catalog,
        "x_kubernetes_pods_list",
        args(json!({"management_cluster": "cluster-b-mcp-kubernetes", "namespace": "n"})),
    )
    .expect("full name");
    assert_eq!(full.server, "cluster-b-mcp-kubernetes");
    assert_eq!(full.tool, "pods_list");
    assert_eq!(full.arguments, args(json!({"namespace": "n"})));
    let bare = resolve_tool(&catalog, "x_kubernetes_pods_list", args(json!({"management_cluster": "cluster-a"})))
        .expect("bare");
    assert_eq!(bare.server, "cluster-a-mcp-kubernetes");
}

#[test]
fn resolve_errors_use_musters_strings_plus_hints() {
    let catalog = build("x", &[k8s("cluster-a", &["pods_list"]), k8s("cluster-b", &["pods_list"])]);
    let missing = resolve_tool(&catalog, "x_kubernetes_pods_list", None).expect_err("missing");
    assert_eq!(
        missing.to_string(),
        "tool x_kubernetes_pods_list is provided by a family on servers cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes; the \"management_cluster\" parameter is required"
    );
    let args = serde_json::from_value(json!({"management_cluster": "cluster-bb-mcp-kubernetes"})).ok();
    let unknown = resolve_tool(&catalog, "x_kubernetes_pods_list", args).expect_err("unknown");
    assert_eq!(
        unknown.to_string(),
        "tool x_kubernetes_pods_list is not available on server \"cluster-bb-mcp-kubernetes\" (available: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes). Did you mean \"cluster-b-mcp-kubernetes\"?"
    );
    assert!(matches!(unknown, Error::InstanceUnknown { ref valid, .. } if valid.servers.len() == 2));
    let not_found = resolve_tool(&catalog, "x_kubernetes_pod_list", None).expect_err("typo");
    assert_eq!(not_found.to_string(), "tool not found: x_kubernetes_pod_list. Did you mean: x_kubernetes_pods_list?");
}

#[test]
fn ambiguous_bare_names_are_rejected() {
    let catalog = build("x", &[k8s("cluster-a", &["pods_list"]), k8s("cluster-a-mcp", &["pods_list"])]);
    let args = serde_json::from_value(json!({"management_cluster": "cluster-a"})).ok();
    assert!(matches!(resolve_tool(&catalog, "x_kubernetes_pods_list", args), Err(Error::InstanceUnknown { .. })));
}

#[test]
fn resources_with_a_scheme_pass_through_and_templates_route_by_prefix() {
    let mut a = server("a", None, Vec::new());
    a.resources = Arc::new(vec![
        rmcp::model::Resource::new("test://static-text", "static"),
        rmcp::model::Resource::new("notes", "n"),
    ]);
    a.resource_templates = Arc::new(vec![rmcp::model::ResourceTemplate::new("test://template/{id}/data", "t")]);
    let catalog = build("x", &[a]);
    let uris: Vec<&str> = catalog.resources.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(uris, ["test://static-text", "x_a_notes"]);
    assert_eq!(catalog.resource_target("x_a_notes"), Some(RouteTarget { server: "a".into(), name: "notes".into() }));
    assert_eq!(
        catalog.resource_target("test://template/7/data"),
        Some(RouteTarget { server: "a".into(), name: "test://template/7/data".into() })
    );
    assert_eq!(catalog.resource_target("other://x"), None);
}

#[test]
fn an_unlisted_family_member_is_still_a_valid_instance() {
    let mut b = k8s("cluster-b", &[]);
    b.tools = Arc::new(Vec::new());
    let catalog = build("x", &[k8s("cluster-a", &["pods_list"]), b]);
    let args = serde_json::from_value(json!({"management_cluster": "cluster-b"})).ok();
    let resolved = resolve_tool(&catalog, "x_kubernetes_pods_list", args).expect("routes to the unlisted member");
    assert_eq!((resolved.server.as_str(), resolved.tool.as_str()), ("cluster-b-mcp-kubernetes", "pods_list"));
    let args = serde_json::from_value(json!({"management_cluster": "cluster-z"})).ok();
    assert!(matches!(resolve_tool(&catalog, "x_kubernetes_pods_list", args), Err(Error::InstanceUnknown { .. })));
}

#[test]
fn a_members_cluster_is_its_name_without_the_familys_shared_suffix() {
    let fleet = build("x", &[k8s("cluster-a", &["pods"]), k8s("cluster-b", &["pods"]), k8s("prod-eu-1", &["pods"])]);
    assert_eq!(fleet.cluster_of("cluster-b-mcp-kubernetes").as_deref(), Some("cluster-b"));
    assert_eq!(fleet.cluster_of("prod-eu-1-mcp-kubernetes").as_deref(), Some("prod-eu-1"));
    // Members sharing more than the suffix keep their own part.
    let two = build("x", &[k8s("cluster-a", &["pods"]), k8s("cluster-b", &["pods"])]);
    assert_eq!(two.cluster_of("cluster-a-mcp-kubernetes").as_deref(), Some("cluster-a"));
    let alone = build("x", &[k8s("only", &["pods"])]);
    assert_eq!(alone.cluster_of("only-mcp-kubernetes").as_deref(), Some("only"));
    let plain = build("x", &[server("github", None, vec![tool("issues", "issues", json!({}))])]);
    assert_eq!(plain.cluster_of("github"), None);
}

fn prompt(name: &str, description: &str, arguments: &[&str]) -> Prompt {
    Prompt::new(name, Some(description), Some(arguments.iter().map(|a| rmcp::model::PromptArgument::new(*a)).collect()))
}

fn with_prompts(mut server: ServerCapabilities, prompts: Vec<Prompt>) -> ServerCapabilities {
    server.prompts = Arc::new(prompts);
    server
}

fn prompt_names(catalog: &Catalog) -> Vec<&str> {
    catalog.prompts.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn a_familys_prompts_collapse_into_one_with_a_required_instance_argument() {
    let check = || prompt("cluster-health-check", "Checks a cluster", &["namespace"]);
    let catalog = build(
        "x",
        &[
            with_prompts(k8s("cluster-a", &[]), vec![check()]),
            with_prompts(k8s("cluster-b", &[]), vec![check()]),
            with_prompts(k8s("cluster-c", &[]), vec![check()]),
            with_prompts(server("github", None, Vec::new()), vec![prompt("triage", "t", &[])]),
        ],
    );
    assert_eq!(prompt_names(&catalog), ["x_github_triage", "x_kubernetes_cluster-health-check"]);
    let collapsed = &catalog.prompts[1];
    assert_eq!(collapsed.description.as_deref(), Some("Checks a cluster"));
    let arguments = collapsed.arguments.as_deref().unwrap_or_default();
    let names: Vec<&str> = arguments.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["namespace", "management_cluster"]);
    assert_eq!(arguments[1].required, Some(true));
    assert!(
        arguments[1]
            .description
            .as_deref()
            .is_some_and(|d| d
                .ends_with("Available: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes, cluster-c-mcp-kubernetes")),
        "{:?}",
        arguments[1].description
    );
    assert!(matches!(
        catalog.prompt_routes.get("x_kubernetes_cluster-health-check"),
        Some(ToolRoute::Family { members, .. }) if members.len() == 3
    ));
    assert!(catalog.conflicts.is_empty(), "{:?}", catalog.conflicts);
}

#[test]
fn a_family_prompt_falls_back_per_server_like_a_tool() {
    let catalog = build(
        "x",
        &[
            with_prompts(k8s("cluster-a", &[]), vec![prompt("check", "one text", &[]), prompt("same", "s", &[])]),
            with_prompts(k8s("cluster-b", &[]), vec![prompt("check", "another text", &[]), prompt("same", "s", &[])]),
            with_prompts(k8s("cluster-c", &[]), vec![prompt("own", "o", &["management_cluster"])]),
        ],
    );
    assert_eq!(
        prompt_names(&catalog),
        [
            "x_cluster-a-mcp-kubernetes_check",
            "x_cluster-b-mcp-kubernetes_check",
            "x_cluster-c-mcp-kubernetes_own",
            "x_kubernetes_same"
        ]
    );
    assert!(catalog.warnings.iter().any(|w| w.contains("prompt check falls back")), "{:?}", catalog.warnings);
    assert!(catalog.warnings.iter().any(|w| w.contains("prompt own falls back")), "{:?}", catalog.warnings);
}

#[test]
fn a_template_several_members_share_is_listed_once_and_says_where_reads_go() {
    let pods = || rmcp::model::ResourceTemplate::new("k8s://{namespace}/pods", "pods");
    let mut a = k8s("cluster-a", &[]);
    a.resource_templates = Arc::new(vec![pods()]);
    let mut b = k8s("cluster-b", &[]);
    b.resource_templates = Arc::new(vec![pods()]);
    let mut c = b.clone();
    c.name = "cluster-c-mcp-kubernetes".into();
    let catalog = build("x", &[c, b, a]);
    assert_eq!(catalog.resource_templates.len(), 1);
    assert_eq!(
        catalog.resource_templates[0].description.as_deref(),
        Some("(reads go to cluster-a-mcp-kubernetes; other servers offer it too)")
    );
    assert_eq!(
        catalog.resource_target("k8s://default/pods").map(|t| t.server).as_deref(),
        Some("cluster-a-mcp-kubernetes")
    );
}

#[test]
fn a_family_suffix_splits_back_into_text_and_servers() {
    let servers = vec!["cluster-a-mcp-kubernetes".to_owned(), "cluster-b-mcp-kubernetes".to_owned()];
    let description = format!("Lists pods {}", family_suffix(&servers));
    let (text, listed) = split_family_suffix(&description);
    assert_eq!((text, listed.as_deref()), ("Lists pods", Some(servers.as_slice())));
    assert_eq!(cluster_names(&servers), ["cluster-a", "cluster-b"]);
    assert_eq!(cluster_names(&["only-mcp-kubernetes".to_owned()]), ["only"]);
    assert_eq!(split_family_suffix("Plain text (with a note)"), ("Plain text (with a note)", None));
}
