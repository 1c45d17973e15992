//! The README's "try one login": `scripts/run-sso-example.sh` started as a user starts it, then
//! the commands it prints (headless sign-in, `muster auth status`, a family call) run as printed.

use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Peers, free_port, run};

const CLUSTERS: [&str; 3] = ["cluster-a", "cluster-b", "cluster-c"];
/// The peers the script starts on consecutive ports: central IdP, then an IdP and a
/// kubernetes-mcp-server per cluster.
const PEER_PORTS: u16 = 7;

/// The script in its own process group; dropping it stops the group, as Ctrl-C would.
struct Script(Child);

impl Script {
    fn stop(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first of `PEER_PORTS` consecutive free ports.
fn free_port_range() -> u16 {
    loop {
        let base = free_port();
        let Some(end) = base.checked_add(PEER_PORTS) else { continue };
        let bound: Vec<_> = (base..end).map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok()).collect();
        if bound.len() == usize::from(PEER_PORTS) {
            return base;
        }
    }
}

/// Runs one printed command line after the printed `export` line, as a user's shell would.
fn shell(export: &str, line: &str, config: &std::path::Path) -> (i32, String, String) {
    run(Command::new("bash")
        .arg("-c")
        .arg(format!("{export}\n{line}"))
        .env("MUSTER_CONFIG_PATH", config)
        .env("NO_COLOR", "1"))
}

#[test]
fn the_sso_example_signs_in_once_and_reaches_every_cluster() {
    let _ = Peers::load();
    let work = tempfile::tempdir().expect("tempdir");
    let stderr = std::fs::File::create(work.path().join("script.err")).expect("stderr file");
    let port = free_port();
    let child = Command::new(Peers::repo_file("scripts/run-sso-example.sh"))
        .env("MUSTER_SSO_PORT", port.to_string())
        .env("MUSTER_SSO_PEER_PORT", free_port_range().to_string())
        .env("MUSTER_BIN", env!("CARGO_BIN_EXE_muster"))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("start run-sso-example.sh");
    let mut script = Script(child);

    // Everything up: the script prints its instructions, ending with how to stop it.
    let stdout = script.0.stdout.take().expect("stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line == "Ctrl-C stops everything.";
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = lines_tx.send(lines);
    });
    let printed = lines_rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    let script_err = || std::fs::read_to_string(work.path().join("script.err")).unwrap_or_default();
    assert!(printed.last().is_some_and(|l| l == "Ctrl-C stops everything."), "{printed:?}\n{}", script_err());
    let command = |prefix: &str| {
        printed
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {printed:#?}"))
            .to_owned()
    };
    let export = command("export MUSTER_ENDPOINT=");
    assert!(export.contains(&format!("http://127.0.0.1:{port}/mcp")), "{export}");
    let config = work.path().join("muster-config");

    // Before sign-in: muster asks for it.
    let (code, stdout, _) = shell(&export, &command("muster auth status"), &config);
    assert_eq!(code, 2, "{stdout}");
    assert!(stdout.contains("Not authenticated"), "{stdout}");

    // The headless sign-in, then the seed's status: every cluster exchanged.
    let (code, stdout, stderr) = shell(&export, &command("muster auth login --no-browser"), &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Logged in to") && stdout.contains("(3/3)... done"), "{stdout}{stderr}");
    let (code, stdout, stderr) = shell(&export, &command("muster auth status"), &config);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("Status:    Authenticated"), "{stdout}");
    for cluster in CLUSTERS {
        let server = format!("{cluster}-mcp-kubernetes");
        assert!(stdout.lines().any(|l| l.trim() == format!("{server}   Connected [SSO: Exchanged]")), "{stdout}");
    }

    // The printed call, and the same call on every cluster: each kubernetes-mcp-server accepts only
    // its own cluster's exchanged token, and answers.
    let call = command("muster call x_kubernetes_configuration_view");
    assert!(call.contains("--management_cluster=cluster-b-mcp-kubernetes"), "{call}");
    for cluster in CLUSTERS {
        let (code, stdout, stderr) = shell(&export, &call.replace("cluster-b", cluster), &config);
        assert_eq!(code, 0, "{cluster}: {stdout}{stderr}");
        assert!(stdout.contains("current-context: fake"), "{cluster}: {stdout}");
    }

    // Stopping the group stops everything the script started.
    script.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "muster still listens after the stop");
}
