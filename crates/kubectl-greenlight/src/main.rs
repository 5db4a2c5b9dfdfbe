//! The `kubectl greenlight` plugin: installed on PATH as `kubectl-greenlight`, kubectl runs it
//! for `kubectl greenlight ...`.

use std::process::ExitCode;

use clap::Parser;
use kubectl_greenlight::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap's own code (2) would read as a timeout to a CI job that runs `status`.
            let status = std::env::args()
                .skip(1)
                .find(|a| !a.starts_with('-'))
                .as_deref()
                == Some("status");
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ if status => ExitCode::from(3),
                _ => ExitCode::from(1),
            };
        }
    };
    // One provider is compiled in (ring); installing it makes that choice explicit.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `status` keeps 1 and 2 for a failed release and a timeout; it cannot tell is 3.
    let error_code = match cli.command {
        Command::Status { .. } => 3,
        _ => 1,
    };
    match kubectl_greenlight::run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(error_code)
        }
    }
}
