//! The Valkey (or Redis) backend of `Store`: one `redis::aio::ConnectionManager` (multiplexed,
//! reconnecting with backoff, every command bounded by `RESPONSE_TIMEOUT`) speaking RESP3, whose
//! push messages carry the one subscribed channel (`<keyPrefix>events`, resubscribed after a
//! reconnect) into the store's broadcast. TLS (`rediss://`) goes through rustls with aws-lc-rs:
//! redis-rs's own, trusting `caFile` or the system's store, or with `tlsServerName` our
//! `tunnel`, since redis-rs checks only the URL's host (ADR 0009).

mod tunnel;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo as _, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::broadcast;

use super::{Error, Message};

/// A command that has no answer within this fails (the caller degrades) instead of holding the
/// agent's call.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

pub(super) struct Valkey {
    manager: ConnectionManager,
    prefix: String,
    channel: String,
    /// Where the store is, for errors: host and port, never the password.
    at: String,
    /// With `tlsServerName`: what carries the manager's connections over TLS (as long as the store).
    tunnel: Option<tunnel::Tunnel>,
}

/// Forwards the channel's messages from the connection's push stream to the store's broadcast.
/// It must not block (the connection calls it), and a broadcast never does.
struct Pushes {
    channel: String,
    events: broadcast::Sender<Message>,
}

impl redis::aio::AsyncPushSender for Pushes {
    fn send(&self, info: PushInfo) -> Result<(), redis::aio::SendError> {
        if info.kind != PushKind::Message {
            return Ok(());
        }
        if let [channel, payload] = info.data.as_slice()
            && text(channel).as_deref() == Some(self.channel.as_str())
            && let Some(payload) = text(payload)
            && let Some((topic, payload)) = payload.split_once('\n')
        {
            let _ = self.events.send(Message { topic: topic.to_owned(), payload: payload.to_owned() });
        }
        Ok(())
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

impl Valkey {
    pub(super) async fn connect(
        config: &crate::config::Valkey,
        events: broadcast::Sender<Message>,
    ) -> Result<Self, Error> {
        let mut url = config.url.clone();
        if config.tls && url.starts_with("redis://") {
            url = url.replacen("redis://", "rediss://", 1);
        }
        let at =
            url.split_once("://").map_or(url.as_str(), |(_, rest)| rest).rsplit('@').next().unwrap_or("").to_owned();
        let unavailable = |reason: String| Error::Unavailable { at: at.clone(), reason };
        let (client, tunnel) = client(config, &url).await.map_err(unavailable)?;
        let channel = format!("{}events", config.key_prefix);
        let pushes = Pushes { channel: channel.clone(), events };
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(RECONNECT_MAX_DELAY)
            .set_push_sender(pushes)
            .set_automatic_resubscription();
        let mut manager =
            ConnectionManager::new_with_config(client, manager_config).await.map_err(|e| unavailable(reason(&e)))?;
        manager.subscribe(&channel).await.map_err(|e| unavailable(reason(&e)))?;
        let this = Self { manager, prefix: config.key_prefix.clone(), channel, at, tunnel };
        redis::cmd("PING").query_async::<String>(&mut this.manager.clone()).await.map_err(|e| this.error(&e))?;
        Ok(this)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A failed command: when the connection failed behind the tunnel, the tunnel knows why.
    fn error(&self, e: &redis::RedisError) -> Error {
        let behind_tunnel = (e.is_io_error() || e.is_connection_dropped())
            .then(|| self.tunnel.as_ref().and_then(tunnel::Tunnel::last_failure))
            .flatten();
        Error::Unavailable { at: self.at.clone(), reason: behind_tunnel.unwrap_or_else(|| reason(e)) }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        redis::cmd("GET").arg(self.key(key)).query_async(&mut self.manager.clone()).await.map_err(|e| self.error(&e))
    }

    pub(super) async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), Error> {
        redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut self.manager.clone())
            .await
            .map_err(|e| self.error(&e))
    }

    pub(super) async fn set_if_absent(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, Error> {
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl))
            .arg("NX")
            .query_async(&mut self.manager.clone())
            .await
            .map_err(|e| self.error(&e))?;
        Ok(set.is_some())
    }

    pub(super) async fn ping(&self) -> Result<(), Error> {
        redis::cmd("PING").query_async::<String>(&mut self.manager.clone()).await.map(drop).map_err(|e| self.error(&e))
    }

    /// `GETDEL` (Valkey, Redis 6.2 and later).
    pub(super) async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        redis::cmd("GETDEL").arg(self.key(key)).query_async(&mut self.manager.clone()).await.map_err(|e| self.error(&e))
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), Error> {
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut self.manager.clone())
            .await
            .map_err(|e| self.error(&e))
    }

    pub(super) async fn publish(&self, message: &Message) -> Result<(), Error> {
        redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(format!("{}\n{}", message.topic, message.payload))
            .query_async::<()>(&mut self.manager.clone())
            .await
            .map_err(|e| self.error(&e))
    }
}

/// redis-rs's client for `url`: with its own TLS (trusting `caFile`, else the system's store), or,
/// with `tlsServerName`, speaking plain RESP to a tunnel that carries it over TLS checking that name.
async fn client(config: &crate::config::Valkey, url: &str) -> Result<(redis::Client, Option<tunnel::Tunnel>), String> {
    let info = url.into_connection_info().map_err(|e| e.to_string())?;
    let (info, tunnel) = match (&config.tls_server_name, info.addr().clone()) {
        (Some(server_name), ConnectionAddr::TcpTls { host, port, .. }) => {
            let roots = config.ca_certificates.as_deref();
            let tunnel = tunnel::Tunnel::open(host, port, server_name, roots, CONNECT_TIMEOUT).await?;
            let local = tunnel.local();
            (info.set_addr(ConnectionAddr::Tcp(local.ip().to_string(), local.port())), Some(tunnel))
        }
        _ => (info, None),
    };
    let mut settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3).set_db(config.db);
    if let Some(password) = &config.password {
        settings = settings.set_password(password);
    }
    let info = info.set_redis_settings(settings);
    let client = match config.ca_certificates.as_ref().filter(|_| tunnel.is_none()) {
        Some(pem) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
        ),
        None => redis::Client::open(info),
    }
    .map_err(|e| e.to_string())?;
    Ok((client, tunnel))
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A store error in words, without the server's address twice or a password; a TLS failure
/// (a certificate that does not name the server, an unknown issuer) as rustls tells it.
fn reason(e: &redis::RedisError) -> String {
    if let Some(tls) = tunnel::tls_error(e) {
        tunnel::tls_reason(tls)
    } else if e.is_timeout() {
        format!("no answer within {} ms", RESPONSE_TIMEOUT.as_millis())
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "the connection failed".to_owned()
    } else {
        e.to_string()
    }
}
