//! Unit tests of the execution record: Muster's truncation, the store's round trip, and
//! retention by age and count.

use std::time::{Duration, SystemTime};

use chrono::Utc;
use serde_json::{Value, json};

use super::*;

fn step(id: &str, result: Value) -> StepRecord {
    StepRecord {
        step_id: id.to_owned(),
        tool: "x_kubernetes_pods_list".to_owned(),
        status: "completed".to_owned(),
        started_at: Some(Utc::now()),
        completed_at: Some(Utc::now()),
        duration_ms: 3,
        input: Some(json!({"management_cluster": "cluster-a"})),
        result: Some(result),
        error: None,
        stored_as: Some(id.to_owned()),
    }
}

fn record(id: &str, input: Value, result: Value, steps: Vec<StepRecord>) -> WorkflowExecution {
    WorkflowExecution::new(
        id.to_owned(),
        ExecutionSpec {
            workflow_name: "pods".to_owned(),
            status: "completed".to_owned(),
            started_at: Utc::now(),
            completed_at: Some(Utc::now()),
            duration_ms: 7,
            input: Some(input),
            result: Some(result),
            error: None,
            steps,
            truncated: false,
        },
    )
}

#[test]
fn a_record_under_the_limit_is_left_alone() {
    let mut small = record("a", json!({"x": 1}), json!({"ok": true}), vec![step("s", json!("fine"))]);
    let before = small.clone();
    truncate(&mut small, MAX_PAYLOAD_BYTES);
    assert_eq!(small, before);
}

#[test]
fn large_payloads_get_musters_marker_and_the_record_fits() {
    let blob = "x".repeat(400_000);
    let mut big = record(
        "b",
        json!({"blob": blob}),
        json!({"blob": blob}),
        vec![step("small", json!("kept")), step("large", json!(blob))],
    );
    big.spec.error = Some(format!("step large failed: {blob}"));
    truncate(&mut big, MAX_PAYLOAD_BYTES);
    assert!(big.spec.truncated);
    assert_eq!(big.spec.input, Some(json!({"_truncated": TRUNCATED})));
    assert_eq!(big.spec.result, Some(json!(TRUNCATED)));
    assert_eq!(big.spec.steps[0].result, Some(json!("kept")), "a small result stays");
    assert_eq!(big.spec.steps[1].result, Some(json!(TRUNCATED)));
    let error = big.spec.error.as_deref().unwrap_or_default();
    assert!(error.starts_with("step large failed: xxx") && error.ends_with(TRUNCATED), "{}", &error[..40]);
    assert!(serde_json::to_vec(&big).expect("json").len() <= MAX_PAYLOAD_BYTES);
}

#[test]
fn many_medium_step_results_are_cut_oldest_first_until_it_fits() {
    // Each result is under limit / 8, so Muster's rule alone would leave the record too large.
    let medium = "y".repeat(30_000);
    let steps = (0..12).map(|i| step(&format!("s{i}"), json!(medium))).collect();
    let mut many = record("c", json!({}), json!({}), steps);
    truncate(&mut many, MAX_PAYLOAD_BYTES);
    assert!(many.spec.truncated);
    assert!(serde_json::to_vec(&many).expect("json").len() <= MAX_PAYLOAD_BYTES);
    assert_eq!(many.spec.steps[0].result, Some(json!(TRUNCATED)), "the oldest goes first");
    assert_eq!(many.spec.steps[11].result, Some(json!(medium)), "the newest is kept");
}

#[test]
fn the_store_writes_reads_and_lists_records_newest_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::new(dir.path());
    assert_eq!(store.list().expect("empty").0, Vec::new(), "no folder yet is no records");
    let mut older = record("0f0e0d0c-0000-4000-8000-000000000001", json!({}), json!({}), Vec::new());
    older.spec.started_at = Utc::now() - chrono::Duration::minutes(5);
    let newer = record("0f0e0d0c-0000-4000-8000-000000000002", json!({}), json!({}), Vec::new());
    store.write(&older).expect("write");
    store.write(&newer).expect("write");
    std::fs::write(store.dir().join("garbage.json"), "{not json").expect("write");
    assert_eq!(store.get(newer.id()).expect("get"), Some(newer.clone()));
    assert_eq!(store.get("0f0e0d0c-0000-4000-8000-00000000000f").expect("get"), None);
    let (records, unreadable) = store.list().expect("list");
    assert_eq!(records, vec![newer, older]);
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(unreadable[0].starts_with("execution garbage: is not a WorkflowExecution record"), "{unreadable:?}");
    let refused = store.get("../config").expect_err("a path is not an id");
    assert_eq!(refused.to_string(), "\"../config\" is not an execution id (letters, digits and dashes)");
    let names: Vec<String> = std::fs::read_dir(store.dir())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn retention_removes_records_past_the_age_and_beyond_the_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileStore::new(dir.path());
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    // Written 0, 1, …, 5 days ago, plus one 30 days ago.
    let ages = [0u64, 1, 2, 3, 4, 5, 30];
    for (i, age) in ages.iter().enumerate() {
        let id = format!("00000000-0000-4000-8000-00000000000{i}");
        store.write(&record(&id, json!({}), json!({}), Vec::new())).expect("write");
        let file = std::fs::File::options().write(true).open(store.dir().join(format!("{id}.json"))).expect("open");
        file.set_modified(now - day * u32::try_from(*age).expect("small")).expect("set mtime");
    }
    let ids = |store: &FileStore| -> Vec<String> {
        let mut ids: Vec<String> = store.list().expect("list").0.iter().map(|r| r.id().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(store.prune(now, Retention::default()).expect("prune"), 1, "only the 30-day-old one is past 21 days");
    assert_eq!(ids(&store).len(), 6);
    let removed = store.prune(now, Retention { max_age: DEFAULT_MAX_AGE, max_count: 2 }).expect("prune");
    assert_eq!(removed, 4);
    assert_eq!(ids(&store), ["00000000-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000001"]);
    let removed = store.prune(now + 2 * DEFAULT_MAX_AGE, Retention::default()).expect("prune");
    assert_eq!((removed, ids(&store).len()), (2, 0), "three weeks on, nothing is kept");
}
