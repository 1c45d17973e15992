//! `muster events --follow`: prints the matching events, then polls `core_events` with `since`
//! (the newest timestamp printed) every second and prints what is new, until Ctrl-C. Events that
//! share the newest timestamp are remembered (at most one ring's worth) so none prints twice;
//! nothing else is kept, so memory stays bounded however long it follows.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::client::{call, connect, exit_code};
use super::output::Format;

/// How often muster is asked for new events.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The most events one poll asks for: muster's whole ring.
const POLL_LIMIT: u64 = 1000;

/// The newest timestamp printed (as muster wrote it, and as a time), and the events printed with it.
#[derive(Default)]
struct Cursor {
    since: Option<String>,
    newest: Option<DateTime<Utc>>,
    printed_at_since: HashSet<String>,
}

impl Cursor {
    /// The events of `answer` not printed yet, oldest first; moves the cursor past them.
    fn take_new(&mut self, answer: &Value) -> Vec<Value> {
        let mut new = Vec::new();
        for event in answer["events"].as_array().into_iter().flatten() {
            let Some(text) = event["timestamp"].as_str() else { continue };
            let Ok(timestamp) = DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)) else { continue };
            let key = event.to_string();
            if self.newest.is_some_and(|newest| timestamp < newest) {
                continue;
            }
            if self.newest != Some(timestamp) {
                self.newest = Some(timestamp);
                self.since = Some(text.to_owned());
                self.printed_at_since.clear();
            }
            if self.printed_at_since.insert(key) {
                new.push(event.clone());
            }
        }
        new
    }
}

/// Follows until Ctrl-C (exit 0); a failed call ends it with Muster's exit codes.
#[allow(clippy::print_stdout, clippy::print_stderr, reason = "the CLI's output")]
pub(super) async fn follow(
    endpoint: &str,
    config_dir: &Path,
    filters: Map<String, Value>,
    format: Format,
) -> anyhow::Result<i32> {
    let service = match connect(endpoint, config_dir).await {
        Ok(service) => service,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit_code(&e));
        }
    };
    let mut cursor = Cursor::default();
    let mut arguments = filters.clone();
    let polling = async {
        loop {
            let result = call(&service, "core_events", Value::Object(arguments.clone())).await?;
            let text: String = result.content.iter().filter_map(|c| c.as_text().map(|t| t.text.clone())).collect();
            if result.is_error == Some(true) {
                eprintln!("{text}");
                return Ok::<i32, anyhow::Error>(1);
            }
            let answer = result.structured_content.clone().or_else(|| serde_json::from_str(&text).ok());
            for event in cursor.take_new(&answer.unwrap_or_default()) {
                println!("{}", line(&event, format));
            }
            if let Some(since) = &cursor.since {
                arguments = filters.clone();
                arguments.insert("since".to_owned(), json!(since));
                arguments.insert("limit".to_owned(), json!(POLL_LIMIT));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    };
    let code = tokio::select! {
        code = polling => code?,
        _ = tokio::signal::ctrl_c() => 0,
    };
    let _ = service.cancel().await;
    Ok(code)
}

/// One event as a line: columns for a table, one JSON object per line (`json`), or a YAML document.
fn line(event: &Value, format: Format) -> String {
    let field = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
    match format {
        Format::Json => event.to_string(),
        Format::Yaml => format!("---\n{}", serde_saphyr::to_string(event).unwrap_or_default().trim_end()),
        Format::Table | Format::Wide => {
            let namespace = if format == Format::Wide { format!("{}/", field("namespace")) } else { String::new() };
            format!(
                "{}  {:<7}  {}  {}/{namespace}{}  {}",
                field("timestamp"),
                field("type"),
                field("reason"),
                field("resourceType"),
                field("resourceName"),
                field("message")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(timestamp: &str, reason: &str) -> Value {
        json!({"timestamp": timestamp, "type": "Normal", "reason": reason, "resourceType": "Workflow", "resourceName": "w"})
    }

    #[test]
    fn each_event_is_taken_once_even_when_polls_overlap_at_the_newest_timestamp() {
        let mut cursor = Cursor::default();
        let first = json!({"events": [event("2026-01-01T00:00:01.5Z", "A"), event("2026-01-01T00:00:02Z", "B")]});
        assert_eq!(cursor.take_new(&first).len(), 2);
        assert_eq!(cursor.since.as_deref(), Some("2026-01-01T00:00:02Z"));
        let older = json!({"events": [event("2026-01-01T00:00:01.9Z", "old")]});
        assert!(cursor.take_new(&older).is_empty(), "times compare as times, not as text");
        // `since` is inclusive: B comes again, with C at the same time and D after.
        let second = json!({"events": [
            event("2026-01-01T00:00:02Z", "B"), event("2026-01-01T00:00:02Z", "C"), event("2026-01-01T00:00:03Z", "D"),
        ]});
        let reasons: Vec<Value> = cursor.take_new(&second).iter().map(|e| e["reason"].clone()).collect();
        assert_eq!(reasons, [json!("C"), json!("D")]);
        assert_eq!(cursor.printed_at_since.len(), 1, "only the newest timestamp's events are remembered");
        assert!(cursor.take_new(&second).is_empty());
    }
}
