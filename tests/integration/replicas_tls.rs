//! The replicas' store over TLS, to a real `redis-server` listening with TLS only, whose
//! certificate (from a CA made here with openssl) names `valkey.internal` and nothing else, reached
//! at `rediss://127.0.0.1:PORT` (ADR 0009):
//! - with `tlsServerName: valkey.internal` and the CA as `caFile`, two replicas share a session
//!   through it (a `DELETE` on one ends it on the other), also after the store restarts;
//! - without `tlsServerName`, with another name, or without the CA, muster does not start and says
//!   which store and which certificate check failed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use crate::replicas::{SESSION_KEY, copies, one_cluster, open_session, send, store_state};
use crate::support::{Fleet, Muster, Peers, Process, config, eventually, free_port, wait_port};

/// A `redis-server` on a private loopback port, TLS only (`--port 0`), no client certificates.
struct TlsValkey {
    server: std::path::PathBuf,
    dir: tempfile::TempDir,
    process: Option<Process>,
    port: u16,
}

impl TlsValkey {
    /// `None` when redis-server or openssl is not installed (see [`Peers::system`]).
    async fn start(peers: &Peers) -> Option<Self> {
        let server = peers.system("MUSTER_REDIS_SERVER", "redis-server")?;
        let openssl = peers.system("MUSTER_OPENSSL", "openssl")?;
        let dir = tempfile::tempdir().expect("tempdir");
        make_certificates(&openssl, dir.path());
        let mut valkey = Self { server, dir, process: None, port: free_port() };
        valkey.restart().await;
        Some(valkey)
    }

    /// Kills the server (SIGKILL: no goodbye to its clients).
    fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the server (again) on its port.
    async fn restart(&mut self) {
        let file = |name: &str| self.dir.path().join(name);
        let process = Process::spawn(
            Command::new(&self.server)
                .args(["--port", "0", "--tls-port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(["--tls-auth-clients", "no", "--tls-cert-file"])
                .arg(file("server.pem"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.pem"))
                .arg("--dir")
                .arg(self.dir.path()),
            "redis-server (scripts/install-peers.sh installs it)",
        );
        wait_port(self.port).await;
        self.process = Some(process);
    }

    /// The `aggregator` keys that point a replica at this store with `valkey` (more keys).
    fn config(&self, valkey: &str) -> String {
        format!(
            "  storage:\n    type: valkey\n    valkey:\n      url: rediss://127.0.0.1:{}\n{valkey}  sessions:\n    keyFile: session-keys\n",
            self.port
        )
    }

    /// The CA's certificate, to copy next to a replica's config.
    fn ca(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("ca.pem")).expect("ca.pem")
    }
}

/// `ca.pem` (a CA) and `server.pem`/`server.key`, signed by it for `valkey.internal` only.
fn make_certificates(openssl: &Path, dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new(openssl)
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}: {status}");
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"],
        &key[..],
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=muster test CA"],
        &["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
    ]
    .concat());
    run(&[
        &["req"],
        &key[..],
        &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=valkey.internal"],
        &["-addext", "subjectAltName=DNS:valkey.internal"],
    ]
    .concat());
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-copy_extensions",
        "copy",
    ]);
}

/// Starts muster on `valkey` with `keys` (and the CA as `ca.pem`), expects it to stop, and
/// returns its log.
async fn refused(valkey: &TlsValkey, keys: &str) -> String {
    let fleet = Fleet::new(&config(free_port(), &valkey.config(keys)));
    std::fs::write(fleet.dir.path().join("session-keys"), SESSION_KEY).expect("keys");
    std::fs::write(fleet.dir.path().join("ca.pem"), valkey.ca()).expect("ca");
    let (mut child, log) = Muster::spawn(&fleet, &[]);
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    let log = std::fs::read_to_string(log).expect("log");
    assert!(!status.success(), "muster started with {keys:?}: {log}");
    log
}

#[actix_web::test]
async fn replicas_share_a_store_whose_certificate_names_the_tls_server_name() {
    let Some(mut valkey) = TlsValkey::start(&Peers::load()).await else { return };
    let (fleet, _upstream) = one_cluster().await;
    std::fs::write(fleet.dir.path().join("ca.pem"), valkey.ca()).expect("ca");
    let keys = valkey.config("      tlsServerName: valkey.internal\n      caFile: ca.pem\n");
    let replicas = copies(&fleet, &keys, 2).await;
    for (_, muster) in &replicas {
        assert_eq!(store_state(muster).await, "up");
    }

    let (r0, r1) = (&replicas[0].1, &replicas[1].1);
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let delete = async |muster: &Muster, session: &str| {
        let deleted = reqwest::Client::new()
            .delete(muster.mcp_url())
            .header("mcp-session-id", session)
            .send()
            .await
            .expect("delete");
        assert_eq!(deleted.status(), 200);
    };

    let session = open_session(r0).await;
    let (status, _) = send(r1, Some(&session), json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    assert_eq!(status, 202, "the other replica finds the session in the store");
    delete(r0, &session).await;
    let (status, body) = send(r1, Some(&session), ping.clone()).await;
    assert_eq!(status, 404, "the DELETE reached the other replica through the store: {body}");

    // The store restarts: the replicas reconnect through TLS, checked again, and subscribe again.
    valkey.stop();
    let during = open_session(r0).await;
    assert_eq!(store_state(r0).await, "down");
    valkey.restart().await;
    for muster in [r0, r1] {
        eventually(Duration::from_secs(10), "the store is up again", async || {
            (store_state(muster).await == "up").then_some(())
        })
        .await;
    }
    assert_eq!(send(r0, Some(&during), ping.clone()).await.0, 200);
    delete(r1, &during).await;
    eventually(Duration::from_secs(5), "the session ended on r0", async || {
        (send(r0, Some(&during), ping.clone()).await.0 == 404).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn replicas_refuse_a_store_whose_certificate_names_another_host() {
    let Some(valkey) = TlsValkey::start(&Peers::load()).await else { return };
    let at = format!("the shared store at 127.0.0.1:{} is unavailable: TLS: ", valkey.port);

    let log = refused(&valkey, "      caFile: ca.pem\n").await;
    let mismatch = r#"invalid peer certificate: certificate not valid for name "127.0.0.1"; certificate is only valid for DnsName("valkey.internal")"#;
    assert!(log.contains(&format!("{at}{mismatch}")), "{log}");
    assert!(log.contains("(set tlsServerName to a name the certificate is for)"), "{log}");

    let log = refused(&valkey, "      tlsServerName: other.internal\n      caFile: ca.pem\n").await;
    assert!(
        log.contains(&format!(r#"{at}invalid peer certificate: certificate not valid for name "other.internal""#)),
        "{log}"
    );

    let log = refused(&valkey, "      tlsServerName: valkey.internal\n").await;
    assert!(log.contains(&format!("{at}invalid peer certificate: UnknownIssuer")), "{log}");
    assert!(log.contains("(set caFile to the CA that signed it)"), "{log}");
}
