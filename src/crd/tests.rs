//! Unit tests of the MCPServer resource: the seed's YAML loads unchanged, validation reports every problem.

use super::files::parse;

const SEED_KUBERNETES: &str = r#"
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata:
  name: cluster-a-mcp-kubernetes
  namespace: muster
spec:
  type: streamable-http
  url: "https://mcp-kubernetes.cluster-a.example.com/mcp"
  autoStart: true
  family:
    name: kubernetes
    instanceArg: management_cluster
  auth:
    type: oauth
    tokenExchange:
      enabled: true
      dexTokenEndpoint: "https://dex.cluster-a.example.com/token"
      connectorId: "central-dex"
      clientCredentialsSecretRef:
        name: cluster-a-token-exchange-credentials
"#;

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err((_, problems)) => problems.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn seed_resource_loads_unchanged() {
    let server = parse(SEED_KUBERNETES).expect("the seed's YAML is valid");
    assert_eq!(server.name(), "cluster-a-mcp-kubernetes");
    let family = server.spec.family.expect("family");
    assert_eq!(family.name, "kubernetes");
    assert_eq!(family.instance_arg, "management_cluster");
    let exchange = server.spec.auth.and_then(|a| a.token_exchange).expect("tokenExchange");
    assert_eq!(exchange.connector_id.as_deref(), Some("central-dex"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata: {name: Bad_Name}
spec:
  type: stdio
  args: ["a"]
  headers: {X: y}
  timeout: 0
  family: {name: "1bad", instanceArg: "has-dash"}
"#;
    let got = problems(text);
    assert_eq!(
        got,
        vec![
            "metadata.name: \"Bad_Name\" is not a valid name (lowercase letters, digits and '-', at most 63, starting and ending alphanumeric)",
            "spec.family.name: \"1bad\" must match ^[a-zA-Z][a-zA-Z0-9_-]*$",
            "spec.family.instanceArg: \"has-dash\" must match ^[a-zA-Z][a-zA-Z0-9_]*$",
            "spec.timeout: 0 is out of range 1–300 seconds",
            "spec.command: is required when type is stdio",
            "spec.headers: is only allowed for streamable-http and sse servers",
        ]
    );
}

#[test]
fn cel_rules_for_remote_servers_and_auth() {
    let text = r#"
apiVersion: muster.giantswarm.io/v1alpha1
kind: MCPServer
metadata: {name: remote}
spec:
  type: sse
  args: ["x"]
  auth:
    type: none
    forwardToken: true
    authorizationServer: {issuer: "http://issuer/"}
    tokenExchange: {enabled: true}
"#;
    let got = problems(text);
    assert_eq!(
        got,
        vec![
            "spec.url: is required when type is sse",
            "spec.args: is only allowed for stdio servers",
            "spec.auth.authorizationServer: is only valid with auth.type oauth",
            "spec.auth: forwardToken and authorizationServer are mutually exclusive",
            "spec.auth: tokenExchange.enabled and authorizationServer are mutually exclusive",
            "spec.auth.authorizationServer.issuer: \"http://issuer/\" must be an https URL without trailing slash, query or fragment",
            "spec.auth.tokenExchange.dexTokenEndpoint: is required when token exchange is enabled",
            "spec.auth.tokenExchange.connectorId: is required when token exchange is enabled",
        ]
    );
}

#[test]
fn unknown_spec_fields_and_bad_types_are_yaml_errors() {
    let got = problems(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: a}\nspec: {type: stdio, command: x, comand: y}\n",
    );
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("yaml: "), "{got:?}");
    assert!(got[0].contains("comand"), "{got:?}");
    let got = problems(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: a}\nspec: {type: ftp}\n",
    );
    assert!(got[0].contains("ftp"), "{got:?}");
}

#[test]
fn token_endpoint_must_be_https_except_loopback() {
    let base = "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata: {name: a}\nspec:\n  type: streamable-http\n  url: http://127.0.0.1:1/mcp\n  auth:\n    type: oauth\n    tokenExchange: {enabled: true, connectorId: c, dexTokenEndpoint: ";
    assert!(problems(&format!("{base}\"http://127.0.0.1:5556/token\"}}\n")).is_empty());
    assert_eq!(
        problems(&format!("{base}\"http://dex.example.com/token\"}}\n")),
        vec![
            "spec.auth.tokenExchange.dexTokenEndpoint: \"http://dex.example.com/token\" must be an https URL (http is allowed only for loopback hosts)"
        ]
    );
}

#[test]
fn a_static_authorization_header_beside_spec_auth_is_refused() {
    let text = SEED_KUBERNETES
        .replace("  autoStart: true\n", "  autoStart: true\n  headers:\n    authorization: Bearer shared\n");
    assert_eq!(problems(&text), vec!["spec.headers: must not set Authorization when spec.auth is set"]);
    let without_auth = SEED_KUBERNETES
        .split("  auth:")
        .next()
        .map(|head| {
            head.replace("  autoStart: true\n", "  autoStart: true\n  headers:\n    Authorization: Bearer shared\n")
        })
        .expect("seed");
    assert_eq!(problems(&without_auth), Vec::<String>::new(), "a static token alone is the operator's choice");
}

#[test]
fn metadata_and_link_local_urls_are_refused_and_private_ones_are_left_to_config() {
    let with_url = |url: &str| SEED_KUBERNETES.replace("https://mcp-kubernetes.cluster-a.example.com/mcp", url);
    assert_eq!(
        problems(&with_url("http://169.254.169.254/latest/meta-data/")),
        [
            "spec.url: \"http://169.254.169.254/latest/meta-data/\" is refused: 169.254.169.254 is a link-local or cloud metadata address, which muster never connects to"
        ]
    );
    assert_eq!(problems(&with_url("http://[fd00:ec2::254]/")).len(), 1);
    assert_eq!(problems(&with_url("http://100.100.100.200/")).len(), 1);
    assert_eq!(problems(&with_url("http://10.96.0.12:8080/mcp")), Vec::<String>::new());
    assert_eq!(problems(&with_url("http://127.0.0.1:8080/mcp")), Vec::<String>::new());
}
