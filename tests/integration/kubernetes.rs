//! Kubernetes mode against a fake API server (no kube-apiserver installs here), through the real
//! kube-rs client, watcher and reflector: resources created, changed and deleted mid-test drive
//! the catalog; status lands in the status subresource; Events are published; a `410 Gone` forces
//! a relist; an API-server outage keeps the last known state; a secret rotation is seen at once.
//! Workflow resources become `workflow_<name>` tools with their status written back, and each run
//! leaves a WorkflowExecution resource, capped and pruned as files are.

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

/// A ready muster in Kubernetes mode on `api`, namespace `NS`, direct tool exposure.
async fn muster_on(api: &FakeKube) -> (Fleet, Muster) {
    let port = free_port();
    let fleet = Fleet::new(&format!("{}kubernetes: true\nnamespace: {NS}\n", config(port, "  toolExposure: direct\n")));
    let kubeconfig = api.kubeconfig(fleet.dir.path());
    let muster = Muster::start_with_env(&fleet, port, &[("KUBECONFIG", kubeconfig.as_os_str())]).await;
    muster.wait_ready().await;
    (fleet, muster)
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
    assert!(
        log.contains("cannot list MCPServers in namespace muster")
            || log.contains("cannot list Workflows in namespace muster"),
        "{log}"
    );
    assert!(!log.contains("loaded MCPServer definitions"), "no fallback to the folder:\n{log}");
    // Muster retries the list (with backoff) before giving up, serving /readyz meanwhile: it must
    // have said "not ready" at least once, or the check above proved nothing.
    assert!(log.contains("listing MCPServers failed"), "{log}");
    assert!(saw_not_ready, "/readyz never answered 503 with ready: false before muster exited:\n{log}");
}

const HELLO: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata: {name: hello, namespace: muster}
spec:
  description: Says hello through one
  args:
    text: {type: string, required: true}
  steps:
    - id: greet
      tool: x_one_echo
      args: {text: \"{{ .input.text }}\"}
      output: true
";

/// Invalid twice over: an unknown `fromStep`, and a step with both `tool` and `parallel`.
const BROKEN: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: Workflow
metadata: {name: broken, namespace: muster}
spec:
  steps:
    - id: first
      tool: x_one_whoami
      condition: {fromStep: nowhere, expect: {success: true}}
    - id: second
      tool: x_one_whoami
      parallel: [{id: inner, tool: x_one_whoami}]
";

#[actix_web::test]
async fn workflow_resources_become_tools_and_get_their_status() {
    let api = FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    api.apply(NS, &http_server("one", &one.url(), ""));
    api.apply(NS, HELLO);
    api.apply(NS, BROKEN);
    let (_fleet, muster) = muster_on(&api).await;
    let client = Client::connect(&muster.mcp_url()).await;

    eventually(WAIT, "workflow_hello", async || has_tool(&client, "workflow_hello").await.then_some(())).await;
    let ran = client.call("workflow_hello", serde_json::json!({"text": "hi"})).await;
    assert_ne!(ran.is_error, Some(true), "{}", text(&ran));
    assert!(text(&ran).contains("one:hi"), "{}", text(&ran));
    assert!(!has_tool(&client, "workflow_broken").await, "an invalid workflow is no tool");

    // Status lands in each Workflow's status subresource.
    let status = eventually(WAIT, "hello's status", async || {
        let s = api.status_of("workflows", NS, "hello");
        s["valid"].is_boolean().then_some(s)
    })
    .await;
    assert_eq!(status, serde_json::json!({"valid": true, "referencedTools": ["x_one_echo"], "stepCount": 1}));
    let broken = eventually(WAIT, "broken's status", async || {
        let s = api.status_of("workflows", NS, "broken");
        s["valid"].is_boolean().then_some(s)
    })
    .await;
    assert_eq!(broken["valid"], false, "{broken}");
    let errors = broken["validationErrors"].to_string();
    assert!(errors.contains("spec.steps[first].condition.fromStep"), "{errors}");
    assert!(errors.contains("spec.steps[second]"), "{errors}");
    assert_eq!(broken["stepCount"], 2);

    // A changed spec is written once more; muster's own writes, which come back as changes, are
    // not written again (no feedback loop), and broken's unchanged status is left alone.
    let before = api.status_patches("workflows");
    api.apply(NS, &HELLO.replace("output: true", "output: true\n    - {id: again, tool: x_one_whoami}"));
    eventually(WAIT, "hello's new stepCount", async || {
        (api.status_of("workflows", NS, "hello")["stepCount"] == 2).then_some(())
    })
    .await;
    // A barrier: statuses are written in order, by one task, so once a later workflow's status
    // is there, any rewrite that hello's write set off would have been sent too.
    api.apply(NS, &HELLO.replace("name: hello", "name: later"));
    eventually(WAIT, "later's status", async || api.status_of("workflows", NS, "later")["valid"].as_bool()).await;
    assert_eq!(api.status_patches("workflows"), before + 2, "status written again without a change");

    api.delete_resource("workflows", NS, "hello");
    eventually(WAIT, "workflow_hello removed", async || (!has_tool(&client, "workflow_hello").await).then_some(()))
        .await;
}

#[actix_web::test]
async fn management_tools_create_update_and_delete_resources_through_the_api() {
    let api = FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    let two = MockUpstream::start("two", free_port()).await;
    api.apply(NS, &http_server("one", &one.url(), ""));
    let (_fleet, muster) = muster_on(&api).await;
    // Sign-in is off and the connection is a loopback one: an administrator.
    let client = Client::connect(&muster.mcp_url()).await;
    let json = |result: &rmcp::model::CallToolResult| -> serde_json::Value {
        assert_ne!(result.is_error, Some(true), "{}", text(result));
        serde_json::from_str(&text(result)).expect("a JSON answer")
    };

    let spec = serde_json::json!({"name": "two", "type": "streamable-http", "url": two.url(), "autoStart": true});
    let created = json(&client.call("core_mcpserver_create", spec.clone()).await);
    assert_eq!(created["resource"], "mcpserver muster/two", "{created}");
    assert_eq!(created["status"]["state"], "Connected", "{created}");
    let object = api.object("mcpservers", NS, "two").expect("an MCPServer resource in muster's namespace");
    assert_eq!(object["spec"]["url"], two.url());
    assert!(has_tool(&client, "x_two_echo").await, "the new server's tools are listed once create answers");
    let again = client.call("core_mcpserver_create", spec).await;
    assert_eq!(again.is_error, Some(true));
    assert!(text(&again).contains("exists already"), "{}", text(&again));

    // An update replaces the spec over what is there, and keeps the status muster wrote.
    eventually(WAIT, "two's status", async || {
        api.status_of("mcpservers", NS, "two")["state"].as_str().map(str::to_owned)
    })
    .await;
    json(&client.call("core_mcpserver_update", serde_json::json!({"name": "two", "description": "the second"})).await);
    let object = api.object("mcpservers", NS, "two").expect("still there");
    assert_eq!(
        (&object["spec"]["description"], &object["spec"]["url"]),
        (&serde_json::json!("the second"), &serde_json::json!(two.url()))
    );
    assert!(object["status"]["state"].is_string(), "{object}");
    let listed = json(&client.call("core_mcpserver_list", serde_json::json!({})).await);
    assert_eq!(listed["mode"], "kubernetes");

    // Workflows: created as resources, listed from the watched set, run, changed and deleted.
    let workflow = serde_json::json!({"name": "greet", "description": "hello through two",
        "steps": [{"id": "say", "tool": "x_two_echo", "args": {"text": "hi"}, "output": true}]});
    let created = json(&client.call("core_workflow_create", workflow).await);
    assert_eq!(created["resource"], "workflow muster/greet", "{created}");
    assert_eq!(
        api.object("workflows", NS, "greet").expect("a Workflow resource")["spec"]["steps"][0]["tool"],
        "x_two_echo"
    );
    eventually(WAIT, "workflow_greet", async || has_tool(&client, "workflow_greet").await.then_some(())).await;
    let listed = json(&client.call("core_workflow_list", serde_json::json!({})).await);
    assert_eq!(listed["workflows"][0]["name"], "greet", "{listed}");
    assert_eq!(listed["workflows"][0]["available"], true, "{listed}");
    let ran = client.call("workflow_greet", serde_json::json!({})).await;
    assert!(text(&ran).contains("two:hi"), "{}", text(&ran));
    json(
        &client
            .call(
                "core_workflow_update",
                serde_json::json!({"name": "greet", "description": "changed",
        "steps": [{"id": "say", "tool": "x_one_echo", "args": {"text": "hi"}}]}),
            )
            .await,
    );
    assert_eq!(api.object("workflows", NS, "greet").expect("still there")["spec"]["description"], "changed");
    let deleted = json(&client.call("core_workflow_delete", serde_json::json!({"name": "greet"})).await);
    assert_eq!(deleted["resource"], "workflow muster/greet");
    assert!(api.object("workflows", NS, "greet").is_none());
    // The leader publishes the workflow's lifecycle as Kubernetes Events, as for MCPServers.
    let reasons = eventually(WAIT, "greet's Events", async || {
        let reasons = api.event_reasons("greet");
        reasons.contains(&"WorkflowDeleted".to_owned()).then_some(reasons)
    })
    .await;
    assert_eq!(reasons, ["WorkflowCreated", "WorkflowUpdated", "WorkflowDeleted"]);

    let deleted = json(&client.call("core_mcpserver_delete", serde_json::json!({"name": "two"})).await);
    assert_eq!(deleted["deleted"], "two");
    assert!(api.object("mcpservers", NS, "two").is_none());
    assert!(!has_tool(&client, "x_two_echo").await, "delete answers once the tools are gone");
    let gone = client.call("core_mcpserver_delete", serde_json::json!({"name": "two"})).await;
    assert!(text(&gone).contains("no MCP server named \"two\""), "{}", text(&gone));
}

/// A record of muster's from 30 days ago: retention removes it.
const OLD_RECORD: &str = "apiVersion: muster.giantswarm.io/v1alpha1
kind: WorkflowExecution
metadata: {name: 00000000-0000-4000-8000-000000000000, namespace: muster}
spec: {workflowName: hello, status: completed, startedAt: \"2020-01-01T00:00:00Z\", durationMs: 5}
";

#[actix_web::test]
async fn each_run_is_a_workflow_execution_resource_read_back_through_the_core_tools() {
    let api = FakeKube::start(free_port()).await;
    let one = MockUpstream::start("one", free_port()).await;
    api.apply(NS, &http_server("one", &one.url(), ""));
    let big = HELLO.replace("name: hello", "name: big").replace(
        "output: true",
        "output: true
    - {id: large, tool: x_one_big, args: {bytes: 400000}}",
    );
    api.apply(NS, &big);
    api.apply(NS, OLD_RECORD);
    let port = free_port();
    // Muster's own namespace is `namespace`, even when `namespaces` names it later.
    let fleet = Fleet::new(&format!(
        "{}kubernetes: true\nnamespace: {NS}\nnamespaces: [other, {NS}]\n",
        config(port, "  toolExposure: direct\n")
    ));
    let kubeconfig = api.kubeconfig(fleet.dir.path());
    let muster = Muster::start_with_env(&fleet, port, &[("KUBECONFIG", kubeconfig.as_os_str())]).await;
    muster.wait_ready().await;
    let client = Client::connect(&muster.mcp_url()).await;
    eventually(WAIT, "workflow_big", async || has_tool(&client, "workflow_big").await.then_some(())).await;

    let ran = client.call("workflow_big", serde_json::json!({"text": "hi"})).await;
    assert_ne!(ran.is_error, Some(true), "{}", text(&ran));
    let answer: serde_json::Value = serde_json::from_str(&text(&ran)).expect("a JSON answer");
    let id = answer["execution_id"].as_str().expect("an execution id").to_owned();
    let resource = api.object("workflowexecutions", NS, &id).expect("the record is a resource in muster's namespace");
    assert_eq!(resource["kind"], "WorkflowExecution");
    assert_eq!(resource["spec"]["workflowName"], "big");
    assert_eq!(resource["spec"]["status"], "completed");
    assert_eq!(resource["spec"]["truncated"], true, "a 400 KB result is cut");
    assert!(resource.to_string().len() <= 300 * 1024, "{} bytes", resource.to_string().len());

    let got =
        client.call("core_workflow_execution_get", serde_json::json!({"execution_id": id, "step_id": "large"})).await;
    assert_ne!(got.is_error, Some(true), "{}", text(&got));
    assert!(text(&got).contains("[truncated: payload exceeded retention size limit]"), "{}", text(&got));
    let failed = client.call("workflow_big", serde_json::json!({})).await;
    assert_eq!(failed.is_error, Some(true), "the required argument is missing");
    let failures = client.call("core_workflow_execution_list", serde_json::json!({"status": "failed"})).await;
    let failures: serde_json::Value = serde_json::from_str(&text(&failures)).expect("JSON");
    assert_eq!(failures["total"], 1, "{failures}");
    assert!(failures["executions"][0]["error"].as_str().unwrap_or_default().contains("required field 'text'"));

    // Retention ran after the first record: the 30-day-old one is gone, the new ones stay.
    eventually(WAIT, "the old record deleted", async || {
        api.object("workflowexecutions", NS, "00000000-0000-4000-8000-000000000000").is_none().then_some(())
    })
    .await;
    let all = client.call("core_workflow_execution_list", serde_json::json!({})).await;
    let all: serde_json::Value = serde_json::from_str(&text(&all)).expect("JSON");
    assert_eq!(all["total"], 2, "{all}");
    assert_eq!(all["executions"][1]["id"], id, "newest first");
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
