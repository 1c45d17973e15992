//! Kubernetes mode against a fake API server (no kube-apiserver installs here), through the real
//! kube-rs client, watcher and reflector: resources created, changed and deleted mid-test drive
//! the catalog; status lands in the status subresource; Events are published; a `410 Gone` forces
//! a relist; an API-server outage keeps the last known state; a secret rotation is seen at once.

use std::time::Duration;

use crate::support::client::{Client, text};
use crate::support::fake_kube::FakeKube;
use crate::support::mock_upstream::MockUpstream;
use crate::support::{Fleet, Muster, config, eventually, free_port, http_server};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "muster";

async fn has_tool(client: &Client, name: &str) -> bool {
    client.tool_names().await.iter().any(|n| n == name)
}

#[actix_web::test]
async fn mcpserver_resources_drive_the_catalog_status_and_events() {
    let mut api = FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    let two = MockUpstream::start("two", free_port()).await;
    api.apply(NS, &http_server("one", &one.url(), ""));

    let port = free_port();
    let fleet = Fleet::new(&format!(
        "{}kubernetes: true\nnamespace: {NS}\nnamespaces: [other]\n",
        config(port, "  toolExposure: direct\n")
    ));
    let kubeconfig = api.kubeconfig(fleet.dir.path());
    let muster = Muster::start_with_env(&fleet, port, &[("KUBECONFIG", kubeconfig.as_os_str())]).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    assert!(has_tool(&client, "x_one_whoami").await);
    assert_eq!(text(&client.call("x_one_whoami", serde_json::json!({})).await), "one");

    // Status goes to the status subresource, with a Ready condition; Events are published.
    let status = eventually(WAIT, "status Connected", async || {
        let s = api.status(NS, "one");
        (s["state"] == "Connected").then_some(s)
    })
    .await;
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert!(status["lastConnected"].is_string(), "{status}");
    let reasons = eventually(WAIT, "events", async || {
        let r = api.event_reasons("one");
        r.contains(&"MCPServerStarted".to_owned()).then_some(r)
    })
    .await;
    assert!(reasons.contains(&"MCPServerCreated".to_owned()), "{reasons:?}");
    // Status writes come back as MODIFIED events but are not spec changes: started once.
    assert_eq!(muster.log_text().matches("starting backend server=\"one\"").count(), 1);

    // Create, change, delete, mid-test.
    api.apply(NS, &http_server("two", &two.url(), ""));
    eventually(WAIT, "x_two_whoami", async || has_tool(&client, "x_two_whoami").await.then_some(())).await;
    api.apply(NS, &http_server("two", &two.url(), "  toolPrefix: second\n"));
    eventually(WAIT, "x_second_whoami", async || {
        (has_tool(&client, "x_second_whoami").await && !has_tool(&client, "x_two_whoami").await).then_some(())
    })
    .await;
    api.delete(NS, "two");
    eventually(WAIT, "two removed", async || (!has_tool(&client, "x_second_whoami").await).then_some(())).await;
    // Events are published in the background: wait for it rather than race it.
    eventually(WAIT, "the MCPServerDeleted event", async || {
        api.event_reasons("two").contains(&"MCPServerDeleted".to_owned()).then_some(())
    })
    .await;

    // A second namespace: watched too, and its status goes back to its own namespace.
    let other = MockUpstream::start("other", free_port()).await;
    api.apply("other", &http_server("elsewhere", &other.url(), ""));
    eventually(WAIT, "x_elsewhere_whoami", async || has_tool(&client, "x_elsewhere_whoami").await.then_some(())).await;
    eventually(WAIT, "status in namespace other", async || {
        (api.status("other", "elsewhere")["state"] == "Connected").then_some(())
    })
    .await;
    // The same name in two namespaces is refused, not mixed up.
    api.apply("other", &http_server("one", &two.url(), ""));
    let refused = eventually(WAIT, "the duplicate refused", async || {
        let s = api.status("other", "one");
        s["lastError"].as_str().map(str::to_owned)
    })
    .await;
    assert!(refused.contains("already defined in mcpserver muster/one"), "{refused}");
    assert_eq!(text(&client.call("x_one_whoami", serde_json::json!({})).await), "one");

    // 410 Gone: the watcher relists and carries on.
    api.compact();
    let three = MockUpstream::start("three", free_port()).await;
    api.apply(NS, &http_server("three", &three.url(), ""));
    eventually(WAIT, "x_three_whoami after a relist", async || has_tool(&client, "x_three_whoami").await.then_some(()))
        .await;

    // The API server goes away: muster keeps serving what it knows, and resyncs when it is back.
    api.stop().await;
    eventually(WAIT, "muster to notice the outage", async || {
        muster.log_text().contains("MCPServer watch interrupted; serving the last known state").then_some(())
    })
    .await;
    assert_eq!(text(&client.call("x_one_whoami", serde_json::json!({})).await), "one");
    assert!(has_tool(&client, "x_three_whoami").await);
    api.restart();
    let four = MockUpstream::start("four", free_port()).await;
    api.apply(NS, &http_server("four", &four.url(), ""));
    eventually(Duration::from_secs(60), "x_four_whoami after the outage", async || {
        has_tool(&client, "x_four_whoami").await.then_some(())
    })
    .await;
}

#[actix_web::test]
async fn kubernetes_mode_fails_hard_when_it_cannot_list() {
    // Nothing listens on this port: muster must not fall back to the folder or serve an empty
    // fleet as ready; it reports the failure and exits (Muster #1143, #1147).
    let dead = FakeKube::start(free_port()).await;
    let port = free_port();
    let fleet = Fleet::new(&format!("{}kubernetes: true\nnamespace: {NS}\n", config(port, "")));
    // A file that filesystem mode would serve: it must be ignored.
    fleet.write_server("local.yaml", &http_server("local", "http://127.0.0.1:1/mcp", ""));
    let kubeconfig = dead.kubeconfig(fleet.dir.path());
    let mut dead = dead;
    dead.stop().await;
    let (mut child, log) = Muster::spawn(&fleet, &[("KUBECONFIG", kubeconfig.as_os_str())]);
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    let mut saw_not_ready = false;
    let status = eventually(Duration::from_secs(90), "muster to give up", async || {
        if let Ok(r) = reqwest::get(&ready_url).await {
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            assert_ne!(status, 200, "never ready without a synced list: {body}");
            // The readiness answer itself, not a refusal (e.g. of the Host) that says nothing.
            saw_not_ready |= status == 503 && body["ready"] == false;
        }
        child.try_wait().expect("wait")
    })
    .await;
    assert!(!status.success(), "exits with an error");
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(log.contains("cannot list MCPServers in namespace muster"), "{log}");
    assert!(!log.contains("loaded MCPServer definitions"), "no fallback to the folder:\n{log}");
    // Muster retries the list (with backoff) before giving up, serving /readyz meanwhile: it must
    // have said "not ready" at least once, or the check above proved nothing.
    assert!(log.contains("listing MCPServers failed"), "{log}");
    assert!(saw_not_ready, "/readyz never answered 503 with ready: false before muster exited:\n{log}");
}

/// Client credentials come from the Secret API; a rotated secret is read on the next lookup.
#[actix_web::test]
async fn secrets_are_read_through_the_api_and_rotation_is_seen() {
    let api = FakeKube::start(free_port()).await;
    api.set_secret(NS, "cluster-a-creds", &[("client-id", "muster"), ("client-secret", "first")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = api.kubeconfig(dir.path());
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
        &options,
    )
    .await
    .expect("config");
    let client = kube::Client::try_from(config).expect("client");
    let store = muster::auth::secrets::SecretStore::Kubernetes { client };
    let creds = store.credentials(NS, "cluster-a-creds", "client-id", "client-secret").await.expect("secret");
    assert_eq!((creds.client_id.as_str(), creds.client_secret.expose()), ("muster", "first"));
    api.set_secret(NS, "cluster-a-creds", &[("client-id", "muster"), ("client-secret", "rotated")]);
    let creds = store.credentials(NS, "cluster-a-creds", "client-id", "client-secret").await.expect("secret");
    assert_eq!(creds.client_secret.expose(), "rotated");
    let missing = store.credentials(NS, "nope", "client-id", "client-secret").await.expect_err("missing");
    assert!(missing.to_string().contains("secret muster/nope was not found"), "{missing}");
}

/// Two replicas against one API server (issue 16 item 5): only the holder of the leader Lease
/// writes status and publishes Events, though both serve. When the leader stops (SIGTERM) it
/// hands the Lease back and the other takes over at once and writes every server's status; when
/// a leader dies without a word (SIGKILL), another takes over after the lease duration.
#[actix_web::test]
async fn only_the_leader_writes_status_and_another_replica_takes_over() {
    let api = FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    api.apply(NS, &http_server("one", &one.url(), ""));
    let replica = async |pod: &str| {
        let port = free_port();
        let fleet =
            Fleet::new(&format!("{}kubernetes: true\nnamespace: {NS}\n", config(port, "  toolExposure: direct\n")));
        // The pod name is the bearer token too, so the fake API server tells the writers apart.
        let kubeconfig = api.kubeconfig_as(fleet.dir.path(), pod);
        let env = [("KUBECONFIG", kubeconfig.as_os_str()), ("POD_NAME", std::ffi::OsStr::new(pod))];
        let muster = Muster::start_with_env(&fleet, port, &env).await;
        muster.wait_ready().await;
        (muster, fleet)
    };
    let holder = || api.lease_holder(NS, "muster-leader");

    let (mut a, _fleet_a) = replica("muster-a").await;
    assert_eq!(holder().as_deref(), Some("muster-a"), "a lone replica leads from its start:\n{}", a.log_text());
    eventually(WAIT, "one Connected, written by muster-a", async || {
        (api.status(NS, "one")["state"] == "Connected").then_some(())
    })
    .await;
    let (b, _fleet_b) = replica("muster-b").await;
    let on_b = Client::connect(&b.mcp_url()).await;
    assert_eq!(text(&on_b.call("x_one_whoami", serde_json::json!({})).await), "one", "a follower serves");
    // A server both replicas start while both run: each has a status and events to tell, and
    // only the leader tells them.
    let two = MockUpstream::start("two", free_port()).await;
    api.apply(NS, &http_server("two", &two.url(), ""));
    eventually(WAIT, "two on muster-b", async || has_tool(&on_b, "x_two_whoami").await.then_some(())).await;
    eventually(WAIT, "two Connected and its Started event", async || {
        (api.status(NS, "two")["state"] == "Connected"
            && api.event_reasons("two").contains(&"MCPServerStarted".to_owned()))
        .then_some(())
    })
    .await;
    assert_eq!(holder().as_deref(), Some("muster-a"));
    assert!(api.status_writers().iter().all(|w| w == "muster-a"), "{:?}", api.status_writers());
    assert!(api.event_writers().iter().all(|w| w == "muster-a"), "{:?}", api.event_writers());
    assert!(!api.status_written_by("muster-a").is_empty());

    // A graceful stop hands the Lease back: muster-b leads well before the lease would expire
    // (15 s), and writes what it knows of every server.
    let stopped_at = std::time::Instant::now();
    let pid = a.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    eventually(WAIT, "muster-b to lead", async || (holder().as_deref() == Some("muster-b")).then_some(())).await;
    assert!(
        stopped_at.elapsed() < Duration::from_secs(10),
        "took {:?}: the lease was not released",
        stopped_at.elapsed()
    );
    eventually(WAIT, "muster-b to write both statuses", async || {
        let written = api.status_written_by("muster-b");
        (written.contains(&"one".to_owned()) && written.contains(&"two".to_owned())).then_some(())
    })
    .await;
    let child = &mut a.child;
    let exited = eventually(WAIT, "muster-a to exit", async || child.try_wait().expect("try_wait")).await;
    assert!(exited.success(), "{}", a.log_text());
    assert!(a.log_text().contains("released the leader lease"), "{}", a.log_text());
    // Handed back by muster-a itself (no holder), then taken by muster-b.
    let writes = api.lease_writes();
    let released = writes.iter().position(|w| *w == ("muster-a".to_owned(), None)).expect("released");
    assert_eq!(writes[released + 1], ("muster-b".to_owned(), Some("muster-b".to_owned())), "{writes:?}");
    assert_eq!(api.status(NS, "two")["state"], "Connected");

    // muster-c joins as a follower; muster-b dies without releasing: muster-c takes over once the
    // Lease has stayed unchanged for its duration, not before.
    let (c, _fleet_c) = replica("muster-c").await;
    assert_eq!(holder().as_deref(), Some("muster-b"));
    let mut b = b;
    b.child.kill().expect("SIGKILL muster-b");
    let killed_at = std::time::Instant::now();
    eventually(Duration::from_secs(45), "muster-c to lead", async || {
        (holder().as_deref() == Some("muster-c")).then_some(())
    })
    .await;
    assert!(killed_at.elapsed() >= Duration::from_secs(10), "took over a live lease after {:?}", killed_at.elapsed());
    eventually(WAIT, "muster-c to write the statuses", async || {
        (api.status_written_by("muster-c").len() >= 2).then_some(())
    })
    .await;
    let on_c = Client::connect(&c.mcp_url()).await;
    assert_eq!(text(&on_c.call("x_two_whoami", serde_json::json!({})).await), "two");
}
