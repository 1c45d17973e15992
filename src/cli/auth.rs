//! `muster auth login|status|logout`: sign in once (`cli/login.rs`: the authorization server
//! muster names, authorization code + PKCE with a loopback callback), and see each cluster's SSO state.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::client;
use super::login::{self, now};
use super::tokens;
use crate::mcp::auth_status::{AuthStatus, FleetStatus, ServerStatus, SessionStatus, URI};

/// Exit codes (reference §4.7).
pub(crate) const EXIT_AUTH_REQUIRED: i32 = 2;
pub(crate) const EXIT_AUTH_FAILED: i32 = 3;
/// `auth login` against a muster without sign-in: an error, with its own message.
pub(crate) const EXIT_SIGN_IN_DISABLED: i32 = 1;

pub(crate) struct LoginOptions {
    pub(crate) settings: login::Settings,
    pub(crate) open_browser: bool,
}

#[allow(clippy::print_stderr, reason = "the CLI talks to the user")]
pub(crate) async fn login(endpoint: &str, config_dir: &Path, options: LoginOptions) -> anyhow::Result<i32> {
    let http = login::http()?;
    if login::sign_in_enabled(&http, endpoint).await? == Some(false) {
        eprintln!("Sign-in is not enabled on the muster at {endpoint}: there is nothing to log in to.");
        eprintln!("Its tools work without `muster auth login`; `muster auth status` shows each server's state.");
        return Ok(EXIT_SIGN_IN_DISABLED);
    }
    let pending = login::start(&http, endpoint, &options.settings).await?;
    eprintln!("Opening browser for authentication...");
    eprintln!("If it does not open, visit: {}", pending.url);
    if options.open_browser {
        open_browser(&pending.url);
    }
    let stored = match pending.finish(&http).await {
        Ok(stored) => stored,
        Err(login::Error::Refused { status, body }) => {
            eprintln!("Authentication failed: the identity provider answered {status}: {body}");
            return Ok(EXIT_AUTH_FAILED);
        }
        Err(login::Error::Other(e)) => return Err(e),
    };
    tokens::save(config_dir, &stored).context("storing the token")?;
    eprintln!("Logged in to {endpoint}.");
    wait_for_sso(endpoint, config_dir).await;
    Ok(0)
}

/// Best effort: the URL is printed (or returned) too.
pub(crate) fn open_browser(url: &str) {
    let _ = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// After sign-in, muster exchanges the token for every cluster; show progress for up to 30 s.
#[allow(clippy::print_stderr, reason = "the CLI talks to the user")]
async fn wait_for_sso(endpoint: &str, config_dir: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let Ok(status) = fetch_status(endpoint, config_dir).await else { return };
        let sso: Vec<&ServerStatus> =
            status.servers.iter().filter(|s| s.token_exchange_enabled || s.token_forwarding_enabled).collect();
        let pending = sso.iter().filter(|s| s.status == SessionStatus::SsoPending).count();
        if pending == 0 {
            let failed = sso.iter().filter(|s| s.sso_attempt_failed).count();
            if failed > 0 {
                eprintln!("SSO failed for {failed} server(s): see `muster auth status`");
            } else if !sso.is_empty() {
                eprintln!("Establishing SSO connections ({}/{})... done", sso.len(), sso.len());
            }
            return;
        }
        eprintln!("Establishing SSO connections ({}/{})...", sso.len() - pending, sso.len());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn fetch_status(endpoint: &str, config_dir: &Path) -> Result<AuthStatus, anyhow::Error> {
    Ok(serde_json::from_str(&read_status(endpoint, config_dir).await?)?)
}

/// The text of `auth://status`.
async fn read_status(endpoint: &str, config_dir: &Path) -> Result<String, anyhow::Error> {
    let service = client::connect(endpoint, config_dir).await?;
    let result = service.peer().read_resource(rmcp::model::ReadResourceRequestParams::new(URI)).await;
    let _ = service.cancel().await;
    let result = result.context("reading auth://status")?;
    let text = result
        .contents
        .iter()
        .find_map(|c| match c {
            rmcp::model::ResourceContents::TextResourceContents { text, .. } => Some(text.clone()),
            _ => None,
        })
        .context("auth://status had no text")?;
    Ok(text)
}

#[allow(clippy::print_stdout, reason = "the CLI's output")]
pub(crate) async fn status(endpoint: &str, config_dir: &Path) -> anyhow::Result<i32> {
    println!("Muster Aggregator");
    println!("  Endpoint:  {endpoint}");
    if login::sign_in_enabled(&login::http()?, endpoint).await? == Some(false) {
        return status_without_sign_in(endpoint, config_dir).await;
    }
    let Some(stored) = tokens::load(config_dir, endpoint) else {
        println!("  Status:    Not authenticated");
        println!("  Run: muster auth login");
        return Ok(EXIT_AUTH_REQUIRED);
    };
    if stored.expires_at <= now() {
        println!("  Status:    Expired");
        println!("  Run: muster auth login");
        return Ok(EXIT_AUTH_REQUIRED);
    }
    let status = match fetch_status(endpoint, config_dir).await {
        Ok(status) => status,
        Err(e) => {
            let code = e.downcast_ref::<client::ConnectError>().map_or(1, client::exit_code);
            let label = match code {
                EXIT_AUTH_FAILED => "Authentication failed",
                EXIT_AUTH_REQUIRED => "Not authenticated",
                _ => "Connection failed",
            };
            println!("  Status:    {label}");
            println!("  Reason:    {e:#}");
            return Ok(code);
        }
    };
    println!("  Status:    Authenticated");
    println!("  Expires:   {}", human_duration(stored.expires_at.saturating_sub(now())));
    println!(
        "  Refresh:   {}",
        if stored.refresh_token.is_some() { "Available" } else { "Not available (re-auth required on expiry)" }
    );
    println!("  Issuer:    {}", stored.issuer);
    println!();
    print!("{}", render_servers(&status));
    Ok(0)
}

/// `auth status` against a muster without sign-in: each server's state, and exit 0.
#[allow(clippy::print_stdout, reason = "the CLI's output")]
async fn status_without_sign_in(endpoint: &str, config_dir: &Path) -> anyhow::Result<i32> {
    println!("  Sign-in:   Not enabled on this muster (nothing to log in to)");
    let fleet = match read_status(endpoint, config_dir).await {
        Ok(text) => serde_json::from_str::<FleetStatus>(&text).context("parsing auth://status")?,
        Err(e) => {
            println!("  Status:    Connection failed");
            println!("  Reason:    {e:#}");
            return Ok(e.downcast_ref::<client::ConnectError>().map_or(1, client::exit_code));
        }
    };
    println!();
    print!("{}", render_states(&fleet));
    Ok(0)
}

/// The "MCP Servers" block without sign-in: each server's own state, and a failed one's reason
/// and next retry.
pub(crate) fn render_states(fleet: &FleetStatus) -> String {
    let width = fleet.servers.iter().map(|s| s.name.len()).max().unwrap_or(0).max(20) + 3;
    let mut out = String::from("MCP Servers\n");
    for server in &fleet.servers {
        let label = match server.status {
            SessionStatus::Connected => "Connected",
            SessionStatus::Failed => "Failed",
            SessionStatus::AuthRequired | SessionStatus::ReauthRequired => "Requires authentication",
            SessionStatus::SsoPending | SessionStatus::Disconnected => "Connecting",
            SessionStatus::Error => "Error",
            SessionStatus::Unreachable => "Unreachable",
        };
        let mut hint = server.error.clone().unwrap_or_default();
        if let Some(secs) = server.retry_in_seconds {
            hint.push_str(&format!("{}retrying in {secs} s", if hint.is_empty() { "" } else { "; " }));
        }
        let line = format!("  {:<width$}{label}", server.name);
        if hint.is_empty() {
            out.push_str(&format!("{line}\n"));
        } else {
            out.push_str(&format!("{line}  {hint}\n"));
        }
    }
    out
}

fn human_duration(secs: u64) -> String {
    match secs {
        0..=89 => format!("in {secs} seconds"),
        90..=5399 => format!("in {} minutes", secs.div_ceil(60)),
        _ => format!("in {} hours", secs / 3600),
    }
}

/// The "MCP Servers" block of `muster auth status` (reference §4.7).
pub(crate) fn render_servers(status: &AuthStatus) -> String {
    let width = status.servers.iter().map(|s| s.name.len()).max().unwrap_or(0).max(20) + 3;
    let mut out = String::from("MCP Servers\n");
    let pending = status.servers.iter().filter(|s| s.status == SessionStatus::SsoPending).count();
    if pending > 0 {
        out.push_str(&format!("  ({pending} SSO in progress)\n"));
    }
    for server in &status.servers {
        let sso = if server.token_exchange_enabled {
            "Exchanged"
        } else if server.token_forwarding_enabled {
            "Forwarded"
        } else {
            ""
        };
        let (label, hint) = match server.status {
            SessionStatus::Connected if sso.is_empty() => ("Connected".to_owned(), String::new()),
            SessionStatus::Connected => (format!("Connected [SSO: {sso}]"), String::new()),
            SessionStatus::AuthRequired => ("Not authenticated".to_owned(), "Run: muster auth login".to_owned()),
            SessionStatus::ReauthRequired => {
                ("Re-authentication required".to_owned(), "Run: muster auth login".to_owned())
            }
            SessionStatus::SsoPending => ("SSO Pending".to_owned(), String::new()),
            SessionStatus::Disconnected => ("Disconnected".to_owned(), server.error.clone().unwrap_or_default()),
            SessionStatus::Error => ("Error".to_owned(), server.error.clone().unwrap_or_default()),
            SessionStatus::Unreachable => ("Unreachable".to_owned(), server.error.clone().unwrap_or_default()),
            SessionStatus::Failed if server.sso_attempt_failed => (
                "Not authenticated [SSO: Failed]".to_owned(),
                server.error.clone().unwrap_or_else(|| "SSO failed - check server configuration".to_owned()),
            ),
            SessionStatus::Failed => ("Failed".to_owned(), server.error.clone().unwrap_or_default()),
        };
        let line = format!("  {:<width$}{label}", server.name);
        if hint.is_empty() {
            out.push_str(&format!("{line}\n"));
        } else {
            out.push_str(&format!("{line}  {hint}\n"));
        }
    }
    out
}

#[allow(clippy::print_stdout, reason = "the CLI's output")]
pub(crate) fn logout(endpoint: &str, config_dir: &Path) -> i32 {
    if tokens::remove(config_dir, endpoint) {
        println!("Logged out of {endpoint}.");
    } else {
        println!("Not logged in to {endpoint}.");
    }
    0
}

pub(crate) fn check_endpoint(endpoint: &str) -> anyhow::Result<()> {
    if reqwest::Url::parse(endpoint).is_err() {
        bail!("--endpoint {endpoint:?} is not a URL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::auth_status::ServerState;

    fn server(name: &str, status: SessionStatus, exchange: bool, failed: bool) -> ServerStatus {
        ServerStatus {
            name: name.to_owned(),
            status,
            issuer: None,
            auth_tool: None,
            error: failed.then(|| "token exchange for x was refused by e: invalid_client".to_owned()),
            token_forwarding_enabled: false,
            token_exchange_enabled: exchange,
            sso_attempt_failed: failed,
        }
    }

    #[test]
    fn renders_the_seed_layout() {
        let status = AuthStatus {
            servers: vec![
                server("cluster-a-mcp-kubernetes", SessionStatus::Connected, true, false),
                server("cluster-b-mcp-kubernetes", SessionStatus::Failed, true, true),
                server("local", SessionStatus::Connected, false, false),
            ],
        };
        let text = render_servers(&status);
        assert_eq!(
            text,
            "MCP Servers\n  cluster-a-mcp-kubernetes   Connected [SSO: Exchanged]\n  cluster-b-mcp-kubernetes   Not authenticated [SSO: Failed]  token exchange for x was refused by e: invalid_client\n  local                      Connected\n"
        );
    }

    #[test]
    fn pending_and_unreachable_servers_say_so() {
        let mut unreachable = server("c", SessionStatus::Unreachable, true, true);
        unreachable.error = Some("token exchange for c: http://dex.c/token is unreachable: refused".into());
        let status = AuthStatus { servers: vec![server("b", SessionStatus::SsoPending, true, false), unreachable] };
        assert_eq!(
            render_servers(&status),
            "MCP Servers\n  (1 SSO in progress)\n  b                      SSO Pending\n  c                      Unreachable  token exchange for c: http://dex.c/token is unreachable: refused\n"
        );
    }

    #[test]
    fn without_sign_in_each_server_shows_its_state_and_a_failed_ones_retry() {
        let state = |name: &str, status, error: Option<&str>, retry_in_seconds| ServerState {
            name: name.to_owned(),
            status,
            error: error.map(str::to_owned),
            retry_in_seconds,
        };
        let fleet = FleetStatus {
            servers: vec![
                state("a", SessionStatus::Connected, None, None),
                state("b", SessionStatus::Failed, Some("connection refused"), Some(4)),
                state("c", SessionStatus::Disconnected, None, None),
            ],
        };
        assert_eq!(
            render_states(&fleet),
            "MCP Servers\n  a                      Connected\n  b                      Failed  connection refused; retrying in 4 s\n  c                      Connecting\n"
        );
    }
}
