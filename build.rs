//! Build script: the line `muster --version` prints, the crate version and the git commit it was
//! built from. `scripts/build-release.sh` passes the commit in `MUSTER_GIT_COMMIT`; without it (a
//! plain `cargo build`, a source tarball without `.git`) the commit reads `unknown`. Git itself is
//! not run here, so a commit never makes cargo rebuild the crate.

fn main() {
    println!("cargo::rerun-if-env-changed=MUSTER_GIT_COMMIT");
    let commit = std::env::var("MUSTER_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c.len() <= 64 && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-'))
        .unwrap_or_else(|| "unknown".to_owned());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo::rustc-env=MUSTER_VERSION={version} (commit {commit})");
}
