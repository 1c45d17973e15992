//! What muster wants to run, from the folder, when reading it goes wrong: an unreadable folder,
//! an idle folder, FIFOs and devices, symlinks, huge names, missing commands; and where an
//! MCPServer URL may point (metadata addresses, by literal or by name).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::client::{Client, text};
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, config, eventually, free_port, http_server, stdio_server};

const WAIT: Duration = Duration::from_secs(20);

/// `muster check-config DIR`, failing the test if it does not finish within 20 s. Output goes to
/// files, which never fill up as pipes do.
fn check_config(dir: &Path) -> (i32, String, String) {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let (stdout, stderr) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_muster"))
        .arg("check-config")
        .arg(dir)
        .stdout(std::fs::File::create(&stdout).expect("stdout"))
        .stderr(std::fs::File::create(&stderr).expect("stderr"))
        .spawn()
        .expect("spawn check-config");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("check-config hung for 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let code = child.wait().expect("wait").code().unwrap_or(-1);
    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).expect("output")).into_owned();
    (code, read(&stdout), read(&stderr))
}

fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().expect("mkfifo").success());
}

async fn whoami(client: &Client, server: &str) -> String {
    text(&client.call(&format!("x_{server}_whoami"), json!({})).await)
}

async fn wait_for_tool(client: &Client, tool: &str, present: bool) {
    eventually(WAIT, &format!("{tool} present: {present}"), async || {
        (client.tool_names().await.iter().any(|n| n == tool) == present).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn an_unreadable_mcpservers_folder_keeps_every_backend_running() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let a = MockUpstream::start("a", free_port()).await;
    let b = MockUpstream::start("b", free_port()).await;
    fleet.write_server("a.yaml", &http_server("a", &a.url(), ""));
    fleet.write_server("b.yaml", &http_server("b", &b.url(), ""));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    wait_for_tool(&client, "x_b_whoami", true).await;

    // The folder replaced by a file: listing it fails (as root too, unlike permissions).
    let servers = fleet.dir.path().join("mcpservers");
    let moved = fleet.dir.path().join("moved");
    std::fs::rename(&servers, &moved).expect("move the folder away");
    std::fs::write(&servers, "not a folder").expect("a file in its place");
    // Several reads later (resync every second), both still serve.
    let reads = |log: &str| log.matches("reading the mcpservers folder").count();
    let reported = eventually(WAIT, "the unreadable folder in the log", async || {
        let log = muster.log_text();
        log.find("keeping what it held").map(|at| reads(&log[..at]))
    })
    .await;
    eventually(WAIT, "two more reads of the folder", async || {
        (reads(&muster.log_text()) >= reported + 2).then_some(())
    })
    .await;
    assert_eq!(whoami(&client, "a").await, "a");
    assert_eq!(whoami(&client, "b").await, "b");
    let log = muster.log_text();
    assert!(!log.contains("MCPServerDeleted"), "{log}");
    assert!(log.contains("cannot be listed") && log.contains("keeping what it held"), "{log}");

    // Readable again, without b: now b goes, and a stays.
    std::fs::remove_file(&servers).expect("remove the file");
    std::fs::remove_file(moved.join("b.yaml")).expect("remove b");
    std::fs::rename(&moved, &servers).expect("move the folder back");
    wait_for_tool(&client, "x_b_whoami", false).await;
    assert_eq!(whoami(&client, "a").await, "a");
}

/// Bytes the process has read (`/proc/PID/io` `rchar`): files, sockets and pipes.
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("/proc/PID/io");
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|n| n.trim().parse().ok()).expect("rchar")
}

#[actix_web::test]
async fn an_idle_folder_is_not_read_again() {
    let port = free_port();
    // Slow resync and health probes: anything read while idle is the watcher's doing.
    let fleet = Fleet::new(&format!(
        "aggregator:\n  port: {port}\n  supervision:\n    healthIntervalMs: 600000\n    resyncIntervalMs: 600000\n"
    ));
    let upstream = MockUpstream::start("a", free_port()).await;
    let padding = format!("# {}\n", "x".repeat(256 << 10));
    fleet.write_server("a.yaml", &format!("{padding}{}", http_server("a", &upstream.url(), "")));
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    // Let the status write (and the one re-read it causes) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = bytes_read(muster.child.id());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = bytes_read(muster.child.id()) - before;
    // One read is tolerated (a late status write wakes the watcher once); the bug was ~6 a second.
    assert!(read < 2 * (256 << 10), "an idle muster read {read} bytes in 3 s: it re-reads its own folder");
}

#[actix_web::test]
async fn a_fifo_or_dev_zero_under_mcpservers_hangs_neither_check_config_nor_reloads() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let a = MockUpstream::start("a", free_port()).await;
    fleet.write_server("a.yaml", &http_server("a", &a.url(), ""));
    mkfifo(&fleet.server_path("fifo.yaml"));
    std::os::unix::fs::symlink("/dev/zero", fleet.server_path("zero.yaml")).expect("symlink");

    let (code, stdout, stderr) = check_config(fleet.dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("fifo.yaml: is not a regular file"), "{stderr}");
    assert!(stderr.contains("zero.yaml: is not a regular file"), "{stderr}");
    assert!(stdout.contains("ok  a ("), "{stdout}");

    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert_eq!(whoami(&client, "a").await, "a");
    // Reloads still happen.
    let b = MockUpstream::start("b", free_port()).await;
    fleet.write_server("b.yaml", &http_server("b", &b.url(), ""));
    wait_for_tool(&client, "x_b_whoami", true).await;
}

#[actix_web::test]
async fn a_symlinked_server_file_stays_a_link_and_its_target_gets_the_status() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, ""));
    let upstream = MockUpstream::start("a", free_port()).await;
    let elsewhere = fleet.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    let target = elsewhere.join("a.yaml");
    std::fs::write(&target, http_server("a", &upstream.url(), "")).expect("target");
    let link = fleet.server_path("a.yaml");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    eventually(WAIT, "status in the link's target", async || {
        std::fs::read_to_string(&target).ok().filter(|t| t.contains("state: \"Connected\"")).map(|_| ())
    })
    .await;
    assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink(), "the link was replaced by a copy");
    assert_eq!(fleet.status("a.yaml")["state"], "Connected");
}

#[actix_web::test]
async fn a_huge_name_is_cut_and_a_missing_command_is_reported_by_check_config() {
    let fleet = Fleet::new("");
    fleet.write_server("huge.yaml", &stdio_server(&"n".repeat(1_000_000), "/bin/true", &[], ""));
    fleet.write_server("missing.yaml", &stdio_server("missing", "no-such-mcp-server-command", &[], ""));
    fleet.write_server("here.yaml", &stdio_server("here", "/bin/true", &[], ""));
    let (code, stdout, stderr) = check_config(fleet.dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.len() < 4096, "{} bytes of errors for one long name", stderr.len());
    assert!(stderr.contains(&format!("\"{}\"…", "n".repeat(64))), "{stderr}");
    assert!(
        stderr.contains("missing.yaml: spec.command: \"no-such-mcp-server-command\" is not found on PATH"),
        "{stderr}"
    );
    assert!(stdout.contains("ok  here ("), "{stdout}");
}

#[actix_web::test]
async fn metadata_urls_are_refused_by_check_config_and_by_serve() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let upstream = MockUpstream::start("ok", free_port()).await;
    fleet.write_server("ok.yaml", &http_server("ok", &upstream.url(), ""));
    fleet.write_server("meta.yaml", &http_server("meta", "http://169.254.169.254/latest/meta-data/iam", ""));
    let (code, stdout, stderr) = check_config(fleet.dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    let expected = "meta.yaml: spec.url: \"http://169.254.169.254/latest/meta-data/iam\" is refused: 169.254.169.254 is a link-local or cloud metadata address";
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stdout.contains("ok  ok ("), "loopback is always allowed: {stdout}");

    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert_eq!(whoami(&client, "ok").await, "ok");
    eventually(WAIT, "meta refused in its status", async || {
        fleet.status("meta.yaml")["lastError"]
            .as_str()
            .filter(|e| e.contains("link-local or cloud metadata"))
            .map(|_| ())
    })
    .await;
}

#[actix_web::test]
async fn private_network_urls_are_refused_where_config_says_so() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n  upstreams:\n    allowPrivateNetworks: false\n"));
    let upstream = MockUpstream::start("ok", free_port()).await;
    fleet.write_server("ok.yaml", &http_server("ok", &upstream.url(), ""));
    fleet.write_server("private.yaml", &http_server("private", "http://10.255.255.1/mcp", ""));
    let (code, stdout, stderr) = check_config(fleet.dir.path());
    assert_eq!(code, 1, "{stdout}{stderr}");
    let expected = "private.yaml: spec.url: \"http://10.255.255.1/mcp\" is refused: 10.255.255.1 is a private network address; set aggregator.upstreams.allowPrivateNetworks: true";
    assert!(stderr.contains(expected), "{stderr}");
    assert!(stdout.contains("ok  ok ("), "loopback is always allowed: {stdout}");

    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert_eq!(whoami(&client, "ok").await, "ok");
    // Refused at connect, without trying the address (which would time out after 5 s).
    eventually(Duration::from_secs(4), "private refused in its status", async || {
        fleet.status("private.yaml")["lastError"].as_str().filter(|e| e.contains("private network")).map(|_| ())
    })
    .await;
}

/// `/etc/hosts` for one muster process: a private mount namespace (`unshare -m`) with a file of
/// ours bound over it. `None` where mount namespaces are not available.
fn spawn_with_hosts(fleet: &Fleet, port: u16, hosts: &str) -> Option<Muster> {
    let probe = Command::new("unshare").args(["-m", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipping: `unshare -m` is not available here");
        return None;
    }
    let hosts_file: PathBuf = fleet.dir.path().join("hosts");
    std::fs::write(&hosts_file, hosts).expect("hosts");
    let log = fleet.dir.path().join("muster.log");
    let child = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind \"$1\" /etc/hosts && exec \"$2\" serve --config-path \"$3\"", "sh"])
        .arg(&hosts_file)
        .arg(env!("CARGO_BIN_EXE_muster"))
        .arg(fleet.dir.path())
        .env("RUST_LOG", "info,muster=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn muster under unshare");
    Some(Muster { child, port, log })
}

#[actix_web::test]
async fn a_host_name_resolving_to_a_metadata_address_is_refused_at_connect_and_loopback_names_work() {
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let upstream = MockUpstream::start("named", free_port()).await;
    fleet.write_server("named.yaml", &http_server("named", &upstream.url().replace("127.0.0.1", "localhost"), ""));
    fleet.write_server("meta.yaml", &http_server("meta", "http://metadata.muster.test/latest/meta-data/", ""));
    // The mock upstream accepts only loopback Host headers, so the loopback name is `localhost`.
    let hosts = "127.0.0.1 localhost\n169.254.169.254 metadata.muster.test\n";
    let Some(muster) = spawn_with_hosts(&fleet, port, hosts) else { return };
    let http = reqwest::Client::new();
    eventually(WAIT, "muster /health", async || {
        http.get(muster.url("/health")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let client = Client::connect(&muster.mcp_url()).await;
    wait_for_tool(&client, "x_named_whoami", true).await;
    assert_eq!(whoami(&client, "named").await, "named");
    eventually(WAIT, "the refusal in the log", async || {
        muster
            .log_text()
            .contains("metadata.muster.test resolves only to refused addresses: 169.254.169.254 is a link-local or cloud metadata address")
            .then_some(())
    })
    .await;
    let status = eventually(WAIT, "meta Failed with the reason", async || {
        let status = fleet.status("meta.yaml");
        (status["state"] == "Failed").then_some(status)
    })
    .await;
    let last_error = status["lastError"].as_str().unwrap_or_default();
    assert!(
        last_error.starts_with("refused by muster: metadata.muster.test resolves only to refused addresses"),
        "{status}"
    );
}
