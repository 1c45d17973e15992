//! The README's "Try it" commands, run word for word against the example fleet started the way
//! `scripts/run-example.sh` starts it (a fake Kubernetes API and a kubernetes-mcp-server per
//! cluster, muster on `examples/fleet`), so the README cannot drift from what works. Only the
//! ports differ: the test's are free ones, reached through `MUSTER_ENDPOINT` and rewritten URLs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{Fleet, Muster, Peers, Process, eventually, free_port, run, wait_port};

/// The comment that marks the README's try-it block (the next ```bash block).
const MARKER: &str = "<!-- try-it:";
const CLUSTERS: [&str; 3] = ["cluster-a", "cluster-b", "cluster-c"];
const WAIT: Duration = Duration::from_secs(20);

#[actix_web::test]
async fn readme_try_it_commands_answer_from_the_example_fleet() {
    let readme = std::fs::read_to_string(Peers::repo_file("README.md")).expect("README.md");
    let block = try_it_block(&readme);
    let (alias, commands) = block.split_first().expect("a non-empty try-it block");
    assert!(alias.starts_with("alias muster="), "the block starts by naming the binary: {alias}");

    // run-example.sh prints the same commands (its alias names the real path instead).
    let script = std::fs::read_to_string(Peers::repo_file("scripts/run-example.sh")).expect("run-example.sh");
    assert!(script.lines().any(|l| l == r#"alias muster="$MUSTER""#), "run-example.sh prints the alias");
    for command in commands {
        assert!(script.lines().any(|l| l == command), "run-example.sh does not print the README's `{command}`");
    }

    let peers = Peers::load();
    let example = ExampleFleet::start(&peers).await;
    let (mut listed, mut clusters_called) = (false, Vec::new());
    for command in commands {
        let line = command.replace("127.0.0.1:8090", &format!("127.0.0.1:{}", example.muster.port));
        let (code, stdout, stderr) = example.shell(alias, &line);
        assert_eq!(code, 0, "`{command}` failed:\n{stdout}\n{stderr}\nmuster log:\n{}", example.muster.log_text());
        if command.contains(" list tools") {
            assert!(stdout.contains("x_kubernetes_pods_list"), "`{command}`:\n{stdout}");
            listed = true;
        }
        if let Some(cluster) = CLUSTERS.iter().find(|c| command.contains(&format!("--management_cluster={c}"))) {
            // The fake names every pod after its cluster: `api-cluster-b-…`.
            assert!(stdout.contains(&format!("-{cluster}-")), "`{command}` shows {cluster}'s pods:\n{stdout}");
            for other in CLUSTERS.iter().filter(|c| *c != cluster) {
                assert!(!stdout.contains(other), "`{command}` routed to {other}:\n{stdout}");
            }
            clusters_called.push(*cluster);
        }
    }
    assert!(listed, "the try-it block lists the tools: {commands:?}");
    clusters_called.dedup();
    assert!(clusters_called.len() >= 2, "the try-it block shows routing to two clusters at least: {commands:?}");
}

/// The non-empty lines of the bash block that follows the try-it marker.
fn try_it_block(readme: &str) -> Vec<String> {
    let after = &readme[readme.find(MARKER).expect("README.md has a try-it marker")..];
    let block = after.split_once("```bash\n").expect("a bash block after the try-it marker").1;
    let block = &block[..block.find("```").expect("the try-it block ends")];
    block.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
}

/// What `scripts/run-example.sh` starts, on free ports.
struct ExampleFleet {
    muster: Muster,
    fleet: Fleet,
    /// Holds the kubeconfigs the fakes write.
    kube_dir: tempfile::TempDir,
    /// Where `muster auth` would keep tokens: empty, so none of the developer's are sent.
    client_config: tempfile::TempDir,
    _processes: Vec<Process>,
}

impl ExampleFleet {
    async fn start(peers: &Peers) -> Self {
        let port = free_port();
        let config = read_repo_file("examples/fleet/config.yaml");
        assert!(config.contains("port: 8090"), "examples/fleet/config.yaml serves on 8090:\n{config}");
        let fleet = Fleet::new(&config.replace("port: 8090", &format!("port: {port}")));
        let kube_dir = tempfile::tempdir().expect("tempdir");
        let mut processes = Vec::new();
        for (cluster, default_port) in CLUSTERS.iter().zip(18181..) {
            let kubeconfig = kube_dir.path().join(format!("{cluster}.kubeconfig"));
            let mut fake = Command::new(peers.get("MUSTER_PYTHON"));
            fake.arg(Peers::repo_file("examples/fake_kube_api.py")).arg(cluster).arg(&kubeconfig);
            processes.push(Process::spawn(&mut fake, "examples/fake_kube_api.py"));
            eventually(WAIT, "the fake API's kubeconfig", async || kubeconfig.exists().then_some(())).await;

            let mcp_port = free_port();
            let mut k8s = Command::new(peers.get("MUSTER_K8S_MCP"));
            k8s.args(["--port", &mcp_port.to_string(), "--bind-address", "127.0.0.1", "--read-only", "--kubeconfig"])
                .arg(&kubeconfig);
            processes.push(Process::spawn(&mut k8s, "kubernetes-mcp-server"));
            wait_port(mcp_port).await;

            let file = format!("{cluster}-mcp-kubernetes.yaml");
            let server = read_repo_file(&format!("examples/fleet/mcpservers/{file}"));
            let url = format!("http://127.0.0.1:{default_port}/mcp");
            assert!(server.contains(&url), "{file} points at {url}");
            fleet.write_server(&file, &server.replace(&url, &format!("http://127.0.0.1:{mcp_port}/mcp")));
        }
        let muster = Muster::start(&fleet, port).await;
        muster.wait_ready().await;
        for cluster in CLUSTERS {
            let file = format!("{cluster}-mcp-kubernetes.yaml");
            eventually(WAIT, &format!("{cluster} to connect"), async || {
                (fleet.status(&file)["state"] == "Connected").then_some(())
            })
            .await;
        }
        let client_config = tempfile::tempdir().expect("tempdir");
        Self { muster, fleet, kube_dir, client_config, _processes: processes }
    }

    /// Runs `line` in bash after the README's alias line, from the repository root, with the
    /// alias resolving to the muster under test and the CLI pointed at this fleet's muster.
    fn shell(&self, alias: &str, line: &str) -> (i32, String, String) {
        let binary = Path::new(env!("CARGO_BIN_EXE_muster"));
        let debug = binary.parent().expect("the binary's folder");
        assert!(debug.ends_with("debug"), "muster under test is not in $CARGO_TARGET_DIR/debug: {}", binary.display());
        let target_dir: PathBuf = debug.parent().expect("the target folder").to_owned();
        let mut bash = Command::new("bash");
        bash.args(["-O", "expand_aliases", "-c", &format!("{alias}\n{line}")])
            .current_dir(Peers::repo_file(""))
            .env("CARGO_TARGET_DIR", target_dir)
            .env("MUSTER_ENDPOINT", self.muster.mcp_url())
            .env("MUSTER_CONFIG_PATH", self.client_config.path());
        eprintln!(
            "$ {line}   (fleet in {}, kubeconfigs in {})",
            self.fleet.dir.path().display(),
            self.kube_dir.path().display()
        );
        run(&mut bash)
    }
}

fn read_repo_file(path: &str) -> String {
    std::fs::read_to_string(Peers::repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The README's example workflow loads unchanged and is valid (`check-config`).
#[test]
fn readme_workflow_example_is_valid() {
    let readme = std::fs::read_to_string(Peers::repo_file("README.md")).expect("README.md");
    let after = &readme[readme.find("<!-- workflow-example -->").expect("a workflow-example marker")..];
    let block = after.split_once("```yaml\n").expect("a yaml block after the marker").1;
    let yaml = &block[..block.find("```").expect("the block ends")];
    let fleet = Fleet::new("");
    std::fs::create_dir_all(fleet.dir.path().join("workflows")).expect("workflows dir");
    std::fs::write(fleet.dir.path().join("workflows/list-in-cluster.yaml"), yaml).expect("write");
    let (code, stdout, stderr) =
        run(Command::new(env!("CARGO_BIN_EXE_muster")).arg("check-config").arg(fleet.dir.path()));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("ok  workflow list-in-cluster ("), "{stdout}");
}
