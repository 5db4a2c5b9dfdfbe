//! The `greenlight` binary: the controller and the CRD generator.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "greenlight",
    version,
    about = "Takes a release from a green build to production"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the current kubeconfig or in-cluster config.
    Controller {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "GREENLIGHT_NAMESPACE")]
        namespace: Option<String>,
        /// Address of the metrics and health endpoint.
        #[arg(long, env = "GREENLIGHT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        #[arg(long, env = "GREENLIGHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Destinations webhook gates may call: `host`, `host:port`, `*.domain`, or `*` for any.
        /// Comma-separated; empty (the default) allows none.
        #[arg(long, env = "GREENLIGHT_WEBHOOK_ALLOW", value_delimiter = ',')]
        webhook_allow: Vec<String>,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crdgen,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crdgen => {
            print!("{}", greenlight::crdgen::render()?);
            Ok(())
        }
        Command::Controller {
            namespace,
            metrics_addr,
            log_format,
            webhook_allow,
        } => {
            init_tracing(log_format);
            greenlight::gates::ensure_crypto_provider();
            let client = kube::Client::try_default()
                .await
                .context("no Kubernetes configuration found")?;
            let metrics = greenlight::metrics::Metrics::new();
            let server = tokio::spawn(greenlight::metrics::serve(metrics_addr, metrics.clone()));
            tokio::select! {
                _ = greenlight::controller::run(client, namespace, metrics, greenlight::gates::allow::AllowList::new(webhook_allow)) => Ok(()),
                served = server => match served {
                    Ok(Err(e)) => Err(e).with_context(|| format!("metrics server on {metrics_addr} failed")),
                    _ => Ok(()),
                },
            }
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => builder.init(),
    }
}
