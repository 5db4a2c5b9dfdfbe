//! The `kubectl greenlight` plugin: installed on PATH as `kubectl-greenlight`, kubectl runs it
//! for `kubectl greenlight ...`.

use std::process::ExitCode;

use clap::Parser;
use greenlight::plugin::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    greenlight::gates::ensure_crypto_provider();
    // `status` keeps 1 and 2 for a failed release and a timeout; it cannot tell is 3.
    let error_code = match cli.command {
        Command::Status { .. } => 3,
        _ => 1,
    };
    match greenlight::plugin::run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(error_code)
        }
    }
}
