//! Token-exchange cache benchmark: 1,000 agent sessions × 10 users × 3 clusters.
//!
//!     cargo run --release --example exchange_bench
//!
//! Each agent session belongs to one of 10 users and asks for its user's token at each of 3
//! clusters, `ROUNDS` times, all concurrently. A local RFC 8693 endpoint counts exchanges. Prints
//! the exchange count (the cache's promise: one per user and cluster) and the latency of a cached
//! lookup, which is what every upstream call of a signed-in user pays.

#![allow(clippy::print_stdout, clippy::expect_used, clippy::unwrap_used, reason = "a benchmark binary")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use muster::auth::exchange::{ExchangeTarget, Exchanger};
use muster::auth::secrets::SecretStore;
use muster::auth::{Identity, Secret};

const SESSIONS: usize = 1_000;
const USERS: usize = 10;
const CLUSTERS: usize = 3;
const ROUNDS: usize = 20;

async fn token(counter: web::Data<AtomicU64>) -> HttpResponse {
    let n = counter.fetch_add(1, Ordering::SeqCst);
    // A small delay, like a real IdP on the same network.
    tokio::time::sleep(Duration::from_millis(5)).await;
    HttpResponse::Ok().json(serde_json::json!({
        "access_token": format!("opaque-token-{n}"),
        "issued_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "token_type": "bearer",
        "expires_in": 300,
    }))
}

#[actix_web::main]
async fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let counter = web::Data::new(AtomicU64::new(0));
    let data = counter.clone();
    let server = HttpServer::new(move || App::new().app_data(data.clone()).route("/token", web::post().to(token)))
        .workers(1)
        .bind(("127.0.0.1", 0))
        .expect("bind");
    let port = server.addrs()[0].port();
    actix_web::rt::spawn(server.run());

    let dir = std::env::temp_dir();
    let exchanger = Exchanger::new(
        muster::auth::idp_client().expect("client"),
        SecretStore::new(&dir),
        false,
        &muster::store::Store::local(),
        muster::store::Keyring::new(&[]),
    );
    let targets: Vec<ExchangeTarget> = (0..CLUSTERS)
        .map(|c| {
            let spec = muster::crd::TokenExchange {
                enabled: true,
                dex_token_endpoint: Some(format!("http://127.0.0.1:{port}/token")),
                connector_id: Some("central-dex".into()),
                // Each cluster its own expected issuer and audience, as separate IdPs would be.
                expected_issuer: Some(format!("http://cluster-{c}.example")),
                ..Default::default()
            };
            let mut target = ExchangeTarget::from_spec(&format!("cluster-{c}"), "muster", &spec).expect("target");
            target.audiences = vec![format!("cluster-{c}")];
            target
        })
        .collect();
    let targets = Arc::new(targets);
    let users: Vec<Identity> = (0..USERS)
        .map(|u| Identity {
            subject: format!("user-{u}"),
            issuer: "central".into(),
            token: Secret::new(format!("central-token-{u}")),
            expires_at: u64::MAX,
            groups: Vec::new(),
        })
        .collect();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for session in 0..SESSIONS {
        let (exchanger, targets, identity) = (exchanger.clone(), targets.clone(), users[session % USERS].clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(ROUNDS * CLUSTERS);
            for _ in 0..ROUNDS {
                for target in targets.iter() {
                    let t = Instant::now();
                    exchanger.token(target, &identity).await.expect("token");
                    latencies.push(t.elapsed());
                }
                tokio::task::yield_now().await;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("join"));
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p) as usize];
    // Cached lookups alone (after the first round, every lookup is a hit).
    let hit_started = Instant::now();
    let mut hits = Vec::with_capacity(30_000);
    for i in 0..30_000 {
        let t = Instant::now();
        exchanger.token(&targets[i % CLUSTERS], &users[i % USERS]).await.expect("token");
        hits.push(t.elapsed());
    }
    let hit_elapsed = hit_started.elapsed();
    hits.sort();
    let hit_pct = |p: f64| hits[((hits.len() as f64 - 1.0) * p) as usize];
    println!("sessions={SESSIONS} users={USERS} clusters={CLUSTERS} rounds={ROUNDS} lookups={}", all.len());
    println!("exchanges={} (expected {})", counter.load(Ordering::SeqCst), USERS * CLUSTERS);
    println!(
        "concurrent run: {:.1} ms total, lookup p50 {:?} p99 {:?} max {:?}",
        elapsed.as_secs_f64() * 1e3,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "cached lookup, one at a time: p50 {:?} p99 {:?} mean {:?}",
        hit_pct(0.5),
        hit_pct(0.99),
        hit_elapsed / u32::try_from(hits.len()).unwrap_or(1)
    );
}
