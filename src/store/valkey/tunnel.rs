//! TLS to a Valkey whose certificate names another host than the URL's (`tlsServerName`, ADR 0009).
//! redis-rs's `ConnectionManager` checks the certificate against the URL's host and takes no DNS
//! resolver, so it speaks plain RESP to a listener on 127.0.0.1 in this process, and every
//! connection it opens there is carried to the URL's host and port over TLS (rustls, aws-lc-rs)
//! that checks the certificate against `tlsServerName`. The manager keeps its reconnection,
//! backoff and resubscription: a connection whose TLS side ends is closed, and it reconnects.

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a failed `accept` (out of descriptors) waits before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A listener on loopback that carries each connection to the server over TLS. Stops on drop.
pub(super) struct Tunnel {
    local: SocketAddr,
    target: Arc<Target>,
    task: tokio::task::JoinHandle<()>,
}

/// Where and how a connection is carried.
struct Target {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    timeout: Duration,
    /// Why the last connection could not be carried (until one is), for the store's errors.
    last_failure: Mutex<Option<String>>,
}

impl Tunnel {
    /// Connects once (so a wrong name or an unknown issuer fails here, in words) and listens.
    /// `roots` are the PEM certificates of `caFile`, else the system's store is used.
    pub(super) async fn open(
        host: String,
        port: u16,
        server_name: &str,
        roots: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let server_name =
            ServerName::try_from(server_name.to_owned()).map_err(|e| format!("tlsServerName {server_name:?}: {e}"))?;
        let connector = TlsConnector::from(Arc::new(client_config(roots)?));
        let target = Arc::new(Target { host, port, server_name, connector, timeout, last_failure: Mutex::new(None) });
        let first = target.connect().await?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| format!("listening on loopback for the TLS connection: {e}"))?;
        let local = listener.local_addr().map_err(|e| format!("listening on loopback for the TLS connection: {e}"))?;
        let task = tokio::spawn(serve(listener, Arc::clone(&target), first));
        Ok(Self { local, target, task })
    }

    /// The address redis-rs connects to, in plain RESP.
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Why the last connection could not be carried, if the last attempt failed.
    pub(super) fn last_failure(&self) -> Option<String> {
        self.target.last_failure.lock().ok().and_then(|failure| failure.clone())
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    async fn connect(&self) -> Result<TlsStream<TcpStream>, String> {
        let connect = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| describe(&e))?;
            let _ = tcp.set_nodelay(true);
            self.connector.connect(self.server_name.clone(), tcp).await.map_err(|e| describe(&e))
        };
        let result = match tokio::time::timeout(self.timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(format!("no TLS connection within {} ms", self.timeout.as_millis())),
        };
        if let Ok(mut last_failure) = self.last_failure.lock() {
            *last_failure = result.as_ref().err().cloned();
        }
        result
    }
}

/// Accepts redis-rs's connections; the first takes the connection `open` made.
async fn serve(listener: TcpListener, target: Arc<Target>, first: TlsStream<TcpStream>) {
    let mut first = Some(first);
    loop {
        let Ok((mut plain, _)) = listener.accept().await else {
            // Out of descriptors, most likely: wait for some to close rather than spin.
            tokio::time::sleep(ACCEPT_RETRY).await;
            continue;
        };
        let first = first.take();
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            let tls = match first {
                Some(tls) => tls,
                None => match target.connect().await {
                    Ok(tls) => tls,
                    Err(reason) => {
                        tracing::debug!(%reason, "the shared store's TLS connection failed");
                        return;
                    }
                },
            };
            let mut tls = tls;
            let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
        });
    }
}

/// rustls with aws-lc-rs, trusting `roots` (PEM) or the system's store as redis-rs does.
fn client_config(roots: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let certificates = match roots {
        Some(pem) => {
            CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("caFile: {e}"))?
        }
        None => rustls_native_certs::load_native_certs().certs,
    };
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(certificates);
    if store.is_empty() {
        return Err("no trusted certificate authority (set caFile, or install the system's CA bundle)".to_owned());
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
        .map(|builder| builder.with_root_certificates(store).with_no_client_auth())
}

/// An I/O error of a connection in words: the TLS error when there is one (a certificate that
/// does not name the server, an unknown issuer), else the error itself.
fn describe(e: &std::io::Error) -> String {
    tls_error(e).map_or_else(|| e.to_string(), tls_reason)
}

/// A TLS failure in words, saying which setting fixes a failed certificate check.
pub(super) fn tls_reason(tls: &rustls::Error) -> String {
    use rustls::CertificateError;
    let hint = match tls {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => " (set tlsServerName to a name the certificate is for)",
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => " (set caFile to the CA that signed it)",
        _ => "",
    };
    format!("TLS: {tls}{hint}")
}

/// The rustls error behind `e`, if any. An `io::Error`'s `source` skips the error it wraps, and
/// redis-rs wraps its I/O errors in an `Arc`, so both are looked into.
pub(super) fn tls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = if let Some(io) = error.downcast_ref::<std::io::Error>() {
            io.get_ref().map(|inner| inner as &(dyn Error + 'static))
        } else if let Some(shared) = error.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
            Some(shared.as_ref() as &(dyn Error + 'static))
        } else {
            error.source()
        };
    }
    None
}
