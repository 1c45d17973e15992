//! The shape of `src/`, checked as a test (rust-analyzer's habit): layers point only down, every
//! file says what it owns in a `//!` header, and files stay short unless a reason is recorded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules, highest first. A module may use only the modules after it (and itself);
/// `telemetry` is a leaf that everyone may use. ARCHITECTURE.md states the same order.
const LAYERS: &[&str] = &[
    "cli",
    "app",
    "frontend",
    "mcp",
    "workflow",
    "supervisor",
    "routing",
    "backend",
    "caller",
    "auth",
    "store",
    "crd",
    "config",
    "egress",
    "template",
    "telemetry",
];

/// Files over `MAX_LINES`, each with the reason it stays long.
const LONG_FILES: &[(&str, &str)] = &[];

const MAX_LINES: usize = 600;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            (relative, std::fs::read_to_string(&path).expect("read source"))
        })
        .collect()
}

/// The top-level module a file belongs to (`backend` for `backend/call.rs`); `None` for the
/// crate roots.
fn layer_of(relative: &str) -> Option<&str> {
    let first = relative.split('/').next()?.trim_end_matches(".rs");
    (first != "lib" && first != "main").then_some(first)
}

/// The top-level modules a file names as `crate::module`, also in `use crate::{a, b::c}`.
fn uses(text: &str) -> BTreeSet<&str> {
    names_after(text, "crate::")
}

/// The first path segment after each `prefix` (`crate::`, `super::`), grouped paths included.
fn names_after<'a>(text: &'a str, prefix: &str) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let rest = &text[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth = match c {
                        '{' => depth + 1,
                        '}' if depth == 0 => return true,
                        '}' => depth - 1,
                        _ => depth,
                    };
                    false
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0usize;
            let mut start = 0;
            for (i, c) in group[..end].char_indices().chain(std::iter::once((end, ','))) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(first_segment(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(first_segment(rest));
        }
    }
    names.remove("");
    names
}

fn first_segment(path: &str) -> &str {
    let path = path.trim_start();
    let end = path.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(path.len());
    &path[..end]
}

#[test]
fn the_import_reader_sees_grouped_paths() {
    let text = "use crate::{backend::{self, Caller}, routing};\nfn f() { crate::mcp::x(); }";
    assert_eq!(uses(text).into_iter().collect::<Vec<_>>(), ["backend", "mcp", "routing"]);
}

#[test]
fn layers_point_only_down() {
    let rank = |name: &str| LAYERS.iter().position(|l| *l == name);
    let mut wrong = Vec::new();
    for (relative, text) in sources() {
        let Some(layer) = layer_of(&relative) else { continue };
        let Some(own) = rank(layer) else {
            wrong.push(format!("{relative}: top-level module {layer} is not in LAYERS (tests/integration/tidy.rs)"));
            continue;
        };
        for used in uses(&text) {
            match rank(used) {
                Some(other) if other < own => wrong.push(format!("{relative}: {layer} uses {used}, a higher layer")),
                Some(_) => {}
                None => wrong.push(format!("{relative}: uses crate::{used}, which is not a layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layer order:\n{}", wrong.join("\n"));
}

#[test]
fn every_file_says_what_it_owns() {
    let missing: Vec<String> =
        sources().into_iter().filter(|(_, text)| !text.starts_with("//!")).map(|(relative, _)| relative).collect();
    assert!(missing.is_empty(), "files without a `//!` header:\n{}", missing.join("\n"));
}

#[test]
fn files_stay_short_or_say_why() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter(|(relative, text)| {
            text.lines().count() > MAX_LINES && !LONG_FILES.iter().any(|(file, _)| file == relative)
        })
        .map(|(relative, text)| format!("{relative}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines without a reason in LONG_FILES:\n{}", long.join("\n"));
}

/// Files of one module (`backend/*.rs`) may use each other, but never in a circle: a reader
/// can then read a module's files bottom-up. Test modules are left out (`super::*` is the file).
#[test]
fn files_of_a_module_do_not_use_each_other_in_a_circle() {
    let mut by_dir: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for (relative, text) in sources() {
        if let Some((dir, file)) = relative.rsplit_once('/') {
            let own = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
            by_dir.entry(dir.to_owned()).or_default().push((file.trim_end_matches(".rs").to_owned(), own));
        }
    }
    let mut circles = Vec::new();
    for (dir, files) in &by_dir {
        let siblings: BTreeSet<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        let graph: std::collections::BTreeMap<&str, BTreeSet<&str>> = files
            .iter()
            .map(|(name, text)| {
                let used = names_after(text, "super::").into_iter().filter(|u| siblings.contains(u) && u != name);
                (name.as_str(), used.collect())
            })
            .collect();
        for start in graph.keys() {
            if let Some(path) = path_back(&graph, start) {
                circles.push(format!("{dir}/: {}", path.join(" → ")));
            }
        }
    }
    assert!(circles.is_empty(), "files that use each other in a circle:\n{}", circles.join("\n"));
}

/// A path from `start` through `graph` back to `start`, if there is one.
fn path_back<'a>(
    graph: &std::collections::BTreeMap<&'a str, BTreeSet<&'a str>>,
    start: &'a str,
) -> Option<Vec<&'a str>> {
    let mut stack = vec![vec![start]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = *path.last()?;
        for &next in graph.get(last).into_iter().flatten() {
            if next == start {
                return Some([path.as_slice(), &[start]].concat());
            }
            if seen.insert(next) {
                stack.push([path.as_slice(), &[next]].concat());
            }
        }
    }
    None
}

#[test]
fn the_circle_finder_finds_circles() {
    let graph = [
        ("a", BTreeSet::from(["b"])),
        ("b", BTreeSet::from(["c"])),
        ("c", BTreeSet::from(["a"])),
        ("d", BTreeSet::from(["a"])),
    ]
    .into_iter()
    .collect();
    assert_eq!(path_back(&graph, "a"), Some(vec!["a", "b", "c", "a"]));
    assert_eq!(path_back(&graph, "d"), None);
}

/// ARCHITECTURE.md's code map names every file under `src/`, so a newcomer finds each one there.
#[test]
fn the_code_map_names_every_file() {
    let map = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).expect("read");
    let missing: Vec<String> = sources()
        .into_iter()
        .map(|(relative, _)| relative)
        .filter(|relative| !map.contains(&format!("`{relative}`")) && !map.contains(&format!("`src/{relative}`")))
        .collect();
    assert!(missing.is_empty(), "files ARCHITECTURE.md's code map does not name:\n{}", missing.join("\n"));
}
