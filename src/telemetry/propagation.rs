//! W3C trace context across muster: read from the agent's request (HTTP `traceparent`, or
//! `params._meta.traceparent` per the MCP conventions), written into each upstream request's
//! `_meta` and, by `backend::upstream_client::UpstreamClient`, into its HTTP `traceparent` header, so the
//! upstream's spans join the same trace. Also counts this process's established TCP connections (for metrics).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderName;
use opentelemetry::propagation::{Extractor, Injector};
use rmcp::model::RequestMetaObject;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Map<'a>(&'a mut HashMap<String, String>);

impl Injector for Map<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Headers<'a>(&'a http::HeaderMap, Option<&'a RequestMetaObject>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key == "traceparent"
            && let Some(value) = self.1.and_then(|m| m.get_traceparent())
        {
            return Some(value);
        }
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Makes `span` a child of the trace the agent sent, if any.
pub fn adopt_remote_parent(span: &tracing::Span, headers: Option<&http::HeaderMap>, meta: Option<&RequestMetaObject>) {
    let empty = http::HeaderMap::new();
    let carrier = Headers(headers.unwrap_or(&empty), meta);
    let context = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(context);
}

/// Writes the current span's context into an upstream request's `_meta`.
pub fn inject(meta: &mut RequestMetaObject) {
    let mut fields = HashMap::new();
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Map(&mut fields)));
    if let Some(traceparent) = fields.remove("traceparent") {
        meta.set_traceparent(traceparent);
        if let Some(tracestate) = fields.remove("tracestate").filter(|s| !s.is_empty()) {
            meta.set_tracestate(tracestate);
        }
    }
}

/// Remote addresses of this process's established TCP connections (Linux `/proc`; empty elsewhere).
pub fn established_connections() -> Vec<SocketAddr> {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return Vec::new() };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).map(str::to_owned)
        })
        .collect();
    let mut out = Vec::new();
    for (file, v6) in [("/proc/self/net/tcp", false), ("/proc/self/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local, remote, state ("01" = ESTABLISHED), ..., inode at index 9.
            if fields.len() > 9
                && fields[3] == "01"
                && inodes.contains(fields[9])
                && let Some(addr) = parse_proc_addr(fields[2], v6)
            {
                out.push(addr);
            }
        }
    }
    out
}

fn parse_proc_addr(text: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = if v6 {
        let bytes: Vec<u8> = (0..16).filter_map(|i| u8::from_str_radix(ip.get(i * 2..i * 2 + 2)?, 16).ok()).collect();
        let mut words = [0u8; 16];
        // /proc prints four little-endian 32-bit words.
        for (chunk, out) in bytes.chunks(4).zip(words.chunks_mut(4)) {
            out.copy_from_slice(&[chunk[3], chunk[2], chunk[1], chunk[0]]);
        }
        IpAddr::V6(Ipv6Addr::from(words)).to_canonical()
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.swap_bytes()))
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_addresses() {
        assert_eq!(parse_proc_addr("0100007F:1F90", false), Some("127.0.0.1:8080".parse().expect("addr")));
        assert_eq!(
            parse_proc_addr("0000000000000000FFFF00000100007F:1F90", true),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
    }
}
