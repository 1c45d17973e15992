//! The `muster` binary: parse the command line, run it, map the outcome to an exit code.

use clap::Parser as _;

#[actix_web::main]
async fn main() {
    // One process-wide TLS provider (stack.md §5.2): aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let code = match muster::cli::run(muster::cli::Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            #[allow(clippy::print_stderr, reason = "the last word before exiting")]
            {
                eprintln!("error: {e:#}");
            }
            1
        }
    };
    std::process::exit(code);
}
