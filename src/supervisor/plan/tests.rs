//! The supervisor's plan for a new desired state: add, remove, unchanged, changed, and invalid
//! updates that keep the running version, each as the list of steps the actor would take.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{Action, Running, plan};
use crate::crd::Problem;
use crate::crd::files::{Definition, DesiredSet, Rejected, Source, parse};

fn file(name: &str) -> Source {
    Source::File(PathBuf::from(name))
}

/// A valid stdio server `name` running `command`, read from `path`.
fn definition(path: &str, name: &str, command: &str) -> Definition {
    let yaml = format!(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n  type: stdio\n  command: {command}\n"
    );
    Definition { server: parse(&yaml).expect("a valid server"), source: file(path) }
}

/// A valid remote server whose upstream auth cannot be prepared (OAuth login is not supported).
fn needs_oauth_login(path: &str, name: &str) -> Definition {
    let yaml = format!(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n  type: streamable-http\n  url: https://example.com/mcp\n  auth:\n    type: oauth\n"
    );
    Definition { server: parse(&yaml).expect("a valid server"), source: file(path) }
}

fn rejected(path: &str, name: Option<&str>, message: &str) -> Rejected {
    Rejected {
        source: file(path),
        name: name.map(str::to_owned),
        problems: vec![Problem { field: "spec".to_owned(), message: message.to_owned() }],
    }
}

/// What runs: a definition, and the refused update its status reports, if any.
type Current<'a> = (&'a Definition, Option<&'a str>);

/// The plan for `definitions` and `rejections` against `running`, one line per step.
fn check(definitions: &[Definition], rejections: &[Rejected], running: &[Current<'_>]) -> Vec<String> {
    let running: BTreeMap<&str, Running<'_>> = running
        .iter()
        .map(|(d, rejected_update)| {
            let current = Running { definition: &d.server, source: &d.source, rejected_update: *rejected_update };
            (d.server.name(), current)
        })
        .collect();
    let desired =
        DesiredSet { definitions: definitions.to_vec(), rejected: rejections.to_vec(), ..DesiredSet::default() };
    plan(desired, &running, None).iter().map(describe).collect()
}

fn describe(action: &Action) -> String {
    match action {
        Action::Stop { name } => format!("stop {name}"),
        Action::KeepRejected { name, reasons } => format!("keep {name}, refused: {reasons}"),
        Action::ClearRejected { name } => format!("clear refusal of {name}"),
        Action::Fail { source, error } => format!("fail {source}: {error}"),
        Action::Start { definition, .. } => format!("start {} from {}", definition.server.name(), definition.source),
        Action::Replace { definition, .. } => {
            format!("replace {} from {}", definition.server.name(), definition.source)
        }
    }
}

#[test]
fn a_new_definition_starts() {
    let a = definition("a.yaml", "a", "x");
    assert_eq!(check(&[a], &[], &[]), ["start a from a.yaml"]);
}

#[test]
fn a_definition_that_is_gone_stops() {
    let a = definition("a.yaml", "a", "x");
    let b = definition("b.yaml", "b", "x");
    assert_eq!(check(std::slice::from_ref(&b), &[], &[(&a, None), (&b, None)]), ["stop a"]);
}

#[test]
fn an_unchanged_definition_does_nothing() {
    let a = definition("a.yaml", "a", "x");
    assert_eq!(check(std::slice::from_ref(&a), &[], &[(&a, None)]), Vec::<String>::new());
}

#[test]
fn a_changed_spec_or_source_replaces_the_running_version() {
    let a = definition("a.yaml", "a", "x");
    assert_eq!(check(&[definition("a.yaml", "a", "y")], &[], &[(&a, None)]), ["replace a from a.yaml"]);
    assert_eq!(check(&[definition("moved.yaml", "a", "x")], &[], &[(&a, None)]), ["replace a from moved.yaml"]);
}

#[test]
fn an_invalid_update_keeps_the_running_version_and_is_reported_once() {
    let a = definition("a.yaml", "a", "x");
    let invalid = rejected("a.yaml", Some("a"), "bad");
    assert_eq!(check(&[], std::slice::from_ref(&invalid), &[(&a, None)]), ["keep a, refused: spec: bad"]);
    // The same refusal again: its status already says so.
    assert_eq!(check(&[], std::slice::from_ref(&invalid), &[(&a, Some("spec: bad"))]), Vec::<String>::new());
    // Another problem with the new version: the status is updated.
    let worse = rejected("a.yaml", Some("a"), "worse");
    assert_eq!(check(&[], &[worse], &[(&a, Some("spec: bad"))]), ["keep a, refused: spec: worse"]);
}

#[test]
fn a_valid_version_after_a_refused_one_clears_the_refusal() {
    let a = definition("a.yaml", "a", "x");
    assert_eq!(check(std::slice::from_ref(&a), &[], &[(&a, Some("spec: bad"))]), ["clear refusal of a"]);
    let changed = definition("a.yaml", "a", "y");
    assert_eq!(check(&[changed], &[], &[(&a, Some("spec: bad"))]), ["replace a from a.yaml"]);
}

#[test]
fn an_invalid_new_definition_fails_without_starting() {
    let invalid = rejected("b.yaml", Some("b"), "bad");
    assert_eq!(check(&[], &[invalid], &[]), ["fail b.yaml: invalid: spec: bad"]);
}

#[test]
fn a_duplicate_name_in_another_file_fails_there_and_leaves_the_running_one() {
    let a = definition("a.yaml", "a", "x");
    let duplicate = rejected("copy.yaml", Some("a"), "duplicate name");
    assert_eq!(
        check(std::slice::from_ref(&a), &[duplicate], &[(&a, None)]),
        ["fail copy.yaml: invalid: spec: duplicate name"]
    );
}

#[test]
fn an_invalid_definition_that_names_a_server_from_another_file_does_not_keep_it() {
    let a = definition("a.yaml", "a", "x");
    let elsewhere = rejected("other.yaml", Some("a"), "bad");
    assert_eq!(check(&[], &[elsewhere], &[(&a, None)]), ["stop a", "fail other.yaml: invalid: spec: bad"]);
}

#[test]
fn a_rejection_without_a_name_keeps_nothing_and_reports_nothing() {
    let a = definition("a.yaml", "a", "x");
    let unnamed = rejected("a.yaml", None, "not YAML");
    assert_eq!(check(&[], std::slice::from_ref(&unnamed), &[(&a, None)]), ["stop a"]);
    assert_eq!(check(&[], &[unnamed], &[]), Vec::<String>::new());
}

#[test]
fn a_definition_whose_auth_cannot_be_prepared_never_replaces_a_running_one() {
    let a = definition("a.yaml", "a", "x");
    let steps = check(&[needs_oauth_login("a.yaml", "a")], &[], &[(&a, None)]);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].starts_with("keep a, refused: auth.type oauth without tokenExchange"), "{steps:?}");
    let steps = check(&[needs_oauth_login("b.yaml", "b")], &[], &[]);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].starts_with("fail b.yaml: auth.type oauth without tokenExchange"), "{steps:?}");
}

#[test]
fn stops_and_refusals_come_before_starts() {
    let old = definition("old.yaml", "old", "x");
    let kept = definition("kept.yaml", "kept", "x");
    let steps = check(
        &[definition("new.yaml", "new", "x")],
        &[rejected("kept.yaml", Some("kept"), "bad"), rejected("bad.yaml", Some("bad"), "bad")],
        &[(&old, None), (&kept, None)],
    );
    assert_eq!(
        steps,
        ["stop old", "fail bad.yaml: invalid: spec: bad", "keep kept, refused: spec: bad", "start new from new.yaml"]
    );
}
