//! The folder reader: unreadable files and folders keep what they held, non-regular and oversized
//! files are refused without blocking, and the watcher's event filter.

use super::*;

fn server(name: &str) -> String {
    format!(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: MCPServer\nmetadata:\n  name: {name}\nspec:\n  type: stdio\n  command: x\n"
    )
}

fn names(snapshot: &DesiredSet) -> Vec<&str> {
    snapshot.definitions.iter().map(|d| d.server.name()).collect()
}

fn kept(snapshot: &DesiredSet) -> Vec<&str> {
    snapshot.rejected.iter().filter_map(|r| r.name.as_deref()).collect()
}

fn folder() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let servers = servers_dir(dir.path());
    std::fs::create_dir_all(&servers).expect("mcpservers");
    (dir, servers)
}

#[test]
fn a_folder_that_cannot_be_read_keeps_every_server_and_a_successful_read_removes() {
    let (dir, servers) = folder();
    std::fs::write(servers.join("a.yaml"), server("a")).expect("a");
    std::fs::write(servers.join("b.yaml"), server("b")).expect("b");
    let mut loader = Loader::new(dir.path());
    assert_eq!(names(&loader.read()), ["a", "b"]);

    // The folder replaced by a file (what fails as root too): nothing is lost.
    std::fs::rename(&servers, dir.path().join("moved")).expect("move away");
    std::fs::write(&servers, "not a folder").expect("file in its place");
    let snapshot = loader.read();
    assert_eq!(snapshot.unreadable.len(), 1, "{snapshot:?}");
    assert!(snapshot.unreadable[0].reason.contains("cannot be listed"), "{snapshot:?}");
    assert_eq!(kept(&snapshot), ["a", "b"], "{snapshot:?}");
    let message = &snapshot.rejected[0].problems[0].message;
    assert!(message.starts_with(&format!("the folder {} cannot be listed: ", servers.display())), "{message}");
    assert!(message.ends_with("; keeping the definition read before"), "{message}");
    // Still so at the next read (what is kept is remembered, not just the last snapshot).
    assert_eq!(kept(&loader.read()), ["a", "b"]);

    // Back, without b: a successful read that lacks b removes it.
    std::fs::remove_file(&servers).expect("remove file");
    std::fs::rename(dir.path().join("moved"), &servers).expect("move back");
    std::fs::remove_file(servers.join("b.yaml")).expect("remove b");
    let snapshot = loader.read();
    assert_eq!(names(&snapshot), ["a"]);
    assert!(snapshot.rejected.is_empty() && snapshot.unreadable.is_empty(), "{snapshot:?}");
}

#[test]
fn a_missing_folder_is_an_empty_fleet() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(load(dir.path()), DesiredSet::default());
}

#[test]
fn an_unreadable_file_keeps_its_server_and_a_new_file_cannot_take_its_name() {
    let (dir, servers) = folder();
    std::fs::write(servers.join("a.yaml"), server("a")).expect("a");
    let mut loader = Loader::new(dir.path());
    assert_eq!(names(&loader.read()), ["a"]);
    // Replaced by a FIFO: refused without blocking, and a is kept.
    std::fs::remove_file(servers.join("a.yaml")).expect("remove");
    mkfifo(&servers.join("a.yaml"));
    std::fs::write(servers.join("b.yaml"), server("a")).expect("b reuses the name");
    let snapshot = loader.read();
    assert!(snapshot.unreadable[0].reason.contains("not a regular file"), "{snapshot:?}");
    assert_eq!(names(&snapshot), Vec::<&str>::new(), "{snapshot:?}");
    let duplicate = snapshot.rejected.iter().find(|r| r.source == Source::File(servers.join("b.yaml")));
    assert!(duplicate.is_some_and(|r| r.problems[0].message.contains("already defined")), "{snapshot:?}");
}

#[test]
fn fifos_devices_and_huge_files_are_refused_before_reading() {
    let (dir, servers) = folder();
    mkfifo(&servers.join("fifo.yaml"));
    std::os::unix::fs::symlink("/dev/zero", servers.join("zero.yaml")).expect("symlink");
    std::fs::create_dir(servers.join("folder.yaml")).expect("dir");
    let huge = std::fs::File::create(servers.join("huge.yaml")).expect("huge");
    huge.set_len(MAX_FILE_BYTES + 1).expect("sparse file");
    std::os::unix::fs::symlink(servers.join("gone"), servers.join("dangling.yaml")).expect("symlink");
    let snapshot = load(dir.path());
    let reasons: Vec<String> = snapshot.unreadable.iter().map(ToString::to_string).collect();
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    assert!(reasons[0].contains("dangling.yaml: is a symlink to"), "{reasons:#?}");
    assert!(reasons[1].contains("fifo.yaml: is not a regular file"), "{reasons:#?}");
    assert!(reasons[2].contains("folder.yaml: is not a regular file"), "{reasons:#?}");
    assert!(reasons[3].contains("huge.yaml: is 1048577 bytes; a resource file may hold at most 1024 KiB"));
    assert!(reasons[4].contains("zero.yaml: is not a regular file"), "{reasons:#?}");
}

#[test]
fn a_symlinked_file_is_read_through_the_link() {
    let (dir, servers) = folder();
    let elsewhere = dir.path().join("a.yaml");
    std::fs::write(&elsewhere, server("a")).expect("a");
    std::os::unix::fs::symlink(&elsewhere, servers.join("a.yaml")).expect("symlink");
    assert_eq!(names(&load(dir.path())), ["a"]);
}

#[test]
fn a_file_that_no_longer_parses_keeps_its_server_by_name() {
    let (dir, servers) = folder();
    std::fs::write(servers.join("a.yaml"), server("a")).expect("a");
    let mut loader = Loader::new(dir.path());
    loader.read();
    std::fs::write(servers.join("a.yaml"), "apiVersion: [").expect("half written");
    let snapshot = loader.read();
    // Unparsable, so its name is unknown from the text; a rejected entry without a name would
    // make the supervisor stop the server.
    assert_eq!(kept(&snapshot), ["a"], "{snapshot:?}");
    assert_eq!(kept(&loader.read()), ["a"], "and at the next read");
}

#[test]
fn long_names_are_cut_in_problems() {
    let name = "n".repeat(1 << 20);
    let (_, problems) = parse(&server(&name)).expect_err("invalid name");
    let message = problems[0].to_string();
    assert!(message.len() < 300, "{} bytes", message.len());
    assert!(message.contains(&format!("{:?}…", "n".repeat(64))), "{message}");
}

#[test]
fn only_changes_wake_the_watcher() {
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, MetadataKind, ModifyKind, RenameMode};
    let event = |kind| notify::Event::new(kind);
    assert!(!is_change(&event(EventKind::Access(AccessKind::Open(AccessMode::Any)))));
    assert!(!is_change(&event(EventKind::Access(AccessKind::Read))));
    assert!(!is_change(&event(EventKind::Access(AccessKind::Close(AccessMode::Read)))));
    assert!(!is_change(&event(EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)))));
    assert!(is_change(&event(EventKind::Access(AccessKind::Close(AccessMode::Write)))));
    assert!(is_change(&event(EventKind::Create(CreateKind::File))));
    assert!(is_change(&event(EventKind::Modify(ModifyKind::Name(RenameMode::To)))));
    assert!(is_change(&event(EventKind::Remove(notify::event::RemoveKind::File))));
}

fn workflow(name: &str) -> String {
    format!(
        "apiVersion: muster.giantswarm.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  steps:\n    - id: a\n      tool: t\n"
    )
}

fn workflow_names(snapshot: &DesiredSet) -> Vec<(&str, bool)> {
    snapshot.workflows.iter().map(|w| (w.name(), w.status.valid)).collect()
}

#[test]
fn workflows_load_beside_servers_and_invalid_ones_stay_listed() {
    let (dir, servers) = folder();
    std::fs::write(servers.join("s.yaml"), server("s")).expect("s");
    let workflows = workflows_dir(dir.path());
    std::fs::create_dir_all(&workflows).expect("workflows");
    std::fs::write(workflows.join("a.yaml"), workflow("w")).expect("a");
    std::fs::write(workflows.join("b.yaml"), workflow("w")).expect("b");
    std::fs::write(workflows.join("c.yaml"), "kind: Workflow\nmetadata: {name: c}\n").expect("c");
    let snapshot = load(dir.path());
    assert_eq!(names(&snapshot), ["s"]);
    assert_eq!(workflow_names(&snapshot), [("w", true), ("w", false)]);
    let duplicate = &snapshot.workflows[1].status.validation_errors[0];
    assert_eq!(
        duplicate,
        &format!("metadata.name: \"w\" is already defined in {}", workflows.join("a.yaml").display())
    );
    assert_eq!(snapshot.rejected_workflows.len(), 1, "{snapshot:?}");
    assert_eq!(snapshot.rejected_workflows[0].name.as_deref(), Some("c"));
}

#[test]
fn an_unreadable_workflow_file_or_folder_keeps_what_it_held() {
    let (dir, servers) = folder();
    std::fs::write(servers.join("s.yaml"), server("s")).expect("s");
    let workflows = workflows_dir(dir.path());
    std::fs::create_dir_all(&workflows).expect("workflows");
    std::fs::write(workflows.join("a.yaml"), workflow("a")).expect("a");
    std::fs::write(workflows.join("b.yaml"), workflow("b")).expect("b");
    let mut loader = Loader::new(dir.path());
    assert_eq!(workflow_names(&loader.read()), [("a", true), ("b", true)]);

    // a.yaml replaced by a FIFO: refused without blocking, and a is kept as it was.
    std::fs::remove_file(workflows.join("a.yaml")).expect("remove");
    mkfifo(&workflows.join("a.yaml"));
    let snapshot = loader.read();
    assert!(snapshot.unreadable[0].reason.contains("not a regular file"), "{snapshot:?}");
    assert_eq!(workflow_names(&snapshot), [("a", true), ("b", true)]);

    // The folder replaced by a file: every workflow is kept, and the servers are untouched.
    std::fs::rename(&workflows, dir.path().join("moved")).expect("move away");
    std::fs::write(&workflows, "not a folder").expect("file in its place");
    let snapshot = loader.read();
    assert_eq!(workflow_names(&snapshot), [("a", true), ("b", true)]);
    assert_eq!(names(&snapshot), ["s"]);
    assert!(snapshot.rejected.is_empty(), "{snapshot:?}");

    // Back, without a: a successful read removes it.
    std::fs::remove_file(&workflows).expect("remove file");
    std::fs::rename(dir.path().join("moved"), &workflows).expect("move back");
    std::fs::remove_file(workflows.join("a.yaml")).expect("remove fifo");
    let snapshot = loader.read();
    assert_eq!(workflow_names(&snapshot), [("b", true)]);
    assert!(snapshot.unreadable.is_empty(), "{snapshot:?}");
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(made.success());
}
