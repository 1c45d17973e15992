//! Test support: a muster process with a temporary config folder, free ports, the installed
//! third-party peers, and a raw JSON-RPC-over-HTTP helper.

pub mod client;
pub mod fake_kube;
pub mod mock_upstream;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port for a server a test starts. Picked below Linux's ephemeral range (32768–60999): a port
/// the kernel handed out for `bind(0)` and that the test let go of could be taken, before the
/// server binds it, as the source port of any outgoing connection of the parallel tests.
pub fn free_port() -> u16 {
    for _ in 0..200 {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub async fn eventually<T>(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A config folder: `config.yaml` plus `mcpservers/`.
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub fn new(config_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("mcpservers")).expect("mcpservers dir");
        std::fs::write(dir.path().join("config.yaml"), config_yaml).expect("config.yaml");
        Self { dir }
    }

    pub fn server_path(&self, file: &str) -> PathBuf {
        self.dir.path().join("mcpservers").join(file)
    }

    pub fn write_server(&self, file: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write server");
        std::fs::rename(&tmp, self.server_path(file)).expect("rename server");
    }

    pub fn remove_server(&self, file: &str) {
        std::fs::remove_file(self.server_path(file)).expect("remove server");
    }

    /// The `status` block muster wrote into a server file, as JSON.
    pub fn status(&self, file: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(self.server_path(file)).unwrap_or_default();
        let value: serde_json::Value = serde_saphyr::from_str(&text).unwrap_or_default();
        value.get("status").cloned().unwrap_or_default()
    }
}

/// An MCPServer resource for a streamable-HTTP upstream.
pub fn http_server(name: &str, url: &str, extra: &str) -> String {
    format!(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\n  namespace: muster\nspec:\n  type: streamable-http\n  url: \"{url}\"\n  autoStart: true\n  timeout: 5\n{extra}"
    )
}

/// An MCPServer resource for a stdio upstream.
pub fn stdio_server(name: &str, command: &str, args: &[&str], extra: &str) -> String {
    let args = serde_json::to_string(args).expect("args");
    format!(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n  type: stdio\n  command: \"{command}\"\n  args: {args}\n  autoStart: true\n  timeout: 10\n{extra}"
    )
}

pub fn family(name: &str, arg: &str) -> String {
    format!("  family:\n    name: {name}\n    instanceArg: {arg}\n")
}

/// A `kubernetes` family of mock upstreams, one per cluster, behind muster with `config(port)`.
pub async fn mock_family(
    config: impl Fn(u16) -> String,
    clusters: &[&str],
) -> (Fleet, Vec<mock_upstream::MockUpstream>, Muster) {
    let port = free_port();
    let fleet = Fleet::new(&config(port));
    let mut upstreams = Vec::new();
    for cluster in clusters {
        let upstream = mock_upstream::MockUpstream::start(cluster, free_port()).await;
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &upstream.url(), &family("kubernetes", "management_cluster")),
        );
        upstreams.push(upstream);
    }
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    (fleet, upstreams, muster)
}

/// Fast supervision so restart tests take seconds, not minutes.
pub fn config(port: u16, extra: &str) -> String {
    format!(
        "aggregator:\n  port: {port}\n  supervision:\n    initialBackoffMs: 100\n    maxBackoffMs: 1000\n    stableAfterMs: 2000\n    healthIntervalMs: 500\n    resyncIntervalMs: 1000\n{extra}"
    )
}

/// A running `muster serve`, killed on drop.
pub struct Muster {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Muster {
    pub async fn start(fleet: &Fleet, port: u16) -> Self {
        Self::start_with_env(fleet, port, &[]).await
    }

    /// Spawns `muster serve` without waiting for it (for tests that expect it to fail). Logs
    /// at `info,muster=debug` unless `env` sets `RUST_LOG`; an empty one leaves muster's default.
    pub fn spawn(fleet: &Fleet, env: &[(&str, &std::ffi::OsStr)]) -> (Child, PathBuf) {
        let log = fleet.dir.path().join("muster.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_muster"));
        command.env("RUST_LOG", "info,muster=debug").envs(env.iter().map(|(k, v)| (*k, *v)));
        if env.iter().any(|(k, v)| *k == "RUST_LOG" && v.is_empty()) {
            command.env_remove("RUST_LOG");
        }
        let child = command
            .args(["serve", "--config-path"])
            .arg(fleet.dir.path())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn muster");
        (child, log)
    }

    pub async fn start_with_env(fleet: &Fleet, port: u16, env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut port = port;
        for attempt in 1..=3 {
            let (child, log) = Self::spawn(fleet, env);
            let mut muster = Self { child, port, log };
            let http = reqwest::Client::new();
            let url = muster.url("/health");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                    return muster;
                }
                if let Ok(Some(status)) = muster.child.try_wait() {
                    let log = muster.log_text();
                    // Another test took the port between our probe and muster's bind: move on.
                    if log.contains("Address already in use") && attempt < 3 {
                        let next = free_port();
                        let config = fleet.dir.path().join("config.yaml");
                        let text = std::fs::read_to_string(&config).unwrap_or_default();
                        std::fs::write(&config, text.replace(&format!("port: {port}"), &format!("port: {next}")))
                            .expect("rewrite config");
                        port = next;
                        break;
                    }
                    panic!("muster exited ({status}) before answering /health:\n{log}");
                }
                assert!(Instant::now() < deadline, "muster did not answer /health in 60 s:\n{}", muster.log_text());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        unreachable!("three attempts either returned or panicked")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    pub async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let url = self.url("/readyz");
        eventually(Duration::from_secs(30), "muster /readyz", async || {
            http.get(&url).send().await.ok().filter(|r| r.status().is_success())
        })
        .await;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Direct children of the muster process (its stdio upstreams).
    pub fn child_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep").arg("-P").arg(self.child.id().to_string()).output().expect("pgrep");
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
    }
}

impl Drop for Muster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The third-party peers installed by `scripts/install-peers.sh` (its `env.sh`).
pub struct Peers {
    vars: HashMap<String, String>,
}

impl Peers {
    pub fn load() -> Self {
        let dir = std::env::var("MUSTER_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/muster-peers"));
        let env = dir.join("env.sh");
        let text = std::fs::read_to_string(&env).unwrap_or_else(|_| {
            panic!("{} is missing: run scripts/install-peers.sh (the README's test command does)", env.display())
        });
        let vars = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        Self { vars }
    }

    pub fn get(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| panic!("{key} missing from the peers' env.sh"))
    }

    /// A variable of env.sh that older installs may lack.
    pub fn optional(&self, key: &str) -> Option<PathBuf> {
        self.vars.get(key).filter(|v| !v.is_empty()).map(PathBuf::from)
    }

    /// A peer installed from the system's packages (scripts/install-peers.sh, apt-get): `key` in the
    /// environment or the peers' env.sh, else `command` on the PATH. `None`, with the reason printed,
    /// when it is absent and the peers are not required (`MUSTER_REQUIRE_PEERS`: a failure instead).
    pub fn system(&self, key: &str, command: &str) -> Option<PathBuf> {
        let named = std::env::var_os(key).map(PathBuf::from).or_else(|| self.optional(key));
        let on_path = || {
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
                .map(|dir| dir.join(command))
                .find(|candidate| candidate.is_file())
        };
        let found = named.filter(|p| p.is_file()).or_else(on_path);
        if found.is_none() {
            assert!(
                std::env::var_os("MUSTER_REQUIRE_PEERS").is_none(),
                "{command} is missing and MUSTER_REQUIRE_PEERS is set: run scripts/install-peers.sh (it installs Debian's {command})"
            );
            eprintln!("skipping: {command} is not installed (scripts/install-peers.sh installs Debian's {command})");
        }
        found
    }

    pub fn repo_file(path: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
    }

    /// kubernetes-mcp-server over streamable HTTP on `port`: read-only, on the fake kubeconfig.
    pub fn kubernetes_mcp_server(&self, port: u16) -> Command {
        let mut command = Command::new(self.get("MUSTER_K8S_MCP"));
        command
            .args(["--port", &port.to_string(), "--bind-address", "127.0.0.1", "--read-only", "--kubeconfig"])
            .arg(Self::repo_file("tests/peers/fake-kubeconfig.yaml"));
        command
    }

    /// A script of `tests/peers` on the peers' Python.
    pub fn python(&self, script: &str) -> Command {
        let mut command = Command::new(self.get("MUSTER_PYTHON"));
        command.arg(Self::repo_file(&format!("tests/peers/{script}")));
        command
    }

    /// Runs the Python SDK client (`tests/peers/py_client.py`) against `url`; returns its JSON output.
    pub fn py_client(&self, url: &str, args: &[&str]) -> serde_json::Value {
        let out = self.python("py_client.py").arg(url).args(args).output().expect("run py_client.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "py_client {args:?}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("py_client output is not JSON ({e}): {stdout}"))
    }
}

/// A JSON-RPC POST to an MCP endpoint as an agent sends it (2025-06-18), with an optional bearer.
pub fn post_rpc(http: &reqwest::Client, url: &str, bearer: Option<&str>, body: &str) -> reqwest::RequestBuilder {
    let request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_owned());
    match bearer {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// A process killed on drop.
pub struct Process(pub Child);

impl Process {
    /// Spawns `command` with its output discarded.
    pub fn spawn(command: &mut Command, what: &str) -> Self {
        Self(
            command.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("start {what}: {e}")),
        )
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_port(port: u16) {
    eventually(Duration::from_secs(20), &format!("port {port}"), async || {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
}

/// Runs a command to completion and returns (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `muster auth login --no-browser` running: the authorization URL it printed, then its end.
pub struct PendingLogin {
    child: std::process::Child,
    url: Option<std::sync::mpsc::Receiver<String>>,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl PendingLogin {
    /// Starts `cmd` (a login with `--no-browser`), reading its stderr for the URL it prints.
    pub fn spawn(cmd: &mut Command) -> Self {
        use std::io::BufRead as _;
        let mut child =
            cmd.stderr(std::process::Stdio::piped()).stdout(std::process::Stdio::null()).spawn().expect("login");
        let stderr = child.stderr.take().expect("stderr");
        let (url_tx, url) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("If it does not open, visit: ") {
                    let _ = url_tx.send(url.to_owned());
                }
                lines.push(line);
            }
            lines
        });
        Self { child, url: Some(url), reader }
    }

    /// The authorization URL the login printed (within `wait`), read off the runtime's thread so
    /// that servers on this runtime keep answering the login meanwhile.
    pub async fn authorize_url(&mut self, wait: Duration) -> String {
        let url = self.url.take().expect("asked once");
        let (printed, url) = tokio::task::spawn_blocking(move || (url.recv_timeout(wait), url)).await.expect("join");
        self.url = Some(url);
        printed.expect("the login printed an authorization URL")
    }

    /// Waits for the login to end: whether it succeeded, and everything it wrote to stderr.
    pub async fn finish(self) -> (bool, String) {
        let Self { mut child, reader, .. } = self;
        let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
        (status.success(), reader.join().expect("reader").join("\n"))
    }
}
