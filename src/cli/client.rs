//! The CLI as an MCP client of the gateway: `muster list tools` and `muster call`.

use std::path::Path;

use anyhow::{Context as _, bail};
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;

use super::output::{Format, render};
use super::tokens;

/// Why connecting failed, so commands can pick their exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("muster at {0} requires sign-in: run `muster auth login`")]
    AuthRequired(String),
    #[error("muster at {endpoint} refused the stored token: run `muster auth login` again")]
    AuthFailed { endpoint: String },
    #[error("cannot reach muster at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
}

pub(crate) async fn connect(endpoint: &str, config_dir: &Path) -> Result<RunningService<RoleClient, ()>, ConnectError> {
    let stored = tokens::load(config_dir, endpoint);
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint.to_owned());
    if let Some(token) = &stored {
        config = config.auth_header(token.id_token.clone());
    }
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| ConnectError::Unreachable { endpoint: endpoint.to_owned(), reason: e.to_string() })?;
    let transport = StreamableHttpClientTransport::with_client(http, config);
    match rmcp::ServiceExt::serve((), transport).await {
        Ok(service) => Ok(service),
        Err(e) if e.is_authorization_required() && stored.is_some() => {
            Err(ConnectError::AuthFailed { endpoint: endpoint.to_owned() })
        }
        Err(e) if e.is_authorization_required() => Err(ConnectError::AuthRequired(endpoint.to_owned())),
        Err(e) => Err(ConnectError::Unreachable { endpoint: endpoint.to_owned(), reason: e.to_string() }),
    }
}

/// The exit code for a connection failure (reference §4.7: 2 auth required, 3 auth failed).
pub(crate) fn exit_code(error: &ConnectError) -> i32 {
    match error {
        ConnectError::AuthRequired(_) => 2,
        ConnectError::AuthFailed { .. } => 3,
        ConnectError::Unreachable { .. } => 1,
    }
}

#[allow(clippy::print_stdout, reason = "the CLI's output")]
pub(crate) async fn list_tools(endpoint: &str, config_dir: &Path) -> anyhow::Result<i32> {
    let service = match connect(endpoint, config_dir).await {
        Ok(service) => service,
        Err(e) => return fail(&e),
    };
    let tools = service.peer().list_all_tools().await.context("tools/list")?;
    let meta = tools.iter().any(|t| t.name == "list_tools") && tools.iter().any(|t| t.name == "call_tool");
    if meta {
        // Meta exposure: page through the real catalog.
        let mut offset = 0;
        loop {
            let page = call(&service, "list_tools", serde_json::json!({"offset": offset, "limit": 200})).await?;
            let body: Value = page.structured_content.clone().unwrap_or_default();
            for tool in body["tools"].as_array().into_iter().flatten() {
                println!(
                    "{:<50} {}",
                    tool["name"].as_str().unwrap_or_default(),
                    tool["summary"].as_str().unwrap_or_default()
                );
            }
            match body["next_offset"].as_u64() {
                Some(next) => offset = next,
                None => break,
            }
        }
    } else {
        for tool in tools {
            println!("{:<50} {}", tool.name, summary(tool.description.as_deref().unwrap_or_default()));
        }
    }
    let _ = service.cancel().await;
    Ok(0)
}

/// A tool's summary from its description alone (direct exposure), as `list_tools` makes it:
/// a family's servers shown whole as bare cluster names.
fn summary(description: &str) -> String {
    let (text, servers) = crate::routing::catalog::split_family_suffix(description);
    let clusters = servers.map(|s| crate::routing::catalog::cluster_names(&s)).unwrap_or_default();
    crate::mcp::meta::summarize(text, &clusters)
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the CLI's output")]
pub(super) async fn call_tool(
    endpoint: &str,
    config_dir: &Path,
    tool: &str,
    args: &[String],
    format: Format,
) -> anyhow::Result<i32> {
    let arguments = parse_arguments(args)?;
    let service = match connect(endpoint, config_dir).await {
        Ok(service) => service,
        Err(e) => return fail(&e),
    };
    let result = call(&service, tool, Value::Object(arguments)).await;
    let _ = service.cancel().await;
    let result = result?;
    let text: Vec<String> = result
        .content
        .iter()
        .map(|c| c.as_text().map_or_else(|| serde_json::to_string(c).unwrap_or_default(), |t| t.text.clone()))
        .collect();
    let body = result.structured_content.clone().or_else(|| serde_json::from_str(&text.concat()).ok());
    if result.is_error == Some(true) {
        println!("{}", text.join("\n"));
        if let Some(structured) = &result.structured_content {
            eprintln!("{structured}");
        }
        return Ok(1);
    }
    match body {
        // A JSON object answer: its fields (table), or the whole of it (json, yaml).
        Some(body) if body.is_object() || !matches!(format, Format::Table | Format::Wide) => {
            println!("{}", render(&body, format, None, &[], &[]));
        }
        _ => println!("{}", text.join("\n")),
    }
    Ok(0)
}

/// The CLI's own flags among a call's arguments, where clap leaves them to the tool (after the
/// tool's name): as in Muster, `--endpoint`, `--config-path` and `-o`/`--output` are the CLI's.
#[derive(Debug, Default, PartialEq)]
pub(super) struct CallFlags {
    pub(super) endpoint: Option<String>,
    pub(super) config_path: Option<std::path::PathBuf>,
    pub(super) output: Option<Format>,
}

/// Splits `args` into the CLI's flags and the tool's arguments.
pub(super) fn split_call_flags(args: &[String]) -> anyhow::Result<(CallFlags, Vec<String>)> {
    let mut flags = CallFlags::default();
    let mut rest = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ if arg.starts_with("-o") && arg.len() > 2 && !arg.starts_with("--") => ("-o", Some(arg[2..].to_owned())),
            _ => (arg.as_str(), None),
        };
        if !matches!(name, "-o" | "--output" | "--endpoint" | "--config-path") {
            rest.push(arg.clone());
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => iter.next().cloned().with_context(|| format!("{name} needs a value"))?,
        };
        match name {
            "--endpoint" => flags.endpoint = Some(value),
            "--config-path" => flags.config_path = Some(value.into()),
            _ => {
                let format = <Format as clap::ValueEnum>::from_str(&value, true)
                    .map_err(|_| anyhow::anyhow!("-o {value}: use table, wide, json or yaml"))?;
                flags.output = Some(format);
            }
        }
    }
    Ok((flags, rest))
}

#[allow(clippy::print_stderr, reason = "the CLI's output")]
fn fail(error: &ConnectError) -> anyhow::Result<i32> {
    eprintln!("{error}");
    Ok(exit_code(error))
}

pub(crate) async fn call(
    service: &RunningService<RoleClient, ()>,
    name: &str,
    arguments: Value,
) -> anyhow::Result<CallToolResult> {
    let mut params = CallToolRequestParams::new(name.to_owned());
    params.arguments = arguments.as_object().cloned();
    service.peer().call_tool(params).await.with_context(|| format!("calling {name}"))
}

/// `--key=value` (or `--key value`) pairs and `--json '{...}'`. Values that parse as JSON
/// (numbers, booleans, objects) are passed as such; anything else is a string.
fn parse_arguments(args: &[String]) -> anyhow::Result<JsonObject> {
    let mut out = JsonObject::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--") else { bail!("unexpected argument {arg:?}: use --name=value") };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (flag.to_owned(), iter.next().cloned().with_context(|| format!("--{flag} needs a value"))?),
        };
        if key == "json" {
            let object: JsonObject = serde_json::from_str(&value).context("--json must be a JSON object")?;
            out.extend(object);
            continue;
        }
        let parsed =
            serde_json::from_str::<Value>(&value).ok().filter(|v| !v.is_string()).unwrap_or(Value::String(value));
        out.insert(key, parsed);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_exposure_summaries_show_a_familys_clusters_whole() {
        let description =
            "Lists pods\nin a namespace (available on servers: cluster-a-mcp-kubernetes, cluster-b-mcp-kubernetes)";
        assert_eq!(summary(description), "Lists pods (clusters: cluster-a, cluster-b)");
        assert_eq!(summary("Echoes text"), "Echoes text");
    }

    #[test]
    fn parses_flags_into_typed_arguments() {
        let args: Vec<String> =
            ["--management_cluster=cluster-b", "--limit", "5", "--verbose=true", "--json", r#"{"ns":"x"}"#]
                .map(str::to_owned)
                .into();
        let parsed = parse_arguments(&args).expect("valid");
        assert_eq!(
            Value::Object(parsed),
            serde_json::json!({"management_cluster": "cluster-b", "limit": 5, "verbose": true, "ns": "x"})
        );
        assert!(parse_arguments(&["positional".to_owned()]).is_err());
    }

    #[test]
    fn the_clis_flags_are_its_own_wherever_they_stand() {
        let args: Vec<String> = ["--a=1", "-o", "json", "--endpoint", "http://h/mcp", "--b=2", "--config-path=/c"]
            .map(str::to_owned)
            .into();
        let (flags, rest) = split_call_flags(&args).expect("valid");
        assert_eq!(rest, ["--a=1", "--b=2"]);
        assert_eq!(
            flags,
            CallFlags {
                endpoint: Some("http://h/mcp".into()),
                config_path: Some("/c".into()),
                output: Some(Format::Json)
            }
        );
        let output = |args: &[&str]| split_call_flags(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(output(&["--output=yaml"]).expect("valid").0.output, Some(Format::Yaml));
        assert_eq!(output(&["-ojson"]).expect("valid").0.output, Some(Format::Json));
        let refused = output(&["-o", "xml"]).expect_err("unknown");
        assert_eq!(refused.to_string(), "-o xml: use table, wide, json or yaml");
        assert_eq!(output(&["--endpoint"]).expect_err("no value").to_string(), "--endpoint needs a value");
    }
}
