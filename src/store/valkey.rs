//! The Valkey (or Redis) backend of `Store`: one `redis::aio::ConnectionManager` (multiplexed,
//! reconnecting with backoff, every command bounded by `RESPONSE_TIMEOUT`) speaking RESP3, whose
//! push messages carry the one subscribed channel (`<keyPrefix>events`, resubscribed after a
//! reconnect) into the store's broadcast. TLS (`rediss://`) goes through rustls with aws-lc-rs.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo as _, ProtocolVersion, PushInfo, PushKind, Value};
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
        let info = url.as_str().into_connection_info().map_err(|e| unavailable(e.to_string()))?;
        let mut settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3).set_db(config.db);
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        let info = info.set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(|e| unavailable(e.to_string()))?;
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
        let this = Self { manager, prefix: config.key_prefix.clone(), channel, at };
        redis::cmd("PING").query_async::<String>(&mut this.manager.clone()).await.map_err(|e| this.error(&e))?;
        Ok(this)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error(&self, e: &redis::RedisError) -> Error {
        Error::Unavailable { at: self.at.clone(), reason: reason(e) }
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

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A store error in words, without the server's address twice or a password.
fn reason(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        format!("no answer within {} ms", RESPONSE_TIMEOUT.as_millis())
    } else if e.is_connection_refusal() {
        "connection refused".to_owned()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "the connection failed".to_owned()
    } else {
        e.to_string()
    }
}
