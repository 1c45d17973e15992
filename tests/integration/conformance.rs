//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, run on Node 22
//! by `tests/peers/conformance.sh`) against muster's `/mcp`.

use std::process::Command;

use crate::support::{Fleet, Muster, Peers, Process, config, family, free_port, http_server, run, wait_port};

fn conformance(url: &str, args: &[&str]) -> (i32, String) {
    let (code, stdout, stderr) =
        run(Command::new("bash").arg(Peers::repo_file("tests/peers/conformance.sh")).arg(url).args(args));
    (code, format!("{stdout}\n{stderr}"))
}

fn passed(output: &str, scenario: &str) -> bool {
    output.lines().any(|line| line.split_whitespace().take(2).eq(["PASS", scenario]))
}

/// The project's fixture upstream, and a ready muster in front of it with its names unchanged
/// (empty musterPrefix and toolPrefix).
async fn fixture_behind_muster(flags: &[&str]) -> (Process, Fleet, Muster) {
    let peers = Peers::load();
    let fixture_port = free_port();
    let fixture = Process::spawn(
        peers.python("conformance_fixture.py").arg(fixture_port.to_string()).args(flags),
        "the conformance fixture",
    );
    wait_port(fixture_port).await;
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n  musterPrefix: \"\"\n"));
    fleet.write_server(
        "fixture.yaml",
        &http_server("fixture", &format!("http://127.0.0.1:{fixture_port}/mcp"), "  toolPrefix: \"\"\n"),
    );
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    (fixture, fleet, muster)
}

/// The fixture-independent scenarios, against a fleet of real servers behind families.
#[actix_web::test]
async fn fixture_independent_scenarios_pass_against_a_real_fleet() {
    let peers = Peers::load();
    let port = free_port();
    let fleet = Fleet::new(&config(port, "  toolExposure: direct\n"));
    let mut upstreams = Vec::new();
    for cluster in ["a", "b"] {
        let p = free_port();
        upstreams.push(Process::spawn(&mut peers.kubernetes_mcp_server(p), "kubernetes-mcp-server"));
        wait_port(p).await;
        let name = format!("cluster-{cluster}-mcp-kubernetes");
        fleet.write_server(
            &format!("{name}.yaml"),
            &http_server(&name, &format!("http://127.0.0.1:{p}/mcp"), &family("kubernetes", "management_cluster")),
        );
    }
    let muster = Muster::start(&fleet, port).await;
    muster.wait_ready().await;
    let (code, output) = conformance(&muster.mcp_url(), &[]);
    assert_eq!(code, 0, "conformance failed:\n{output}");
    assert!(output.contains("TOTAL scenarios: 8 passed, 0 failed"), "{output}");
    for scenario in [
        "server-initialize",
        "ping",
        "tools-list",
        "logging-set-level",
        "resources-list",
        "prompts-list",
        "server-sse-multiple-streams",
        "dns-rebinding-protection",
    ] {
        assert!(passed(&output, scenario), "{scenario} did not pass:\n{output}");
    }
    eprintln!("{output}");
}

/// The full server suite through muster, in front of the project's fixture upstream, names
/// unchanged (empty musterPrefix and toolPrefix). Sampling and elicitation cross the gateway.
#[actix_web::test]
async fn full_suite_passes_through_the_gateway() {
    let (_fixture, _fleet, muster) = fixture_behind_muster(&[]).await;
    let (code, output) = conformance(&muster.mcp_url(), &["--full"]);
    assert_eq!(code, 0, "conformance failed:\n{output}\n--- muster log ---\n{}", muster.log_text());
    assert!(output.contains("TOTAL scenarios: 30 passed, 0 failed"), "the whole active suite passed:\n{output}");
    for scenario in [
        "tools-call-sampling",
        "tools-call-elicitation",
        "tools-call-with-progress",
        "resources-subscribe",
        "dns-rebinding-protection",
    ] {
        assert!(passed(&output, scenario), "{scenario} did not pass:\n{output}");
    }
    eprintln!("{output}");
}

/// Scenarios of the 2026-07-28 requirements that pass through muster in front of the fixture. The
/// floor only goes up: raise it with each scenario that starts passing (issue 17).
const ERA_2026_FLOOR: usize = 36;

/// What 2026-07-28 requires (`--requirements 2026-07-28`, the suite's 0.2.0 prerelease), through
/// muster in front of the fixture as above: stateless requests with per-request `_meta`.
#[actix_web::test]
async fn the_2026_requirements_pass_through_the_gateway_up_to_the_floor() {
    let (_fixture, _fleet, muster) = fixture_behind_muster(&[]).await;
    let (_, output) = conformance(&muster.mcp_url(), &["--era", "2026"]);
    let scored_passes = output.lines().filter(|line| line.starts_with("PASS ")).count();
    assert!(
        scored_passes >= ERA_2026_FLOOR,
        "{scored_passes} scored scenarios passed, the floor is {ERA_2026_FLOOR}:\n{output}\n--- muster log ---\n{}",
        muster.log_text()
    );
    for scenario in [
        "caching",
        "sep-2164-resource-not-found",
        "tools-call-with-progress",
        "dns-rebinding-protection",
        "server-stateless",
        "input-required-result-basic-sampling",
        "input-required-result-multi-round",
        "input-required-result-multiple-input-requests",
        "input-required-result-tampered-state",
        "input-required-result-capability-check",
        "input-required-result-non-tool-request",
    ] {
        assert!(passed(&output, scenario), "{scenario} did not pass:\n{output}");
    }
    eprintln!("{output}");
}

/// The scenario that needs the upstream's own keys (`user_name`): muster in front of the fixture
/// serving 2026-07-28 (`--modern`) relays the fixture's `InputRequiredResult` as it is, its
/// `requestState` sealed inside muster's ([ADR 0012](../../docs/adr/0012-upstreams-in-their-newest-revision.md)).
#[actix_web::test]
async fn a_2026_upstreams_own_input_required_passes_through_under_its_keys() {
    let (_fixture, fleet, muster) = fixture_behind_muster(&["--modern"]).await;
    assert_eq!(fleet.status("fixture.yaml")["protocolVersion"], "2026-07-28", "{}", muster.log_text());
    let scenario = "input-required-result-basic-elicitation";
    let (code, output) = conformance(&muster.mcp_url(), &["--era", "2026", "--scenario", scenario]);
    assert_eq!(code, 0, "{output}\n--- muster log ---\n{}", muster.log_text());
    assert!(passed(&output, scenario), "{scenario} did not pass:\n{output}");
    eprintln!("{output}");
}
