//! The command line: `muster serve`, `muster check-config`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::crd::files;

#[derive(Debug, Parser)]
#[command(name = "muster", version, about = "An MCP gateway for Kubernetes fleets")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Folder holding config.yaml and mcpservers/.
        #[arg(long, env = "MUSTER_CONFIG_PATH", default_value_os_t = default_config_path())]
        config_path: PathBuf,
        /// Log at debug level.
        #[arg(long)]
        debug: bool,
    },
    /// Validate config.yaml and every MCPServer file, print every problem, and exit.
    CheckConfig {
        /// Folder holding config.yaml and mcpservers/.
        #[arg(default_value_os_t = default_config_path())]
        dir: PathBuf,
    },
}

fn default_config_path() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(".config/muster")
}

/// Exit code of `check-config` when something is invalid.
pub const EXIT_INVALID: i32 = 1;

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve { config_path, debug } => {
            crate::telemetry::init(debug);
            let config = Config::load(&config_path).context("loading config.yaml")?;
            crate::app::run(config).await?;
            Ok(0)
        }
        Command::CheckConfig { dir } => Ok(check_config(&dir)),
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr, reason = "check-config reports to the terminal")]
fn check_config(dir: &std::path::Path) -> i32 {
    let mut bad = 0;
    if let Err(e) = Config::load(dir) {
        for problem in &e.problems {
            eprintln!("{problem}");
        }
        bad += e.problems.len();
    }
    let snapshot = files::load(dir);
    for rejected in &snapshot.rejected {
        eprintln!("{rejected}");
        bad += rejected.problems.len();
    }
    for definition in &snapshot.definitions {
        println!("ok  {} ({})", definition.server.name(), definition.path.display());
    }
    if bad > 0 {
        eprintln!("{bad} problem(s) found");
        EXIT_INVALID
    } else {
        0
    }
}
