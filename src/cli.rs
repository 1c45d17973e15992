//! The command line: `muster serve`, `muster check-config`, the client commands
//! (`auth login|status|logout`, `list tools`, `call`), which talk MCP to a running muster, and
//! `agent --mcp-server` and `standalone`, the stdio bridge for IDEs that launch a command.

mod agent;
mod auth;
mod check;
mod client;
mod follow;
mod login;
mod output;
mod resources;
mod tokens;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "muster", version = env!("MUSTER_VERSION"), about = "An MCP gateway for Kubernetes fleets")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Folder holding config.yaml, mcpservers/ and secrets/.
        #[arg(long, env = "MUSTER_CONFIG_PATH", default_value_os_t = default_config_path())]
        config_path: PathBuf,
        /// Log at debug level.
        #[arg(long)]
        debug: bool,
        /// Kubernetes mode: watch MCPServer resources (overrides `kubernetes:` in config.yaml).
        #[arg(long)]
        kubernetes: bool,
    },
    /// Validate config.yaml and every MCPServer file (or the given manifests), print every
    /// problem, and exit 1 if there is any.
    CheckConfig {
        /// A config folder (config.yaml and mcpservers/), or YAML manifests, possibly with several
        /// documents; their MCPServer documents are checked against the CRD types and rules.
        #[arg(default_values_os_t = [default_config_path()])]
        paths: Vec<PathBuf>,
    },
    /// Print a CustomResourceDefinition (YAML), generated from the Rust types: MCPServer's unless
    /// another kind is named.
    PrintCrd {
        #[arg(value_enum, default_value_t = CrdKind::Mcpserver)]
        kind: CrdKind,
    },
    /// Sign in to muster and see each server's sign-in state.
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List mcpservers, services, workflows, workflow-executions, tools, resources or prompts.
    List {
        kind: String,
        /// Also invalid definitions (mcpserver).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        verbose: bool,
        /// Only runs of this workflow (workflow-execution).
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs with this status: inprogress, completed or failed (workflow-execution).
        #[arg(long)]
        status: Option<String>,
        /// At most this many runs, newest first (workflow-execution; default 50).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one mcpserver, service, workflow, workflow-execution (by id), tool, resource (by URI) or prompt.
    Get {
        kind: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create an MCP server (admin only).
    Create {
        kind: String,
        name: String,
        #[arg(long = "type")]
        server_type: Option<String>,
        #[arg(long)]
        command: Option<String>,
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        args: Vec<String>,
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        timeout: Option<u32>,
        #[arg(long = "autoStart", alias = "auto-start")]
        auto_start: bool,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a service (admin only).
    Start {
        kind: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop a service (admin only).
    Stop {
        kind: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Restart a service (admin only).
    Restart {
        kind: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Exit 0 when the MCP server is available, 1 when not.
    Check {
        kind: String,
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Recent lifecycle events.
    Events {
        #[arg(long)]
        resource_type: Option<String>,
        #[arg(long)]
        resource_name: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        #[arg(long = "type")]
        event_type: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Keep printing new events (polling every second) until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A stdio MCP server for IDEs that launch a command: forwards to muster's `/mcp` and signs in
    /// when muster requires it (the `authenticate_muster` tool).
    Agent {
        /// Serve MCP on stdin/stdout (the only mode so far).
        #[arg(long)]
        mcp_server: bool,
        #[command(flatten)]
        sign_in: SignInArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// `serve` and `agent --mcp-server` in one process: muster for one IDE, over stdio.
    Standalone {
        /// Folder holding config.yaml, mcpservers/ and secrets/.
        #[arg(long, env = "MUSTER_CONFIG_PATH", default_value_os_t = default_config_path())]
        config_path: PathBuf,
        /// Log the server at debug level to stderr (silent otherwise).
        #[arg(long)]
        debug: bool,
        #[command(flatten)]
        sign_in: SignInArgs,
    },
    /// Call a tool: `muster call x_kubernetes_pods_list --management_cluster=cluster-a`.
    Call {
        tool: String,
        /// `--name=value` arguments (values that parse as JSON are typed) and `--json '{...}'`.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Sign in at the central identity provider (authorization code + PKCE, loopback callback).
    Login {
        #[command(flatten)]
        sign_in: SignInArgs,
    },
    /// Show the sign-in state: exit 0 signed in, 1 error, 2 sign-in required, 3 sign-in failed.
    Status,
    /// Forget the stored token.
    Logout,
}

/// How the CLI signs in (`auth login`, and the agent bridge when muster requires it).
#[derive(Debug, Args)]
struct SignInArgs {
    /// OAuth client id at the authorization server. Unset: register one (RFC 7591) when the
    /// server offers registration, else `muster` (the central IdP's client for muster).
    #[arg(long, env = "MUSTER_OAUTH_CLIENT_ID")]
    client_id: Option<String>,
    /// Local callback port (0 picks a free one).
    #[arg(long, env = "MUSTER_OAUTH_CALLBACK_PORT", default_value_t = 0)]
    callback_port: u16,
    /// Print (or return) the URL instead of opening a browser.
    #[arg(long)]
    no_browser: bool,
}

impl SignInArgs {
    fn settings(&self) -> login::Settings {
        login::Settings { client_id: self.client_id.clone(), callback_port: self.callback_port }
    }
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// muster's MCP endpoint.
    #[arg(long, env = "MUSTER_ENDPOINT", default_value = "http://127.0.0.1:8090/mcp", global = true)]
    endpoint: String,
    /// Where tokens are stored (under tokens/).
    #[arg(long, env = "MUSTER_CONFIG_PATH", default_value_os_t = default_config_path(), global = true)]
    config_path: PathBuf,
    /// Output of the resource verbs.
    #[arg(short = 'o', long, value_enum, default_value_t = output::Format::Table, global = true)]
    output: output::Format,
}

/// The kinds `print-crd` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrdKind {
    #[value(alias = "MCPServer", alias = "mcpservers")]
    Mcpserver,
    #[value(alias = "Workflow", alias = "workflows", alias = "wf")]
    Workflow,
    #[value(alias = "WorkflowExecution", alias = "workflow-executions", alias = "wfe")]
    WorkflowExecution,
}

fn default_config_path() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".config/muster")
}

/// Exit code of `check-config` when something is invalid.
pub const EXIT_INVALID: i32 = 1;

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve { config_path, debug, kubernetes } => {
            let _telemetry = crate::telemetry::init(debug);
            let served = async {
                let mut config = Config::load(&config_path).context("loading config.yaml")?;
                if kubernetes && config.kubernetes.is_none() {
                    config.kubernetes = Some(crate::config::Kubernetes { namespaces: vec!["default".to_owned()] });
                }
                crate::app::run(config).await
            }
            .await;
            // Logged while the log writer still runs (main prints it to stderr too).
            if let Err(e) = &served {
                tracing::error!("{e:#}");
            }
            served.map(|()| 0)
        }
        Command::CheckConfig { paths } => {
            let mut code = 0;
            for path in paths {
                let result = if path.is_dir() { check::config(&path) } else { check::manifests(&path) };
                code = code.max(result);
            }
            Ok(code)
        }
        Command::PrintCrd { kind } => {
            let yaml = match kind {
                CrdKind::Mcpserver => crate::crd::crd_yaml(),
                CrdKind::Workflow => crate::crd::workflow::crd_yaml(),
                CrdKind::WorkflowExecution => crate::crd::execution::crd_yaml(),
            };
            #[allow(clippy::print_stdout, reason = "the command's output")]
            {
                print!("{yaml}");
            }
            Ok(0)
        }
        Command::Auth { command, client } => {
            auth::check_endpoint(&client.endpoint)?;
            match command {
                AuthCommand::Login { sign_in } => {
                    let options =
                        auth::LoginOptions { settings: sign_in.settings(), open_browser: !sign_in.no_browser };
                    auth::login(&client.endpoint, &client.config_path, options).await
                }
                AuthCommand::Status => auth::status(&client.endpoint, &client.config_path).await,
                AuthCommand::Logout => Ok(auth::logout(&client.endpoint, &client.config_path)),
            }
        }
        Command::Agent { mcp_server, sign_in, client } => {
            if !mcp_server {
                anyhow::bail!("only `muster agent --mcp-server` (the stdio bridge) is implemented");
            }
            auth::check_endpoint(&client.endpoint)?;
            let _telemetry = crate::telemetry::init(false);
            let options = agent::Options {
                endpoint: client.endpoint,
                config_dir: client.config_path,
                settings: sign_in.settings(),
                open_browser: !sign_in.no_browser,
            };
            agent::run(options).await
        }
        Command::Standalone { config_path, debug, sign_in } => standalone(config_path, debug, &sign_in).await,
        Command::List { kind, all, verbose, workflow, status, limit, client } => {
            let kind = resources::Kind::parse(&kind)?;
            if kind == resources::Kind::Tool && client.output == output::Format::Table {
                return client::list_tools(&client.endpoint, &client.config_path).await;
            }
            let flags = resources::ListFlags { all, verbose, workflow, status, limit };
            resources::run(&client.endpoint, &client.config_path, resources::list(kind, flags), client.output).await
        }
        Command::Get { kind, name, client } => {
            let request = resources::get(resources::Kind::parse(&kind)?, &name);
            resources::run(&client.endpoint, &client.config_path, request, client.output).await
        }
        Command::Create { kind, name, server_type, command, args, url, timeout, auto_start, description, client } => {
            if resources::Kind::parse(&kind)? != resources::Kind::McpServer {
                anyhow::bail!("muster create supports mcpserver only");
            }
            let mut flags = serde_json::Map::new();
            let mut set = |key: &str, value: Option<serde_json::Value>| {
                if let Some(value) = value {
                    flags.insert(key.to_owned(), value);
                }
            };
            set("type", server_type.map(Into::into));
            set("command", command.map(Into::into));
            set("args", (!args.is_empty()).then(|| args.into()));
            set("url", url.map(Into::into));
            set("timeout", timeout.map(Into::into));
            set("autoStart", Some(auto_start.into()));
            set("description", description.map(Into::into));
            let request = resources::create_mcpserver(&name, flags);
            resources::run(&client.endpoint, &client.config_path, request, client.output).await
        }
        Command::Start { kind, name, client } => service_verb("start", &kind, &name, &client).await,
        Command::Stop { kind, name, client } => service_verb("stop", &kind, &name, &client).await,
        Command::Restart { kind, name, client } => service_verb("restart", &kind, &name, &client).await,
        Command::Check { kind, name, client } => {
            let kind = resources::Kind::parse(&kind)?;
            if !matches!(kind, resources::Kind::McpServer | resources::Kind::Service | resources::Kind::Workflow) {
                anyhow::bail!("muster check supports mcpserver, service and workflow");
            }
            resources::check(&client.endpoint, &client.config_path, kind, &name).await
        }
        Command::Events {
            resource_type,
            resource_name,
            namespace,
            event_type,
            since,
            until,
            limit,
            follow,
            client,
        } => {
            let mut filters = serde_json::Map::new();
            for (key, value) in [
                ("resourceType", resource_type),
                ("resourceName", resource_name),
                ("namespace", namespace),
                ("eventType", event_type),
                ("since", since),
                ("until", until),
            ] {
                if let Some(value) = value {
                    filters.insert(key.to_owned(), value.into());
                }
            }
            filters.insert("limit".to_owned(), limit.into());
            if follow {
                return follow::follow(&client.endpoint, &client.config_path, filters, client.output).await;
            }
            resources::run(&client.endpoint, &client.config_path, resources::events(filters), client.output).await
        }
        Command::Call { tool, args, client } => {
            let (flags, args) = client::split_call_flags(&args)?;
            let endpoint = flags.endpoint.unwrap_or(client.endpoint);
            let config_path = flags.config_path.unwrap_or(client.config_path);
            client::call_tool(&endpoint, &config_path, &tool, &args, flags.output.unwrap_or(client.output)).await
        }
    }
}

/// `serve` and the bridge in one process. The bridge reaches the server over loopback HTTP, as
/// any agent does, so sign-in, sessions and notifications work as they do between two processes.
/// The server logs nothing unless `--debug` (stdout carries the bridge's JSON-RPC only). When the
/// agent closes stdin, the process ends.
/// `muster start|stop|restart service <name>`.
async fn service_verb(verb: &'static str, kind: &str, name: &str, client: &ClientArgs) -> anyhow::Result<i32> {
    if !matches!(resources::Kind::parse(kind)?, resources::Kind::Service | resources::Kind::McpServer) {
        anyhow::bail!("muster {verb} supports service (an MCP server) only");
    }
    resources::run(&client.endpoint, &client.config_path, resources::service(verb, name), client.output).await
}

async fn standalone(config_path: PathBuf, debug: bool, sign_in: &SignInArgs) -> anyhow::Result<i32> {
    let _telemetry = debug.then(|| crate::telemetry::init(true));
    let config = Config::load(&config_path).context("loading config.yaml")?;
    let host = match config.host.as_str() {
        "0.0.0.0" | "::" | "" => "127.0.0.1".to_owned(),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_owned(),
    };
    let endpoint = format!("http://{host}:{}/mcp", config.port);
    let health = format!("http://{host}:{}/health", config.port);
    let options = agent::Options {
        endpoint,
        config_dir: config_path,
        settings: sign_in.settings(),
        open_browser: !sign_in.no_browser,
    };
    let server = crate::app::run(config);
    tokio::pin!(server);
    // The bridge starts once the server answers (it probes sign-in first).
    let http = login::http()?;
    let started = async {
        while !http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        served = &mut server => return served.context("muster stopped before it answered").map(|()| 1),
        () = started => {}
    }
    tokio::select! {
        served = &mut server => served.context("muster stopped").map(|()| 1),
        bridged = agent::run(options) => bridged,
    }
}
