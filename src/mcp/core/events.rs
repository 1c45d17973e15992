//! `core_events`: the event ring (`supervisor::events::EventLog`) filtered, and with `follow` the
//! call kept open: each new matching event goes to the caller as it is recorded, as a
//! `notifications/message` (logger `core_events`, the event as `data`) on the request's stream,
//! or as a progress notification when the caller sent a `progressToken`. Following ends when the
//! agent cancels or `followSeconds` pass (at most an hour); the ring is read after a sequence
//! number, so no event is sent twice and nothing is held per follower but that number.
#![allow(deprecated, reason = "logging is deprecated by SEP-2577 but 2025-era agents read it")]

use std::time::Duration;

use rmcp::model::{
    CallToolResult, JsonObject, LoggingLevel, LoggingMessageNotification, LoggingMessageNotificationParam,
    ProgressNotification, ProgressNotificationParam, ServerNotification,
};
use serde_json::{Value, json};

use super::{Core, error, json_result, string};
use crate::caller::Caller;
use crate::supervisor::events::{Event, Filter};

/// How long `follow` keeps the call open unless told otherwise, and at most.
const FOLLOW_DEFAULT: Duration = Duration::from_secs(300);
const FOLLOW_MAX: Duration = Duration::from_secs(3600);

pub(super) async fn events(core: &Core, args: &JsonObject, caller: &Caller) -> CallToolResult {
    let filter = match filter_of(args) {
        Ok(filter) => filter,
        Err(e) => return error(format!("core_events: {e}")),
    };
    // The mark first: an event recorded while the ring is read is sent again rather than lost.
    let mark = core.events.newest();
    let (events, total) = core.events.query(&filter);
    if args.get("follow").and_then(Value::as_bool) != Some(true) {
        return json_result(json!({"events": events, "total": total}));
    }
    let seconds = args.get("followSeconds").and_then(Value::as_u64).map_or(FOLLOW_DEFAULT, Duration::from_secs);
    let ended =
        follow(core, caller, Filter { since: None, limit: usize::MAX, ..filter }, mark, seconds.min(FOLLOW_MAX)).await;
    json_result(json!({"events": events, "total": total, "followed": ended.0, "ended": ended.1}))
}

/// Sends each new matching event until the caller cancels or `length` passes: (events sent, why it ended).
async fn follow(core: &Core, caller: &Caller, filter: Filter, mut mark: u64, length: Duration) -> (u64, &'static str) {
    let deadline = tokio::time::Instant::now() + length;
    let mut sent = 0u64;
    loop {
        tokio::select! {
            () = caller.ct.cancelled() => return (sent, "cancelled"),
            () = tokio::time::sleep_until(deadline) => return (sent, "followSeconds passed"),
            () = core.events.changed(mark) => {}
        }
        let (new, newest) = core.events.after(mark, &filter);
        mark = newest;
        for event in new {
            sent += 1;
            caller.reply_path.notify(notification(caller, &event, sent)).await;
        }
    }
}

fn notification(caller: &Caller, event: &Event, sent: u64) -> ServerNotification {
    let data = serde_json::to_value(event).unwrap_or_default();
    match &caller.progress_token {
        Some(token) => {
            #[allow(clippy::cast_precision_loss, reason = "a count of events")]
            let progress = ProgressNotificationParam::new(token.clone(), sent as f64).with_message(data.to_string());
            ServerNotification::ProgressNotification(ProgressNotification::new(progress))
        }
        None => {
            let level = if event.event_type == "Warning" { LoggingLevel::Warning } else { LoggingLevel::Info };
            let mut message = LoggingMessageNotificationParam::new(level, data);
            message.logger = Some("core_events".to_owned());
            ServerNotification::LoggingMessageNotification(LoggingMessageNotification::new(message))
        }
    }
}

fn filter_of(args: &JsonObject) -> Result<Filter, String> {
    let time = |key: &str| string(args, key).map(|s| parse_time(&s).map_err(|e| format!("{key}: {e}"))).transpose();
    Ok(Filter {
        resource_type: string(args, "resourceType"),
        resource_name: string(args, "resourceName"),
        namespace: string(args, "namespace"),
        event_type: string(args, "eventType"),
        since: time("since")?,
        until: time("until")?,
        limit: args.get("limit").and_then(Value::as_u64).map_or(50, |l| usize::try_from(l).unwrap_or(50)).max(1),
    })
}

/// An RFC 3339 time, or a duration back from now (`30s`, `15m`, `2h`, `7d`).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc));
    }
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if seconds > 0 => Ok(chrono::Utc::now() - chrono::Duration::seconds(n.saturating_mul(seconds))),
        _ => Err(format!("{text:?} is neither an RFC 3339 time nor a duration like 30m, 2h or 7d")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let an_hour_ago = parse_time("1h").expect("duration");
        assert!(an_hour_ago < chrono::Utc::now() - chrono::Duration::minutes(59));
        assert!(parse_time("2026-01-01T00:00:00Z").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("5y").is_err());
    }
}
